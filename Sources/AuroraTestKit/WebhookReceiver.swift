import Foundation
import NIOCore
import NIOHTTP1
import NIOPosix
import Synchronization

/// A webhook receiver for tests, on 127.0.0.1: records every request (path, headers, body) and
/// answers 200, or 500 to the next requests the test asks to fail (``failNext(_:)``).
public final class WebhookReceiver: Sendable {
    /// One request as received.
    public struct Delivery: Sendable {
        public var path: String
        /// Header values by lower-case name.
        public var headers: [String: String]
        public var body: Data
        /// The status the receiver answered.
        public var status: Int

        /// `X-Aurora-Event-ID`.
        public var eventID: String? { headers["x-aurora-event-id"] }
    }

    public let port: Int
    public var url: String { "http://127.0.0.1:\(port)" }
    private let channel: any Channel
    private let state: Box

    private final class Box: Sendable {
        let deliveries = Mutex<[Delivery]>([])
        let failures = Mutex(0)
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

    /// The next `count` requests get 500 (answered and recorded, then refused).
    public func failNext(_ count: Int) { state.failures.withLock { $0 = count } }

    /// Every request so far, in arrival order.
    public var deliveries: [Delivery] { state.deliveries.withLock { $0 } }

    /// The requests to `path` that were answered 2xx.
    public func accepted(path: String) -> [Delivery] {
        deliveries.filter { $0.path == path && $0.status == 200 }
    }

    public func stop() async { try? await channel.close() }

    private final class Handler: ChannelInboundHandler, @unchecked Sendable {  // one per connection, on its event loop
        typealias InboundIn = HTTPServerRequestPart
        typealias OutboundOut = HTTPServerResponsePart
        let box: Box
        var head: HTTPRequestHead?
        var body = ByteBuffer()

        init(box: Box) { self.box = box }

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            switch unwrapInboundIn(data) {
            case .head(let head):
                self.head = head
                body.clear()
            case .body(var chunk):
                body.writeBuffer(&chunk)
            case .end:
                guard let head else { return }
                respond(context: context, head: head)
            }
        }

        private func respond(context: ChannelHandlerContext, head: HTTPRequestHead) {
            let fail = box.failures.withLock { (remaining: inout Int) -> Bool in
                guard remaining > 0 else { return false }
                remaining -= 1
                return true
            }
            let status = fail ? 500 : 200
            let headers = Dictionary(head.headers.map { ($0.name.lowercased(), $0.value) }, uniquingKeysWith: { $1 })
            box.deliveries.withLock {
                $0.append(
                    Delivery(path: head.uri, headers: headers, body: Data(body.readableBytesView), status: status))
            }
            let reply = ByteBuffer(string: fail ? "{\"error\": \"failing on purpose\"}" : "{\"ok\": true}")
            var responseHeaders = HTTPHeaders([
                ("Content-Type", "application/json"), ("Content-Length", String(reply.readableBytes)),
            ])
            if !head.isKeepAlive { responseHeaders.add(name: "Connection", value: "close") }
            context.write(
                wrapOutboundOut(
                    .head(
                        HTTPResponseHead(
                            version: head.version, status: HTTPResponseStatus(statusCode: status),
                            headers: responseHeaders))),
                promise: nil)
            context.write(wrapOutboundOut(.body(.byteBuffer(reply))), promise: nil)
            let keepAlive = head.isKeepAlive
            let channel = context.channel
            context.writeAndFlush(wrapOutboundOut(.end(nil))).whenComplete { _ in
                if !keepAlive { channel.close(promise: nil) }
            }
            self.head = nil
        }
    }
}
