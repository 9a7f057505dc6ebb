import Crypto
import Foundation
import NIOCore
import NIOPosix
import NIOSSL
import NIOTLS

/// The pin of a TLS public key: SHA-256 over its DER SubjectPublicKeyInfo, written
/// `sha256:<64 lower-case hex>` (what `kubeadm join --discovery-token-ca-cert-hash` and k3s
/// tokens carry). A node pins its lead, and an operator's CLI pins a remote agent, with it.
public struct TLSPin: Sendable, Hashable, CustomStringConvertible {
    /// The 32-byte digest as lower-case hex.
    public let hex: String

    public init(spki: [UInt8]) {
        hex = SHA256.hash(data: spki).map { String(format: "%02x", $0) }.joined()
    }

    /// Parses `sha256:<64 hex>` (the prefix may be left out); nil for anything else.
    public init?(parsing text: String) {
        let body = text.hasPrefix("sha256:") ? String(text.dropFirst(7)) : text
        guard body.utf8.count == 64,
            body.utf8.allSatisfy({ (48...57).contains($0) || (97...102).contains($0) || (65...70).contains($0) })
        else {
            return nil
        }
        hex = body.lowercased()
    }

    /// The pin of a certificate's public key.
    public init(certificate: NIOSSLCertificate) throws {
        self.init(spki: try certificate.extractPublicKey().toSPKIBytes())
    }

    public var description: String { "sha256:" + hex }
}

/// A join token as `aurora-cli token create` prints it: the secret the lead checks, and the pin of
/// the lead's TLS key that the node verifies before the secret leaves it:
/// `aurjoin_<48 hex>:sha256:<64 hex>`. A token without a pin is only good over plain HTTP on
/// loopback.
public struct JoinTokenText: Sendable, Equatable {
    /// What the lead stores (hashed) and the node sends.
    public let secret: String
    public let pin: TLSPin?

    public init(secret: String, pin: TLSPin?) {
        self.secret = secret
        self.pin = pin
    }

    /// Splits a printed token; nil when the pin part is malformed.
    public init?(parsing text: String) {
        let text = text.trimmingCharacters(in: .whitespacesAndNewlines)
        if let range = text.range(of: ":sha256:") {
            guard let pin = TLSPin(parsing: String(text[range.upperBound...])) else { return nil }
            self.init(secret: String(text[..<range.lowerBound]), pin: pin)
        } else {
            self.init(secret: text, pin: nil)
        }
    }

    public var description: String { secret + (pin.map { ":" + $0.description } ?? "") }
}

/// Why a pinned connection was not made. Messages name the URL and the fingerprints, never a token.
public struct PinningError: Error, Sendable, CustomStringConvertible {
    public let message: String
    /// True when the server answered with a key other than the pin (not merely unreachable).
    public let isMismatch: Bool
    public init(_ message: String, isMismatch: Bool = false) {
        self.message = message
        self.isMismatch = isMismatch
    }
    public var description: String { message }
}

/// TLS with a pinned peer: fetch the certificate a server presents (without trusting it), check
/// its key against the pin, then talk to it with that certificate as the only trust root. An
/// impostor cannot complete a handshake against that root, so nothing is sent to one.
public enum PinnedTLS {
    /// The leaf certificate `host:port` presents, read in a TLS 1.3 handshake that verifies
    /// nothing (the caller checks the pin). No application data is sent.
    public static func presentedCertificate(host: String, port: Int, timeout: TimeAmount = .seconds(5)) async throws
        -> NIOSSLCertificate
    {
        var configuration = TLSConfiguration.makeClientConfiguration()
        configuration.certificateVerification = .none
        configuration.minimumTLSVersion = .tlsv13
        let context = try NIOSSLContext(configuration: configuration)
        let group = MultiThreadedEventLoopGroup.singleton
        let promise = group.next().makePromise(of: NIOSSLCertificate.self)
        let bootstrap = ClientBootstrap(group: group)
            .connectTimeout(timeout)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    let operations = channel.pipeline.syncOperations
                    try operations.addHandler(try NIOSSLClientHandler(context: context, serverHostname: nil))
                    try operations.addHandler(PeerCertificateCatcher(promise: promise))
                }
            }
        let channel: any Channel
        do { channel = try await bootstrap.connect(host: host, port: port).get() } catch {
            promise.fail(error)
            throw error
        }
        defer { channel.close(promise: nil) }
        let timer = channel.eventLoop.scheduleTask(in: timeout) {
            promise.fail(
                PinningError(
                    "\(host):\(port) completed no TLS handshake within \(timeout.nanoseconds / 1_000_000_000) s"))
        }
        defer { timer.cancel() }
        return try await promise.futureResult.get()
    }

    /// The certificate at `host:port` when its key matches `pin`; otherwise an error naming both
    /// fingerprints.
    public static func verifiedCertificate(url: String, host: String, port: Int, pin: TLSPin) async throws
        -> NIOSSLCertificate
    {
        let certificate: NIOSSLCertificate
        do { certificate = try await presentedCertificate(host: host, port: port) } catch let error as PinningError {
            throw error
        } catch {
            throw PinningError("cannot reach \(url) over TLS: \(error)")
        }
        let presented = try TLSPin(certificate: certificate)
        guard presented == pin else {
            throw PinningError(
                "\(url) presents key \(presented), but the pin is \(pin): refusing to talk to it (a different lead, or a man in the middle)",
                isMismatch: true)
        }
        return certificate
    }

    /// A client configuration that trusts exactly `certificate` (TLS 1.3; the host name is not
    /// checked, the key is).
    public static func clientConfiguration(trusting certificate: NIOSSLCertificate) -> TLSConfiguration {
        var configuration = TLSConfiguration.makeClientConfiguration()
        configuration.trustRoots = .certificates([certificate])
        configuration.certificateVerification = .noHostnameVerification
        configuration.minimumTLSVersion = .tlsv13
        return configuration
    }
}

/// Hands the peer's leaf certificate to a promise once the handshake has completed (the client
/// handler starts it when the channel becomes active), or the error that ended it.
private final class PeerCertificateCatcher: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = NIOAny
    private let promise: EventLoopPromise<NIOSSLCertificate>
    private var done = false

    init(promise: EventLoopPromise<NIOSSLCertificate>) { self.promise = promise }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if case TLSUserEvent.handshakeCompleted = event, !done {
            done = true
            if let handler = try? context.pipeline.syncOperations.handler(type: NIOSSLClientHandler.self),
                let certificate = handler.peerCertificate
            {
                promise.succeed(certificate)
            } else {
                promise.fail(PinningError("the server presented no certificate"))
            }
        }
        context.fireUserInboundEventTriggered(event)
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        if !done {
            done = true
            promise.fail(error)
        }
        context.fireErrorCaught(error)
    }

    func channelInactive(context: ChannelHandlerContext) {
        if !done {
            done = true
            promise.fail(PinningError("the connection closed before the TLS handshake completed"))
        }
        context.fireChannelInactive()
    }
}

extension NIOSSLCertificate {
    /// The certificate as PEM text (for a membership file).
    public func pemText() throws -> String {
        let base64 = Data(try toDERBytes()).base64EncodedString(options: [
            .lineLength64Characters, .endLineWithLineFeed,
        ])
        return "-----BEGIN CERTIFICATE-----\n" + base64 + "\n-----END CERTIFICATE-----\n"
    }
}
