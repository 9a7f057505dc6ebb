import AuroraAPI
import Foundation
import Hummingbird
import Logging
import Mesh
import NIOCore
import NIOHTTP1

/// The request context of the agent's API: Hummingbird's, plus the peer address (the lead
/// probes a late node at the address its requests come from).
public struct AgentRequestContext: RequestContext, RemoteAddressRequestContext {
    public var coreContext: CoreRequestContextStorage
    public let remoteAddress: SocketAddress?

    public init(source: ApplicationRequestContextSource) {
        self.coreContext = .init(source: source)
        self.remoteAddress = source.channel.remoteAddress
    }

    var remoteHost: String? { remoteAddress?.ipAddress }
}

extension HTTPServer {
    /// Registry, join, token and event routes as the lead answers them (docs/API.md).
    static func addRegistryRoutes(to router: Router<AgentRequestContext>, agent: AgentParts, lead: LeadParts) {
        let maxBody = agent.maxBody, token = agent.token
        let registry = lead.registry, store = lead.store, apiTokens = lead.apiTokens

        // MARK: Join and signed node calls (lead)
        router.on(API.join) { request, context -> Response in
            let join = try await decode(JoinRequest.self, request, maxBody: maxBody, allowed: JoinRequest.fields)
            return try json(try await registry.join(join, observedHost: context.remoteHost), status: .created)
        }
        router.on(API.heartbeat) { request, context -> Response in
            let (name, body) = try await authenticateNode(
                request, context: context, registry: registry, maxBody: maxBody)
            let target = try context.parameters.decoded("name")
            guard name == target else {
                throw Refusal.unauthorized("node '\(name)' cannot send heartbeats for '\(target)'")
            }
            // Unknown fields are allowed here: a newer node may report more than this lead knows
            // (rolling upgrades); the body is signed, so nothing in it is a stranger's.
            let beat = try decode(HeartbeatRequest.self, body, allowed: nil)
            return try json(try await registry.heartbeat(name, beat, observedHost: context.remoteHost), status: .ok)
        }
        router.on(API.leave) { request, context -> Response in
            let (name, _) = try await authenticateNode(request, context: context, registry: registry, maxBody: maxBody)
            let target = try context.parameters.decoded("name")
            guard name == target else { throw Refusal.unauthorized("node '\(name)' cannot leave for '\(target)'") }
            try await registry.leave(name)
            return try json(try await registry.node(name), status: .ok)
        }

        // MARK: Reads: operator token or a node's signature; other agents forward or serve the cache
        router.on(API.listNodes) { request, context -> Response in
            try await authorizeOperatorOrNode(
                request, context: context, token: token, registry: registry, maxBody: maxBody)
            return try json(try await registry.list(), status: .ok)
        }
        router.on(API.getNode) { request, context -> Response in
            let name = try context.parameters.decoded("name")
            try await authorizeOperatorOrNode(
                request, context: context, token: token, registry: registry, maxBody: maxBody)
            return try json(try await registry.node(name), status: .ok)
        }
        router.on(API.removeNode) { request, context -> Response in
            try authorize(request, token: token)
            let name = try context.parameters.decoded("name")
            try await registry.remove(name)
            return try json(try await registry.node(name), status: .ok)
        }
        router.on(API.setNodeLabels) { request, context -> Response in
            try authorize(request, token: token)
            let update = try await decode(
                NodeLabelsUpdate.self, request, maxBody: maxBody, allowed: NodeLabelsUpdate.fields)
            return try json(
                try await registry.setLabels(try context.parameters.decoded("name"), update.labels), status: .ok)
        }
        router.on(API.topology) { request, context -> Response in
            try await authorizeOperatorOrNode(
                request, context: context, token: token, registry: registry, maxBody: maxBody)
            return try json(try await registry.topology(), status: .ok)
        }

        // MARK: Join tokens (lead, operator token)
        router.on(API.createToken) { request, _ -> Response in
            try authorize(request, token: token)
            let create = try await decode(
                TokenCreateRequest.self, request, maxBody: maxBody, allowed: TokenCreateRequest.fields)
            if create.kind == .api { return try json(try await apiTokens.create(create), status: .created) }
            return try json(try await JoinTokens.create(create, store: store, lead: lead.leadTLS), status: .created)
        }
        router.on(API.listTokens) { request, _ -> Response in
            try authorize(request, token: token)
            var list = try await JoinTokens.list(store: store)
            list.apiTokens = try await apiTokens.list()
            return try json(list, status: .ok)
        }
        router.on(API.revokeToken) { request, context -> Response in
            try authorize(request, token: token)
            let id = try context.parameters.decoded("id")
            if id.hasPrefix("at_") {
                guard let info = try await apiTokens.revoke(id) else {
                    throw Refusal.notFound("no API token with id '\(InputRules.printable(id))'")
                }
                return try json(info, status: .ok)
            }
            return try json(try await JoinTokens.revoke(id, store: store), status: .ok)
        }

        // MARK: Events (lead, operator token): Server-Sent Events
        router.on(API.events) { request, _ -> Response in
            _ = try authorize(request, token: token, role: .read)
            let since: Int64
            if let text = request.uri.queryParameters.get("since") ?? request.headers[.init("Last-Event-ID")!] {
                guard let value = Int64(text), value >= 0 else {
                    throw Refusal.badRequest("since / Last-Event-ID must be an event sequence number (0 or more)")
                }
                since = value
            } else {
                let tail =
                    try request.uri.queryParameters.get("tail").map { text throws(Refusal) -> Int64 in
                        guard let value = Int64(text), value >= 0 else {
                            throw Refusal.badRequest("tail must be a number of events (0 or more)")
                        }
                        return value
                    } ?? 0
                do throws(AgentError) { since = max(0, try await EventLog.latest(store: store) - tail) } catch {
                    throw Refusal.storeUnavailable(error)
                }
            }
            let follow = request.uri.queryParameters.get("follow").map { $0 != "false" && $0 != "0" } ?? true
            let filter = try EventFilter(
                types: request.uri.queryParameters.get("type"), node: request.uri.queryParameters.get("node"))
            let hub = agent.hub
            let (subscription, stream) = hub.subscribe()
            let backlog: [MeshEvent]
            do throws(AgentError) { backlog = try await EventLog.since(since, limit: 10_000, store: store) } catch {
                hub.unsubscribe(subscription)
                throw Refusal.storeUnavailable(error)
            }
            let body = ResponseBody { writer in
                defer { hub.unsubscribe(subscription) }
                var last = since
                for event in backlog {
                    if filter.matches(event) { try await writer.write(ByteBuffer(string: EventLog.sse(event))) }
                    last = event.seq
                }
                if follow {
                    try await writer.write(ByteBuffer(string: ": following from \(last)\n\n"))
                    for await item in stream {
                        switch item {
                        case .event(let event) where event.seq > last:
                            if filter.matches(event) { try await writer.write(ByteBuffer(string: EventLog.sse(event))) }
                            last = event.seq
                        case .event:
                            continue
                        case .ping:
                            try await writer.write(ByteBuffer(string: ": ping\n\n"))
                        }
                    }
                }
                try await writer.finish(nil)
            }
            return Response(
                status: .ok, headers: [.contentType: "text/event-stream", .cacheControl: "no-cache"], body: body)
        }
    }

    /// The same routes on a compute or edge node: reads are forwarded to the lead with this
    /// node's signature (or answered from the cached copy, marked stale, while the lead is
    /// away); everything else is the lead's.
    static func addRegistryRoutes(to router: Router<AgentRequestContext>, agent: AgentParts, node: NodeParts) {
        let token = agent.token
        leadOnly(router, API.join, "joining", agent: agent)
        leadOnly(router, API.heartbeat, "heartbeats", agent: agent)
        leadOnly(router, API.leave, "leaving", agent: agent)
        router.on(API.listNodes) { request, _ -> Response in
            try authorize(request, token: token)
            return try json(try await forwardedList(node: node), status: .ok)
        }
        router.on(API.getNode) { request, context -> Response in
            let name = try context.parameters.decoded("name")
            try authorize(request, token: token)
            let list = try await forwardedList(node: node)
            guard let found = list.nodes.first(where: { $0.name == name }) else {
                throw Refusal.notFound("no node named '\(name)'")
            }
            return try json(found, status: .ok, stale: list.stale ? list.ageS ?? 0 : nil)
        }
        leadOnly(router, API.removeNode, "removing a node", agent: agent)
        leadOnly(router, API.setNodeLabels, "setting a node's labels", agent: agent)
        router.on(API.topology) { request, _ -> Response in
            try authorize(request, token: token)
            let membership = node.membership, cache = node.cache
            let answer: Result<Topology, LeadCallError>
            do throws(LeadCallError) {
                answer = .success(
                    try await membership.leadClient.call(.GET, Routes.topology, as: Topology.self, timeout: .seconds(2))
                )
            } catch {
                answer = .failure(error)
            }
            switch answer {
            case .success(let topology):
                return try json(topology, status: .ok)
            case .failure(let error):
                guard var topology = cache.current?.topology else {
                    throw Refusal(
                        .unavailable, code: "lead_unreachable", message: "\(error.message), and no cached topology yet")
                }
                topology.stale = true
                topology.ageS = cache.age()
                return try json(topology, status: .ok)
            }
        }
        leadOnly(router, API.createToken, "join tokens", agent: agent)
        leadOnly(router, API.listTokens, "join tokens", agent: agent)
        leadOnly(router, API.revokeToken, "join tokens", agent: agent)
        leadOnly(router, API.events, "the event stream", agent: agent)
    }

    // MARK: Helpers

    /// The lead's list through this node's signed identity; the cache (marked stale) when the
    /// lead does not answer.
    static func forwardedList(node: NodeParts) async throws(Refusal) -> NodeList {
        let membership = node.membership, cache = node.cache
        do throws(LeadCallError) {
            let list = try await membership.leadClient.call(.GET, Routes.nodes, as: NodeList.self, timeout: .seconds(2))
            cache.store(nodes: list, topology: nil)
            return list
        } catch {
            guard var list = cache.current?.nodes else {
                throw Refusal(
                    .unavailable, code: "lead_unreachable", message: "\(error.message), and no cached view yet")
            }
            list.stale = true
            list.ageS = cache.age()
            list.reason = error.message
            return list
        }
    }

    /// Verifies a node's signature; returns its name and the body it signed.
    static func authenticateNode(
        _ request: Request, context: AgentRequestContext, registry: Registry,
        maxBody: Int
    ) async throws -> (String, [UInt8]) {
        guard let headers = try SignedHeaders.parse({ request.headers[.init($0)!] }) else {
            throw Refusal.unauthorized(
                "unsigned request: node calls need \(RequestSigning.nodeHeader), \(RequestSigning.timestampHeader), \(RequestSigning.nonceHeader) and \(RequestSigning.signatureHeader)"
            )
        }
        var request = request
        let body = Array(try await request.collectBody(upTo: maxBody).readableBytesView)
        let path = request.uri.path + (request.uri.query.map { "?" + $0 } ?? "")
        let name = try await registry.authenticate(headers, method: request.method.rawValue, path: path, body: body)
        return (name, body)
    }

    /// Operator token (or an API token that may read), or a node's valid signature.
    static func authorizeOperatorOrNode(
        _ request: Request, context: AgentRequestContext, token: AdminToken, registry: Registry,
        maxBody: Int
    ) async throws {
        if request.headers[.authorization] != nil {
            _ = try authorize(request, token: token, role: .read)
        } else {
            _ = try await authenticateNode(request, context: context, registry: registry, maxBody: maxBody)
        }
    }

    /// Decodes a JSON body; bad JSON, unknown fields and wrong types are 400 naming the field.
    static func decode<T: Decodable>(_ type: T.Type, _ request: Request, maxBody: Int, allowed: Set<String>)
        async throws -> T
    {
        var request = request
        let body = Array(try await request.collectBody(upTo: maxBody).readableBytesView)
        return try decode(type, body, allowed: allowed)
    }

    static func decode<T: Decodable>(_ type: T.Type, _ body: [UInt8], allowed: Set<String>?) throws(Refusal) -> T {
        guard !body.isEmpty else { throw Refusal.badRequest("the request needs a JSON body") }
        if let control = InputRules.controlCharacter(inJSON: body) {
            throw Refusal.badRequest(
                "the body carries a control character (U+\(String(control.value, radix: 16, uppercase: true))) in a string; "
                    + "only tab, newline and carriage return are allowed")
        }
        if let allowed {
            guard let object = try? JSONSerialization.jsonObject(with: Data(body)) as? [String: Any] else {
                throw Refusal.badRequest("the body is not a JSON object")
            }
            if let unknown = object.keys.sorted().first(where: { !allowed.contains($0) }) {
                throw Refusal.badRequest("unknown field '\(unknown)'")
            }
        }
        do {
            return try APICoding.decoder().decode(T.self, from: Data(body))
        } catch let DecodingError.keyNotFound(key, context) {
            throw Refusal.badRequest("missing field '\(fieldPath(context.codingPath + [key]))'")
        } catch let DecodingError.typeMismatch(expected, context) {
            throw Refusal.badRequest("field '\(fieldPath(context.codingPath))' must be \(describe(expected))")
        } catch let DecodingError.valueNotFound(expected, context) {
            throw Refusal.badRequest("field '\(fieldPath(context.codingPath))' must be \(describe(expected)), not null")
        } catch let DecodingError.dataCorrupted(context) {
            throw Refusal.badRequest("field '\(fieldPath(context.codingPath))': \(context.debugDescription)")
        } catch {
            throw Refusal.badRequest("the body does not decode")
        }
    }

    private static func fieldPath(_ path: [any CodingKey]) -> String {
        path.map { $0.intValue.map { "[\($0)]" } ?? $0.stringValue }.joined(separator: ".").replacingOccurrences(
            of: ".[", with: "[")
    }

    private static func describe(_ type: Any.Type) -> String {
        switch type {
        case is String.Type: "a string"
        case is Int.Type, is Int64.Type: "an integer"
        case is Double.Type: "a number"
        case is Bool.Type: "true or false"
        default:
            "\(type)".contains("Dictionary")
                ? "an object" : "\(type)".contains("Array") ? "a list" : "a value of another shape"
        }
    }

    static func json(_ value: some Encodable, status: HTTPResponse.Status, stale ageS: Double?) throws -> Response {
        var response = try json(value, status: status)
        if let ageS { response.headers[.init("X-Aurora-Stale-Age")!] = String(ageS) }
        return response
    }
}
