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

    /// Where answers come from: rebuilt from the registry at most every 250 ms, so that a burst
    /// of queries reads one view.
    final class ZoneSource: Sendable {
        private let build: @Sendable () async -> MeshZone
        private let cached = Mutex<(zone: MeshZone, at: ContinuousClock.Instant)?>(nil)

        init(build: @escaping @Sendable () async -> MeshZone) { self.build = build }

        func current() async -> MeshZone {
            if let (zone, at) = cached.withLock({ $0 }), at.duration(to: .now) < .milliseconds(250) { return zone }
            let zone = await build()
            cached.withLock { $0 = (zone, .now) }
            return zone
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
        let lead: String? =
            switch role {
            case .lead: config.name
            case .node: list?.lead
            }
        return MeshZone(domain: config.dnsDomain, entries: entries, lead: lead)
    }

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
        let udp = try await DatagramBootstrap(group: group)
            .channelOption(.socketOption(.so_reuseaddr), value: 1)
            .bind(host: address.host, port: address.port) { channel in
                channel.eventLoop.makeCompletedFuture {
                    try NIOAsyncChannel<AddressedEnvelope<ByteBuffer>, AddressedEnvelope<ByteBuffer>>(
                        wrappingChannelSynchronously: channel)
                }
            }
        let tcp = try await ServerBootstrap(group: group)
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
        logger.info("answering DNS", metadata: ["nodeagent.address": "\(address)"])
        let zones = self.zones
        try await withGracefulShutdownHandler {
            try await withThrowingDiscardingTaskGroup { tasks in
                tasks.addTask {
                    try await udp.executeThenClose { inbound, outbound in
                        for try await envelope in inbound {
                            let bytes = Array(envelope.data.readableBytesView)
                            guard let reply = Self.answer(bytes, zone: await zones.current(), udp: true) else {
                                continue
                            }
                            try await outbound.write(
                                AddressedEnvelope(remoteAddress: envelope.remoteAddress, data: ByteBuffer(bytes: reply))
                            )
                        }
                    }
                }
                tasks.addTask {
                    try await tcp.executeThenClose { connections in
                        try await withThrowingDiscardingTaskGroup { clients in
                            for try await connection in connections {
                                clients.addTask {
                                    try? await connection.executeThenClose { inbound, outbound in
                                        for try await frame in inbound {
                                            let bytes = Array(frame.readableBytesView)
                                            guard
                                                let reply = Self.answer(bytes, zone: await zones.current(), udp: false)
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
            udp.channel.close(promise: nil)
            tcp.channel.close(promise: nil)
        }
    }
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
