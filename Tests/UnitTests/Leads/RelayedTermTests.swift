import AuroraAPI
import Foundation
import Secrets
import Testing

@testable import NodeAgent

/// A term a node passes on (`GET /api/lead/followed`) fences an old lead only when it names a
/// lead-eligible member of the old lead's own store, under the key recorded for it, with that
/// key's signature, and a higher epoch: a node cannot make one up.
@Suite("A term relayed by a node (old lead's check)")
struct RelayedTermTests {
    static func member(_ name: String, key: SigningKey, role: NodeRole = .standby) -> Node {
        Node(
            name: name, role: role, company: "", vpnIP: "10.0.0.3", state: .alive, lastSeen: "", labels: [:],
            wireguard: WireGuardPeer(publicKey: "", endpoint: nil, listenPort: 51820),
            capabilities: Capabilities(cpuCores: 1, memoryMB: 1024, os: "linux", arch: "x86_64", gpus: []),
            version: "", address: "127.0.0.1:9100", joinedAt: "", signPublicKey: key.publicKey.base64,
            boxPublicKey: "", timing: nil)
    }

    static func term(epoch: Int64, lead: String, key: SigningKey, url: String = "http://127.0.0.1:9100") -> LeadTerm {
        LeadTerm(
            epoch: epoch, lead: lead, url: url, signPublicKey: key.publicKey.base64, boxPublicKey: "", tlsPin: nil,
            certificate: nil, startedAt: "2026-12-01T00:00:00Z")
    }

    static func signed(_ term: LeadTerm, by key: SigningKey) -> LeadHandoff {
        LeadHandoff(term: term, signature: Data(key.sign(term.signedMessage)).base64EncodedString())
    }

    @Test("the promoted standby's own signature over a newer term counts")
    func genuine() {
        let standbyKey = SigningKey.generate()
        let members = [Self.member("lead-b", key: standbyKey)]
        let handoff = Self.signed(Self.term(epoch: 2, lead: "lead-b", key: standbyKey), by: standbyKey)
        #expect(handoff.relayedTerm(members: members, newerThan: 1)?.epoch == 2)
    }

    @Test(
        "refused: an epoch not above the lead's, a lead the store does not list as eligible, another key under the member's name, a signature by the relaying node, a tampered term, a bad URL"
    )
    func forged() {
        let standbyKey = SigningKey.generate()
        let nodeKey = SigningKey.generate()
        let members = [Self.member("lead-b", key: standbyKey)]
        let genuine = Self.signed(Self.term(epoch: 2, lead: "lead-b", key: standbyKey), by: standbyKey)
        // Not newer than the lead's own epoch.
        #expect(genuine.relayedTerm(members: members, newerThan: 2) == nil)
        #expect(genuine.relayedTerm(members: members, newerThan: 5) == nil)
        // The store lists no such member (a compute node is not in `members`).
        #expect(genuine.relayedTerm(members: [], newerThan: 1) == nil)
        let selfMade = Self.signed(Self.term(epoch: 9, lead: "gpu-1", key: nodeKey), by: nodeKey)
        #expect(selfMade.relayedTerm(members: members, newerThan: 1) == nil)
        // The member's name with the node's own key, signed by that key.
        let impostor = Self.signed(Self.term(epoch: 9, lead: "lead-b", key: nodeKey), by: nodeKey)
        #expect(impostor.relayedTerm(members: members, newerThan: 1) == nil)
        // The member's key in the term, but the node's signature.
        let wrongSignature = Self.signed(Self.term(epoch: 9, lead: "lead-b", key: standbyKey), by: nodeKey)
        #expect(wrongSignature.relayedTerm(members: members, newerThan: 1) == nil)
        // A genuine signature over another epoch, a garbled or empty signature.
        var tampered = genuine
        tampered.term.epoch = 3
        #expect(tampered.relayedTerm(members: members, newerThan: 1) == nil)
        for signature in ["", "not base64!", String(repeating: "A", count: 4000)] {
            var garbled = genuine
            garbled.signature = signature
            #expect(garbled.relayedTerm(members: members, newerThan: 1) == nil)
        }
        // A signed term with a URL nobody could call, or an oversized one.
        for url in ["no host", "http://" + String(repeating: "a", count: 600) + ":1"] {
            let odd = Self.signed(Self.term(epoch: 2, lead: "lead-b", key: standbyKey, url: url), by: standbyKey)
            #expect(odd.relayedTerm(members: members, newerThan: 1) == nil, "\(url.prefix(20))")
        }
    }
}
