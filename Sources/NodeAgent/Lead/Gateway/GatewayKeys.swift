import AsyncAlgorithms
import AuroraAPI
import Foundation
import Logging
import Mesh
import Metrics
import Secrets
import ServiceLifecycle
import Synchronization

/// A gateway key about to be stored.
struct NewGatewayKey: Sendable {
    var id: String
    /// Hex SHA-256 of the key.
    var hash: String
    var app: String
    var company: String
    var models: [String]?
    var rpm: Int?
    var tpm: Int?
    var ttlS: Int?
}

/// Where gateway keys and their usage live (the lead's store).
protocol GatewayKeyStore: Sendable {
    func insertGatewayKey(_ key: NewGatewayKey) async throws(AgentError) -> GatewayKeyInfo
    /// Every key, oldest first, with the hex SHA-256 of each.
    func gatewayKeys() async throws(AgentError) -> [(hash: String, info: GatewayKeyInfo)]
    /// Marks a key revoked (the first time counts); nil for an unknown id.
    func revokeGatewayKey(_ id: String) async throws(AgentError) -> GatewayKeyInfo?
    /// Adds requests and tokens to the totals per key and model, in one transaction.
    func addGatewayUsage(_ usage: [GatewayUsage]) async throws(AgentError)
    /// The totals per key and model.
    func gatewayUsage() async throws(AgentError) -> [GatewayUsage]
}

/// Gateway keys on the lead (`aurora-cli keys create --app NAME [--company C] [--models m1,m2]
/// [--rpm N] [--tpm N]`): `aurk_<48 hex>`, shown once, stored as SHA-256 hashes, checked from
/// memory on every call. A key is good for the `/v1/` routes only; it may be limited to models,
/// requests per minute and tokens per minute (``MinuteBudget``: 429 with `Retry-After`).
///
/// Usage (requests, prompt and completion tokens) is counted per caller and model for every
/// gateway call, whatever its credential, from the backend's `usage`, or from the stream's
/// chunks when it reported none. Counts go to `/metrics` at once and to the store every few
/// seconds (``GatewayKeysService``); a lead that crashes loses at most that much of the count.
final class GatewayKeys: Sendable {
    struct Grant: Sendable, Equatable {
        var id: String
        var app: String
        var company: String
        var models: Set<String>?
        var rpm: Int?
        var tpm: Int?
        var expiresAt: Date?
        var revoked: Bool

        /// The caller name gateway jobs record: `key:ID`, with `@COMPANY` when it has one.
        var caller: String { "key:\(id)" + (company.isEmpty ? "" : "@\(company)") }
    }

    private struct Budgets {
        var requests: MinuteBudget?
        var tokens: MinuteBudget?
    }

    private struct UsageKey: Hashable {
        var key: String
        var model: String
    }

    private struct Counts {
        var app: String?
        var requests: Int64 = 0
        var prompt: Int64 = 0
        var completion: Int64 = 0
    }

    private let store: any GatewayKeyStore
    /// hex SHA-256 → grant; nil until loaded.
    private let grants = Mutex<[String: Grant]?>(nil)
    private let budgets = Mutex<[String: Budgets]>([:])
    /// Counted, not yet in the store.
    private let pending = Mutex<[UsageKey: Counts]>([:])
    private let limited = Counter(label: "aurora_gateway_rate_limited_total")

    init(store: any GatewayKeyStore) { self.store = store }

    /// Loads every key from the store (``GatewayKeysService`` retries until it works).
    func load() async throws(AgentError) {
        let rows = try await store.gatewayKeys()
        var loaded: [String: Grant] = [:]
        for (hash, info) in rows { loaded[hash] = Self.grant(info) }
        grants.withLock { $0 = loaded }
    }

    var loaded: Bool { grants.withLock { $0 != nil } }

    private static func grant(_ info: GatewayKeyInfo) -> Grant {
        Grant(
            id: info.id, app: info.app, company: info.company, models: info.models.map(Set.init), rpm: info.rpm,
            tpm: info.tpm, expiresAt: info.expiresAt.flatMap(ISOTime.parse), revoked: info.state == .revoked)
    }

    /// Whether a presented bearer token is shaped like a gateway key (the routes then check it here).
    static func looksLikeKey(_ presented: String) -> Bool { presented.hasPrefix("aurk_") }

    /// The grant of a presented key: 401 for an unknown, revoked or expired one (one message
    /// for all, so nothing is learned about other keys), 503 before the keys are loaded.
    func grant(for presented: String, now: Date = Date()) throws(Refusal) -> Grant {
        guard presented.utf8.count <= 128 else { throw Refusal.unauthorized("the gateway key is not valid") }
        let hash = Hex.encode(Crypto.sha256(Array(presented.utf8)))
        guard let all = grants.withLock({ $0 }) else {
            throw Refusal(
                .unavailable, code: "keys_loading", message: "the lead is loading its gateway keys; retry in a moment")
        }
        guard let grant = all[hash], !grant.revoked, grant.expiresAt.map({ $0 > now }) ?? true else {
            throw Refusal.unauthorized("the gateway key is not valid")
        }
        return grant
    }

    /// Lets one call of `grant` for `model` through, or refuses it: 403 `model_not_allowed`
    /// for a model the key is not for; 429 `rate_limit_exceeded` (with `Retry-After`) when its
    /// requests or tokens per minute are spent. A call let through counts against `rpm` at once.
    func admit(_ grant: Grant, model: String, now: Int64 = GatewayKeys.milliseconds()) throws(Refusal) {
        if let models = grant.models, !models.contains(model) {
            throw Refusal(
                .forbidden, code: "model_not_allowed",
                message:
                    "this key may call \(models.sorted().joined(separator: ", ")); not '\(InputRules.printable(model))'"
            )
        }
        let wait = budgets.withLock { budgets -> (Int64, String)? in
            var entry =
                budgets[grant.id]
                ?? Budgets(
                    requests: grant.rpm.map { MinuteBudget(perMinute: $0, now: now) },
                    tokens: grant.tpm.map { MinuteBudget(perMinute: $0, now: now) })
            defer { budgets[grant.id] = entry }
            if let wait = entry.tokens?.check(now: now) { return (wait, "tokens per minute (\(grant.tpm ?? 0))") }
            if let wait = entry.requests?.check(now: now) { return (wait, "requests per minute (\(grant.rpm ?? 0))") }
            entry.requests?.charge(1, now: now)
            return nil
        }
        if let (milliseconds, what) = wait {
            limited.increment()
            let seconds = Int((Double(milliseconds) / 1000).rounded(.up))
            throw Refusal(
                .tooMany, code: "rate_limit_exceeded",
                message: "this key has used its \(what); retry in \(seconds) s", retryAfterSeconds: max(1, seconds))
        }
    }

    /// Counts one answered call of `caller` (a key's id, or another credential's caller) for
    /// `model`, and charges a key's tokens per minute.
    func record(
        caller: String, grant: Grant?, model: String, prompt: Int64, completion: Int64,
        now: Int64 = GatewayKeys.milliseconds()
    ) {
        let key = grant?.id ?? caller
        let prompt = max(0, min(prompt, 1 << 40)), completion = max(0, min(completion, 1 << 40))
        pending.withLock { pending in
            var counts = pending[UsageKey(key: key, model: model)] ?? Counts(app: grant?.app)
            counts.requests += 1
            counts.prompt += prompt
            counts.completion += completion
            pending[UsageKey(key: key, model: model)] = counts
        }
        if let grant, grant.tpm != nil {
            budgets.withLock { $0[grant.id]?.tokens?.charge(Double(prompt + completion), now: now) }
        }
        let dimensions = [("key", key), ("model", model)]
        Counter(label: "aurora_gateway_requests_total", dimensions: dimensions).increment()
        Counter(label: "aurora_gateway_tokens_total", dimensions: dimensions + [("kind", "prompt")])
            .increment(by: Int64(prompt))
        Counter(label: "aurora_gateway_tokens_total", dimensions: dimensions + [("kind", "completion")])
            .increment(by: Int64(completion))
    }

    /// Writes what was counted since the last flush; on failure it is kept for the next one.
    func flush() async throws(AgentError) {
        let taken = pending.withLock { pending -> [UsageKey: Counts] in
            defer { pending = [:] }
            return pending
        }
        guard !taken.isEmpty else { return }
        do {
            try await store.addGatewayUsage(
                taken.map {
                    GatewayUsage(
                        key: $0.key.key, app: $0.value.app, model: $0.key.model, requests: $0.value.requests,
                        promptTokens: $0.value.prompt, completionTokens: $0.value.completion)
                })
        } catch {
            pending.withLock { pending in
                for (key, counts) in taken {
                    var merged = pending[key] ?? Counts(app: counts.app)
                    merged.requests += counts.requests
                    merged.prompt += counts.prompt
                    merged.completion += counts.completion
                    pending[key] = merged
                }
            }
            throw error
        }
    }

    /// The totals per caller and model: the store's and what is not written yet, sorted.
    func usage() async throws(Refusal) -> [GatewayUsage] {
        let stored: [GatewayUsage]
        do { stored = try await store.gatewayUsage() } catch { throw Refusal.storeUnavailable(error) }
        var merged: [UsageKey: GatewayUsage] = [:]
        for row in stored { merged[UsageKey(key: row.key, model: row.model)] = row }
        for (key, counts) in pending.withLock({ $0 }) {
            var row =
                merged[key]
                ?? GatewayUsage(
                    key: key.key, app: counts.app, model: key.model, requests: 0, promptTokens: 0, completionTokens: 0)
            row.requests += counts.requests
            row.promptTokens += counts.prompt
            row.completionTokens += counts.completion
            merged[key] = row
        }
        return merged.values.sorted { ($0.key, $0.model) < ($1.key, $1.model) }
    }

    /// `POST /api/keys`: checks the request, stores the hash and returns the key, the only time it
    /// is shown. 400 for a bad field; 503 when the store fails (nothing is granted then).
    func create(_ request: GatewayKeyCreateRequest) async throws(Refusal) -> GatewayKeyCreated {
        for (field, value) in [("app", request.app), ("company", request.company)] {
            guard let value, field == "app" || !value.isEmpty else { continue }
            guard InputRules.isPlainName(value, maxBytes: 128)
            else {
                throw Refusal.badRequest("\(field) must be 1-128 bytes of letters, digits, '.', '_' and '-'")
            }
        }
        do throws(MeshError) {
            if let models = request.models {
                guard !models.isEmpty, models.count <= GatewayKeyCreateRequest.maxModels else {
                    throw MeshError(
                        .tooMany,
                        "models: 1-\(GatewayKeyCreateRequest.maxModels) names, or leave it out for every model")
                }
                for model in models { try ModelDiscovery.checkName(model, field: "models") }
            }
        } catch {
            throw Refusal.badRequest(error.message)
        }
        if let rpm = request.rpm, !(1...1_000_000).contains(rpm) {
            throw Refusal.badRequest("rpm must be 1-1000000 requests per minute")
        }
        if let tpm = request.tpm, !(1...1_000_000_000).contains(tpm) {
            throw Refusal.badRequest("tpm must be 1-1000000000 tokens per minute")
        }
        if let ttl = request.ttlS, !(1...(366 * 86_400)).contains(ttl) {
            throw Refusal.badRequest("ttl_s must be 1-\(366 * 86_400) seconds")
        }
        let key = "aurk_" + Hex.encode(Crypto.randomBytes(24))
        let hash = Hex.encode(Crypto.sha256(Array(key.utf8)))
        let info: GatewayKeyInfo
        do {
            info = try await store.insertGatewayKey(
                NewGatewayKey(
                    id: "gk_" + Hex.encode(Crypto.randomBytes(6)), hash: hash, app: request.app,
                    company: request.company ?? "", models: request.models.map { Array(Set($0)).sorted() },
                    rpm: request.rpm, tpm: request.tpm, ttlS: request.ttlS))
        } catch {
            throw Refusal.storeUnavailable(error)
        }
        grants.withLock { $0?[hash] = Self.grant(info) }
        return GatewayKeyCreated(key: key, info: info)
    }

    func list() async throws(Refusal) -> [GatewayKeyInfo] {
        do { return try await store.gatewayKeys().map(\.info) } catch { throw Refusal.storeUnavailable(error) }
    }

    /// Revokes by id (`gk_…`), at once for every call after; nil when no such key exists.
    func revoke(_ id: String) async throws(Refusal) -> GatewayKeyInfo? {
        let revoked: GatewayKeyInfo?
        do { revoked = try await store.revokeGatewayKey(id) } catch { throw Refusal.storeUnavailable(error) }
        guard let info = revoked else { return nil }
        grants.withLock { grants in
            for (hash, grant) in grants ?? [:] where grant.id == id { grants?[hash]?.revoked = true }
        }
        return info
    }

    private static let start = ContinuousClock.now

    /// Monotonic milliseconds (the budgets' clock).
    static func milliseconds() -> Int64 {
        let elapsed = start.duration(to: .now).components
        return elapsed.seconds * 1000 + elapsed.attoseconds / 1_000_000_000_000_000
    }
}

/// Writes the gateway's usage counts every 5 s, and once more on the way out. (The keys are
/// loaded with the registry, by ``RegistryService``.)
struct GatewayKeysService: Service {
    let keys: GatewayKeys
    let state: AgentState
    let logger: Logger

    func run() async throws {
        try? await cancelWhenGracefulShutdown { await state.registryLoaded.wait() }
        guard keys.loaded else { return }
        let ticks = AsyncTimerSequence(interval: .seconds(5), clock: .continuous).cancelOnGracefulShutdown()
        for await _ in ticks { await flush() }
        await flush()
    }

    private func flush() async {
        do throws(AgentError) { try await keys.flush() } catch {
            logger.warning(
                "cannot write the gateway usage; kept for the next try",
                metadata: ["nodeagent.error": "\(error.message)"])
        }
    }
}
