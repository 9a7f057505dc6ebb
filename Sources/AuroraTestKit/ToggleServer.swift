import Foundation
import NIOCore
import NIOHTTP1
import NIOPosix
import Synchronization

/// A tiny HTTP server on 127.0.0.1 whose answer the test sets: every request gets the current
/// status (200 by default) with a short body. For health checks and probes that must flip.
public final class ToggleServer: Sendable {
    public let port: Int
    public var url: String { "http://127.0.0.1:\(port)" }
    private let channel: any Channel
    private let state: Box

    private final class Box: Sendable {
        let status = Mutex(200)
        let requests = Mutex(0)
    }

    public init() async throws {
        let box = Box()
        let bootstrap = ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .serverChannelOption(ChannelOptions.socketOption(.so_reuseaddr), value: 1)
            .childChannelInitializer { channel in
                channel.pipeline.configureHTTPServerPipeline().flatMap {
                    channel.pipeline.addHandler(Handler(box: box))
                }
            }
        channel = try await bootstrap.bind(host: "127.0.0.1", port: try freePort()).get()
        port = channel.localAddress?.port ?? 0
        state = box
    }

    /// The status every later request gets.
    public func set(status: Int) { state.status.withLock { $0 = status } }

    /// Requests answered so far.
    public var requests: Int { state.requests.withLock { $0 } }

    public func stop() async { try? await channel.close() }

    private final class Handler: ChannelInboundHandler, @unchecked Sendable {  // one per connection, on its event loop
        typealias InboundIn = HTTPServerRequestPart
        typealias OutboundOut = HTTPServerResponsePart
        let box: Box

        init(box: Box) { self.box = box }

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            guard case .head(let head) = unwrapInboundIn(data) else {
                if case .end = unwrapInboundIn(data) { respond(context) }
                return
            }
            keepAlive = head.isKeepAlive
            version = head.version
        }

        private var keepAlive = true
        private var version = HTTPVersion.http1_1

        private func respond(_ context: ChannelHandlerContext) {
            let status = box.status.withLock { $0 }
            box.requests.withLock { $0 += 1 }
            let body = ByteBuffer(string: "{\"status\": \(status)}")
            var headers = HTTPHeaders([
                ("Content-Type", "application/json"), ("Content-Length", String(body.readableBytes)),
            ])
            if !keepAlive { headers.add(name: "Connection", value: "close") }
            context.write(
                wrapOutboundOut(
                    .head(
                        HTTPResponseHead(
                            version: version, status: HTTPResponseStatus(statusCode: status), headers: headers))),
                promise: nil)
            context.write(wrapOutboundOut(.body(.byteBuffer(body))), promise: nil)
            let keepAlive = self.keepAlive
            let channel = context.channel
            context.writeAndFlush(wrapOutboundOut(.end(nil))).whenComplete { _ in
                if !keepAlive { channel.close(promise: nil) }
            }
        }
    }
}
