import AuroraAPI
import Foundation
import Logging
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

    let store: Store
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
        store: Store, hub: EventHub, master: MasterKey, signing: SigningKey, generation: SecretsGeneration,
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
        let rows = try await store.query(
            """
            SELECT s.service, s.key_name, s.scope, s.scope_id, s.version, s.ciphertext, s.nonce, s.wrapped_key, s.wrap_nonce, s.kek_version,
                   \(SQL.iso("h.updated_at"))
            FROM secret_heads h JOIN secrets s USING (service, key_name, scope, scope_id, version)
            WHERE NOT h.deleted
            """
        ).rows
        var loadedCurrent: [Slot: Current] = [:]
        for row in rows {
            guard let slot = Self.slot(row), let current = Self.current(row, from: 4) else { continue }
            loadedCurrent[slot] = current
        }
        current = loadedCurrent
        lastAudit = try await Self.lastAudit(store: store)
        kekVersion = Int(try await store.query("SELECT coalesce(max(kek_version), 1) FROM secrets").scalar ?? "1") ?? 1
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
        let row: [String?]?
        do {
            row = try await store.query(
                """
                SELECT service, key_name, scope, scope_id, version, ciphertext, nonce, wrapped_key, wrap_nonce, kek_version, \(SQL.iso("created_at"))
                FROM secrets WHERE service = $1 AND key_name = $2 AND scope = $3 AND scope_id = $4 AND version = $5
                """, [service, keyName, scope.name, scope.id, String(request.version)]
            ).rows.first
        } catch { throw Refusal.storeUnavailable(error) }
        guard let row, let old = Self.current(row, from: 4) else {
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
            try await commit(
                [
                    (
                        "UPDATE secret_heads SET deleted = true, updated_at = now() WHERE service = $1 AND key_name = $2 AND scope = $3 AND scope_id = $4",
                        [service, keyName, scope.name, scope.id]
                    )
                ], audit: record, event: event)
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
        do {
            version =
                (Int(
                    try await store.query(
                        "SELECT coalesce(max(version), 0) FROM secrets WHERE service = $1 AND key_name = $2 AND scope = $3 AND scope_id = $4",
                        [slot.service, slot.keyName, slot.scope.name, slot.scope.id]
                    ).scalar ?? "0") ?? 0) + 1
        } catch { throw Refusal.storeUnavailable(error) }
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
            try await commit(
                [
                    (
                        """
                        INSERT INTO secrets (service, key_name, scope, scope_id, version, ciphertext, nonce, wrapped_key, wrap_nonce, kek_version, created_by, restored_from)
                        VALUES ($1, $2, $3, $4, $5::integer, $6, $7, $8, $9, $10::integer, $11, $12::integer)
                        """,
                        [
                            slot.service, slot.keyName, slot.scope.name, slot.scope.id, String(version),
                            Self.b64(sealed.ciphertext), Self.b64(sealed.nonce),
                            Self.b64(sealed.wrappedKey), Self.b64(sealed.wrapNonce), String(sealed.kekVersion), actor,
                            restoredFrom.map(String.init),
                        ]
                    ),
                    (
                        """
                        INSERT INTO secret_heads (service, key_name, scope, scope_id, version) VALUES ($1, $2, $3, $4, $5::integer)
                        ON CONFLICT (service, key_name, scope, scope_id) DO UPDATE SET version = EXCLUDED.version, deleted = false, updated_at = now()
                        """, [slot.service, slot.keyName, slot.scope.name, slot.scope.id, String(version)]
                    ),
                ], audit: record, event: event)
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
        let rows: [[String?]]
        do {
            rows = try await store.query(
                """
                SELECT service, key_name, scope, scope_id, version, ciphertext, nonce, wrapped_key, wrap_nonce, kek_version, \(SQL.iso("created_at"))
                FROM secrets WHERE kek_version < $1
                """, [String(to)]
            ).rows
        } catch { throw Refusal.storeUnavailable(error) }
        var rewrapped = 0
        for batch in stride(from: 0, to: rows.count, by: 1000).map({ Array(rows[$0..<min($0 + 1000, rows.count)]) }) {
            var updates: [[String: JSONValue]] = []
            var fresh: [(Slot, Int, SealedValue)] = []
            for row in batch {
                guard let slot = Self.slot(row), let old = Self.current(row, from: 4) else { continue }
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
                updates.append([
                    "service": .string(slot.service), "key_name": .string(slot.keyName),
                    "scope": .string(slot.scope.name),
                    "scope_id": .string(slot.scope.id), "version": .number(Double(old.version)),
                    "wrapped_key": .string(Self.b64(sealed.wrappedKey)),
                    "wrap_nonce": .string(Self.b64(sealed.wrapNonce)),
                ])
                fresh.append((slot, old.version, sealed))
            }
            do {
                try await store.query(
                    """
                    UPDATE secrets s SET wrapped_key = v.wrapped_key, wrap_nonce = v.wrap_nonce, kek_version = $2::integer
                    FROM jsonb_to_recordset($1::jsonb) AS v(service text, key_name text, scope text, scope_id text, version integer,
                                                            wrapped_key text, wrap_nonce text)
                    WHERE s.service = v.service AND s.key_name = v.key_name AND s.scope = v.scope AND s.scope_id = v.scope_id
                      AND s.version = v.version
                    """, [SQL.json(updates), String(to)])
            } catch { throw Refusal.storeUnavailable(error) }
            // Current versions switch to the re-wrapped key; the ciphertext is the same.
            for (slot, version, sealed) in fresh where current[slot]?.version == version {
                current[slot]?.sealed = sealed
            }
            rewrapped += fresh.count
        }
        let record = nextAudit(
            actor: actor, action: "rotate", service: "*", keyName: "*", version: to,
            result: "ok: \(rewrapped) data keys re-wrapped")
        do { try await commit([], audit: record, event: nil) } catch { throw Refusal.storeUnavailable(error) }
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
        try? await commit([], audit: record, event: nil)
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

    /// Writes `statements`, the audit record and the event in one transaction; publishes the
    /// event after the commit. A failed write reloads the audit head from the store.
    func commit(_ statements: [(String, [String?])], audit record: AuditRecord, event: EventLog.Draft?)
        async throws(AgentError)
    {
        let audit = (
            """
            INSERT INTO secret_audit (seq, at, actor, action, service, key_name, node, scope, version, result, previous_hash, hash)
            VALUES ($1::bigint, $2, $3, $4, $5, $6, $7, $8, $9::integer, $10, $11, $12)
            """,
            [
                String(record.seq), record.at, record.actor, record.action, record.service, record.keyName, record.node,
                record.scope,
                record.version.map(String.init), record.result, record.previousHash, record.hash,
            ]
        )
        do {
            let hub = self.hub
            try await store.commit(
                statements + [audit], events: event.map { [$0] } ?? [], published: { hub.publish($0) })
        } catch {
            if let reloaded = try? await Self.lastAudit(store: store) { lastAudit = reloaded }
            throw error
        }
    }

    /// The newest audit record in the store; nil for an empty log.
    static func lastAudit(store: Store) async throws(AgentError) -> AuditRecord? {
        try await store.query(
            "SELECT seq, at, actor, action, service, key_name, node, scope, version, result, previous_hash, hash FROM secret_audit ORDER BY seq DESC LIMIT 1"
        )
        .rows.first.flatMap(audit)
    }

    static func audit(_ row: [String?]) -> AuditRecord? {
        guard row.count == 12, let seq = row[0].flatMap({ Int64($0) }), let at = row[1], let actor = row[2],
            let action = row[3],
            let service = row[4], let keyName = row[5], let result = row[9], let previous = row[10], let hash = row[11]
        else { return nil }
        return AuditRecord(
            seq: seq, at: at, actor: actor, action: action, service: service, keyName: keyName, node: row[6],
            scope: row[7],
            version: row[8].flatMap { Int($0) }, result: result, previousHash: previous, hash: hash)
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

    static func slot(_ row: [String?]) -> Slot? {
        guard let service = row[0], let keyName = row[1], let scopeName = row[2], let scopeID = row[3],
            let scope = try? SecretScope(name: scopeName, id: scopeID)
        else { return nil }
        return Slot(service: service, keyName: keyName, scope: scope)
    }

    /// Version and sealed value from columns `start`… (version, ciphertext, nonce, wrapped key, wrap nonce, kek version, time).
    static func current(_ row: [String?], from start: Int) -> Current? {
        guard row.count >= start + 7, let version = row[start].flatMap({ Int($0) }),
            let ciphertext = unb64(row[start + 1]),
            let nonce = unb64(row[start + 2]), let wrapped = unb64(row[start + 3]),
            let wrapNonce = unb64(row[start + 4]),
            let kek = row[start + 5].flatMap({ Int($0) }), let at = row[start + 6]
        else { return nil }
        return Current(
            version: version,
            sealed: SealedValue(
                ciphertext: ciphertext, nonce: nonce, wrappedKey: wrapped, wrapNonce: wrapNonce,
                kekVersion: kek), updatedAt: at)
    }

    static func b64(_ bytes: [UInt8]) -> String { Data(bytes).base64EncodedString() }
    static func unb64(_ text: String?) -> [UInt8]? {
        text.flatMap { Data(base64Encoded: $0) }.map { [UInt8]($0) }
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
