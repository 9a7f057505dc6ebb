import AuroraAPI
import Foundation
import Logging
import Secrets
import Synchronization

/// Counts secret changes on the lead; heartbeats carry it so nodes know when to refresh.
final class SecretsGeneration: Sendable {
    private let value = Atomic<Int>(0)

    var current: Int { value.load(ordering: .relaxed) }
    func bump() { value.add(1, ordering: .relaxed) }
}

/// What a compute or edge node fetched from the lead: kept as the lead sent it (sealed to this
/// node's box key and signed by the lead) in `DATA/cache/secrets.json` (0600), and opened in
/// guarded memory for fast reads. Served, with its age, while the lead is away, also after a
/// restart. Refreshed when the lead's heartbeat answer says secrets changed.
final class SecretCache: Sendable {
    struct Entry: Codable, Sendable {
        var read: SecretRead
        var fetchedAt: String

        enum CodingKeys: String, CodingKey {
            case read
            case fetchedAt = "fetched_at"
        }
    }

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
                opened[Self.key(entry.read.service, entry.read.keyName)] = Opened(entry: entry, value: value, fetched: nil,
                                                                                  fetchedDate: ISOTime.parse(entry.fetchedAt) ?? Date())
            }
        }
        state.withLock { $0 = opened }
    }

    static func key(_ service: String, _ keyName: String) -> String { service + "/" + keyName }

    /// Opens a sealed read after checking the lead's signature.
    static func open(_ read: SecretRead, node: String, box: BoxKey, leadKey: PublicKey) throws(Refusal) -> SecureBytes {
        guard let sealedText = read.sealedValue, let sealed = Data(base64Encoded: sealedText).map({ [UInt8]($0) }),
              let signatureText = read.signature, let signature = Data(base64Encoded: signatureText).map({ [UInt8]($0) }) else {
            throw Refusal(.upstreamFailed, code: "bad_gateway", message: "the lead's answer has no sealed value or signature")
        }
        let text = SecretRead.signedText(service: read.service, keyName: read.keyName, scope: read.scope, scopeID: read.scopeID,
                                         version: read.version, node: node,
                                         sealedSHA256Hex: Hex.encode(Crypto.sha256(sealed)))
        guard SigningKey.verify(signature: signature, of: Array(text.utf8), by: leadKey) else {
            throw Refusal(.upstreamFailed, code: "bad_signature", message: "the secret is not signed by the lead this node joined")
        }
        do { return try box.open(sealed: sealed) } catch {
            throw Refusal(.upstreamFailed, code: "cannot_open", message: "the sealed value does not open with this node's key")
        }
    }

    /// Keeps a verified read (and its opened value).
    func store(_ read: SecretRead, value: SecureBytes) {
        let now = Date()
        let entry = Entry(read: read, fetchedAt: ISOTime.string(now))
        let all = state.withLock { cache -> [Entry] in
            cache[Self.key(read.service, read.keyName)] = Opened(entry: entry, value: value, fetched: .now, fetchedDate: now)
            return cache.values.map(\.entry)
        }
        persist(all)
    }

    func forget(_ service: String, _ keyName: String) {
        let all = state.withLock { cache -> [Entry] in
            cache[Self.key(service, keyName)] = nil
            return cache.values.map(\.entry)
        }
        persist(all)
    }

    /// The cached answer, with its value and age.
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
