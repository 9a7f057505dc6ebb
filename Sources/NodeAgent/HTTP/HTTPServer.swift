import AuroraAPI
import Foundation
import Hummingbird
import HummingbirdCore
import HummingbirdTLS
import Logging
import Mesh
import Metrics
import NIOCore
import Prometheus
import ServiceLifecycle

/// The agent's HTTP API (Hummingbird), on loopback by default.
///
/// A namespace: the route groups are its extensions, one file per area (registry, jobs, secrets
/// and connectivity, backups, PostgreSQL, WireGuard, operator views). Who may call what is
/// docs/API.md §3a, enforced here by `authorize`, `authenticateNode`, `client` and ``JobAccess``.
public enum HTTPServer {
    /// Builds the applications, each a `Service` in the agent's `ServiceGroup`: plain HTTP on
    /// `listen`, and TLS 1.3 on `tls.listen` when set (both serve the same routes), and plain
    /// HTTP on `metrics.listen` when set (`GET /metrics` only).
    ///
    /// Connections that stay idle, or send a request head too slowly, close after
    /// `http.idle_timeout_s`; a request head holds at most 100 fields, 16 KiB per field and 64 KiB
    /// in all. Throws when the TLS identity does not make a server configuration.
    static func applications(
        agent: AgentParts, role: RoleParts, metrics: PrometheusCollectorRegistry?,
        tls: TLSIdentity, logger: Logger
    ) throws -> [any Service] {
        let state = agent.state
        let router = router(agent: agent, role: role, metrics: metrics, logger: logger)
        // Idle connections and slow request heads are closed after http.idle_timeout_s
        // (Hummingbird's idle timer runs until a request has been read in full).
        let http1 = HTTP1Channel.Configuration(
            idleTimeout: .seconds(Int64(state.config.idleTimeoutS)),
            httpDecoderConfiguration: .init(
                maxHeaderFieldSize: 16 * 1024, maxHeaderListSize: 64 * 1024,
                maxHeaderFieldCount: 100))
        let address = state.config.listen
        var services: [any Service] = [
            Application(
                router: router,
                server: .http1(configuration: http1),
                configuration: .init(address: .hostname(address.host, port: address.port), serverName: nil),
                onServerRunning: { channel in
                    logger.info(
                        "listening",
                        metadata: ["nodeagent.address": "\(channel.localAddress?.description ?? address.description)"])
                },
                logger: logger)
        ]
        if let secure = state.config.tlsListen {
            services.append(
                Application(
                    router: router,
                    server: try .tls(.http1(configuration: http1), tlsConfiguration: tls.serverConfiguration),
                    configuration: .init(address: .hostname(secure.host, port: secure.port), serverName: nil),
                    onServerRunning: { channel in
                        logger.info(
                            "listening with TLS",
                            metadata: [
                                "nodeagent.address": "\(channel.localAddress?.description ?? secure.description)",
                                "nodeagent.pin": "\(tls.pin)",
                            ])
                    },
                    logger: logger))
        }
        if let scrape = state.config.metricsListen {
            let responder = metricsRouter(state: state, role: role, metrics: metrics, logger: logger).buildResponder()
            services.append(
                MetricsListener(address: scrape, logger: logger) {
                    Application(
                        responder: responder, server: .http1(configuration: http1),
                        configuration: .init(address: .hostname(scrape.host, port: scrape.port), serverName: nil),
                        onServerRunning: { channel in
                            logger.info(
                                "serving /metrics",
                                metadata: [
                                    "nodeagent.address": "\(channel.localAddress?.description ?? scrape.description)"
                                ])
                        },
                        logger: logger)
                })
        }
        return services
    }

    /// Every route of the API (docs/openapi.yaml lists the same set; a unit test compares them):
    /// the same paths on every agent, answered by the lead's subsystems on the lead and forwarded,
    /// served from caches or refused with `not_lead` elsewhere.
    ///
    /// Middleware, outermost first: ``APIErrorMiddleware`` (so every refusal below it, 429 and 413
    /// included, gets the error body and is counted), ``RequestLimitMiddleware``, then
    /// ``BodyLimitMiddleware``. Served here, the same on every agent:
    ///
    /// - `GET /health`: anyone; 200 while the agent's status is `ok` (or `degraded` only because its
    ///   lead is unreachable: it still serves), else 503 with the same body; `?strict=1`: 503 for
    ///   anything but `ok`; a `strict` other than 1, true, 0, false or empty is 400;
    /// - `GET /metrics`: anyone; Prometheus text, `aurora_uptime_seconds` refreshed first;
    /// - `GET /api/openapi.json`: anyone; 500 `internal` if the built-in document does not convert;
    /// - `GET /api/agent`: the operator token; this agent's health, pid, data directory, listener,
    ///   start time, public identity and mesh id.
    ///
    /// Then the role's groups (registry, jobs, secrets, backups: one overload per role) and those
    /// that take the role (PostgreSQL, operator views) or need none (WireGuard).
    static func router(
        agent: AgentParts, role: RoleParts, metrics: PrometheusCollectorRegistry?,
        logger: Logger
    ) -> Router<AgentRequestContext> {
        let state = agent.state, token = agent.token
        let router = Router(context: AgentRequestContext.self)
        router.middlewares.add(APIErrorMiddleware(logger: logger))
        router.middlewares.add(RequestLimitMiddleware(limits: RequestLimits(config: state.config)))
        router.middlewares.add(BodyLimitMiddleware(maxBytes: state.config.maxBodyBytes))
        router.middlewares.add(ConsoleSessionMiddleware(sessions: token.sessions))
        if case .lead(let lead) = role, let leadership = lead.leadership {
            router.middlewares.add(LeadEpochMiddleware(leadership: leadership))
        }

        router.on(API.health) { request, _ -> Response in
            let text = request.uri.queryParameters.get("strict")
            guard let strict = HealthStrictness.parse(text) else {
                throw Refusal.badRequest(
                    "strict must be 1, true, 0 or false (or a bare ?strict), got '\(InputRules.printable(String(text?.prefix(64) ?? "")))'"
                )
            }
            let health = state.health
            let serving = health.status == .ok || (!strict && health.servesWithoutLead)
            return try json(health, status: serving ? .ok : .serviceUnavailable)
        }
        router.on(API.metrics) { _, _ -> Response in
            await metricsResponse(state: state, role: role, metrics: metrics)
        }
        router.on(API.openAPI) { _, _ -> Response in
            guard let document = OpenAPIDocument.served else {
                throw Refusal(
                    .internalFailure, code: "internal",
                    message: "the built-in OpenAPI document does not convert to JSON")
            }
            return Response(
                status: .ok, headers: [.contentType: "application/json"],
                body: .init(byteBuffer: ByteBuffer(bytes: document)))
        }
        router.on(API.agent) { request, _ -> Response in
            try authorize(request, token: token)
            let status = AgentStatus(
                health: state.health, pid: getpid(), dataDir: state.config.dataDir,
                listen: state.config.listen.description,
                startedAt: ISO8601DateFormatter().string(from: state.startedAt),
                identity: state.identity.publicIdentity,
                meshID: state.meshID)
            return try json(status, status: .ok)
        }
        switch role {
        case .lead(let lead):
            addRegistryRoutes(to: router, agent: agent, lead: lead)
            addJobRoutes(to: router, agent: agent, lead: lead)
            addSecretRoutes(to: router, agent: agent, lead: lead)
            addBackupRoutes(to: router, agent: agent, lead: lead)
        case .node(let node):
            addRegistryRoutes(to: router, agent: agent, node: node)
            addJobRoutes(to: router, agent: agent, node: node)
            addSecretRoutes(to: router, agent: agent, node: node)
            addBackupRoutes(to: router, agent: agent, node: node)
        }
        addPostgresRoutes(to: router, agent: agent, role: role)
        addWireGuardRoutes(to: router, agent: agent)
        addOperatorRoutes(to: router, agent: agent, role: role)
        addLeadRoutes(to: router, agent: agent, role: role)
        addInferenceRoutes(to: router, agent: agent, role: role)
        addGatewayKeyRoutes(to: router, agent: agent, role: role)
        addConsoleRoutes(to: router, agent: agent)
        return router
    }

    /// `GET /metrics`: Prometheus text, `aurora_uptime_seconds` refreshed first; on the lead, the
    /// per-node series follow the registry's.
    static func metricsResponse(state: AgentState, role: RoleParts, metrics: PrometheusCollectorRegistry?) async
        -> Response
    {
        Gauge(label: "aurora_uptime_seconds").record(state.uptime)
        var buffer = [UInt8]()
        metrics?.emit(into: &buffer)
        if case .lead(let lead) = role, metrics != nil { buffer += await MeshMetrics.scrape(lead) }
        return Response(
            status: .ok, headers: [.contentType: "text/plain; version=0.0.4; charset=utf-8"],
            body: .init(byteBuffer: ByteBuffer(bytes: buffer)))
    }

    /// The router of `metrics.listen`: `GET /metrics` and nothing else (404 for every other
    /// path), behind the same error body and request limits as the API.
    static func metricsRouter(
        state: AgentState, role: RoleParts, metrics: PrometheusCollectorRegistry?, logger: Logger
    ) -> Router<AgentRequestContext> {
        let router = Router(context: AgentRequestContext.self)
        router.middlewares.add(APIErrorMiddleware(logger: logger))
        router.middlewares.add(RequestLimitMiddleware(limits: RequestLimits(config: state.config)))
        router.on(API.metrics) { _, _ -> Response in
            await metricsResponse(state: state, role: role, metrics: metrics)
        }
        return router
    }

    /// Whether `host` is a loopback address or name (plain HTTP is fine there).
    ///
    /// Textual: no name is resolved, and an IPv4-mapped `::ffff:127.0.0.1` does not count.
    static func isLoopback(_ host: String) -> Bool {
        host.hasPrefix("127.") || host == "::1" || host.lowercased() == "localhost"
    }

    /// A bearer token that needs at least `role` (a scoped API token, or the operator token):
    /// the caller's name as jobs record it. 401 for an unknown token, 403 for too small a role.
    ///
    /// The operator token is role `admin`, caller `operator`. API tokens exist only on the lead: one
    /// answers its grant's role and caller (`api:ID[@COMPANY]`, or `operator` for an `admin` one), so
    /// another agent accepts only its own operator token. A missing header, a scheme other than
    /// `Bearer` (any case) or an unknown token is 401 `unauthorized`; too small a role 403 `forbidden`.
    static func authorize(_ request: Request, token: AdminToken, role needed: APIRole) throws -> String {
        guard let header = request.headers[.authorization] else {
            throw Refusal.unauthorized("this call needs the operator token or an API token (Authorization: Bearer …)")
        }
        let parts = header.split(separator: " ", maxSplits: 1)
        guard parts.count == 2, parts[0].lowercased() == "bearer", let (role, caller) = token.role(of: String(parts[1]))
        else {
            throw Refusal.unauthorized("the token is not valid for this agent")
        }
        guard role >= needed else {
            throw Refusal(
                .forbidden, code: "forbidden",
                message: "this API token's role is \(role.rawValue); the call needs \(needed.rawValue)")
        }
        return caller
    }

    /// The token of an `Authorization: Bearer <token>` header (any case of `Bearer`); nil without one.
    static func bearerToken(_ request: Request) -> String? {
        guard let header = request.headers[.authorization] else { return nil }
        let parts = header.split(separator: " ", maxSplits: 1)
        guard parts.count == 2, parts[0].lowercased() == "bearer" else { return nil }
        return String(parts[1])
    }

    /// Operator calls carry `Authorization: Bearer <token>`.
    ///
    /// Accepted: this agent's operator token and, on the lead, an API token with role `admin`. A
    /// missing header, another scheme or any other token is 401 `unauthorized`, never 403: a `read`
    /// or `submit` API token is simply not an operator. The caller's name is not returned.
    static func authorize(_ request: Request, token: AdminToken) throws {
        guard let header = request.headers[.authorization] else {
            throw Refusal.unauthorized(
                "this call needs the operator token (Authorization: Bearer …; aurora-cli reads DATA/admin.token)")
        }
        let parts = header.split(separator: " ", maxSplits: 1)
        guard parts.count == 2, parts[0].lowercased() == "bearer", token.accepts(String(parts[1])) else {
            throw Refusal.unauthorized("the operator token is not valid for this agent")
        }
    }

    /// A JSON answer with `status`: `Content-Type: application/json`, keys sorted, slashes not
    /// escaped (``APICoding``). Throws only when `value` does not encode (then a 500 `internal`).
    static func json(_ value: some Encodable, status: HTTPResponse.Status) throws -> Response {
        let data = try APICoding.encoder().encode(value)
        return Response(
            status: status, headers: [.contentType: "application/json"],
            body: .init(byteBuffer: ByteBuffer(bytes: data)))
    }
}

// MARK: - Middleware

/// Turns every error into `{"error": {"code", "message"}}` with the right status, and counts
/// requests by method and status. Internal errors are logged, never shown.
///
/// - a ``Refusal``: its status and code, and `Retry-After` (seconds) when it has one (429);
/// - Hummingbird's `HTTPError` (no route, a body over the limit, a malformed request): its
///   status, with the codes of ``describe(_:request:)``;
/// - anything else: 500 `internal`, logged with the path and the error's type only.
///
/// Metrics: `aurora_http_requests_total` by method, route (the endpoint's pattern, `other` for
/// none) and status, and `aurora_http_request_duration_seconds` by method and route, in whole
/// milliseconds. For a streamed body
/// (events, backups) the time runs until the response head is ready, not to the stream's end.
struct APIErrorMiddleware<Context: RequestContext>: RouterMiddleware {
    let logger: Logger

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws
        -> Response
    {
        let started = ContinuousClock.now
        var response: Response
        do {
            response = try await next(request, context)
        } catch let error as Refusal {
            response = Self.render(status: error.status, code: error.code, message: error.message, request: request)
            if let seconds = error.retryAfterSeconds { response.headers[.retryAfter] = String(seconds) }
        } catch let error as HTTPError {
            let (code, message) = Self.describe(error, request: request)
            response = Self.render(status: error.status, code: code, message: message, request: request)
        } catch {
            logger.error(
                "request failed",
                metadata: [
                    "nodeagent.path": "\(request.uri.path)",
                    "nodeagent.error": "\(String(reflecting: type(of: error)))",
                ])
            response = Self.render(
                status: .internalServerError, code: "internal", message: "internal error; see the agent's log",
                request: request)
        }
        let method = request.method.rawValue
        let route = API.route(method: method, path: request.uri.path)
        let dimensions = [("method", method), ("route", route), ("status", String(response.status.code))]
        Counter(label: "aurora_http_requests_total", dimensions: dimensions).increment()
        Timer(label: "aurora_http_request_duration_seconds", dimensions: [("method", method), ("route", route)])
            .recordNanoseconds((ContinuousClock.now - started).milliseconds * 1_000_000)
        return response
    }

    /// OpenAI's error type for a status.
    static func openAIType(_ status: HTTPResponse.Status) -> String {
        switch status.code {
        case 401: "authentication_error"
        case 403: "permission_error"
        case 404: "invalid_request_error"
        case 429: "rate_limit_error"
        case 400..<500: "invalid_request_error"
        default: "api_error"
        }
    }

    /// The code and message for an error Hummingbird raised itself: `not_found` and
    /// `method_not_allowed` name the method and path; `payload_too_large` and `bad_request` use the
    /// error's body when it has one; any other status its reason phrase in snake case
    /// (`service_unavailable`), with the body, else the phrase, as the message.
    static func describe(_ error: HTTPError, request: Request) -> (String, String) {
        switch error.status {
        case .notFound: ("not_found", "no route for \(request.method.rawValue) \(request.uri.path)")
        case .contentTooLarge: ("payload_too_large", error.body ?? "the request body is larger than allowed")
        case .methodNotAllowed:
            ("method_not_allowed", "\(request.method.rawValue) is not allowed on \(request.uri.path)")
        case .badRequest: ("bad_request", error.body ?? "the request is malformed")
        default:
            (
                error.status.reasonPhrase.lowercased().replacingOccurrences(of: " ", with: "_"),
                error.body ?? error.status.reasonPhrase
            )
        }
    }

    /// The error body `{"error": {"code", "message"}}` as a JSON answer with `status`; `{}` should
    /// it not encode. On the OpenAI-compatible routes (`/v1/…`) it also has OpenAI's `type`.
    static func render(status: HTTPResponse.Status, code: String, message: String, request: Request? = nil)
        -> Response
    {
        let type = request.flatMap { $0.uri.path.hasPrefix("/v1/") ? Self.openAIType(status) : nil }
        let body =
            (try? APICoding.encoder().encode(ErrorResponse(code: code, message: message, type: type)))
            ?? Data("{}".utf8)
        return Response(
            status: status, headers: [.contentType: "application/json"],
            body: .init(byteBuffer: ByteBuffer(bytes: body)))
    }
}

/// Refuses bodies over `http.max_body_bytes` with 413 before any handler sees them: at once
/// from `Content-Length`, or while collecting a chunked body.
///
/// The whole body is collected here, in memory, before the route runs, so a handler's own
/// `collectBody(upTo:)` reads that buffer rather than the connection.
struct BodyLimitMiddleware<Context: RequestContext>: RouterMiddleware {
    /// `http.max_body_bytes`: the largest body accepted, in bytes.
    let maxBytes: Int

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws
        -> Response
    {
        let tooLarge = Refusal(
            .tooLarge, code: "payload_too_large",
            message: "the request body is larger than \(maxBytes) bytes (http.max_body_bytes)")
        if let length = request.headers[.contentLength].flatMap({ Int($0) }), length > maxBytes { throw tooLarge }
        var request = request
        do {
            _ = try await request.collectBody(upTo: maxBytes)
        } catch let error as HTTPError where error.status == .contentTooLarge {
            throw tooLarge
        }
        return try await next(request, context)
    }
}

/// The `metrics.listen` server, bound again every 2 s until it can be: a mesh address exists
/// only once the agent's WireGuard interface is up, and the agent must not stop for want of it.
/// Ends at the agent's graceful shutdown.
struct MetricsListener: Service {
    let address: HostPort
    let logger: Logger
    let makeApplication: @Sendable () -> Application<RouterResponder<AgentRequestContext>>

    init(
        address: HostPort, logger: Logger,
        makeApplication: @escaping @Sendable () -> Application<RouterResponder<AgentRequestContext>>
    ) {
        self.address = address
        self.logger = logger
        self.makeApplication = makeApplication
    }

    func run() async throws {
        await Rebinding.serve(
            until: "cannot serve /metrics yet; trying again every 2 s", address: address.description, logger: logger
        ) {
            try await makeApplication().run()
        }
    }
}

/// Listeners on addresses that may not exist yet (a mesh address before the tunnel is up).
enum Rebinding {
    /// Runs `serve` until it returns; while it throws (it cannot bind yet), runs it again every
    /// 2 s, logging `warning` once with the first error. Returns at the agent's graceful shutdown.
    static func serve(
        until warning: Logger.Message, address: String, logger: Logger, _ serve: () async throws -> Void
    ) async {
        var warned = false
        while !Task.isCancelled && !Task.isShuttingDownGracefully {
            do {
                try await serve()
                return
            } catch {
                if Task.isShuttingDownGracefully || Task.isCancelled { return }
                if !warned {
                    logger.warning(
                        warning, metadata: ["nodeagent.address": "\(address)", "nodeagent.error": "\(error)"])
                    warned = true
                }
            }
            try? await cancelWhenGracefulShutdown { try await Task.sleep(for: .seconds(2)) }
        }
    }
}
