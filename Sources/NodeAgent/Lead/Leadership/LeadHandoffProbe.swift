import AsyncHTTPClient
import AuroraAPI
import AuroraClient
import AuroraTLS
import Foundation
import Mesh
import NIOCore
import NIOSSL
import Secrets

/// Asks a lead-eligible member for its signed term (`GET /api/lead/handoff`) and checks it
/// against what the asker already holds for that member: its name, its signing key and, over
/// https, the pin of its TLS key. Nothing new is trusted.
enum LeadHandoffProbe {
    /// The member's term when it is newer than `epoch` and checks out; nil otherwise (no answer,
    /// a refusal, a malformed or oversized answer, another key, an older term).
    static func fetch(from member: Node, newerThan epoch: Int64) async -> (
        handoff: LeadHandoff, certificate: NIOSSLCertificate?
    )? {
        guard let url = HTTPServer.standbyURL(member), let key = try? PublicKey(base64: member.signPublicKey) else {
            return nil
        }
        var certificate: NIOSSLCertificate?
        var client = AuroraClient(baseURL: url, timeout: .seconds(2), httpClient: LeadClient.http)
        if let components = URLComponents(string: url), components.scheme == "https" {
            guard let pinText = member.tlsPin, let pin = TLSPin(parsing: pinText),
                let shown = try? await PinnedTLS.verifiedCertificate(
                    url: url, host: components.host ?? "", port: components.port ?? 443, pin: pin)
            else { return nil }
            certificate = shown
            client.pinnedTLS = PinnedTLS.clientConfiguration(trusting: shown)
        }
        guard let (status, body) = try? await client.exchange(method: "GET", path: API.leadHandoff.pattern, body: []),
            status == 200, body.count <= 64 * 1024,
            let handoff = try? APICoding.decoder().decode(LeadHandoff.self, from: Data(body))
        else { return nil }
        let term = handoff.term
        guard term.lead == member.name, term.signPublicKey == member.signPublicKey, handoff.isSigned(by: key),
            term.epoch > epoch, term.url.utf8.count <= 512, URLComponents(string: term.url)?.host != nil
        else { return nil }
        return (handoff, certificate)
    }
}
