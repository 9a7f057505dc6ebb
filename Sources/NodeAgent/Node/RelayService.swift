import AsyncAlgorithms
import AuroraAPI
import Logging
import Mesh
import Metrics
import NIOCore
import NIOPosix
import ServiceLifecycle
import Synchronization

/// The relay (`relay.enabled`): for each pair of nodes behind NAT that the lead's paths give to
/// this node, a pair of UDP ports. What arrives on `a`'s port from `a` leaves `b`'s port for
/// `b`'s address, and back: WireGuard datagrams as they are, so the relay never holds the
/// pair's keys or sees their plaintext (the way Tailscale's DERP carries ciphertext).
///
/// Each side's address is latched from the datagrams it sends (it is behind NAT; its mapping is
/// only known from them). Only well-formed WireGuard datagrams are forwarded, and a side's
/// address moves only to a source on the public host the lead knows for that side, so a
/// stranger who finds the port can neither inject into the pair nor steal its traffic.
///
/// The table comes from the lead's registry (on the lead) or this node's cached copy of the
/// topology, so relayed pairs keep flowing while the lead is away.
final class RelayService: Service, Sendable {
    let name: String
    /// The ports this agent offers: it opens none outside them, whatever a plan says.
    let table: RelayOffer
    let bindHost: String
    let logger: Logger
    /// The mesh's paths: the lead's current decisions, or a node's cached copy; nil while unknown.
    let paths: @Sendable () async -> [MeshPath]?
    private let pairs = Mutex<[String: RelayPair]>([:])
    private let group: any EventLoopGroup

    init(
        name: String, table: RelayOffer, bindHost: String = "0.0.0.0",
        group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton,
        logger: Logger, paths: @escaping @Sendable () async -> [MeshPath]?
    ) {
        self.name = name
        self.table = table
        self.bindHost = bindHost
        self.group = group
        self.paths = paths
        var logger = logger
        logger[metadataKey: "nodeagent.subsystem"] = "relay"
        self.logger = logger
    }

    /// Every second: opens the port pairs of new assignments, closes those no longer given to this
    /// node, and updates each side's public host. All are closed at shutdown.
    func run() async throws {
        for await _ in AsyncTimerSequence(interval: .seconds(1), clock: .continuous).cancelOnGracefulShutdown() {
            await reconcile()
        }
        for pair in pairs.withLock({ $0.values }) { await pair.close() }
        pairs.withLock { $0 = [:] }
        RelayMetrics.pairs.record(0)
    }

    /// One round of ``run()``.
    func reconcile() async {
        guard let paths = await paths() else { return }
        var wanted: [String: (MeshPath, Int, Int)] = [:]
        for path in paths where path.relay == name {
            guard let a = path.relayA.flatMap({ try? HostPort(parsing: $0) }),
                let b = path.relayB.flatMap({ try? HostPort(parsing: $0) }),
                [a.port, b.port].allSatisfy({ (table.portBase..<(table.portBase + 2 * table.pairs)).contains($0) })
            else { continue }
            wanted["\(path.a)|\(path.b)|\(a.port)|\(b.port)"] = (path, a.port, b.port)
        }
        let current = pairs.withLock { $0 }
        for (key, pair) in current where wanted[key] == nil {
            await pair.close()
            pairs.withLock { _ = $0.removeValue(forKey: key) }
            logger.info("relay pair closed", metadata: ["nodeagent.pair": "\(pair.label)"])
        }
        for (key, (path, portA, portB)) in wanted {
            if let pair = current[key] {
                pair.allow(a: path.hostA, b: path.hostB)
                continue
            }
            do {
                let pair = try await RelayPair.open(
                    a: path.a, b: path.b, host: bindHost, portA: portA, portB: portB,
                    loop: group.next())
                pair.allow(a: path.hostA, b: path.hostB)
                pairs.withLock { $0[key] = pair }
                logger.info(
                    "relay pair open",
                    metadata: ["nodeagent.pair": "\(pair.label)", "nodeagent.ports": "\(portA),\(portB)"])
            } catch {
                logger.warning(
                    "cannot open a relay pair; will retry",
                    metadata: ["nodeagent.pair": "\(path.a)-\(path.b)", "nodeagent.error": "\(error)"])
            }
        }
        RelayMetrics.pairs.record(pairs.withLock { $0.count })
    }

    /// What each open pair forwarded and dropped (`GET /api/wireguard`, `relay`).
    var status: [RelayPairStatus] {
        pairs.withLock { Array($0.values) }.map(\.status).sorted { ($0.a, $0.b) < ($1.a, $1.b) }
    }
}

enum RelayMetrics {
    static let forwarded = Counter(label: "aurora_relay_forwarded_datagrams_total")
    static let forwardedBytes = Counter(label: "aurora_relay_forwarded_bytes_total")
    static let dropped = Counter(label: "aurora_relay_dropped_datagrams_total")
    static let pairs = Gauge(label: "aurora_relay_pairs")
}

/// One relayed pair: two UDP channels on one event loop, and each side's latched address.
final class RelayPair: Sendable {
    let label: String
    let a: String
    let b: String
    let portA: Int
    let portB: Int
    private let state: Mutex<State>
    private let channels: Mutex<(a: (any Channel)?, b: (any Channel)?)>

    struct State {
        /// Where each side's datagrams come from (its NAT mapping), once it sent one.
        var latched: [SocketAddress?] = [nil, nil]
        /// The public host each side's address must be on; nil: not known, any.
        var allowed: [String?] = [nil, nil]
        var forwarded: [Int64] = [0, 0]
        var bytes: [Int64] = [0, 0]
        var dropped: Int64 = 0
    }

    private init(a: String, b: String, portA: Int, portB: Int) {
        self.a = a
        self.b = b
        self.label = "\(a)-\(b)"
        self.portA = portA
        self.portB = portB
        self.state = Mutex(State())
        self.channels = Mutex((nil, nil))
    }

    static func open(a: String, b: String, host: String, portA: Int, portB: Int, loop: any EventLoop) async throws
        -> RelayPair
    {
        let pair = RelayPair(a: a, b: b, portA: portA, portB: portB)
        func bind(_ side: Int, _ port: Int) async throws -> any Channel {
            try await DatagramBootstrap(group: loop)
                .channelOption(.socketOption(.so_reuseaddr), value: 1)
                .channelInitializer { channel in
                    channel.eventLoop.makeCompletedFuture {
                        try channel.pipeline.syncOperations.addHandler(RelayHandler(pair: pair, side: side))
                    }
                }
                .bind(host: host, port: port).get()
        }
        let a = try await bind(0, portA)
        do {
            let b = try await bind(1, portB)
            pair.channels.withLock { $0 = (a, b) }
        } catch {
            try? await a.close()
            throw error
        }
        return pair
    }

    func allow(a: String?, b: String?) { state.withLock { $0.allowed = [a, b] } }

    func close() async {
        let (a, b) = channels.withLock { $0 }
        try? await a?.close()
        try? await b?.close()
    }

    func channel(_ side: Int) -> (any Channel)? { channels.withLock { side == 0 ? $0.a : $0.b } }

    /// A datagram from `source` arrived on `side`'s port: where to send it (the other side's
    /// latched address), or nil to drop it.
    func route(from source: SocketAddress, side: Int, bytes: ByteBuffer) -> SocketAddress? {
        let valid = bytes.withUnsafeReadableBytes { WireGuardFrame.isValid($0) }
        return state.withLock { state in
            guard valid else {
                state.dropped += 1
                return nil
            }
            if state.latched[side] != source {
                // The side's address moves only to its public host (when the lead knows it).
                if let host = state.allowed[side], source.ipAddress != host {
                    state.dropped += 1
                    return nil
                }
                state.latched[side] = source
            }
            guard let target = state.latched[1 - side] else {
                state.dropped += 1
                return nil
            }
            state.forwarded[side] += 1
            state.bytes[side] += Int64(bytes.readableBytes)
            return target
        }
    }

    var status: RelayPairStatus {
        state.withLock { state in
            RelayPairStatus(
                a: a, b: b, portA: portA, portB: portB,
                latchedA: state.latched[0].map(Self.render), latchedB: state.latched[1].map(Self.render),
                forwardedAToB: state.forwarded[0], forwardedBToA: state.forwarded[1],
                bytesAToB: state.bytes[0], bytesBToA: state.bytes[1], dropped: state.dropped)
        }
    }

    static func render(_ address: SocketAddress) -> String {
        guard let ip = address.ipAddress, let port = address.port else { return "\(address)" }
        return ip.contains(":") ? "[\(ip)]:\(port)" : "\(ip):\(port)"
    }
}

/// Forwards one side's datagrams to the other side's channel; flushes once per read burst.
final class RelayHandler: ChannelInboundHandler, Sendable {
    typealias InboundIn = AddressedEnvelope<ByteBuffer>
    typealias OutboundOut = AddressedEnvelope<ByteBuffer>

    let pair: RelayPair
    let side: Int

    init(pair: RelayPair, side: Int) {
        self.pair = pair
        self.side = side
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let envelope = unwrapInboundIn(data)
        guard let target = pair.route(from: envelope.remoteAddress, side: side, bytes: envelope.data),
            let out = pair.channel(1 - side)
        else {
            RelayMetrics.dropped.increment()
            return
        }
        RelayMetrics.forwarded.increment()
        RelayMetrics.forwardedBytes.increment(by: envelope.data.readableBytes)
        out.write(AddressedEnvelope(remoteAddress: target, data: envelope.data), promise: nil)
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        pair.channel(1 - side)?.flush()
    }
}
