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
/// With `"stream": true`, chat and text completions answer as OpenAI does, with server-sent
/// events: one chunk per piece of ``streamPieces(_:)``, the first after the delay, the next
/// `chunk_delay_ms` (in the body or `options`, else `chunkDelay`) apart, then a chunk with
/// `finish_reason`, a `usage` chunk when `stream_options.include_usage` asks, and `[DONE]`. A
/// client that closes the connection before the end is recorded (``cancelledStreams``).
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
        /// A cloud provider's key: other requests get 401 (the message repeats what came, as some do).
        var requiredKey: String? = nil
    }

    public struct Request: Sendable {
        public var path: String
        public var prompt: String
        public var body: [String: any Sendable]
        /// The `Authorization` header it came with.
        public var authorization: String? = nil
    }

    public let port: Int
    public var url: String { "http://127.0.0.1:\(port)" }
    private let channel: any Channel
    private let log: RequestLog

    private final class RequestLog: Sendable {
        let entries = Mutex<[Request]>([])
        /// Prompts of streams that ran to their end, and of those whose client went away first.
        let finishedStreams = Mutex<[String]>([])
        let cancelledStreams = Mutex<[String]>([])
    }

    public init(
        defaultDelay: Duration = .zero, models: [String]? = nil, loaded: [String] = [], openAIOnly: Bool = false,
        chunkDelay: Duration = .zero, requiredKey: String? = nil
    ) async throws {
        let chunkMs = chunkDelay.components.seconds * 1000 + chunkDelay.components.attoseconds / 1_000_000_000_000_000
        let log = RequestLog()
        let catalog = Catalog(models: models, loaded: loaded, openAIOnly: openAIOnly, requiredKey: requiredKey)
        let delayMs =
            defaultDelay.components.seconds * 1000 + defaultDelay.components.attoseconds / 1_000_000_000_000_000
        let bootstrap = ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .serverChannelOption(ChannelOptions.socketOption(.so_reuseaddr), value: 1)
            .childChannelInitializer { channel in
                channel.pipeline.configureHTTPServerPipeline().flatMap {
                    channel.pipeline.addHandler(
                        Handler(log: log, defaultDelayMs: delayMs, chunkDelayMs: chunkMs, catalog: catalog))
                }
            }
        self.channel = try await bootstrap.bind(host: "127.0.0.1", port: try freePort()).get()
        self.port = channel.localAddress?.port ?? 0
        self.log = log
    }

    /// Every inference request so far (the model listings agents poll are not counted).
    public var requests: [Request] { log.entries.withLock { $0 } }
    /// The prompts of streamed answers sent to their end.
    public var finishedStreams: [String] { log.finishedStreams.withLock { $0 } }
    /// The prompts of streamed answers whose client closed the connection before the end.
    public var cancelledStreams: [String] { log.cancelledStreams.withLock { $0 } }

    /// The pieces a streamed answer to `prompt` comes in, in order: `echo: PROMPT` cut after each
    /// space (what the chunks' `content`, or `text`, hold).
    public static func streamPieces(_ prompt: String) -> [String] {
        var pieces: [String] = []
        var current = ""
        for character in "echo: \(prompt)" {
            current.append(character)
            if character == " " {
                pieces.append(current)
                current = ""
            }
        }
        if !current.isEmpty { pieces.append(current) }
        return pieces
    }

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
        /// The prompt of the stream being sent on this connection.
        var streaming: String?
        let chunkDelayMs: Int64

        init(log: RequestLog, defaultDelayMs: Int64, chunkDelayMs: Int64, catalog: Catalog) {
            self.log = log
            self.chunkDelayMs = chunkDelayMs
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
            let authorization = head.headers.first(name: "authorization")
            if head.method != .GET {
                log.entries.withLock {
                    $0.append(
                        Request(
                            path: head.uri, prompt: prompt, body: object.mapValues { "\($0)" },
                            authorization: authorization))
                }
            }
            if let key = catalog.requiredKey, authorization != "Bearer \(key)" {
                let presented = authorization.map { String($0.dropFirst("Bearer ".count)) } ?? ""
                let data =
                    (try? JSONSerialization.data(withJSONObject: [
                        "error": [
                            "message": "Incorrect API key provided: \(presented)", "type": "invalid_request_error",
                        ]
                    ])) ?? Data()
                var headers = HTTPHeaders([
                    ("Content-Type", "application/json"), ("Content-Length", String(data.count)),
                ])
                headers.add(name: "Connection", value: "close")
                context.write(
                    wrapOutboundOut(
                        .head(HTTPResponseHead(version: head.version, status: .unauthorized, headers: headers))),
                    promise: nil)
                context.write(wrapOutboundOut(.body(.byteBuffer(ByteBuffer(bytes: data)))), promise: nil)
                let channel = context.channel
                context.writeAndFlush(wrapOutboundOut(.end(nil))).whenComplete { _ in channel.close(promise: nil) }
                return
            }
            if object["stream"] as? Bool == true, head.uri == "/v1/chat/completions" || head.uri == "/v1/completions" {
                let chunkDelay =
                    (options["chunk_delay_ms"] as? Int).map(Int64.init) ?? (object["chunk_delay_ms"] as? Int).map(
                        Int64.init)
                    ?? chunkDelayMs
                let usage = (object["stream_options"] as? [String: Any])?["include_usage"] as? Bool == true
                stream(
                    context: context, head: head, prompt: prompt, model: model,
                    chat: head.uri == "/v1/chat/completions",
                    delay: delay, chunkDelay: chunkDelay, usage: usage)
                return
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

        func channelInactive(context: ChannelHandlerContext) {
            if let prompt = streaming {
                streaming = nil
                log.cancelledStreams.withLock { $0.append(prompt) }
            }
            context.fireChannelInactive()
        }

        /// A streamed answer: events written `chunkDelay` apart after `delay`, while the client stays.
        private func stream(
            context: ChannelHandlerContext, head: HTTPRequestHead, prompt: String, model: String, chat: Bool,
            delay: Int64, chunkDelay: Int64, usage: Bool
        ) {
            let pieces = FakeInference.streamPieces(prompt)
            func chunk(_ choice: [String: Any], usage: [String: Any]? = nil) -> String {
                var object: [String: Any] = [
                    "id": chat ? "chatcmpl-fake" : "cmpl-fake",
                    "object": chat ? "chat.completion.chunk" : "text_completion",
                    "created": 0, "model": model, "choices": choice.isEmpty ? [] : [choice],
                ]
                if let usage { object["usage"] = usage }
                let data = (try? JSONSerialization.data(withJSONObject: object, options: [.sortedKeys])) ?? Data()
                return "data: \(String(decoding: data, as: UTF8.self))\n\n"
            }
            var events = pieces.enumerated().map { index, piece in
                chat
                    ? chunk([
                        "index": 0, "delta": index == 0 ? ["role": "assistant", "content": piece] : ["content": piece],
                        "finish_reason": NSNull(),
                    ])
                    : chunk(["index": 0, "text": piece, "finish_reason": NSNull()])
            }
            events.append(
                chat
                    ? chunk(["index": 0, "delta": [String: Any](), "finish_reason": "stop"])
                    : chunk(["index": 0, "text": "", "finish_reason": "stop"]))
            if usage {
                let completion = pieces.count
                events.append(
                    chunk(
                        [:],
                        usage: [
                            "prompt_tokens": prompt.count, "completion_tokens": completion,
                            "total_tokens": prompt.count + completion,
                        ]))
            }
            events.append("data: [DONE]\n\n")
            streaming = prompt
            let sending = events
            let loopBound = NIOLoopBound(context, eventLoop: context.eventLoop)
            let handlerBound = NIOLoopBound(self, eventLoop: context.eventLoop)
            let log = self.log
            @Sendable func send(_ index: Int) {
                let context = loopBound.value, handler = handlerBound.value
                guard handler.streaming == prompt, context.channel.isActive else { return }
                if index == 0 {
                    context.write(
                        handler.wrapOutboundOut(
                            .head(
                                HTTPResponseHead(
                                    version: head.version, status: .ok,
                                    headers: HTTPHeaders([
                                        ("Content-Type", "text/event-stream"), ("Cache-Control", "no-cache"),
                                    ])))), promise: nil)
                }
                context.writeAndFlush(
                    handler.wrapOutboundOut(.body(.byteBuffer(ByteBuffer(string: sending[index])))), promise: nil)
                if index + 1 < sending.count {
                    context.eventLoop.scheduleTask(in: .milliseconds(chunkDelay)) { send(index + 1) }
                } else {
                    handler.streaming = nil
                    log.finishedStreams.withLock { $0.append(prompt) }
                    context.writeAndFlush(handler.wrapOutboundOut(.end(nil)), promise: nil)
                }
            }
            context.eventLoop.scheduleTask(in: .milliseconds(delay)) { send(0) }
        }
    }
}
