import AsyncAlgorithms
import AuroraAPI
import Foundation
import Logging
import Mesh
import ServiceLifecycle
import Synchronization

#if canImport(Glibc)
    import Glibc
    import Secrets
#endif

/// The node's WireGuard interface (`wireguard.mode`):
/// - `render`: keeps `DATA/wireguard/IF.conf` (wg-quick form, 0600) equal to the mesh as the
///   registry (or this node's cached copy of it) describes it;
/// - `apply`: also creates the interface when missing (kernel WireGuard, else `wireguard-go`),
///   sets its address and link, and loads peers with `wg syncconf` only when the rendered
///   configuration changed, so existing sessions never reset.
///
/// At start the last good configuration is applied before anything else, so a node whose lead
/// is away still has its tunnels. Nothing here ever takes the interface down: an unreachable
/// lead only means no changes. The interface outlives the agent (it belongs to the kernel or
/// to a detached `wireguard-go`), so restarting the agent does not drop a tunnel either.
final class WireGuardService: Service, Sendable {
    enum Mode: String { case off, render, apply }

    let config: NodeConfig
    let identity: NodeIdentity
    let logger: Logger
    /// Members of the mesh: the lead's registry, or a node's cached copy; nil while unknown.
    let members: @Sendable () async -> [Node]?
    /// The lead's decisions for this node's pairs behind NAT (relayed, trying, direct); empty when none.
    let paths: @Sendable () async -> [MeshPath]
    let agent: AgentState
    /// `DATA/wireguard` (0700): the rendered `IF.conf` and, briefly, the `syncconf` input.
    let directory: String
    /// The mesh network: the lead's own setting, a node's from its join answer.
    private let meshNetwork: @Sendable () -> IPv4Network?
    /// The mesh network once learned; it does not change while the agent runs.
    private let knownNetwork = Mutex<IPv4Network?>(nil)
    private let state = Mutex(Observed())
    /// Since when nothing could be rendered, and whether that was said.
    private let waitingSince = Mutex<(at: ContinuousClock.Instant, reported: Bool)?>(nil)
    /// A pair trying a direct path longer than this goes back to its relay on this node's own
    /// decision (the lead ends a trial after 12 s; this covers a lead that went away meanwhile).
    static let trialGiveUp = Duration.seconds(20)
    /// How long one `ip`, `wg` or `wireguard-go` may run before it is killed and the step retried.
    static let toolTimeout = Duration.seconds(15)

    /// What the service last did and saw: the configuration in force (`applied`), when it changed,
    /// the last error (shown by `GET /api/wireguard`, cleared by the next success), and whether
    /// the interface was seen up.
    struct Observed {
        var applied: WireGuardConfig?
        var appliedAt: Date?
        var lastError: String?
        var up = false
        /// This node's pairs behind NAT as last read.
        var paths: [MeshPath] = []
        /// Since when each peer's pair has been trying a direct path.
        var tryingSince: [String: ContinuousClock.Instant] = [:]
        /// This node's endpoint as the registry has it (its public address), as last read.
        var seenFrom: String?
        /// Rounds left in which to send to every peer (the node moved): a few, since a relay may
        /// learn the node's new public host a moment after the node does.
        var announce = 0
    }

    /// The relay this agent runs (`relay.enabled`), shown with the interface.
    let relay: RelayService?

    init(
        config: NodeConfig, identity: NodeIdentity, agent: AgentState, dataDir: String, logger: Logger,
        network: @escaping @Sendable () -> IPv4Network?,
        paths: @escaping @Sendable () async -> [MeshPath] = { [] }, relay: RelayService? = nil,
        members: @escaping @Sendable () async -> [Node]?
    ) {
        self.paths = paths
        self.relay = relay
        self.agent = agent
        self.meshNetwork = network
        self.config = config
        self.identity = identity
        self.members = members
        self.directory = dataDir + "/wireguard"
        var logger = logger
        logger[metadataKey: "nodeagent.subsystem"] = "wireguard"
        self.logger = logger
    }

    var mode: Mode { Mode(rawValue: config.wireguardMode) ?? .off }
    var interface: String { config.wireguardInterface }
    /// `DATA/wireguard/IF.conf`: the last good configuration, read back at the next start.
    var configPath: String { directory + "/\(interface).conf" }

    /// `GET /api/wireguard`.
    var status: WireGuardStatus {
        let observed = state.withLock { $0 }
        return WireGuardStatus(
            mode: mode.rawValue, interface: interface, up: observed.up, address: observed.applied?.interface.address,
            publicKey: identity.wireguard.publicKey.base64, listenPort: config.wireguardListenPort,
            configPath: configPath,
            appliedAt: observed.appliedAt.map(ISOTime.string), lastError: observed.lastError,
            peers: agent.wireguardReport.peers ?? [], relay: relay?.status,
            paths: observed.paths.isEmpty ? nil : observed.paths)
    }

    /// The configuration as rendered now; nil until one was rendered.
    var rendered: WireGuardConfig? { state.withLock { $0.applied } }

    /// The service: with `wireguard.mode` off it returns at once. Otherwise it applies the last good
    /// configuration, then every second renders what the mesh asks for and applies a change (see
    /// ``tick()``). Throws only when `DATA/wireguard` cannot be created; apply failures are retried.
    func run() async throws {
        guard mode != .off else { return }
        guard mkdir(directory, 0o700) == 0 || errno == EEXIST else {
            throw AgentError(.dataDir, "cannot create \(directory): \(String(cString: strerror(errno)))")
        }
        // The last good configuration first: tunnels come back even when the lead is away.
        if let text = try? SecureFile.read(configPath), let last = WireGuardConfig(wgQuick: text, node: config.name) {
            var withKey = last
            withKey.interface.privateKey = identity.wireguard.base64()
            if mode == .apply {
                do {
                    try await apply(withKey, diff: WireGuardDiff(from: nil, to: withKey), ensure: true)
                    logger.info(
                        "applied the last good configuration", metadata: ["nodeagent.peers": "\(withKey.peers.count)"])
                } catch {
                    record(error: error.message)
                    logger.error(
                        "cannot apply the last good configuration", metadata: ["nodeagent.error": "\(error.message)"])
                }
            }
            state.withLock { $0.applied = withKey }
        }
        for await _ in AsyncTimerSequence(interval: .seconds(1), clock: .continuous).cancelOnGracefulShutdown() {
            await tick()
        }
    }

    /// One round: when the desired configuration differs from the one in force, apply it (`apply`
    /// mode) and write `IF.conf`; only a success makes it the one in force, so a failure is retried
    /// next second. New peers get a nudge. In `apply` mode the interface is then observed.
    private func tick() async {
        let wanted: WireGuardConfig
        switch await self.wanted() {
        case .ready(let config):
            wanted = config
            // A waiting reason that was shown goes once there is something to render.
            if waitingSince.withLock({ $0 })?.reported == true {
                state.withLock { if $0.lastError != nil { $0.lastError = nil } }
            }
            waitingSince.withLock { $0 = nil }
        case .waiting(let reason):
            // Nothing to render yet: said once it lasts 5 s (and shown by `GET /api/wireguard`),
            // so a node without tunnels always says why.
            let since = waitingSince.withLock { since in
                if since == nil { since = (.now, false) }
                return since!
            }
            if !since.reported, since.at.duration(to: .now) >= .seconds(5) {
                waitingSince.withLock { $0?.reported = true }
                logger.warning("no configuration to apply yet", metadata: ["nodeagent.reason": "\(reason)"])
                record(error: reason)
            }
            if mode == .apply { await observe() }
            return
        }
        let last = state.withLock { $0.applied }
        if wanted != last {
            let diff = WireGuardDiff(from: last, to: wanted)
            do {
                if mode == .apply {
                    try await apply(wanted, diff: diff, ensure: last == nil || !state.withLock { $0.up })
                }
                try SecureFile.write(wanted.wgQuick(), to: configPath)
                state.withLock {
                    $0.applied = wanted
                    $0.appliedAt = Date()
                    $0.lastError = nil
                }
                logger.info(
                    "configuration changed",
                    metadata: ["nodeagent.change": "\(diff.summary)", "nodeagent.mode": "\(mode.rawValue)"])
                if mode == .apply { nudge(wanted.peers.filter { diff.added.contains($0.name) }) }
            } catch {
                report(error.message)  // retried every second: logged when the reason changes
            }
        }
        if mode == .apply {
            // A pair trying a direct path needs traffic both ways to show it works (and to open
            // both NATs): a datagram to each such peer every second.
            let trying = Set(
                state.withLock { $0.paths }.filter { $0.mode == .trying }.map { $0.other(than: config.name) })
            if !trying.isEmpty { nudge(wanted.peers.filter { trying.contains($0.name) }) }
            let announce = state.withLock { observed in
                defer { observed.announce = max(0, observed.announce - 1) }
                return observed.announce > 0
            }
            if announce { nudge(wanted.peers) }
            await observe()
        }
    }

    /// The configuration the mesh asks for now; nil while this node's own entry is unknown.
    func desired() async -> WireGuardConfig? {
        if case .ready(let wanted) = await wanted() { return wanted }
        return nil
    }

    /// What the mesh asks for, or what is still missing to know it.
    enum Wanted {
        case ready(WireGuardConfig)
        /// Why nothing can be rendered yet (shown as the last error once it lasts).
        case waiting(String)
    }

    /// The configuration the mesh asks for now, or why it is not known yet.
    func wanted() async -> Wanted {
        let network = knownNetwork.withLock { known in
            if known == nil { known = meshNetwork() }
            return known
        }
        guard let network else { return .waiting("the mesh network is not known yet (the node has not joined)") }
        guard let nodes = await members() else {
            return .waiting("no copy of the registry yet (the lead has not answered a registry fetch)")
        }
        guard let me = nodes.first(where: { $0.name == config.name }), !me.vpnIP.isEmpty else {
            return .waiting("the registry has no mesh address for \(config.name) yet")
        }
        // Where the mesh sees this node from: when it moves (roaming, re-NAT), every peer hears
        // from the new address at once, so relays latch it and peers' WireGuard roams to it.
        let seenFrom = me.wireguard.endpoint
        let moved = state.withLock { observed in
            defer { observed.seenFrom = seenFrom }
            return observed.seenFrom != nil && seenFrom != nil && observed.seenFrom != seenFrom
        }
        if moved {
            logger.notice(
                "this node's address as the mesh sees it changed; sending to every peer from the new one",
                metadata: ["nodeagent.endpoint": "\(seenFrom ?? "")"])
            state.withLock { $0.announce = 5 }
        }
        let all = nodes.map { node in
            WireGuardConfig.Member(
                name: node.name, publicKey: node.wireguard.publicKey, vpnIP: node.vpnIP,
                endpoint: node.wireguard.endpoint,
                behindNAT: node.wireguard.behindNAT ?? false, active: node.state != .left)
        }
        var mine = all.first { $0.name == config.name }!
        mine.behindNAT = config.wireguardBehindNAT
        var endpoints: [String: String] = [:]
        let ours = await paths().filter { $0.a == config.name || $0.b == config.name }
        let now = ContinuousClock.now
        let tryingSince = state.withLock { observed in
            observed.paths = ours
            // When each pair started trying, as this node saw it.
            var since: [String: ContinuousClock.Instant] = [:]
            for path in ours where path.mode == .trying {
                since[path.other(than: config.name)] = observed.tryingSince[path.other(than: config.name)] ?? now
            }
            observed.tryingSince = since
            return since
        }
        for path in ours {
            let other = path.other(than: config.name)
            var path = path
            // A trial that outlasts its time (the lead went away in the middle and cannot end it)
            // is given up here: the pair goes back to its relay.
            if path.mode == .trying, let since = tryingSince[other], since.duration(to: now) > Self.trialGiveUp,
                path.relay != nil
            {
                path.mode = .relayed
            }
            if let endpoint = path.endpoint(for: config.name) { endpoints[other] = endpoint }
        }
        return .ready(
            WireGuardConfig.build(
                for: mine, privateKey: identity.wireguard.base64(), listenPort: config.wireguardListenPort,
                network: network, members: all, paths: endpoints))
    }

    // MARK: Applying

    /// Brings the interface to `wanted`: creates it when `ensure` finds it missing, sets the
    /// address when it changed, loads peers with `wg syncconf` (sessions of unchanged peers keep
    /// their handshake and counters).
    func apply(_ wanted: WireGuardConfig, diff: WireGuardDiff, ensure: Bool) async throws(AgentError) {
        var created = false
        if ensure, try await run("ip", ["link", "show", "dev", interface]).status != 0 {
            try await create()
            created = true
        }
        if created || ensure || diff.addressChanged {
            _ = try await run("ip", ["address", "flush", "dev", interface])
            try await check("ip", ["address", "add", wanted.interface.address, "dev", interface])
            try await check("ip", ["link", "set", "dev", interface, "up"])
        }
        if created || ensure || diff.peersOrInterfaceChanged {
            let path = directory + "/.\(interface).setconf"
            try SecureFile.write(wanted.setconf(), to: path)
            defer { unlink(path) }
            try await check("wg", ["syncconf", interface, path])
        }
        state.withLock { $0.up = true }
    }

    /// Kernel WireGuard when the kernel has it, else `wireguard-go`, which detaches and keeps
    /// running when the agent stops.
    private func create() async throws(AgentError) {
        if try await run("ip", ["link", "add", "dev", interface, "type", "wireguard"]).status == 0 { return }
        let result = try await run("wireguard-go", [interface])
        guard result.status == 0, try await run("ip", ["link", "show", "dev", interface]).status == 0 else {
            throw AgentError(
                .process,
                "cannot create WireGuard interface \(interface): no kernel WireGuard and wireguard-go said: \(result.lastLine)"
            )
        }
        logger.info("created the interface with wireguard-go", metadata: ["nodeagent.interface": "\(interface)"])
    }

    /// `wg show IF dump` into the links the heartbeat carries; a missing interface is created
    /// again from the configuration in force.
    private func observe() async {
        let result: ProcessResult
        do { result = try await run("wg", ["show", interface, "dump"]) } catch {
            report(error.message)
            return
        }
        guard result.status == 0, let dump = WireGuardDump(parsing: result.output) else {
            let wasUp = state.withLock { observed in
                defer { observed.up = false }
                return observed.up
            }
            agent.setWireGuardLinks(nil)
            if wasUp {
                logger.warning(
                    "the interface is gone; creating it again", metadata: ["nodeagent.interface": "\(interface)"])
            }
            if let applied = state.withLock({ $0.applied }) {
                do { try await apply(applied, diff: WireGuardDiff(from: nil, to: applied), ensure: true) } catch {
                    report(error.message)
                }
            }
            return
        }
        let names = Dictionary(
            (state.withLock { $0.applied?.peers } ?? []).map { ($0.publicKey, $0.name) }, uniquingKeysWith: { $1 })
        let now = Int64(Date().timeIntervalSince1970)
        let links = dump.peers.map { peer in
            WireGuardLink(
                publicKey: peer.publicKey, name: names[peer.publicKey], endpoint: peer.endpoint,
                allowedIPs: peer.allowedIPs,
                handshakeAgeS: peer.latestHandshake.map { Double(max(0, now - $0)) }, rxBytes: peer.rxBytes,
                txBytes: peer.txBytes)
        }
        state.withLock { $0.up = true }
        agent.setWireGuardLinks(links)
    }

    /// A datagram to each new peer's mesh address: this side starts the handshake at once,
    /// rather than waiting for the new peer's first attempt to be retried (5 s) after it was
    /// dropped by a side that did not know it yet.
    private func nudge(_ peers: [WireGuardPeerConfig]) {
        let fd = socket(AF_INET, Int32(SOCK_DGRAM.rawValue | SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { return }
        defer { close(fd) }
        for peer in peers {
            guard let ip = peer.allowedIPs.first?.split(separator: "/").first,
                let address = IPv4Network.parse(String(ip))
            else { continue }
            var target = sockaddr_in()
            target.sin_family = sa_family_t(AF_INET)
            target.sin_port = UInt16(9).bigEndian  // discard
            target.sin_addr.s_addr = address.bigEndian
            var byte: UInt8 = 0
            _ = withUnsafePointer(to: &target) { pointer in
                pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                    sendto(fd, &byte, 1, Int32(MSG_DONTWAIT), $0, socklen_t(MemoryLayout<sockaddr_in>.size))
                }
            }
        }
    }

    /// Logs a failure when it differs from the last one (it is retried every second) and keeps it.
    private func report(_ message: String) {
        if state.withLock({ $0.lastError }) != message {
            logger.error("WireGuard step failed; will retry", metadata: ["nodeagent.error": "\(message)"])
        }
        record(error: message)
    }

    /// Keeps the last failure for `GET /api/wireguard`.
    private func record(error: String) { state.withLock { $0.lastError = error } }

    /// Runs a tool that must succeed; ``AgentError`` with code `process` and its last output line if not.
    private func check(_ tool: String, _ arguments: [String]) async throws(AgentError) {
        let result = try await run(tool, arguments)
        guard result.status == 0 else {
            throw AgentError(.process, "\(tool) \(arguments.joined(separator: " ")) failed: \(result.lastLine)")
        }
    }

    /// Runs `ip`, `wg` or `wireguard-go` from the system directories (not `PATH`); a tool that is
    /// missing is an ``AgentError`` naming the packages to install.
    private func run(_ tool: String, _ arguments: [String]) async throws(AgentError) -> ProcessResult {
        guard let path = Self.find(tool) else {
            throw AgentError(
                .process,
                "\(tool) not found; install iproute2 and wireguard-tools (and wireguard-go without kernel WireGuard)")
        }
        return try await ProcessRunner.run(path, arguments, timeout: Self.toolTimeout)
    }

    /// A node's mesh network, from the join answer it saved; nil before it joined.
    static func joinedNetwork(dataDir: String) -> IPv4Network? {
        guard let saved = try? Membership.load(dataDir: dataDir) else { return nil }
        return try? IPv4Network(parsing: saved.cidr)
    }

    /// The tool in `/usr/bin`, `/usr/sbin`, `/bin`, `/sbin` or `/usr/local/{bin,sbin}`; nil when absent.
    static func find(_ tool: String) -> String? {
        ["/usr/bin", "/usr/sbin", "/bin", "/sbin", "/usr/local/bin", "/usr/local/sbin"].map { $0 + "/" + tool }
            .first(where: FileManager.default.isExecutableFile(atPath:))
    }
}
