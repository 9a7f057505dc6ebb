import AuroraAPI
import Foundation
import Mesh

@testable import NodeAgent

// MARK: - Nodes

extension MemoryStore: NodeStore {
    /// What the `nodes` table keeps of a node: no runtime view (checks, PostgreSQL, handshakes,
    /// reported labels), as a reload from PostgreSQL would find it.
    static func stored(_ entry: Registry.Entry) -> Registry.Entry {
        let node = entry.node
        var kept = Node(
            name: node.name, role: node.role, company: node.company, vpnIP: node.vpnIP, state: node.state,
            lastSeen: ISOTime.string(entry.lastSeen), labels: node.labels,
            wireguard: WireGuardPeer(
                publicKey: node.wireguard.publicKey, endpoint: node.wireguard.endpoint,
                listenPort: node.wireguard.listenPort, behindNAT: node.wireguard.behindNAT ?? false),
            capabilities: node.capabilities, version: node.version, address: node.address, joinedAt: node.joinedAt,
            signPublicKey: node.signPublicKey, boxPublicKey: node.boxPublicKey, timing: node.timing)
        kept.tlsPin = node.tlsPin
        kept.tlsPort = node.tlsPort
        kept.metricsAddress = node.metricsAddress
        return Registry.Entry(
            node: kept, signKey: entry.signKey, policy: entry.policy, removed: entry.removed, lastSeen: entry.lastSeen)
    }

    func nodes() async throws(AgentError) -> (entries: [Registry.Entry], unreadable: [String]) {
        try locked { tables, _ in
            (tables.nodes.values.filter { !$0.forgotten }.map(\.entry).sorted { $0.node.name < $1.node.name }, [])
        }
    }

    func write(_ changes: [NodeChange], events drafts: [EventLog.Draft], published: @escaping Published)
        async throws(AgentError)
    {
        try locked { tables, now in
            for change in changes { Self.apply(change, to: &tables, at: now) }
            published(Self.record(drafts, in: &tables, at: now))
        }
    }

    static func apply(_ change: NodeChange, to tables: inout Tables, at now: Date) {
        switch change {
        case .upsert(let entry, let tokenID):
            var row = NodeRow(entry: stored(entry), tokenID: tokenID, removedAt: nil)
            row.entry.removed = false
            // As the SQL upsert: the first join's time stays.
            if let joined = tables.nodes[entry.node.name]?.entry.node.joinedAt { row.entry.node.joinedAt = joined }
            // …and so does an operator's cordon or drain, unless the row was removed.
            if let previous = tables.nodes[entry.node.name], !previous.entry.removed {
                row.entry.node.scheduling = previous.entry.node.scheduling
            }
            tables.nodes[entry.node.name] = row
        case .state(let name, let state, let lastSeen):
            tables.nodes[name]?.entry.node.state = state
            tables.nodes[name]?.entry.lastSeen = lastSeen
            tables.nodes[name]?.entry.node.lastSeen = ISOTime.string(lastSeen)
        case .seen(let seen):
            for node in seen {
                tables.nodes[node.name]?.entry.lastSeen = node.at
                tables.nodes[node.name]?.entry.node.lastSeen = ISOTime.string(node.at)
            }
        case .reported(let entry):
            guard var row = tables.nodes[entry.node.name] else { return }
            row.entry.node.labels = entry.node.labels
            row.entry.node.capabilities = entry.node.capabilities
            row.entry.node.timing = entry.node.timing
            row.entry.node.version = entry.node.version
            row.entry.node.address = entry.node.address
            row.entry.node.tlsPort = entry.node.tlsPort
            row.entry.node.metricsAddress = entry.node.metricsAddress
            tables.nodes[entry.node.name] = row
        case .labels(let name, let labels):
            tables.nodes[name]?.entry.node.labels = labels
        case .scheduling(let name, let scheduling):
            tables.nodes[name]?.entry.node.scheduling = scheduling
        case .removed(let name):
            tables.nodes[name]?.entry.removed = true
            tables.nodes[name]?.removedAt = now
        case .forgotten(let name):
            if tables.nodes[name]?.entry.node.vpnIP.isEmpty == true {
                tables.nodes[name] = nil
            } else {
                tables.nodes[name]?.forgotten = true
            }
        case .company(let name, let company):
            tables.nodes[name]?.entry.node.company = company
        case .rejoined(let name, let tlsPin):
            tables.nodes[name]?.entry.node.role = .standby
            tables.nodes[name]?.entry.node.tlsPin = tlsPin
        }
    }

    func join(_ attempt: JoinAttempt, published: @escaping Published) async throws(AgentError) -> Result<
        JoinAttempt.Joined, Refusal
    > {
        try locked { (tables, now) throws(AgentError) in
            let token = tables.joinTokens.first { $0.hash == attempt.tokenHash }.map {
                JoinTokenRow(
                    id: $0.id, profile: $0.profile, company: $0.company, labels: $0.labels, reusable: $0.reusable,
                    uses: $0.uses, revoked: $0.revokedAt != nil, expired: $0.expiresAt <= now)
            }
            let holder = tables.nodes[attempt.name].map {
                JoinRules.Holder(
                    signPublicKey: $0.entry.node.signPublicKey, removed: $0.entry.removed, vpnIP: $0.entry.node.vpnIP,
                    joinedAt: $0.entry.node.joinedAt, labels: $0.entry.node.labels)
            }
            let others = tables.nodes.values.filter {
                $0.entry.node.name != attempt.name && !$0.entry.node.vpnIP.isEmpty
            }
            .map {
                JoinRules.AddressHolder(
                    node: $0.entry.node.name, vpnIP: $0.entry.node.vpnIP, removed: $0.entry.removed,
                    removedAgoS: $0.removedAt.map { now.timeIntervalSince($0) } ?? 0)
            }
            let decision: JoinAttempt.Decision
            switch try attempt.decide(token: token, holder: holder, others: { () throws(AgentError) in others }) {
            case .failure(let refusal): return .failure(refusal)
            case .success(let accepted): decision = accepted
            }
            if let reclaimed = decision.reclaimed, tables.nodes[reclaimed]?.entry.removed == true {
                tables.nodes[reclaimed]?.entry.node.vpnIP = ""
                if tables.nodes[reclaimed]?.forgotten == true { tables.nodes[reclaimed] = nil }
            }
            if let index = tables.joinTokens.firstIndex(where: { $0.id == decision.tokenID }) {
                tables.joinTokens[index].uses += 1
            }
            Self.apply(.upsert(decision.entry, tokenID: decision.tokenID), to: &tables, at: now)
            let events = Self.record([decision.event], in: &tables, at: now)
            published(events)
            return .success(JoinAttempt.Joined(node: decision.entry.node, tokenID: decision.tokenID, event: events[0]))
        }
    }
}

// MARK: - Jobs

extension MemoryStore: JobStore {
    func openJobs() async throws(AgentError) -> (jobs: [(Job, [String: JSONValue])], unreadable: [String]) {
        try locked { tables, _ in
            (tables.jobs.filter { !$0.job.state.isTerminal }.map { ($0.job, $0.payload) }, [])
        }
    }

    func job(_ id: String) async throws(AgentError) -> Job? {
        try locked { tables, _ in tables.jobs.first { $0.job.id == id }?.job }
    }

    func job(byKey scopedKey: String) async throws(AgentError) -> Job? {
        try locked { tables, _ in tables.jobs.first { JobRows.scopedKey($0.job) == scopedKey }?.job }
    }

    func jobs(state: JobState?, visibleTo caller: String, limit: Int) async throws(AgentError) -> [Job] {
        try locked { tables, _ in
            Array(
                tables.jobs.reversed().map(\.job).filter { job in
                    (state == nil || job.state == state) && JobAccess.mayRead(job, caller)
                }.prefix(max(1, limit)))
        }
    }

    func commit(_ writes: Writes, published: @escaping Published) async throws(AgentError) -> Writes.Outcome {
        try locked { tables, now in
            let inserted = writes.insertJob?.0.id
            let updates = writes.updates.filter { $0.id != inserted }
            if let (job, payload) = writes.insertJob {
                let key = JobRows.scopedKey(job)
                if let key, let existing = tables.jobs.first(where: { $0.key == key }) {
                    // As PostgreSQL's ON CONFLICT DO NOTHING: the round's other placements still land.
                    for update in updates { Self.update(update, in: &tables) }
                    return .duplicate(existing.job)
                }
                tables.jobs.append(
                    JobRow(seq: (tables.jobs.last?.seq ?? 0) + 1, job: job, payload: payload, key: key))
            }
            for update in updates { Self.update(update, in: &tables) }
            let events = Self.record(writes.events, in: &tables, at: now)
            published(events)
            return .committed(events)
        }
    }

    /// The columns the SQL update sets: the lifecycle, never the submission.
    static func update(_ job: Job, in tables: inout Tables) {
        guard let index = tables.jobs.firstIndex(where: { $0.job.id == job.id }) else { return }
        var row = tables.jobs[index].job
        row.state = job.state
        row.attempt = job.attempt
        row.maxAttempts = job.maxAttempts
        row.node = job.node
        row.gpus = job.gpus
        row.leaseDeadline = job.leaseDeadline
        row.startedAt = job.startedAt
        row.finishedAt = job.finishedAt
        row.result = job.result
        row.error = job.error
        tables.jobs[index].job = row
    }
}
