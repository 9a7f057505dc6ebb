import AuroraAPI
import AuroraTestKit
import Foundation
import Testing

#if canImport(Glibc)
    import Glibc
#endif

/// A lead with two alert webhooks pointing at a local receiver (`ops`: JSON, URL from a 0600
/// file; `chat`: Slack-style, node state changes only), and a compute node (`wh-1`) whose check
/// fails and whose alert thresholds are low enough to fire.
@Suite("Alert webhooks (lead + compute node + local receiver)", .serialized)
struct WebhookDeliveryTests {
    static let alertTypes: Set<String> = [
        EventType.nodeStateChanged, EventType.alertRaised, EventType.checkChanged, EventType.replicaStateChanged,
    ]

    @Test(
        "each matching event reaches each webhook exactly once, in order, across a lead restart; a receiver failing with 500 gets the event after retries, once"
    )
    func delivery() async throws {
        let scratch = try ScratchDirectory("webhooks")
        defer { scratch.remove() }
        let receiver = try await WebhookReceiver()
        var agents: [AgentHarness] = []
        do {
            try await scenario(scratch: scratch, receiver: receiver, agents: &agents)
        } catch {
            for agent in agents where agent.process.isRunning { agent.process.signal(SIGKILL) }
            let lines = agents.flatMap { $0.process.stderr.split(separator: "\n").filter { $0.contains("webhook") } }
            Issue.record("webhook log lines: \(lines.suffix(30).joined(separator: "\n"))")
            Issue.record("received: \(receiver.deliveries.map { "\($0.path) \($0.status) \($0.eventID ?? "-")" })")
            await receiver.stop()
            throw error
        }
        for agent in agents where agent.process.isRunning { agent.process.signal(SIGKILL) }
        await receiver.stop()
    }

    func scenario(scratch: ScratchDirectory, receiver: WebhookReceiver, agents: inout [AgentHarness]) async throws {
        let opsPath = "/ops/T000/SECRETPATH", chatPath = "/chat"
        let urlFile = scratch.path + "/ops.url"
        try "\(receiver.url)\(opsPath)\n".write(toFile: urlFile, atomically: true, encoding: .utf8)
        chmod(urlFile, 0o600)
        let leadFile = scratch.path + "/lead.yaml"
        try """
        alerts:
          webhooks:
            - {name: ops, url_file: "\(urlFile)", format: json, timeout_s: 5}
            - {name: chat, url: "\(receiver.url)\(chatPath)", format: slack, events: [node.state_changed]}
        """.write(toFile: leadFile, atomically: true, encoding: .utf8)
        let nodeFile = scratch.path + "/node.yaml"
        let flag = scratch.path + "/flag"
        try """
        checks:
          - {name: flag, args: [/bin/sh, -c, "test -e \(flag) || exit 2"], interval_s: 0.2}
        alerts:
          memory_pct: 1
          interval_s: 0.2
        """.write(toFile: nodeFile, atomically: true, encoding: .utf8)
        let leadPort = try freePort(), nodePort = try freePort()
        func startLead() throws -> AgentHarness {
            let lead = try AgentHarness(
                profile: "lead", dataDir: scratch.path + "/lead", port: leadPort,
                extraArguments: ["--name", "wh-lead", "--config", leadFile], outputDirectory: scratch.path)
            agents.append(lead)
            return lead
        }
        func startNode(token: String?) throws -> AgentHarness {
            let node = try AgentHarness(
                profile: "compute", dataDir: scratch.path + "/wh-1", port: nodePort,
                extraArguments: ["--name", "wh-1", "--lead", "http://127.0.0.1:\(leadPort)", "--config", nodeFile]
                    + (token.map { ["--join-token", $0] } ?? []),
                outputDirectory: scratch.path)
            agents.append(node)
            return node
        }
        func storeEvents(_ lead: AgentHarness) async throws -> [MeshEvent] {
            try await http(
                lead.baseURL + Routes.events + "?since=0&follow=false",
                headers: ["Authorization": "Bearer \(try lead.adminToken)"]
            ).text.split(separator: "\n").compactMap { line in
                guard line.hasPrefix("data: ") else { return nil }
                return try? APICoding.decoder().decode(MeshEvent.self, from: Data(line.dropFirst(6).utf8))
            }
        }
        /// Waits until `path` has accepted every event of `types` in the store after its first
        /// delivery (a new webhook starts at the newest event), with `extra` satisfied too; checks
        /// then that each arrived once and in order. Returns the store's matching events.
        func caughtUp(
            _ lead: AgentHarness, path: String, types: Set<String>, _ what: String,
            extra: @escaping ([MeshEvent]) -> Bool
        ) async throws -> [MeshEvent] {
            let (expected, accepted) = try await poll(
                timeout: .seconds(30), every: .milliseconds(100), "\(path) to have \(what)"
            ) { () async throws -> ([MeshEvent], [WebhookReceiver.Delivery])? in
                let accepted = receiver.accepted(path: path)
                let ids = Set(accepted.compactMap(\.eventID))
                let matching = try await storeEvents(lead).filter { types.contains($0.type) }
                guard let first = matching.firstIndex(where: { ids.contains($0.id) }) else { return nil }
                let expected = Array(matching[first...])
                return Set(expected.map(\.id)).isSubset(of: ids) && extra(expected) ? (expected, accepted) : nil
            }
            let ids = accepted.compactMap(\.eventID)
            #expect(ids.count == Set(ids).count, "\(path): an event arrived twice")
            #expect(ids == expected.map(\.id), "\(path): every event after the first, once, in log order")
            return expected
        }

        // First life of the lead: the node's check fails (check.changed), memory is over 1 %
        // (alert.raised), then the node is killed (node.state_changed to dead).
        var lead = try startLead()
        try await lead.waitHealthy()
        var node = try startNode(token: try await lead.joinToken(outputDirectory: scratch.path))
        try await node.waitHealthy()
        _ = try await caughtUp(lead, path: opsPath, types: Self.alertTypes, "wh-1's check and alert events") {
            events in
            events.contains { $0.node == "wh-1" && $0.type == EventType.checkChanged }
                && events.contains { $0.node == "wh-1" && $0.type == EventType.alertRaised }
        }
        node.process.signal(SIGKILL)
        _ = try await node.process.waitForExit(timeout: .seconds(10))
        let first = try await caughtUp(lead, path: opsPath, types: Self.alertTypes, "wh-1 dead") { events in
            events.contains {
                $0.node == "wh-1" && $0.type == EventType.nodeStateChanged && $0.data["to"]?.string == "dead"
            }
        }
        // The JSON body is the API's event, with its id in the header as well.
        for delivery in receiver.accepted(path: opsPath) {
            let event = try APICoding.decoder().decode(MeshEvent.self, from: delivery.body)
            #expect(delivery.eventID == event.id && delivery.headers["x-aurora-event-type"] == event.type)
            #expect(
                delivery.headers["content-type"] == "application/json" && delivery.headers["x-aurora-webhook"] == "ops")
        }
        _ = try await caughtUp(lead, path: chatPath, types: [EventType.nodeStateChanged], "wh-1 dead") { events in
            events.contains { $0.node == "wh-1" && $0.data["to"]?.string == "dead" }
        }
        let texts = try receiver.accepted(path: chatPath).map { delivery -> String in
            let object = try JSONSerialization.jsonObject(with: delivery.body) as? [String: Any]
            #expect(object?.keys.sorted() == ["text"])
            return object?["text"] as? String ?? ""
        }
        #expect(texts.contains { $0.hasPrefix("[aurora] node wh-1 is dead (was ") }, "\(texts)")

        // The lead stops (SIGTERM) and starts again on the same store; the receiver fails the
        // next three requests. The node comes back (alive, its check fails again, the alert is
        // raised again): every new event arrives once, and none of the first life's again.
        lead.process.signal(SIGTERM)
        #expect(try await lead.process.waitForExit(timeout: .seconds(20)) == 0)
        let beforeRestart = receiver.deliveries.count
        receiver.failNext(3)
        lead = try startLead()
        try await lead.waitHealthy()
        node = try startNode(token: nil)
        try await node.waitHealthy()
        let second = try await caughtUp(lead, path: opsPath, types: Self.alertTypes, "wh-1's events after the restart")
        { events in
            events.contains {
                $0.node == "wh-1" && $0.type == EventType.nodeStateChanged && $0.data["to"]?.string == "alive"
            }
                && events.filter { $0.node == "wh-1" && $0.type == EventType.checkChanged }.count >= 2
        }
        #expect(second.count > first.count && Array(second.prefix(first.count)).map(\.id) == first.map(\.id))
        _ = try await caughtUp(lead, path: chatPath, types: [EventType.nodeStateChanged], "wh-1 alive again") {
            events in events.contains { $0.node == "wh-1" && $0.data["to"]?.string == "alive" }
        }
        // The three refused attempts were retried: each refused event was then accepted, once.
        let afterRestart = receiver.deliveries.dropFirst(beforeRestart)
        let refused = afterRestart.filter { $0.status == 500 }
        #expect(refused.count == 3)
        for attempt in refused {
            let accepted = afterRestart.filter {
                $0.status == 200 && $0.path == attempt.path && $0.eventID == attempt.eventID
            }
            #expect(
                accepted.count == 1, "a refused event is accepted once after retries, by the webhook that was refused")
        }
        #expect(afterRestart.contains { $0.status == 200 && Int($0.headers["x-aurora-attempt"] ?? "") ?? 0 > 1 })

        let metrics = try await http(lead.baseURL + Routes.metrics).text
        #expect(metrics.contains("aurora_webhook_deliveries_total{webhook=\"ops\"}"), "\(metrics.prefix(300))")
        #expect(metrics.contains("aurora_webhook_failures_total{webhook="))

        // A receiver that keeps failing: the node dies again, and its event holds both webhooks'
        // places (retried, never skipped), which /metrics shows; a SIGTERM between the retries
        // stops the lead at once. With the receiver back, the held event arrives once.
        receiver.failNext(1_000_000)
        node.process.signal(SIGKILL)
        _ = try await node.process.waitForExit(timeout: .seconds(10))
        _ = try await poll(timeout: .seconds(30), every: .milliseconds(100), "the ops webhook to be failing") {
            () async throws -> Bool? in
            try await http(lead.baseURL + Routes.metrics).text.contains("aurora_webhook_failing{webhook=\"ops\"} 1")
                ? true : nil
        }
        let held = try await storeEvents(lead).filter {
            $0.node == "wh-1" && $0.type == EventType.nodeStateChanged && $0.data["to"]?.string == "dead"
        }
        #expect(held.count == 2)
        #expect(!Set(receiver.accepted(path: opsPath).compactMap(\.eventID)).contains(held.last?.id ?? ""))
        let stopping = ContinuousClock.now
        lead.process.signal(SIGTERM)
        #expect(try await lead.process.waitForExit(timeout: .seconds(20)) == 0)
        #expect(ContinuousClock.now - stopping < .seconds(10), "shutdown does not wait for a failing receiver")
        receiver.failNext(0)
        lead = try startLead()
        try await lead.waitHealthy()
        let third = try await caughtUp(lead, path: opsPath, types: Self.alertTypes, "the held event") { events in
            events.contains { $0.id == held.last?.id }
        }
        #expect(Array(third.prefix(second.count)).map(\.id) == second.map(\.id))
        _ = try await caughtUp(lead, path: chatPath, types: [EventType.nodeStateChanged], "the held event") {
            events in events.contains { $0.id == held.last?.id }
        }

        // The webhook's secret path is in no log line (the failures were logged, by scheme and host).
        for agent in agents {
            #expect(!agent.process.stderr.contains("SECRETPATH") && !agent.process.stdout.contains("SECRETPATH"))
        }
        #expect(agents.contains { $0.process.stderr.contains("webhook failing") })
    }
}
