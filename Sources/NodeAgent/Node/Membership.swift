import AsyncAlgorithms
import AsyncHTTPClient
import AuroraAPI
import AuroraClient
import AuroraTLS
import Foundation
import Logging
import Mesh
import Metrics
import NIOCore
import NIOHTTP1
import NIOSSL
import Secrets
import ServiceLifecycle
import Synchronization

/// What a joined node remembers about its membership (`DATA/membership.json`, 0600). With it,
/// later starts need no join token.
struct Membership: Codable, Sendable, Equatable {
    var name: String
    var vpnIP: String
    /// The lead's URL the node joined through; used when `lead` is not configured.
    var leadURL: String
    /// The lead's name and public keys; its signing key checks the secrets it delivers.
    var lead: JoinResponse.Mesh.Lead
    /// The mesh network (CIDR) the node's WireGuard configuration is built in.
    var cidr: String
    var meshID: String?
    var joinedAt: String
    /// The lead's TLS certificate (PEM) this node pinned when it joined over https; every later
    /// call to the lead trusts only it.
    var leadCertificate: String?
    /// Its pin, `sha256:...`.
    var leadPin: String?
    /// The company the lead holds for this node (its join token's, or an operator's since); nil
    /// in a file written before it was recorded, until the node next reads the registry.
    var company: String?
    /// The highest lead epoch this node has seen: it refuses answers and assignments from a lower one.
    var epoch: Int64?
    /// The signed term of the lead this node followed at a handoff (nil for the lead it joined):
    /// `GET /api/lead/followed` shows it, so an old lead that cannot reach the new one still
    /// learns of the newer term from the nodes that follow it.
    var handoff: LeadHandoff?

    enum CodingKeys: String, CodingKey {
        case name, lead, cidr, company, epoch, handoff
        case vpnIP = "vpn_ip"
        case leadURL = "lead_url"
        case meshID = "mesh_id"
        case joinedAt = "joined_at"
        case leadCertificate = "lead_certificate"
        case leadPin = "lead_pin"
    }

    /// `DATA/membership.json`.
    static func path(dataDir: String) -> String { dataDir + "/membership.json" }

    /// Nil before the first join. A file that does not decode is an ``AgentError`` (code
    /// `identity`): it is never silently replaced, since that would take a new join token.
    static func load(dataDir: String) throws(AgentError) -> Membership? {
        guard let text = try SecureFile.read(path(dataDir: dataDir)) else { return nil }
        guard let membership = SQL.decode(Membership.self, text) else {
            throw AgentError(
                .identity,
                "\(path(dataDir: dataDir)) is not readable membership data; remove it and join again with a token")
        }
        return membership
    }

    /// Written atomically (0600) right after a successful join, and again when the lead's
    /// registry shows the node's company changed.
    func save(dataDir: String) throws(AgentError) {
        try SecureFile.write(SQL.json(self) + "\n", to: Membership.path(dataDir: dataDir))
    }

    /// A joined node's company is the lead's to set (its join token's, or an operator's): a
    /// `company` in its configuration that differs from the one it holds stops the agent, with
    /// both values and the way to change it. An empty `company` (unset) is fine.
    func checkCompany(_ config: NodeConfig) throws(AgentError) {
        guard !config.company.isEmpty, let held = company, config.company != held else { return }
        throw AgentError(
            .config,
            "company '\(config.company)' (\(config.resolved.source(of: "company"))) is not this node's company "
                + (held.isEmpty ? "(it has none)" : "'\(held)'")
                + ": a node cannot choose its company after it joined; remove 'company' from its configuration, "
                + "or change it on the lead with: aurora-cli nodes set \(name) --company \(config.company)")
    }
}

/// Why a call to the lead failed.
enum LeadCallError: Error, Sendable {
    /// No answer (refused, timed out, reset): the lead is away.
    case unreachable(String)
    /// The lead answered with an error.
    case refused(status: Int, ErrorResponse)

    /// One line for logs and answers; never holds the request's body.
    var message: String {
        switch self {
        case .unreachable(let reason): "lead unreachable: \(reason)"
        case .refused(let status, let error): "lead answered \(status) \(error.error.code): \(error.error.message)"
        }
    }
}

/// Where this node's lead is and how to reach it: its URL and, over https, a TLS configuration
/// that trusts only the certificate pinned at join. Set once the node has joined; every
/// ``LeadClient`` of the node reads it.
final class LeadLink: Sendable {
    private let state: Mutex<(url: String, tls: TLSConfiguration?, epoch: Int64?)>

    init(url: String, tls: TLSConfiguration? = nil, epoch: Int64? = nil) {
        state = Mutex((LeadClient.base(url), tls, epoch))
    }

    var url: String { state.withLock { $0.url } }
    var tls: TLSConfiguration? { state.withLock { $0.tls } }
    /// The highest lead epoch this node has seen (sent to the lead as a hint with every call).
    var epoch: Int64? { state.withLock { $0.epoch } }

    /// Called during a first join over https, after the lead showed the pinned key, and when the
    /// node follows a new lead.
    func set(url: String, tls: TLSConfiguration?) {
        state.withLock { state in
            state.url = LeadClient.base(url)
            state.tls = tls
        }
    }

    /// Raises the known epoch (never lowers it); whether it rose.
    @discardableResult
    func raise(epoch: Int64) -> Bool {
        state.withLock { state in
            guard epoch > (state.epoch ?? 0) else { return false }
            state.epoch = epoch
            return true
        }
    }

    /// The link for a node: `lead` from the configuration, else the joined lead's URL; pinned to
    /// the saved certificate when there is one. An https lead without a pinned certificate is
    /// an error once the node has joined (nothing would be verified).
    static func forNode(config: NodeConfig, saved: Membership?) throws(AgentError) -> LeadLink {
        // A node that has seen a lead's epoch goes to the lead its membership names (it may have
        // followed a new one), not to the --lead it was first started with.
        let followed = saved?.epoch != nil ? saved?.leadURL : nil
        guard let url = followed ?? config.lead ?? saved?.leadURL else {
            throw AgentError(
                .config,
                "a \(config.role.rawValue) node needs the lead's URL: set --lead, AURORA_LEAD or 'lead' in the node file"
            )
        }
        guard let pem = saved?.leadCertificate else {
            if saved != nil, url.lowercased().hasPrefix("https:") {
                throw AgentError(
                    .config,
                    "this node joined without a pinned lead certificate, so it cannot check \(url); join again with a token from that lead"
                )
            }
            return LeadLink(url: url, epoch: saved?.epoch)
        }
        do {
            let certificate = try NIOSSLCertificate(bytes: Array(pem.utf8), format: .pem)
            return LeadLink(url: url, tls: PinnedTLS.clientConfiguration(trusting: certificate), epoch: saved?.epoch)
        } catch {
            throw AgentError(
                .identity,
                "\(Membership.path(dataDir: config.dataDir)): the pinned lead certificate does not parse; join again with a token"
            )
        }
    }
}

/// Signed HTTP calls from this node to the lead.
struct LeadClient: Sendable {
    let link: LeadLink
    /// Signs every request; nil for the join itself, which the token authorizes.
    let signer: RequestSigner?

    var baseURL: String { link.url }

    init(link: LeadLink, signer: RequestSigner?) {
        self.link = link
        self.signer = signer
    }

    /// A client for one fixed URL (plain, or TLS with `tls`).
    init(baseURL: String, signer: RequestSigner?, tls: TLSConfiguration? = nil) {
        self.init(link: LeadLink(url: baseURL, tls: tls), signer: signer)
    }

    /// This node's signed client for its lead.
    static func signed(config: NodeConfig, identity: NodeIdentity, link: LeadLink) -> LeadClient {
        LeadClient(link: link, signer: RequestSigner(node: config.name, key: identity.signing))
    }

    /// `url` without a trailing `/`, so route paths can be appended.
    static func base(_ url: String) -> String { url.hasSuffix("/") ? String(url.dropLast()) : url }

    /// One client for every call to the lead, for the life of the process. A refused connection
    /// fails at once instead of being retried until the call's deadline: a lead that is away
    /// is known in a millisecond, so caches answer without waiting.
    ///
    /// This node's own calls (heartbeats, assignments, results, streamed chunks) have this pool to
    /// themselves: calls it forwards for its clients (``forwarding``), which may each wait minutes
    /// for a model's answer, can never take the connections a heartbeat or a result needs.
    static let http: HTTPClient = {
        var configuration = HTTPClient.Configuration()
        configuration.connectionPool.retryConnectionEstablishment = false
        configuration.connectionPool.concurrentHTTP1ConnectionsPerHostSoftLimit = 64
        return HTTPClient(eventLoopGroupProvider: .singleton, configuration: configuration)
    }()

    /// The pool for clients' calls this node forwards to its lead: one connection per call in
    /// flight, up to 1024 (beyond them a call waits for one).
    static let forwarding: HTTPClient = {
        var configuration = HTTPClient.Configuration()
        configuration.connectionPool.retryConnectionEstablishment = false
        configuration.connectionPool.concurrentHTTP1ConnectionsPerHostSoftLimit = 1024
        return HTTPClient(eventLoopGroupProvider: .singleton, configuration: configuration)
    }()

    /// The typed client this call goes through: the link's URL and pinned TLS, this node's
    /// signature on every request, the process-wide connection pool (`forwarded`: the pool for
    /// clients' calls).
    private func client(_ timeout: Duration, bearer: String? = nil, forwarded: Bool = false) -> AuroraClient {
        var client = AuroraClient(
            baseURL: baseURL, token: bearer, timeout: .milliseconds(Int64(timeout / .milliseconds(1))),
            httpClient: forwarded ? Self.forwarding : Self.http)
        client.pinnedTLS = link.tls
        if let signer, bearer == nil {
            let epoch = link.epoch
            client.signer = { method, path, body in
                var headers = signer.headers(method: method, path: path, body: body)
                if let epoch { headers.append((LeadEpochHeader.name, String(epoch))) }
                return headers
            }
        }
        return client
    }

    /// Sends a request (signed when a signer is set) and decodes a 2xx answer as `T`.
    func call<T: Decodable>(
        _ method: HTTPMethod, _ path: String, body: (some Encodable)? = Optional<Int>.none, as type: T.Type,
        timeout: Duration
    ) async throws(LeadCallError) -> T {
        let bytes = try await send(method, path, body: body, timeout: timeout)
        do { return try APICoding.decoder().decode(T.self, from: Data(bytes)) } catch {
            throw .refused(
                status: 502, ErrorResponse(code: "bad_gateway", message: "the lead's answer to \(path) did not decode"))
        }
    }

    /// ``call(_:_:body:as:timeout:)`` of `endpoint`: its method, and its path from the route table
    /// with `parameters` escaped in and `query` appended (``Endpoint/path(_:query:)``).
    func call<T: Decodable>(
        _ endpoint: Endpoint, _ parameters: String..., query: [(name: String, value: String?)] = [],
        body: (some Encodable)? = Optional<Int>.none, as type: T.Type, timeout: Duration
    ) async throws(LeadCallError) -> T {
        try await call(
            HTTPMethod(rawValue: endpoint.method), endpoint.path(parameters, query: query), body: body, as: type,
            timeout: timeout)
    }

    /// ``send(_:_:body:timeout:)`` of `endpoint`: its method, and its path from the route table
    /// with `parameters` escaped in (``Endpoint/path(_:query:)``).
    func send(
        _ endpoint: Endpoint, _ parameters: String..., body: (some Encodable)? = Optional<Int>.none, timeout: Duration
    ) async throws(LeadCallError) -> [UInt8] {
        try await send(HTTPMethod(rawValue: endpoint.method), endpoint.path(parameters), body: body, timeout: timeout)
    }

    /// Sends a request and returns the lead's status and body as they are, for forwarding a
    /// client's call. Throws only when the lead does not answer.
    ///
    /// With `bearer`, the call carries that token instead of this node's signature: the lead
    /// decides what the caller's own credential may do (and records the caller, not this node).
    func relay(_ method: HTTPMethod, _ path: String, body: [UInt8], timeout: Duration, bearer: String? = nil)
        async throws(LeadCallError) -> (status: Int, body: [UInt8])
    {
        do {
            return try await client(timeout, bearer: bearer).exchange(method: method.rawValue, path: path, body: body)
        } catch {
            throw .unreachable(error.reason ?? error.message)
        }
    }

    /// ``relay(_:_:body:timeout:bearer:)`` that also returns the answer's headers named in `keep`
    /// (lower-case): a forwarding agent passes them on.
    func relay(
        _ method: HTTPMethod, _ path: String, body: [UInt8], timeout: Duration, bearer: String? = nil,
        keep: Set<String>
    ) async throws(LeadCallError) -> (status: Int, body: [UInt8], headers: [(name: String, value: String)]) {
        do {
            return try await client(timeout, bearer: bearer, forwarded: true).exchange(
                method: method.rawValue, path: path, body: body, keep: keep)
        } catch {
            throw .unreachable(error.reason ?? error.message)
        }
    }

    /// ``relay(_:_:body:timeout:bearer:keep:)`` whose answer's body comes as it arrives.
    func open(
        _ method: HTTPMethod, _ path: String, body: [UInt8], timeout: Duration, bearer: String? = nil,
        keep: Set<String>
    ) async throws(LeadCallError) -> (
        status: Int, headers: [(name: String, value: String)], body: HTTPClientResponse.Body
    ) {
        do {
            return try await client(timeout, bearer: bearer, forwarded: true).open(
                method: method.rawValue, path: path, body: body, keep: keep)
        } catch {
            throw .unreachable(error.reason ?? error.message)
        }
    }

    /// Sends a request; returns the body of a 2xx answer.
    func send(_ method: HTTPMethod, _ path: String, body: (some Encodable)? = Optional<Int>.none, timeout: Duration)
        async throws(LeadCallError) -> [UInt8]
    {
        let bytes = body.map { Array((try? APICoding.encoder().encode($0)) ?? Data()) } ?? []
        let (status, answer) = try await relay(method, path, body: bytes, timeout: timeout)
        guard (200..<300).contains(status) else {
            let error =
                (try? APICoding.decoder().decode(ErrorResponse.self, from: Data(answer)))
                ?? ErrorResponse(
                    code: "http_\(status)", message: HTTPResponseStatus(statusCode: status).reasonPhrase)
            throw .refused(status: status, error)
        }
        return answer
    }
}

/// The last registry view this node got from the lead, kept in memory and in
/// `DATA/cache/registry.json`, served (marked stale) while the lead is away.
final class RegistryCache: Sendable {
    struct Snapshot: Codable, Sendable {
        var nodes: NodeList
        var topology: Topology?
        var fetchedAt: String

        enum CodingKeys: String, CodingKey {
            case nodes, topology
            case fetchedAt = "fetched_at"
        }
    }

    private let path: String
    private let snapshot: Mutex<Snapshot?>

    init(dataDir: String) {
        let path = dataDir + "/cache/registry.json"
        self.path = path
        self.snapshot = Mutex((try? SecureFile.read(path)).flatMap { SQL.decode(Snapshot.self, $0) })
    }

    /// The snapshot, loaded from disk at start (nil when there is none or it does not decode).
    var current: Snapshot? { snapshot.withLock { $0 } }

    /// Seconds since the snapshot was fetched.
    func age(now: Date = Date()) -> Double? {
        guard let fetched = current.flatMap({ ISOTime.parse($0.fetchedAt) }) else { return nil }
        return max(0, now.timeIntervalSince(fetched)).rounded(toPlaces: 3)
    }

    /// Replaces the snapshot (keeping the old topology when `topology` is nil) and writes it to disk;
    /// a failed write is ignored: the memory copy serves, and the next refresh writes again.
    func store(nodes: NodeList, topology: Topology?) {
        let value = Snapshot(nodes: nodes, topology: topology ?? current?.topology, fetchedAt: ISOTime.string(Date()))
        snapshot.withLock { $0 = value }
        let directory = (path as NSString).deletingLastPathComponent
        try? DataDirectory.createDirectory(directory, mode: 0o700, what: "cache directory")
        try? SecureFile.write(SQL.json(value), to: path)
    }
}

/// A compute or edge node's membership: joins once with the token, then heartbeats to the
/// lead at the profile's interval, measures RTT to its peers, keeps the registry cache warm
/// and, with `--leave-on-stop`, leaves on SIGTERM.
final class MembershipService: Service {
    let config: NodeConfig
    let identity: NodeIdentity
    let state: AgentState
    let inventory: Inventory
    let cache: RegistryCache
    let worker: GPUWorker?
    let logger: Logger
    /// Signed: heartbeats, cache refreshes, leaving and forwarded reads.
    private let lead: LeadClient
    /// Unsigned: only the join, before the lead knows this node's key.
    private let joinClient: LeadClient
    private let beats = Counter(label: "aurora_heartbeats_sent_total")
    private let rtt = Timer(label: "aurora_heartbeat_rtt_seconds")
    /// The company last written to `membership.json`.
    private let knownCompany = Mutex<String?>(nil)
    private let beatFailures = Counter(label: "aurora_heartbeat_failures_total")
    /// The last RTT measurement (ms), sent with every heartbeat; refreshed every 5 s.
    private let peerRTTs = Mutex<[PeerRTT]>([])
    /// What the lead last got in full, and when; unchanged capabilities are left out.
    private let lastFull = Mutex<(capabilities: Capabilities?, at: ContinuousClock.Instant?)>((nil, nil))

    init(
        config: NodeConfig, identity: NodeIdentity, state: AgentState, inventory: Inventory, cache: RegistryCache,
        worker: GPUWorker?,
        link: LeadLink, tlsPin: TLSPin? = nil, onSecretsChanged: (@Sendable (MembershipService) async -> Void)? = nil,
        logger: Logger
    ) throws(AgentError) {
        self.onSecretsChanged = onSecretsChanged
        self.link = link
        self.tlsPin = tlsPin
        self.config = config
        self.identity = identity
        self.state = state
        self.inventory = inventory
        self.cache = cache
        self.worker = worker
        var logger = logger
        logger[metadataKey: "nodeagent.subsystem"] = "membership"
        self.logger = logger
        self.lead = LeadClient.signed(config: config, identity: identity, link: link)
        self.joinClient = LeadClient(link: link, signer: nil)
    }

    private let link: LeadLink
    /// The pin of this node's TLS key, sent with the join: the lead calls this node only over TLS to it.
    private let tlsPin: TLSPin?

    /// The signed client, for forwarding operator reads to the lead.
    var leadClient: LeadClient { lead }

    /// Missed heartbeats in a row before the node asks the lead-eligible members for a new lead.
    static let beatsBeforeLooking = 3
    /// The name of the lead this node follows.
    private let leadName = Mutex<String?>(nil)

    /// The lead this node follows, its URL and the highest epoch seen.
    var leadView: (name: String?, url: String, epoch: Int64?) {
        (leadName.withLock { $0 }, link.url, link.epoch)
    }

    /// The signing key of the lead this node joined (nil until it has): secrets it delivers are
    /// checked against it.
    var leadSignKey: PublicKey? { joinedLeadKey.withLock { $0 } }
    private let joinedLeadKey = Mutex<PublicKey?>(nil)

    /// The signed term this node followed at its last handoff (`GET /api/lead/followed`).
    var followedTerm: LeadHandoff? { followed.withLock { $0 } }
    private let followed = Mutex<LeadHandoff?>(nil)

    /// How long one refresh of the registry copy may take (it runs beside the beats).
    static let cacheRefreshTimeout = Duration.seconds(10)

    /// The registry copy's refreshes: at most one in flight; another starts on a new registry
    /// version, or 10 s after the last success.
    struct CacheRefresh {
        var knownVersion = -1
        var lastSuccess: ContinuousClock.Instant?
        var inFlight = false

        /// The version to fetch when a refresh should start now (and marks it in flight); nil otherwise.
        mutating func start(registryVersion: Int, now: ContinuousClock.Instant = .now) -> Int? {
            guard !inFlight,
                registryVersion != knownVersion || lastSuccess.map({ $0.duration(to: now) > .seconds(10) }) ?? true
            else { return nil }
            inFlight = true
            return registryVersion
        }

        /// The refresh ended: with the version it fetched, or nil when it failed (retried next beat).
        mutating func finish(_ version: Int?, now: ContinuousClock.Instant = .now) {
            inFlight = false
            guard let version else { return }
            knownVersion = version
            lastSuccess = now
        }
    }
    private let cacheRefresh = Mutex(CacheRefresh())

    /// Called (beside the heartbeats, as a child task of `run()`) when the lead says secrets changed: refresh the cache.
    let onSecretsChanged: (@Sendable (MembershipService) async -> Void)?

    /// The service: joins (or loads the membership), then beats every `heartbeat.interval_s` with
    /// a timeout of at most 2 s. Each answer may start a secrets refresh or a registry cache
    /// refresh (on a new registry version, or 10 s after the last); a failed beat marks the lead
    /// away once. Peer RTTs are measured every 5 s. On shutdown, with `leave_on_stop`, it tells the
    /// lead this node leaves (left, not dead). Throws when the join is refused or the saved
    /// membership is for another name.
    func run() async throws {
        guard let membership = try await joinIfNeeded() else { return }
        joinedLeadKey.withLock { $0 = try? PublicKey(base64: membership.lead.signPublicKey) }
        leadName.withLock { $0 = membership.lead.name }
        if let epoch = membership.epoch { link.raise(epoch: epoch) }
        followed.withLock { $0 = membership.handoff }
        if let meshID = membership.meshID { state.setMeshID(meshID) }
        state.setJoined()
        var knownSecrets: Int?
        var lastRTT: ContinuousClock.Instant?
        var failedBeats = 0
        var lastLook: ContinuousClock.Instant?
        let interval = Duration.milliseconds(Int64(config.heartbeatTiming.intervalS * 1000))
        let timeout = min(interval, .seconds(2))
        // A secrets refresh runs beside the heartbeats as a child task: it ends with them.
        await withDiscardingTaskGroup { group in
            for await _ in AsyncTimerSequence(interval: interval, clock: .continuous).cancelOnGracefulShutdown() {
                do throws(LeadCallError) {
                    let response = try await heartbeat(timeout: timeout)
                    if state.leadContact(ok: true) { logger.notice("lead reachable") }
                    if let secrets = response.secretsVersion, secrets != knownSecrets {
                        knownSecrets = secrets
                        if let refresh = onSecretsChanged { group.addTask { await refresh(self) } }
                    }
                    // The registry copy is fetched beside the beats, never within their timeout:
                    // a large registry or a loaded lead needs longer than one beat, and a copy
                    // that never arrives leaves the node without tunnels (and without names).
                    if let version = cacheRefresh.withLock({ $0.start(registryVersion: response.registryVersion) }) {
                        group.addTask {
                            let ok = await self.refreshCache(timeout: Self.cacheRefreshTimeout)
                            self.cacheRefresh.withLock { $0.finish(ok ? version : nil) }
                            if !ok { self.logger.debug("registry copy refresh failed; retried next beat") }
                        }
                    }
                    failedBeats = 0
                } catch {
                    beatFailures.increment()
                    failedBeats += 1
                    logger.debug("heartbeat failed", metadata: ["nodeagent.error": "\(error.message)"])
                    if state.leadContact(ok: false) {
                        logger.warning(
                            "heartbeat failed; the lead is away", metadata: ["nodeagent.error": "\(error.message)"])
                    }
                    // A few beats missed: ask the lead-eligible members whether one of them leads now.
                    if failedBeats >= Self.beatsBeforeLooking,
                        lastLook.map({ $0.duration(to: .now) >= .seconds(1) }) ?? true
                    {
                        lastLook = .now
                        if await followNewLead() {
                            failedBeats = 0
                            cacheRefresh.withLock { $0.knownVersion = -1 }
                        }
                    }
                }
                if lastRTT.map({ $0.duration(to: .now) >= .seconds(5) }) ?? true {
                    lastRTT = .now
                    await measurePeers()
                }
            }
        }
        if config.leaveOnStop {
            do {
                _ = try await lead.send(API.leave, config.name, timeout: .seconds(2))
                logger.info("left the mesh")
            } catch {
                logger.warning(
                    "could not tell the lead this node leaves", metadata: ["nodeagent.error": "\(error.message)"])
            }
        }
    }

    // MARK: Join

    /// The saved membership, or a join with the token (retried while the lead is away).
    /// Returns nil when a shutdown came first; throws when the lead refuses the join.
    private func joinIfNeeded() async throws -> Membership? {
        if let saved = try Membership.load(dataDir: config.dataDir) {
            if saved.name != config.name {
                throw AgentError(
                    .config,
                    "this data dir joined the mesh as '\(saved.name)', not '\(config.name)'; use --name \(saved.name) or another --data-dir"
                )
            }
            var membership = saved
            // The lead's record is the truth (an operator may have changed the company while this
            // node was down); the saved copy answers while the lead is away.
            if !config.company.isEmpty, config.company != saved.company,
                let own = try? await lead.call(API.getNode, config.name, as: Node.self, timeout: .seconds(2)),
                own.company != saved.company
            {
                membership.company = own.company
                try membership.save(dataDir: config.dataDir)
                knownCompany.withLock { $0 = own.company }
            }
            try membership.checkCompany(config)
            return membership
        }
        guard let printed = config.joinToken else {
            throw AgentError(
                .config,
                "this node has not joined a mesh yet: pass --join-token-file (or AURORA_JOIN_TOKEN) from 'aurora-cli token create' on the lead"
            )
        }
        guard let token = JoinTokenText(parsing: printed) else {
            throw AgentError(
                .config,
                "the join token's pin is malformed: it should end in :sha256:<64 hex digits>, as 'aurora-cli token create' prints it"
            )
        }
        var delay = Duration.milliseconds(250)
        var pinned: (certificate: String, pin: TLSPin)?
        while true {
            // Over https the lead must present the pinned key before the token leaves this node.
            if pinned == nil, let url = URLComponents(string: link.url), url.scheme?.lowercased() == "https" {
                guard let pin = token.pin else {
                    throw AgentError(
                        .config,
                        "\(link.url) is https, but the join token carries no pin of the lead's key; "
                            + "create the token on a lead that serves TLS (tls.listen): it prints the token with its pin"
                    )
                }
                let certificate: NIOSSLCertificate
                do {
                    certificate = try await PinnedTLS.verifiedCertificate(
                        url: link.url, host: url.host ?? "", port: url.port ?? 443, pin: pin)
                } catch let error as PinningError where error.message.contains("refusing") {
                    throw AgentError(.identity, error.message)
                } catch {
                    _ = state.leadContact(ok: false)
                    logger.warning(
                        "cannot reach the lead yet; retrying",
                        metadata: ["nodeagent.error": "\(error)", "nodeagent.retry_ms": "\(delay.milliseconds)"])
                    guard await Self.backOff(&delay) else { return nil }
                    continue
                }
                link.set(url: link.url, tls: PinnedTLS.clientConfiguration(trusting: certificate))
                pinned = (try certificate.pemText(), pin)
                logger.info("the lead's key matches the token's pin", metadata: ["nodeagent.pin": "\(pin)"])
            } else if token.pin != nil, link.tls == nil {
                throw AgentError(
                    .config,
                    "the join token pins the lead's TLS key, but \(link.url) is plain HTTP: use the lead's https URL "
                        + "(the one 'aurora-cli token create' prints)")
            }
            let request = JoinRequest(
                token: token.secret, name: config.name, profile: config.role,
                company: config.company.isEmpty ? nil : config.company,
                labels: config.labels.isEmpty ? nil : config.labels,
                wireguard: .init(
                    publicKey: identity.wireguard.publicKey.base64, endpoint: config.wireguardEndpoint,
                    listenPort: config.wireguardListenPort,
                    behindNAT: config.wireguardBehindNAT),
                signPublicKey: identity.signing.publicKey.base64, boxPublicKey: identity.box.publicKey.base64,
                vpnIP: config.vpnIP,
                capabilities: await inventory.capabilities(), address: config.listen.description,
                version: AuroraVersion.current,
                timing: config.heartbeatTiming)
            var pinnedRequest = request
            pinnedRequest.tlsPin = tlsPin?.description
            pinnedRequest.tlsPort = config.tlsListen?.port
            let joinRequest = pinnedRequest
            let answer: Result<JoinResponse, LeadCallError>
            do throws(LeadCallError) {
                answer = .success(
                    try await joinClient.call(
                        API.join, body: joinRequest, as: JoinResponse.self, timeout: .seconds(5)))
            } catch {
                answer = .failure(error)
            }
            switch answer {
            case .success(let response):
                if let sealed = response.sealedMasterKey { try keepMasterKey(sealed) }
                if let offer = response.replication { try keepReplication(offer, node: response.node.name) }
                let membership = Membership(
                    name: response.node.name, vpnIP: response.node.vpnIP, leadURL: lead.baseURL,
                    lead: response.mesh.lead, cidr: response.mesh.cidr, meshID: response.mesh.meshID,
                    joinedAt: response.node.joinedAt, leadCertificate: pinned?.certificate,
                    leadPin: pinned?.pin.description, company: response.node.company,
                    epoch: response.epoch.flatMap { $0 > 0 ? $0 : nil })
                try membership.save(dataDir: config.dataDir)
                logger.info(
                    "joined the mesh",
                    metadata: ["nodeagent.vpn_ip": "\(membership.vpnIP)", "nodeagent.lead": "\(membership.lead.name)"])
                return membership
            case .failure(.refused(let status, let error)) where status < 500:
                throw AgentError(.identity, "the lead refused the join: \(error.error.message)")
            case .failure(let error):
                _ = state.leadContact(ok: false)
                logger.warning(
                    "cannot join yet; retrying",
                    metadata: ["nodeagent.error": "\(error.message)", "nodeagent.retry_ms": "\(delay.milliseconds)"])
            }
            guard await Self.backOff(&delay) else { return nil }
        }
    }

    /// Waits `delay` before the next try (doubling it, up to 5 s, for the one after); false
    /// when a graceful shutdown came first.
    private static func backOff(_ delay: inout Duration) async -> Bool {
        let wait = delay
        delay = min(delay * 2, .seconds(5))
        do {
            try await cancelWhenGracefulShutdown { try await Task.sleep(for: wait) }
            return true
        } catch {
            return false
        }
    }

    // MARK: Heartbeat

    /// One beat: the full capabilities and labels only when they changed or 30 s passed (or the
    /// lead asks with `sendFull`), with checks, peer RTTs, worker, PostgreSQL and WireGuard reports.
    private func heartbeat(timeout: Duration) async throws(LeadCallError) -> HeartbeatResponse {
        let capabilities = await inventory.capabilities()
        let full = lastFull.withLock { last in
            last.capabilities != capabilities || last.at.map { $0.duration(to: .now) >= .seconds(30) } ?? true
        }
        let beat = HeartbeatRequest(
            capabilities: full ? capabilities : nil, version: AuroraVersion.current, labels: full ? config.labels : nil,
            checks: inventory.checks(), peers: peerRTTs.withLock { $0 }, address: config.listen.description,
            timing: config.heartbeatTiming, worker: worker?.report(), postgres: state.postgres?.health,
            wireguard: state.wireguardReport)
        var withTLS = beat
        withTLS.tlsPort = config.tlsListen?.port
        withTLS.metricsAddress = config.metricsListen?.description
        let sent = ContinuousClock.now
        let response = try await lead.call(
            API.heartbeat, config.name, body: withTLS, as: HeartbeatResponse.self, timeout: timeout)
        rtt.recordNanoseconds((ContinuousClock.now - sent).nanoseconds)
        if let epoch = response.epoch {
            let known = link.epoch ?? 0
            guard epoch >= known else {
                throw .refused(
                    status: 409,
                    ErrorResponse(
                        code: "stale_lead",
                        message: "\(link.url) answered as the lead of epoch \(epoch); this node follows epoch \(known)")
                )
            }
            if link.raise(epoch: epoch) { saveEpoch(epoch) }
        }
        lastFull.withLock { last in
            if response.sendFull { last = (nil, nil) } else if full { last = (capabilities, .now) }
        }
        beats.increment()
        return response
    }

    /// A standby's join answer holds the secrets master key sealed to this node's box key: kept
    /// as `DATA/keys/secrets.master` (0600), where the agent loads it once promoted.
    private func keepMasterKey(_ sealed: String) throws(AgentError) {
        try Self.keepMasterKey(sealed, box: identity.box, dataDir: config.dataDir)
        logger.info("kept the secrets master key the lead sealed to this standby")
    }

    /// Opens `sealed` (hostile input: at most 4 KiB of base64) with `box` and keeps the master key
    /// it holds as `DATA/keys/secrets.master` (0600); ``AgentError`` with code `identity` when it
    /// does not open or parse. The key is never logged.
    static func keepMasterKey(_ sealed: String, box: BoxKey, dataDir: String) throws(AgentError) {
        guard sealed.utf8.count <= 4096, let bytes = Data(base64Encoded: sealed),
            let opened = try? box.open(sealed: [UInt8](bytes))
        else {
            throw AgentError(.identity, "the lead's sealed secrets master key does not open with this node's box key")
        }
        let text = opened.withUnsafeBytes { String(decoding: $0, as: UTF8.self) }
        guard (try? MasterKey(base64: text)) != nil else {
            throw AgentError(.identity, "the lead sent a secrets master key that does not parse")
        }
        try SecureFile.write(text + "\n", to: dataDir + "/keys/secrets.master")
    }

    /// A standby's join answer from a lead whose store streams: its replication credentials,
    /// checked (hostile input) and kept as `DATA/standby.json` (0600, the password still sealed),
    /// where ``StandbyReplicaService`` finds them. Ignored by a standby that shares `store.url`.
    private func keepReplication(_ offer: JoinResponse.Replication, node: String) throws(AgentError) {
        guard config.role == .standby, config.storeURL == nil else {
            logger.notice("the lead offered replication, but this node shares store.url; ignoring it")
            return
        }
        let kept = try StandbyReplication(checking: offer, node: node, box: identity.box)
        try kept.save(dataDir: config.dataDir)
        logger.info(
            "kept the lead's replication credentials", metadata: ["nodeagent.primary": "\(kept.host):\(kept.port)"])
    }

    // MARK: Following a new lead

    /// Records a higher epoch in `membership.json`, so a restart refuses older leads too.
    private func saveEpoch(_ epoch: Int64) {
        do throws(AgentError) {
            guard var saved = try Membership.load(dataDir: config.dataDir), (saved.epoch ?? 0) < epoch else { return }
            saved.epoch = epoch
            try saved.save(dataDir: config.dataDir)
        } catch {
            logger.warning("cannot record the lead's epoch", metadata: ["nodeagent.error": "\(error.message)"])
        }
    }

    /// Asks every lead-eligible member of the cached registry (standbys, and leads other than the
    /// one this node follows) for its signed term, and follows the first whose term is newer than
    /// the epoch this node knows and is signed by the key the cache holds for that member. The
    /// cache came from the old lead over the pinned channel, so nothing new is trusted: a member
    /// the cache does not list, or a term signed by another key, is ignored. Over https the
    /// member's certificate must match the pin the cache holds for it. True when it followed one.
    func followNewLead() async -> Bool {
        let current = leadName.withLock { $0 }
        let members = (cache.current?.nodes.nodes ?? []).filter {
            ($0.role == .standby || $0.role == .lead) && $0.name != current && $0.name != config.name
        }
        for member in members {
            guard let adopted = await handoff(from: member) else { continue }
            await adopt(adopted.handoff, certificate: adopted.certificate, member: member)
            return true
        }
        return false
    }

    /// `GET /api/lead/handoff` from `member`, checked against what the cache holds for it.
    private func handoff(from member: Node) async -> (handoff: LeadHandoff, certificate: NIOSSLCertificate?)? {
        let found = await LeadHandoffProbe.fetch(from: member, newerThan: link.epoch ?? 0)
        if found == nil { logger.debug("no newer lead term from \(member.name)") }
        return found
    }

    /// Points every call to the lead at the new one and records it in `membership.json`.
    private func adopt(_ handoff: LeadHandoff, certificate: NIOSSLCertificate?, member: Node) async {
        let term = handoff.term
        link.set(url: term.url, tls: certificate.map { PinnedTLS.clientConfiguration(trusting: $0) })
        link.raise(epoch: term.epoch)
        leadName.withLock { $0 = term.lead }
        joinedLeadKey.withLock { $0 = try? PublicKey(base64: term.signPublicKey) }
        followed.withLock { $0 = handoff }
        do throws(AgentError) {
            if var saved = try Membership.load(dataDir: config.dataDir) {
                saved.leadURL = term.url
                saved.lead = .init(
                    name: term.lead, url: term.url, signPublicKey: term.signPublicKey, boxPublicKey: term.boxPublicKey)
                saved.leadCertificate = try? certificate?.pemText()
                saved.leadPin = certificate != nil ? member.tlsPin : nil
                saved.epoch = term.epoch
                saved.handoff = handoff
                try saved.save(dataDir: config.dataDir)
            }
        } catch {
            logger.error("cannot record the new lead", metadata: ["nodeagent.error": "\(error.message)"])
        }
        logger.notice(
            "following a new lead",
            metadata: [
                "nodeagent.lead": "\(term.lead)", "nodeagent.epoch": "\(term.epoch)", "nodeagent.url": "\(term.url)",
            ])
    }

    /// Fetches the registry and topology for the cache; false when the lead did not answer.
    @discardableResult
    func refreshCache(timeout: Duration) async -> Bool {
        do {
            let nodes = try await lead.call(API.listNodes, as: NodeList.self, timeout: timeout)
            let topology = try? await lead.call(API.topology, as: Topology.self, timeout: timeout)
            cache.store(nodes: nodes, topology: topology)
            if let own = nodes.nodes.first(where: { $0.name == config.name }) { recordCompany(own.company) }
            return true
        } catch {
            return false
        }
    }

    /// Keeps `membership.json`'s company equal to the lead's record of this node (an operator may
    /// change it), so the check at the next start compares against the current one.
    private func recordCompany(_ company: String) {
        guard knownCompany.withLock({ $0 }) != company else { return }
        do throws(AgentError) {
            guard var saved = try Membership.load(dataDir: config.dataDir) else { return }
            if saved.company != company {
                saved.company = company
                try saved.save(dataDir: config.dataDir)
                logger.notice("company recorded", metadata: ["nodeagent.company": "\(company)"])
            }
            knownCompany.withLock { $0 = company }
        } catch {
            logger.warning("cannot record the company", metadata: ["nodeagent.error": "\(error.message)"])
        }
    }

    /// TCP connect time to every peer whose API address is known, for `/topology`.
    private func measurePeers() async {
        guard let nodes = cache.current?.nodes.nodes else { return }
        let peers = nodes.filter { $0.name != config.name && ($0.state == .alive || $0.state == .suspect) }
        let results = await withTaskGroup(of: PeerRTT?.self) { group in
            for peer in peers {
                guard let text = peer.address, let address = try? HostPort(parsing: text) else { continue }
                group.addTask {
                    if case .connected(let elapsed) = await TCPProbe.connect(
                        host: address.host, port: address.port, timeout: .milliseconds(500))
                    {
                        return PeerRTT(
                            name: peer.name, rttMs: (Double(elapsed / .microseconds(1)) / 1000).rounded(toPlaces: 3))
                    }
                    return nil
                }
            }
            var results: [PeerRTT] = []
            for await result in group { if let result { results.append(result) } }
            return results.sorted { $0.name < $1.name }
        }
        peerRTTs.withLock { $0 = results }
    }
}
