import CSodium
import Foundation
import Synchronization

// Envelope encryption of secret values (shared/DESIGN.md, Secrets): every version of a secret
// gets its own random data key; the value is sealed with XChaCha20-Poly1305 under it, with the
// row's identity as associated data, so a ciphertext moved to another row does not open. Data
// keys are wrapped by a versioned key-encryption key derived from the master key.

/// The master key: 32 bytes in guarded memory, from a 0600 file or a passphrase.
public struct MasterKey: Sendable {
    private let secret: SecureBytes
    /// Derived key-encryption keys, one per version, kept in guarded memory: guarded allocations
    /// cost system calls, and reads need the same few keys again and again.
    private let keks = KEKCache()

    /// A new random master key.
    public static func generate() -> MasterKey { MasterKey(secret: SecureBytes.random(count: 32)) }

    private init(secret: SecureBytes) { self.secret = secret }

    /// A key from its base64 form (the master key file).
    public init(base64: String) throws(SecretsError) {
        secret = try SecureBytes(base64: base64, count: 32, what: "master key")
    }

    public func base64() -> String { secret.base64() }

    /// The salt for ``init(passphrase:salt:)``: random, stored beside the data (not secret).
    public static func newSalt() -> [UInt8] { Crypto.randomBytes(Int(crypto_pwhash_saltbytes())) }

    /// A master key from a passphrase with Argon2id (`crypto_pwhash`, moderate limits: about
    /// 256 MiB and a fraction of a second). The same passphrase and salt give the same key.
    public init(
        passphrase: SecureBytes, salt: [UInt8], opsLimit: Int = Int(crypto_pwhash_opslimit_moderate()),
        memLimit: Int = Int(crypto_pwhash_memlimit_moderate())
    ) throws(SecretsError) {
        guard salt.count == Int(crypto_pwhash_saltbytes()) else {
            throw SecretsError(
                .invalidKey, "a passphrase salt has \(crypto_pwhash_saltbytes()) bytes, got \(salt.count)")
        }
        let key = SecureBytes(count: 32)
        let status = key.withUnsafeMutableBytes { out in
            passphrase.withUnsafeBytes { phrase in
                crypto_pwhash(
                    out.baseAddress!.assumingMemoryBound(to: UInt8.self), 32,
                    phrase.baseAddress!.assumingMemoryBound(to: CChar.self), UInt64(phrase.count), salt,
                    UInt64(opsLimit), memLimit, crypto_pwhash_alg_argon2id13())
            }
        }
        guard status == 0 else { throw SecretsError(.invalidKey, "Argon2id could not derive a key (out of memory?)") }
        secret = key
    }

    /// Key-encryption key number `version`, derived with `crypto_kdf` (context `aurorakk`).
    func kek(version: Int) -> SecureBytes {
        keks.key(version) { derive(version: version) }
    }

    private func derive(version: Int) -> SecureBytes {
        let kek = SecureBytes(count: Int(crypto_aead_xchacha20poly1305_ietf_keybytes()))
        kek.withUnsafeMutableBytes { out in
            secret.withUnsafeBytes { master in
                _ = crypto_kdf_derive_from_key(
                    out.baseAddress!.assumingMemoryBound(to: UInt8.self), out.count, UInt64(version),
                    "aurorakk", master.baseAddress!.assumingMemoryBound(to: UInt8.self))
            }
        }
        return kek
    }
}

/// Key-encryption keys derived so far.
final class KEKCache: Sendable {
    private let keys = Mutex<[Int: SecureBytes]>([:])

    func key(_ version: Int, derive: () -> SecureBytes) -> SecureBytes {
        if let key = keys.withLock({ $0[version] }) { return key }
        let key = derive()
        return keys.withLock { keys in
            if let existing = keys[version] { return existing }
            keys[version] = key
            return key
        }
    }
}

/// Where a secret version lives; its bytes are the associated data of its ciphertexts:
/// `scope|scope_id|service|key_name|version`.
public struct SecretRow: Sendable, Hashable {
    public var scope: String
    public var scopeID: String
    public var service: String
    public var keyName: String
    public var version: Int

    public init(scope: String, scopeID: String, service: String, keyName: String, version: Int) {
        self.scope = scope
        self.scopeID = scopeID
        self.service = service
        self.keyName = keyName
        self.version = version
    }

    public var associatedData: [UInt8] { Array("\(scope)|\(scopeID)|\(service)|\(keyName)|\(version)".utf8) }
}

/// A sealed secret value as the store keeps it. Nothing in it is secret without the master key.
public struct SealedValue: Sendable, Equatable {
    /// The value, sealed under the data key.
    public var ciphertext: [UInt8]
    public var nonce: [UInt8]
    /// The data key, sealed under key-encryption key `kekVersion`.
    public var wrappedKey: [UInt8]
    public var wrapNonce: [UInt8]
    public var kekVersion: Int

    public init(ciphertext: [UInt8], nonce: [UInt8], wrappedKey: [UInt8], wrapNonce: [UInt8], kekVersion: Int) {
        self.ciphertext = ciphertext
        self.nonce = nonce
        self.wrappedKey = wrappedKey
        self.wrapNonce = wrapNonce
        self.kekVersion = kekVersion
    }
}

/// Seals, opens and re-wraps secret values.
public enum Envelope {
    /// Seals `value` for `row` under a fresh data key, wrapped by key-encryption key `kekVersion`.
    public static func seal(_ value: SecureBytes, for row: SecretRow, master: MasterKey, kekVersion: Int) -> SealedValue
    {
        let dataKey = SecureBytes.random(count: Int(crypto_aead_xchacha20poly1305_ietf_keybytes()))
        let aad = row.associatedData
        let (ciphertext, nonce) = value.withUnsafeBytes { encrypt($0, key: dataKey, aad: aad) }
        let (wrapped, wrapNonce) = dataKey.withUnsafeBytes {
            encrypt($0, key: master.kek(version: kekVersion), aad: aad)
        }
        return SealedValue(
            ciphertext: ciphertext, nonce: nonce, wrappedKey: wrapped, wrapNonce: wrapNonce, kekVersion: kekVersion)
    }

    /// Opens a sealed value of `row`; fails if anything was changed or the value belongs to
    /// another row.
    public static func open(_ sealed: SealedValue, for row: SecretRow, master: MasterKey) throws(SecretsError)
        -> SecureBytes
    {
        let aad = row.associatedData
        let dataKey = try decrypt(
            sealed.wrappedKey, nonce: sealed.wrapNonce, key: master.kek(version: sealed.kekVersion), aad: aad)
        return try decrypt(sealed.ciphertext, nonce: sealed.nonce, key: dataKey, aad: aad)
    }

    /// Wraps the data key under key-encryption key `kekVersion` instead; the value's ciphertext
    /// is untouched (rotation without re-encrypting values).
    public static func rewrap(_ sealed: SealedValue, for row: SecretRow, master: MasterKey, kekVersion: Int)
        throws(SecretsError) -> SealedValue
    {
        let aad = row.associatedData
        let dataKey = try decrypt(
            sealed.wrappedKey, nonce: sealed.wrapNonce, key: master.kek(version: sealed.kekVersion), aad: aad)
        let (wrapped, wrapNonce) = dataKey.withUnsafeBytes {
            encrypt($0, key: master.kek(version: kekVersion), aad: aad)
        }
        var rewrapped = sealed
        rewrapped.wrappedKey = wrapped
        rewrapped.wrapNonce = wrapNonce
        rewrapped.kekVersion = kekVersion
        return rewrapped
    }

    // MARK: XChaCha20-Poly1305

    private static func encrypt(_ plaintext: UnsafeRawBufferPointer, key: SecureBytes, aad: [UInt8]) -> (
        [UInt8], [UInt8]
    ) {
        let nonce = Crypto.randomBytes(Int(crypto_aead_xchacha20poly1305_ietf_npubbytes()))
        var ciphertext = [UInt8](
            repeating: 0, count: plaintext.count + Int(crypto_aead_xchacha20poly1305_ietf_abytes()))
        var length: UInt64 = 0
        key.withUnsafeBytes { keyBytes in
            _ = ciphertext.withUnsafeMutableBytes { out in
                crypto_aead_xchacha20poly1305_ietf_encrypt(
                    out.baseAddress!.assumingMemoryBound(to: UInt8.self), &length,
                    plaintext.baseAddress?.assumingMemoryBound(to: UInt8.self), UInt64(plaintext.count),
                    aad, UInt64(aad.count), nil, nonce, keyBytes.baseAddress!.assumingMemoryBound(to: UInt8.self))
            }
        }
        return (Array(ciphertext.prefix(Int(length))), nonce)
    }

    private static func decrypt(_ ciphertext: [UInt8], nonce: [UInt8], key: SecureBytes, aad: [UInt8])
        throws(SecretsError) -> SecureBytes
    {
        let tag = Int(crypto_aead_xchacha20poly1305_ietf_abytes())
        // Values are never empty (SecureBytes holds at least one byte), so a ciphertext is longer than its tag.
        guard ciphertext.count > tag, nonce.count == Int(crypto_aead_xchacha20poly1305_ietf_npubbytes()) else {
            throw SecretsError(.cannotOpen, "the sealed value is malformed")
        }
        let plaintext = SecureBytes(count: ciphertext.count - tag)
        var length: UInt64 = 0
        let status = plaintext.withUnsafeMutableBytes { out in
            key.withUnsafeBytes { keyBytes in
                crypto_aead_xchacha20poly1305_ietf_decrypt(
                    out.baseAddress!.assumingMemoryBound(to: UInt8.self), &length, nil, ciphertext,
                    UInt64(ciphertext.count),
                    aad, UInt64(aad.count), nonce, keyBytes.baseAddress!.assumingMemoryBound(to: UInt8.self))
            }
        }
        guard status == 0 else {
            throw SecretsError(
                .cannotOpen, "the sealed value does not open: wrong key, changed bytes or another row's ciphertext")
        }
        return plaintext
    }
}
