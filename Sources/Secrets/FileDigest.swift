import CSodium
import Foundation

/// SHA-256 over bytes that arrive in pieces, through libsodium's incremental API
/// (`crypto_hash_sha256_init/update/final`): a file of any size is hashed in constant memory.
///
/// Owns the C hash state and frees it in `deinit`; one owner feeds it, then calls ``finish()``
/// once.
public final class SHA256Stream {
    private let state: UnsafeMutablePointer<crypto_hash_sha256_state>
    private var finished = false

    public init() {
        _ = Sodium.ready
        state = .allocate(capacity: 1)
        crypto_hash_sha256_init(state)
    }

    deinit {
        state.deallocate()
    }

    /// Adds `bytes` to the hash.
    public func update(_ bytes: UnsafeRawBufferPointer) {
        precondition(!finished, "SHA256Stream.update after finish")
        guard let base = bytes.baseAddress, !bytes.isEmpty else { return }
        crypto_hash_sha256_update(state, base.assumingMemoryBound(to: UInt8.self), UInt64(bytes.count))
    }

    /// The digest of everything added (32 bytes). The stream cannot be used afterwards.
    public func finish() -> [UInt8] {
        precondition(!finished, "SHA256Stream.finish called twice")
        finished = true
        var digest = [UInt8](repeating: 0, count: Int(crypto_hash_sha256_bytes()))
        _ = digest.withUnsafeMutableBytes {
            crypto_hash_sha256_final(state, $0.baseAddress!.assumingMemoryBound(to: UInt8.self))
        }
        return digest
    }
}

extension Crypto {
    /// SHA-256 of the file at `path`, read in 1 MiB pieces. Blocking: call it off Swift's
    /// cooperative pool.
    public static func sha256(fileAt path: String) throws(SecretsError) -> [UInt8] {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else {
            throw SecretsError(.unreadable, "cannot open \(path): \(String(cString: strerror(errno)))")
        }
        defer { close(fd) }
        let hash = SHA256Stream()
        var buffer = [UInt8](repeating: 0, count: 1 << 20)
        while true {
            let count = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress!, $0.count) }
            if count == 0 { break }
            if count < 0 {
                if errno == EINTR { continue }
                throw SecretsError(.unreadable, "cannot read \(path): \(String(cString: strerror(errno)))")
            }
            buffer.withUnsafeBytes { hash.update(UnsafeRawBufferPointer(rebasing: $0[0..<count])) }
        }
        return hash.finish()
    }
}
