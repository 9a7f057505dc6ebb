import AuroraTestKit
import Foundation
import Logging
import Testing

@testable import NodeAgent
@testable import Secrets

@Suite("Keys, identity and the operator token")
struct KeyTests {
    /// `wg pubkey` for a private key, through the real wireguard-tools.
    func wgPubkey(_ privateKey: String, in directory: String) async throws -> String {
        let input = directory + "/wg-in-\(UUID().uuidString)"
        try (privateKey + "\n").write(toFile: input, atomically: true, encoding: .utf8)
        let result = try await ChildProcess.run(
            "/bin/sh", ["-c", "wg pubkey < '\(input)'"], outputDirectory: directory)
        #expect(result.code == 0, "wg pubkey failed: \(result.stderr)")
        return result.stdout.trimmingCharacters(in: .whitespacesAndNewlines)
    }

    @Test("the derived WireGuard public key equals `wg pubkey`, for our keys and for `wg genkey`'s")
    func wireguardMatchesWg() async throws {
        try Binaries.requireTool("/usr/bin/wg", hint: "install wireguard-tools (./bootstrap does)")
        let scratch = try ScratchDirectory("wg")
        defer { scratch.remove() }
        for _ in 0..<3 {
            let key = WireGuardPrivateKey.generate()
            #expect(try await wgPubkey(key.base64(), in: scratch.path) == key.publicKey.base64)
        }
        let genkey = try await ChildProcess.run("/usr/bin/wg", ["genkey"], outputDirectory: scratch.path)
        let fromWg = try WireGuardPrivateKey(base64: genkey.stdout)
        #expect(
            try await wgPubkey(genkey.stdout.trimmingCharacters(in: .whitespacesAndNewlines), in: scratch.path)
                == fromWg.publicKey.base64)
    }

    @Test("generated WireGuard keys are clamped like wg genkey")
    func clamped() throws {
        let key = WireGuardPrivateKey.generate()
        let bytes = [UInt8](Data(base64Encoded: key.base64())!)
        #expect(bytes[0] & 7 == 0)
        #expect(bytes[31] & 128 == 0)
        #expect(bytes[31] & 64 == 64)
    }

    @Test("Ed25519 signatures verify, and fail for another message or key")
    func signing() throws {
        let key = SigningKey.generate()
        let message = Array("POST /api/nodes/x/heartbeat".utf8)
        let signature = key.sign(message)
        #expect(SigningKey.verify(signature: signature, of: message, by: key.publicKey))
        #expect(!SigningKey.verify(signature: signature, of: message + [0], by: key.publicKey))
        #expect(!SigningKey.verify(signature: signature, of: message, by: SigningKey.generate().publicKey))
        let restored = try SigningKey(base64Seed: key.base64Seed())
        #expect(restored.publicKey == key.publicKey)
    }

    @Test("sealed boxes open only with the recipient's key")
    func sealedBox() throws {
        let recipient = BoxKey.generate()
        let sealed = BoxKey.seal(Array("db-password".utf8), to: recipient.publicKey)
        let opened = try recipient.open(sealed: sealed)
        #expect(opened.withUnsafeBytes { Array($0) } == Array("db-password".utf8))
        let wrong = #expect(throws: SecretsError.self) { try BoxKey.generate().open(sealed: sealed) }
        #expect(wrong?.code == .cannotOpen)
    }

    @Test("bad key material is refused with the reason, not the bytes")
    func badKeys() {
        let short = #expect(throws: SecretsError.self) { try WireGuardPrivateKey(base64: "AAAA") }
        #expect(short?.message == "the WireGuard private key must be 32 bytes in base64")
        #expect(throws: SecretsError.self) { try PublicKey(base64: "not base64!") }
    }

    @Test("identity files are 0600, reused on the next load, and a corrupt file is never replaced")
    func identityFiles() throws {
        let scratch = try ScratchDirectory("identity")
        defer { scratch.remove() }
        let keys = scratch.path + "/keys"
        let logger = Logger(label: "test")
        let first = try NodeIdentity.loadOrCreate(in: keys, logger: logger)
        for file in ["wireguard.key", "wireguard.pub", "sign.key", "sign.pub", "box.key", "box.pub"] {
            #expect(SecureFile.mode(keys + "/" + file) == 0o600, "\(file) is not 0600")
        }
        #expect(SecureFile.mode(keys) == 0o700)
        let second = try NodeIdentity.loadOrCreate(in: keys, logger: logger)
        #expect(second.publicIdentity == first.publicIdentity)

        try "garbage\n".write(toFile: keys + "/sign.key", atomically: true, encoding: .utf8)
        let error = #expect(throws: AgentError.self) { try NodeIdentity.loadOrCreate(in: keys, logger: logger) }
        #expect(error?.message.hasPrefix("\(keys)/sign.key is not a valid key") == true)
        #expect(try String(contentsOfFile: keys + "/sign.key", encoding: .utf8) == "garbage\n")
    }

    @Test("the operator token is written once in clear, kept hashed, and checked in constant time")
    func adminToken() throws {
        let scratch = try ScratchDirectory("token")
        defer { scratch.remove() }
        let logger = Logger(label: "test")
        try FileManager.default.createDirectory(atPath: scratch.path + "/keys", withIntermediateDirectories: true)
        let token = try AdminToken.loadOrCreate(dataDir: scratch.path, keysDir: scratch.path + "/keys", logger: logger)
        let plaintext = try String(contentsOfFile: scratch.path + "/admin.token", encoding: .utf8).trimmingCharacters(
            in: .whitespacesAndNewlines)
        #expect(SecureFile.mode(scratch.path + "/admin.token") == 0o600)
        #expect(plaintext.hasPrefix("aur_") && plaintext.count == 68)
        #expect(token.accepts(plaintext))
        #expect(!token.accepts(plaintext + "x"))
        #expect(!token.accepts(""))
        let hashFile = try String(contentsOfFile: scratch.path + "/keys/admin.token.sha256", encoding: .utf8)
        #expect(!hashFile.contains(plaintext))

        // The operator may delete the clear copy; the agent keeps working and never rewrites it.
        try FileManager.default.removeItem(atPath: scratch.path + "/admin.token")
        let reloaded = try AdminToken.loadOrCreate(
            dataDir: scratch.path, keysDir: scratch.path + "/keys", logger: logger)
        #expect(reloaded.accepts(plaintext))
        #expect(!FileManager.default.fileExists(atPath: scratch.path + "/admin.token"))
    }

    @Test("hex round-trips and rejects junk")
    func hex() {
        #expect(Hex.encode([0, 15, 255]) == "000fff")
        #expect(Hex.decode("000fff") == [0, 15, 255])
        #expect(Hex.decode("0g") == nil)
        #expect(Hex.decode("abc") == nil)
    }
}
