import AuroraAPI
import AuroraTestKit
import Foundation
import Secrets
import Testing

#if canImport(Glibc)
    import Glibc
#endif

/// A node the test plays itself, with its own keys, against a real lead.
struct SimulatedNode {
    let name: String
    let signing = SigningKey.generate()
    let box = BoxKey.generate()
    let wireguard = WireGuardPrivateKey.generate()

    func joinBody(token: String, cpuCores: Int = 4) throws -> [UInt8] {
        let request = JoinRequest(
            token: token, name: name, profile: .compute, company: nil, labels: nil,
            wireguard: .init(publicKey: wireguard.publicKey.base64, endpoint: nil, listenPort: 51820),
            signPublicKey: signing.publicKey.base64, boxPublicKey: box.publicKey.base64, vpnIP: nil,
            capabilities: Capabilities(cpuCores: cpuCores, memoryMB: 1024, os: "test", arch: "x86_64", gpus: []),
            address: nil, version: "test",
            timing: HeartbeatTiming(intervalS: 1, suspectAfter: 3, awayAfter: 0, deadAfter: 600))
        return Array(try APICoding.encoder().encode(request))
    }

    func heartbeatBody(cpuCores: Int) throws -> [UInt8] {
        let beat = HeartbeatRequest(
            capabilities: Capabilities(cpuCores: cpuCores, memoryMB: 1024, os: "test", arch: "x86_64", gpus: []),
            version: "test", labels: [:], checks: [], peers: [], address: nil,
            timing: HeartbeatTiming(intervalS: 1, suspectAfter: 3, awayAfter: 0, deadAfter: 600))
        return Array(try APICoding.encoder().encode(beat))
    }

    /// The four signature headers, signed by `key` (default: this node's) as `signer`.
    func headers(
        method: String = "POST", path: String, body: [UInt8], signer: String? = nil, key: SigningKey? = nil,
        timestamp: Date = Date(), nonce: String = Hex.random()
    ) -> [String: String] {
        let stamp = String(Int64(timestamp.timeIntervalSince1970 * 1000))
        let canonical = RequestSigning.canonical(
            method: method, path: path, node: signer ?? name, timestamp: stamp, nonce: nonce,
            bodySHA256: Hex.string(Crypto.sha256(body)))
        let signature = (key ?? signing).sign(Array(canonical.utf8))
        return [
            RequestSigning.nodeHeader: signer ?? name, RequestSigning.timestampHeader: stamp,
            RequestSigning.nonceHeader: nonce,
            RequestSigning.signatureHeader: Data(signature).base64EncodedString(), "Content-Type": "application/json",
        ]
    }
}

enum Hex {
    static func string(_ bytes: [UInt8]) -> String { bytes.map { String(format: "%02x", $0) }.joined() }
    static func random() -> String { string(Crypto.randomBytes(16)) }
}

@Suite("Signed requests and join tokens (real lead)", .serialized)
struct SigningTests {
    @Test(
        "unsigned, forged, stale, replayed and wrong-node requests get 401 and change nothing; bad tokens are refused at join"
    )
    func refusals() async throws {
        let scratch = try ScratchDirectory("signing")
        defer { scratch.remove() }
        let lead = try AgentHarness(
            profile: "lead", dataDir: scratch.path + "/lead", extraArguments: ["--name", "lead-1"],
            outputDirectory: scratch.path)
        defer { if lead.process.isRunning { lead.process.signal(SIGKILL) } }
        try await lead.waitHealthy()
        let admin = ["Authorization": "Bearer \(try lead.adminToken)", "Content-Type": "application/json"]
        func createToken(_ body: String) async throws -> TokenCreated {
            let answer = try await http(
                lead.baseURL + Routes.tokens, method: "POST", headers: admin, body: Array(body.utf8))
            #expect(answer.status == 201, "\(answer.text)")
            return try answer.decode(TokenCreated.self)
        }
        func join(_ node: SimulatedNode, token: String) async throws -> HTTPAnswer {
            try await http(
                lead.baseURL + Routes.join, method: "POST", headers: ["Content-Type": "application/json"],
                body: try node.joinBody(token: token))
        }
        func message(_ answer: HTTPAnswer) -> String {
            (try? answer.decode(ErrorResponse.self).error.message) ?? answer.text
        }

        // Two nodes join with one single-use token each.
        let alpha = SimulatedNode(name: "alpha"), beta = SimulatedNode(name: "beta")
        let alphaToken = try await createToken(#"{"profile":"compute"}"#)
        #expect(try await join(alpha, token: alphaToken.token).status == 201)
        #expect(try await join(beta, token: try await createToken(#"{"profile":"compute"}"#).token).status == 201)

        // A used single-use token, a revoked and an expired one are refused; so is a stranger's.
        let gamma = SimulatedNode(name: "gamma")
        let used = try await join(gamma, token: alphaToken.token)
        #expect(used.status == 401)
        #expect(message(used).contains("already used"))
        let revoked = try await createToken(#"{"profile":"compute"}"#)
        let revoke = try await http(
            lead.baseURL + Routes.tokens + "/" + revoked.info.id, method: "DELETE", headers: admin)
        #expect(try revoke.decode(TokenInfo.self).state == .revoked)
        let refusedRevoked = try await join(gamma, token: revoked.token)
        #expect(refusedRevoked.status == 401)
        #expect(message(refusedRevoked).contains("revoked"))
        let expiring = try await createToken(#"{"profile":"compute","ttl_s":1}"#)
        _ = try await poll(timeout: .seconds(30), every: .milliseconds(100), "the token to expire") {
            () async throws -> Bool? in
            let list = try await http(lead.baseURL + Routes.tokens, headers: admin).decode(TokenList.self)
            return list.tokens.first { $0.id == expiring.info.id }?.state == .expired ? true : nil
        }
        let refusedExpired = try await join(gamma, token: expiring.token)
        #expect(refusedExpired.status == 401)
        #expect(message(refusedExpired).contains("expired"))
        #expect(try await join(gamma, token: "aurjoin_not-a-token").status == 401)
        // A name taken by another key is refused even with a good token.
        let impostor = SimulatedNode(name: "alpha")
        let taken = try await join(impostor, token: try await createToken(#"{"profile":"compute"}"#).token)
        #expect(taken.status == 409)
        #expect(message(taken).contains("taken"))
        // An edge token does not make a compute node, and the refused join does not use it up.
        let edgeToken = try await createToken(#"{"profile":"edge"}"#)
        let wrongProfile = try await join(gamma, token: edgeToken.token)
        #expect(wrongProfile.status == 403)
        let afterRefusal = try await http(lead.baseURL + Routes.tokens, headers: admin).decode(TokenList.self)
        #expect(afterRefusal.tokens.first { $0.id == edgeToken.info.id }.map { "\($0.state) \($0.uses)" } == "active 0")

        // A good heartbeat works.
        let path = Routes.heartbeat("beta")
        let good = try beta.heartbeatBody(cpuCores: 8)
        let first = try await http(
            lead.baseURL + path, method: "POST", headers: beta.headers(path: path, body: good), body: good)
        #expect(first.status == 200, "\(first.text)")
        let before = try await http(lead.baseURL + Routes.nodes, headers: admin).text
        let beforeBeta = try await http(lead.baseURL + Routes.node("beta"), headers: admin).decode(Node.self)
        #expect(beforeBeta.capabilities.cpuCores == 8)

        // Each bad request: 401 with its reason, and the registry is unchanged.
        let evil = try beta.heartbeatBody(cpuCores: 999)
        let replayHeaders = beta.headers(path: path, body: evil)
        let cases: [(String, [String: String], String)] = [
            ("unsigned", ["Content-Type": "application/json"], "unsigned"),
            ("forged", beta.headers(path: path, body: evil, key: SigningKey.generate()), "bad signature"),
            ("stale", beta.headers(path: path, body: evil, timestamp: Date().addingTimeInterval(-60)), "stale"),
            (
                "from the future", beta.headers(path: path, body: evil, timestamp: Date().addingTimeInterval(45)),
                "stale"
            ),
            ("wrong node", alpha.headers(path: path, body: evil), "cannot send heartbeats for 'beta'"),
            ("unknown node", SimulatedNode(name: "ghost").headers(path: path, body: evil), "unknown node"),
            ("body swapped", beta.headers(path: path, body: good), "bad signature"),
            ("bare node header", [RequestSigning.nodeHeader: "beta"], "unsigned"),
        ]
        for (label, headers, reason) in cases {
            let answer = try await http(lead.baseURL + path, method: "POST", headers: headers, body: evil)
            #expect(answer.status == 401, "\(label): \(answer.status) \(answer.text)")
            #expect(message(answer).contains(reason), "\(label): \(message(answer))")
        }
        // The failure detector may move beta's state while a loaded machine works through the
        // cases (beta does not beat meanwhile); everything a request could change is compared.
        var unchanged = try await http(lead.baseURL + Routes.node("beta"), headers: admin).decode(Node.self)
        unchanged.state = beforeBeta.state
        #expect(unchanged == beforeBeta, "refused requests changed beta's record")
        func members(_ text: String) throws -> [Node] {
            // The lead's last_seen moves, and so may the state of a node that stopped beating (the
            // failure detector runs on while a loaded machine works through the cases): compare
            // what a request could change. beta is compared whole above.
            try APICoding.decoder().decode(NodeList.self, from: Data(text.utf8)).nodes.filter { $0.name != "lead-1" }
                .map { node in
                    var node = node
                    node.lastSeen = ""
                    node.state = .alive
                    return node
                }
        }
        #expect(
            try members(try await http(lead.baseURL + Routes.nodes, headers: admin).text) == members(before),
            "refused requests changed the registry")

        // Replay: the first use of these headers is accepted, the second refused.
        let accepted = try await http(lead.baseURL + path, method: "POST", headers: replayHeaders, body: evil)
        #expect(accepted.status == 200)
        let replayed = try await http(lead.baseURL + path, method: "POST", headers: replayHeaders, body: evil)
        #expect(replayed.status == 401)
        #expect(message(replayed).contains("replayed"))
        let afterBeta = try await http(lead.baseURL + Routes.node("beta"), headers: admin).decode(Node.self)
        #expect(afterBeta.capabilities.cpuCores == 999, "the one accepted request counted")
        let beforeList = try APICoding.decoder().decode(NodeList.self, from: Data(before.utf8))
        #expect(beforeList.nodes.map(\.name) == ["alpha", "beta", "lead-1"], "no refused join added a node")

        // Removed by an operator: its signed heartbeats are refused.
        let removed = try await http(lead.baseURL + Routes.node("alpha"), method: "DELETE", headers: admin)
        #expect(try removed.decode(Node.self).state == .left)
        let alphaPath = Routes.heartbeat("alpha")
        let alphaBody = try alpha.heartbeatBody(cpuCores: 2)
        let afterRemoval = try await http(
            lead.baseURL + alphaPath, method: "POST", headers: alpha.headers(path: alphaPath, body: alphaBody),
            body: alphaBody)
        #expect(afterRemoval.status == 401)
        #expect(message(afterRemoval).contains("removed"))
        // Operator endpoints need the operator token, not a node's signature.
        let tokenList = try await http(
            lead.baseURL + Routes.tokens, headers: beta.headers(method: "GET", path: Routes.tokens, body: []))
        #expect(tokenList.status == 401)

        // Events resume after Last-Event-ID, then follow live: a join while the stream is open arrives on it.
        let history = try await http(lead.baseURL + Routes.events + "?since=0&follow=false", headers: admin).text
            .split(separator: "\n").filter { $0.hasPrefix("data: ") }
            .compactMap { try? APICoding.decoder().decode(MeshEvent.self, from: Data($0.dropFirst(6).utf8)) }
        #expect(history.filter { $0.type == EventType.nodeJoined }.map(\.node) == ["alpha", "beta"])
        #expect(history.map(\.seq) == history.map(\.seq).sorted())
        let firstSeq = try #require(history.first?.seq)
        var received: [MeshEvent] = []
        let delta = SimulatedNode(name: "delta")
        let deltaToken = try await createToken(#"{"profile":"compute"}"#).token
        let deltaBody = try delta.joinBody(token: deltaToken)
        let url = lead.baseURL
        try await readEvents(
            lead.baseURL + Routes.events, headers: admin.merging(["Last-Event-ID": String(firstSeq)]) { $1 },
            timeout: .seconds(20),
            onOpen: {
                let joined = try await http(
                    url + Routes.join, method: "POST", headers: ["Content-Type": "application/json"], body: deltaBody)
                #expect(joined.status == 201)
            }
        ) { data in
            received.append(try APICoding.decoder().decode(MeshEvent.self, from: Data(data.utf8)))
            return received.last?.node == "delta"
        }
        #expect(received.first?.seq == firstSeq + 1, "resumes right after Last-Event-ID")
        #expect(received.map(\.seq) == Array((firstSeq + 1)...(received.last?.seq ?? 0)), "in order, none missing")
        #expect(received.last?.type == EventType.nodeJoined)

        lead.process.signal(SIGTERM)
        #expect(try await lead.process.waitForExit(timeout: .seconds(10)) == 0)
    }
}
