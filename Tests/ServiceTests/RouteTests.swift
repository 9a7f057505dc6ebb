import AuroraAPI
import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import Logging
import NIOCore
import Testing

@testable import NodeAgent

/// Every route of each role's router, in process (no sockets, no processes): who may call it,
/// what a node answers for the lead's calls, and how malformed input is refused. The store is
/// never started, so every answer here is decided before a subsystem is asked.
@Suite("Routes in process (each role's router, HummingbirdTesting)")
struct RouteTests {
    /// Calls only the lead serves: a compute or edge node answers 421 `not_lead` to them.
    static let leadOnly: Set<String> = [
        "POST /api/nodes/join", "POST /api/nodes/{name}/heartbeat", "POST /api/nodes/{name}/leave",
        "POST /api/nodes/{name}/reports",
        "DELETE /nodes/{name}", "PUT /nodes/{name}/labels", "PUT /nodes/{name}/scheduling", "PUT /nodes/{name}/company",
        "POST /api/tokens", "GET /api/tokens", "DELETE /api/tokens/{id}", "GET /api/events",
        "GET /api/gpu/assignments", "POST /api/gpu/jobs/{id}/result", "POST /api/gpu/jobs/{id}/output",
        "POST /api/gpu/jobs/{id}/stream",
        "POST /api/secrets", "GET /api/secrets", "DELETE /api/secrets/{service}/{key}",
        "GET /api/secrets/{service}/{key}/versions",
        "POST /api/secrets/{service}/{key}/rollback", "POST /api/secrets/rotate-key", "GET /api/audit",
        "POST /api/connectivity/status",
        "GET /api/backups", "POST /api/backups", "POST /api/backups/{file}/verify", "POST /api/backups/{file}/restore",
        "GET /api/lead/handoff", "POST /api/lead/step-down", "POST /api/lead/rejoin",
        "POST /api/keys", "GET /api/keys", "DELETE /api/keys/{id}", "GET /api/keys/usage",
    ]
    /// Calls that only a node's signature may make (a bearer token is not enough).
    static let signedOnly: Set<String> = [
        "POST /api/nodes/{name}/heartbeat", "POST /api/nodes/{name}/leave", "POST /api/nodes/{name}/reports",
        "GET /api/gpu/assignments", "POST /api/gpu/jobs/{id}/result", "POST /api/gpu/jobs/{id}/output",
        "POST /api/gpu/jobs/{id}/stream",
        "POST /api/connectivity/status", "POST /api/lead/step-down", "POST /api/lead/failsafe",
        "POST /api/lead/rejoin",
    ]
    /// Calls without authentication: probes, metrics, the document, load-balancer checks.
    static let open: Set<String> = [
        "GET /health", "GET /metrics", "GET /api/openapi.json", "GET /postgres/primary", "GET /postgres/replica",
        "GET /postgres/read-only", "GET /api/lead/handoff", "GET /api/lead/followed", "GET /ui",
        "GET /ui/assets/{file}",
    ]

    struct Answer {
        var status: Int
        var error: ErrorResponse.Detail?
        var body: String
    }

    /// The routes of `router` as `METHOD /path/{param}` (the document's spelling).
    static func routes(_ router: Router<AgentRequestContext>) -> [String] {
        router.routes.map { route in
            let path = route.path.description.split(separator: "/").map {
                $0.hasPrefix(":") ? "{\($0.dropFirst())}" : String($0)
            }
            return "\(route.method.rawValue) /" + path.joined(separator: "/")
        }.sorted()
    }

    /// A concrete URI for a route's path.
    static func uri(_ route: String) -> String {
        let path = String(route.split(separator: " ")[1])
        return path.replacingOccurrences(of: "{name}", with: "gpu-1").replacingOccurrences(of: "{id}", with: "j-1")
            .replacingOccurrences(of: "{service}", with: "db").replacingOccurrences(of: "{key}", with: "password")
            .replacingOccurrences(of: "{file}", with: "aurora-20260101T000000Z.dump")
    }

    static func call(
        _ router: Router<AgentRequestContext>, _ method: HTTPRequest.Method, _ uri: String, token: String? = nil,
        headers extra: HTTPFields = [:], body: String? = nil
    ) async throws -> Answer {
        var headers = extra
        if let token { headers[.authorization] = "Bearer \(token)" }
        if body != nil { headers[.contentType] = "application/json" }
        let sent = headers
        let app = Application(router: router, logger: Logger(label: "test", factory: { _ in SwiftLogNoOpLogHandler() }))
        return try await app.test(.router) { client in
            try await client.execute(uri: uri, method: method, headers: sent, body: body.map { ByteBuffer(string: $0) })
            { response in
                let text = String(buffer: response.body)
                return Answer(
                    status: Int(response.status.code),
                    error: try? JSONDecoder().decode(ErrorResponse.self, from: Data(text.utf8)).error,
                    body: text)
            }
        }
    }

    static func call(_ router: Router<AgentRequestContext>, route: String, token: String? = nil) async throws -> Answer
    {
        let method = HTTPRequest.Method(String(route.split(separator: " ")[0]))!
        return try await call(router, method, uri(route), token: token)
    }

    static func scratch() throws -> URL {
        let url = FileManager.default.temporaryDirectory.appendingPathComponent("aurora-routes-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
        return url
    }

    static let logger = Logger(label: "test", factory: { _ in SwiftLogNoOpLogHandler() })

    @Test(
        "on the lead: with no credentials or a stranger's token every call but the open ones is 401; a node's calls need its signature"
    )
    func leadAuthentication() async throws {
        let directory = try Self.scratch()
        defer { try? FileManager.default.removeItem(at: directory) }
        let router = try RouterFixture.router(role: "lead", in: directory, logger: Self.logger)
        let token = try RouterFixture.adminToken(in: directory)
        let routes = Self.routes(router)
        #expect(routes.count > 40)
        for route in routes
        where !Self.open.contains(route) && route != "POST /api/nodes/join" && route != "POST /ui/session" {
            for presented in [nil, "aur_" + String(repeating: "0", count: 64)] {
                let answer = try await Self.call(router, route: route, token: presented)
                #expect(
                    answer.status == 401 && answer.error?.code == "unauthorized",
                    "\(route) with \(presented == nil ? "nothing" : "a stranger's token"): \(answer.status) \(answer.body)"
                )
            }
        }
        for route in Self.signedOnly {
            let answer = try await Self.call(router, route: route, token: token)
            #expect(
                answer.status == 401 && answer.error?.message.contains("X-Aurora") == true,
                "\(route) with the operator token, not a signature: \(answer.status) \(answer.body)")
        }
        // Joining needs no credential but a body; the open calls answer without one.
        let join = try await Self.call(router, .post, "/api/nodes/join")
        #expect(join.status == 400 && join.error?.code == "bad_request")
        // Signing in to the console needs no credential but a token in a JSON body.
        let signIn = try await Self.call(router, .post, "/ui/session")
        #expect(signIn.status == 400 && signIn.error?.code == "bad_request")
        for route in Self.open {
            let answer = try await Self.call(router, route: route)
            // (A console file that does not exist: the route is open, the file is not found.)
            if route == "GET /ui/assets/{file}" {
                #expect(answer.status == 404 && answer.error?.code == "not_found", "\(route): \(answer.status)")
                continue
            }
            #expect([200, 503].contains(answer.status), "\(route): \(answer.status)")
            // (Route tests keep no lead terms: the handoff answers 503 starting here.)
            #expect(
                answer.status != 503 || route.hasPrefix("GET /postgres") || route == "GET /health"
                    || route.hasPrefix("GET /api/lead/"))
        }
    }

    @Test(
        "on a compute node: the lead's calls are 421 not_lead before any credential; the rest need the node's operator token"
    )
    func nodeRoles() async throws {
        let directory = try Self.scratch()
        defer { try? FileManager.default.removeItem(at: directory) }
        let router = try RouterFixture.router(role: "compute", in: directory, logger: Self.logger)
        let token = try RouterFixture.adminToken(in: directory)
        let routes = Self.routes(router)
        #expect(
            Self.leadOnly.isSubset(of: Set(routes)),
            "lead-only calls the router does not serve: \(Self.leadOnly.subtracting(routes).sorted())")
        for route in routes {
            let answer = try await Self.call(router, route: route)
            if Self.leadOnly.contains(route) {
                #expect(
                    answer.status == 421 && answer.error?.code == "not_lead"
                        && answer.error?.message.contains("http://127.0.0.1:9") == true,
                    "\(route): \(answer.status) \(answer.body)")
            } else if !Self.open.contains(route) && route != "POST /ui/session" {
                #expect(
                    answer.status == 401 && answer.error?.code == "unauthorized",
                    "\(route) without a token: \(answer.status) \(answer.body)")
            }
        }
        // A node that never followed a handoff has none to show.
        let followed = try await Self.call(router, .get, "/api/lead/followed")
        #expect(followed.status == 404 && followed.error?.code == "no_handoff", "\(followed.status) \(followed.body)")
        // Forwarded reads find the lead away (nothing listens on its port) and say so.
        for route in [
            "GET /nodes", "GET /api/gpu/jobs", "GET /api/gpu/status", "GET /api/gpu/queue",
            "GET /api/connectivity/status",
            "GET /api/postgres/replicas", "GET /topology", "GET /v1/models",
        ] {
            let answer = try await Self.call(router, route: route, token: token)
            #expect(
                answer.status == 503 && answer.error?.code == "lead_unreachable",
                "\(route): \(answer.status) \(answer.body)")
        }
        // Path parameters arrive percent-decoded: an escaped '/' stays inside one segment.
        let escaped = try await Self.call(router, .post, "/api/subsystems/a%2Fb%3Fc/restart", token: token)
        #expect(
            escaped.status == 404 && escaped.error?.message.contains("'a/b?c'") == true,
            "\(escaped.status) \(escaped.body)")
        // Local views answer with the token.
        for route in [
            "GET /api/agent", "GET /api/checks", "GET /api/subsystems", "GET /api/logs", "GET /api/wireguard",
        ] {
            let answer = try await Self.call(router, route: route, token: token)
            #expect(answer.status == 200, "\(route): \(answer.status) \(answer.body)")
        }
    }

    @Test(
        "malformed input is refused at the edge with 400 (or 413) naming what is wrong, before any subsystem is asked")
    func malformedInput() async throws {
        let directory = try Self.scratch()
        defer { try? FileManager.default.removeItem(at: directory) }
        let router = try RouterFixture.router(role: "lead", in: directory, logger: Self.logger)
        let token = try RouterFixture.adminToken(in: directory)
        let cases: [(HTTPRequest.Method, String, String?, String)] = [
            (.post, "/api/tokens", #"{"profile":"compute","colour":"red"}"#, "unknown field 'colour'"),
            (.post, "/api/tokens", #"{"profile":"compute","ttl_s":"soon"}"#, "ttl_s"),
            (.post, "/api/tokens", "[1]", "not a JSON object"),
            (.put, "/nodes/gpu-1/labels", "{}", "missing field 'labels'"),
            (.put, "/nodes/gpu-1/company", "{}", "missing field 'company'"),
            (.put, "/nodes/gpu-1/company", #"{"company":"acme","role":"lead"}"#, "unknown field 'role'"),
            (.delete, "/nodes/gpu-1?keep=maybe", nil, "keep must be true or false"),
            (.post, "/api/gpu/jobs", #"{"kind":"exec","payload":{"argv":["a\u0001"]}}"#, "control character"),
            (.post, "/api/gpu/jobs", nil, "needs a JSON body"),
            (.get, "/api/gpu/jobs?limit=0", nil, "limit must be 1-10000"),
            (.get, "/api/gpu/jobs?state=sleeping", nil, "state must be one of"),
            (.get, "/api/gpu/jobs/j-1?wait=999", nil, "wait must be 0-300"),
            (.post, "/api/gpu/generate", #"{"model":"m","prompt":"p","wait_s":-1}"#, "wait_s must be"),
            (.get, "/api/events?since=-1", nil, "since / Last-Event-ID"),
            (.get, "/api/events?since=0&type=j*b", nil, "type must be event types"),
            (.get, "/api/audit?limit=0", nil, "limit must be 1-100000"),
            (.post, "/api/secrets", #"{"service":"db"}"#, "missing field"),
            (.get, "/api/logs?level=loud", nil, "level must be one of"),
            (.get, "/api/wireguard/config?show_private=maybe", nil, "show_private must be true or false"),
            (.get, "/postgres/replica?lag=1e20b", nil, "lag must be a duration"),
            (.get, "/postgres/read-only?lag=99999999999999999999GB", nil, "lag must be a duration"),
        ]
        for (method, uri, body, words) in cases {
            let answer = try await Self.call(router, method, uri, token: token, body: body)
            #expect(
                answer.status == 400 && answer.error?.code == "bad_request"
                    && answer.error?.message.contains(words) == true,
                "\(method) \(uri): \(answer.status) \(answer.body)")
        }
        let big = String(repeating: "x", count: (1 << 20) + 1)  // http.max_body_bytes: 1 MiB by default
        let tooLarge = try await Self.call(
            router, .post, "/api/secrets", token: token, body: #"{"value":""# + big + #""}"#)
        #expect(tooLarge.status == 413 && tooLarge.error?.code == "payload_too_large")
        let unknown = try await Self.call(router, .get, "/api/nowhere", token: token)
        #expect(unknown.status == 404 && unknown.error?.code == "not_found")
    }
}
