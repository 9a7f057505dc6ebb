import AsyncHTTPClient
import AuroraAPI
import Foundation
import NIOHTTP1

/// A web console session as a program holds it: the session cookie's value and what the agent
/// said of the session. The cookie is a credential, as the token it signed in with is.
public struct ConsoleCookieSession: Sendable {
    /// The `aurora_session` cookie's value (`aurses_…`).
    public var cookie: String
    public var info: ConsoleSessionInfo
}

extension AuroraClient {
    /// `GET /ui/`: the web console's page (HTML); no token needed.
    public func consolePage() async throws(AuroraClientError) -> String {
        String(decoding: try await data(call(API.consolePage)), as: UTF8.self)
    }

    /// `GET /ui/assets/{file}`: one of the console's files, as served; no token needed.
    public func consoleAsset(_ file: String) async throws(AuroraClientError) -> Data {
        try await data(call(API.consoleAsset, file))
    }

    /// `POST /ui/session`: signs in to the console with `token` (this client's own token is not
    /// sent); the session and its cookie.
    public func consoleSignIn(token: String) async throws(AuroraClientError) -> ConsoleCookieSession {
        var request = try call(API.consoleSignIn, body: ConsoleSignIn(token: token))
        request.sendsToken = false
        let response = try await send(request)
        let body = try await collect(response, request, upTo: Self.maxAnswerBytes)
        guard response.status == .created else { throw await failure(response, request, body: body) }
        let prefix = ConsoleWire.cookie + "="
        let cookie = response.headers["set-cookie"].lazy.compactMap { header -> String? in
            guard header.hasPrefix(prefix) else { return nil }
            return header.dropFirst(prefix.count).split(separator: ";", maxSplits: 1).first.map(String.init)
        }.first
        guard let cookie, let info = try? APICoding.decoder().decode(ConsoleSessionInfo.self, from: body) else {
            throw AuroraClientError(.undecodable, "POST /ui/session: the answer carries no session cookie or body")
        }
        return ConsoleCookieSession(cookie: cookie, info: info)
    }

    /// `GET /ui/session` with the session's cookie: the session as the agent has it now.
    public func consoleSession(_ session: ConsoleCookieSession) async throws(AuroraClientError) -> ConsoleSessionInfo {
        var request = try call(API.consoleSession)
        request.sendsToken = false
        request.headers.append(("Cookie", "\(ConsoleWire.cookie)=\(session.cookie)"))
        return try await decode(request)
    }

    /// `DELETE /ui/session` with the session's cookie and CSRF token: signs out.
    public func consoleSignOut(_ session: ConsoleCookieSession) async throws(AuroraClientError) {
        var request = try call(API.consoleSignOut)
        request.sendsToken = false
        request.headers.append(("Cookie", "\(ConsoleWire.cookie)=\(session.cookie)"))
        request.headers.append((ConsoleWire.csrfHeader, session.info.csrf))
        let response = try await send(request)
        guard response.status == .noContent else { throw await failure(response, request) }
    }
}
