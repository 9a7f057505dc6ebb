import AuroraAPI
import Foundation
import Logging
import Mesh
import NIOCore
import NIOPosix
import ServiceLifecycle
import Synchronization

/// The mesh DNS server (`dns.listen`): UDP and TCP on one address, answering the zone of
/// ``MeshZone`` from this agent's registry view (the lead's registry, or a node's cached copy,
/// so names resolve while the lead is away). A Service: it stops at the agent's graceful
/// shutdown. Malformed queries get FORMERR when their id is readable and nothing otherwise; a
/// TCP message over 4 KiB closes its connection.
struct DNSServer: Service {
    let address: HostPort
    let zones: ZoneSource
    let logger: Logger

    /// Where answers come from: a snapshot of the registry view, read without waiting by every
    /// query. A query that finds it older than 250 ms starts one rebuild in the background and
    /// is answered from the snapshot it found, so a burst of queries never waits on the registry.
    final class ZoneSource: Sendable {
        private struct State {
            var zone: MeshZone?
            var builtAt: ContinuousClock.Instant = .now
            var rebuilding = false
        }
        private let build: @Sendable () async -> MeshZone
        private let state = Mutex(State())

        init(build: @escaping @Sendable () async -> MeshZone) { self.build = build }

        /// The snapshot, when there is one; starts a rebuild when it is stale.
        func snapshot() -> MeshZone? {
            let (zone, stale) = state.withLock { state -> (MeshZone?, Bool) in
                let stale =
                    state.zone != nil && !state.rebuilding && state.builtAt.duration(to: .now) > .milliseconds(250)
                if stale { state.rebuilding = true }
                return (state.zone, stale)
            }
            if stale { Task { await self.refresh() } }
            return zone
        }

        /// Builds the snapshot from the registry view now.
        func refresh() async {
            let zone = await build()
            state.withLock {
                $0.zone = zone
                $0.builtAt = .now
                $0.rebuilding = false
            }
        }
    }

    /// The zone of `role`'s registry view under `domain`.
    static func zone(role: RoleParts, config: NodeConfig) async -> MeshZone {
        let list: NodeList?
        switch role {
        case .lead(let lead): list = try? await lead.registry.list()
        case .node(let node): list = node.cache.current?.nodes
        }
        let nodes = list?.nodes ?? []
        let entries = nodes.compactMap { node -> MeshZone.Entry? in
            guard let address = IPv4Network.parse(node.vpnIP) else { return nil }
            let apiPort = node.tlsPort ?? node.address.flatMap { try? HostPort(parsing: $0) }?.port
            return MeshZone.Entry(
                name: node.name, role: node.role.rawValue, company: node.company, address: address,
                live: node.state != .dead && node.state != .left, apiPort: apiPort)
        }
        // The registry names its lead (a standby's copy names the lead it follows, not itself).
        let lead = list?.lead ?? (nodes.first { $0.role == .lead }?.name)
        return MeshZone(domain: config.dnsDomain, entries: entries, lead: lead)
    }

    /// Queries read per `recvmmsg` on the UDP socket.
    static let vectorRead = 32

    /// The answer to one message, or nil when there is nothing to answer (not even an id).
    static func answer(_ bytes: [UInt8], zone: MeshZone, udp: Bool) -> [UInt8]? {
        do {
            let query = try DNSMessage.parseQuery(bytes)
            let (code, records) = zone.answer(query.question)
            return DNSMessage.response(to: query, code: code, records: records, udp: udp)
        } catch {
            return error.id.map { DNSMessage.failure(id: $0, code: error.code) }
        }
    }

    func run() async throws {
        let group = MultiThreadedEventLoopGroup.singleton
        await zones.refresh()
        let zones = self.zones
        let udp = try await DatagramBootstrap(group: group)
            .channelOption(.socketOption(.so_reuseaddr), value: 1)
            // Up to 32 queries per recvmmsg, answered and flushed as one batch. NIO splits one
            // receive buffer evenly between the messages: 32 × 1 KiB, so no query is cut short.
            .channelOption(.datagramVectorReadMessageCount, value: DNSServer.vectorRead)
            .channelOption(.maxMessagesPerRead, value: 4)
            .channelOption(
                .recvAllocator, value: FixedSizeRecvByteBufferAllocator(capacity: DNSServer.vectorRead * 1024)
            )
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(DNSDatagramHandler(zones: zones))
                }
            }
            .bind(host: address.host, port: address.port).get()
        let tcp: NIOAsyncChannel<NIOAsyncChannel<ByteBuffer, ByteBuffer>, Never>
        do {
            tcp = try await ServerBootstrap(group: group)
                .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
                .bind(host: address.host, port: address.port) { channel in
                    channel.eventLoop.makeCompletedFuture {
                        // A client that sends nothing for 10 s is closed: it must not hold a shutdown.
                        try channel.pipeline.syncOperations.addHandlers(
                            IdleStateHandler(readTimeout: .seconds(10)), CloseWhenIdle(),
                            ByteToMessageHandler(DNSFrameDecoder()))
                        return try NIOAsyncChannel<ByteBuffer, ByteBuffer>(wrappingChannelSynchronously: channel)
                    }
                }
        } catch {
            try? await udp.close()
            throw error
        }
        logger.info("answering DNS", metadata: ["nodeagent.address": "\(address)"])
        try await withGracefulShutdownHandler {
            try await withThrowingDiscardingTaskGroup { tasks in
                tasks.addTask { try await udp.closeFuture.get() }
                tasks.addTask {
                    try await tcp.executeThenClose { connections in
                        try await withThrowingDiscardingTaskGroup { clients in
                            for try await connection in connections {
                                clients.addTask {
                                    try? await connection.executeThenClose { inbound, outbound in
                                        for try await frame in inbound {
                                            let bytes = Array(frame.readableBytesView)
                                            guard let zone = zones.snapshot(),
                                                let reply = Self.answer(bytes, zone: zone, udp: false)
                                            else { return }
                                            var out = ByteBuffer()
                                            out.writeInteger(UInt16(reply.count))
                                            out.writeBytes(reply)
                                            try await outbound.write(out)
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        } onGracefulShutdown: {
            udp.close(promise: nil)
            tcp.channel.close(promise: nil)
        }
    }
}

/// Answers each datagram on its event loop, from the zone's snapshot: no task, no await.
final class DNSDatagramHandler: ChannelInboundHandler, Sendable {
    typealias InboundIn = AddressedEnvelope<ByteBuffer>
    typealias OutboundOut = AddressedEnvelope<ByteBuffer>
    let zones: DNSServer.ZoneSource

    init(zones: DNSServer.ZoneSource) { self.zones = zones }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let envelope = unwrapInboundIn(data)
        guard let zone = zones.snapshot(),
            let reply = DNSServer.answer(Array(envelope.data.readableBytesView), zone: zone, udp: true)
        else { return }
        var buffer = context.channel.allocator.buffer(capacity: reply.count)
        buffer.writeBytes(reply)
        context.write(
            wrapOutboundOut(AddressedEnvelope(remoteAddress: envelope.remoteAddress, data: buffer)), promise: nil)
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        context.flush()
    }

    /// A datagram that could not be sent (its client went away): the server goes on.
    func errorCaught(context: ChannelHandlerContext, error: any Error) {}
}

/// Closes a connection on the idle event of the ``IdleStateHandler`` before it.
final class CloseWhenIdle: ChannelInboundHandler, Sendable {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if event is IdleStateHandler.IdleStateEvent {
            context.close(promise: nil)
        } else {
            context.fireUserInboundEventTriggered(event)
        }
    }
}

/// DNS over TCP: each message after its two-byte length (RFC 1035 4.2.2); one over 4 KiB is an
/// error that closes the connection.
struct DNSFrameDecoder: ByteToMessageDecoder {
    typealias InboundOut = ByteBuffer

    mutating func decode(context: ChannelHandlerContext, buffer: inout ByteBuffer) throws -> DecodingState {
        guard let length = buffer.getInteger(at: buffer.readerIndex, as: UInt16.self) else { return .needMoreData }
        guard length <= 4096 else { throw DNSFrameTooLarge() }
        guard buffer.readableBytes >= 2 + Int(length) else { return .needMoreData }
        buffer.moveReaderIndex(forwardBy: 2)
        context.fireChannelRead(wrapInboundOut(buffer.readSlice(length: Int(length))!))
        return .continue
    }

    struct DNSFrameTooLarge: Error {}
}

/// `dns.mesh`: the DNS server on this agent's own mesh address (`dns.mesh_port`, 53 by default),
/// where every node of the mesh can ask it. The address comes from the registry view, and exists
/// on the machine only once the WireGuard interface is up: until the server can bind, it tries
/// again every 2 s (saying why once). Ends at the agent's graceful shutdown.
struct MeshDNSListener: Service {
    let name: String
    let port: Int
    let zones: DNSServer.ZoneSource
    let logger: Logger

    func run() async throws {
        await Rebinding.serve(
            until: "cannot answer DNS on the mesh address yet; trying again every 2 s", address: "mesh:\(port)",
            logger: logger
        ) {
            await zones.refresh()
            guard let own = zones.snapshot()?.entries.first(where: { $0.name == name }) else {
                throw NoMeshAddress()
            }
            let address = try HostPort(host: IPv4Network.format(own.address), port: port)
            try await DNSServer(address: address, zones: zones, logger: logger).run()
        }
    }

    struct NoMeshAddress: Error, CustomStringConvertible {
        var description: String { "this node has no mesh address yet" }
    }
}
