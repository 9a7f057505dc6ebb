import AuroraAPI
import AuroraTLS
import Foundation
import Logging
import Mesh
import Metrics
import Secrets
import Synchronization

/// The registry's clock-driven work: the failure detector's ticks and probes, the batched
/// `last_seen` flush, and the lead's own heartbeat.
extension Registry {
    // MARK: Time

    /// Applies timing and returns the probes to make.
    /// Called every 100 ms by the registry service. A state change the store cannot record is
    /// logged and stays in memory; the detector does not report it again.
    func tick(now: ContinuousClock.Instant = .now) async -> [ProbeTarget] {
        guard loaded else { return [] }
        let directives = detector.onTick(now: now)
        do { try await apply(directives) } catch {
            logger.error("cannot record state changes", metadata: ["nodeagent.error": "\(error.message)"])
        }
        return directives.compactMap { directive in
            guard case .probe(let name) = directive, let entry = entries[name], let target = Self.probeAddress(entry)
            else { return nil }
            return ProbeTarget(name: name, host: target.host, port: target.port, sentAt: now)
        }
    }

    /// The result of a probe.
    /// Only a refusal is evidence (the node is `dead`, or `away` if it goes away first); a timeout proves
    /// nothing and the detector's timing goes on.
    func probed(_ target: ProbeTarget, outcome: TCPProbe.Outcome) async {
        guard case .refused = outcome else { return }
        do { try await apply(detector.onProbe(target.name, refused: true, sentAt: target.sentAt, at: .now)) } catch {
            logger.error("cannot record state changes", metadata: ["nodeagent.error": "\(error.message)"])
        }
    }

    /// Writes `last_seen` of the nodes heard from, and records whose reported data changed.
    /// Called every 2 s by the registry service and once at shutdown. A failed batch is retried
    /// change by change, and what still fails waits for the next flush; heartbeats are
    /// never refused because the store is slow.
    func flush() async {
        guard loaded, !(seenDirty.isEmpty && recordDirty.isEmpty) else { return }
        let seen = seenDirty, records = recordDirty
        seenDirty = []
        recordDirty = []
        var changes: [NodeChange] = []
        let live = seen.compactMap { entries[$0] }
        if !live.isEmpty { changes.append(.seen(live.map { NodeSeen(name: $0.node.name, at: $0.lastSeen) })) }
        for name in records {
            guard let entry = entries[name] else { continue }
            changes.append(.reported(entry))
        }
        do {
            try await store.write(changes, events: [], published: { _ in })
        } catch {
            // One node's row must not hold back everyone's: each change alone, and only
            // those that fail again wait for the next flush.
            logger.warning(
                "cannot flush heartbeats in one batch; writing them one by one",
                metadata: ["nodeagent.error": "\(error.message)"])
            var failedRecords = Set<String>()
            for change in changes {
                do { try await store.write([change], events: [], published: { _ in }) } catch {
                    var node = "?"
                    switch change {
                    case .seen: seenDirty.formUnion(seen)
                    case .reported(let entry):
                        node = entry.node.name
                        failedRecords.insert(node)
                    default: break
                    }
                    logger.warning(
                        "cannot flush a heartbeat row; will retry",
                        metadata: ["nodeagent.node": "\(node)", "nodeagent.error": "\(error.message)"])
                }
            }
            recordDirty.formUnion(failedRecords)
        }
    }

    /// The lead's own heartbeat, in process.
    /// Called every `heartbeat.interval_s` by the registry service; the lead is not watched by the
    /// detector (it is alive while it answers).
    func beatLead(
        capabilities: Capabilities, checks: [CheckResult], postgres: ReplicaHealth?, links: [WireGuardLink]? = nil
    ) async {
        guard var entry = entries[config.name] else { return }
        let now = Date()
        if let links { entry.setLinks(links) }
        if entry.node.capabilities != capabilities { recordDirty.insert(config.name) }
        entry.node.capabilities = capabilities
        entry.node.checks = checks
        let previousPostgres = entry.node.postgres
        entry.node.postgres = postgres
        entry.lastSeen = now
        entries[config.name] = entry
        seenDirty.insert(config.name)
        await recordPostgres(config.name, from: previousPostgres, to: postgres)
    }

    /// Records `replica.state_changed` when a node's server changed state, and
    /// `replica.slot_inactive` for each slot newly found retaining WAL for no one. When the
    /// store refuses, the old view is put back so the next heartbeat records the change again.
    func recordPostgres(_ name: String, from previous: ReplicaHealth?, to current: ReplicaHealth?) async {
        guard let current else { return }
        var drafts: [EventLog.Draft] = []
        if previous?.state != current.state {
            var data: [String: JSONValue] = [
                "from": previous.map { .string($0.state) } ?? .null, "to": .string(current.state),
                "role": .string(current.role.rawValue), "reason": .string(current.reason),
            ]
            if let lag = current.lagBytes { data["lag_bytes"] = .number(Double(lag)) }
            if let lag = current.lagS { data["lag_s"] = .number(lag) }
            drafts.append(EventLog.Draft(type: EventType.replicaStateChanged, node: name, data: data))
            logger.notice(
                "replica state changed",
                metadata: [
                    "nodeagent.node": "\(name)", "nodeagent.from": "\(previous?.state ?? "none")",
                    "nodeagent.to": "\(current.state)",
                    "nodeagent.reason": "\(current.reason)",
                ])
        }
        let known = Set((previous?.inactiveSlots ?? []).map(\.name))
        for slot in current.inactiveSlots ?? [] where !known.contains(slot.name) {
            drafts.append(
                EventLog.Draft(
                    type: EventType.replicaSlotInactive, node: name,
                    data: [
                        "slot": .string(slot.name),
                        "retained_bytes": slot.retainedBytes.map { .number(Double($0)) } ?? .null,
                    ]))
        }
        guard !drafts.isEmpty else { return }
        do {
            let hub = self.hub
            try await store.append(drafts, published: { hub.publish($0) })
        } catch {
            if entries[name]?.node.postgres == current { entries[name]?.node.postgres = previous }
            logger.warning(
                "cannot record a replica event; will retry with the next heartbeat",
                metadata: ["nodeagent.node": "\(name)", "nodeagent.error": "\(error.message)"])
        }
    }
}
