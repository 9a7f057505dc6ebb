import Foundation
import NIOCore
import NIOHTTP1
import NIOPosix
import Synchronization

/// A small inference server for tests, on 127.0.0.1: answers OpenAI-style
/// `POST /v1/chat/completions` and Ollama-style `POST /api/generate`. The answer echoes the
/// prompt. `options.delay_ms` in the request (or `defaultDelay`) makes it take that long, so
/// tests can keep jobs running. Every request is recorded.
///
/// With `models`, it lists them as Ollama does (`GET /api/tags`, and `loaded` as `GET /api/ps`)
/// and as an OpenAI-style server does (`GET /v1/models`); with `openAIOnly` only the latter (the
/// Ollama paths are 404). Without `models` every listing is 404: a server that does not say.
public final class FakeInference: Sendable {
    /// What the model listings say.
    struct Catalog: Sendable {
        var models: [String]?
        var loaded: [String]
        var openAIOnly: Bool
    }

    public struct Request: Sendable {
        public var path: String
        public var prompt: String
        public var body: [String: any Sendable]
    }

    public let port: Int
    public var url: String { "http://127.0.0.1:\(port)" }
    private let channel: any Channel
    private let log: RequestLog

    private final class RequestLog: Sendable {
        let entries = Mutex<[Request]>([])
    }

    public init(
        defaultDelay: Duration = .zero, models: [String]? = nil, loaded: [String] = [], openAIOnly: Bool = false
    ) async throws {
        let log = RequestLog()
        let catalog = Catalog(models: models, loaded: loaded, openAIOnly: openAIOnly)
        let delayMs =
            defaultDelay.components.seconds * 1000 + defaultDelay.components.attoseconds / 1_000_000_000_000_000
        let bootstrap = ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .serverChannelOption(ChannelOptions.socketOption(.so_reuseaddr), value: 1)
            .childChannelInitializer { channel in
                channel.pipeline.configureHTTPServerPipeline().flatMap {
                    channel.pipeline.addHandler(Handler(log: log, defaultDelayMs: delayMs, catalog: catalog))
                }
            }
        self.channel = try await bootstrap.bind(host: "127.0.0.1", port: try freePort()).get()
        self.port = channel.localAddress?.port ?? 0
        self.log = log
    }

    /// Every inference request so far (the model listings agents poll are not counted).
    public var requests: [Request] { log.entries.withLock { $0 } }

    public func stop() async {
        try? await channel.close()
    }

    private final class Handler: ChannelInboundHandler, @unchecked Sendable {  // one per connection, on its event loop
        typealias InboundIn = HTTPServerRequestPart
        typealias OutboundOut = HTTPServerResponsePart

        let log: RequestLog
        let defaultDelayMs: Int64
        let catalog: Catalog
        var head: HTTPRequestHead?
        var body = ByteBuffer()

        init(log: RequestLog, defaultDelayMs: Int64, catalog: Catalog) {
            self.log = log
            self.defaultDelayMs = defaultDelayMs
            self.catalog = catalog
        }

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
            let object =
                (try? JSONSerialization.jsonObject(with: Data(body.readableBytesView))) as? [String: Any] ?? [:]
            let options = object["options"] as? [String: Any] ?? [:]
            var prompt = object["prompt"] as? String ?? ""
            if let messages = object["messages"] as? [[String: Any]], let last = messages.last?["content"] as? String {
                prompt = last
            }
            let model = object["model"] as? String ?? ""
            let delay =
                (options["delay_ms"] as? Int).map(Int64.init) ?? (object["delay_ms"] as? Int).map(Int64.init)
                ?? defaultDelayMs
            if head.method != .GET {
                log.entries.withLock {
                    $0.append(Request(path: head.uri, prompt: prompt, body: object.mapValues { "\($0)" }))
                }
            }
            let answer: [String: Any]
            let status: HTTPResponseStatus
            switch head.uri {
            case "/api/tags" where !catalog.openAIOnly && catalog.models != nil,
                "/api/ps" where !catalog.openAIOnly && catalog.models != nil:
                status = .ok
                answer = [
                    "models": (head.uri == "/api/ps" ? catalog.loaded : catalog.models ?? []).map {
                        ["name": $0, "model": $0, "size": 4_000_000_000]
                    }
                ]
            case "/v1/models" where catalog.models != nil:
                status = .ok
                answer = [
                    "object": "list",
                    "data": (catalog.models ?? []).map {
                        ["id": $0, "object": "model", "created": 0, "owned_by": "fake"]
                    },
                ]
            case "/v1/chat/completions":
                status = .ok
                answer = [
                    "id": "chatcmpl-fake", "object": "chat.completion", "model": model,
                    "choices": [
                        [
                            "index": 0, "message": ["role": "assistant", "content": "echo: \(prompt)"],
                            "finish_reason": "stop",
                        ]
                    ],
                    "usage": [
                        "prompt_tokens": prompt.count, "completion_tokens": prompt.count + 6,
                        "total_tokens": 2 * prompt.count + 6,
                    ],
                ]
            case "/v1/completions":
                status = .ok
                answer = [
                    "id": "cmpl-fake", "object": "text_completion", "model": model,
                    "choices": [["index": 0, "text": "echo: \(prompt)", "finish_reason": "stop"]],
                    "usage": [
                        "prompt_tokens": prompt.count, "completion_tokens": prompt.count + 6,
                        "total_tokens": 2 * prompt.count + 6,
                    ],
                ]
            case "/v1/embeddings":
                // One vector per input: its length, then two fixed numbers (exact in binary).
                let inputs = (object["input"] as? [String]) ?? [(object["input"] as? String) ?? ""]
                status = .ok
                answer = [
                    "object": "list", "model": model,
                    "data": inputs.enumerated().map { index, text in
                        ["object": "embedding", "index": index, "embedding": [Double(text.count), 0.5, -0.25]]
                    },
                    "usage": ["prompt_tokens": inputs.joined().count, "total_tokens": inputs.joined().count],
                ]
            case "/api/generate":
                status = .ok
                answer = ["model": model, "response": "echo: \(prompt)", "done": true, "eval_count": prompt.count + 6]
            default:
                status = .notFound
                answer = ["error": "no route \(head.uri)"]
            }
            let data = (try? JSONSerialization.data(withJSONObject: answer)) ?? Data()
            let keepAlive = head.isKeepAlive
            let loopBound = NIOLoopBound(context, eventLoop: context.eventLoop)
            let handlerBound = NIOLoopBound(self, eventLoop: context.eventLoop)
            context.eventLoop.scheduleTask(in: .milliseconds(delay)) {
                let context = loopBound.value
                var headers = HTTPHeaders([
                    ("Content-Type", "application/json"), ("Content-Length", String(data.count)),
                ])
                if !keepAlive { headers.add(name: "Connection", value: "close") }
                let handler = handlerBound.value
                context.write(
                    handler.wrapOutboundOut(
                        .head(HTTPResponseHead(version: head.version, status: status, headers: headers))), promise: nil)
                context.write(handler.wrapOutboundOut(.body(.byteBuffer(ByteBuffer(bytes: data)))), promise: nil)
                let channel = context.channel
                context.writeAndFlush(handler.wrapOutboundOut(.end(nil))).whenComplete { _ in
                    if !keepAlive { channel.close(promise: nil) }
                }
            }
        }
    }
}
