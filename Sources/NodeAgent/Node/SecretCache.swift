import AuroraAPI
import Foundation
import Logging
import Secrets
import Synchronization

/// Counts secret changes on the lead; heartbeats carry it so nodes know when to refresh.
final class SecretsGeneration: Sendable {
    private let value = Atomic<Int>(0)

    /// The count since the lead started; the heartbeat answer carries it as `secrets_version`, and
    /// a node refreshes its cached secrets when it changes.
    var current: Int { value.load(ordering: .relaxed) }
    /// Called by ``SecretsManager`` after every committed write or delete of a secret.
    func bump() { value.add(1, ordering: .relaxed) }
}

/// What a compute or edge node fetched from the lead: kept as the lead sent it (sealed to this
/// node's box key and signed by the lead) in `DATA/cache/secrets.json` (0600), and opened in
/// guarded memory for fast reads. Served, with its age, while the lead is away, also after a
/// restart. Refreshed when the lead's heartbeat answer says secrets changed.
final class SecretCache: Sendable {
    /// One cached read as saved in `secrets.json`: the lead's sealed, signed answer (no clear value)
    /// and when it was fetched (ISO 8601).
    struct Entry: Codable, Sendable {
        var read: SecretRead
        var fetchedAt: String

        enum CodingKeys: String, CodingKey {
            case read
            case fetchedAt = "fetched_at"
        }
    }

    /// An entry with its value opened in guarded memory; `fetchedDate` gives the `cached_age_s`.
    private struct Opened: Sendable {
        var entry: Entry
        var value: SecureBytes
        var fetched: ContinuousClock.Instant?
        var fetchedDate: Date
    }

    private let path: String
    private let node: String
    private let box: BoxKey
    private let state = Mutex<[String: Opened]>([:])
    private let logger: Logger

    /// Loads `DATA/cache/secrets.json`. Without the lead's key (a node that has not joined) the
    /// cache starts empty. Never throws: a missing or unreadable file is an empty cache.
    init(dataDir: String, node: String, box: BoxKey, leadSignKey: PublicKey?, logger: Logger) {
        self.path = dataDir + "/cache/secrets.json"
        self.node = node
        self.box = box
        self.logger = logger
        // Entries that no longer open or verify (another key, a changed file) are dropped.
        let saved = (try? SecureFile.read(path)).flatMap { SQL.decode([Entry].self, $0) } ?? []
        var opened: [String: Opened] = [:]
        if let leadKey = leadSignKey {
            for entry in saved {
                guard let value = try? Self.open(entry.read, node: node, box: box, leadKey: leadKey) else { continue }
                opened[Self.key(entry.read.service, entry.read.keyName)] = Opened(
                    entry: entry, value: value, fetched: nil,
                    fetchedDate: ISOTime.parse(entry.fetchedAt) ?? Date())
            }
        }
        state.withLock { $0 = opened }
    }

    /// The cache's key for one secret: `SERVICE/KEY`.
    static func key(_ service: String, _ keyName: String) -> String { service + "/" + keyName }

    /// Opens a sealed read after checking the lead's signature.
    /// The signature binds the service, key, scope, version and this node's name to the sealed
    /// bytes, so an answer meant for another node or secret does not verify. Every failure is a 502:
    /// the lead's answer is at fault, not the caller's request.
    static func open(_ read: SecretRead, node: String, box: BoxKey, leadKey: PublicKey) throws(Refusal) -> SecureBytes {
        guard let sealedText = read.sealedValue, let sealed = Data(base64Encoded: sealedText).map({ [UInt8]($0) }),
            let signatureText = read.signature, let signature = Data(base64Encoded: signatureText).map({ [UInt8]($0) })
        else {
            throw Refusal(
                .upstreamFailed, code: "bad_gateway", message: "the lead's answer has no sealed value or signature")
        }
        let text = SecretRead.signedText(
            service: read.service, keyName: read.keyName, scope: read.scope, scopeID: read.scopeID,
            version: read.version, node: node,
            sealedSHA256Hex: Hex.encode(Crypto.sha256(sealed)))
        guard SigningKey.verify(signature: signature, of: Array(text.utf8), by: leadKey) else {
            throw Refusal(
                .upstreamFailed, code: "bad_signature", message: "the secret is not signed by the lead this node joined"
            )
        }
        do { return try box.open(sealed: sealed) } catch {
            throw Refusal(
                .upstreamFailed, code: "cannot_open", message: "the sealed value does not open with this node's key")
        }
    }

    /// Keeps a verified read (and its opened value).
    /// Called after a fetch from the lead opened; rewrites the file (a failed write is logged and
    /// the entry still serves from memory until the agent stops).
    func store(_ read: SecretRead, value: SecureBytes) {
        let now = Date()
        let entry = Entry(read: read, fetchedAt: ISOTime.string(now))
        let all = state.withLock { cache -> [Entry] in
            cache[Self.key(read.service, read.keyName)] = Opened(
                entry: entry, value: value, fetched: .now, fetchedDate: now)
            return cache.values.map(\.entry)
        }
        persist(all)
    }

    /// Drops a secret the lead now refuses (403) or no longer has (404), so it is not served stale.
    func forget(_ service: String, _ keyName: String) {
        let all = state.withLock { cache -> [Entry] in
            cache[Self.key(service, keyName)] = nil
            return cache.values.map(\.entry)
        }
        persist(all)
    }

    /// The cached answer, with its value and age.
    /// Served by `GET /api/secrets/...` while the lead is away; nil when the secret was never fetched.
    func answer(_ service: String, _ keyName: String, now: Date = Date()) -> SecretRead? {
        state.withLock { cache in
            guard let opened = cache[Self.key(service, keyName)] else { return nil }
            var read = opened.entry.read
            read.sealedValue = nil
            read.signature = nil
            read.value = opened.value.withUnsafeBytes { String(decoding: $0, as: UTF8.self) }
            read.cachedAgeS = max(0, now.timeIntervalSince(opened.fetchedDate)).rounded(toPlaces: 3)
            return read
        }
    }

    /// The names cached, for a refresh.
    var names: [(service: String, keyName: String)] {
        state.withLock { cache in cache.values.map { ($0.entry.read.service, $0.entry.read.keyName) } }
    }

    /// Writes every entry (sealed, oldest first) atomically to the 0600 file in a 0700 directory.
    private func persist(_ entries: [Entry]) {
        let directory = (path as NSString).deletingLastPathComponent
        do {
            try DataDirectory.createDirectory(directory, mode: 0o700, what: "cache directory")
            try SecureFile.write(SQL.json(entries.sorted { $0.fetchedAt < $1.fetchedAt }), to: path)
        } catch {
            logger.warning("cannot write the secrets cache", metadata: ["nodeagent.error": "\(error.message)"])
        }
    }
}
