import AuroraAPI
import Foundation
import HTTPTypes
import Secrets
import Synchronization
import Testing

@testable import NodeAgent

/// The lead's secret routes over the in-memory stores: the store holds only sealed versions,
/// every change and read is in the audit chain, and refused calls change nothing.
@Suite("Secret routes over in-memory stores")
struct SecretServiceTests {
    @Test("write, read by a node (sealed, audited), versions, rollback, delete; the chain verifies")
    func lifecycle() async throws {
        let lead = try await LeadHarness.start()
        try await withThrowingTaskGroup(of: Void.self) { group in
            // The read audit's writer, as the lead's job service runs it.
            group.addTask { await lead.parts.secrets.runReadAudit() }
            try await lead.session { session in
                let (token, _) = try await LeadServiceTests.joinToken(session, company: "acme")
                let gpu1 = TestNode(name: "gpu-1")
                #expect(
                    try await session.call(.post, "/api/nodes/join", token: "", body: gpu1.join(token: token)).status
                        == 201)

                let write = SecretWrite(service: "db", keyName: "password", value: "hunter2-global", scope: "global")
                #expect(try await session.call(.post, "/api/secrets", token: "", body: write).status == 401)
                #expect(try await session.call(.post, "/api/secrets", signer: gpu1.signer, body: write).status == 401)
                let first = try await session.call(.post, "/api/secrets", body: write)
                #expect(first.status == 201, "\(first.body)")
                #expect(try first.decode(SecretInfo.self).version == 1)
                let company = SecretWrite(
                    service: "db", keyName: "password", value: "hunter2-acme", scope: "company", scopeID: "acme")
                #expect(try await session.call(.post, "/api/secrets", body: company).status == 201)

                // The store holds sealed bytes only.
                let versions = lead.store.tables.withLock { $0.secrets.versions }
                #expect(versions.count == 2)
                for version in versions {
                    let stored = Data(version.stored.sealed.ciphertext + version.stored.sealed.wrappedKey)
                    #expect(stored.range(of: Data("hunter2".utf8)) == nil)
                }

                // A node reads the value that resolves for it (its company's), sealed to its box key.
                let read = try await session.call(.get, "/api/secrets/db/password", signer: gpu1.signer)
                #expect(read.status == 200, "\(read.body)")
                let answer = try read.decode(SecretRead.self)
                #expect(answer.scope == "company")
                #expect(answer.value == nil)
                #expect(!read.body.contains("hunter2"))
                // Another node's resolution is refused, and audited as refused.
                let other = try await session.call(.get, "/api/secrets/db/password?node=gpu-9", signer: gpu1.signer)
                #expect(other.status == 403)

                let history = try await session.call(.get, "/api/secrets/db/password/versions?scope=global")
                #expect(try history.decode(SecretVersions.self).versions.map(\.version) == [1])
                #expect(try await session.call(.get, "/api/secrets/db/nope/versions?scope=global").status == 404)

                let rolled = try await session.call(
                    .post, "/api/secrets/db/password/rollback", body: SecretRollback(scope: "global", version: 1))
                #expect(rolled.status == 201, "\(rolled.body)")
                #expect(try rolled.decode(SecretInfo.self).version == 2)
                #expect(
                    try await session.call(
                        .post, "/api/secrets/db/password/rollback", body: SecretRollback(scope: "global", version: 7)
                    ).status == 404)

                #expect(
                    try await session.call(.delete, "/api/secrets/db/password?scope=company&scope_id=acme").status
                        == 200)
                let list = try await session.call(.get, "/api/secrets").decode(SecretList.self)
                #expect(list.secrets.map(\.scope) == ["global"])

                let audit = try await session.call(.get, "/api/audit?verify=true").decode(AuditLog.self)
                #expect(audit.verified == true)
                let actions = audit.entries.map(\.action)
                #expect(actions.contains("read"))
                #expect(actions.filter { $0 == "write" }.count == 2)
                #expect(actions.contains("rollback"))
                #expect(actions.contains("delete"))
                #expect(audit.entries.map(\.seq) == lead.store.tables.withLock { $0.secrets.audit.map(\.seq) })

                // Bad names change nothing.
                let before = lead.store.tables.withLock { ($0.secrets.versions.count, $0.secrets.audit.count) }
                let bad = SecretWrite(service: "db/../x", keyName: "password", value: "v", scope: "global")
                #expect(try await session.call(.post, "/api/secrets", body: bad).status == 400)
                let empty = SecretWrite(service: "db", keyName: "password", value: "", scope: "global")
                #expect(try await session.call(.post, "/api/secrets", body: empty).status == 400)
                #expect(lead.store.tables.withLock { ($0.secrets.versions.count, $0.secrets.audit.count) } == before)
            }
            group.cancelAll()
        }
    }

    @Test("rotation re-wraps every stored version; values still resolve; a store outage is 503 and changes nothing")
    func rotationAndOutage() async throws {
        let lead = try await LeadHarness.start()
        try await lead.session { session in
            for index in 1...3 {
                let write = SecretWrite(service: "svc", keyName: "k\(index)", value: "value-\(index)", scope: "global")
                #expect(try await session.call(.post, "/api/secrets", body: write).status == 201)
            }
            let rotated = try await session.call(.post, "/api/secrets/rotate-key")
            #expect(rotated.status == 200, "\(rotated.body)")
            let rotation = try rotated.decode(SecretRotation.self)
            #expect(rotation.rewrapped == 3)
            #expect(
                lead.store.tables.withLock {
                    $0.secrets.versions.allSatisfy { $0.stored.sealed.kekVersion == rotation.toVersion }
                })

            let before = lead.store.tables.withLock {
                ($0.secrets.versions.count, $0.secrets.audit.count, $0.events.count)
            }
            lead.store.failing = AgentError(.store, "the store is down")
            let write = SecretWrite(service: "svc", keyName: "k9", value: "v", scope: "global")
            let refused = try await session.call(.post, "/api/secrets", body: write)
            #expect(refused.status == 503)
            #expect(refused.error?.code == "store_unavailable")
            lead.store.failing = nil
            #expect(
                lead.store.tables.withLock { ($0.secrets.versions.count, $0.secrets.audit.count, $0.events.count) }
                    == before)
            // The chain goes on from what was stored: the next write verifies.
            #expect(try await session.call(.post, "/api/secrets", body: write).status == 201)
            #expect(try await session.call(.get, "/api/audit?verify=true").decode(AuditLog.self).verified == true)
        }
    }
}
