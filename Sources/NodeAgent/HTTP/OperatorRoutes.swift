import AuroraAPI
import AuroraTLS
import Foundation
import Hummingbird
import Logging
import Mesh
import NIOCore
import NIOHTTP1
import NIOSSL
import Secrets
import Synchronization

extension HTTPServer {
    /// Node reports (lead), the outbox, service checks, logs and subsystem restarts (docs/API.md 4.15-4.18).
    ///
    /// Registered on every agent:
    ///
    /// - `POST /api/nodes/{name}/reports`: on the lead ``addReportRoute(to:agent:lead:)``, elsewhere
    ///   421 `not_lead`;
    /// - `GET /api/outbox` (503 `starting` until the outbox is open), `GET /api/checks`,
    ///   `GET /api/subsystems`, `POST /api/subsystems/{name}/restart` (404 naming the known names):
    ///   this agent's operator token, about this agent only;
    /// - `GET /api/logs` (``LogQuery``): this agent's log ring, for its operator token or, on a
    ///   compute or edge node, a request the lead signed for it (``LeadRequestVerifier``). With
    ///   `?node=` another node's: on the lead only (421 elsewhere, before any token is checked),
    ///   for the operator token; 404 for an unknown node. The lead calls that node's agent, signed
    ///   for it, over TLS pinned to the key it joined with, or in plain HTTP only when it runs on
    ///   the lead's own machine (503 `no_tls`; 503 `no_address` while the node has reported no
    ///   address); 502 `node_unreachable` when the key does not match or the node does not answer
    ///   (5 s). The node's answer is relayed as it is.
    static func addOperatorRoutes(to router: Router<AgentRequestContext>, agent: AgentParts, role: RoleParts) {
        let maxBody = agent.maxBody, token = agent.token, state = agent.state, leadURL = agent.leadURL
        let subsystems = agent.subsystems
        // The lead (on the lead) and this node's membership (elsewhere), for calls between them.
        let lead: LeadParts?, membership: MembershipService?
        switch role {
        case .lead(let parts): (lead, membership) = (parts, nil)
        case .node(let parts): (lead, membership) = (nil, parts.membership)
        }
        let leadCalls = LeadRequestVerifier()

        // MARK: Reports from node outboxes (lead, signed)
        if let lead {
            addReportRoute(to: router, agent: agent, lead: lead)
        } else {
            leadOnly(router, API.nodeReports, "node reports", agent: agent)
        }

        // MARK: Local views (operator token)
        router.on(API.outbox) { request, _ -> Response in
            try authorize(request, token: token)
            guard let outbox = state.outbox else {
                throw Refusal(.unavailable, code: "starting", message: "the outbox is not open yet")
            }
            return try json(outbox.status, status: .ok)
        }
        router.on(API.checks) { request, _ -> Response in
            try authorize(request, token: token)
            return try json(state.checkBoard.report, status: .ok)
        }
        router.on(API.subsystems) { request, _ -> Response in
            try authorize(request, token: token)
            return try json(subsystems.list, status: .ok)
        }
        router.on(API.restartSubsystem) { request, context -> Response in
            try authorize(request, token: token)
            let name = try context.parameters.decoded("name")
            guard let subsystem = subsystems.named(name) else {
                let known = subsystems.names
                throw Refusal.notFound(
                    "no restartable subsystem '\(name)' on \(state.config.name); "
                        + (known.isEmpty ? "this agent runs none" : "known: \(known.joined(separator: ", "))"))
            }
            return try json(await subsystem.restart(), status: .ok)
        }

        // MARK: Logs: local, or another node's through the lead
        router.on(API.logs) { request, context -> Response in
            let query = try LogQuery(request)
            if let node = query.node, node != state.config.name {
                // Another node's logs are the mesh operator's: the lead's token, on the lead.
                guard let registry = lead?.registry else {
                    throw Refusal.notLead("reading another node's logs", lead: leadURL)
                }
                try authorize(request, token: token)
                _ = try await registry.node(node)
                let signer = RequestSigner(node: state.config.name, key: state.identity.signing, target: node)
                let client: LeadClient
                if let secure = await registry.agentTLS(node) {
                    // TLS to the key the node joined with, on the host its requests come from.
                    let url =
                        "https://" + (secure.host.contains(":") ? "[\(secure.host)]" : secure.host) + ":\(secure.port)"
                    let certificate: NIOSSLCertificate
                    do {
                        certificate = try await PinnedTLS.verifiedCertificate(
                            url: url, host: secure.host, port: secure.port, pin: secure.pin)
                    } catch {
                        throw Refusal(.upstreamFailed, code: "node_unreachable", message: "node '\(node)': \(error)")
                    }
                    client = LeadClient(
                        baseURL: url, signer: signer, tls: PinnedTLS.clientConfiguration(trusting: certificate))
                } else {
                    // Only where the node's own requests come from: never an address it merely claims,
                    // and in plain HTTP only on this machine.
                    guard let address = await registry.agentAddress(node) else {
                        throw Refusal(
                            .unavailable, code: "no_address",
                            message: "node '\(node)' has not reported an agent address that its requests come from")
                    }
                    guard HTTPServer.isLoopback(address.host) else {
                        throw Refusal(
                            .unavailable, code: "no_tls",
                            message:
                                "node '\(node)' serves no TLS listener, and the lead calls other machines only over TLS pinned to "
                                + "their key: start it with --tls-listen")
                    }
                    client = LeadClient(baseURL: "http://" + address.host + ":\(address.port)", signer: signer)
                }
                let answer: Result<(status: Int, body: [UInt8]), LeadCallError>
                do throws(LeadCallError) {
                    answer = .success(
                        try await client.relay(
                            .GET, Routes.logs + "?" + query.forwarded, body: [], timeout: .seconds(5)))
                } catch {
                    answer = .failure(error)
                }
                switch answer {
                case .success(let (status, bytes)):
                    return Response(
                        status: .init(code: status), headers: [.contentType: "application/json"],
                        body: .init(byteBuffer: ByteBuffer(bytes: bytes)))
                case .failure(let error):
                    throw Refusal(
                        .upstreamFailed, code: "node_unreachable",
                        message: "node '\(node)' did not answer: \(error.message)")
                }
            }
            if request.headers[.authorization] != nil || membership == nil {
                try authorize(request, token: token)
            } else {
                // The lead reading this node's logs for its operator: signed by the lead.
                try await leadCalls.verify(
                    request, key: membership?.leadSignKey, target: state.config.name, maxBody: maxBody)
            }
            let ring = LogRing.shared
            let page = LogPage(
                node: state.config.name,
                lines: ring.lines(
                    subsystem: query.subsystem, since: query.since, level: query.level,
                    limit: query.limit), subsystems: ring.subsystems)
            return try json(page, status: .ok)
        }
    }
}

extension HTTPServer {
    /// `POST /api/nodes/{name}/reports` on the lead: a node's outbox batch, signed by that node.
    ///
    /// Another node's signature is 401 and a batch that does not decode 400; the answer holds one
    /// outcome per report taken, in order (``ReportInbox``), so the node sends the rest again.
    static func addReportRoute(to router: Router<AgentRequestContext>, agent: AgentParts, lead: LeadParts) {
        let maxBody = agent.maxBody, inbox = lead.inbox, registry = lead.registry
        router.on(API.nodeReports) { request, context -> Response in
            let (name, body) = try await authenticateNode(
                request, context: context, registry: registry, maxBody: maxBody)
            let target = try context.parameters.decoded("name")
            guard name == target else {
                throw Refusal.unauthorized("node '\(name)' cannot send reports for '\(target)'")
            }
            let batch = try decode(ReportBatch.self, body, allowed: ReportBatch.fields)
            return try json(ReportAnswer(results: try await inbox.receive(from: name, batch.reports)), status: .ok)
        }
    }
}

/// `GET /api/logs` parameters.
///
/// Each parameter is checked (400 `bad_request` naming the first bad one) before any log is read.
struct LogQuery: Sendable {
    /// One subsystem's lines (a name of letters, digits, `-`, `_` and `.`, at most 64); nil, also
    /// for an empty value, for every subsystem's.
    var subsystem: String?
    /// Only lines after this log sequence number (default 0).
    var since: Int64
    /// At most this many lines, 1-10000 (default 200).
    var limit: Int
    /// The least severe level shown (default `trace`: every line).
    var level: Logger.Level
    /// Another node whose logs the lead reads for its operator; nil (also when empty) for this agent.
    var node: String?

    /// Reads the query of `GET /api/logs`.
    init(_ request: Request) throws(Refusal) {
        let parameters = request.uri.queryParameters
        subsystem = parameters.get("subsystem").flatMap { $0.isEmpty ? nil : Subsystems.canonical($0) }
        node = parameters.get("node").flatMap { $0.isEmpty ? nil : $0 }
        if let text = parameters.get("since") {
            guard let value = Int64(text), value >= 0 else {
                throw Refusal.badRequest("since must be a log sequence number (0 or more)")
            }
            since = value
        } else {
            since = 0
        }
        if let text = parameters.get("limit") {
            guard let value = Int(text), (1...10_000).contains(value) else {
                throw Refusal.badRequest("limit must be 1-10000")
            }
            limit = value
        } else {
            limit = 200
        }
        if let text = parameters.get("level") {
            guard let value = Logger.Level(rawValue: text) else {
                throw Refusal.badRequest(
                    "level must be one of \(Logger.Level.allCases.map(\.rawValue).joined(separator: ", "))")
            }
            level = value
        } else {
            level = .trace
        }
        if let subsystem,
            subsystem.count > 64
                || !subsystem.allSatisfy({ $0.isASCII && ($0.isLetter || $0.isNumber || "-_.".contains($0)) })
        {
            throw Refusal.badRequest("subsystem must be a name such as gpu-worker, membership or checks")
        }
    }

    /// The query for the node's own agent (without `node`).
    ///
    /// Built from the checked values only, so nothing the caller wrote is passed on unparsed.
    var forwarded: String {
        var items = ["since=\(since)", "limit=\(limit)", "level=\(level.rawValue)"]
        if let subsystem { items.append("subsystem=\(subsystem)") }
        return items.joined(separator: "&")
    }
}

/// Verifies requests the lead signs to a node (the lead reading this node's logs): the lead's
/// key from the membership, a fresh timestamp and an unused nonce.
///
/// The nonces it has seen are kept for the signing window (`RequestSigning.maxSkewSeconds`), so
/// a request the lead signed cannot be sent twice.
final class LeadRequestVerifier: Sendable {
    private let replay = Mutex(ReplayGuard(windowSeconds: RequestSigning.maxSkewSeconds))

    /// Admits a request the lead signed for node `target`, or throws 401 `unauthorized`: no signing
    /// headers, a request signed for another node, no lead key yet (not joined), a signature that is
    /// not the lead's over the method, the path with its query and the body, a timestamp outside the
    /// window, or a nonce already used.
    /// Returns the body it read and verified.
    @discardableResult
    func verify(_ request: Request, key: PublicKey?, target: String, maxBody: Int) async throws -> [UInt8] {
        guard let headers = try SignedHeaders.parse({ request.headers[.init($0)!] }) else {
            throw Refusal.unauthorized(
                "this call needs the operator token (Authorization: Bearer …) or the lead's signature")
        }
        // A request the lead signed for another node is not for this one (no replay across nodes).
        guard headers.target == target else {
            throw Refusal.unauthorized(
                "the lead's request names \(headers.target.map { "node '\(InputRules.printable($0))'" } ?? "no node"); "
                    + "this is '\(target)'")
        }
        guard let key else { throw Refusal.unauthorized("this node has not joined a lead yet; use the operator token") }
        var request = request
        let body = Array(try await request.collectBody(upTo: maxBody).readableBytesView)
        let path = request.uri.path + (request.uri.query.map { "?" + $0 } ?? "")
        guard headers.verifies(method: request.method.rawValue, path: path, body: body, key: key) else {
            throw Refusal.unauthorized(
                "only this node's operator or its lead may call \(request.uri.path) (the signature is not the lead's)")
        }
        let now = Int64((Date().timeIntervalSince1970 * 1000).rounded())
        let verdict = replay.withLock {
            $0.admit(
                node: headers.node, nonce: headers.nonce, timestampMilliseconds: headers.timestampMilliseconds,
                nowMilliseconds: now)
        }
        switch verdict {
        case .fresh: return body
        case .stale:
            throw Refusal.unauthorized("stale request: the timestamp is outside \(RequestSigning.maxSkewSeconds) s")
        case .replayed: throw Refusal.unauthorized("replayed request: nonce already used")
        }
    }
}

/// `GET /api/events?type=T[,T...]&node=N`: which events a stream sends. A type ending in `*`
/// (`job.*`) matches by prefix.
///
/// Without `?type=` every type passes; `node` (nil, also when empty) keeps one node's events only. A type is
/// 1-64 characters with at most one `*`, at its end; 400 `bad_request` otherwise.
struct EventFilter: Sendable {
    var types: [String]
    var node: String?

    /// Parses `?type=` (comma-separated, spaces trimmed) and `?node=`.
    init(types: String?, node: String?) throws(Refusal) {
        self.types = (types ?? "").split(separator: ",", omittingEmptySubsequences: false).map {
            $0.trimmingCharacters(in: .whitespaces)
        }
        if types == nil { self.types = [] }
        if let bad = self.types.first(where: {
            $0.isEmpty || $0.count > 64 || $0.dropLast($0.hasSuffix("*") ? 1 : 0).contains("*")
        }) {
            throw Refusal.badRequest(
                "type must be event types separated by commas, e.g. job.succeeded or job.* (got '\(bad)')")
        }
        self.node = node.flatMap { $0.isEmpty ? nil : $0 }
    }

    /// Whether a stream sends `event`: from `node` when one is set, and of one of `types` when any are.
    func matches(_ event: MeshEvent) -> Bool {
        if let node, event.node != node { return false }
        guard !types.isEmpty else { return true }
        return types.contains { $0.hasSuffix("*") ? event.type.hasPrefix(String($0.dropLast())) : event.type == $0 }
    }
}
