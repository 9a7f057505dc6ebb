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
        guard let key = try? PublicKey(base64: member.signPublicKey),
            let (client, certificate) = await client(for: member, timeout: .seconds(2))
        else { return nil }
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

    /// A term relayed by `node` (`GET /api/lead/followed`, the term it followed at a handoff):
    /// the node only passes it on, so it counts only as ``LeadHandoff/relayedTerm(members:newerThan:)``
    /// allows. Nil for no answer, a refusal, or an answer that does not check out.
    static func relayed(by node: Node, members: [Node], newerThan epoch: Int64) async -> LeadTerm? {
        guard let (client, _) = await client(for: node, timeout: .seconds(2)),
            let (status, body) = try? await client.exchange(
                method: "GET", path: API.followedTerm.pattern, body: []),
            status == 200, body.count <= 64 * 1024,
            let handoff = try? APICoding.decoder().decode(LeadHandoff.self, from: Data(body))
        else { return nil }
        return handoff.relayedTerm(members: members, newerThan: epoch)
    }

    /// Asks `nodes` at once; the first term that checks out, or nil once every one answered
    /// (at most 2 s each) without one.
    static func relayed(by nodes: [Node], members: [Node], newerThan epoch: Int64) async -> LeadTerm? {
        await withTaskGroup(of: LeadTerm?.self) { group in
            for node in nodes { group.addTask { await relayed(by: node, members: members, newerThan: epoch) } }
            for await case let term? in group {
                group.cancelAll()
                return term
            }
            return nil
        }
    }

    /// A client for `member`'s agent: the URL its registry entry gives and, over https, TLS
    /// pinned to the key it joined with (the certificate it showed is returned). Nil when it has
    /// no URL, or its TLS key is not the pinned one.
    static func client(for member: Node, timeout: TimeAmount) async -> (
        client: AuroraClient, certificate: NIOSSLCertificate?
    )? {
        guard let url = HTTPServer.standbyURL(member) else { return nil }
        var client = AuroraClient(baseURL: url, timeout: timeout, httpClient: LeadClient.http)
        guard let components = URLComponents(string: url), components.scheme == "https" else { return (client, nil) }
        guard let pinText = member.tlsPin, let pin = TLSPin(parsing: pinText),
            let shown = try? await PinnedTLS.verifiedCertificate(
                url: url, host: components.host ?? "", port: components.port ?? 443, pin: pin)
        else { return nil }
        client.pinnedTLS = PinnedTLS.clientConfiguration(trusting: shown)
        return (client, shown)
    }
}
