import AsyncAlgorithms
import AuroraAPI
import AuroraTLS
import Foundation
import Logging
import Mesh
import NIOSSL
import Secrets
import ServiceLifecycle

#if canImport(Glibc)
    import Glibc
#endif

// MARK: - What the data directory remembers

/// `DATA/rejoined.json` (0600): this agent led the mesh once, was fenced by a newer term and
/// rejoined the new lead as its standby. From then on it starts as a standby, whatever its
/// command line says (`--profile lead` without `--standby` included), until it is promoted again
/// (`DATA/lead-term.json` wins).
struct RejoinMarker: Codable, Sendable, Equatable {
    /// The epoch of the term that fenced this agent, and that term's lead.
    var epoch: Int64
    var lead: String
    /// When it rejoined (ISO 8601).
    var at: String
    /// The managed PostgreSQL data the agent had as a primary still has to be moved aside: done
    /// at the next start, once that server is stopped (``LeadRejoin/keepOldData(config:logger:)``).
    var movePending: Bool
    /// Where the old primary's data was moved to (kept, never deleted).
    var keptData: String?

    enum CodingKeys: String, CodingKey {
        case epoch, lead, at
        case movePending = "move_pending"
        case keptData = "kept_data"
    }

    static func path(dataDir: String) -> String { dataDir + "/rejoined.json" }

    /// Nil when this agent never rejoined; a file that does not decode is an ``AgentError`` (code
    /// `identity`): guessing could start an old primary as the lead.
    static func load(dataDir: String) throws(AgentError) -> RejoinMarker? {
        guard let text = try SecureFile.read(path(dataDir: dataDir)) else { return nil }
        guard let marker = SQL.decode(RejoinMarker.self, text) else {
            throw AgentError(
                .identity,
                "\(path(dataDir: dataDir)) is not readable: it records that this agent rejoined as a standby; fix or remove it"
            )
        }
        return marker
    }

    func save(dataDir: String) throws(AgentError) {
        try SecureFile.write(SQL.json(self) + "\n", to: Self.path(dataDir: dataDir))
    }
}

// MARK: - The rejoin

/// An old lead that a newer term fenced comes back as a standby of the new lead, by itself
/// (`election.rejoin_as_standby`, default true). DESIGN.md: "the old lead comes back only as a
/// standby".
///
/// 1. It finds the new lead as nodes do: a lead-eligible member its store records answers a term
///    newer than the one this agent knows, signed by the key the store holds for that member
///    (``LeadHandoffProbe``); over https the member's certificate must match its pin.
/// 2. It asks that lead to take it back (`POST /api/lead/rejoin`, signed with its own node key, over
///    TLS pinned to the new lead's certificate): the answer is what a standby's join gets.
/// 3. It keeps what the answer carries as a joined standby does (the master key sealed to its box
///    key, replication credentials for a managed store, `membership.json` naming the new lead and
///    its epoch), moves a promotion's `lead-term.json` aside, writes ``RejoinMarker`` and restarts.
/// 4. Restarted as a standby, it moves its old primary's data directory aside
///    (`DATA/pgdata.before-epoch-N`, kept) and clones the new lead with a fresh `pg_basebackup`
///    (``StandbyReplicaService``). With a shared store there is nothing to move.
enum LeadRejoin {
    /// The role an agent starts as: its configured role, except that an old lead that rejoined
    /// (``RejoinMarker``) starts as a standby, and a promoted standby (`DATA/lead-term.json`)
    /// starts as the lead. A promotion after a rejoin wins; a rejoin moves an earlier
    /// promotion's marker aside, so the two never disagree about which came last.
    static func startingRole(configured: NodeRole, promoted: Bool, rejoined: Bool) -> NodeRole {
        switch configured {
        case .lead where rejoined && !promoted: .standby
        case .standby where promoted: .lead
        default: configured
        }
    }

    /// The newer term and where to reach its lead: asks every lead-eligible member of `store`
    /// but this agent for a signed term newer than `epoch`. Throws only when the store does not
    /// answer.
    static func newerLead(store: Store, name: String, newerThan epoch: Int64) async throws(AgentError) -> (
        handoff: LeadHandoff, certificate: NIOSSLCertificate?
    )? {
        let members = try await store.leadEligibleMembers().filter { $0.name != name }
        for member in members {
            guard var found = await LeadHandoffProbe.fetch(from: member, newerThan: epoch) else { continue }
            // Reached over plain HTTP at its reported address, it may serve nodes over TLS: its
            // signed term carries the certificate (the signature covers it).
            if found.certificate == nil, let pem = found.handoff.term.certificate,
                URLComponents(string: found.handoff.term.url)?.scheme == "https"
            {
                found.certificate = try? NIOSSLCertificate(bytes: Array(pem.utf8), format: .pem)
            }
            return found
        }
        return nil
    }

    /// Asks the lead of `handoff` to take this agent back as a standby and keeps its answer;
    /// ``AgentError`` when it refuses, does not answer, or answers something that does not check out.
    static func rejoin(
        _ handoff: LeadHandoff, certificate: NIOSSLCertificate?, config: NodeConfig, identity: NodeIdentity,
        tls: TLSIdentity, logger: Logger
    ) async throws(AgentError) -> RejoinMarker {
        let term = handoff.term
        if URLComponents(string: term.url)?.scheme == "https", certificate == nil {
            throw AgentError(.identity, "the new lead serves https but no certificate of it could be checked")
        }
        let client = LeadClient(
            baseURL: term.url, signer: RequestSigner(node: config.name, key: identity.signing),
            tls: certificate.map { PinnedTLS.clientConfiguration(trusting: $0) })
        let request = LeadRejoinRequest(
            address: config.listen.description, tlsPin: config.tlsListen != nil ? tls.pin.description : nil,
            tlsPort: config.tlsListen?.port)
        let answer: JoinResponse
        do throws(LeadCallError) {
            answer = try await client.call(API.rejoinLead, body: request, as: JoinResponse.self, timeout: .seconds(10))
        } catch {
            throw AgentError(.identity, "the new lead did not take this agent back: \(error.message)")
        }
        // The answer is hostile input like any join answer.
        guard answer.node.name == config.name, answer.node.role == .standby,
            answer.mesh.lead.name == term.lead, answer.mesh.lead.signPublicKey == term.signPublicKey,
            IPv4Network.parse(answer.node.vpnIP) != nil, (try? IPv4Network(parsing: answer.mesh.cidr)) != nil
        else {
            throw AgentError(.identity, "the new lead's rejoin answer does not match its signed term or this agent")
        }
        if let sealed = answer.sealedMasterKey {
            try MembershipService.keepMasterKey(sealed, box: identity.box, dataDir: config.dataDir)
        }
        let managed = config.storeURL == nil
        if managed {
            if let offer = answer.replication {
                try StandbyReplication(checking: offer, node: config.name, box: identity.box).save(
                    dataDir: config.dataDir)
            } else {
                unlink(StandbyReplication.path(dataDir: config.dataDir))
                logger.warning(
                    "the new lead offers no replication (it has no store.replication_listen): this standby will run without a replica of its store"
                )
            }
        }
        let membership = Membership(
            name: config.name, vpnIP: answer.node.vpnIP, leadURL: term.url,
            lead: .init(
                name: term.lead, url: term.url, signPublicKey: term.signPublicKey, boxPublicKey: term.boxPublicKey),
            cidr: answer.mesh.cidr, meshID: answer.mesh.meshID, joinedAt: answer.node.joinedAt,
            leadCertificate: try? certificate?.pemText(), leadPin: certificate != nil ? term.tlsPin : nil,
            company: answer.node.company, epoch: term.epoch, handoff: handoff)
        try membership.save(dataDir: config.dataDir)
        // A promotion of this agent is over: it does not start as the lead again.
        let promotion = LeadPromotion.markerPath(dataDir: config.dataDir)
        if FileManager.default.fileExists(atPath: promotion) {
            _ = rename(promotion, promotion + ".before-epoch-\(term.epoch)")
        }
        let marker = RejoinMarker(
            epoch: term.epoch, lead: term.lead, at: ISOTime.string(Date()),
            movePending: managed && FileManager.default.fileExists(atPath: config.dataDir + "/postgres/PG_VERSION"),
            keptData: nil)
        try marker.save(dataDir: config.dataDir)
        return marker
    }

    /// `DATA/pgdata.before-epoch-N` for the marker's epoch, or the first of `….2`, `….3`, … that
    /// does not exist yet.
    static func keptDataPath(dataDir: String, epoch: Int64) -> String {
        let base = dataDir + "/pgdata.before-epoch-\(epoch)"
        var path = base
        var suffix = 2
        while FileManager.default.fileExists(atPath: path) {
            path = base + ".\(suffix)"
            suffix += 1
        }
        return path
    }

    /// At the start of a rejoined standby with a managed store: the cluster it ran as a primary
    /// (`DATA/postgres`) is stopped if it still runs and moved aside to
    /// `DATA/pgdata.before-epoch-N`, where it stays (it may hold writes the new lead never had:
    /// an operator decides what to do with them). Then ``StandbyReplicaService`` clones the new
    /// lead into an empty `DATA/postgres`. Does nothing unless the marker says a move is pending.
    static func keepOldData(config: NodeConfig, logger: Logger) async throws(AgentError) {
        guard var marker = try RejoinMarker.load(dataDir: config.dataDir), marker.movePending else { return }
        let directory = config.dataDir + "/postgres"
        if FileManager.default.fileExists(atPath: directory) {
            let managed = try ManagedPostgres(
                dataDir: config.dataDir, binDirectory: config.pgBinDirectory, runAs: config.storeRunAs, logger: logger)
            if await managed.isRunning() { try await managed.stop() }
            let kept = keptDataPath(dataDir: config.dataDir, epoch: marker.epoch)
            guard rename(directory, kept) == 0 else {
                throw AgentError(
                    .store, "cannot move the old primary's data \(directory) aside: \(String(cString: strerror(errno)))"
                )
            }
            marker.keptData = kept
            logger.notice(
                "moved the old primary's PostgreSQL data aside; it is kept, never deleted, and this standby clones the lead afresh",
                metadata: ["nodeagent.kept": "\(kept)", "nodeagent.epoch": "\(marker.epoch)"])
        }
        marker.movePending = false
        try marker.save(dataDir: config.dataDir)
    }
}

// MARK: - The service on a lead

/// On a lead with `election.rejoin_as_standby`: once it is fenced (by a newer term, a standby's
/// step-down or a lost etcd lease), it looks every 2 s for a newer term at the lead-eligible
/// members its store records and rejoins that term's lead as its standby (``LeadRejoin``), then
/// restarts the agent, which comes up as a standby. A lost etcd lease with no newer term anywhere
/// changes nothing here: the lead may win the key back.
///
/// With a managed store a newer term is not in this lead's own database (the promoted standby's
/// term lives in its own): a lead that is not fenced asks the members every 10 s too, so a lead
/// that was frozen or cut off while its standby was promoted fences itself once it can see the
/// newer term, and then rejoins. When no member shows one, the nodes seen last are asked for the
/// term they follow (``Leadership/newerTermRelayed(store:name:members:newerThan:)``): a lead cut
/// off from its promoted standby but not from its nodes fences all the same, and rejoins once the
/// new lead answers. Its commits that still wait for the promoted (synchronous) standby are
/// ended, never acknowledged.
final class LeadRejoinService: Service, Sendable {
    private let config: NodeConfig
    private let identity: NodeIdentity
    private let tls: TLSIdentity
    /// The store's connection string: the service reads on a connection of its own, because the
    /// store's may be stuck in a commit that waits for a synchronous standby that is gone (a
    /// managed lead frozen while its standby was promoted).
    private let conninfo: String
    private let leadership: Leadership
    private let state: AgentState
    private let logger: Logger

    init(
        config: NodeConfig, identity: NodeIdentity, tls: TLSIdentity, conninfo: String, leadership: Leadership,
        state: AgentState, logger: Logger
    ) {
        self.config = config
        self.identity = identity
        self.tls = tls
        self.conninfo = conninfo
        self.leadership = leadership
        self.state = state
        var logger = logger
        logger[metadataKey: "nodeagent.subsystem"] = "leadership"
        self.logger = logger
    }

    /// Until graceful shutdown: one look every 2 s while fenced (every 10 s while leading a
    /// managed store); after a rejoin it asks for the restart and waits for it.
    func run() async throws {
        let reader = Store(conninfo: conninfo)
        var connected = false
        var rejoined = false
        var lastError: String?
        var ticks = 0
        for await _ in AsyncTimerSequence(interval: .seconds(2), clock: .continuous).cancelOnGracefulShutdown() {
            ticks += 1
            guard !rejoined else {
                // Until the restart: a commit that began before the fence and waits for the gone
                // standby would hold the store's connection, and the services' shutdown with it.
                if config.storeURL == nil, connected { await endWaitingCommits(reader, connected: &connected) }
                continue
            }
            let fenced = leadership.fencedReason != nil
            guard fenced || (config.storeURL == nil && ticks % 5 == 0) else { continue }
            if !connected { connected = (try? await reader.connect()) != nil }
            guard connected else { continue }
            let found: (handoff: LeadHandoff, certificate: NIOSSLCertificate?)?
            if fenced {
                if config.storeURL == nil { await endWaitingCommits(reader, connected: &connected) }
                found = await look(reader, connected: &connected)
            } else if let own = leadership.epoch {
                do throws(AgentError) {
                    found = try await LeadRejoin.newerLead(store: reader, name: config.name, newerThan: own)
                } catch {
                    connected = false
                    continue
                }
                if let term = found?.handoff.term {
                    await leadership.fence("a newer term began: epoch \(term.epoch), led by \(term.lead)")
                    await endWaitingCommits(reader, connected: &connected)
                } else if let members = try? await reader.leadEligibleMembers(),
                    let term = await Leadership.newerTermRelayed(
                        store: reader, name: config.name, members: members.filter { $0.name != config.name },
                        newerThan: own)
                {
                    // The new lead is out of reach, but nodes follow it: fence now, rejoin once it answers.
                    await leadership.fence(
                        "nodes follow a newer term: epoch \(term.epoch), led by \(term.lead)")
                    await endWaitingCommits(reader, connected: &connected)
                }
            } else {
                found = nil
            }
            guard let found else { continue }
            do throws(AgentError) {
                let marker = try await LeadRejoin.rejoin(
                    found.handoff, certificate: found.certificate, config: config, identity: identity, tls: tls,
                    logger: logger)
                rejoined = true
                if config.storeURL == nil { await endWaitingCommits(reader, connected: &connected) }
                logger.notice(
                    "rejoined the new lead as its standby; restarting as a standby",
                    metadata: [
                        "nodeagent.lead": "\(marker.lead)", "nodeagent.epoch": "\(marker.epoch)",
                        "nodeagent.old_data_to_move_aside": "\(marker.movePending)",
                    ])
                state.requestRestart()
            } catch {
                if error.message != lastError {
                    logger.warning(
                        "cannot rejoin the new lead as its standby yet; retrying",
                        metadata: ["nodeagent.error": "\(error.message)"])
                }
                lastError = error.message
            }
        }
        await reader.close()
    }

    /// The newer term, if a lead-eligible member answers one. The floor is this lead's own epoch;
    /// with a store whose newest term is another agent's (a shared store), that term itself counts.
    private func look(_ reader: Store, connected: inout Bool) async -> (
        handoff: LeadHandoff, certificate: NIOSSLCertificate?
    )? {
        var floor = leadership.epoch ?? 0
        do throws(AgentError) {
            if let latest = try await reader.latestTerm() {
                floor = max(floor, latest.lead == config.name ? latest.epoch : latest.epoch - 1)
            }
            return try await LeadRejoin.newerLead(store: reader, name: config.name, newerThan: floor)
        } catch {
            connected = false
            return nil
        }
    }

    /// A fenced lead of a managed store ends the sessions whose commits wait for a synchronous
    /// standby (that standby was promoted and never answers): their writes are never
    /// acknowledged, and the agent's own connections are free again (the store's reconnects).
    private func endWaitingCommits(_ reader: Store, connected: inout Bool) async {
        do throws(AgentError) {
            let ended = try await reader.leadQuery(
                """
                SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_stat_activity
                WHERE wait_event = 'SyncRep' AND pid <> pg_backend_pid()
                """
            ).scalar
            if let ended, ended != "0" {
                logger.notice(
                    "ended the sessions whose commits waited for the old synchronous standby: none is acknowledged",
                    metadata: ["nodeagent.sessions": "\(ended)"])
            }
        } catch {
            connected = false
        }
    }
}
