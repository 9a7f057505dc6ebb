import AuroraAPI
import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import Logging
import NIOCore
import Testing

@testable import NodeAgent

/// The web console's routes in process: its files, signing in and out, and the session cookie
/// standing for its token on other routes, with the attacks a browser session invites (a wrong
/// or forged token, a forged cookie, a call without the CSRF token or from another origin,
/// malformed and oversized bodies).
@Suite("Console routes in process (sign-in, cookie, CSRF, files)")
struct ConsoleRouteTests {
    struct Answer {
        var status: Int
        var headers: HTTPFields
        var body: String
        var code: String? { try? JSONDecoder().decode(ErrorResponse.self, from: Data(body.utf8)).error.code }
    }

    static func call(
        _ router: Router<AgentRequestContext>, _ method: HTTPRequest.Method, _ uri: String,
        headers: HTTPFields = [:], body: String? = nil
    ) async throws -> Answer {
        let app = Application(router: router, logger: RouteTests.logger)
        return try await app.test(.router) { client in
            try await client.execute(
                uri: uri, method: method, headers: headers, body: body.map { ByteBuffer(string: $0) }
            ) { response in
                Answer(
                    status: Int(response.status.code), headers: response.headers, body: String(buffer: response.body))
            }
        }
    }

    static let json: HTTPFields = [.contentType: "application/json"]

    /// Signs in with `token`: the cookie header value and the session.
    static func signIn(_ router: Router<AgentRequestContext>, token: String) async throws -> (
        String, ConsoleSessionInfo
    ) {
        let answer = try await call(router, .post, "/ui/session", headers: json, body: #"{"token":"\#(token)"}"#)
        #expect(answer.status == 201, "\(answer.body)")
        let setCookie = try #require(answer.headers[.setCookie])
        let info = try JSONDecoder().decode(ConsoleSessionInfo.self, from: Data(answer.body.utf8))
        return (String(setCookie.split(separator: ";")[0]), info)
    }

    @Test(
        "signing in sets an HttpOnly SameSite=Strict cookie; the cookie reads like the token; a change needs the CSRF token and this origin; signing out ends it"
    )
    func sessionLifecycle() async throws {
        let directory = try RouteTests.scratch()
        defer { try? FileManager.default.removeItem(at: directory) }
        let router = try RouterFixture.router(role: "compute", in: directory, logger: RouteTests.logger)
        let token = try RouterFixture.adminToken(in: directory)

        let signedIn = try await Self.call(
            router, .post, "/ui/session", headers: Self.json, body: #"{"token":"\#(token)"}"#)
        #expect(signedIn.status == 201)
        let setCookie = try #require(signedIn.headers[.setCookie])
        #expect(setCookie.hasPrefix("aurora_session=aurses_"))
        for attribute in ["HttpOnly", "SameSite=Strict", "Path=/", "Max-Age=28800"] {
            #expect(setCookie.contains(attribute), "\(setCookie) lacks \(attribute)")
        }
        #expect(!setCookie.contains("Secure"), "plain HTTP on loopback: no Secure attribute")
        #expect(!setCookie.contains(token) && !signedIn.body.contains(token), "the token comes back")
        let (cookie, info) = try await Self.signIn(router, token: token)
        #expect(
            info.role == .admin && info.caller == "operator" && info.agentRole == "compute" && info.csrf.count == 64)

        // The cookie stands for the token on the agent's own routes.
        let agent = try await Self.call(router, .get, "/api/agent", headers: [.cookie: "theme=dark; " + cookie])
        #expect(agent.status == 200, "\(agent.body)")
        let session = try await Self.call(router, .get, "/ui/session", headers: [.cookie: cookie])
        #expect(session.status == 200 && session.body.contains(info.csrf))

        // A change (sign-out) without the CSRF token, with a wrong one, or from another origin: 403, nothing ends.
        let csrf = HTTPField.Name(ConsoleWire.csrfHeader)!
        for headers: HTTPFields in [
            [.cookie: cookie], [.cookie: cookie, csrf: String(repeating: "0", count: 64)],
            [.cookie: cookie, csrf: info.csrf, .origin: "http://evil.example"],
        ] {
            let refused = try await Self.call(router, .delete, "/ui/session", headers: headers)
            #expect(refused.status == 403 && refused.code == "csrf", "\(headers): \(refused.status) \(refused.body)")
        }
        #expect(try await Self.call(router, .get, "/api/agent", headers: [.cookie: cookie]).status == 200)
        // Another session's CSRF token does not do either.
        let (otherCookie, other) = try await Self.signIn(router, token: token)
        let crossed = try await Self.call(router, .delete, "/ui/session", headers: [.cookie: cookie, csrf: other.csrf])
        #expect(crossed.status == 403)

        // A header of its own wins over the cookie: a stranger's token with a good cookie is refused.
        let stranger = try await Self.call(
            router, .get, "/api/agent",
            headers: [.cookie: cookie, .authorization: "Bearer aur_" + String(repeating: "0", count: 64)])
        #expect(stranger.status == 401)

        // Signing out: 204, the cookie cleared, the session dead everywhere; the other lives on.
        let out = try await Self.call(router, .delete, "/ui/session", headers: [.cookie: cookie, csrf: info.csrf])
        #expect(out.status == 204)
        #expect(out.headers[.setCookie]?.contains("Max-Age=0") == true)
        #expect(try await Self.call(router, .get, "/api/agent", headers: [.cookie: cookie]).status == 401)
        #expect(try await Self.call(router, .get, "/ui/session", headers: [.cookie: cookie]).status == 401)
        #expect(try await Self.call(router, .get, "/api/agent", headers: [.cookie: otherCookie]).status == 200)
        // A compute node passes a token it does not know on to the lead, but never one of its own
        // console sessions: an ended one is refused here.
        let ended = cookie.dropFirst("aurora_session=".count)
        let forwarded = try await Self.call(router, .get, "/api/gpu/jobs", headers: [.authorization: "Bearer \(ended)"])
        #expect(forwarded.status == 401 && forwarded.body.contains("console session has ended"), "\(forwarded.body)")
        let live = try await Self.call(router, .get, "/api/gpu/jobs", headers: [.cookie: otherCookie])
        #expect(live.status != 401, "the node's own session goes out signed as the node: \(live.status) \(live.body)")
    }

    @Test(
        "sign-in refuses a wrong token, a session id, a non-JSON or malformed body, an unknown field, a control character, an oversized body and another origin"
    )
    func signInAttacks() async throws {
        let directory = try RouteTests.scratch()
        defer { try? FileManager.default.removeItem(at: directory) }
        let router = try RouterFixture.router(role: "lead", in: directory, logger: RouteTests.logger)
        let token = try RouterFixture.adminToken(in: directory)
        let (cookie, _) = try await Self.signIn(router, token: token)
        let sessionID = String(cookie.dropFirst("aurora_session=".count))
        let cases: [(String, HTTPFields, String, Int, String)] = [
            (
                "a wrong token", Self.json, #"{"token":"aur_\#(String(repeating: "1", count: 64))"}"#, 401,
                "unauthorized"
            ),
            ("a session id as the token", Self.json, #"{"token":"\#(sessionID)"}"#, 401, "unauthorized"),
            ("an empty token", Self.json, #"{"token":""}"#, 401, "unauthorized"),
            (
                "a 300-byte token", Self.json, #"{"token":"\#(String(repeating: "a", count: 300))"}"#, 401,
                "unauthorized"
            ),
            ("no content type", [:], #"{"token":"\#(token)"}"#, 400, "bad_request"),
            ("a form", [.contentType: "application/x-www-form-urlencoded"], "token=" + token, 400, "bad_request"),
            ("not JSON", Self.json, "{token", 400, "bad_request"),
            ("an unknown field", Self.json, #"{"token":"\#(token)","role":"admin"}"#, 400, "bad_request"),
            ("a number", Self.json, #"{"token":5}"#, 400, "bad_request"),
            ("a control character", Self.json, #"{"token":"aur_\u0000"}"#, 400, "bad_request"),
            (
                "a body over 4 KiB", Self.json, #"{"token":"\#(String(repeating: "a", count: 5000))"}"#, 413,
                "payload_too_large"
            ),
            (
                "another origin", [.contentType: "application/json", .origin: "https://evil.example"],
                #"{"token":"\#(token)"}"#, 403, "csrf"
            ),
        ]
        for (what, headers, body, status, code) in cases {
            let answer = try await Self.call(router, .post, "/ui/session", headers: headers, body: body)
            #expect(answer.status == status && answer.code == code, "\(what): \(answer.status) \(answer.body)")
            #expect(answer.headers[.setCookie] == nil, "\(what) set a cookie")
        }
        // Forged and malformed cookies are no session: the call is as if it had none.
        for forged in [
            "aurora_session=aurses_" + String(repeating: "0", count: 64), "aurora_session=" + token,
            "aurora_session=aurses_../../x", "aurora_session=" + String(repeating: "a", count: 9000),
        ] {
            let answer = try await Self.call(router, .get, "/api/agent", headers: [.cookie: forged])
            #expect(answer.status == 401, "\(forged.prefix(40)): \(answer.status)")
        }
    }

    @Test("the page and files are served with a strict policy and tags; unknown and crafted names are 404")
    func files() async throws {
        let directory = try RouteTests.scratch()
        defer { try? FileManager.default.removeItem(at: directory) }
        let router = try RouterFixture.router(role: "compute", in: directory, logger: RouteTests.logger)
        let page = try await Self.call(router, .get, "/ui/")
        #expect(page.status == 200 && page.headers[.contentType] == "text/html; charset=utf-8")
        #expect(try await Self.call(router, .get, "/ui").body == page.body)
        #expect(page.body.contains("/ui/assets/app.js"))
        let policy = try #require(page.headers[.contentSecurityPolicy])
        #expect(
            policy.contains("script-src 'self'") && policy.contains("frame-ancestors 'none'")
                && !policy.contains("unsafe"))
        #expect(page.headers[.xContentTypeOptions] == "nosniff")
        for (file, type) in [("app.js", "text/javascript"), ("app.css", "text/css"), ("icon.svg", "image/svg+xml")] {
            let answer = try await Self.call(router, .get, "/ui/assets/" + file)
            #expect(answer.status == 200 && answer.headers[.contentType]?.hasPrefix(type) == true, "\(file)")
            let tag = try #require(answer.headers[.eTag])
            let again = try await Self.call(router, .get, "/ui/assets/" + file, headers: [.ifNoneMatch: tag])
            #expect(again.status == 304 && again.body.isEmpty, "\(file) with its tag")
        }
        for name in ["index.htm", "..%2Fadmin.token", "%2e%2e%2f%2e%2e%2fadmin.token", "app.js%00", "APP.JS"] {
            let answer = try await Self.call(router, .get, "/ui/assets/" + name)
            #expect([400, 404].contains(answer.status), "\(name): \(answer.status)")
            #expect(!answer.body.contains("aur_"), "\(name) leaked a token")
        }
    }
}
