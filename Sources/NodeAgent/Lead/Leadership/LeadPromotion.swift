import AuroraAPI
import Foundation
import Logging

#if canImport(Glibc)
    import Glibc
#endif

/// `aurora-cli lead promote` on a standby: the standby becomes the lead.
///
/// With a store both leads reach (`store.url`: one PostgreSQL, made highly available by its own
/// means), in order:
///
/// 1. asks the lead to step down (signed by this standby; 2 s): it fences itself at once;
/// 2. takes the store's lead lock, ending the old lead's session, so its next write fails
///    whether or not it heard step 1 (a frozen or partitioned lead included);
/// 3. begins the next term as its first write (only when the newest epoch is still the one it
///    read: two promotions cannot both win), makes the old lead a standby in the registry and
///    itself the lead, and records `lead.promoted`;
/// 4. writes `DATA/lead-term.json` and restarts as the lead (same command line); the restarted
///    agent resumes the term, loads the registry, jobs (with fresh leases) and tokens from the
///    store, and serves nodes, which find it through its signed term.
///
/// A standby with its own managed PostgreSQL (a streaming replica) is refused with 409: that
/// path is not built yet.
struct LeadPromotion {
    let state: AgentState
    let membership: MembershipService

    /// `DATA/lead-term.json`: this agent was promoted and runs as the lead from now on.
    static func markerPath(dataDir: String) -> String { dataDir + "/lead-term.json" }

    /// Whether this agent was promoted (it then starts as the lead, `--standby` or not).
    static func promoted(dataDir: String) -> Bool {
        FileManager.default.fileExists(atPath: markerPath(dataDir: dataDir))
    }

    func run(_ request: PromoteRequest) async throws(Refusal) -> PromoteResponse {
        let config = state.config
        guard let url = config.storeURL else {
            throw Refusal(
                .conflict, code: "no_shared_store",
                message:
                    "this standby has no store.url: promotion needs the PostgreSQL both leads use (a standby with its own streaming replica cannot be promoted yet)"
            )
        }
        var logger = Logger(label: "nodeagent")
        logger[metadataKey: "nodeagent.subsystem"] = "leadership"
        let oldLead = membership.leadView.name
        // 1. The lead steps down, if it answers.
        let steppedDown: Bool
        do {
            _ = try await membership.leadClient.call(API.stepDown, as: StepDownResponse.self, timeout: .seconds(2))
            steppedDown = true
        } catch {
            steppedDown = false
            logger.warning(
                "the lead did not step down; fencing it through the store",
                metadata: ["nodeagent.error": "\(error.message)"])
        }
        // 2. The lead lock, 3. the next term.
        let store = Store(conninfo: url)
        defer { Task { await store.close() } }
        let term: LeadTerm
        do throws(AgentError) {
            try await store.connect()
            try await Migrations.run(on: store, logger: logger)
            guard try await store.takeOverLeadLock(timeout: .seconds(10)) else {
                throw AgentError(.store, "another session kept the store's lead lock for 10 s")
            }
            let latest = try await store.latestTerm()
            let tls = try TLSIdentity.loadOrCreate(in: config.dataDir + "/keys", name: config.name, logger: logger)
            let template = Leadership.template(config: config, identity: state.identity, tls: tls)
            guard let begun = try await store.beginTerm(template, after: latest?.epoch) else {
                throw AgentError(.store, "another lead began a newer term at the same moment")
            }
            term = begun
            if let previous = latest?.lead ?? oldLead, previous != config.name {
                try await store.setRole(of: previous, to: .standby)
            }
            try await store.setRole(of: config.name, to: .lead)
            var data: [String: JSONValue] = [
                "epoch": .number(Double(term.epoch)), "old_lead_stepped_down": .bool(steppedDown),
            ]
            if let previous = latest?.lead ?? oldLead { data["from"] = .string(previous) }
            var events = [EventLog.Draft(type: EventType.leadPromoted, node: config.name, data: data)]
            if let previous = latest?.lead ?? oldLead, previous != config.name {
                // The old lead cannot record its own fencing (its store refuses its writes): this is its record.
                events.append(
                    EventLog.Draft(
                        type: EventType.leadFenced, node: previous,
                        data: [
                            "epoch": .number(Double(term.epoch)),
                            "reason": .string(
                                steppedDown
                                    ? "stepped down for \(config.name)'s promotion"
                                    : "fenced through the store's lead lock by \(config.name)'s promotion"),
                        ]))
            }
            try await store.append(events, published: { _ in })
            try SecureFile.write(
                SQL.json(term) + "\n", to: Self.markerPath(dataDir: config.dataDir))
        } catch {
            throw Refusal(.unavailable, code: "promotion_failed", message: "promotion failed: \(error.message)")
        }
        logger.notice(
            "promoted to lead; restarting as the lead",
            metadata: ["nodeagent.epoch": "\(term.epoch)", "nodeagent.old_lead_stepped_down": "\(steppedDown)"])
        return PromoteResponse(term: term, oldLeadSteppedDown: steppedDown, restarting: true)
    }
}

/// Starts this program again in this process (`execv` of `/proc/self/exe` with the same
/// arguments and environment), every descriptor but the standard three closed first.
public enum Reexec {
    /// Returns only when the exec failed, with the reason.
    public static func now() -> AgentError {
        if let descriptors = try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/fd") {
            for fd in descriptors.compactMap({ Int32($0) }) where fd > 2 {
                _ = fcntl(fd, F_SETFD, FD_CLOEXEC)
            }
        }
        var arguments = CommandLine.arguments.map { strdup($0) }
        arguments.append(nil)
        execv("/proc/self/exe", &arguments)
        let reason = String(cString: strerror(errno))
        for argument in arguments { free(argument) }
        return AgentError(.process, "cannot start again as the lead: \(reason)")
    }
}
