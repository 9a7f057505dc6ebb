import CHiredis
import Foundation

/// A Redis reply, copied out of hiredis's reply object.
enum RedisReply: Sendable, Equatable {
    /// A bulk string; `status` is a simple one (`OK`), `error` a Redis error reply (`ERR ...`).
    case string(String)
    case status(String)
    case integer(Int64)
    case array([RedisReply])
    case null
    case error(String)

    /// A string, status or integer reply as text; nil for the others.
    var text: String? {
        switch self {
        case .string(let text), .status(let text): text
        case .integer(let value): String(value)
        default: nil
        }
    }
}

/// Where a Redis server is, from an `events.redis` URL: `redis://[:PASSWORD@]HOST[:PORT][/DB]`.
/// The password is never part of a description or an error.
struct RedisEndpoint: Sendable, Equatable, CustomStringConvertible {
    var host: String
    /// 6379 when the URL names none.
    var port: Int
    /// From the URL's password (or a lone user part), percent-decoding undone; never logged.
    var password: String?
    /// The `/DB` number to `SELECT`; nil keeps the server's default database.
    var database: Int?

    /// Throws ``AgentError`` with code `config` for anything but `redis://` with a host and an
    /// optional numeric database.
    init(url: String) throws(AgentError) {
        guard let components = URLComponents(string: url), components.scheme?.lowercased() == "redis",
            let host = components.host, !host.isEmpty
        else {
            throw AgentError(.config, "'events.redis' must be redis://[:password@]host[:port][/db]")
        }
        self.host = host
        self.port = components.port ?? 6379
        let password = components.password ?? (components.user.flatMap { $0.isEmpty ? nil : $0 })
        self.password = password.flatMap { $0.removingPercentEncoding ?? $0 }
        let path = components.path.trimmingCharacters(in: CharacterSet(charactersIn: "/"))
        if path.isEmpty {
            database = nil
        } else {
            guard let number = Int(path), number >= 0 else {
                throw AgentError(.config, "'events.redis': the path must be a database number, got '/\(path)'")
            }
            database = number
        }
    }

    /// `HOST:PORT[/DB]`, for logs.
    var description: String { "\(host):\(port)" + (database.map { "/\($0)" } ?? "") }
}

/// One blocking hiredis connection. Owns its `redisContext` and frees it in `deinit`.
///
/// Every call blocks: ``RedisPublisher`` makes them all from its own thread, never from Swift's
/// cooperative pool. Commands go through `redisCommandArgv` / `redisAppendCommandArgv` (binary
/// safe; the variadic `redisCommand` is not available to Swift).
// owns a redisContext; used by one thread at a time (the publisher's)
final class RedisConnection: @unchecked Sendable {
    private let context: UnsafeMutablePointer<redisContext>

    /// Connects with a timeout for the connect and for every later command; authenticates and
    /// selects the database when the endpoint says so.
    /// Throws ``AgentError`` with code `process` when the server cannot be reached or refuses the
    /// password or database; the message names the endpoint, never the password.
    init(_ endpoint: RedisEndpoint, timeout: Duration) throws(AgentError) {
        let time = Self.timeval(timeout)
        guard let context = redisConnectWithTimeout(endpoint.host, Int32(endpoint.port), time) else {
            throw AgentError(.process, "cannot connect to Redis at \(endpoint): out of memory")
        }
        if context.pointee.err != 0 {
            let reason = Self.errorText(context)
            redisFree(context)
            throw AgentError(.process, "cannot connect to Redis at \(endpoint): \(reason)")
        }
        self.context = context
        redisSetTimeout(context, time)
        _ = redisEnableKeepAlive(context)
        if let password = endpoint.password {
            if case .error(let message) = try command(["AUTH", password]) {
                throw AgentError(.process, "Redis at \(endpoint) refused the password: \(message.prefix(120))")
            }
        }
        if let database = endpoint.database {
            if case .error(let message) = try command(["SELECT", String(database)]) {
                throw AgentError(.process, "Redis at \(endpoint) refused database \(database): \(message.prefix(120))")
            }
        }
    }

    deinit {
        redisFree(context)
    }

    /// Runs one command; a Redis error is a `.error` reply, a broken connection throws.
    func command(_ arguments: [String]) throws(AgentError) -> RedisReply {
        let raw = Self.withArgv(arguments) { argc, argv, lengths in redisCommandArgv(context, argc, argv, lengths) }
        guard let raw else { throw AgentError(.process, "Redis connection lost: \(Self.errorText(context))") }
        defer { freeReplyObject(raw) }
        return Self.copy(raw.assumingMemoryBound(to: redisReply.self))
    }

    /// Sends all `commands` in one write and reads their replies in order (pipelining).
    func pipeline(_ commands: [[String]]) throws(AgentError) -> [RedisReply] {
        for arguments in commands {
            let status = Self.withArgv(arguments) { argc, argv, lengths in
                redisAppendCommandArgv(context, argc, argv, lengths)
            }
            guard status == REDIS_OK else {
                throw AgentError(.process, "Redis connection lost: \(Self.errorText(context))")
            }
        }
        var replies: [RedisReply] = []
        replies.reserveCapacity(commands.count)
        for _ in commands {
            var raw: UnsafeMutableRawPointer?
            guard redisGetReply(context, &raw) == REDIS_OK, let raw else {
                throw AgentError(.process, "Redis connection lost: \(Self.errorText(context))")
            }
            replies.append(Self.copy(raw.assumingMemoryBound(to: redisReply.self)))
            freeReplyObject(raw)
        }
        return replies
    }

    /// Waits for the next message pushed on this connection (after SUBSCRIBE), up to the
    /// connection's timeout; nil when none came in time.
    func nextPush() throws(AgentError) -> RedisReply? {
        var raw: UnsafeMutableRawPointer?
        guard redisGetReply(context, &raw) == REDIS_OK, let raw else {
            if context.pointee.err == REDIS_ERR_IO, errno == EAGAIN || errno == EWOULDBLOCK {
                // A read timeout leaves the context unusable in hiredis 0.14: the caller reconnects.
                throw AgentError(.process, "Redis read timed out")
            }
            throw AgentError(.process, "Redis connection lost: \(Self.errorText(context))")
        }
        defer { freeReplyObject(raw) }
        return Self.copy(raw.assumingMemoryBound(to: redisReply.self))
    }

    // MARK: Helpers

    /// Deep-copies a hiredis reply (arrays recursively) so it outlives `freeReplyObject`.
    private static func copy(_ reply: UnsafeMutablePointer<redisReply>) -> RedisReply {
        let value = reply.pointee
        switch value.type {
        case REDIS_REPLY_STRING: return .string(text(value))
        case REDIS_REPLY_STATUS: return .status(text(value))
        case REDIS_REPLY_ERROR: return .error(text(value))
        case REDIS_REPLY_INTEGER: return .integer(Int64(value.integer))
        case REDIS_REPLY_ARRAY:
            var elements: [RedisReply] = []
            elements.reserveCapacity(Int(value.elements))
            for index in 0..<Int(value.elements) {
                if let element = value.element[index] { elements.append(copy(element)) } else { elements.append(.null) }
            }
            return .array(elements)
        default: return .null
        }
    }

    private static func text(_ reply: redisReply) -> String {
        guard let pointer = reply.str else { return "" }
        return pointer.withMemoryRebound(to: UInt8.self, capacity: Int(reply.len)) {
            String(decoding: UnsafeBufferPointer(start: $0, count: Int(reply.len)), as: UTF8.self)
        }
    }

    private static func errorText(_ context: UnsafeMutablePointer<redisContext>) -> String {
        let text = withUnsafeBytes(of: context.pointee.errstr) {
            String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self)
        }
        return text.isEmpty ? "error \(context.pointee.err)" : text
    }

    private static func timeval(_ duration: Duration) -> Glibc.timeval {
        let microseconds = duration.components.seconds * 1_000_000 + duration.components.attoseconds / 1_000_000_000_000
        return Glibc.timeval(tv_sec: Int(microseconds / 1_000_000), tv_usec: Int(microseconds % 1_000_000))
    }

    /// Calls `body` with argc, argv and the argument lengths; the strings live for the call.
    private static func withArgv<R>(
        _ arguments: [String],
        _ body: (Int32, UnsafeMutablePointer<UnsafePointer<CChar>?>, UnsafePointer<Int>) -> R
    ) -> R {
        let buffers = arguments.map { Array($0.utf8) }
        let pointers = buffers.map { bytes -> UnsafeMutablePointer<CChar> in
            let pointer = UnsafeMutablePointer<CChar>.allocate(capacity: max(1, bytes.count))
            for (index, byte) in bytes.enumerated() { pointer[index] = CChar(bitPattern: byte) }
            return pointer
        }
        defer { pointers.forEach { $0.deallocate() } }
        var argv: [UnsafePointer<CChar>?] = pointers.map { UnsafePointer($0) }
        let lengths = buffers.map(\.count)
        return argv.withUnsafeMutableBufferPointer { argvBuffer in
            lengths.withUnsafeBufferPointer { lengthBuffer in
                body(Int32(arguments.count), argvBuffer.baseAddress!, lengthBuffer.baseAddress!)
            }
        }
    }
}
