import CSodium
import Foundation

// MARK: - Public keys

/// A 32-byte public key (WireGuard, Ed25519 or X25519 box), written as standard base64 the way
/// `wg` writes keys.
public struct PublicKey: Sendable, Hashable, CustomStringConvertible {
    /// The raw key.
    public let bytes: [UInt8]

    /// A key from its raw 32 bytes.
    public init(bytes: [UInt8]) throws(SecretsError) {
        guard bytes.count == 32 else {
            throw SecretsError(.invalidKey, "a public key has 32 bytes, got \(bytes.count)")
        }
        self.bytes = bytes
    }

    /// A key from base64, as `wg pubkey` prints it.
    public init(base64: String) throws(SecretsError) {
        guard let data = Data(base64Encoded: base64.trimmingCharacters(in: .whitespacesAndNewlines)) else {
            throw SecretsError(.invalidKey, "a public key must be base64")
        }
        try self.init(bytes: [UInt8](data))
    }

    /// Standard base64 (44 characters).
    public var base64: String { Data(bytes).base64EncodedString() }

    public var description: String { base64 }
}

// MARK: - WireGuard

/// A WireGuard (Curve25519) private key in guarded memory.
///
/// Generated keys are clamped like `wg genkey`; the public key is `crypto_scalarmult_base`,
/// which equals `wg pubkey` for any 32-byte private key (shared/PLATFORM.md).
public struct WireGuardPrivateKey: Sendable {
    private let secret: SecureBytes

    /// A new random, clamped key.
    public static func generate() -> WireGuardPrivateKey {
        let secret = SecureBytes.random(count: 32)
        secret.withUnsafeMutableBytes { key in
            key[0] &= 248
            key[31] = (key[31] & 127) | 64
        }
        return WireGuardPrivateKey(secret: secret)
    }

    private init(secret: SecureBytes) {
        self.secret = secret
    }

    /// A key from its base64 form (the content of a `wg genkey` file).
    public init(base64: String) throws(SecretsError) {
        self.secret = try SecureBytes(base64: base64, count: 32, what: "WireGuard private key")
    }

    /// The public key, as `wg pubkey` derives it.
    public var publicKey: PublicKey {
        var out = [UInt8](repeating: 0, count: 32)
        secret.withUnsafeBytes { key in
            _ = out.withUnsafeMutableBytes { pub in
                crypto_scalarmult_base(
                    pub.baseAddress!.assumingMemoryBound(to: UInt8.self),
                    key.baseAddress!.assumingMemoryBound(to: UInt8.self))
            }
        }
        return try! PublicKey(bytes: out)  // always 32 bytes
    }

    /// The base64 form for the key file and a rendered `[Interface]`. Handle with care.
    public func base64() -> String { secret.base64() }
}

// MARK: - Ed25519 signing

/// An Ed25519 signing key, kept as its 32-byte seed in guarded memory.
public struct SigningKey: Sendable {
    private let secretKey: SecureBytes  // libsodium's 64-byte form: seed || public key
    /// The verifying key others use.
    public let publicKey: PublicKey
    private let seed: SecureBytes

    /// A new random key.
    public static func generate() -> SigningKey {
        try! SigningKey(seed: SecureBytes.random(count: 32))  // a 32-byte seed always works
    }

    /// The key for a 32-byte seed.
    public init(seed: SecureBytes) throws(SecretsError) {
        guard seed.count == Int(crypto_sign_seedbytes()) else {
            throw SecretsError(.invalidKey, "an Ed25519 seed has 32 bytes, got \(seed.count)")
        }
        let secretKey = SecureBytes(count: Int(crypto_sign_secretkeybytes()))
        var pub = [UInt8](repeating: 0, count: Int(crypto_sign_publickeybytes()))
        seed.withUnsafeBytes { seedBytes in
            secretKey.withUnsafeMutableBytes { sk in
                _ = pub.withUnsafeMutableBytes { pk in
                    crypto_sign_seed_keypair(
                        pk.baseAddress!.assumingMemoryBound(to: UInt8.self),
                        sk.baseAddress!.assumingMemoryBound(to: UInt8.self),
                        seedBytes.baseAddress!.assumingMemoryBound(to: UInt8.self))
                }
            }
        }
        self.seed = seed
        self.secretKey = secretKey
        self.publicKey = try PublicKey(bytes: pub)
    }

    /// The key whose seed is `base64`.
    public init(base64Seed: String) throws(SecretsError) {
        try self.init(seed: SecureBytes(base64: base64Seed, count: 32, what: "Ed25519 seed"))
    }

    /// The seed in base64, for the key file.
    public func base64Seed() -> String { seed.base64() }

    /// A detached 64-byte signature of `message`.
    public func sign(_ message: [UInt8]) -> [UInt8] {
        var signature = [UInt8](repeating: 0, count: Int(crypto_sign_bytes()))
        secretKey.withUnsafeBytes { sk in
            _ = signature.withUnsafeMutableBytes { sig in
                crypto_sign_detached(
                    sig.baseAddress!.assumingMemoryBound(to: UInt8.self), nil,
                    message, UInt64(message.count),
                    sk.baseAddress!.assumingMemoryBound(to: UInt8.self))
            }
        }
        return signature
    }

    /// Whether `signature` is `publicKey`'s signature of `message`.
    public static func verify(signature: [UInt8], of message: [UInt8], by publicKey: PublicKey) -> Bool {
        _ = Sodium.ready
        guard signature.count == Int(crypto_sign_bytes()) else { return false }
        return crypto_sign_verify_detached(signature, message, UInt64(message.count), publicKey.bytes) == 0
    }
}

// MARK: - X25519 box

/// An X25519 key for sealed boxes (`crypto_box_seal`): secrets are delivered sealed to it.
public struct BoxKey: Sendable {
    private let secret: SecureBytes
    /// The key others seal to.
    public let publicKey: PublicKey

    /// A new random key.
    public static func generate() -> BoxKey {
        try! BoxKey(secret: SecureBytes.random(count: 32))  // 32 bytes always work
    }

    private init(secret: SecureBytes) throws(SecretsError) {
        guard secret.count == Int(crypto_box_secretkeybytes()) else {
            throw SecretsError(.invalidKey, "an X25519 box key has 32 bytes, got \(secret.count)")
        }
        var pub = [UInt8](repeating: 0, count: 32)
        secret.withUnsafeBytes { sk in
            _ = pub.withUnsafeMutableBytes { pk in
                crypto_scalarmult_base(
                    pk.baseAddress!.assumingMemoryBound(to: UInt8.self),
                    sk.baseAddress!.assumingMemoryBound(to: UInt8.self))
            }
        }
        self.secret = secret
        self.publicKey = try PublicKey(bytes: pub)
    }

    /// The key whose secret part is `base64`.
    public init(base64: String) throws(SecretsError) {
        try self.init(secret: SecureBytes(base64: base64, count: 32, what: "X25519 box key"))
    }

    /// The secret part in base64, for the key file.
    public func base64() -> String { secret.base64() }

    /// Seals `message` so that only the holder of `recipient`'s secret key can open it.
    public static func seal(_ message: [UInt8], to recipient: PublicKey) -> [UInt8] {
        _ = Sodium.ready
        var out = [UInt8](repeating: 0, count: message.count + Int(crypto_box_sealbytes()))
        crypto_box_seal(&out, message, UInt64(message.count), recipient.bytes)
        return out
    }

    /// Opens a box sealed to this key, in guarded memory.
    public func open(sealed box: [UInt8]) throws(SecretsError) -> SecureBytes {
        let overhead = Int(crypto_box_sealbytes())
        guard box.count > overhead else { throw SecretsError(.cannotOpen, "the sealed box is too short") }
        let plain = SecureBytes(count: box.count - overhead)
        let status = secret.withUnsafeBytes { sk in
            plain.withUnsafeMutableBytes { out in
                crypto_box_seal_open(
                    out.baseAddress!.assumingMemoryBound(to: UInt8.self),
                    box, UInt64(box.count), publicKey.bytes,
                    sk.baseAddress!.assumingMemoryBound(to: UInt8.self))
            }
        }
        guard status == 0 else {
            throw SecretsError(.cannotOpen, "the sealed box was not sealed to this key or was altered")
        }
        return plain
    }
}

// MARK: - Base64 of secret bytes

extension SecureBytes {
    /// Decodes base64 into guarded memory with libsodium, checking the length.
    convenience init(base64: String, count: Int, what: String) throws(SecretsError) {
        _ = Sodium.ready
        self.init(count: count)
        var decoded = 0
        let trimmed = base64.trimmingCharacters(in: .whitespacesAndNewlines)
        let status = withUnsafeMutableBytes { out in
            trimmed.withCString { input in
                sodium_base642bin(
                    out.baseAddress!.assumingMemoryBound(to: UInt8.self), count,
                    input, strlen(input), nil, &decoded, nil,
                    Int32(sodium_base64_VARIANT_ORIGINAL))
            }
        }
        guard status == 0, decoded == count else {
            throw SecretsError(.invalidKey, "the \(what) must be \(count) bytes in base64")
        }
    }

    /// Standard base64 of the bytes.
    public func base64() -> String {
        let variant = Int32(sodium_base64_VARIANT_ORIGINAL)
        let length = sodium_base64_encoded_len(count, variant)
        var chars = [CChar](repeating: 0, count: length)
        withUnsafeBytes { raw in
            _ = sodium_bin2base64(&chars, length, raw.baseAddress!.assumingMemoryBound(to: UInt8.self), count, variant)
        }
        defer { chars.withUnsafeMutableBytes { sodium_memzero($0.baseAddress!, $0.count) } }
        return String(decoding: chars.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }
}
