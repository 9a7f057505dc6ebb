import AuroraAPI
import Foundation
import HTTPTypes
import Hummingbird
import Mesh
import NIOCore
import Secrets

/// The web console (docs/API.md §4.21): its page and assets, and its sign-in sessions.
///
/// - `GET /ui` (also `/ui/`) and `GET /ui/assets/{file}`: anyone; the files built into the binary
///   (``ConsoleAssets``), with a strict Content-Security-Policy (scripts and styles from this
///   agent only, no inline code, no framing);
/// - `POST /ui/session` `{"token"}`: anyone with a token this agent takes (its operator token; on
///   the lead also an API token): 201 with the session and a cookie `aurora_session` (HttpOnly,
///   SameSite=Strict, `Secure` on the TLS listener); 401 for another token. Only a JSON body, and
///   only from this agent's own origin when the browser names one;
/// - `GET /ui/session`: the cookie's session (401 without one);
/// - `DELETE /ui/session`: signs out (the session ends, the cookie is cleared): 204.
///
/// Every other route takes the cookie in place of a bearer token (``ConsoleSessionMiddleware``).
extension HTTPServer {
    static func addConsoleRoutes(to router: Router<AgentRequestContext>, agent: AgentParts) {
        let state = agent.state, token = agent.token
        router.on(API.consolePage) { request, _ -> Response in
            try ConsoleAssets.response(for: "index.html", request: request)
        }
        router.on(API.consoleAsset) { request, context -> Response in
            let file = try context.parameters.decoded("file")
            return try ConsoleAssets.response(for: file, request: request)
        }
        router.on(API.consoleSignIn) { request, context -> Response in
            try ConsoleSessionMiddleware.checkOrigin(request)
            guard request.headers[.contentType]?.lowercased().hasPrefix("application/json") == true else {
                throw Refusal.badRequest(
                    "sign in with a JSON body (Content-Type: application/json): {\"token\": \"…\"}")
            }
            var request = request
            let bytes: [UInt8]
            do { bytes = Array(try await request.collectBody(upTo: 4096).readableBytesView) } catch {
                throw Refusal(.tooLarge, code: "payload_too_large", message: "a sign-in body is at most 4096 bytes")
            }
            let body = try decode(ConsoleSignIn.self, bytes, allowed: ["token"])
            guard let (id, session, role, caller) = token.openSession(with: body.token) else {
                throw Refusal.unauthorized("the token is not valid for this agent")
            }
            var response = try json(
                info(session, role: role, caller: caller, state: state, idle: token.sessions.idle), status: .created)
            let secure = secureListener(context, config: state.config)
            response.headers[.setCookie] = ConsoleCookie.set(id, maxAge: Int(token.sessions.lifetime), secure: secure)
            response.headers[.cacheControl] = "no-store"
            return response
        }
        router.on(API.consoleSession) { request, _ -> Response in
            let (id, session) = try currentSession(request, token: token)
            guard let (role, caller) = token.role(ofCredential: session.credential) else {
                token.sessions.close(id)
                throw Refusal.unauthorized("the token this session signed in with is no longer valid; sign in again")
            }
            var response = try json(
                info(session, role: role, caller: caller, state: state, idle: token.sessions.idle), status: .ok)
            response.headers[.cacheControl] = "no-store"
            return response
        }
        router.on(API.consoleSignOut) { request, context -> Response in
            let (id, _) = try currentSession(request, token: token)
            token.sessions.close(id)
            let secure = secureListener(context, config: state.config)
            return Response(
                status: .noContent, headers: [.setCookie: ConsoleCookie.set("", maxAge: 0, secure: secure)])
        }
    }

    /// The session a console call carries (its cookie, which ``ConsoleSessionMiddleware`` turned
    /// into a bearer session id); 401 without a live one.
    private static func currentSession(_ request: Request, token: AdminToken) throws(Refusal) -> (
        String, ConsoleSessions.Session
    ) {
        guard let id = bearerToken(request), id.hasPrefix(ConsoleWire.sessionPrefix),
            let session = token.sessions.session(id)
        else {
            throw Refusal.unauthorized("no console session: sign in at /ui/ (POST /ui/session)")
        }
        return (id, session)
    }

    private static func info(
        _ session: ConsoleSessions.Session, role: APIRole, caller: String, state: AgentState, idle: TimeInterval
    ) -> ConsoleSessionInfo {
        ConsoleSessionInfo(
            role: role, caller: caller, csrf: session.csrf, expiresAt: ISOTime.string(session.expiresAt),
            idleS: Int(idle), agent: state.config.name, agentRole: state.health.role.rawValue)
    }

    /// Whether the request came in on the TLS listener (its cookie then gets `Secure`).
    private static func secureListener(_ context: AgentRequestContext, config: NodeConfig) -> Bool {
        guard let tls = config.tlsListen, let port = context.localAddress?.port else { return false }
        return port == tls.port && port != config.listen.port
    }
}

/// The `aurora_session` cookie.
enum ConsoleCookie {
    /// A `Set-Cookie` value for session `id` (an empty id and `maxAge` 0 clear it).
    static func set(_ id: String, maxAge: Int, secure: Bool) -> String {
        "\(ConsoleWire.cookie)=\(id); Path=/; Max-Age=\(maxAge); HttpOnly; SameSite=Strict" + (secure ? "; Secure" : "")
    }

    /// The session id in `Cookie` headers, when one has a well-formed `aurora_session`; nil
    /// otherwise (other cookies are ignored, and so is a header over 8 KiB).
    static func sessionID(_ headers: [String]) -> String? {
        for header in headers where header.utf8.count <= 8192 {
            for pair in header.split(separator: ";") {
                let trimmed = pair.trimmingCharacters(in: .whitespaces)
                guard trimmed.hasPrefix(ConsoleWire.cookie + "=") else { continue }
                let value = String(trimmed.dropFirst(ConsoleWire.cookie.count + 1))
                if ConsoleSessions.isSessionID(value) { return value }
            }
        }
        return nil
    }
}

/// Lets a console session's cookie stand for the token it signed in with.
///
/// A request with no `Authorization` header and a live session cookie gets
/// `Authorization: Bearer <session id>`, so every route decides who may call it in one place
/// (``HTTPServer/authorize(_:token:role:)``), the same for a cookie as for a token. A call that
/// changes something (any method but `GET` and `HEAD`) must also carry the session's CSRF
/// token in `X-Aurora-CSRF` and, when the browser names an `Origin`, come from this agent's own
/// origin: 403 `csrf` otherwise, and nothing changes. A request with its own `Authorization`
/// header ignores the cookie.
struct ConsoleSessionMiddleware: RouterMiddleware {
    typealias Context = AgentRequestContext
    let sessions: ConsoleSessions

    func handle(
        _ request: Request, context: Context, next: (Request, Context) async throws -> Response
    ) async throws -> Response {
        guard request.headers[.authorization] == nil,
            let id = ConsoleCookie.sessionID(request.headers[values: .cookie]),
            let session = sessions.session(id, touch: false)
        else {
            return try await next(request, context)
        }
        if request.method != .get && request.method != .head {
            let presented = request.headers[HTTPField.Name(ConsoleWire.csrfHeader)!] ?? ""
            guard Crypto.constantTimeEquals(Array(presented.utf8), Array(session.csrf.utf8)) else {
                throw Refusal(
                    .forbidden, code: "csrf",
                    message:
                        "a console call that changes something needs the session's \(ConsoleWire.csrfHeader) header")
            }
            try Self.checkOrigin(request)
        }
        var head = request.head
        head.headerFields[.authorization] = "Bearer " + id
        return try await next(Request(head: head, body: request.body), context)
    }

    /// 403 `csrf` when the request names an `Origin` whose host and port are not the `Host` it
    /// was sent to (a page of another site calling this agent from a browser).
    static func checkOrigin(_ request: Request) throws(Refusal) {
        guard let origin = request.headers[.origin] else { return }
        let authority = request.head.authority ?? ""
        let host = origin.split(separator: "://", maxSplits: 1).last.map(String.init) ?? ""
        guard !authority.isEmpty, host.lowercased() == authority.lowercased() else {
            throw Refusal(
                .forbidden, code: "csrf",
                message:
                    "the request comes from another origin ('\(InputRules.printable(String(origin.prefix(128))))'); the console calls only its own agent"
            )
        }
    }
}
