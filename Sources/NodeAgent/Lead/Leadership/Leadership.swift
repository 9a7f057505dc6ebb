import AuroraAPI
import AuroraTLS
import Foundation
import Logging
import Mesh
import Secrets
import Synchronization

/// This lead's term and whether it is fenced.
///
/// A lead begins (or resumes) its term before its registry loads: the first lead of a store
/// takes epoch 1; a lead that finds the store's newest term names another agent is fenced at
/// once and loads nothing. A fenced lead acknowledges no writes (``LeadEpochMiddleware`` answers
/// 503 `fenced`), its store refuses its writes, and it says why in `/health` and
/// `GET /api/lead`. It is fenced when:
///
/// - its store shows a newer term (read at start, at every reconnect, and when a node's request
///   names a higher epoch than its own: a hint it checks in the store, never trusts);
/// - another agent holds the store's lead lock (``Store/leadLockKey``);
/// - a standby about to promote asks it to step down;
/// - its etcd lease could expire without a renewal (``LeaderElection``). Only this fence is
///   lifted, by a restart, once the lead holds the key again and the term is still its own
///   (``mayLiftFence()``).
final class Leadership: Sendable {
    struct State: Sendable {
        var term: LeadTerm?
        var fenced: String?
        /// The fence came from losing the etcd lease, not from a newer term: winning the key
        /// again lifts it (``mayLiftFence()``).
        var recoverable = false
        var lastCheck: ContinuousClock.Instant?
        /// With `election.etcd`: the lead has not held the etcd lead key yet in this process, so
        /// it acknowledges nothing (``refusalReason``), as Patroni's primary runs only while it
        /// holds the leader key.
        var awaitingKey = false
    }

    /// Why a lead that waits for the etcd lead key refuses writes.
    static let awaitingKeyReason = "it does not hold the etcd lead key /aurora/lead yet"

    private let state = Mutex(State())
    private let store: any LeadTermStore
    private let signing: SigningKey
    /// This lead's term as it would begin one (epoch and start time are the store's).
    let template: LeadTerm
    let logger: Logger

    /// Told the epoch when the term begins and the reason when fenced (`/health`).
    let report: @Sendable (_ epoch: Int64?, _ fenced: String?) -> Void
    /// With a store of its own (managed), a newer term is not in it: the lead-eligible members
    /// are asked at start (their signed terms, checked against the keys the store holds for them).
    let newerTermElsewhere: (@Sendable (_ epoch: Int64) async -> LeadTerm?)?

    init(
        store: any LeadTermStore, signing: SigningKey, template: LeadTerm,
        report: @escaping @Sendable (_ epoch: Int64?, _ fenced: String?) -> Void = { _, _ in },
        newerTermElsewhere: (@Sendable (_ epoch: Int64) async -> LeadTerm?)? = nil, awaitsKey: Bool = false,
        logger: Logger
    ) {
        state.withLock { $0.awaitingKey = awaitsKey }
        self.report = report
        self.newerTermElsewhere = newerTermElsewhere
        self.store = store
        self.signing = signing
        self.template = template
        var logger = logger
        logger[metadataKey: "nodeagent.subsystem"] = "leadership"
        self.logger = logger
    }

    /// The term, once begun.
    var term: LeadTerm? { state.withLock { $0.term } }
    /// This lead's epoch, once its term began.
    var epoch: Int64? { term?.epoch }
    /// Whether the fence came only from a lost etcd lease (winning the key again lifts it).
    var recoverable: Bool { state.withLock { $0.fenced != nil && $0.recoverable } }
    /// Why this lead acknowledges no writes; nil while it leads.
    var fencedReason: String? { state.withLock { $0.fenced } }
    /// Whether the lead still waits for its first etcd lead key in this process.
    var awaitingKey: Bool { state.withLock { $0.awaitingKey } }
    /// Why this lead acknowledges nothing now: fenced, or not holding the etcd key yet; nil while
    /// it leads.
    var refusalReason: String? {
        state.withLock { $0.fenced ?? ($0.awaitingKey ? Self.awaitingKeyReason : nil) }
    }

    /// The etcd lead key is this process's: a lead that waited for it serves from now on.
    /// Whether it was waiting.
    func keyWon() -> Bool {
        let (was, fenced) = state.withLock { state -> (Bool, Bool) in
            defer { state.awaitingKey = false }
            return (state.awaitingKey, state.fenced != nil)
        }
        guard was, !fenced else { return was }
        report(epoch, nil)
        logger.notice(
            "holds the etcd lead key; serving", metadata: ["nodeagent.epoch": "\(epoch.map(String.init) ?? "-")"])
        return true
    }

    /// Begins or resumes the term: called once the store answers (and again after every
    /// reconnect, where it only checks). Records this lead's operator token so that every later
    /// lead accepts it.
    func begin(operatorTokenHash: String?) async throws(AgentError) {
        guard fencedReason == nil else { return }
        let latest = try await store.latestTerm()
        if let latest, latest.lead != template.lead {
            await fence(
                "the store's newest term is epoch \(latest.epoch), led by \(latest.lead): this agent is no longer the lead"
            )
            return
        }
        if !(await store.holdsLeadLock()) {
            // The term names this agent (a restart, or the first start after its promotion): a
            // session left by an earlier run, or the old lead's, still holds the lock.
            guard latest != nil, try await store.takeOverLeadLock(timeout: .seconds(10)) else {
                await fence("another agent holds the store's lead lock")
                return
            }
        }
        if let latest, let newer = await newerTermElsewhere?(latest.epoch) {
            await fence(
                "a standby leads a newer term: epoch \(newer.epoch), led by \(newer.lead)"
            )
            return
        }
        if let hash = operatorTokenHash {
            try await store.recordOperatorToken(hash: hash, agent: template.lead)
        }
        if let latest {
            if let own = term, own.epoch != latest.epoch {
                await fence("the store's newest term is epoch \(latest.epoch), not this lead's \(own.epoch)")
                return
            }
            adopt(latest)
            return
        }
        guard let begun = try await store.beginTerm(template, after: nil) else {
            // Another lead began the first term between the read and the insert.
            try await begin(operatorTokenHash: nil)
            return
        }
        adopt(begun)
        logger.notice("began the mesh's first lead term", metadata: ["nodeagent.epoch": "1"])
    }

    private func adopt(_ term: LeadTerm) {
        let changed = state.withLock { state -> Bool in
            defer { state.term = term }
            return state.term?.epoch != term.epoch
        }
        report(term.epoch, awaitingKey ? Self.awaitingKeyReason : nil)
        if changed { logger.info("leading", metadata: ["nodeagent.epoch": "\(term.epoch)"]) }
    }

    /// Stops acknowledging writes, for good: the HTTP layer answers 503 `fenced` and the store
    /// refuses this agent's writes. The first reason is kept.
    func fence(_ reason: String, recoverable: Bool = false) async {
        await store.fenceWrites()
        let first = state.withLock { state -> Bool in
            guard state.fenced == nil else {
                if !recoverable { state.recoverable = false }  // a newer term outranks a lost lease
                return false
            }
            state.fenced = reason
            state.recoverable = recoverable
            return true
        }
        guard first else { return }
        report(epoch, reason)
        logger.error("fenced: acknowledging no more writes", metadata: ["nodeagent.reason": "\(reason)"])
    }

    /// The etcd lead key is this lead's again: whether a fence that came only from losing it
    /// may be lifted, that is the store's newest term is still this lead's. The caller then
    /// restarts the agent, so that nothing it held in memory while fenced (nodes it saw as dead,
    /// leases it saw run out) outlives the fence.
    func mayLiftFence() async -> Bool {
        guard state.withLock({ $0.fenced != nil && $0.recoverable }), let own = epoch else { return false }
        do {
            guard let latest = try await store.latestTerm(), latest.lead == template.lead, latest.epoch == own else {
                state.withLock { $0.recoverable = false }
                return false
            }
            logger.notice(
                "holds the etcd lead key again and its term is current; restarting to serve",
                metadata: ["nodeagent.epoch": "\(own)"])
            return true
        } catch {
            logger.warning(
                "cannot check the store's term to lift the fence", metadata: ["nodeagent.error": "\(error.message)"])
            return false
        }
    }

    /// A request named `claimed` as the highest epoch its sender has seen. Higher than ours: read
    /// the store's newest term (at most once a second) and fence if it is newer. A claim alone
    /// fences nothing.
    func observe(claimed: Int64) async {
        guard let own = epoch, claimed > own, fencedReason == nil else { return }
        let due = state.withLock { state -> Bool in
            if let last = state.lastCheck, last.duration(to: .now) < .seconds(1) { return false }
            state.lastCheck = .now
            return true
        }
        guard due else { return }
        do {
            if let latest = try await store.latestTerm(), latest.epoch > own {
                await fence("a newer term began: epoch \(latest.epoch), led by \(latest.lead)")
            }
        } catch {
            logger.warning(
                "a request named a newer epoch; the store did not answer to check it",
                metadata: ["nodeagent.error": "\(error.message)"])
        }
    }

    /// The store's WAL position (for a standby promoting after this lead stepped down).
    func walPosition() async -> String? { try? await store.walPosition() }

    /// The term signed with this lead's key, for `GET /api/lead/handoff`; nil before the term
    /// began and once fenced.
    /// A lead that waits for its etcd key still shows its term: a newer one must be found by an
    /// old lead that holds the key, so that it fences itself and gives the key up.
    var handoff: LeadHandoff? {
        guard let term, fencedReason == nil else { return nil }
        return LeadHandoff(term: term, signature: Data(signing.sign(term.signedMessage)).base64EncodedString())
    }
}

extension Leadership {
    /// For a managed store: asks the store's lead-eligible members (standbys, and leads other than
    /// `name`) for a signed term newer than the one given; when none has one, the nodes that
    /// follow a lead of the mesh (``newerTermRelayed(store:name:members:newerThan:)``).
    static func standbysTerm(store: Store, name: String) -> @Sendable (_ epoch: Int64) async -> LeadTerm? {
        { epoch in
            let members = ((try? await store.leadEligibleMembers()) ?? []).filter { $0.name != name }
            for member in members {
                if let found = await LeadHandoffProbe.fetch(from: member, newerThan: epoch) {
                    return found.handoff.term
                }
            }
            return await newerTermRelayed(store: store, name: name, members: members, newerThan: epoch)
        }
    }

    /// How many nodes an old lead asks for the term they follow.
    static let relayAskLimit = 16

    /// A newer term relayed by the nodes of the store seen last (at most ``relayAskLimit``, asked
    /// at once): a lead that cannot reach its promoted standby (frozen, cut off, or restarted while
    /// the new lead is away) still learns of the newer term from the nodes that followed it, and
    /// fences. The term counts only when signed by the key the store holds for the lead it names.
    static func newerTermRelayed(store: Store, name: String, members: [Node], newerThan epoch: Int64) async
        -> LeadTerm?
    {
        guard !members.isEmpty,
            let nodes = try? await store.recentlySeenNodes(limit: relayAskLimit, excluding: name), !nodes.isEmpty
        else { return nil }
        return await LeadHandoffProbe.relayed(by: nodes, members: members, newerThan: epoch)
    }

    /// Where nodes reach this agent as their lead: its TLS listener when it has one, else its
    /// plain listener.
    static func url(config: NodeConfig) -> String {
        if let secure = config.tlsListen { return "https://\(secure.description)" }
        return "http://\(config.listen.description)"
    }

    /// The term this agent would begin (the store sets epoch and start time).
    static func template(config: NodeConfig, identity: NodeIdentity, tls: TLSIdentity) -> LeadTerm {
        let serves = config.tlsListen != nil
        return LeadTerm(
            epoch: 0, lead: config.name, url: url(config: config), signPublicKey: identity.signing.publicKey.base64,
            boxPublicKey: identity.box.publicKey.base64, tlsPin: serves ? tls.pin.description : nil,
            certificate: serves ? try? tls.certificate.pemText() : nil, startedAt: "")
    }
}

extension LeadHandoff {
    /// Whether `signature` is `term`'s, made by `key`.
    func isSigned(by key: PublicKey) -> Bool {
        guard let bytes = Data(base64Encoded: signature), bytes.count == 64 else { return false }
        return SigningKey.verify(signature: [UInt8](bytes), of: term.signedMessage, by: key)
    }

    /// The term, when a node that merely passes it on could not have made it up: its lead is one
    /// of `members` (the asker's own record of the lead-eligible members), under the signing key
    /// recorded for it, the signature is that key's, the epoch is above `epoch` and its URL is
    /// sane. A node's say-so alone never fences a lead.
    func relayedTerm(members: [Node], newerThan epoch: Int64) -> LeadTerm? {
        guard term.epoch > epoch, term.url.utf8.count <= 512, URLComponents(string: term.url)?.host != nil,
            let member = members.first(where: { $0.name == term.lead }),
            member.signPublicKey == term.signPublicKey, let key = try? PublicKey(base64: member.signPublicKey),
            isSigned(by: key)
        else { return nil }
        return term
    }
}
