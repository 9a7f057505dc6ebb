import AsyncHTTPClient
import AuroraAPI
import AuroraClient
import Foundation
import NIOCore
import NIOSSL
import Synchronization

#if canImport(Glibc)
    import Glibc
    import NIOHTTP1
#endif

/// Where the built executables are: `AURORA_BIN_DIR`, else `.build/debug` of this checkout.
public enum Binaries {
    public static var directory: String {
        if let directory = ProcessInfo.processInfo.environment["AURORA_BIN_DIR"], !directory.isEmpty {
            return directory
        }
        return repositoryRoot + "/.build/debug"
    }

    /// The checkout this test kit was compiled from.
    public static var repositoryRoot: String {
        URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().path
    }

    public static var nodeagent: String { try! require("nodeagent") }
    public static var auroraCLI: String { try! require("aurora-cli") }

    static func require(_ name: String) throws -> String {
        let path = directory + "/" + name
        guard FileManager.default.isExecutableFile(atPath: path) else {
            throw TestKitError("\(path) is missing: build first ('swift build --build-tests' or './bootstrap test')")
        }
        return path
    }

    /// Fails loudly when a server binary the integration tests need is not installed.
    public static func requireTool(_ path: String, hint: String) throws {
        guard FileManager.default.isExecutableFile(atPath: path) else {
            throw TestKitError("\(path) is not installed; \(hint)")
        }
    }
}

/// The store's schema version after every migration (NodeAgent's `Migrations.all`): tests
/// check that a fresh or upgraded store reaches it.
public let latestSchemaVersion = 14

/// A scratch directory under /tmp, traversable by the managed PostgreSQL's user (0755),
/// removed by `remove()` (or by ``StartedProcesses/endAll(grace:)`` when a benchmark is interrupted).
public struct ScratchDirectory: Sendable {
    public let path: String

    /// `/tmp/PREFIX-LABEL-PID-RANDOM`.
    public init(_ label: String, prefix: String = "aurora-test") throws {
        path = "/tmp/\(prefix)-\(label)-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        guard mkdir(path, 0o755) == 0 else {
            throw TestKitError("cannot create \(path): \(String(cString: strerror(errno)))")
        }
        chmod(path, 0o755)
        StartedProcesses.addScratch(path)
    }

    /// Removes the directory, unless `AURORA_KEEP_SCRATCH=1` asks to keep it for a post-mortem.
    public func remove() {
        if ProcessInfo.processInfo.environment["AURORA_KEEP_SCRATCH"] == "1" { return }
        try? FileManager.default.removeItem(atPath: path)
        StartedProcesses.removeScratch(path)
    }
}

/// A loopback port that is free right now and that no other test of this process was given,
/// chosen below the kernel's ephemeral range (32768-60999 here) so that outgoing connections
/// of parallel tests cannot take it first. Ports are handed out in turn from a random start,
/// so two tests running side by side never get the same one (a random pick checked only for
/// being free let two of them race for one port).
public func freePort() throws -> Int {
    for _ in 0..<400 {
        let port = PortCursor.next()
        if portIsFree(port) { return port }
    }
    throw TestKitError("no free port in 20000-32000")
}

enum PortCursor {
    static let range = 20_000..<32_000
    static let cursor = Mutex(Int.random(in: range))

    static func next() -> Int {
        cursor.withLock { value in
            value = value + 1 < range.upperBound ? value + 1 : range.lowerBound
            return value
        }
    }
}

/// 127.0.0.1:`port` (0: any port) as a socket address.
public func loopbackAddress(port: Int) -> sockaddr_in {
    var address = sockaddr_in()
    address.sin_family = sa_family_t(AF_INET)
    address.sin_addr.s_addr = inet_addr("127.0.0.1")
    address.sin_port = UInt16(port).bigEndian
    return address
}

/// Whether a fresh socket can bind 127.0.0.1:`port` now (as an agent given it will).
public func portIsFree(_ port: Int) -> Bool {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue | SOCK_CLOEXEC.rawValue), 0)
    guard fd >= 0 else { return false }
    defer { close(fd) }
    var address = loopbackAddress(port: port)
    return withUnsafePointer(to: &address) { pointer in
        pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) {
            bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) == 0
        }
    }
}

/// A listening socket on 127.0.0.1 that holds a port until ``close()`` (or its end): a thread
/// accepts every connection and closes it at once, so connects succeed however many come (a
/// socket that never accepts fills its backlog, and later connects hang). After ``close()``
/// connections are refused.
public final class PortHolder: @unchecked Sendable {  // owns a file descriptor
    public let port: Int
    private let fd: Int32
    private let closed = Mutex(false)
    private let acceptorDone = DispatchSemaphore(value: 0)

    public init() throws {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue | SOCK_CLOEXEC.rawValue), 0)
        var address = loopbackAddress(port: 0)
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let ok = withUnsafeMutablePointer(to: &address) { pointer in
            pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                bind(fd, $0, length) == 0 && listen(fd, 128) == 0 && getsockname(fd, $0, &length) == 0
            }
        }
        guard ok else {
            Glibc.close(fd)
            throw TestKitError("cannot hold a port")
        }
        self.fd = fd
        self.port = Int(UInt16(bigEndian: address.sin_port))
        Thread.detachNewThread { [acceptorDone] in
            while true {
                let client = accept(fd, nil, nil)
                if client >= 0 {
                    Glibc.close(client)
                } else if errno != EINTR && errno != ECONNABORTED {
                    break  // shut down by close()
                }
            }
            acceptorDone.signal()
        }
    }

    /// Stops listening: from now on connections to the port are refused.
    public func close() {
        let first = closed.withLock { closed in
            defer { closed = true }
            return !closed
        }
        guard first else { return }
        shutdown(fd, Int32(SHUT_RDWR))  // wakes the accepting thread
        acceptorDone.wait()
        Glibc.close(fd)
    }

    deinit { close() }
}

/// A plain HTTP answer.
public struct HTTPAnswer: Sendable {
    public var status: Int
    public var body: Data
    public var contentType: String?
    /// Every response header, by lower-case name (the last value of a repeated one).
    public var headers: [String: String] = [:]

    public var text: String { String(decoding: body, as: UTF8.self) }

    public func decode<T: Decodable>(_ type: T.Type) throws -> T {
        try APICoding.decoder().decode(T.self, from: body)
    }
}

/// One HTTP request to an agent, on `client` (a benchmark passes its own, with a larger
/// connection pool), over `tlsConfiguration` when the URL is https.
public func http(
    _ url: String, method: String = "GET", headers: [String: String] = [:], body: [UInt8]? = nil,
    timeout: Duration = .seconds(5), client: HTTPClient = .shared,
    tlsConfiguration: TLSConfiguration? = nil
) async throws -> HTTPAnswer {
    var request = HTTPClientRequest(url: url)
    request.method = .init(rawValue: method)
    request.tlsConfiguration = tlsConfiguration
    for (name, value) in headers { request.headers.add(name: name, value: value) }
    if let body { request.body = .bytes(ByteBuffer(bytes: body)) }
    let response = try await client.execute(request, timeout: .milliseconds(timeout.components.seconds * 1000))
    let buffer = try await response.body.collect(upTo: 16 << 20)
    return HTTPAnswer(
        status: Int(response.status.code), body: Data(buffer.readableBytesView),
        contentType: response.headers.first(name: "content-type"),
        headers: Dictionary(response.headers.map { ($0.name.lowercased(), $0.value) }, uniquingKeysWith: { $1 }))
}

/// Thrown by a ``poll(timeout:every:_:_:)`` condition that can never hold (the process it
/// waits for has exited): the poll throws `error` at once instead of waiting out its deadline.
public struct PollStop: Error {
    public let error: any Error
    public init(_ error: any Error) { self.error = error }
}

/// Polls `condition` until it returns a value or `timeout` passes.
public func poll<T>(
    timeout: Duration, every interval: Duration = .milliseconds(25), _ what: String,
    _ condition: () async throws -> T?
) async throws -> T {
    let deadline = ContinuousClock.now + timeout
    var lastError: (any Error)?
    while ContinuousClock.now < deadline {
        do {
            if let value = try await condition() { return value }
        } catch let stop as PollStop {
            throw stop.error
        } catch {
            lastError = error
        }
        try await Task.sleep(for: interval)
    }
    throw TestKitError(
        "timed out after \(timeout) waiting for \(what)\(lastError.map { " (last error: \($0))" } ?? "")")
}

/// Whether a process with this PID is alive (a zombie waiting to be reaped is not).
public func processExists(_ pid: pid_t) -> Bool {
    guard kill(pid, 0) == 0 || errno == EPERM else { return false }
    guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
        let close = stat.lastIndex(of: ")")
    else { return true }
    return !stat[stat.index(after: close)...].trimmingCharacters(in: .whitespaces).hasPrefix("Z")
}

/// Waits until the process with this PID is gone; false if it is still alive after `timeout`.
public func waitGone(_ pid: pid_t, timeout: Duration) async throws -> Bool {
    await goneAt(pid, timeout: timeout) != nil
}

/// The instant the process with this PID was seen gone, or nil if it was still alive after
/// `timeout`. A thread of its own watches it every 5 ms: the instant does not wait for a turn on
/// the (two-thread, on this machine) cooperative pool, which other suites may hold for seconds.
public func goneAt(_ pid: pid_t, timeout: Duration) async -> ContinuousClock.Instant? {
    await withCheckedContinuation { (continuation: CheckedContinuation<ContinuousClock.Instant?, Never>) in
        let watcher = Thread {
            let deadline = ContinuousClock.now + timeout
            while processExists(pid) {
                guard ContinuousClock.now < deadline else { return continuation.resume(returning: nil) }
                usleep(5_000)
            }
            continuation.resume(returning: ContinuousClock.now)
        }
        watcher.start()
    }
}

/// Reads a Server-Sent Events stream, calling `onData` with every `data:` payload and
/// `onOpen` once the stream has started, until `onData` returns true or `timeout` passes.
public func readEvents(
    _ url: String, headers: [String: String] = [:], timeout: Duration,
    onOpen: @Sendable () async throws -> Void = {}, onData: (String) async throws -> Bool
) async throws {
    var request = HTTPClientRequest(url: url)
    for (name, value) in headers { request.headers.add(name: name, value: value) }
    let response = try await HTTPClient.shared.execute(
        request, timeout: .milliseconds(timeout.components.seconds * 1000))
    guard response.status.code == 200 else { throw TestKitError("\(url) answered \(response.status.code)") }
    try await onOpen()
    // The one SSE parser (AuroraClient's), as the CLI reads the stream.
    for try await event in ServerSentEvents(response.body) {
        if try await onData(event.data) { return }
    }
    throw TestKitError("the event stream \(url) ended early")
}
