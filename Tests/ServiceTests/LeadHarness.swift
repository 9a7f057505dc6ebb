import AuroraAPI
import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import Logging
import NIOCore
import Secrets

@testable import NodeAgent

/// The lead's routes over a ``MemoryStore``, loaded as a started lead would be (registry, API
/// tokens, job coordinator), driven in process.
struct LeadHarness: Sendable {
    let store: MemoryStore
    let parts: LeadParts
    let agent: AgentParts
    /// The operator token.
    let admin: String
    let leadName: String
    /// The lead's data directory (keys, admin token); removed when ``session(_:)`` ends.
    let directory: URL

    static func start() async throws -> LeadHarness {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("aurora-svc-\(UUID().uuidString)")
        let logger = Logger(label: "test", factory: { _ in SwiftLogNoOpLogHandler() })
        let store = MemoryStore()
        let (agent, config, identity, keys) = try RouterFixture.agent(
            role: "lead", in: directory, apiTokens: APITokens(store: store), logger: logger)
        let parts = try RouterFixture.leadParts(
            rows: store, agent: agent, config: config, identity: identity, keys: keys, in: directory, logger: logger)
        try await parts.registry.load(capabilities: .unknown, meshID: nil)
        try await parts.apiTokens.load()
        try await parts.gatewayKeys.load()
        await parts.registry.attach(parts.jobs)
        try await parts.jobs.load(nodes: await parts.registry.jobUpdates())
        try await parts.secrets.load()
        return LeadHarness(
            store: store, parts: parts,
            agent: agent,
            admin: try RouterFixture.adminToken(in: directory), leadName: config.name, directory: directory)
    }

    /// Runs `body` with a client of the router, then removes the data directory.
    func session(_ body: @Sendable (Session) async throws -> Void) async throws {
        defer { try? FileManager.default.removeItem(at: directory) }
        let logger = Logger(label: "test", factory: { _ in SwiftLogNoOpLogHandler() })
        let router = HTTPServer.router(agent: agent, role: .lead(parts), metrics: nil, logger: logger)
        let app = Application(router: router, logger: logger)
        let admin = self.admin
        try await app.test(.router) { client in try await body(Session(client: client, admin: admin)) }
    }
}

/// A joining node's keys, its join request and its signature.
struct TestNode: Sendable {
    let name: String
    let signing = SigningKey.generate()
    let box = BoxKey.generate()
    let wireguard = SigningKey.generate()

    var signer: RequestSigner { RequestSigner(node: name, key: signing) }

    func join(
        token: String, profile: NodeRole = .compute, company: String? = nil, labels: [String: String]? = nil
    ) -> JoinRequest {
        JoinRequest(
            token: token, name: name, profile: profile, company: company, labels: labels,
            wireguard: .init(publicKey: wireguard.publicKey.base64, endpoint: nil, listenPort: 51820),
            signPublicKey: signing.publicKey.base64, boxPublicKey: box.publicKey.base64, vpnIP: nil,
            capabilities: Capabilities(cpuCores: 4, memoryMB: 8192, os: "linux", arch: "x86_64", gpus: []),
            address: nil, version: "test", timing: nil)
    }

    func heartbeat() -> HeartbeatRequest {
        HeartbeatRequest(
            capabilities: nil, version: "test", labels: nil, checks: [], peers: [], address: nil,
            timing: HeartbeatTiming(intervalS: 1, suspectAfter: 3, awayAfter: 0, deadAfter: 10))
    }
}

/// One client of the lead's router: bearer-token and node-signed calls, answers decoded.
struct Session: Sendable {
    let client: any TestClientProtocol
    let admin: String

    struct Answer: Sendable {
        var status: Int
        var body: String
        var error: ErrorResponse.Detail? {
            (try? JSONDecoder().decode(ErrorResponse.self, from: Data(body.utf8)))?.error
        }

        func decode<T: Decodable>(_ type: T.Type) throws -> T {
            try APICoding.decoder().decode(T.self, from: Data(body.utf8))
        }
    }

    /// A call with the operator token unless `token` says otherwise (`""`: none), or signed by `signer`.
    func call(
        _ method: HTTPRequest.Method, _ uri: String, token: String? = nil, signer: RequestSigner? = nil,
        body: (some Encodable & Sendable)? = String?.none
    ) async throws -> Answer {
        var bytes: [UInt8] = []
        if let raw = body as? RawJSON {
            bytes = Array(raw.text.utf8)
        } else if let body {
            bytes = Array(try APICoding.encoder().encode(body))
        }
        var headers: HTTPFields = [:]
        if body != nil { headers[.contentType] = "application/json" }
        if let signer {
            for (name, value) in signer.headers(method: method.rawValue, path: uri, body: bytes) {
                headers[HTTPField.Name(name)!] = value
            }
        } else {
            let bearer = token ?? admin
            if !bearer.isEmpty { headers[.authorization] = "Bearer \(bearer)" }
        }
        let sent = headers
        return try await client.execute(
            uri: uri, method: method, headers: sent, body: bytes.isEmpty ? nil : ByteBuffer(bytes: bytes)
        ) { response in
            Answer(status: Int(response.status.code), body: String(buffer: response.body))
        }
    }
}

/// A request body sent as is, not encoded (malformed and oversized bodies).
struct RawJSON: Encodable, Sendable {
    let text: String
    init(_ text: String) { self.text = text }
    func encode(to encoder: any Encoder) throws {
        var container = encoder.singleValueContainer()
        try container.encode(text)
    }
}
