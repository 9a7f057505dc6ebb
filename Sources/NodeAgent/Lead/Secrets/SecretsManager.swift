import AuroraAPI
import Foundation
import Logging
import Metrics
import Secrets
import Synchronization

/// The lead's secrets manager: versions sealed at rest (``Envelope``), node > company > global
/// resolution, sealed and signed delivery to nodes, and a hash-chained audit of every read and
/// write.
///
/// Current versions (sealed) are kept in memory for fast resolution; the store holds every
/// version and the audit log. Values are never logged, put in errors or in events.
actor SecretsManager {
    /// A secret's identity at one scope.
    struct Slot: Hashable, Sendable {
        var service: String
        var keyName: String
        var scope: SecretScope
    }

    /// A slot's current version, sealed as stored (``Envelope``), and when the slot last changed.
    struct Current: Sendable {
        var version: Int
        var sealed: SealedValue
        var updatedAt: String
    }

    let store: any SecretStore
    let hub: EventHub
    let master: MasterKey
    let signing: SigningKey
    /// Bumped after every committed change, so heartbeat answers tell nodes to refresh their cache.
    let generation: SecretsGeneration
    let logger: Logger
    /// Sealed, signed answers by node, key and version (nothing in them is readable without the
    /// node's private key).
    let answers = AnswerCache(limit: 100_000)
    /// The key-encryption key new values are wrapped with.
    var kekVersion = 1
    /// Every slot that is not deleted, with its current version: reads resolve from here alone.
    var current: [Slot: Current] = [:]
    /// The head of the audit chain: the next record's `previous_hash` is its hash.
    var lastAudit: AuditRecord?

    // The read audit's state (SecretsManager+ReadAudit.swift).
    /// Read audit records waiting for the next batch, and who waits for each.
    var pendingReads: [(AuditRecord, @Sendable (Result<Void, AgentError>) -> Void)] = []
    /// Reads waiting for their audit record, oldest first, with the moment they fail closed.
    var deadlines:
        [(at: ContinuousClock.Instant, deadline: Duration, fail: @Sendable (Result<Void, AgentError>) -> Void)] = []
    var deadlinesHead = 0
    let readAuditSignals = ReadAuditSignals()
    /// The loops have ended: reads are refused at once.
    var readAuditStopped = false
    /// True once ``load()`` finished; until then every call answers 503 `starting`.
    private(set) var loaded = false

    init(
        store: any SecretStore, hub: EventHub, master: MasterKey, signing: SigningKey, generation: SecretsGeneration,
        logger: Logger
    ) {
        self.store = store
        self.hub = hub
        self.master = master
        self.signing = signing
        self.generation = generation
        var logger = logger
        logger[metadataKey: "nodeagent.subsystem"] = "secrets"
        self.logger = logger
    }

    // MARK: Loading

    /// Called by the job service once the registry is loaded, before the lead reports ready: the
    /// current versions, the audit chain's head and the key-encryption key in use. Throws
    /// ``AgentError`` with code `store`; the job service retries.
    func load() async throws(AgentError) {
        current = Dictionary(try await store.secretHeads(), uniquingKeysWith: { $1 })
        lastAudit = try await store.lastAuditRecord()
        kekVersion = try await store.highestKEKVersion()
        loaded = true
        logger.info("secrets loaded", metadata: ["nodeagent.secrets": "\(current.count)"])
    }

    // MARK: Writes (operator)

    /// A new version of a secret at one scope.
    func write(_ request: SecretWrite, actor: String) async throws(Refusal) -> SecretInfo {
        try requireLoaded()
        try Self.validName(request.service, field: "service")
        try Self.validName(request.keyName, field: "key_name")
        let scope = try Self.scope(request.scope, request.scopeID)
        guard !request.value.isEmpty else { throw Refusal.badRequest("value must not be empty") }
        guard request.value.utf8.count <= 64 * 1024 else {
            throw Refusal(.tooLarge, code: "payload_too_large", message: "value is larger than 65536 bytes")
        }
        var bytes = Array(request.value.utf8)
        let secret = SecureBytes(copying: bytes)
        SecureBytes.zero(&bytes)
        return try await save(
            secret, at: Slot(service: request.service, keyName: request.keyName, scope: scope), actor: actor,
            action: "write", restoredFrom: nil)
    }

    /// A new version with the value of version `request.version`.
    func rollback(service: String, keyName: String, _ request: SecretRollback, actor: String) async throws(Refusal)
        -> SecretInfo
    {
        try requireLoaded()
        let scope = try Self.scope(request.scope, request.scopeID)
        let slot = Slot(service: service, keyName: keyName, scope: scope)
        // Versions are PostgreSQL integers: one past their range exists nowhere (and the store refuses it).
        guard Int32(exactly: request.version) != nil else {
            throw Refusal.notFound("\(service)/\(keyName) at \(scope) has no version \(request.version)")
        }
        let stored: Current?
        do { stored = try await store.secretVersion(slot, request.version) } catch {
            throw Refusal.storeUnavailable(error)
        }
        guard let old = stored else {
            throw Refusal.notFound("\(service)/\(keyName) at \(scope) has no version \(request.version)")
        }
        let value: SecureBytes
        do { value = try Envelope.open(old.sealed, for: Self.row(slot, version: old.version), master: master) } catch {
            throw Refusal(
                .internalFailure, code: "cannot_open",
                message: "version \(request.version) does not open: \(error.message)")
        }
        return try await save(value, at: slot, actor: actor, action: "rollback", restoredFrom: request.version)
    }

    /// Deletes a secret at one scope: reads no longer see it; its versions stay for history.
    func delete(service: String, keyName: String, scope: SecretScope, actor: String) async throws(Refusal) -> SecretInfo
    {
        try requireLoaded()
        let slot = Slot(service: service, keyName: keyName, scope: scope)
        guard let existing = current[slot] else {
            throw Refusal.notFound("no secret \(service)/\(keyName) at \(scope)")
        }
        let record = nextAudit(
            actor: actor, action: "delete", service: service, keyName: keyName, scope: scope.description,
            version: existing.version, result: "ok")
        let event = EventLog.Draft(
            type: EventType.secretChanged, node: nil,
            data: [
                "service": .string(service), "key_name": .string(keyName), "scope": .string(scope.name),
                "scope_id": .string(scope.id),
                "version": .number(Double(existing.version)), "deleted": .bool(true),
            ])
        do {
            try await committing { (store, published) throws(AgentError) in
                try await store.deleteSecret(slot, audit: record, event: event, published: published)
            }
        } catch { throw Refusal.storeUnavailable(error) }
        current[slot] = nil
        generation.bump()
        return SecretInfo(
            service: service, keyName: keyName, scope: scope.name, scopeID: scope.id, version: existing.version)
    }

    func save(_ value: SecureBytes, at slot: Slot, actor: String, action: String, restoredFrom: Int?)
        async throws(Refusal) -> SecretInfo
    {
        let version: Int
        do { version = try await store.latestSecretVersion(slot) + 1 } catch { throw Refusal.storeUnavailable(error) }
        let sealed = Envelope.seal(value, for: Self.row(slot, version: version), master: master, kekVersion: kekVersion)
        let record = nextAudit(
            actor: actor, action: action, service: slot.service, keyName: slot.keyName, scope: slot.scope.description,
            version: version, result: "ok")
        let event = EventLog.Draft(
            type: EventType.secretChanged, node: nil,
            data: [
                "service": .string(slot.service), "key_name": .string(slot.keyName), "scope": .string(slot.scope.name),
                "scope_id": .string(slot.scope.id), "version": .number(Double(version)),
            ])
        do {
            let stored = NewSecretVersion(
                slot: slot, version: version, sealed: sealed, createdBy: actor, restoredFrom: restoredFrom)
            try await committing { (store, published) throws(AgentError) in
                try await store.saveSecret(stored, audit: record, event: event, published: published)
            }
        } catch { throw Refusal.storeUnavailable(error) }
        current[slot] = Current(version: version, sealed: sealed, updatedAt: ISOTime.string(Date()))
        generation.bump()
        logger.info(
            "secret written",
            metadata: [
                "nodeagent.secret": "\(slot.service)/\(slot.keyName)", "nodeagent.scope": "\(slot.scope)",
                "nodeagent.version": "\(version)",
            ])
        return SecretInfo(
            service: slot.service, keyName: slot.keyName, scope: slot.scope.name, scopeID: slot.scope.id,
            version: version)
    }

    // MARK: Rotation (operator)

    /// Re-wraps every data key of every version under a new key-encryption key, online: values
    /// are not re-encrypted, new writes use the new key at once, and reads go on throughout
    /// (each current version switches to its re-wrapped key in one step).
    func rotateKey(actor: String) async throws(Refusal) -> SecretRotation {
        try requireLoaded()
        let started = ContinuousClock.now
        let from = kekVersion, to = kekVersion + 1
        kekVersion = to
        let sealedBefore: [(Slot, Current)]
        do { sealedBefore = try await store.versionsSealed(below: to) } catch { throw Refusal.storeUnavailable(error) }
        var rewrapped = 0
        for batch in stride(from: 0, to: sealedBefore.count, by: 1000).map({
            sealedBefore[$0..<min($0 + 1000, sealedBefore.count)]
        }) {
            var fresh: [(Slot, Int, SealedValue)] = []
            for (slot, old) in batch {
                let sealed: SealedValue
                do {
                    sealed = try Envelope.rewrap(
                        old.sealed, for: Self.row(slot, version: old.version), master: master, kekVersion: to)
                } catch {
                    throw Refusal(
                        .internalFailure, code: "cannot_open",
                        message:
                            "\(slot.service)/\(slot.keyName) version \(old.version) does not open; rotation stopped: \(error.message)"
                    )
                }
                fresh.append((slot, old.version, sealed))
            }
            do { try await store.rewrap(fresh, kekVersion: to) } catch { throw Refusal.storeUnavailable(error) }
            // Current versions switch to the re-wrapped key; the ciphertext is the same.
            for (slot, version, sealed) in fresh where current[slot]?.version == version {
                current[slot]?.sealed = sealed
            }
            rewrapped += fresh.count
        }
        let record = nextAudit(
            actor: actor, action: "rotate", service: "*", keyName: "*", version: to,
            result: "ok: \(rewrapped) data keys re-wrapped")
        do {
            try await committing { (store, _) throws(AgentError) in try await store.appendAudit([record]) }
        } catch { throw Refusal.storeUnavailable(error) }
        let elapsed = started.duration(to: .now)
        logger.notice(
            "secrets key rotated",
            metadata: ["nodeagent.from": "\(from)", "nodeagent.to": "\(to)", "nodeagent.rewrapped": "\(rewrapped)"])
        return SecretRotation(
            fromVersion: from, toVersion: to, rewrapped: rewrapped,
            seconds: (Double(elapsed / .microseconds(1)) / 1e6).rounded(toPlaces: 3))
    }

    // MARK: Reads

    /// The value that resolves for `node` of `company`, sealed to its box key and signed by the
    /// lead. Audited before it is answered; if the audit cannot be written the read is refused.
    /// Only resolution and the audit run on the actor; the cryptography runs on the caller's
    /// task, so reads proceed in parallel.
    nonisolated func read(service: String, keyName: String, node: String, company: String, boxKey: PublicKey)
        async throws(Refusal) -> SecretRead
    {
        let (slot, found) = try await resolveAudited(
            service: service, keyName: keyName, node: node, company: company, actor: "node:\(node)",
            action: "read")
        // The same version for the same node and key: the answer sealed and signed before serves
        // again (the node opens it as before); only a new version is opened, sealed and signed.
        let cacheKey =
            "\(node)|\(boxKey.base64)|\(service)|\(keyName)|\(slot.scope.name)|\(slot.scope.id)|\(found.version)"
        if let answer = answers.get(cacheKey) { return answer }
        let value = try open(found, at: slot)
        let sealed = value.withUnsafeBytes { BoxKey.seal(Array($0), to: boxKey) }
        let text = SecretRead.signedText(
            service: service, keyName: keyName, scope: slot.scope.name, scopeID: slot.scope.id, version: found.version,
            node: node, sealedSHA256Hex: Hex.encode(Crypto.sha256(sealed)))
        let answer = SecretRead(
            service: service, keyName: keyName, scope: slot.scope.name, scopeID: slot.scope.id, version: found.version,
            sealedValue: Data(sealed).base64EncodedString(),
            signature: Data(signing.sign(Array(text.utf8))).base64EncodedString())
        answers.put(cacheKey, answer)
        return answer
    }

    /// An operator's preview of what resolves for a node or a company, with the value.
    nonisolated func preview(service: String, keyName: String, node: String?, company: String) async throws(Refusal)
        -> SecretRead
    {
        let (slot, found) = try await resolveAudited(
            service: service, keyName: keyName, node: node ?? "", company: company, actor: "operator",
            action: "preview", auditNode: node)
        let value = try open(found, at: slot)
        return SecretRead(
            service: service, keyName: keyName, scope: slot.scope.name, scopeID: slot.scope.id, version: found.version,
            value: value.withUnsafeBytes { String(decoding: $0, as: UTF8.self) })
    }

    /// Resolves, then writes the audit record. Fails closed: no audit, no value.
    func resolveAudited(
        service: String, keyName: String, node: String, company: String, actor: String, action: String,
        auditNode: String?? = .none
    ) async throws(Refusal) -> (Slot, Current) {
        try requireLoaded()
        let (slot, found) = try resolve(service: service, keyName: keyName, node: node, company: company, actor: actor)
        let record = nextAudit(
            actor: actor, action: action, service: service, keyName: keyName, node: auditNode ?? node,
            scope: slot.scope.description, version: found.version, result: "ok")
        if case .failure(let error) = await appendRead(record, deadline: Self.auditDeadline) {
            Self.auditFailures.increment()
            throw Refusal(
                .unavailable, code: "audit_unavailable",
                message: "the read was refused: its audit record could not be written (\(error.message))")
        }
        return (slot, found)
    }

    nonisolated func open(_ found: Current, at slot: Slot) throws(Refusal) -> SecureBytes {
        do { return try Envelope.open(found.sealed, for: Self.row(slot, version: found.version), master: master) } catch
        {
            throw Refusal(
                .internalFailure, code: "cannot_open", message: "the stored value does not open: \(error.message)")
        }
    }

    /// Records a refused read (another node's override, another company's value) and answers 403.
    func refuse(service: String, keyName: String, node: String, asked: String) async -> Refusal {
        let record = nextAudit(
            actor: "node:\(node)", action: "read", service: service, keyName: keyName, node: node, scope: asked,
            result: "refused: not this node's scope")
        try? await committing { (store, _) throws(AgentError) in try await store.appendAudit([record]) }
        logger.notice(
            "secret read refused",
            metadata: [
                "nodeagent.node": "\(node)", "nodeagent.secret": "\(service)/\(keyName)",
                "nodeagent.asked": "\(asked)",
            ])
        return Refusal(
            .forbidden, code: "forbidden_scope",
            message: "node '\(node)' may read only what resolves for itself, not \(asked)")
    }

    func resolve(service: String, keyName: String, node: String, company: String, actor: String) throws(Refusal)
        -> (Slot, Current)
    {
        var available: [SecretScope: Current] = [:]
        for scope in SecretResolution.chain(node: node, company: company) {
            if let found = current[Slot(service: service, keyName: keyName, scope: scope)] { available[scope] = found }
        }
        guard let (scope, found) = SecretResolution.resolve(available, node: node, company: company) else {
            throw Refusal.notFound(
                "no secret \(service)/\(keyName) resolves for \(node.isEmpty ? "company '\(company)'" : "node '\(node)'")"
            )
        }
        return (Slot(service: service, keyName: keyName, scope: scope), found)
    }

    // MARK: Internals

    /// 503 `starting` until ``load()`` finished.
    func requireLoaded() throws(Refusal) {
        guard loaded else {
            throw Refusal(.unavailable, code: "starting", message: "the secrets manager is starting; retry in a moment")
        }
    }

    /// The master key sealed to a standby lead's box key (base64 of `crypto_box_seal`), for its
    /// join answer. Audited first (action `seal_master_key`): without the record nothing is sealed.
    func sealMasterKey(for node: String, to box: PublicKey) async throws(Refusal) -> String {
        let record = nextAudit(
            actor: "lead", action: "seal_master_key", service: "aurora", keyName: "master", node: node,
            scope: "standby", result: "ok")
        do {
            try await committing { (store, _) throws(AgentError) in try await store.appendAudit([record]) }
        } catch {
            throw Refusal(
                .unavailable, code: "audit_unavailable",
                message:
                    "the standby's join was not answered with the master key: its audit record could not be written")
        }
        logger.notice("sealed the secrets master key to a standby", metadata: ["nodeagent.node": "\(node)"])
        return Data(BoxKey.seal(Array(master.base64().utf8), to: box)).base64EncodedString()
    }

    /// The next audit record; memory moves on at once so concurrent appends chain in order.
    func nextAudit(
        actor: String, action: String, service: String, keyName: String, node: String? = nil, scope: String? = nil,
        version: Int? = nil, result: String
    ) -> AuditRecord {
        let record = AuditChain.append(
            after: lastAudit, at: ISOTime.string(Date()), actor: actor, action: action, service: service,
            keyName: keyName, node: node, scope: scope, version: version, result: result)
        lastAudit = record
        return record
    }

    /// `aurora_secrets_audit_failures_total`: reads refused and writes failed because their audit
    /// record could not be stored.
    static let auditFailures = Counter(label: "aurora_secrets_audit_failures_total")

    /// Runs one audited write (the record already appended to the chain in memory); publishes
    /// its event after the commit. A failed write reloads the audit head from the store, so the
    /// chain goes on from what was stored.
    func committing(_ write: (any SecretStore, @escaping Published) async throws(AgentError) -> Void)
        async throws(AgentError)
    {
        let hub = self.hub
        do { try await write(store, { hub.publish($0) }) } catch {
            Self.auditFailures.increment()
            if let reloaded = try? await store.lastAuditRecord() { lastAudit = reloaded }
            throw error
        }
    }

    /// A JSON string literal.
    /// Quotes and escapes as JSON requires (control characters as `\uXXXX`), for hand-built JSON:
    /// the read audit's batch insert and the OpenAPI document.
    static func quoted(_ text: String) -> String {
        var out = "\""
        out.reserveCapacity(text.utf8.count + 2)
        for scalar in text.unicodeScalars {
            switch scalar {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case "\r": out += "\\r"
            case "\t": out += "\\t"
            case _ where scalar.value < 0x20:
                let hex = String(scalar.value, radix: 16)
                out += "\\u" + String(repeating: "0", count: 4 - hex.count) + hex
            default: out.unicodeScalars.append(scalar)
            }
        }
        return out + "\""
    }

    /// The identity a sealed value is bound to (its associated data): a value moved to another
    /// slot or version does not open.
    static func row(_ slot: Slot, version: Int) -> SecretRow {
        SecretRow(
            scope: slot.scope.name, scopeID: slot.scope.id, service: slot.service, keyName: slot.keyName,
            version: version)
    }

    static func scope(_ name: String, _ id: String?) throws(Refusal) -> SecretScope {
        do { return try SecretScope(name: name, id: id) } catch { throw Refusal.badRequest(error.message) }
    }

    /// Service and key names: 1–128 of letters, digits, `.`, `_`, `-`; 400 naming `field` otherwise.
    static func validName(_ text: String, field: String) throws(Refusal) {
        let allowed = Set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-")
        guard (1...128).contains(text.count), text.allSatisfy({ allowed.contains($0) }) else {
            throw Refusal.badRequest("\(field) must be 1-128 letters, digits, '.', '_' or '-'")
        }
    }
}

/// A bounded map of sealed answers; cleared when full (answers are cheap to make again).
final class AnswerCache: Sendable {
    let entries = Mutex<[String: SecretRead]>([:])
    let limit: Int

    init(limit: Int) { self.limit = limit }

    /// The answer made before for this node, box key, secret and version, if any.
    func get(_ key: String) -> SecretRead? { entries.withLock { $0[key] } }

    /// Keeps an answer; at `limit` entries the whole cache is emptied first.
    func put(_ key: String, _ answer: SecretRead) {
        entries.withLock { entries in
            if entries.count >= limit { entries.removeAll(keepingCapacity: true) }
            entries[key] = answer
        }
    }
}
