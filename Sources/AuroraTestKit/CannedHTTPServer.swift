import Foundation
import NIOCore
import NIOHTTP1
import NIOPosix
import Synchronization

/// A tiny HTTP server on 127.0.0.1 that plays a broken or hostile backend: every request gets
/// the answer the test set last (any status and body, no answer at all, or a closed
/// connection). For clients that must turn whatever comes back into a typed error.
public final class CannedHTTPServer: Sendable {
    /// What every request gets.
    public enum Answer: Sendable {
        /// `status` with `body` as `application/json`.
        case respond(status: Int, body: [UInt8])
        /// Nothing: the request is read and never answered.
        case silent
        /// The connection is closed without an answer.
        case close

        /// 200 with `text` as the body.
        public static func ok(_ text: String) -> Answer { .respond(status: 200, body: Array(text.utf8)) }
    }

    public let port: Int
    public var url: String { "http://127.0.0.1:\(port)" }
    private let channel: any Channel
    private let state: Box

    private final class Box: Sendable {
        let answer = Mutex(Answer.ok("{}"))
        let paths = Mutex<[String]>([])
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

    /// The answer every later request gets.
    public func set(_ answer: Answer) { state.answer.withLock { $0 = answer } }

    /// The paths of the requests received so far, in order.
    public var paths: [String] { state.paths.withLock { $0 } }

    public func stop() async { try? await channel.close() }

    private final class Handler: ChannelInboundHandler, @unchecked Sendable {  // one per connection, on its event loop
        typealias InboundIn = HTTPServerRequestPart
        typealias OutboundOut = HTTPServerResponsePart
        let box: Box
        private var version = HTTPVersion.http1_1

        init(box: Box) { self.box = box }

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            switch unwrapInboundIn(data) {
            case .head(let head):
                version = head.version
                box.paths.withLock { $0.append(head.uri) }
            case .body:
                break
            case .end:
                respond(context)
            }
        }

        private func respond(_ context: ChannelHandlerContext) {
            switch box.answer.withLock({ $0 }) {
            case .silent:
                return
            case .close:
                context.close(promise: nil)
            case .respond(let status, let bytes):
                let body = ByteBuffer(bytes: bytes)
                let headers = HTTPHeaders([
                    ("Content-Type", "application/json"), ("Content-Length", String(body.readableBytes)),
                ])
                context.write(
                    wrapOutboundOut(
                        .head(
                            HTTPResponseHead(
                                version: version, status: HTTPResponseStatus(statusCode: status), headers: headers))),
                    promise: nil)
                context.write(wrapOutboundOut(.body(.byteBuffer(body))), promise: nil)
                context.writeAndFlush(wrapOutboundOut(.end(nil)), promise: nil)
            }
        }
    }
}
