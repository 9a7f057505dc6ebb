import AuroraAPI
import AuroraTLS
import Foundation
import Logging
import Mesh
import Metrics
import Secrets
import Synchronization

/// The lead's registry: every node's record and liveness, in memory, with the store as the
/// durable copy.
///
/// Joins, leaves, removals and state changes are written (with their events) in one
/// transaction before they are acknowledged. Heartbeats only touch memory; `last_seen` is
/// flushed in one statement every few seconds and a record is rewritten only when what a node
/// reports (capabilities, labels, version, address, timing) changes.
actor Registry {
    /// One node as the lead holds it.
    struct Entry: Sendable {
        var node: Node
        /// The node's Ed25519 key from its join: every signed request of the node must verify with it.
        var signKey: PublicKey
        /// The detector's timing for the node, from the timing its last join or heartbeat reported.
        var policy: FailureDetector.Policy
        /// Removed by an operator: its heartbeats are refused until it joins again.
        var removed: Bool
        /// The address the node's requests come from, for probes.
        var observedHost: String?
        /// The RTTs (ms) to its peers its last heartbeat with any reported, and (`peersAt`) when.
        var peers: [PeerRTT] = []
        var peersAt: ContinuousClock.Instant?
        /// When it was last heard from (wall clock), flushed to `last_seen` every 2 s.
        var lastSeen: Date
        /// What its GPU worker last reported (without the job list).
        var worker: WorkerReport?
        /// Its interface's peers, as its last heartbeat reported them.
        private(set) var links: [WireGuardLink] = []

        /// The peers a heartbeat reported; the node's handshake age is its most recent one.
        mutating func setLinks(_ links: [WireGuardLink]) {
            self.links = links
            node.wireguard.handshakeAgeS = links.compactMap(\.handshakeAgeS).min()
        }
    }

    /// A probe the service should make.
    struct ProbeTarget: Sendable {
        var name: String
        var host: String
        var port: Int
        /// When the probe was asked for: a refusal counts only if the node was not heard from since.
        var sentAt: ContinuousClock.Instant
    }

    let store: any NodeStore
    let hub: EventHub
    let config: NodeConfig
    let identity: NodeIdentity
    /// The mesh network (`wireguard.cidr`) addresses are allocated from; the lead holds the first.
    let network: IPv4Network
    let logger: Logger

    var entries: [String: Entry] = [:]
    /// The nodes' signing keys, readable without the actor (request verification).
    nonisolated let signKeys = SignKeyTable()
    /// The pure failure detector: heartbeats, ticks and probe results go in, transitions come out.
    var detector = FailureDetector()
    /// Nonces of signed requests seen within the allowed clock skew, to refuse replays.
    var replay = ReplayGuard(windowSeconds: RequestSigning.maxSkewSeconds)
    /// Nodes whose `last_seen` (`seenDirty`) or reported record (`recordDirty`) changed since the
    /// last ``flush()``.
    var seenDirty = Set<String>()
    var recordDirty = Set<String>()
    /// Grows on every membership change; nodes refresh their cached copy when it moves.
    var version = 1
    /// True once ``load(capabilities:meshID:now:)`` finished; until then every call answers 503.
    private(set) var loaded = false
    var meshID: String?
    /// The GPU coordinator hears of node changes that matter for placement.
    var jobs: JobCoordinator?
    /// Heartbeat answers carry it so nodes refresh their secrets cache.
    let secretsGeneration: SecretsGeneration

    /// Pairs of nodes behind NAT: relayed, trying or direct (see ``planPaths(now:)``).
    var planner = PathPlanner()
    /// The last plan, published in the topology (nodes and relays cache it).
    var paths: [MeshPath] = []
    /// The planner's overflow was logged.
    var pathOverflowSaid = false

    let heartbeats = Counter(label: "aurora_heartbeats_total")
    let refusals = Counter(label: "aurora_signed_requests_refused_total")

    /// Reads nothing yet (``load(capabilities:meshID:now:)`` does); throws ``AgentError`` with
    /// code `config` when `wireguard.cidr` is not a network.
    init(
        store: any NodeStore, hub: EventHub, config: NodeConfig, identity: NodeIdentity,
        secretsGeneration: SecretsGeneration = SecretsGeneration(),
        logger: Logger
    ) throws(AgentError) {
        self.secretsGeneration = secretsGeneration
        self.store = store
        self.hub = hub
        self.config = config
        self.identity = identity
        var logger = logger
        logger[metadataKey: "nodeagent.subsystem"] = "registry"
        self.logger = logger
        do { self.network = try IPv4Network(parsing: config.wireguardCIDR) } catch {
            throw AgentError(.config, "wireguard.cidr: \(error.message)")
        }
    }

    /// Called by the job service before the coordinator loads, so no node change is missed.
    func attach(_ jobs: JobCoordinator) { self.jobs = jobs }

    // MARK: Loading

    /// Loads every node from the store and records the lead itself. Nodes that were alive get
    /// a fresh grace period from now: the lead was away, not they.
    func load(capabilities: Capabilities, meshID: String?, now: ContinuousClock.Instant = .now) async throws(AgentError)
    {
        self.meshID = meshID
        let (stored, unreadable) = try await store.nodes()
        for name in unreadable {
            logger.error("skipping an unreadable node row", metadata: ["nodeagent.node": "\(name)"])
        }
        for entry in stored {
            entries[entry.node.name] = entry
            signKeys.set(entry.node.name, entry.signKey)
            if entry.node.name != config.name {
                detector.add(
                    entry.node.name, policy: entry.policy,
                    state: MemberState(rawValue: entry.node.state.rawValue) ?? .alive, at: now)
            }
        }
        try await recordLead(capabilities: capabilities)
        loaded = true
        logger.info("registry loaded", metadata: ["nodeagent.nodes": "\(entries.count)"])
    }

    /// Inserts or refreshes the lead's own record (it is alive while it answers).
    func recordLead(capabilities: Capabilities) async throws(AgentError) {
        // A promoted standby keeps the address it joined with; the first lead takes the network's first.
        let vpnIP =
            config.vpnIP ?? entries[config.name]?.node.vpnIP
            ?? IPv4Network.format(AddressAllocator(network: network).leadAddress)
        let now = Date()
        let joinedAt = entries[config.name]?.node.joinedAt ?? ISOTime.string(now)
        let node = Node(
            name: config.name, role: .lead, company: config.company, vpnIP: vpnIP, state: .alive,
            lastSeen: ISOTime.string(now),
            labels: config.labels,
            wireguard: WireGuardPeer(
                publicKey: identity.wireguard.publicKey.base64, endpoint: config.wireguardEndpoint,
                listenPort: config.wireguardListenPort,
                behindNAT: config.wireguardBehindNAT, relay: config.relayOffer),
            capabilities: capabilities, version: AuroraVersion.current, address: config.listen.description,
            joinedAt: joinedAt,
            signPublicKey: identity.signing.publicKey.base64, boxPublicKey: identity.box.publicKey.base64,
            timing: config.heartbeatTiming, checks: nil)
        let entry = Entry(
            node: node, signKey: identity.signing.publicKey, policy: config.detectorPolicy, removed: false,
            observedHost: config.listen.host, lastSeen: now)
        if let other = entries.values.first(where: { $0.node.vpnIP == vpnIP && $0.node.name != config.name }) {
            throw AgentError(
                .config, "the lead's address \(vpnIP) is held by node '\(other.node.name)'; set vpn_ip for the lead")
        }
        var kept = entry
        kept.node.scheduling = entries[config.name]?.node.scheduling
        try await store.write([.upsert(kept, tokenID: nil)], events: [], published: { _ in })
        entries[config.name] = kept
    }

    // MARK: Join

    /// A node joins with a token. All-or-nothing: the token use, the node row and the
    /// `node.joined` event commit together, or nothing changes.
    func join(_ request: JoinRequest, observedHost: String?) async throws(Refusal) -> JoinResponse {
        try requireLoaded()
        let name: String
        do { name = try NodeName(request.name).value } catch { throw Refusal.badRequest("name: \(error.message)") }
        guard request.profile != .lead else { throw Refusal.badRequest("profile: a node cannot join as a lead") }
        let signKey = try Self.publicKey(request.signPublicKey, field: "sign_public_key")
        _ = try Self.publicKey(request.boxPublicKey, field: "box_public_key")
        _ = try Self.publicKey(request.wireguard.publicKey, field: "wireguard.public_key")
        guard (1...65535).contains(request.wireguard.listenPort) else {
            throw Refusal.badRequest("wireguard.listen_port must be 1-65535")
        }
        let timing = request.timing ?? Self.defaultTiming(for: request.profile)
        let policy = try Self.policy(timing)
        if let address = request.address { _ = try Self.hostPort(address, field: "address") }
        try Self.validateClaims(
            company: request.company, labels: request.labels, version: request.version,
            endpoint: request.wireguard.endpoint, capabilities: request.capabilities)
        let tlsPin = try request.tlsPin.map { text throws(Refusal) -> String in
            guard let pin = TLSPin(parsing: text) else {
                throw Refusal.badRequest("tls_pin must be sha256: and 64 hex digits")
            }
            return pin.description
        }
        try Self.validateTLSPort(request.tlsPort)

        var asked: UInt32?
        if let text = request.vpnIP, !text.isEmpty {
            guard let address = IPv4Network.parse(text) else {
                throw Refusal.badRequest("vpn_ip: '\(text)' is not an IPv4 address")
            }
            asked = address
        }
        let requested = asked

        // Everything that depends on other nodes (the token, the name, the address) is decided
        // inside the store's transaction (``JoinAttempt``).
        let now = Date()
        var template = Node(
            name: name, role: request.profile, company: "", vpnIP: "", state: .alive,
            lastSeen: ISOTime.string(now), labels: [:],
            wireguard: WireGuardPeer(
                publicKey: request.wireguard.publicKey, endpoint: request.wireguard.endpoint,
                listenPort: request.wireguard.listenPort,
                behindNAT: request.wireguard.behindNAT ?? (request.profile == .edge)),
            capabilities: request.capabilities, version: request.version ?? "", address: request.address,
            joinedAt: ISOTime.string(now), signPublicKey: request.signPublicKey, boxPublicKey: request.boxPublicKey,
            timing: timing, checks: nil)
        template.tlsPin = tlsPin
        template.tlsPort = request.tlsPort
        let attempt = JoinAttempt(
            tokenHash: Hex.encode(Crypto.sha256(Array(JoinTokens.secret(request.token).utf8))), template: template,
            signKey: signKey, policy: policy, claimedCompany: request.company, requested: requested,
            allocator: AddressAllocator(network: network), grace: config.wireguardReuseAfter, leadName: config.name,
            now: now)
        let hub = self.hub
        let outcome: Result<JoinAttempt.Joined, Refusal>
        do {
            outcome = try await store.join(attempt, published: { hub.publish($0) })
        } catch {
            throw Refusal.storeUnavailable(error)
        }
        let node: Node, tokenID: String
        switch outcome {
        case .failure(let refusal):
            logger.notice(
                "join refused", metadata: ["nodeagent.node": "\(name)", "nodeagent.reason": "\(refusal.code)"])
            throw refusal
        case .success(let joined):
            (node, tokenID) = (joined.node, joined.tokenID)
        }
        let vpnIP = node.vpnIP
        // A removed node whose address was given out lets go of it (the store did the same).
        for (other, held) in entries where other != name && held.removed && held.node.vpnIP == vpnIP {
            entries[other]?.node.vpnIP = ""
        }
        var entry = Entry(
            node: node, signKey: signKey, policy: policy, removed: false, observedHost: observedHost, lastSeen: now)
        entry.node.reportedLabels = request.labels.flatMap { $0.isEmpty ? nil : $0 }
        // A rejoin keeps an operator's cordon or drain (a removed node starts afresh, as its row).
        if let previous = entries[name], !previous.removed { entry.node.scheduling = previous.node.scheduling }
        entries[name] = entry
        signKeys.set(name, signKey)
        detector.add(name, policy: policy, at: .now)
        version += 1
        logger.info(
            "node joined",
            metadata: ["nodeagent.node": "\(name)", "nodeagent.vpn_ip": "\(vpnIP)", "nodeagent.token": "\(tokenID)"])
        return JoinResponse(node: entry.node, mesh: meshInfo())
    }

    /// The mesh as a join answer gives it: network, the lead's name, URL and public keys, mesh id.
    func meshInfo() -> JoinResponse.Mesh {
        JoinResponse.Mesh(
            cidr: network.description,
            lead: .init(
                name: config.name, url: "http://\(config.listen)", signPublicKey: identity.signing.publicKey.base64,
                boxPublicKey: identity.box.publicKey.base64),
            meshID: meshID)
    }

    // MARK: Heartbeats

    /// A verified heartbeat from `name`.
    /// Memory only, but for the events of a state change (a dead node that beats again is
    /// `alive`) or a replica change. The registry version moves when peers must render another
    /// endpoint; the answer carries it, the secrets generation, and `sendFull` when the lead has
    /// no capabilities of the node (after its restart). 400 for bad claims, 404 for an unknown
    /// node, 503 when a state change cannot be stored.
    func heartbeat(_ name: String, _ beat: HeartbeatRequest, observedHost: String?, at: ContinuousClock.Instant = .now)
        async throws(Refusal) -> HeartbeatResponse
    {
        let policy = try Self.policy(beat.timing)
        if let address = beat.address { _ = try Self.hostPort(address, field: "address") }
        try Self.validateClaims(
            company: nil, labels: beat.labels, version: beat.version, endpoint: beat.wireguard?.endpoint,
            capabilities: beat.capabilities)
        try Self.validateTLSPort(beat.tlsPort)
        if let metrics = beat.metricsAddress, try Self.hostPort(metrics, field: "metrics_address").port == 0 {
            throw Refusal.badRequest("metrics_address: the port must be 1-65535")
        }
        if let started = beat.worker?.startedAt, started.utf8.count > 40 || ISOTime.parse(started) == nil {
            throw Refusal.badRequest("worker.started_at must be an ISO 8601 time")
        }
        guard var entry = entries[name] else { throw Refusal.notFound("no node named '\(name)'") }
        let now = Date()
        heartbeats.increment()
        let capabilities = beat.capabilities ?? entry.node.capabilities
        // What a node says of its labels is shown as `reported_labels`; placement and rights use
        // only the labels its token or an operator gave it.
        if let reported = beat.labels { entry.node.reportedLabels = reported.isEmpty ? nil : reported }
        let metricsAddress = Self.metricsAddress(beat.metricsAddress, node: entry.node, observed: observedHost)
        if entry.node.capabilities != capabilities || entry.node.version != beat.version
            || entry.node.address != beat.address || entry.node.timing != beat.timing
            || entry.node.tlsPort != beat.tlsPort || entry.node.metricsAddress != metricsAddress
        {
            recordDirty.insert(name)
            // Where to reach a node changed: nodes refresh their cached registry.
            if entry.node.address != beat.address || entry.node.metricsAddress != metricsAddress { version += 1 }
        }
        let previousCapabilities = entry.node.capabilities
        entry.node.capabilities = capabilities
        entry.node.version = beat.version
        entry.node.address = beat.address
        entry.node.timing = beat.timing
        entry.node.tlsPort = beat.tlsPort
        entry.node.metricsAddress = metricsAddress
        entry.node.checks = beat.checks
        let previousPostgres = entry.node.postgres
        entry.node.postgres = beat.postgres
        if let relay = beat.wireguard?.relay, !relay.isValid {
            throw Refusal.badRequest("wireguard.relay: port_base 1024+ and 1-4096 pairs, all ports within 65535")
        }
        if let report = beat.wireguard {
            let endpoint = report.endpoint.flatMap { $0.isEmpty ? nil : $0 }
            if entry.node.wireguard.relay != report.relay {
                recordDirty.insert(name)
                entry.node.wireguard.relay = report.relay
            }
            if entry.node.wireguard.endpoint != endpoint || entry.node.wireguard.listenPort != report.listenPort
                || entry.node.wireguard.behindNAT != report.behindNAT || entry.observedHost != observedHost
            {
                recordDirty.insert(name)
                version += 1  // peers render another endpoint or keepalive
            }
            entry.node.wireguard.endpoint = endpoint
            entry.node.wireguard.listenPort = report.listenPort
            entry.node.wireguard.behindNAT = report.behindNAT
            entry.setLinks(report.peers ?? [])
        }
        entry.policy = policy
        entry.observedHost = observedHost
        entry.lastSeen = now  // `node.lastSeen` is formatted when the registry is read
        if !beat.peers.isEmpty {
            entry.peers = beat.peers
            entry.peersAt = at
        }
        var worker = beat.worker
        worker?.jobs = []
        let placementChanged =
            entry.worker != worker || previousCapabilities.gpus != capabilities.gpus
            || previousCapabilities.models != capabilities.models
            || (entry.peers.isEmpty && !beat.peers.isEmpty)
        entry.worker = worker
        entries[name] = entry
        seenDirty.insert(name)
        let directives = detector.onHeartbeat(name, policy: policy, at: at)
        try await apply(directives)
        await recordPostgres(name, from: previousPostgres, to: beat.postgres)
        if let jobs {
            if placementChanged, let update = jobUpdate(name) { await jobs.nodeChanged(update) }
            if let report = beat.worker {
                await jobs.renew(name, report.jobs, workerStartedAt: report.startedAt.flatMap(ISOTime.parse))
            }
        }
        return HeartbeatResponse(
            state: entries[name]?.node.state ?? .alive, registryVersion: version, leadTime: ISOTime.string(now),
            sendFull: capabilities == .unknown, secretsVersion: secretsGeneration.current)
    }

    /// The node leaves on purpose (its own signed call).
    /// The node is `left` at once (`node.left` with `by: node`); 404 for an unknown name.
    func leave(_ name: String) async throws(Refusal) {
        guard entries[name] != nil else { throw Refusal.notFound("no node named '\(name)'") }
        try await apply(detector.onLeave(name, at: .now), leftBy: "node")
    }

    /// An operator removes a node: it is `left` (`node.left` with `by: operator`), its jobs are
    /// requeued and its signed requests are refused until it joins again. With `keep` its record
    /// stays in every view as `left`; without, it leaves every view (`node.removed`) and its name
    /// is free at once. Either way its address is held for `wireguard.reuse_after_s` (without
    /// `keep`, by a hidden tombstone row). Answers the record as it was removed.
    func remove(_ name: String, keep: Bool = true) async throws(Refusal) -> Node {
        try requireLoaded()
        guard var entry = entries[name] else { throw Refusal.notFound("no node named '\(name)'") }
        guard name != config.name else { throw Refusal.badRequest("the lead cannot remove itself") }
        entry.removed = true
        entries[name] = entry
        do {
            try await store.write([.removed(name: name)], events: [], published: { _ in })
        } catch {
            throw Refusal.storeUnavailable(error)
        }
        let directives = detector.onLeave(name, at: .now)
        if !directives.isEmpty {
            try await apply(directives, leftBy: "operator")
        }
        let removed = try node(name)
        guard !keep else {
            logger.notice("node removed", metadata: ["nodeagent.node": "\(name)", "nodeagent.kept": "true"])
            return removed
        }
        let hub = self.hub
        do {
            try await store.write(
                [.forgotten(name: name)],
                events: [
                    EventLog.Draft(
                        type: EventType.nodeRemoved, node: name,
                        data: ["vpn_ip": .string(removed.vpnIP), "by": .string("operator")])
                ],
                published: { hub.publish($0) })
        } catch {
            throw Refusal.storeUnavailable(error)
        }
        forget(name)
        logger.notice("node removed", metadata: ["nodeagent.node": "\(name)", "nodeagent.kept": "false"])
        return removed
    }

    /// An operator sets a node's trusted labels (placement matches only these).
    func setLabels(_ name: String, _ labels: [String: String]) async throws(Refusal) -> Node {
        try requireLoaded()
        guard entries[name] != nil else { throw Refusal.notFound("no node named '\(InputRules.printable(name))'") }
        do throws(MeshError) { try InputRules.labels(labels, field: "labels") } catch {
            throw Refusal.badRequest(error.message)
        }
        do {
            let hub = self.hub
            try await store.write(
                [.labels(name: name, labels: labels)],
                events: [
                    EventLog.Draft(
                        type: EventType.nodeLabelsChanged, node: name,
                        data: ["labels": .object(labels.mapValues { .string($0) }), "by": .string("operator")])
                ],
                published: { hub.publish($0) })
        } catch {
            throw Refusal.storeUnavailable(error)
        }
        entries[name]?.node.labels = labels
        version += 1
        if let jobs, let update = jobUpdate(name) { await jobs.nodeChanged(update) }
        logger.info("node labels set", metadata: ["nodeagent.node": "\(name)"])
        return try node(name)
    }

    /// An operator cordons, drains or reopens a node: the lead places no new job on a cordoned
    /// or draining node, and hands a draining node's running jobs back at the deadline.
    func setScheduling(_ name: String, _ update: NodeSchedulingUpdate) async throws(Refusal) -> Node {
        try requireLoaded()
        guard let entry = entries[name], !entry.removed else {
            throw Refusal.notFound("no node named '\(InputRules.printable(String(name.prefix(64))))'")
        }
        let now = Date()
        var scheduling: NodeScheduling?
        switch update.state {
        case .open:
            guard update.deadlineS == nil else {
                throw Refusal.badRequest("deadline_s applies to state draining only")
            }
            scheduling = nil
        case .cordoned:
            guard update.deadlineS == nil else {
                throw Refusal.badRequest("deadline_s applies to state draining only")
            }
            scheduling = NodeScheduling(state: .cordoned, since: ISOTime.string(now))
        case .draining:
            let seconds = update.deadlineS ?? NodeSchedulingUpdate.defaultDeadlineS
            guard seconds.isFinite, (0...NodeSchedulingUpdate.maxDeadlineS).contains(seconds) else {
                throw Refusal.badRequest(
                    "deadline_s must be 0-\(Int(NodeSchedulingUpdate.maxDeadlineS)) seconds (a week at most)")
            }
            scheduling = NodeScheduling(
                state: .draining, deadline: ISOTime.string(now.addingTimeInterval(seconds)), since: ISOTime.string(now))
        }
        var data: [String: JSONValue] = [
            "state": .string(update.state.rawValue), "by": .string("operator"),
            "from": .string(entry.node.scheduling?.state.rawValue ?? SchedulingState.open.rawValue),
        ]
        if let deadline = scheduling?.deadline { data["deadline"] = .string(deadline) }
        do {
            let hub = self.hub
            try await store.write(
                [.scheduling(name: name, scheduling)],
                events: [EventLog.Draft(type: EventType.nodeSchedulingChanged, node: name, data: data)],
                published: { hub.publish($0) })
        } catch {
            throw Refusal.storeUnavailable(error)
        }
        entries[name]?.node.scheduling = scheduling
        version += 1
        if let jobs, let update = jobUpdate(name) { await jobs.nodeChanged(update) }
        logger.notice(
            "node scheduling set",
            metadata: ["nodeagent.node": "\(name)", "nodeagent.scheduling": "\(update.state.rawValue)"])
        return try node(name)
    }

    // MARK: Internals

    /// 503 `starting` until the registry has loaded.
    func requireLoaded() throws(Refusal) {
        guard loaded else {
            throw Refusal(.unavailable, code: "starting", message: "the registry is starting; retry in a moment")
        }
    }

    /// Records state changes: memory, the store (state and event in one transaction), then subscribers.
    /// Damped transitions change the state but write no event. Every changed node is told to the
    /// job coordinator, which requeues the jobs of dead or left nodes. A store failure is a 503; the
    /// memory already holds the new state.
    func apply(_ directives: [FailureDetector.Directive], leftBy: String? = nil) async throws(Refusal) {
        let transitions = directives.compactMap { directive -> FailureDetector.Transition? in
            if case .transition(let transition) = directive { transition } else { nil }
        }
        guard !transitions.isEmpty else { return }
        var changes: [NodeChange] = []
        var drafts: [EventLog.Draft] = []
        for transition in transitions {
            guard var entry = entries[transition.name], let state = NodeState(rawValue: transition.to.rawValue) else {
                continue
            }
            entry.node.state = state
            entries[transition.name] = entry
            version += 1
            changes.append(.state(name: transition.name, state: state, lastSeen: entry.lastSeen))
            logger.notice(
                "node state changed",
                metadata: [
                    "nodeagent.node": "\(transition.name)", "nodeagent.from": "\(transition.from.rawValue)",
                    "nodeagent.to": "\(transition.to.rawValue)", "nodeagent.reason": "\(transition.reason.rawValue)",
                    "nodeagent.reported": "\(transition.reported)",
                ])
            guard transition.reported else { continue }
            var data: [String: JSONValue] = [
                "from": .string(transition.from.rawValue), "to": .string(transition.to.rawValue),
                "reason": .string(transition.reason.rawValue),
            ]
            if transition.dampingStarted { data["damped"] = .bool(true) }
            if transition.reason == .settled { data["folded"] = .number(Double(transition.folded)) }
            if transition.to == .left {
                data["by"] = .string(leftBy ?? "node")
                drafts.append(EventLog.Draft(type: EventType.nodeLeft, node: transition.name, data: data))
            } else {
                drafts.append(EventLog.Draft(type: EventType.nodeStateChanged, node: transition.name, data: data))
            }
        }
        let hub = self.hub
        do { try await store.write(changes, events: drafts, published: { hub.publish($0) }) } catch {
            throw Refusal.storeUnavailable(error)
        }
        if let jobs {
            for transition in transitions {
                if let update = jobUpdate(transition.name) { await jobs.nodeChanged(update) }
            }
        }
    }

    /// What the job coordinator needs to know of a node.
    func jobUpdate(_ name: String) -> JobCoordinator.NodeUpdate? {
        guard let entry = entries[name] else { return nil }
        return JobCoordinator.NodeUpdate(
            name: name, state: entry.removed ? .left : entry.node.state, labels: entry.node.labels,
            gpus: entry.node.capabilities.gpus, models: entry.node.capabilities.models, worker: entry.worker,
            rttMs: entry.peers.first { $0.name == config.name }?.rttMs, scheduling: entry.node.scheduling)
    }

    /// A node's company and box key (base64), for resolving and sealing its secrets.
    /// Nil for an unknown node.
    func secretIdentity(_ name: String) -> (company: String, boxKey: String)? {
        entries[name].map { ($0.node.company, $0.node.boxPublicKey) }
    }

    /// Every node, for the job coordinator's load.
    func jobUpdates() -> [JobCoordinator.NodeUpdate] { entries.keys.sorted().compactMap(jobUpdate) }

    /// Where the lead may call a node's agent: the port it reported, on the host its signed
    /// requests come from (never a host it merely names).
    func agentAddress(_ name: String) -> (host: String, port: Int)? { entries[name].flatMap(Self.probeAddress) }

    /// The node's TLS listener on the host its signed requests come from, and the pin of the key
    /// it joined with: the lead calls it only over TLS to that key.
    func agentTLS(_ name: String) -> (host: String, port: Int, pin: TLSPin)? {
        guard let entry = entries[name], let host = entry.observedHost, let port = entry.node.tlsPort,
            let pin = entry.node.tlsPin.flatMap(TLSPin.init(parsing:))
        else { return nil }
        return (host, port, pin)
    }

    /// A reported `tls_port` must be 1–65535 (400 otherwise); nil is no TLS listener.
    /// The metrics address a heartbeat reports, as the registry keeps it for Prometheus: only
    /// when its host is a wildcard, the node's mesh address or the host its requests come from,
    /// so that a node cannot send a scraper to a host it only names; nil otherwise.
    static func metricsAddress(_ reported: String?, node: Node, observed: String?) -> String? {
        guard let reported, let address = try? HostPort(parsing: reported) else { return nil }
        let allowed = ["0.0.0.0", "::", node.vpnIP] + (observed.map { [$0] } ?? [])
        return allowed.contains(address.host) ? address.description : nil
    }

    static func validateTLSPort(_ port: Int?) throws(Refusal) {
        if let port, !(1...65535).contains(port) { throw Refusal.badRequest("tls_port must be 1-65535") }
    }

    /// The node's reported port on its observed host, when its reported address is that host or a
    /// wildcard; nil otherwise, so a node cannot make the lead connect to a host it only names.
    static func probeAddress(_ entry: Entry) -> (host: String, port: Int)? {
        guard let text = entry.node.address, let address = try? HostPort(parsing: text),
            let observed = entry.observedHost
        else { return nil }
        if address.host == observed { return (observed, address.port) }
        if address.host == "0.0.0.0" || address.host == "::" { return (observed, address.port) }
        return nil
    }

}
