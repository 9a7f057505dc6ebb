import NIOPosix

/// Runs a blocking closure on NIO's shared thread pool, off Swift's cooperative pool.
enum NIOThreadPoolRunner {
    static func run<R: Sendable>(_ body: @escaping @Sendable () throws -> R) async throws -> R {
        try await NIOThreadPool.singleton.runIfActive(body)
    }
}
