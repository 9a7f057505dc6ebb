import AuroraAPI
import Foundation
import HTTPTypes
import Hummingbird
import Logging
import Mesh

extension HTTPServer {
    /// The mesh's leads (docs/API.md, "Two leads"):
    ///
    /// - `GET /api/lead`: a read, submit or admin credential of this agent; what it knows of the
    ///   leads (its role, the epoch, the lead, the lead-eligible standbys);
    /// - `GET /api/lead/handoff`: anyone; on the lead its signed term (503 `fenced` once fenced,
    ///   503 `starting` before its term began), elsewhere 421 `not_lead`;
    /// - `GET /api/lead/followed`: anyone; the newest signed term this agent holds: on the lead its
    ///   own (as the handoff), on a node the one it followed at a handoff (404 `no_handoff` for a
    ///   node still on the lead it joined);
    /// - `POST /api/lead/step-down`: on the lead, signed by a node whose role is `standby` (403 for
    ///   any other node): the lead fences itself and answers its epoch; 421 elsewhere;
    /// - `POST /api/lead/failsafe`: on a standby, signed by its lead for it: the standby promises
    ///   not to campaign or promote for the TTL asked (the lead serves on while etcd does not answer
    ///   it); 409 `not_standby` on any other agent, 409 `stale_epoch` for an epoch below the one
    ///   this standby has seen, 409 `unknown_epoch` before it heard any, 409 `promoting` once it began
    ///   promoting;
    /// - `POST /api/lead/rejoin`: on the lead, signed by a lead-eligible member (role `lead` or
    ///   `standby`, not removed, not this lead: 403 for any other node, 401 unsigned): an old lead
    ///   fenced by a newer term comes back as a standby; answers what a standby's join gets
    ///   (``JoinResponse``) and records `lead.rejoined`; 421 elsewhere;
    /// - `POST /api/lead/promote`: this agent's admin credential; on a standby it promotes it
    ///   (``LeadPromotion``) and restarts the agent as the lead; 409 `already_lead` on the lead,
    ///   409 `not_standby` on any other node.
    static func addLeadRoutes(to router: Router<AgentRequestContext>, agent: AgentParts, role: RoleParts) {
        let token = agent.token, state = agent.state, maxBody = agent.maxBody
        let name = state.config.name
        let storeMode = state.config.storeURL != nil ? "shared" : "managed"
        @Sendable func standbys(_ nodes: [Node]) -> [LeadStatus.Standby] {
            nodes.filter { $0.role == .standby }.map {
                LeadStatus.Standby(name: $0.name, state: $0.state, url: standbyURL($0), lastSeen: $0.lastSeen)
            }
        }
        switch role {
        case .lead(let lead):
            router.on(API.leadStatus) { request, _ -> Response in
                _ = try authorize(request, token: token, role: .read)
                let leadership = lead.leadership
                let nodes = (try? await lead.registry.list().nodes) ?? []
                var listed = standbys(nodes)
                if let replicas = lead.replication?.replicas {
                    for index in listed.indices {
                        let replica = replicas[listed[index].name]
                        listed[index].replication = replica?.replication ?? "none"
                        listed[index].sync = replica?.sync ?? false
                        listed[index].eligible = replica?.eligible
                        listed[index].lagBytes = replica?.lagBytes
                    }
                }
                let status = LeadStatus(
                    role: leadership?.fencedReason != nil ? .fenced : .lead, agent: name, epoch: leadership?.epoch,
                    lead: leadership?.term?.lead ?? name, leadURL: leadership?.term?.url,
                    fencedReason: leadership?.refusalReason, standbys: listed, store: storeMode,
                    election: state.election)
                return try json(status, status: .ok)
            }
            @Sendable func handoff() throws -> Response {
                guard let leadership = lead.leadership else {
                    throw Refusal(.unavailable, code: "starting", message: "this lead keeps no terms")
                }
                if let reason = leadership.fencedReason {
                    throw Refusal(.unavailable, code: "fenced", message: "this agent no longer leads: \(reason)")
                }
                guard let handoff = leadership.handoff else {
                    throw Refusal(.unavailable, code: "starting", message: "this lead's term has not begun yet")
                }
                return try json(handoff, status: .ok)
            }
            router.on(API.leadHandoff) { _, _ in try handoff() }
            // The newest term a lead holds is its own.
            router.on(API.followedTerm) { _, _ in try handoff() }
            router.on(API.stepDown) { request, context -> Response in
                let (caller, _) = try await authenticateNode(
                    request, context: context, registry: lead.registry, maxBody: maxBody)
                let callerRole = try? await lead.registry.list().nodes.first(where: { $0.name == caller })?.role
                guard callerRole == .standby else {
                    throw Refusal(
                        .forbidden, code: "forbidden", message: "only a standby lead may ask the lead to step down")
                }
                guard let leadership = lead.leadership else {
                    throw Refusal(.unavailable, code: "starting", message: "this lead keeps no terms")
                }
                await leadership.fence("standby \(caller) asked this lead to step down for its promotion")
                return try json(
                    StepDownResponse(
                        epoch: leadership.epoch ?? 0, fenced: true, walLSN: await leadership.walPosition()),
                    status: .ok)
            }
            router.on(API.rejoinLead) { request, context -> Response in
                let (caller, body) = try await authenticateNode(
                    request, context: context, registry: lead.registry, maxBody: maxBody)
                let rejoin = try decode(LeadRejoinRequest.self, body, allowed: LeadRejoinRequest.fields)
                let node = try await lead.registry.rejoinAsStandby(caller, rejoin, observedHost: context.remoteHost)
                var answer = JoinResponse(
                    node: node, mesh: await lead.registry.meshInfo(), epoch: lead.leadership?.epoch)
                try await grantStandby(&answer, lead: lead, reached: context.localAddress?.ipAddress)
                return try json(answer, status: .ok)
            }
            router.on(API.promoteLead) { request, _ -> Response in
                _ = try authorize(request, token: token, role: .admin)
                throw Refusal(
                    .conflict, code: "already_lead",
                    message: "this agent is the lead; run 'aurora-cli lead promote' on a standby")
            }
            router.on(API.failsafe) { request, _ -> Response in
                // Only a lead's signature could be meant here, and no lead signs for itself.
                guard try SignedHeaders.parse({ request.headers[.init($0)!] }) != nil else {
                    throw Refusal.unauthorized(
                        "unsigned request: the failsafe needs the lead's signature (\(RequestSigning.signatureHeader))")
                }
                throw Refusal(
                    .conflict, code: "not_standby",
                    message: "this agent is the lead; only a standby promises a failsafe")
            }
        case .node(let node):
            router.on(API.leadStatus) { request, _ -> Response in
                _ = try authorize(request, token: token, role: .read)
                let known = node.membership.leadView
                let status = LeadStatus(
                    role: state.config.role == .standby ? .standby : .node, agent: name, epoch: known.epoch,
                    lead: known.name, leadURL: known.url,
                    standbys: standbys(node.cache.current?.nodes.nodes ?? []), store: storeMode,
                    election: state.election)
                return try json(status, status: .ok)
            }
            let leadCalls = LeadRequestVerifier()
            router.on(API.failsafe) { request, _ -> Response in
                let body = try await leadCalls.verify(
                    request, key: node.membership.leadSignKey, target: name, maxBody: maxBody)
                guard state.config.role == .standby else {
                    throw Refusal(
                        .conflict, code: "not_standby", message: "this agent is not a standby lead: it never takes over"
                    )
                }
                let asked = try decode(FailsafeRequest.self, body, allowed: ["epoch", "ttl_ms"])
                guard asked.epoch >= 1 else { throw Refusal.badRequest("epoch must be 1 or more") }
                guard (FailsafeRequest.minTTLMs...FailsafeRequest.maxTTLMs).contains(asked.ttlMs) else {
                    throw Refusal.badRequest(
                        "ttl_ms must be \(FailsafeRequest.minTTLMs)-\(FailsafeRequest.maxTTLMs)")
                }
                guard let seen = node.membership.leadView.epoch else {
                    throw Refusal(
                        .conflict, code: "unknown_epoch",
                        message: "this standby has heard no lead epoch yet; it promises nothing before it has")
                }
                guard asked.epoch >= seen else {
                    throw Refusal(
                        .conflict, code: "stale_epoch",
                        message: "this standby has seen epoch \(seen); a lead of epoch \(asked.epoch) is not its lead")
                }
                guard state.promiseFailsafe(ttl: .milliseconds(asked.ttlMs)) else {
                    throw Refusal(
                        .conflict, code: "promoting", message: "this standby is promoting itself; it promises nothing")
                }
                return try json(FailsafeAnswer(agent: name, promisedMs: asked.ttlMs), status: .ok)
            }
            leadOnly(router, API.leadHandoff, "the lead's handoff", agent: agent)
            router.on(API.followedTerm) { _, _ -> Response in
                guard let followed = node.membership.followedTerm else {
                    throw Refusal(
                        .notFound, code: "no_handoff",
                        message: "this node follows the lead it joined; it holds no handoff to another lead")
                }
                return try json(followed, status: .ok)
            }
            leadOnly(router, API.stepDown, "stepping down", agent: agent)
            leadOnly(router, API.rejoinLead, "rejoining as a standby", agent: agent)
            router.on(API.promoteLead) { request, _ -> Response in
                _ = try authorize(request, token: token, role: .admin)
                guard state.config.role == .standby else {
                    throw Refusal(
                        .conflict, code: "not_standby",
                        message:
                            "this agent is not a standby lead; promote the agent started with --profile lead --standby")
                }
                let promote = try await decode(
                    PromoteRequest.self, request, maxBody: maxBody, allowed: ["accept_data_loss"])
                state.beginManualPromotion()
                let answer: PromoteResponse
                do { answer = try await LeadPromotion(state: state, membership: node.membership).run(promote) } catch {
                    state.promotionFailed()
                    throw error
                }
                state.requestRestart()
                return try json(answer, status: .ok)
            }
        }
    }

    /// Where a standby serves nodes once promoted: its TLS port on its reported host when it has
    /// one, else its plain listener.
    static func standbyURL(_ node: Node) -> String? {
        guard let address = node.address, let parsed = try? HostPort(parsing: address) else { return nil }
        if let port = node.tlsPort, let secure = try? HostPort(host: parsed.host, port: port) {
            return "https://\(secure.description)"
        }
        return "http://\(parsed.description)"
    }
}

/// Paths a fenced lead still answers: they acknowledge nothing. The web console's page, files
/// and sessions (`/ui`, `/ui/…`) are among them: its pages then show the 503 of every mesh call.
private let fencedOpenPaths: Set<String> = [
    API.health.pattern, API.metrics.pattern, API.openAPI.pattern, API.agent.pattern, API.leadStatus.pattern,
    API.leadHandoff.pattern, API.logs.pattern, API.subsystems.pattern, API.checks.pattern, API.outbox.pattern,
    API.consolePage.pattern,
]

/// Whether a fenced lead still answers `path` (``fencedOpenPaths``, and the console's files and session).
private func openWhenFenced(_ path: String) -> Bool {
    fencedOpenPaths.contains(path) || path.hasPrefix("/ui/")
}

/// On the lead: every answer carries its epoch (`aurora-epoch`); a request naming a higher one
/// makes it check its store (``Leadership/observe(claimed:)``); once fenced it answers 503
/// `fenced` to everything but its own health, metrics, status and logs, and its web console.
struct LeadEpochMiddleware<Context: RequestContext>: RouterMiddleware {
    let leadership: Leadership
    static var header: HTTPField.Name { HTTPField.Name(LeadEpochHeader.name)! }

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws
        -> Response
    {
        if let text = request.headers[Self.header], text.utf8.count <= 19, let claimed = Int64(text), claimed > 0 {
            await leadership.observe(claimed: claimed)
        }
        if !openWhenFenced(request.uri.path) {
            if let reason = leadership.fencedReason {
                throw Refusal(.unavailable, code: "fenced", message: "this agent no longer leads the mesh: \(reason)")
            }
            if leadership.awaitingKey {
                throw Refusal(
                    .unavailable, code: "awaiting_election",
                    message: "this lead acknowledges nothing yet: \(Leadership.awaitingKeyReason)", retryAfterSeconds: 1
                )
            }
        }
        var response = try await next(request, context)
        if let epoch = leadership.epoch { response.headers[Self.header] = String(epoch) }
        return response
    }
}
