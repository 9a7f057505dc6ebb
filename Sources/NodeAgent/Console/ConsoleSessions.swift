import AuroraAPI
import Foundation
import Secrets
import Synchronization

/// The web console's sign-in sessions (`POST /ui/session`), in this agent's memory only.
///
/// A session keeps the SHA-256 of the token it signed in with, never the token. Every call the
/// session makes checks that hash again (``AdminToken/role(of:)``), so revoking or expiring the
/// token ends its sessions at once. A session ends `lifetime` after sign-in, after `idle` without
/// a call, at sign-out, or when the agent restarts. At most `capacity` live at once; signing in
/// past that ends the least recently used one.
final class ConsoleSessions: Sendable {
    struct Session: Sendable, Equatable {
        /// SHA-256 of the token it signed in with.
        var credential: [UInt8]
        /// Sent back as `X-Aurora-CSRF` on every call that changes something.
        var csrf: String
        var expiresAt: Date
        var lastUsed: Date
    }

    /// 8 hours from sign-in.
    static let defaultLifetime: TimeInterval = 8 * 3600
    /// 1 hour without a call.
    static let defaultIdle: TimeInterval = 3600
    static let defaultCapacity = 256

    let lifetime: TimeInterval
    let idle: TimeInterval
    let capacity: Int
    private let sessions = Mutex<[String: Session]>([:])  // session id → session

    init(
        lifetime: TimeInterval = ConsoleSessions.defaultLifetime, idle: TimeInterval = ConsoleSessions.defaultIdle,
        capacity: Int = ConsoleSessions.defaultCapacity
    ) {
        self.lifetime = lifetime
        self.idle = idle
        self.capacity = max(1, capacity)
    }

    /// Opens a session for a token whose SHA-256 is `credential`: its id (`aurses_` and 64 hex
    /// digits, 256 random bits) and the session. Expired sessions are dropped first; at capacity,
    /// the least recently used one is ended.
    func open(credential: [UInt8], now: Date = Date()) -> (id: String, session: Session) {
        let id = ConsoleWire.sessionPrefix + Hex.encode(Crypto.randomBytes(32))
        let session = Session(
            credential: credential, csrf: Hex.encode(Crypto.randomBytes(32)),
            expiresAt: now.addingTimeInterval(lifetime), lastUsed: now)
        sessions.withLock { sessions in
            sessions = sessions.filter { live($0.value, now: now) }
            while sessions.count >= capacity, let oldest = sessions.min(by: { $0.value.lastUsed < $1.value.lastUsed }) {
                sessions[oldest.key] = nil
            }
            sessions[id] = session
        }
        return (id, session)
    }

    /// The live session `id` names; nil for a malformed id, an unknown one or one that expired
    /// (which is dropped). With `touch`, the call counts as use: the idle clock starts again.
    func session(_ id: String, now: Date = Date(), touch: Bool = true) -> Session? {
        guard Self.isSessionID(id) else { return nil }
        return sessions.withLock { sessions -> Session? in
            guard var session = sessions[id] else { return nil }
            guard live(session, now: now) else {
                sessions[id] = nil
                return nil
            }
            if touch {
                session.lastUsed = now
                sessions[id] = session
            }
            return session
        }
    }

    /// Ends session `id`; whether it was open.
    @discardableResult
    func close(_ id: String) -> Bool {
        sessions.withLock { $0.removeValue(forKey: id) != nil }
    }

    /// How many sessions are held (expired ones included until the next sign-in drops them).
    var count: Int { sessions.withLock { $0.count } }

    /// Whether `text` has a session id's shape: `aurses_` and 64 lower-case hex digits.
    static func isSessionID(_ text: String) -> Bool {
        let prefix = ConsoleWire.sessionPrefix
        guard text.utf8.count == prefix.utf8.count + 64, text.hasPrefix(prefix) else { return false }
        return text.utf8.dropFirst(prefix.utf8.count).allSatisfy {
            (0x30...0x39).contains($0) || (0x61...0x66).contains($0)
        }
    }

    private func live(_ session: Session, now: Date) -> Bool {
        now < session.expiresAt && now.timeIntervalSince(session.lastUsed) < idle
    }
}
