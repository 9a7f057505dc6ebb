import AuroraAPI
import Testing

@testable import Secrets

/// The secrets core, pure apart from libsodium: envelope encryption, scope resolution and the
/// audit hash chain.
@Suite("Secrets core: envelope, resolution, audit chain")
struct SecretsCoreTests {
    let master = MasterKey.generate()
    let row = SecretRow(scope: "company", scopeID: "acme", service: "openai", keyName: "api_key", version: 3)

    func text(_ bytes: SecureBytes) -> String { bytes.withUnsafeBytes { String(decoding: $0, as: UTF8.self) } }

    @Test("a sealed value opens for its row, and the ciphertext does not contain it")
    func roundTrip() throws {
        let sealed = Envelope.seal(
            SecureBytes(copying: Array("sk-live-123".utf8)), for: row, master: master, kekVersion: 1)
        #expect(text(try Envelope.open(sealed, for: row, master: master)) == "sk-live-123")
        #expect(!String(decoding: sealed.ciphertext, as: UTF8.self).contains("sk-live"))
        // Two seals of one value differ (fresh data key and nonces).
        let again = Envelope.seal(
            SecureBytes(copying: Array("sk-live-123".utf8)), for: row, master: master, kekVersion: 1)
        #expect(again.ciphertext != sealed.ciphertext && again.wrappedKey != sealed.wrappedKey)
    }

    @Test("AAD binding: a ciphertext moved to another row does not open")
    func rowSwap() {
        let sealed = Envelope.seal(SecureBytes(copying: Array("value".utf8)), for: row, master: master, kekVersion: 1)
        for other in [
            SecretRow(scope: "company", scopeID: "globex", service: "openai", keyName: "api_key", version: 3),
            SecretRow(scope: "node", scopeID: "acme", service: "openai", keyName: "api_key", version: 3),
            SecretRow(scope: "company", scopeID: "acme", service: "anthropic", keyName: "api_key", version: 3),
            SecretRow(scope: "company", scopeID: "acme", service: "openai", keyName: "org", version: 3),
            SecretRow(scope: "company", scopeID: "acme", service: "openai", keyName: "api_key", version: 2),
        ] {
            #expect(throws: SecretsError.self) { try Envelope.open(sealed, for: other, master: master) }
        }
    }

    @Test("tampered ciphertext, wrapped key, nonce or key version fails; so does another master key")
    func tampering() {
        let sealed = Envelope.seal(SecureBytes(copying: Array("value".utf8)), for: row, master: master, kekVersion: 1)
        var changed = sealed
        changed.ciphertext[0] ^= 1
        #expect(throws: SecretsError.self) { try Envelope.open(changed, for: row, master: master) }
        changed = sealed
        changed.wrappedKey[5] ^= 0x80
        #expect(throws: SecretsError.self) { try Envelope.open(changed, for: row, master: master) }
        changed = sealed
        changed.nonce[0] ^= 1
        #expect(throws: SecretsError.self) { try Envelope.open(changed, for: row, master: master) }
        changed = sealed
        changed.kekVersion = 2
        #expect(throws: SecretsError.self) { try Envelope.open(changed, for: row, master: master) }
        #expect(throws: SecretsError.self) { try Envelope.open(sealed, for: row, master: MasterKey.generate()) }
    }

    @Test("re-wrapping under a new key version keeps the value's ciphertext and still opens")
    func rewrap() throws {
        let sealed = Envelope.seal(SecureBytes(copying: Array("value".utf8)), for: row, master: master, kekVersion: 1)
        let rewrapped = try Envelope.rewrap(sealed, for: row, master: master, kekVersion: 2)
        #expect(
            rewrapped.kekVersion == 2 && rewrapped.ciphertext == sealed.ciphertext
                && rewrapped.wrappedKey != sealed.wrappedKey)
        #expect(text(try Envelope.open(rewrapped, for: row, master: master)) == "value")
    }

    @Test("a passphrase gives the same master key with the same salt, another with another salt")
    func passphrase() throws {
        let salt = MasterKey.newSalt()
        // Interactive limits keep the test fast; the agent uses moderate ones.
        let limits = (ops: 2, mem: 64 << 20)
        let phrase = SecureBytes(copying: Array("correct horse battery staple".utf8))
        let a = try MasterKey(passphrase: phrase, salt: salt, opsLimit: limits.ops, memLimit: limits.mem)
        let b = try MasterKey(passphrase: phrase, salt: salt, opsLimit: limits.ops, memLimit: limits.mem)
        let c = try MasterKey(passphrase: phrase, salt: MasterKey.newSalt(), opsLimit: limits.ops, memLimit: limits.mem)
        #expect(a.base64() == b.base64() && a.base64() != c.base64())
        let sealed = Envelope.seal(SecureBytes(copying: Array("v".utf8)), for: row, master: a, kekVersion: 1)
        #expect(text(try Envelope.open(sealed, for: row, master: b)) == "v")
        #expect(throws: SecretsError.self) { try MasterKey(passphrase: phrase, salt: [1, 2, 3]) }
    }

    @Test("resolution matrix: node > company > global, over every combination of scopes")
    func resolutionMatrix() {
        let node = "gpu-1", company = "acme"
        let scopes: [SecretScope] = [.node(node), .company(company), .global]
        // Every subset of the three scopes, plus values of other nodes and companies that must never win.
        for mask in 0..<8 {
            var available: [SecretScope: String] = [.node("gpu-2"): "other node", .company("globex"): "other company"]
            for (bit, scope) in scopes.enumerated() where mask & (1 << bit) != 0 {
                available[scope] = scope.description
            }
            let expected = scopes.first { available[$0] != nil }
            let resolved = SecretResolution.resolve(available, node: node, company: company)
            #expect(resolved?.scope == expected, "mask \(mask)")
            #expect(resolved?.value == expected?.description)
        }
        // A node without a company reads its own override or the global value.
        #expect(
            SecretResolution.resolve([.company("acme"): "x", .global: "g"], node: "edge-1", company: "")?.scope
                == .global)
        #expect(SecretResolution.mayRead(.node("gpu-1"), node: "gpu-1", company: "acme"))
        #expect(!SecretResolution.mayRead(.node("gpu-2"), node: "gpu-1", company: "acme"))
        #expect(!SecretResolution.mayRead(.company("globex"), node: "gpu-1", company: "acme"))
        #expect(SecretResolution.mayRead(.global, node: "gpu-1", company: ""))
    }

    @Test("scopes parse from the API's scope and scope_id, with clear errors")
    func scopes() throws {
        #expect(try SecretScope(name: "global", id: nil) == .global)
        #expect(try SecretScope(name: "company", id: "acme") == .company("acme"))
        #expect(try SecretScope(name: "node", id: "gpu-1").description == "node:gpu-1")
        #expect(throws: SecretsError.self) { try SecretScope(name: "node", id: "") }
        #expect(throws: SecretsError.self) { try SecretScope(name: "global", id: "x") }
        #expect(throws: SecretsError.self) { try SecretScope(name: "team", id: "x") }
    }

    func chain(_ count: Int) -> [AuditRecord] {
        var records: [AuditRecord] = []
        for i in 1...count {
            records.append(
                AuditChain.append(
                    after: records.last, at: "2026-11-21T10:00:0\(i % 10).000Z",
                    actor: i % 2 == 0 ? "node:gpu-1" : "operator",
                    action: i % 2 == 0 ? "read" : "write", service: "openai", keyName: "api_key",
                    node: i % 2 == 0 ? "gpu-1" : nil, scope: "company:acme", version: i, result: "ok"))
        }
        return records
    }

    @Test("the audit chain holds, and detects an edited, deleted, reordered or cut-off entry")
    func auditChain() {
        let records = chain(6)
        #expect(AuditChain.verify(records) == nil)
        #expect(AuditChain.verify(records, head: 6) == nil)
        #expect(records[0].previousHash == AuditChain.genesis && records[1].previousHash == records[0].hash)

        var edited = records
        edited[2].result = "refused"
        #expect(AuditChain.verify(edited) == .changed(seq: 3))
        // Re-hashing the edited entry does not help: the next link breaks.
        edited[2].hash = AuditChain.hash(of: edited[2])
        #expect(AuditChain.verify(edited) == .missing(before: 4))

        var deleted = records
        deleted.remove(at: 3)
        #expect(AuditChain.verify(deleted) == .missing(before: 5))

        var reordered = records
        reordered.swapAt(1, 2)
        #expect(AuditChain.verify(reordered) == .reordered(at: 2))
        // Renumbering swapped entries to look in order still breaks the hashes.
        var renumbered = records
        renumbered.swapAt(1, 2)
        renumbered[1].seq = 2
        renumbered[2].seq = 3
        #expect(AuditChain.verify(renumbered) == .changed(seq: 2))

        #expect(AuditChain.verify(Array(records.dropLast(2)), head: 6) == .truncated(last: 4))
        #expect(AuditChain.verify(Array(records.dropFirst())) == .missing(before: 2))
    }
}
