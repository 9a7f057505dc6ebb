import AuroraAPI
import AuroraTestKit
import Foundation
import Secrets
import Testing

#if canImport(Glibc)
    import Glibc
#endif

/// Issue 13's findings, each performed against real agents as an attacker would, with the
/// refusal asserted and the state shown unchanged.
@Suite("Attacks on a live lead (refused, nothing changes)", .serialized)
struct AttackTests {
    /// A lead with helpers for raw requests.
    struct Lead {
        let agent: AgentHarness
        let admin: [String: String]

        var url: String { agent.baseURL }

        func post(_ path: String, _ body: String, headers: [String: String] = [:]) async throws -> HTTPAnswer {
            try await http(
                url + path, method: "POST", headers: ["Content-Type": "application/json"].merging(headers) { $1 },
                body: Array(body.utf8))
        }

        func token(_ body: String) async throws -> TokenCreated {
            let answer = try await post(Routes.tokens, body, headers: admin)
            guard answer.status == 201 else { throw TestKitError("token create: \(answer.status) \(answer.text)") }
            return try answer.decode(TokenCreated.self)
        }

        func node(_ name: String) async throws -> HTTPAnswer { try await http(url + Routes.node(name), headers: admin) }

        func events() async throws -> [MeshEvent] {
            try await http(url + Routes.events + "?since=0&follow=false", headers: admin).text.split(separator: "\n")
                .compactMap { line in
                    line.hasPrefix("data: ")
                        ? try? APICoding.decoder().decode(MeshEvent.self, from: Data(line.dropFirst(6).utf8)) : nil
                }
        }

        /// A signed call as `node`.
        func signed(_ node: SimulatedNode, _ method: String, _ path: String, _ body: [UInt8] = []) async throws
            -> HTTPAnswer
        {
            try await http(
                url + path, method: method, headers: node.headers(method: method, path: path, body: body),
                body: body.isEmpty ? nil : body)
        }
    }

    static func message(_ answer: HTTPAnswer) -> String {
        (try? answer.decode(ErrorResponse.self).error.message) ?? answer.text
    }
    static func code(_ answer: HTTPAnswer) -> String { (try? answer.decode(ErrorResponse.self).error.code) ?? "" }

    /// A join body as JSON text with `edit` applied to its object.
    static func joinJSON(_ node: SimulatedNode, token: String, _ edit: (inout [String: Any]) -> Void = { _ in }) throws
        -> String
    {
        var object = try #require(
            try JSONSerialization.jsonObject(with: Data(try node.joinBody(token: token))) as? [String: Any])
        edit(&object)
        return String(decoding: try JSONSerialization.data(withJSONObject: object), as: UTF8.self)
    }

    /// A heartbeat body with a worker that allows exec and one GPU, edited by `edit`.
    static func heartbeatJSON(_ edit: (inout [String: Any]) -> Void = { _ in }) throws -> [UInt8] {
        let beat = HeartbeatRequest(
            capabilities: Capabilities(
                cpuCores: 4, memoryMB: 1024, os: "test", arch: "x86_64",
                gpus: [
                    GPU(
                        index: 0, uuid: "GPU-x", name: "NVIDIA H100", memoryTotalMB: 81920, memoryUsedMB: 0,
                        utilizationPct: 0)
                ]),
            version: "test", labels: nil, checks: [], peers: [], address: nil,
            timing: HeartbeatTiming(intervalS: 1, suspectAfter: 3, awayAfter: 0, deadAfter: 600),
            worker: WorkerReport(accepting: true, allowExec: true, generate: true, jobs: []))
        var object = try #require(
            try JSONSerialization.jsonObject(with: try APICoding.encoder().encode(beat)) as? [String: Any])
        edit(&object)
        return Array(try JSONSerialization.data(withJSONObject: object))
    }

    @Test(
        "crashing GETs, company and label claims, token-first joins, config injection, control characters, job ownership, exec by nodes, report caps"
    )
    func hostileInput() async throws {
        let scratch = try ScratchDirectory("attacks")
        defer { scratch.remove() }
        let agent = try AgentHarness(
            profile: "lead", dataDir: scratch.path + "/lead", extraArguments: ["--name", "lead-1"],
            outputDirectory: scratch.path)
        defer { if agent.process.isRunning { agent.process.signal(SIGKILL) } }
        try await agent.waitHealthy()
        let lead = Lead(agent: agent, admin: ["Authorization": "Bearer \(try agent.adminToken)"])

        // 1. Unauthenticated GETs that trapped the process: 400 naming the parameter, and the agent lives.
        for query in [
            "/postgres/replica?lag=1e20b", "/postgres/replica?lag=99999999999999999999GB",
            "/postgres/read-only?lag=1e20b",
            "/postgres/replica?lag=1e300s", "/postgres/replica?lag=18446744073709551616",
        ] {
            let answer = try await http(lead.url + query)
            #expect(
                answer.status == 400 && Self.message(answer).contains("lag"),
                "\(query): \(answer.status) \(answer.text)")
        }
        #expect(agent.process.isRunning)
        #expect(try await http(lead.url + Routes.health).status == 200)

        // 2. A token made for acme cannot join a node into globex; without a claim the token's company holds.
        let acme = try await lead.token(
            #"{"profile":"compute","company":"acme","reusable":true,"labels":{"zone":"public"}}"#)
        let spy = SimulatedNode(name: "spy")
        let globex = try await lead.post(
            Routes.join, try Self.joinJSON(spy, token: acme.token) { $0["company"] = "globex" })
        #expect(
            globex.status == 403 && Self.message(globex).contains("company 'acme'"), "\(globex.status) \(globex.text)")
        #expect(try await lead.node("spy").status == 404)
        let joined = try await lead.post(
            Routes.join, try Self.joinJSON(spy, token: acme.token) { $0["labels"] = ["zone": "secure"] })
        #expect(joined.status == 201, "\(joined.text)")
        var record = try await lead.node("spy").decode(Node.self)
        #expect(
            record.company == "acme" && record.labels == ["zone": "public"]
                && record.reportedLabels == ["zone": "secure"])

        // 3. No valid token, no information: a taken name or address is not revealed before the token is checked.
        let squatter = SimulatedNode(name: "spy")
        let guessed = try await lead.post(Routes.join, try Self.joinJSON(squatter, token: "aurjoin_guess"))
        #expect(guessed.status == 401, "\(guessed.status) \(guessed.text)")
        let takenAddress = try await lead.post(
            Routes.join,
            try Self.joinJSON(SimulatedNode(name: "other"), token: "aurjoin_guess") {
                $0["vpn_ip"] = record.vpnIP
            })
        #expect(takenAddress.status == 401, "\(takenAddress.status) \(takenAddress.text)")

        // 4. WireGuard config injection through the endpoint: refused at join and in heartbeats.
        let injector = SimulatedNode(name: "injector")
        let injection = "203.0.113.9:51820\n[Peer]\nPublicKey = x\nAllowedIPs = 10.0.0.1/32\nPostUp = id"
        let injected = try await lead.post(
            Routes.join,
            try Self.joinJSON(injector, token: acme.token) {
                var wireguard = $0["wireguard"] as? [String: Any] ?? [:]
                wireguard["endpoint"] = injection
                $0["wireguard"] = wireguard
            })
        #expect(
            injected.status == 400 && Self.message(injected).contains("control character"),
            "\(injected.status) \(injected.text)")
        let spaced = try await lead.post(
            Routes.join,
            try Self.joinJSON(injector, token: acme.token) {
                $0["wireguard"] = [
                    "public_key": injector.wireguard.publicKey.base64, "listen_port": 51820,
                    "endpoint": "1.2.3.4:51820 PostUp=id",
                ]
            })
        #expect(
            spaced.status == 400 && Self.message(spaced).contains("wireguard.endpoint"),
            "\(spaced.status) \(spaced.text)")
        #expect(try await lead.node("injector").status == 404)
        let beatPath = Routes.heartbeat("spy")
        let good = try Self.heartbeatJSON()
        #expect(try await lead.signed(spy, "POST", beatPath, good).status == 200)
        record = try await lead.node("spy").decode(Node.self)
        let badEndpoint = try Self.heartbeatJSON {
            $0["wireguard"] = ["endpoint": injection, "listen_port": 51820, "behind_nat": false]
        }
        let refusedBeat = try await lead.signed(spy, "POST", beatPath, badEndpoint)
        #expect(refusedBeat.status == 400, "\(refusedBeat.text)")
        #expect(try await lead.node("spy").decode(Node.self).wireguard.endpoint == record.wireguard.endpoint)
        // A relay offer out of range (ports past 65535, no pairs, a privileged base) is refused
        // and changes nothing; a valid one is recorded but grants nothing without the trusted label.
        for offer: [String: Any] in [
            ["port_base": 65000, "pairs": 4096], ["port_base": 41000, "pairs": 0], ["port_base": 53, "pairs": 1],
        ] {
            let beat = try Self.heartbeatJSON {
                $0["wireguard"] = ["listen_port": 51820, "behind_nat": false, "relay": offer]
            }
            let refused = try await lead.signed(spy, "POST", beatPath, beat)
            #expect(refused.status == 400 && Self.message(refused).contains("relay"), "\(offer): \(refused.text)")
        }
        #expect(try await lead.node("spy").decode(Node.self).wireguard.relay == nil)
        let offering = try Self.heartbeatJSON {
            $0["wireguard"] = ["listen_port": 51820, "behind_nat": false, "relay": ["port_base": 41000, "pairs": 8]]
        }
        #expect(try await lead.signed(spy, "POST", beatPath, offering).status == 200)
        #expect(try await lead.node("spy").decode(Node.self).wireguard.relay == RelayOffer(portBase: 41000, pairs: 8))
        // The offer alone makes spy no relay: two nodes behind NAT get a path without one. Only
        // an operator's trusted label relay=true does.
        for name in ["home-a", "home-b"] {
            let home = SimulatedNode(name: name)
            let joined = try await lead.post(
                Routes.join,
                try Self.joinJSON(home, token: acme.token) {
                    var wireguard = $0["wireguard"] as? [String: Any] ?? [:]
                    wireguard["behind_nat"] = true
                    $0["wireguard"] = wireguard
                })
            #expect(joined.status == 201, "\(joined.text)")
        }
        func homePath() async throws -> MeshPath? {
            try await http(lead.url + Routes.topology, headers: lead.admin).decode(Topology.self).paths?.first {
                $0.a == "home-a" && $0.b == "home-b"
            }
        }
        let untrusted = try await poll(timeout: .seconds(10), every: .milliseconds(100), "a path for the homes") {
            try await homePath()
        }
        #expect(untrusted.relay == nil && untrusted.reason.contains("no relay"), "\(untrusted)")
        let relayLabelled = try await http(
            lead.url + Routes.nodeLabels("spy"), method: "PUT",
            headers: lead.admin.merging(["Content-Type": "application/json"]) { $1 },
            body: Array(#"{"labels":{"zone":"public","relay":"true"}}"#.utf8))
        #expect(relayLabelled.status == 200, "\(relayLabelled.text)")
        #expect(try await lead.signed(spy, "POST", beatPath, offering).status == 200)
        let trusted = try await poll(timeout: .seconds(10), every: .milliseconds(100), "spy to relay the homes") {
            try await homePath().flatMap { $0.relay == "spy" ? $0 : nil }
        }
        let ports = [trusted.relayA, trusted.relayB].compactMap { $0?.split(separator: ":").last.flatMap { Int($0) } }
        #expect(ports.count == 2 && (41000..<41016).contains(ports[0]) && ports[1] == ports[0] + 1, "\(trusted)")
        // The label goes again: the placement checks below hold spy to its token's labels.
        let unlabelled = try await http(
            lead.url + Routes.nodeLabels("spy"), method: "PUT",
            headers: lead.admin.merging(["Content-Type": "application/json"]) { $1 },
            body: Array(#"{"labels":{"zone":"public"}}"#.utf8))
        #expect(unlabelled.status == 200, "\(unlabelled.text)")

        // 5. NUL and escape sequences: 400 at the edge, for heartbeats and every other body.
        for (label, body) in [
            ("NUL in version", try Self.heartbeatJSON { $0["version"] = "v\u{0}1" }),
            ("escape in labels", try Self.heartbeatJSON { $0["labels"] = ["zone": "\u{1B}[2J"] }),
            (
                "escape in a GPU name",
                try Self.heartbeatJSON {
                    $0["capabilities"] = [
                        "cpu_cores": 4, "memory_mb": 1024, "os": "test", "arch": "x86_64",
                        "gpus": [
                            [
                                "index": 0, "uuid": "u", "name": "H100\u{1B}]0;owned\u{7}", "memory_total_mb": 1,
                                "memory_used_mb": 0, "utilization_pct": 0,
                            ]
                        ],
                    ]
                }
            ),
        ] {
            let answer = try await lead.signed(spy, "POST", beatPath, body)
            #expect(
                answer.status == 400 && Self.message(answer).contains("control character"),
                "\(label): \(answer.status) \(answer.text)")
        }
        // A worker's start time that is not a time (or is huge): 400, changes nothing.
        for startedAt in ["yesterday", String(repeating: "9", count: 500), "2026-13-45T99:99:99Z"] {
            let body = try Self.heartbeatJSON {
                $0["worker"] = [
                    "accepting": true, "allow_exec": true, "generate": true, "jobs": [], "started_at": startedAt,
                ]
            }
            let answer = try await lead.signed(spy, "POST", beatPath, body)
            #expect(
                answer.status == 400 && Self.message(answer).contains("started_at"), "\(answer.status) \(answer.text)")
        }
        // Models a node claims: a control character, an empty or oversized name, 300 of them: 400.
        func capabilities(_ models: [[String: Any]]) -> [String: Any] {
            ["cpu_cores": 4, "memory_mb": 1024, "os": "test", "arch": "x86_64", "gpus": [], "models": models]
        }
        for (label, models) in [
            ("escape in a model name", [["name": "llama\u{1B}[2J", "loaded": true]]),
            ("empty model name", [["name": "", "loaded": true]]),
            ("oversized model name", [["name": String(repeating: "m", count: 201), "loaded": true]]),
            ("NUL in a backend name", [["name": "m", "backend_name": "a\u{0}b", "loaded": true]]),
            ("300 models", (0..<300).map { ["name": "m\($0)", "loaded": false] }),
        ] {
            let body = try Self.heartbeatJSON { $0["capabilities"] = capabilities(models) }
            let answer = try await lead.signed(spy, "POST", beatPath, body)
            let message = Self.message(answer)
            #expect(
                answer.status == 400 && (message.contains("models") || message.contains("control character")),
                "\(label): \(answer.text)")
        }
        let afterControls = try await lead.node("spy").decode(Node.self)
        #expect(afterControls.version == "test" && afterControls.capabilities.gpus.first?.name == "NVIDIA H100")
        #expect(afterControls.capabilities.models == nil)
        // The batched last_seen flush keeps working for everyone (a clean heartbeat still lands).
        #expect(try await lead.signed(spy, "POST", beatPath, good).status == 200)
        let nulKey = try await lead.post(
            Routes.gpuJobs, #"{"kind":"generate","payload":{"model":"m","prompt":"p"},"idempotency_key":"a\u0000b"}"#,
            headers: lead.admin)
        #expect(nulKey.status == 400 && Self.message(nulKey).contains("U+0"), "\(nulKey.text)")

        // 6. Claimed labels draw nothing: an exec job for zone=secure finds no node whose trusted labels match.
        let claimed = try Self.heartbeatJSON { $0["labels"] = ["zone": "secure"] }
        #expect(try await lead.signed(spy, "POST", beatPath, claimed).status == 200)
        let secureExec =
            #"{"kind":"exec","payload":{"argv":["deploy","--password","hunter2"]},"requirements":{"min_vram_mb":0,"labels":{"zone":"secure"}}}"#
        let notPlaced = try await lead.post(Routes.gpuJobs, secureExec, headers: lead.admin)
        #expect(
            notPlaced.status == 403 && Self.code(notPlaced) == "exec_not_allowed",
            "\(notPlaced.status) \(notPlaced.text)")
        #expect(try await lead.node("spy").decode(Node.self).labels == ["zone": "public"])
        // An operator's label is trusted.
        let labelled = try await http(
            lead.url + Routes.nodeLabels("spy"), method: "PUT",
            headers: lead.admin.merging(["Content-Type": "application/json"]) { $1 },
            body: Array(#"{"labels":{"zone":"public","tier":"b"}}"#.utf8))
        #expect(
            try labelled.status == 200 && (try labelled.decode(Node.self).labels) == ["zone": "public", "tier": "b"],
            "\(labelled.text)")

        // 7. Jobs belong to their submitter; a node never submits exec.
        let nodeExec = #"{"kind":"exec","payload":{"argv":["id"]},"requirements":{"min_vram_mb":0}}"#
        let execByNode = try await lead.signed(spy, "POST", Routes.gpuJobs, Array(nodeExec.utf8))
        #expect(
            execByNode.status == 403 && Self.code(execByNode) == "exec_not_allowed",
            "\(execByNode.status) \(execByNode.text)")
        let operatorJob = try await lead.post(
            Routes.gpuJobs,
            #"{"kind":"generate","payload":{"model":"m","prompt":"secret plans"},"idempotency_key":"k1","requirements":{"min_vram_mb":0,"labels":{"zone":"nowhere"}},"allow_unplaceable":true}"#,
            headers: lead.admin
        ).decode(Job.self)
        let read = try await lead.signed(spy, "GET", Routes.gpuJob(operatorJob.id))
        #expect(read.status == 404 && !read.text.contains("secret plans"), "\(read.status) \(read.text)")
        let cancel = try await lead.signed(spy, "DELETE", Routes.gpuJob(operatorJob.id))
        #expect(cancel.status == 404, "\(cancel.status) \(cancel.text)")
        #expect(
            try await http(lead.url + Routes.gpuJob(operatorJob.id), headers: lead.admin).decode(Job.self).state
                == .queued)
        let list = try await lead.signed(spy, "GET", Routes.gpuJobs).decode(JobList.self)
        #expect(!list.jobs.contains { $0.id == operatorJob.id })
        let nodeKeyed =
            #"{"kind":"generate","payload":{"model":"m","prompt":"mine"},"idempotency_key":"k2","requirements":{"min_vram_mb":0,"labels":{"zone":"nowhere"}},"allow_unplaceable":true}"#
        let nodeJob = try await lead.signed(spy, "POST", Routes.gpuJobs, Array(nodeKeyed.utf8))
        #expect(nodeJob.status == 201, "\(nodeJob.text)")
        let nodeJobID = try nodeJob.decode(Job.self).id
        // The operator's k2 is the operator's own: a new job, not the node's.
        let operatorK2 = try await lead.post(Routes.gpuJobs, nodeKeyed, headers: lead.admin)
        #expect(
            try operatorK2.status == 201 && (try operatorK2.decode(Job.self).id) != nodeJobID,
            "\(operatorK2.status) \(operatorK2.text)")
        // The node's k1 is not the operator's job.
        let nodeK1 = try await lead.signed(
            spy, "POST", Routes.gpuJobs,
            Array(
                #"{"kind":"generate","payload":{"model":"m","prompt":"p"},"idempotency_key":"k1","requirements":{"min_vram_mb":0,"labels":{"zone":"nowhere"}},"allow_unplaceable":true}"#
                    .utf8))
        #expect(try nodeK1.status == 201 && (try nodeK1.decode(Job.self).id) != operatorJob.id)
        #expect(try await lead.signed(spy, "GET", Routes.gpuJob(nodeJobID)).status == 200)

        // 8. One report may not write thousands of events.
        let eventsBefore = try await lead.events().filter { $0.type == EventType.connectivityChanged }.count
        let results = (0..<3000).map {
            #"{"service":"s\#($0)","url":"http://x","state":"down","checked_at":"2026-01-01T00:00:00.000Z"}"#
        }
        let flood = try await lead.signed(
            spy, "POST", Routes.connectivityStatus, Array(#"{"results":[\#(results.joined(separator: ","))]}"#.utf8))
        #expect(
            flood.status == 400 && Self.message(flood).contains("cap is 64"), "\(flood.status) \(Self.message(flood))")
        #expect(try await lead.events().filter { $0.type == EventType.connectivityChanged }.count == eventsBefore)

        // 9. The lead calls a node's agent only where the node's requests come from.
        let elsewhere = try Self.heartbeatJSON { $0["address"] = "198.51.100.7:9999" }
        #expect(try await lead.signed(spy, "POST", beatPath, elsewhere).status == 200)
        let logs = try await http(lead.url + Routes.logs + "?node=spy", headers: lead.admin)
        #expect(logs.status == 503 && Self.code(logs) == "no_address", "\(logs.status) \(logs.text)")

        // 10. The labels route: unauthenticated, a node's signature, malformed, oversized.
        let labelsPath = Routes.nodeLabels("spy")
        let body = Array(#"{"labels":{"zone":"secure"}}"#.utf8)
        #expect(try await http(lead.url + labelsPath, method: "PUT", body: body).status == 401)
        #expect(try await lead.signed(spy, "PUT", labelsPath, body).status == 401)
        #expect(
            try await http(
                lead.url + labelsPath, method: "PUT", headers: lead.admin, body: Array(#"{"labels":"zone"}"#.utf8)
            ).status == 400)
        let many = (0..<65).map { #""k\#($0)":"v""# }.joined(separator: ",")
        #expect(
            try await http(
                lead.url + labelsPath, method: "PUT", headers: lead.admin, body: Array(#"{"labels":{\#(many)}}"#.utf8)
            ).status == 400)
        #expect(
            try await http(lead.url + Routes.nodeLabels("ghost"), method: "PUT", headers: lead.admin, body: body).status
                == 404)
        #expect(try await lead.node("spy").decode(Node.self).labels == ["zone": "public", "tier": "b"])
        #expect(agent.process.isRunning)
    }

    @Test("join guessing and failed authentication hit 429 with Retry-After; slow and idle connections are closed")
    func limits() async throws {
        let scratch = try ScratchDirectory("attack-limits")
        defer { scratch.remove() }
        let file = scratch.path + "/lead.yaml"
        try "http: {idle_timeout_s: 2}\nlimits: {joins_per_min: 60, auth_failures_per_min: 60}\n".write(
            toFile: file, atomically: true, encoding: .utf8)
        let agent = try AgentHarness(
            profile: "lead", dataDir: scratch.path + "/lead", extraArguments: ["--name", "lead-1", "--config", file],
            outputDirectory: scratch.path)
        defer { if agent.process.isRunning { agent.process.signal(SIGKILL) } }
        try await agent.waitHealthy()

        // Slowloris first (the limits below would refuse this source afterwards): 50 connections
        // that send half a request head are closed after the 2 s idle timeout.
        let started = ContinuousClock.now
        let sockets = try (0..<50).map { _ in try Self.connect(port: agent.port) }
        for socket in sockets {
            _ = "GET /health HTTP/1.1\r\nHost: x\r\nX-Slow: ".withCString { send(socket, $0, strlen($0), 0) }
        }
        var closed = 0
        for socket in sockets {
            if try await Self.waitClosed(socket, seconds: 8) { closed += 1 }
            close(socket)
        }
        let held = started.duration(to: .now)
        #expect(closed == 50, "\(closed) of 50 slow connections closed")
        #expect(held < .seconds(8), "held for \(held)")
        #expect(try await http(agent.baseURL + Routes.health).status == 200)

        // Guessing join tokens: the first 15 (a quarter of the per-minute limit) are checked, then 429.
        var statuses: [Int] = []
        var retryAfter: String?
        let guess = try AttackTests.joinJSON(SimulatedNode(name: "guess"), token: "aurjoin_guess")
        let guessing = ContinuousClock.now
        for _ in 0..<40 {
            let answer = try await http(
                agent.baseURL + Routes.join, method: "POST", headers: ["Content-Type": "application/json"],
                body: Array(guess.utf8))
            statuses.append(answer.status)
            if answer.status == 429 { retryAfter = answer.headers["retry-after"] }
        }
        // A bucket of 15 that refills one a second: a slow (loaded) machine earns a few more checks.
        let checked = 15 + Int(guessing.duration(to: .now) / .seconds(1)) + 1
        #expect(
            statuses.filter { $0 == 401 }.count <= checked && statuses.filter { $0 == 429 }.count >= 40 - checked
                && statuses.contains(429),
            "\(statuses) (at most \(checked) checked)")
        #expect(
            retryAfter.flatMap { Int($0) }.map { $0 >= 1 && $0 <= 60 } == true, "Retry-After: \(retryAfter ?? "none")")
        // A source that has used up its failures: even the right operator token gets 429 until the
        // bucket refills. (Wrong tokens until the limit answers, then the right one at once: a
        // loaded machine may have refilled a token while the guesses above ran.)
        // The bucket refills one a second: on a machine so loaded that more than a second passes
        // between the last refused guess and the right token, the round is tried again (bounded).
        var refused: HTTPAnswer?
        for _ in 0..<5 where refused?.status != 429 {
            var limited = false
            for _ in 0..<60 where !limited {
                limited =
                    try await http(agent.baseURL + Routes.tokens, headers: ["Authorization": "Bearer aur_wrong"])
                    .status == 429
            }
            #expect(limited, "wrong tokens were never limited")
            refused = try await http(
                agent.baseURL + Routes.tokens, headers: ["Authorization": "Bearer \(try agent.adminToken)"])
        }
        let answer = try #require(refused)
        #expect(answer.status == 429 && AttackTests.code(answer) == "rate_limited", "\(answer.status) \(answer.text)")
        // Unauthenticated health checks are not held up.
        #expect(try await http(agent.baseURL + Routes.health).status == 200)
    }

    @Test(
        "a request the lead signs for one node is refused by another (it names its target); a forged or unsigned one by every node"
    )
    func signedTarget() async throws {
        let scratch = try ScratchDirectory("attack-target")
        defer { scratch.remove() }
        let lead = try AgentHarness(
            profile: "lead", dataDir: scratch.path + "/lead", extraArguments: ["--name", "lead-1"],
            outputDirectory: scratch.path)
        defer { if lead.process.isRunning { lead.process.signal(SIGKILL) } }
        try await lead.waitHealthy()
        let token = try await lead.joinToken(reusable: true, outputDirectory: scratch.path)
        var nodes: [String: AgentHarness] = [:]
        for name in ["gpu-a", "gpu-b"] {
            nodes[name] = try AgentHarness(
                profile: "compute", dataDir: scratch.path + "/" + name,
                extraArguments: ["--name", name, "--lead", lead.baseURL, "--join-token", token],
                outputDirectory: scratch.path)
        }
        defer { for node in nodes.values where node.process.isRunning { node.process.signal(SIGKILL) } }
        for node in nodes.values { try await node.waitHealthy() }
        // The nodes learn the lead's key when they join.
        for (name, node) in nodes {
            _ = try await poll(timeout: .seconds(20), every: .milliseconds(50), "\(name) to join") {
                () async throws -> Bool? in
                FileManager.default.fileExists(atPath: node.dataDir + "/membership.json") ? true : nil
            }
        }
        let seed = try String(contentsOfFile: lead.dataDir + "/keys/sign.key", encoding: .utf8).trimmingCharacters(
            in: .whitespacesAndNewlines)
        let leadKey = try SigningKey(base64Seed: seed)
        let path = Routes.logs + "?since=0&limit=5&level=trace"
        func signedByLead(for target: String?, nonce: String = Hex.random()) -> [String: String] {
            let stamp = String(Int64(Date().timeIntervalSince1970 * 1000))
            let canonical = RequestSigning.canonical(
                method: "GET", path: path, node: "lead-1", timestamp: stamp, nonce: nonce,
                bodySHA256: Hex.string(Crypto.sha256([])), target: target)
            var headers = [
                RequestSigning.nodeHeader: "lead-1", RequestSigning.timestampHeader: stamp,
                RequestSigning.nonceHeader: nonce,
                RequestSigning.signatureHeader: Data(leadKey.sign(Array(canonical.utf8))).base64EncodedString(),
            ]
            if let target { headers[RequestSigning.targetHeader] = target }
            return headers
        }
        let a = try #require(nodes["gpu-a"]), b = try #require(nodes["gpu-b"])
        // The lead's request for gpu-a works on gpu-a...
        let forA = signedByLead(for: "gpu-a")
        let answered = try await http(a.baseURL + path, headers: forA)
        #expect(
            answered.status == 200 && (try? answered.decode(LogPage.self).node) == "gpu-a",
            "\(answered.status) \(answered.text)")
        // ...and the same request, replayed to gpu-b within the window, is refused there.
        let replayed = try await http(b.baseURL + path, headers: forA)
        #expect(
            replayed.status == 401 && Self.message(replayed).contains("names node 'gpu-a'"),
            "\(replayed.status) \(replayed.text)")
        // Without a target (the old form), with a target moved to another header value, or unsigned: refused.
        #expect(try await http(b.baseURL + path, headers: signedByLead(for: nil)).status == 401)
        var moved = signedByLead(for: "gpu-a")
        moved[RequestSigning.targetHeader] = "gpu-b"
        let retargeted = try await http(b.baseURL + path, headers: moved)
        #expect(
            retargeted.status == 401 && !Self.message(retargeted).contains("names node"),
            "\(retargeted.status) \(retargeted.text)")
        #expect(try await http(b.baseURL + path).status == 401)
        #expect(try await http(b.baseURL + path, headers: signedByLead(for: "gpu-b")).status == 200)
    }

    static func connect(port: Int) throws -> Int32 {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue | SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw TestKitError("socket: \(errno)") }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = in_port_t(UInt16(port).bigEndian)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        let result = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                Glibc.connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
            }
        }
        guard result == 0 else { close(fd); throw TestKitError("connect: \(errno)") }
        return fd
    }

    /// Whether the peer closes `fd` within `seconds` (a read returns 0 or an error).
    /// Polls without blocking and sleeps between looks: a blocking poll(2) here would hold one of
    /// the cooperative pool's threads (two on this machine) from every other suite for seconds.
    static func waitClosed(_ fd: Int32, seconds: Int) async throws -> Bool {
        var descriptor = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
        let deadline = ContinuousClock.now + .seconds(seconds)
        while ContinuousClock.now < deadline {
            guard Glibc.poll(&descriptor, 1, 0) >= 0 else { return true }
            if descriptor.revents != 0 {
                var buffer = [UInt8](repeating: 0, count: 512)
                let count = recv(fd, &buffer, buffer.count, 0)
                if count <= 0 { return true }
            } else {
                try await Task.sleep(for: .milliseconds(20))
            }
        }
        return false
    }
}
