import AuroraTLS
import Foundation
import NIOCore
import NIOPosix
import NIOSSL
import NIOTLS
import Synchronization

/// A TLS server with its own self-signed certificate that records every byte a client sends
/// it after the handshake: a man in the middle for pinning tests. A client that checks its pin
/// completes no handshake here, so ``received`` stays empty.
public final class ImpostorTLSServer: Sendable {
    public let port: Int
    private let channel: any Channel
    private let log: ByteLog

    /// Listens on 127.0.0.1 with the certificate and key (PEM files, e.g. another agent's `keys/tls.*`).
    public init(certificatePath: String, keyPath: String) async throws {
        var configuration = TLSConfiguration.makeServerConfiguration(
            certificateChain: try NIOSSLCertificate.fromPEMFile(certificatePath).map { .certificate($0) },
            privateKey: .privateKey(try NIOSSLPrivateKey(file: keyPath, format: .pem)))
        configuration.minimumTLSVersion = .tlsv12
        let context = try NIOSSLContext(configuration: configuration)
        let log = ByteLog()
        self.log = log
        channel = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelInitializer { child in
                child.eventLoop.makeCompletedFuture {
                    try child.pipeline.syncOperations.addHandler(NIOSSLServerHandler(context: context))
                    try child.pipeline.syncOperations.addHandler(Recorder(log: log))
                }
            }
            .bind(host: "127.0.0.1", port: 0).get()
        port = channel.localAddress?.port ?? 0
    }

    /// The plaintext bytes clients sent, all connections together.
    public var received: [UInt8] { log.bytes.withLock { $0 } }
    /// TLS handshakes that completed.
    public var handshakes: Int { log.handshakes.withLock { $0 } }

    public func stop() async { try? await channel.close() }

    private final class ByteLog: Sendable {
        let bytes = Mutex<[UInt8]>([])
        let handshakes = Mutex(0)
    }

    private final class Recorder: ChannelInboundHandler, Sendable {
        typealias InboundIn = ByteBuffer
        let log: ByteLog
        init(log: ByteLog) { self.log = log }

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            let buffer = unwrapInboundIn(data)
            log.bytes.withLock { $0.append(contentsOf: buffer.readableBytesView) }
        }

        func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
            if case TLSUserEvent.handshakeCompleted = event { log.handshakes.withLock { $0 += 1 } }
            context.fireUserInboundEventTriggered(event)
        }
    }
}
