import AuroraTLS
import Crypto
import Foundation
import Logging
import NIOSSL
import SwiftASN1
import X509

/// The agent's TLS key and self-signed certificate: `DATA/keys/tls.key` (P-256, PEM, 0600) and
/// `DATA/keys/tls.crt`, made at first start and kept. Nobody trusts the certificate for its
/// issuer: peers pin its public key (``TLSPin``), which join tokens carry.
struct TLSIdentity: Sendable {
    let certificate: NIOSSLCertificate
    let privateKey: NIOSSLPrivateKey
    /// The certificate's public-key pin, which join tokens carry and peers check instead of a CA.
    let pin: TLSPin

    /// Loads the pair, or makes it (ten years; the key, not the dates, is what peers pin).
    static func loadOrCreate(in directory: String, name: String, logger: Logger) throws(AgentError) -> TLSIdentity {
        let keyPath = directory + "/tls.key", certificatePath = directory + "/tls.crt"
        do {
            if let keyText = try SecureFile.read(keyPath), let certificateText = try SecureFile.read(certificatePath) {
                if let mode = SecureFile.mode(keyPath), mode & 0o077 != 0 {
                    chmod(keyPath, 0o600)
                    logger.warning(
                        "TLS key file was readable by others; tightened to 0600",
                        metadata: ["nodeagent.file": "\(keyPath)"])
                }
                let certificate = try NIOSSLCertificate(bytes: Array(certificateText.utf8), format: .pem)
                let key = try NIOSSLPrivateKey(bytes: Array(keyText.utf8), format: .pem)
                return TLSIdentity(certificate: certificate, privateKey: key, pin: try TLSPin(certificate: certificate))
            }
            let signingKey = P256.Signing.PrivateKey()
            let privateKey = Certificate.PrivateKey(signingKey)
            let subject = try DistinguishedName { CommonName("aurora " + name) }
            let now = Date()
            let certificate = try Certificate(
                version: .v3, serialNumber: Certificate.SerialNumber(), publicKey: privateKey.publicKey,
                notValidBefore: now.addingTimeInterval(-3600), notValidAfter: now.addingTimeInterval(10 * 365 * 86_400),
                issuer: subject, subject: subject, signatureAlgorithm: .ecdsaWithSHA256,
                extensions: try Certificate.Extensions {
                    SubjectAlternativeNames([.dnsName(name.lowercased())])
                },
                issuerPrivateKey: privateKey)
            let certificatePEM = try certificate.serializeAsPEM().pemString
            try SecureFile.write(signingKey.pemRepresentation + "\n", to: keyPath)
            try SecureFile.write(certificatePEM + "\n", to: certificatePath, mode: 0o644)
            let loaded = try NIOSSLCertificate(bytes: Array(certificatePEM.utf8), format: .pem)
            let identity = TLSIdentity(
                certificate: loaded,
                privateKey: try NIOSSLPrivateKey(bytes: Array(signingKey.pemRepresentation.utf8), format: .pem),
                pin: try TLSPin(certificate: loaded))
            logger.info("generated TLS certificate", metadata: ["nodeagent.pin": "\(identity.pin)"])
            return identity
        } catch let error as AgentError {
            throw error
        } catch {
            throw AgentError(
                .identity,
                "\(keyPath) / \(certificatePath): cannot load or make the TLS certificate (\(error)); "
                    + "remove both to make a new one (peers that pinned the old key must be given the new pin)")
        }
    }

    /// A TLS 1.3 server configuration with this certificate.
    /// When the certificate expires, in Unix seconds.
    var expiresAt: Double { Double(certificate.notValidAfter) }

    var serverConfiguration: TLSConfiguration {
        var configuration = TLSConfiguration.makeServerConfiguration(
            certificateChain: [.certificate(certificate)], privateKey: .privateKey(privateKey))
        configuration.minimumTLSVersion = .tlsv13
        return configuration
    }
}
