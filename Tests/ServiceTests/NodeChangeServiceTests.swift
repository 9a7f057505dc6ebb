import AuroraAPI
import Foundation
import HTTPTypes
import Secrets
import Synchronization
import Testing

@testable import NodeAgent

/// What an operator changes of a node on the lead: its removal (the record deleted, or kept as
/// `left`) and its company, over the in-memory stores. Refused calls change nothing.
@Suite("Node removal and company over in-memory stores")
struct NodeChangeServiceTests {
    @Test("remove deletes the record and frees the name; --keep keeps it as left; both refuse its signature")
    func remove() async throws {
        let lead = try await LeadHarness.start()
        try await lead.session { session in
            let (token, _) = try await LeadServiceTests.joinToken(session, reusable: true)
            let gpu1 = TestNode(name: "gpu-1"), gpu2 = TestNode(name: "gpu-2")
            for node in [gpu1, gpu2] {
                #expect(
                    try await session.call(.post, "/api/nodes/join", token: "", body: node.join(token: token)).status
                        == 201)
            }
            // Only the operator removes, and not with a node's signature.
            #expect(try await session.call(.delete, "/nodes/gpu-1", token: "").status == 401)
            #expect(try await session.call(.delete, "/nodes/gpu-1", token: "wrong").status == 401)
            #expect(try await session.call(.delete, "/nodes/gpu-1", signer: gpu1.signer).status == 401)
            #expect(try await session.call(.delete, "/nodes/gpu-1", signer: gpu2.signer).status == 401)
            #expect(try await session.call(.delete, "/nodes/gpu-1?keep=maybe").status == 400)
            #expect(lead.store.tables.withLock { $0.nodes["gpu-1"]?.entry.removed } == false)

            let removed = try await session.call(.delete, "/nodes/gpu-1")
            #expect(removed.status == 200, "\(removed.body)")
            #expect(try removed.decode(Node.self).state == .left)
            // In no view; the store keeps a tombstone that holds only its address for the grace period.
            #expect(lead.store.tables.withLock { $0.nodes["gpu-1"]?.forgotten } == true)
            #expect(try await lead.store.nodes().entries.allSatisfy { $0.node.name != "gpu-1" })
            let types = lead.store.tables.withLock { $0.events.filter { $0.node == "gpu-1" }.map(\.type) }
            #expect(Array(types.suffix(2)) == [EventType.nodeLeft, EventType.nodeRemoved])
            #expect(try await session.call(.get, "/nodes/gpu-1").status == 404)
            let listed = try await session.call(.get, "/nodes").decode(NodeList.self)
            #expect(!listed.nodes.map(\.name).contains("gpu-1"))
            let beat = try await session.call(
                .post, "/api/nodes/gpu-1/heartbeat", signer: gpu1.signer, body: gpu1.heartbeat())
            #expect(beat.status == 401)
            #expect(try await session.call(.delete, "/nodes/gpu-1").status == 404)

            // The name is free: another key joins under it.
            let newcomer = TestNode(name: "gpu-1")
            let rejoined = try await session.call(
                .post, "/api/nodes/join", token: "", body: newcomer.join(token: token))
            #expect(rejoined.status == 201, "\(rejoined.body)")
            #expect(try rejoined.decode(JoinResponse.self).node.name == "gpu-1")
            #expect(lead.store.tables.withLock { $0.nodes["gpu-1"]?.forgotten } == false)

            // --keep: the record stays as left and removed.
            let kept = try await session.call(.delete, "/nodes/gpu-2?keep=true")
            #expect(kept.status == 200, "\(kept.body)")
            #expect(try kept.decode(Node.self).state == .left)
            #expect(lead.store.tables.withLock { $0.nodes["gpu-2"]?.entry.removed } == true)
            #expect(try await session.call(.get, "/nodes/gpu-2").decode(Node.self).state == .left)
            let keptBeat = try await session.call(
                .post, "/api/nodes/gpu-2/heartbeat", signer: gpu2.signer, body: gpu2.heartbeat())
            #expect(keptBeat.status == 401)
            #expect(keptBeat.error?.message.contains("removed by an operator") == true)
            // A kept record is deleted by a later removal without --keep.
            #expect(try await session.call(.delete, "/nodes/gpu-2").status == 200)
            #expect(try await session.call(.get, "/nodes/gpu-2").status == 404)
            #expect(try await session.call(.delete, "/nodes/\(lead.leadName)").status == 400)
        }
    }

    @Test("company: only the operator sets it, validated as at join, with an event; the node's secrets follow")
    func company() async throws {
        let lead = try await LeadHarness.start()
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { await lead.parts.secrets.runReadAudit() }
            try await lead.session { session in
                let (token, _) = try await LeadServiceTests.joinToken(session, company: "acme", reusable: true)
                let gpu1 = TestNode(name: "gpu-1"), gpu2 = TestNode(name: "gpu-2")
                for node in [gpu1, gpu2] {
                    #expect(
                        try await session.call(.post, "/api/nodes/join", token: "", body: node.join(token: token))
                            .status == 201)
                }
                for (company, value) in [("acme", "for-acme"), ("globex", "for-globex")] {
                    let write = SecretWrite(
                        service: "db", keyName: "password", value: value, scope: "company", scopeID: company)
                    #expect(try await session.call(.post, "/api/secrets", body: write).status == 201)
                }
                func resolved() async throws -> String? {
                    try await session.call(.get, "/api/secrets/db/password?node=gpu-1").decode(SecretRead.self).value
                }
                #expect(try await resolved() == "for-acme")
                let path = "/nodes/gpu-1/company"
                let update = NodeCompanyUpdate(company: "globex")

                // Refused: no credential, a wrong one, the node itself, another node, bad bodies.
                #expect(try await session.call(.put, path, token: "", body: update).status == 401)
                #expect(try await session.call(.put, path, token: "wrong", body: update).status == 401)
                let own = try await session.call(.put, path, signer: gpu1.signer, body: update)
                #expect(own.status == 401)
                #expect(own.error?.message.contains("operator token") == true)
                #expect(try await session.call(.put, path, signer: gpu2.signer, body: update).status == 401)
                #expect(try await session.call(.put, path, body: "globex").status == 400)
                #expect(try await session.call(.put, path, body: ["company": "globex", "role": "lead"]).status == 400)
                let control = try await session.call(.put, path, body: NodeCompanyUpdate(company: "glo\tbex"))
                #expect(control.status == 400)
                #expect(control.error?.message.contains("company") == true, "\(control.body)")
                let long = NodeCompanyUpdate(company: String(repeating: "a", count: 129))
                #expect(try await session.call(.put, path, body: long).status == 400)
                let huge = NodeCompanyUpdate(company: String(repeating: "a", count: 2 << 20))
                #expect(try await session.call(.put, path, body: huge).status == 413)
                #expect(try await session.call(.put, "/nodes/nobody/company", body: update).status == 404)
                #expect(
                    try await session.call(.put, "/nodes/\(lead.leadName)/company", body: update).status == 400)
                #expect(lead.store.tables.withLock { $0.nodes["gpu-1"]?.entry.node.company } == "acme")
                #expect(try await resolved() == "for-acme")

                // The operator sets it: stored, an event with both values, and resolution follows.
                let set = try await session.call(.put, path, body: update)
                #expect(set.status == 200, "\(set.body)")
                #expect(try set.decode(Node.self).company == "globex")
                #expect(lead.store.tables.withLock { $0.nodes["gpu-1"]?.entry.node.company } == "globex")
                let event = try #require(lead.store.tables.withLock { $0.events.last })
                #expect(event.type == EventType.nodeCompanyChanged)
                #expect(event.node == "gpu-1")
                #expect(event.data["from"] == .string("acme"))
                #expect(event.data["to"] == .string("globex"))
                #expect(try await resolved() == "for-globex")
                let read = try await session.call(.get, "/api/secrets/db/password", signer: gpu1.signer)
                #expect(try read.decode(SecretRead.self).scopeID == "globex")
                // The same value again records nothing.
                let count = lead.store.tables.withLock { $0.events.count }
                #expect(try await session.call(.put, path, body: update).status == 200)
                #expect(lead.store.tables.withLock { $0.events.count } == count)
            }
            group.cancelAll()
        }
    }
}
