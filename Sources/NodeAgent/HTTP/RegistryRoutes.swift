import AuroraAPI
import Foundation
import Hummingbird
import Logging
import Mesh
import NIOCore
import NIOHTTP1
import Secrets

/// The request context of the agent's API: Hummingbird's, plus the peer address (the lead
/// probes a late node at the address its requests come from).
public struct AgentRequestContext: RequestContext, RemoteAddressRequestContext {
    public var coreContext: CoreRequestContextStorage
    /// The connection's peer as the socket reports it; no `X-Forwarded-For` is read, so behind a
    /// proxy every request would come from the proxy.
    public let remoteAddress: SocketAddress?
    /// This agent's address the peer reached (the connection's local end).
    public let localAddress: SocketAddress?

    /// Takes the peer address from the channel the request arrived on.
    public init(source: ApplicationRequestContextSource) {
        self.coreContext = .init(source: source)
        self.remoteAddress = source.channel.remoteAddress
        self.localAddress = source.channel.localAddress
    }

    /// The peer's IP address as text: the key of the per-source limits, and the host the registry
    /// records for a joining or heartbeating node; nil for a peer without one (a Unix socket).
    var remoteHost: String? { remoteAddress?.ipAddress }
}

extension HTTPServer {
    /// Registry, join, token and event routes as the lead answers them (docs/API.md).
    ///
    /// - `POST /api/nodes/join`: anyone with a join token (the registry checks it: 401 when it is
    ///   invalid, revoked, expired or used); unknown fields 400; 201 with the registry's answer;
    /// - `POST /api/nodes/{name}/heartbeat`, `…/leave`: node `{name}`'s own signature (another
    ///   node's is 401); a heartbeat may carry fields this lead does not know (rolling upgrades);
    /// - `GET /nodes`, `GET /nodes/{name}`, `GET /topology`: a bearer token of role `read` or more
    ///   (the operator token is `admin`), or any joined node's signature;
    /// - `DELETE /nodes/{name}`, `PUT /nodes/{name}/labels`, `PUT /nodes/{name}/scheduling`: the
    ///   operator token;
    /// - `POST /api/tokens`, `GET /api/tokens`, `DELETE /api/tokens/{id}`: the operator token; join
    ///   tokens and API tokens (`kind: api`, ids `at_…`) share them; an unknown API token id is 404;
    /// - `GET /api/events`: a token of role `read` or more. Server-Sent Events after `?since=` or
    ///   `Last-Event-ID` (else the last `?tail=` events, default 0: only new ones), at most 10 000
    ///   from the log, filtered by ``EventFilter``, then new ones with `: ping` comments unless
    ///   `?follow=false`; the start of the live part and each ping carry `id: SEQ` alone (the last
    ///   sequence number considered, filtered out or not), so a client resumes after it;
    ///   503 `store_unavailable` when the event log cannot be read.
    static func addRegistryRoutes(to router: Router<AgentRequestContext>, agent: AgentParts, lead: LeadParts) {
        let maxBody = agent.maxBody, token = agent.token
        let registry = lead.registry, tokens = lead.tokens, events = lead.events, apiTokens = lead.apiTokens

        // MARK: Join and signed node calls (lead)
        router.on(API.join) { request, context -> Response in
            let join = try await decode(JoinRequest.self, request, maxBody: maxBody, allowed: JoinRequest.fields)
            var joined = try await registry.join(join, observedHost: context.remoteHost)
            joined.epoch = lead.leadership?.epoch
            if joined.node.role == .standby {
                try await grantStandby(&joined, lead: lead, reached: context.localAddress?.ipAddress)
            }
            return try json(joined, status: .created)
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
            var answer = try await registry.heartbeat(name, beat, observedHost: context.remoteHost)
            answer.epoch = lead.leadership?.epoch
            return try json(answer, status: .ok)
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
            let keep = try flag(request, "keep")
            let wasStandby = (try? await registry.node(name))?.role == .standby
            let removed = try await registry.remove(name, keep: keep)
            // A streaming standby's slot would keep WAL for it for ever: its slot and role go too.
            if wasStandby, let replication = lead.replication { await replication.drop(standby: name) }
            return try json(removed, status: .ok)
        }
        router.on(API.setNodeLabels) { request, context -> Response in
            try authorize(request, token: token)
            let update = try await decode(
                NodeLabelsUpdate.self, request, maxBody: maxBody, allowed: NodeLabelsUpdate.fields)
            return try json(
                try await registry.setLabels(try context.parameters.decoded("name"), update.labels), status: .ok)
        }
        router.on(API.setNodeCompany) { request, context -> Response in
            try authorize(request, token: token)
            let update = try await decode(
                NodeCompanyUpdate.self, request, maxBody: maxBody, allowed: NodeCompanyUpdate.fields)
            return try json(
                try await registry.setCompany(try context.parameters.decoded("name"), update.company), status: .ok)
        }
        router.on(API.setNodeScheduling) { request, context -> Response in
            try authorize(request, token: token)
            let update = try await decode(
                NodeSchedulingUpdate.self, request, maxBody: maxBody, allowed: NodeSchedulingUpdate.fields)
            return try json(
                try await registry.setScheduling(try context.parameters.decoded("name"), update), status: .ok)
        }
        router.on(API.topology) { request, context -> Response in
            try await authorizeOperatorOrNode(
                request, context: context, token: token, registry: registry, maxBody: maxBody)
            return try json(try await registry.topology(), status: .ok)
        }
        router.on(API.prometheusTargets) { request, _ -> Response in
            _ = try authorize(request, token: token, role: .read)
            return try json(PrometheusTargets.groups(try await registry.list().nodes), status: .ok)
        }

        // MARK: Join tokens (lead, operator token)
        router.on(API.createToken) { request, _ -> Response in
            try authorize(request, token: token)
            let create = try await decode(
                TokenCreateRequest.self, request, maxBody: maxBody, allowed: TokenCreateRequest.fields)
            if create.kind == .api { return try json(try await apiTokens.create(create), status: .created) }
            return try json(try await JoinTokens.create(create, store: tokens, lead: lead.leadTLS), status: .created)
        }
        router.on(API.listTokens) { request, _ -> Response in
            try authorize(request, token: token)
            var list = try await JoinTokens.list(store: tokens)
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
            return try json(try await JoinTokens.revoke(id, store: tokens), status: .ok)
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
                do throws(AgentError) { since = max(0, try await events.latestEventSeq() - tail) } catch {
                    throw Refusal.storeUnavailable(error)
                }
            }
            let follow = request.uri.queryParameters.get("follow").map { $0 != "false" && $0 != "0" } ?? true
            let filter = try EventFilter(
                types: request.uri.queryParameters.get("type"), node: request.uri.queryParameters.get("node"))
            let hub = agent.hub
            let (subscription, stream) = hub.subscribe()
            let backlog: [MeshEvent]
            do throws(AgentError) { backlog = try await events.events(since: since, limit: 10_000) } catch {
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
                    // `id:` alone moves the client's resume point (Last-Event-ID) without an
                    // event: past the backlog now, past filtered-out events with each ping.
                    try await writer.write(ByteBuffer(string: ": following from \(last)\nid: \(last)\n\n"))
                    for await item in stream {
                        switch item {
                        case .event(let event) where event.seq > last:
                            if filter.matches(event) { try await writer.write(ByteBuffer(string: EventLog.sse(event))) }
                            last = event.seq
                        case .event:
                            continue
                        case .ping:
                            try await writer.write(ByteBuffer(string: ": ping\nid: \(last)\n\n"))
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
    /// away); everything else is the lead's. A standby lead answers the node reads from its own
    /// copy of the lead's store (``standbyNodes(_:name:token:node:reads:)``) while it can.
    ///
    /// - `GET /nodes`, `GET /nodes/{name}`: the local operator token; the lead's list (2 s), else
    ///   the cached one marked stale (a single node with `X-Aurora-Stale-Age`); 404 for an unknown
    ///   name; 503 `lead_unreachable` with nothing cached yet;
    /// - `GET /topology`: the same, from the lead or the cached topology (`stale`, `age_s`);
    /// - join, heartbeat, leave, removal, labels, tokens and events: 421 `not_lead`.
    static func addRegistryRoutes(to router: Router<AgentRequestContext>, agent: AgentParts, node: NodeParts) {
        let token = agent.token
        leadOnly(router, API.join, "joining", agent: agent)
        leadOnly(router, API.heartbeat, "heartbeats", agent: agent)
        leadOnly(router, API.leave, "leaving", agent: agent)
        router.on(API.listNodes) { request, _ -> Response in
            if let reads = node.standbyReads,
                let answer = try await standbyNodes(request, name: nil, token: token, node: node, reads: reads)
            {
                return answer
            }
            try authorize(request, token: token)
            return try json(try await forwardedList(node: node), status: .ok)
        }
        router.on(API.getNode) { request, context -> Response in
            let name = try context.parameters.decoded("name")
            if let reads = node.standbyReads,
                let answer = try await standbyNodes(request, name: name, token: token, node: node, reads: reads)
            {
                return answer
            }
            try authorize(request, token: token)
            let list = try await forwardedList(node: node)
            guard let found = list.nodes.first(where: { $0.name == name }) else {
                throw Refusal.notFound("no node named '\(name)'")
            }
            return try json(found, status: .ok, stale: list.stale ? list.ageS ?? 0 : nil)
        }
        // From the cached registry while the lead is away: Prometheus keeps its targets.
        router.on(API.prometheusTargets) { request, _ -> Response in
            _ = try authorize(request, token: token, role: .read)
            return try json(PrometheusTargets.groups(try await forwardedList(node: node).nodes), status: .ok)
        }
        leadOnly(router, API.removeNode, "removing a node", agent: agent)
        leadOnly(router, API.setNodeLabels, "setting a node's labels", agent: agent)
        leadOnly(router, API.setNodeCompany, "setting a node's company", agent: agent)
        leadOnly(router, API.setNodeScheduling, "cordoning or draining a node", agent: agent)
        router.on(API.topology) { request, _ -> Response in
            try authorize(request, token: token)
            let membership = node.membership, cache = node.cache
            let answer: Result<Topology, LeadCallError>
            do throws(LeadCallError) {
                answer = .success(
                    try await membership.leadClient.call(API.topology, as: Topology.self, timeout: .seconds(2))
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
    ///
    /// A fresh answer (within 2 s) replaces the cached list; a cached one carries `stale`, `age_s` and,
    /// as `reason`, why the lead did not answer. 503 `lead_unreachable` with nothing cached yet.
    static func forwardedList(node: NodeParts) async throws(Refusal) -> NodeList {
        let membership = node.membership, cache = node.cache
        do throws(LeadCallError) {
            let list = try await membership.leadClient.call(API.listNodes, as: NodeList.self, timeout: .seconds(2))
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
    ///
    /// The signature covers the method, the path with its query, and the body (collected up to
    /// `maxBody`); the registry checks it against the node's key, the timestamp's skew, the nonce
    /// and that the node was not removed. Every failure is 401 `unauthorized`: no signing headers
    /// (naming them), some but not all, or a signature the registry refuses. Lead only.
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

    /// What a standby gets with its join or its rejoin (``Registry/rejoinAsStandby(_:_:observedHost:)``):
    /// trust in advance, the secrets master key sealed to its own box key (audited), and, when
    /// this lead's managed store streams, its replication role and slot with the password sealed
    /// to it too. `reached` is this lead's address the standby reached.
    static func grantStandby(_ answer: inout JoinResponse, lead: LeadParts, reached: String?) async throws {
        guard let box = try? PublicKey(base64: answer.node.boxPublicKey) else { return }
        answer.sealedMasterKey = try await lead.secrets.sealMasterKey(for: answer.node.name, to: box)
        if let replication = lead.replication {
            do throws(AgentError) {
                answer.replication = try await replication.credentials(
                    for: answer.node.name, box: box, reached: reached)
            } catch {
                throw Refusal(
                    .unavailable, code: "store_unavailable",
                    message: "cannot set up the standby's replication: \(error.message)")
            }
        }
    }

    /// Operator token (or an API token that may read), or a node's valid signature.
    ///
    /// The `Authorization` header decides: with it the token alone counts (401, or 403 for too small
    /// a role) and no signature is tried; without it the request must be signed. Any joined node may.
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
    ///
    /// Collects the body (up to `maxBody`) and decodes it as the byte form does; `allowed` holds the
    /// type's field names as JSON spells them.
    static func decode<T: Decodable>(_ type: T.Type, _ request: Request, maxBody: Int, allowed: Set<String>)
        async throws -> T
    {
        var request = request
        let body = Array(try await request.collectBody(upTo: maxBody).readableBytesView)
        return try decode(type, body, allowed: allowed)
    }

    /// Decodes `body` as `T`, or refuses with 400 `bad_request`: an empty body; a control character
    /// in a string (tab, newline and carriage return excepted); with `allowed`, a body that is not a
    /// JSON object or has a top-level field outside it (nil lets unknown fields pass, for signed
    /// bodies from newer nodes); then a missing field, a wrong type or null, or an invalid value,
    /// each named by its path (`a.b`, `list[0].c`).
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

    /// A coding path as messages show it: keys joined with dots, indexes in brackets.
    private static func fieldPath(_ path: [any CodingKey]) -> String {
        path.map { $0.intValue.map { "[\($0)]" } ?? $0.stringValue }.joined(separator: ".").replacingOccurrences(
            of: ".[", with: "[")
    }

    /// What a wrong-typed field should have been, in words for the message.
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

    /// ``json(_:status:)``, with `X-Aurora-Stale-Age` (seconds) when `ageS` is set: the answer came
    /// from this node's cache, not from the lead.
    static func json(_ value: some Encodable, status: HTTPResponse.Status, stale ageS: Double?) throws -> Response {
        var response = try json(value, status: status)
        if let ageS { response.headers[.init("X-Aurora-Stale-Age")!] = String(ageS) }
        return response
    }
}
