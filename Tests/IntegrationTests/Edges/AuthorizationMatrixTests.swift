import AuroraAPI
import AuroraTestKit
import Foundation
import Testing

#if canImport(Glibc)
    import Glibc
#endif

/// Every route of the lead, called as nobody, with a stranger's token (another agent's operator
/// token is one here), as a joined node (its signature) and as the mesh admin: who gets in is the
/// authorization model of docs/API.md (section 3a), checked in one table.
@Suite("Authorization matrix (every route × every kind of caller, real lead)", .serialized)
struct AuthorizationMatrixTests {
    /// Who a route lets in.
    enum Access: CustomStringConvertible {
        /// Anyone (no credential needed).
        case anyone
        /// The mesh admin's token only.
        case admin
        /// The mesh admin, or a joined node's signature.
        case adminOrNode
        /// A node's signature only (worker and reporting calls).
        case node

        var description: String {
            switch self {
            case .anyone: "anyone"
            case .admin: "admin"
            case .adminOrNode: "admin or node"
            case .node: "node"
            }
        }
    }

    struct Route: CustomStringConvertible {
        var method: String
        var path: String
        var body: String?
        var access: Access
        /// The least API token role that gets in (admin: only an admin-role token; nil: no token).
        var role: APIRole? = .admin
        var description: String { "\(method) \(path)" }

        init(method: String, path: String, body: String? = nil, access: Access, role: APIRole? = nil) {
            self.method = method
            self.path = path
            self.body = body
            self.access = access
            switch access {
            case .anyone: self.role = .read
            case .node: self.role = nil
            case .admin, .adminOrNode: self.role = role ?? .admin
            }
        }
    }

    /// Every route the lead's router has (the OpenAPI route-set test keeps this list honest
    /// against the router), with a harmless request each.
    static let routes: [Route] = [
        Route(method: "GET", path: "/health", access: .anyone),
        Route(method: "GET", path: "/metrics", access: .anyone),
        Route(method: "GET", path: "/postgres/primary", access: .anyone),
        Route(method: "GET", path: "/postgres/replica", access: .anyone),
        Route(method: "GET", path: "/postgres/read-only", access: .anyone),
        Route(method: "GET", path: "/api/lead/followed", access: .anyone),
        Route(method: "GET", path: "/ui/", access: .anyone),
        Route(method: "GET", path: "/ui/assets/app.js", access: .anyone),
        Route(method: "GET", path: "/api/prometheus/targets", access: .admin, role: .read),
        Route(method: "GET", path: "/api/agent", access: .admin),
        Route(method: "GET", path: "/nodes", access: .adminOrNode, role: .read),
        Route(method: "GET", path: "/nodes/matrix-node", access: .adminOrNode, role: .read),
        Route(method: "GET", path: "/topology", access: .adminOrNode, role: .read),
        Route(method: "GET", path: "/v1/models", access: .adminOrNode, role: .read),
        Route(
            method: "POST", path: "/v1/chat/completions", body: #"{"model":"m","messages":[]}"#, access: .adminOrNode,
            role: .submit),
        Route(
            method: "POST", path: "/v1/completions", body: #"{"model":"m","prompt":"p"}"#, access: .adminOrNode,
            role: .submit),
        Route(
            method: "POST", path: "/v1/embeddings", body: #"{"model":"m","input":"i"}"#, access: .adminOrNode,
            role: .submit),
        Route(method: "POST", path: "/api/keys", body: #"{"app":"matrix"}"#, access: .admin),
        Route(method: "GET", path: "/api/keys", access: .admin),
        Route(method: "GET", path: "/api/keys/usage", access: .admin),
        Route(method: "DELETE", path: "/api/keys/gk_000000000000", access: .admin),
        Route(method: "DELETE", path: "/nodes/nobody-here", access: .admin),
        Route(method: "PUT", path: "/nodes/nobody-here/labels", body: #"{"labels":{"zone":"x"}}"#, access: .admin),
        Route(method: "PUT", path: "/nodes/nobody-here/company", body: #"{"company":"acme"}"#, access: .admin),
        Route(method: "POST", path: "/api/tokens", body: #"{"profile":"compute","ttl_s":60}"#, access: .admin),
        Route(method: "GET", path: "/api/tokens", access: .admin),
        Route(method: "DELETE", path: "/api/tokens/jt_000000000000", access: .admin),
        Route(method: "GET", path: "/api/events?follow=false", access: .admin, role: .read),
        Route(
            method: "POST", path: "/api/gpu/jobs",
            body:
                #"{"kind":"generate","payload":{"model":"m","prompt":"p"},"requirements":{"min_vram_mb":0,"labels":{"zone":"none"}}}"#,
            access: .adminOrNode, role: .submit),
        Route(
            method: "POST", path: "/api/gpu/generate", body: #"{"model":"m","prompt":"p","labels":{"zone":"none"}}"#,
            access: .adminOrNode, role: .submit),
        Route(method: "GET", path: "/api/gpu/jobs", access: .adminOrNode, role: .read),
        Route(
            method: "GET", path: "/api/gpu/jobs/00000000-0000-0000-0000-000000000000", access: .adminOrNode, role: .read
        ),
        Route(
            method: "DELETE", path: "/api/gpu/jobs/00000000-0000-0000-0000-000000000000", access: .adminOrNode,
            role: .submit),
        Route(method: "GET", path: "/api/gpu/status", access: .adminOrNode, role: .read),
        Route(method: "GET", path: "/api/gpu/queue", access: .adminOrNode, role: .read),
        Route(method: "GET", path: "/api/gpu/assignments?wait=0", access: .node),
        Route(
            method: "POST", path: "/api/gpu/jobs/00000000-0000-0000-0000-000000000000/result",
            body: #"{"attempt":1,"outcome":"failed"}"#, access: .node),
        Route(
            method: "POST", path: "/api/gpu/jobs/00000000-0000-0000-0000-000000000000/stream",
            body: #"{"attempt":1,"seq":0,"chunks":[],"done":false}"#, access: .node),
        Route(method: "POST", path: "/api/nodes/matrix-node/reports", body: #"{"reports":[]}"#, access: .node),
        Route(method: "POST", path: "/api/nodes/matrix-node/heartbeat", body: nil, access: .node),
        Route(
            method: "POST", path: "/api/secrets", body: #"{"service":"m","key_name":"k","value":"v","scope":"global"}"#,
            access: .admin),
        Route(method: "GET", path: "/api/secrets", access: .admin),
        Route(method: "GET", path: "/api/secrets/none/none", access: .adminOrNode),
        Route(method: "DELETE", path: "/api/secrets/none/none", access: .admin),
        Route(method: "GET", path: "/api/secrets/none/none/versions", access: .admin),
        Route(
            method: "POST", path: "/api/secrets/none/none/rollback", body: #"{"version":1,"scope":"global"}"#,
            access: .admin),
        Route(method: "POST", path: "/api/secrets/rotate-key", access: .admin),
        Route(method: "GET", path: "/api/audit", access: .admin),
        Route(method: "POST", path: "/api/connectivity/status", body: #"{"results":[]}"#, access: .node),
        Route(method: "GET", path: "/api/connectivity/status", access: .adminOrNode, role: .read),
        Route(method: "GET", path: "/api/connectivity/health", access: .adminOrNode, role: .read),
        Route(method: "GET", path: "/api/postgres/health", access: .admin),
        Route(method: "GET", path: "/api/postgres/replicas", access: .adminOrNode, role: .read),
        Route(method: "GET", path: "/api/backups", access: .admin),
        Route(method: "POST", path: "/api/backups/none.dump/verify", access: .admin),
        Route(
            method: "POST", path: "/api/backups/none.dump/restore", body: #"{"into":"matrix_restore"}"#, access: .admin),
        Route(method: "GET", path: "/api/outbox", access: .admin),
        Route(method: "GET", path: "/api/checks", access: .admin),
        Route(method: "GET", path: "/api/subsystems", access: .admin),
        Route(method: "POST", path: "/api/subsystems/none/restart", access: .admin),
        Route(method: "GET", path: "/api/logs", access: .admin),
        Route(method: "GET", path: "/api/wireguard", access: .admin),
        Route(method: "GET", path: "/api/wireguard/config", access: .admin),
        Route(method: "POST", path: "/api/nodes/matrix-node/leave", access: .node),
    ]

    @Test(
        "nobody, a stranger's token, a joined node, read, submit and admin API tokens and the mesh admin on every route"
    )
    func matrix() async throws {
        let scratch = try ScratchDirectory("authz")
        defer { scratch.remove() }
        // Many refusals from one address on purpose: the failed-authentication limit is lifted.
        let file = scratch.path + "/lead.yaml"
        try "limits: {auth_failures_per_min: 1000000, requests_per_s: 100000, burst: 100000}\n".write(
            toFile: file, atomically: true, encoding: .utf8)
        let lead = try AgentHarness(
            profile: "lead", dataDir: scratch.path + "/lead", extraArguments: ["--name", "lead-1", "--config", file],
            outputDirectory: scratch.path)
        defer { if lead.process.isRunning { lead.process.signal(SIGKILL) } }
        try await lead.waitHealthy()
        let adminToken = try lead.adminToken
        let created = try await http(
            lead.baseURL + Routes.tokens, method: "POST", headers: ["Authorization": "Bearer \(adminToken)"],
            body: Array(#"{"profile":"compute"}"#.utf8)
        ).decode(TokenCreated.self)
        let node = SimulatedNode(name: "matrix-node")
        #expect(
            try await http(lead.baseURL + Routes.join, method: "POST", body: try node.joinBody(token: created.token))
                .status == 201)
        let heartbeat = String(decoding: try node.heartbeatBody(cpuCores: 4), as: UTF8.self)
        // Another agent's operator token is a stranger's token here.
        let strangerToken = "aur_" + String(repeating: "ab", count: 32)
        // Scoped API tokens of each role.
        var apiTokens: [APIRole: String] = [:]
        for role in APIRole.allCases {
            apiTokens[role] = try await http(
                lead.baseURL + Routes.tokens, method: "POST", headers: ["Authorization": "Bearer \(adminToken)"],
                body: Array(try APICoding.encoder().encode(TokenCreateRequest(apiRole: role)))
            ).decode(APITokenCreated.self).token
        }

        // API token requests: bad role, out-of-range lifetime, join-only fields, a control character — 400, nothing stored.
        for bad in [
            #"{"kind":"api","role":"root"}"#, #"{"kind":"api","role":"read","ttl_s":99999999999}"#,
            #"{"kind":"api","role":"read","ttl_s":0}"#,
            #"{"kind":"api","role":"read","profile":"compute"}"#, #"{"kind":"api","role":"read","company":"a\u001bb"}"#,
            #"{"kind":"api"}"#,
        ] {
            let answer = try await http(
                lead.baseURL + Routes.tokens, method: "POST", headers: ["Authorization": "Bearer \(adminToken)"],
                body: Array(bad.utf8))
            #expect(answer.status == 400, "\(bad): \(answer.status) \(answer.text)")
        }
        let stored = try await http(lead.baseURL + Routes.tokens, headers: ["Authorization": "Bearer \(adminToken)"])
            .decode(TokenList.self)
        #expect(stored.apiTokens?.count == APIRole.allCases.count, "refused requests stored no token")
        // A read token cannot make tokens; a revoked admin token is refused at once.
        #expect(
            try await http(
                lead.baseURL + Routes.tokens, method: "POST", headers: ["Authorization": "Bearer \(apiTokens[.read]!)"],
                body: Array(#"{"kind":"api","role":"admin"}"#.utf8)
            ).status == 401)
        let extraAdmin = try await http(
            lead.baseURL + Routes.tokens, method: "POST", headers: ["Authorization": "Bearer \(adminToken)"],
            body: Array(try APICoding.encoder().encode(TokenCreateRequest(apiRole: .admin)))
        ).decode(APITokenCreated.self)
        #expect(
            try await http(lead.baseURL + Routes.agent, headers: ["Authorization": "Bearer \(extraAdmin.token)"]).status
                == 200)
        #expect(
            try await http(
                lead.baseURL + Routes.tokens + "/" + extraAdmin.info.id, method: "DELETE",
                headers: ["Authorization": "Bearer \(adminToken)"]
            ).status == 200)
        #expect(
            try await http(lead.baseURL + Routes.agent, headers: ["Authorization": "Bearer \(extraAdmin.token)"]).status
                == 401)

        // A console session signed in with each token: its cookie (with the session's CSRF token)
        // must get in exactly where its token does.
        var sessions: [(String, [String: String], (Route) -> Bool)] = []
        for (role, token) in apiTokens.sorted(by: { $0.key < $1.key }) {
            sessions.append(
                (
                    "a console session (\(role.rawValue))", try await Self.consoleHeaders(lead.baseURL, token: token),
                    {
                        $0.role.map { role >= $0 } ?? false
                    }
                ))
        }
        sessions.append(
            (
                "a console session (operator)", try await Self.consoleHeaders(lead.baseURL, token: adminToken),
                {
                    $0.access == .anyone || $0.access == .admin || $0.access == .adminOrNode
                }
            ))

        var failures: [String] = []
        for route in Self.routes {
            let body = Array((route.path.hasSuffix("/heartbeat") ? heartbeat : route.body ?? "").utf8)
            func call(_ headers: [String: String]) async throws -> Int {
                var headers = headers
                if !body.isEmpty { headers["Content-Type"] = "application/json" }
                return try await http(
                    lead.baseURL + route.path, method: route.method, headers: headers, body: body.isEmpty ? nil : body,
                    timeout: .seconds(30)
                ).status
            }
            let anonymous = try await call([:])
            let stranger = try await call(["Authorization": "Bearer \(strangerToken)"])
            let signed = try await call(
                node.headers(method: route.method, path: route.path, body: body).filter { $0.key != "Content-Type" })
            var scoped: [APIRole: Int] = [:]
            for (role, token) in apiTokens { scoped[role] = try await call(["Authorization": "Bearer \(token)"]) }
            let admin = try await call(["Authorization": "Bearer \(adminToken)"])
            let (anonymousIn, strangerIn, nodeIn, adminIn): (Bool, Bool, Bool, Bool) =
                switch route.access {
                case .anyone: (true, true, true, true)
                case .admin: (false, false, false, true)
                case .adminOrNode: (false, false, true, true)
                case .node: (false, false, true, false)
                }
            // In: anything but 401 and 403; out: 401 (403 where the caller is known but not allowed).
            func check(_ who: String, _ status: Int, _ allowed: Bool) {
                let got = !(status == 401 || status == 403)
                if route.access == .anyone {
                    if status == 401 || status == 403 { failures.append("\(route) as \(who): \(status)") }; return
                }
                if got != allowed {
                    failures.append(
                        "\(route) as \(who): \(status), expected \(allowed ? "in" : "refused") (\(route.access))")
                }
                if status >= 500 { failures.append("\(route) as \(who): \(status)") }
            }
            check("nobody", anonymous, anonymousIn)
            check("a stranger's token", stranger, strangerIn)
            check("the node", signed, nodeIn)
            check("the admin", admin, adminIn)
            for role in APIRole.allCases {
                check("an API token (\(role.rawValue))", scoped[role]!, route.role.map { role >= $0 } ?? false)
            }
            for (who, headers, allowed) in sessions { check(who, try await call(headers), allowed(route)) }
        }
        #expect(failures.isEmpty, "\(failures.joined(separator: "\n"))")
        #expect(lead.process.isRunning)
    }

    /// Signs in to the console with `token`: the headers a browser sends with its session (the
    /// cookie, and the CSRF token the console adds to calls that change something).
    static func consoleHeaders(_ base: String, token: String) async throws -> [String: String] {
        let answer = try await http(
            base + API.consoleSignIn.pattern, method: "POST", headers: ["Content-Type": "application/json"],
            body: Array(try APICoding.encoder().encode(ConsoleSignIn(token: token))))
        #expect(answer.status == 201, "console sign-in: \(answer.status) \(answer.text)")
        let info = try answer.decode(ConsoleSessionInfo.self)
        let cookie = try #require(
            answer.headers["set-cookie"]?.split(separator: ";").first.map(String.init))
        return ["Cookie": cookie, ConsoleWire.csrfHeader: info.csrf]
    }
}
