import AuroraAPI
import Foundation
import Logging
import Mesh

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
/// A standby with its own managed PostgreSQL (a streaming replica of the lead's) first shows it
/// holds everything the lead acknowledged: the lead stepped down and the replica replayed up to
/// the lead's WAL position; or, with the lead gone, the replica streamed until the lead was lost
/// and its copy does not record it ineligible (the lead records that before it stops waiting for
/// it). Otherwise it needs `accept_data_loss` (409 `not_caught_up`). Then `pg_ctl promote`, and
/// the next term as the promoted server's first write.
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
        var logger = Logger(label: "nodeagent")
        logger[metadataKey: "nodeagent.subsystem"] = "leadership"
        guard let url = config.storeURL else { return try await runManaged(request, logger: logger) }
        let oldLead = membership.leadView.name
        // 1. The lead steps down, if it answers.
        let steppedDown = await stepDown(logger: logger) != nil
        // 2. The lead lock, 3. the next term.
        let term = try await beginTerm(conninfo: url, oldLead: oldLead, steppedDown: steppedDown, logger: logger)
        logger.notice(
            "promoted to lead; restarting as the lead",
            metadata: ["nodeagent.epoch": "\(term.epoch)", "nodeagent.old_lead_stepped_down": "\(steppedDown)"])
        return PromoteResponse(term: term, oldLeadSteppedDown: steppedDown, restarting: true)
    }
    /// Asks the lead to step down (signed by this standby, 2 s); its answer, nil when it did not answer.
    private func stepDown(logger: Logger) async -> StepDownResponse? {
        do {
            return try await membership.leadClient.call(API.stepDown, as: StepDownResponse.self, timeout: .seconds(2))
        } catch {
            logger.warning(
                "the lead did not step down; fencing it without its help",
                metadata: ["nodeagent.error": "\(error.message)"])
            return nil
        }
    }

    /// Takes the lead lock on `conninfo`, begins the next term as its first write, makes the old
    /// lead a standby and this agent the lead, records `lead.promoted` and `lead.fenced`, and
    /// writes `DATA/lead-term.json`.
    ///
    /// `promotedReplica`: the store is this standby's replica, just promoted. PostgreSQL logs a
    /// sequence 32 values ahead, so a promoted replica's `events.seq` would jump; it is set back
    /// to follow the last committed event before the new term's first event, so the event
    /// sequence (SSE ids, the Redis stream) goes on without a gap. Only this process writes to
    /// the promoted server at that point; a shared store is left alone (the old lead may still
    /// hold a value it drew).
    private func beginTerm(
        conninfo: String, oldLead: String?, steppedDown: Bool, promotedReplica: Bool = false, logger: Logger
    )
        async throws(Refusal) -> LeadTerm
    {
        let config = state.config
        let store = Store(conninfo: conninfo)
        defer { Task { await store.close() } }
        let term: LeadTerm
        do throws(AgentError) {
            try await store.connect()
            try await Migrations.run(on: store, logger: logger)
            guard try await store.takeOverLeadLock(timeout: .seconds(10)) else {
                throw AgentError(.store, "another session kept the store's lead lock for 10 s")
            }
            if promotedReplica { try await store.continueEventSequence() }
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
                                    : "fenced by \(config.name)'s promotion"),
                        ]))
            }
            try await store.append(events, published: { _ in })
            try SecureFile.write(SQL.json(term) + "\n", to: Self.markerPath(dataDir: config.dataDir))
        } catch {
            throw Refusal(.unavailable, code: "promotion_failed", message: "promotion failed: \(error.message)")
        }
        return term
    }

    /// The promotion of a standby that runs a streaming replica of the lead's managed store.
    private func runManaged(_ request: PromoteRequest, logger: Logger) async throws(Refusal) -> PromoteResponse {
        let config = state.config
        guard case .some(.some) = try? StandbyReplication.load(dataDir: config.dataDir) else {
            throw Refusal(
                .conflict, code: "no_store",
                message:
                    "this standby has neither store.url nor a replica of the lead's store (its lead has no store.replication_listen)"
            )
        }
        let managed: ManagedPostgres
        do {
            managed = try ManagedPostgres(
                dataDir: config.dataDir, binDirectory: config.pgBinDirectory, runAs: config.storeRunAs, logger: logger)
        } catch {
            throw Refusal(.unavailable, code: "promotion_failed", message: "promotion failed: \(error.message)")
        }
        if !(await managed.isRunning()) {
            do { _ = try await managed.start() } catch {
                throw Refusal(
                    .unavailable, code: "promotion_failed", message: "the replica does not start: \(error.message)")
            }
        }
        let oldLead = membership.leadView.name
        // 1. The lead steps down, if it answers, and says how far its WAL reaches.
        let answer = await stepDown(logger: logger)
        let steppedDown = answer != nil
        let leadLSN = answer?.walLSN.flatMap { LSN($0) }
        // 2. Does the replica hold everything the lead acknowledged?
        let replica = Store(conninfo: managed.conninfo)
        var caughtUp = false
        var why = ""
        do throws(AgentError) {
            try await replica.connect()
            if let leadLSN {
                let deadline = ContinuousClock.now + .seconds(10)
                while true {
                    let status = try await replica.withConnection { connection throws(AgentError) in
                        try ReplicationSQL.standbyStatus(on: connection)
                    }
                    if let replayed = status.replayLSN, replayed >= leadLSN {
                        caughtUp = true
                        break
                    }
                    guard ContinuousClock.now < deadline else {
                        why =
                            "the replica replayed \(status.replayLSN?.description ?? "nothing") of the lead's \(leadLSN) in 10 s"
                        break
                    }
                    try? await Task.sleep(for: .milliseconds(50))  // replay catches up within milliseconds
                }
            } else {
                let recorded = try await replica.query(
                    "SELECT eligible, reason FROM standby_eligibility WHERE name = $1", [config.name]
                ).rows.first
                let streamed = state.replicaStreamedUntilLeadLost()
                if recorded?[0] == "f" {
                    why =
                        "the lead recorded this standby ineligible (\(recorded?[1] ?? "no reason")): it stopped waiting for it"
                } else if !streamed {
                    why =
                        "the replica was not streaming when the lead was lost (or this agent restarted since), so it may lack what the lead acknowledged"
                } else {
                    caughtUp = true
                }
            }
        } catch {
            why = "the replica does not answer: \(error.message)"
        }
        await replica.close()
        guard caughtUp || request.acceptDataLoss == true else {
            throw Refusal(
                .conflict, code: "not_caught_up",
                message: "\(why); promote with --accept-data-loss to take over anyway and lose what it lacks")
        }
        if !caughtUp {
            logger.warning(
                "promoting without everything the lead acknowledged", metadata: ["nodeagent.reason": "\(why)"])
        }
        // 3. The replica becomes a primary; 4. the next term is its first write.
        do { try await managed.promote() } catch {
            throw Refusal(.unavailable, code: "promotion_failed", message: "promotion failed: \(error.message)")
        }
        let term = try await beginTerm(
            conninfo: managed.conninfo, oldLead: oldLead, steppedDown: steppedDown, promotedReplica: true,
            logger: logger)
        // The restarted agent is the lead: it no longer runs a replica.
        _ = rename(
            StandbyReplication.path(dataDir: config.dataDir),
            StandbyReplication.path(dataDir: config.dataDir) + ".promoted")
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
