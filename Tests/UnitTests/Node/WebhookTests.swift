import AuroraAPI
import Foundation
import Mesh
import Testing

@testable import NodeAgent

#if canImport(Glibc)
    import Glibc
#endif

@Suite("Alert webhooks: configuration, event filter, cursor, backoff and payloads (pure)")
struct WebhookTests {
    func parse(_ yaml: String) throws -> [WebhookConfig] {
        let layer = try ConfigFile.parse(yaml, file: "lead.yaml", kind: .nodeFile)
        guard case .webhooks(let webhooks)? = layer.values["alerts.webhooks"]?.value else { return [] }
        return webhooks
    }

    func event(_ type: String, node: String? = "gpu-1", seq: Int64 = 7, data: [String: JSONValue]) -> MeshEvent {
        MeshEvent(
            id: "0b7e2c1a-7d3e-4c55-9a61-3f5d2e8b9c10", seq: seq, type: type, at: "2026-12-01T01:02:03.004Z",
            node: node, data: data)
    }

    // MARK: Configuration

    @Test("webhooks parse with defaults: json, the four alert event types, a 10 s timeout")
    func parsesWithDefaults() throws {
        let webhooks = try parse(
            """
            alerts:
              webhooks:
                - {name: ops, url: "https://hooks.example.net/aurora?x=1"}
                - name: chat
                  url_file: /etc/aurora/chat.url
                  format: slack
                  events: [node.state_changed, alert.raised, node.state_changed]
                  timeout_s: 2.5
            """)
        #expect(webhooks.count == 2)
        #expect(webhooks[0].name == "ops" && webhooks[0].target == .url("https://hooks.example.net/aurora?x=1"))
        #expect(webhooks[0].format == .json && webhooks[0].timeout == 10)
        #expect(
            webhooks[0].events == ["alert.raised", "check.changed", "node.state_changed", "replica.state_changed"])
        #expect(webhooks[1].target == .file("/etc/aurora/chat.url") && webhooks[1].format == .slack)
        #expect(webhooks[1].events == ["alert.raised", "node.state_changed"] && webhooks[1].timeout == 2.5)
    }

    @Test("bad webhooks are refused with the file, line, entry and key, and never the URL's path")
    func refusesBadWebhooks() {
        let cases: [(String, String)] = [
            ("- {name: a, url: \"ftp://h/x\"}", "'alerts.webhooks[0].url' must be an http:// or https:// URL"),
            ("- {name: a, url: \"https:///nohost\"}", "must be an http:// or https:// URL with a host"),
            ("- {name: a, url: \"https://u:pw@h/SECRETPATH\"}", "must not carry a user name or password"),
            ("- {name: a, url: \"https://h/a b\"}", "must not contain spaces"),
            ("- {name: a}", "webhook 'a' needs exactly one of 'url' or 'url_file'"),
            ("- {name: a, url: \"https://h/SECRETPATH\", url_file: /x}", "needs exactly one of 'url' or 'url_file'"),
            ("- {name: a, url_file: relative/file}", "'alerts.webhooks[0].url_file' must be an absolute path"),
            ("- {url: \"https://h/SECRETPATH\"}", "alerts.webhooks[0] needs 'name'"),
            ("- {name: \"a b\", url: \"https://h/x\"}", "'alerts.webhooks[0].name' must be letters"),
            (
                "- {name: a, url: \"https://h/SECRETPATH\", format: xml}",
                "'alerts.webhooks[0].format' must be one of json, slack"
            ),
            ("- {name: a, url: \"https://h/x\", events: [job.queued]}", "has 'job.queued', which is not an event type"),
            ("- {name: a, url: \"https://h/x\", events: []}", "'alerts.webhooks[0].events' must be a non-empty list"),
            ("- {name: a, url: \"https://h/x\", timeout_s: 0}", "'alerts.webhooks[0].timeout_s' must be a number"),
            ("- {name: a, url: \"https://h/x\", secret: 1}", "unknown key 'alerts.webhooks[0].secret'"),
            ("- {name: a, url: \"https://h/x\"}\n    - {name: a, url: \"https://h/y\"}", "two webhooks are named 'a'"),
            ("- just-a-string", "alerts.webhooks[0] must be a mapping"),
        ]
        for (entries, expected) in cases {
            let yaml = "alerts:\n  webhooks:\n    " + entries + "\n"
            do {
                _ = try parse(yaml)
                Issue.record("accepted: \(entries)")
            } catch {
                let message = (error as? AgentError)?.message ?? "\(error)"
                #expect(message.contains(expected), "\(entries): \(message)")
                #expect(message.hasPrefix("lead.yaml:"), "\(message)")
                #expect(!message.contains("SECRETPATH"), "\(message)")
            }
        }
        #expect(throws: AgentError.self) { try parse("alerts:\n  webhooks: {name: a}\n") }
    }

    @Test("nodeagent config shows a webhook's scheme and host, never its path")
    func configDumpHidesThePath() throws {
        let layer = try ConfigFile.parse(
            "role: lead\nalerts:\n  webhooks:\n    - {name: chat, url: \"https://hooks.slack.com/services/T0/B0/SECRETPATH\", format: slack}\n",
            file: "lead.yaml", kind: .profile)
        let resolved = try ResolvedConfig.resolve(
            ConfigInputs(profile: layer, hostName: "lead-1", workingDirectory: "/"))
        let config = NodeConfig(resolved: resolved, profileFile: "lead.yaml")
        #expect(config.webhooks.map(\.name) == ["chat"])
        let table = resolved.renderTable(), json = resolved.renderJSON()
        #expect(table.contains("chat: slack https://hooks.slack.com/…"))
        #expect(!table.contains("SECRETPATH") && !json.contains("SECRETPATH"))
        #expect(WebhookConfig.redacted("http://127.0.0.1:8080/hook/SECRETPATH?k=v") == "http://127.0.0.1:8080")
    }

    @Test("url_file: read when only its owner may read it; refused when others may, or when it holds no URL")
    func urlFile() throws {
        let directory = NSTemporaryDirectory() + "webhook-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let path = directory + "/hook.url"
        try "https://hooks.example.net/T0/SECRETPATH\n".write(toFile: path, atomically: true, encoding: .utf8)
        let webhook = WebhookConfig(
            name: "ops", target: .file(path), format: .json, events: ["alert.raised"], timeout: 10)
        chmod(path, 0o600)
        #expect(try webhook.resolveURL() == "https://hooks.example.net/T0/SECRETPATH")
        chmod(path, 0o644)
        let shared = #expect(throws: AgentError.self) { try webhook.resolveURL() }
        #expect(shared?.message.contains("readable by others (mode 644); chmod 600 it") == true)
        try "not a url SECRETPATH\n".write(toFile: path, atomically: true, encoding: .utf8)
        chmod(path, 0o600)
        let bad = #expect(throws: AgentError.self) { try webhook.resolveURL() }
        #expect(bad?.message.contains("webhook 'ops': the URL in \(path)") == true)
        #expect(bad?.message.contains("SECRETPATH") == false)
        let missing = WebhookConfig(
            name: "ops", target: .file(directory + "/none"), format: .json, events: ["alert.raised"], timeout: 10)
        #expect(throws: AgentError.self) { try missing.resolveURL() }
    }

    // MARK: Cursor and backoff

    @Test("backoff: 500 ms doubling to a 60 s ceiling, without overflow")
    func backoff() {
        let backoff = WebhookBackoff()
        #expect(backoff.delay(afterFailures: 0) == .zero)
        #expect(backoff.delay(afterFailures: 1) == .milliseconds(500))
        #expect(backoff.delay(afterFailures: 2) == .seconds(1))
        #expect(backoff.delay(afterFailures: 4) == .seconds(4))
        #expect(backoff.delay(afterFailures: 8) == .seconds(60))
        #expect(backoff.delay(afterFailures: Int.max) == .seconds(60))
        #expect(WebhookBackoff(initial: .seconds(2), maximum: .seconds(1)).delay(afterFailures: 3) == .seconds(2))
    }

    @Test("the cursor passes over other types, holds on failures and moves only on delivery")
    func progress() {
        var progress = WebhookProgress(types: ["alert.raised", "node.state_changed"], cursor: 10)
        #expect(progress.onEvent(seq: 9, type: "alert.raised") == .pass, "at or before the cursor")
        #expect(progress.onEvent(seq: 11, type: "job.queued") == .pass)
        #expect(progress.cursor == 11 && progress.unstored)
        #expect(progress.onEvent(seq: 12, type: "alert.raised") == .deliver)
        #expect(progress.onFailed(12) == .milliseconds(500))
        #expect(progress.onFailed(12) == .seconds(1))
        #expect(progress.cursor == 11 && !progress.failing)
        #expect(progress.onFailed(12) == .seconds(2))
        #expect(progress.failing && progress.justStartedFailing)
        _ = progress.onFailed(12)
        #expect(progress.failing && !progress.justStartedFailing && progress.cursor == 11)
        progress.onDelivered(12)
        #expect(progress.cursor == 12 && progress.failures == 0 && !progress.failing)
        #expect(progress.unstored)
        progress.onStored(12)
        #expect(!progress.unstored && progress.stored == 12)
        #expect(progress.onEvent(seq: 13, type: "node.state_changed") == .deliver)
        #expect(progress.onFailed(13) == .milliseconds(500), "a new event starts its backoff afresh")
    }

    // MARK: Payloads

    @Test("json: the API's event JSON; every attempt carries the event's id, type and sequence")
    func jsonBody() throws {
        let original = event(
            EventType.alertRaised, data: ["resource": .string("memory"), "value_pct": .number(93.5)])
        let body = WebhookPayload.body(original, format: .json)
        #expect(try APICoding.decoder().decode(MeshEvent.self, from: Data(body)) == original)
        let headers = Dictionary(
            uniqueKeysWithValues: WebhookPayload.headers(original, webhook: "ops", attempt: 2).map { ($0.0, $0.1) })
        #expect(headers["X-Aurora-Event-ID"] == original.id && headers["X-Aurora-Event-Type"] == "alert.raised")
        #expect(headers["X-Aurora-Event-Seq"] == "7" && headers["X-Aurora-Attempt"] == "2")
        #expect(headers["Content-Type"] == "application/json")
    }

    @Test("slack: one readable line per event type, as {\"text\": ...}")
    func slackText() throws {
        let lines = [
            event(
                EventType.nodeStateChanged,
                data: ["from": .string("suspect"), "to": .string("dead"), "reason": .string("missed_heartbeats")]),
            event(
                EventType.alertRaised,
                data: [
                    "resource": .string("cpu"), "value_pct": .number(93.5), "threshold_pct": .number(80),
                    "for_s": .number(300),
                ]),
            event(
                EventType.checkChanged,
                data: [
                    "check": .string("web"), "from": .string("passing"), "to": .string("critical"),
                    "output": .string("HTTP 500 in 3 ms"),
                ]),
            event(EventType.checkChanged, data: ["check": .string("db"), "from": .null, "to": .string("passing")]),
            event(
                EventType.replicaStateChanged, node: "db-2",
                data: [
                    "from": .string("streaming"), "to": .string("stalled"), "reason": .string("replay stopped"),
                    "lag_s": .number(12.4),
                ]),
            event("secret.changed", node: nil, data: [:]),
        ].map(WebhookPayload.slackText)
        #expect(
            lines == [
                "[aurora] node gpu-1 is dead (was suspect: missed_heartbeats)",
                "[aurora] alert on gpu-1: cpu at 93.5 % for 300 s (threshold 80 %)",
                "[aurora] check web on gpu-1 is critical (was passing): HTTP 500 in 3 ms",
                "[aurora] check db on gpu-1 is passing",
                "[aurora] PostgreSQL on db-2 is stalled (was streaming): replay stopped, lag 12.4 s",
                "[aurora] secret.changed on the mesh",
            ])
        let body = WebhookPayload.body(event("x", data: [:]), format: .slack)
        let object = try JSONSerialization.jsonObject(with: Data(body)) as? [String: Any]
        #expect(object?.keys.sorted() == ["text"] && object?["text"] as? String == "[aurora] x on gpu-1")
    }

    @Test("slack: what a node reports cannot break the line or inject markup")
    func slackEscaping() {
        let hostile = event(
            EventType.checkChanged, node: "gpu-1",
            data: [
                "check": .string("<!channel>"), "to": .string("critical"),
                "output": .string(
                    "line one\nline two & <https://evil.example|click> " + String(repeating: "x", count: 500)),
            ])
        let text = WebhookPayload.slackText(hostile)
        #expect(!text.contains("\n") && !text.contains("<") && !text.contains(">"))
        #expect(
            text.hasPrefix("[aurora] check &lt;!channel&gt; on gpu-1 is critical: line one line two &amp; &lt;https"))
        #expect(text.count < 300)
    }
}
