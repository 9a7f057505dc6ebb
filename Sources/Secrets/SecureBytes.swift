import CSodium

/// libsodium, initialised once for the process. `sodium_init` is thread-safe and idempotent.
enum Sodium {
    /// Touch before any libsodium call; the first touch initialises the library.
    static let ready: Void = {
        guard sodium_init() >= 0 else {
            fatalError("libsodium could not be initialised (sodium_init failed)")
        }
    }()
}

/// Secret bytes in libsodium guarded memory (`sodium_malloc`): never swapped where the kernel
/// allows it, surrounded by guard pages, and zeroed when freed.
///
/// The only owner of its pointer; copies of the bytes leave through `withUnsafeBytes` only.
public final class SecureBytes: @unchecked Sendable {  // owns a C allocation; never mutated after init
    /// How many bytes are held.
    public let count: Int
    private let pointer: UnsafeMutableRawPointer

    /// Guarded, zero-filled memory of `count` bytes.
    public init(count: Int) {
        _ = Sodium.ready
        precondition(count > 0, "SecureBytes needs at least one byte")
        guard let pointer = sodium_malloc(count) else {
            fatalError("sodium_malloc(\(count)) failed: out of memory")
        }
        sodium_memzero(pointer, count)
        self.count = count
        self.pointer = pointer
    }

    /// A guarded copy of `bytes`. The caller should zero its own copy (see ``zero(_:)``).
    public convenience init(copying bytes: some Collection<UInt8>) {
        self.init(count: bytes.count)
        var index = 0
        for byte in bytes {
            pointer.storeBytes(of: byte, toByteOffset: index, as: UInt8.self)
            index += 1
        }
    }

    /// `count` bytes from libsodium's CSPRNG.
    public static func random(count: Int) -> SecureBytes {
        let bytes = SecureBytes(count: count)
        randombytes_buf(bytes.pointer, count)
        return bytes
    }

    deinit {
        sodium_free(pointer)  // zeroes before freeing
    }

    /// Read access to the secret bytes; do not let the buffer escape.
    public func withUnsafeBytes<R>(_ body: (UnsafeRawBufferPointer) throws -> R) rethrows -> R {
        try body(UnsafeRawBufferPointer(start: pointer, count: count))
    }

    /// Write access, only during construction of derived key material.
    func withUnsafeMutableBytes<R>(_ body: (UnsafeMutableRawBufferPointer) throws -> R) rethrows -> R {
        try body(UnsafeMutableRawBufferPointer(start: pointer, count: count))
    }

    /// Zeroes an ordinary array that held secret bytes.
    public static func zero(_ bytes: inout [UInt8]) {
        bytes.withUnsafeMutableBytes { buffer in
            if let base = buffer.baseAddress { sodium_memzero(base, buffer.count) }
        }
    }
}

/// Cryptographically secure random bytes and hashes through libsodium.
public enum Crypto {
    /// `count` random bytes for values that are not secret on their own (nonces, ids).
    public static func randomBytes(_ count: Int) -> [UInt8] {
        _ = Sodium.ready
        var bytes = [UInt8](repeating: 0, count: count)
        bytes.withUnsafeMutableBytes { randombytes_buf($0.baseAddress!, count) }
        return bytes
    }

    /// SHA-256 of `bytes`.
    public static func sha256(_ bytes: some ContiguousBytes) -> [UInt8] {
        _ = Sodium.ready
        var out = [UInt8](repeating: 0, count: Int(crypto_hash_sha256_bytes()))
        bytes.withUnsafeBytes { input in
            _ = out.withUnsafeMutableBytes { output in
                crypto_hash_sha256(
                    output.baseAddress!.assumingMemoryBound(to: UInt8.self),
                    input.baseAddress?.assumingMemoryBound(to: UInt8.self),
                    UInt64(input.count))
            }
        }
        return out
    }

    /// Constant-time equality of two byte strings of the same length.
    public static func constantTimeEquals(_ a: [UInt8], _ b: [UInt8]) -> Bool {
        guard a.count == b.count, !a.isEmpty else { return a.isEmpty && b.isEmpty }
        return a.withUnsafeBytes { x in
            b.withUnsafeBytes { y in sodium_memcmp(x.baseAddress!, y.baseAddress!, a.count) == 0 }
        }
    }
}

/// Lets `[UInt8]`, `ArraySlice` and friends be hashed without a Foundation dependency here.
public protocol ContiguousBytes {
    func withUnsafeBytes<R>(_ body: (UnsafeRawBufferPointer) throws -> R) rethrows -> R
}

extension Array: ContiguousBytes where Element == UInt8 {}
extension ArraySlice: ContiguousBytes where Element == UInt8 {}
