import AuroraAPI
import Foundation
import Logging
import Testing

@testable import NodeAgent

/// The console's session store and cookie parsing (pure: the clock is passed in).
@Suite("Console sessions")
struct ConsoleSessionTests {
    let start = Date(timeIntervalSince1970: 1_800_000_000)

    @Test(
        "a session lives until its lifetime or its idle time runs out, whichever is first; use restarts the idle clock")
    func expiry() {
        let sessions = ConsoleSessions(lifetime: 100, idle: 30, capacity: 8)
        let (id, session) = sessions.open(credential: [1, 2, 3], now: start)
        #expect(ConsoleSessions.isSessionID(id) && session.csrf.count == 64 && session.csrf != id)
        #expect(sessions.session(id, now: start.addingTimeInterval(29)) != nil)
        #expect(sessions.session(id, now: start.addingTimeInterval(58)) != nil, "used at 29 s: idle until 59 s")
        #expect(sessions.session(id, now: start.addingTimeInterval(87)) != nil)
        #expect(sessions.session(id, now: start.addingTimeInterval(100)) == nil, "past its lifetime, however used")
        #expect(sessions.count == 0, "an expired session is dropped when seen")

        let (idle, _) = sessions.open(credential: [1], now: start)
        #expect(sessions.session(idle, now: start.addingTimeInterval(30)) == nil, "30 s without a call")
        // Looking without touching does not keep a session alive.
        let (peeked, _) = sessions.open(credential: [1], now: start)
        #expect(sessions.session(peeked, now: start.addingTimeInterval(20), touch: false) != nil)
        #expect(sessions.session(peeked, now: start.addingTimeInterval(31)) == nil)
    }

    @Test("at capacity, signing in ends the least recently used session; closing ends one")
    func capacity() {
        let sessions = ConsoleSessions(lifetime: 1000, idle: 1000, capacity: 3)
        let ids = (0..<3).map { i in sessions.open(credential: [UInt8(i)], now: start.addingTimeInterval(Double(i))).id
        }
        _ = sessions.session(ids[0], now: start.addingTimeInterval(10))  // the first is now the most recent
        let (fourth, _) = sessions.open(credential: [9], now: start.addingTimeInterval(11))
        #expect(sessions.count == 3)
        #expect(sessions.session(ids[1], now: start.addingTimeInterval(12)) == nil, "the least recently used went")
        #expect(sessions.session(ids[0], now: start.addingTimeInterval(12)) != nil)
        #expect(sessions.session(fourth, now: start.addingTimeInterval(12)) != nil)
        #expect(sessions.close(fourth) && !sessions.close(fourth))
        #expect(sessions.session(fourth, now: start.addingTimeInterval(13)) == nil)
    }

    @Test("session ids have one shape; the cookie parser finds only a well-formed aurora_session")
    func parsing() {
        let good = "aurses_" + String(repeating: "ab", count: 32)
        #expect(ConsoleSessions.isSessionID(good))
        for bad in [
            "", "aurses_", good.uppercased(), good + "0", String(good.dropLast()),
            "aur_" + String(repeating: "0", count: 64),
            "aurses_" + String(repeating: "g", count: 64),
        ] {
            #expect(!ConsoleSessions.isSessionID(bad), "\(bad)")
        }
        #expect(ConsoleCookie.sessionID(["theme=dark; aurora_session=\(good); x=1"]) == good)
        #expect(ConsoleCookie.sessionID(["a=1", "aurora_session=\(good)"]) == good)
        #expect(ConsoleCookie.sessionID(["aurora_session=aur_token; aurora_session=\(good)"]) == good)
        #expect(ConsoleCookie.sessionID(["aurora_sessionx=\(good)", "xaurora_session=\(good)"]) == nil)
        #expect(ConsoleCookie.sessionID([String(repeating: "a", count: 8200) + "; aurora_session=\(good)"]) == nil)
        let cookie = ConsoleCookie.set(good, maxAge: 60, secure: true)
        #expect(cookie == "aurora_session=\(good); Path=/; Max-Age=60; HttpOnly; SameSite=Strict; Secure")
    }

    @Test(
        "a session stands for its token, checked again on every use: another token's hash or a session id opens nothing"
    )
    func credential() throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("aurora-console-\(UUID())")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        let token = try AdminToken.loadOrCreate(
            dataDir: directory.path, keysDir: directory.path, logger: .init(label: "test"))
        let clear = try String(contentsOf: directory.appendingPathComponent("admin.token"), encoding: .utf8)
            .trimmingCharacters(in: .whitespacesAndNewlines)
        #expect(token.openSession(with: "aur_" + String(repeating: "0", count: 64)) == nil)
        let opened = try #require(token.openSession(with: clear))
        #expect(opened.role == .admin && opened.caller == "operator")
        #expect(token.role(of: opened.id)?.role == .admin)
        #expect(token.accepts(opened.id))
        #expect(token.openSession(with: opened.id) == nil, "a session does not open another")
        #expect(token.role(of: "aurses_" + String(repeating: "0", count: 64)) == nil)
        token.sessions.close(opened.id)
        #expect(token.role(of: opened.id) == nil && !token.accepts(opened.id))
    }
}
