import Foundation

#if canImport(Glibc)
    import Glibc
#endif

/// A Redis reply (RESP2).
public indirect enum RESPValue: Sendable, Equatable {
    case status(String)
    case error(String)
    case integer(Int64)
    case bulk([UInt8]?)
    case array([RESPValue]?)

    /// A status, bulk string or integer as text.
    public var text: String? {
        switch self {
        case .status(let text): text
        case .bulk(let bytes?): String(decoding: bytes, as: UTF8.self)
        case .integer(let value): String(value)
        default: nil
        }
    }
}

/// A blocking connection to a Redis server on 127.0.0.1, for a test or benchmark that reads,
/// or subscribes and waits for pushes, on a thread of its own (never on the cooperative pool).
public final class RedisWire: @unchecked Sendable {  // owns a socket; used by one thread at a time
    private let fd: Int32
    private var buffer: [UInt8] = []
    private var position = 0

    /// Connects; every read or write fails after `timeout` without progress.
    public init(port: Int, timeout: Duration) throws {
        fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue | SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw TestKitError("cannot create a socket: \(String(cString: strerror(errno)))") }
        var limit = timeval(
            tv_sec: Int(timeout.components.seconds), tv_usec: Int(timeout.components.attoseconds / 1_000_000_000_000))
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &limit, socklen_t(MemoryLayout<timeval>.size))
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &limit, socklen_t(MemoryLayout<timeval>.size))
        var address = loopbackAddress(port: port)
        let connected = withUnsafePointer(to: &address) { pointer in
            pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) == 0
            }
        }
        guard connected else {
            let reason = String(cString: strerror(errno))
            close(fd)
            throw TestKitError("cannot connect to redis on port \(port): \(reason)")
        }
    }

    deinit { close(fd) }

    /// Sends one command and reads its reply.
    @discardableResult
    public func command(_ arguments: [String]) throws -> RESPValue {
        var request = Array("*\(arguments.count)\r\n".utf8)
        for argument in arguments {
            let bytes = Array(argument.utf8)
            request += Array("$\(bytes.count)\r\n".utf8) + bytes + [13, 10]
        }
        var sent = 0
        while sent < request.count {
            let written = request[sent...].withUnsafeBytes { send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            guard written > 0 else { throw TestKitError("cannot write to redis: \(String(cString: strerror(errno)))") }
            sent += written
        }
        return try reply()
    }

    /// The next message the server pushes (on a subscribed connection).
    public func nextPush() throws -> RESPValue { try reply() }

    private func reply() throws -> RESPValue {
        let line = try readLine()
        guard let kind = line.first else { throw TestKitError("redis sent an empty line") }
        let rest = String(decoding: line.dropFirst(), as: UTF8.self)
        switch kind {
        case UInt8(ascii: "+"): return .status(rest)
        case UInt8(ascii: "-"): return .error(rest)
        case UInt8(ascii: ":"): return .integer(Int64(rest) ?? 0)
        case UInt8(ascii: "$"):
            guard let count = Int(rest), count >= 0 else { return .bulk(nil) }
            let bytes = try readBytes(count + 2)
            return .bulk(Array(bytes.prefix(count)))
        case UInt8(ascii: "*"):
            guard let count = Int(rest), count >= 0 else { return .array(nil) }
            return .array(try (0..<count).map { _ in try reply() })
        default:
            throw TestKitError("redis sent an unknown reply type: \(String(decoding: line, as: UTF8.self))")
        }
    }

    private func readLine() throws -> [UInt8] {
        while true {
            if let end = buffer[position...].firstIndex(of: 10), end > position, buffer[end - 1] == 13 {
                let line = Array(buffer[position..<(end - 1)])
                position = end + 1
                return line
            }
            try fill()
        }
    }

    private func readBytes(_ count: Int) throws -> [UInt8] {
        while buffer.count - position < count { try fill() }
        defer { position += count }
        return Array(buffer[position..<(position + count)])
    }

    private func fill() throws {
        if position > 0 {
            buffer.removeFirst(position)
            position = 0
        }
        var chunk = [UInt8](repeating: 0, count: 65_536)
        let count = chunk.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
        guard count > 0 else {
            throw TestKitError(
                count == 0
                    ? "redis closed the connection" : "cannot read from redis: \(String(cString: strerror(errno)))")
        }
        buffer += chunk[..<count]
    }
}

extension RedisServer {
    /// A connection of this process's own to the server.
    public func connect(timeout: Duration = .seconds(10)) throws -> RedisWire {
        try RedisWire(port: port, timeout: timeout)
    }
}
