import AuroraAPI
import Foundation
import Secrets

extension Store: SecretStore {
    func secretHeads() async throws(AgentError) -> [(SecretsManager.Slot, SecretsManager.Current)] {
        try await query(
            """
            SELECT s.service, s.key_name, s.scope, s.scope_id, s.version, s.ciphertext, s.nonce, s.wrapped_key, s.wrap_nonce, s.kek_version,
                   \(SQL.iso("h.updated_at"))
            FROM secret_heads h JOIN secrets s USING (service, key_name, scope, scope_id, version)
            WHERE NOT h.deleted
            """
        ).rows.compactMap(SecretRows.version)
    }

    func secretVersion(_ slot: SecretsManager.Slot, _ version: Int) async throws(AgentError) -> SecretsManager.Current?
    {
        try await query(
            "SELECT \(SecretRows.columns) FROM secrets WHERE service = $1 AND key_name = $2 AND scope = $3 AND scope_id = $4 AND version = $5",
            SecretRows.key(slot) + [String(version)]
        ).rows.first.flatMap(SecretRows.version)?.1
    }

    func latestSecretVersion(_ slot: SecretsManager.Slot) async throws(AgentError) -> Int {
        Int(
            try await query(
                "SELECT coalesce(max(version), 0) FROM secrets WHERE service = $1 AND key_name = $2 AND scope = $3 AND scope_id = $4",
                SecretRows.key(slot)
            ).scalar ?? "0") ?? 0
    }

    func secretHistory(_ slot: SecretsManager.Slot) async throws(AgentError) -> [StoredVersion] {
        try await query(
            """
            SELECT version, \(SQL.iso("created_at")), created_by, restored_from FROM secrets
            WHERE service = $1 AND key_name = $2 AND scope = $3 AND scope_id = $4 ORDER BY version
            """, SecretRows.key(slot)
        ).rows.compactMap { row in
            guard let version = row[0].flatMap({ Int($0) }), let at = row[1] else { return nil }
            return StoredVersion(
                version: version, createdAt: at, createdBy: row[2] ?? "", restoredFrom: row[3].flatMap { Int($0) })
        }
    }

    func saveSecret(
        _ version: NewSecretVersion, audit: AuditRecord, event: EventLog.Draft, published: @escaping Published
    ) async throws(AgentError) {
        let slot = version.slot, sealed = version.sealed
        try await commit(
            [
                (
                    """
                    INSERT INTO secrets (service, key_name, scope, scope_id, version, ciphertext, nonce, wrapped_key, wrap_nonce, kek_version, created_by, restored_from)
                    VALUES ($1, $2, $3, $4, $5::integer, $6, $7, $8, $9, $10::integer, $11, $12::integer)
                    """,
                    SecretRows.key(slot) + [
                        String(version.version), SecretRows.b64(sealed.ciphertext), SecretRows.b64(sealed.nonce),
                        SecretRows.b64(sealed.wrappedKey), SecretRows.b64(sealed.wrapNonce), String(sealed.kekVersion),
                        version.createdBy, version.restoredFrom.map(String.init),
                    ]
                ),
                (
                    """
                    INSERT INTO secret_heads (service, key_name, scope, scope_id, version) VALUES ($1, $2, $3, $4, $5::integer)
                    ON CONFLICT (service, key_name, scope, scope_id) DO UPDATE SET version = EXCLUDED.version, deleted = false, updated_at = now()
                    """, SecretRows.key(slot) + [String(version.version)]
                ),
                SecretRows.insert(audit),
            ], events: [event], published: published)
    }

    func deleteSecret(
        _ slot: SecretsManager.Slot, audit: AuditRecord, event: EventLog.Draft, published: @escaping Published
    ) async throws(AgentError) {
        try await commit(
            [
                (
                    "UPDATE secret_heads SET deleted = true, updated_at = now() WHERE service = $1 AND key_name = $2 AND scope = $3 AND scope_id = $4",
                    SecretRows.key(slot)
                ),
                SecretRows.insert(audit),
            ], events: [event], published: published)
    }

    func highestKEKVersion() async throws(AgentError) -> Int {
        Int(try await query("SELECT coalesce(max(kek_version), 1) FROM secrets").scalar ?? "1") ?? 1
    }

    func versionsSealed(below kekVersion: Int) async throws(AgentError) -> [(
        SecretsManager.Slot, SecretsManager.Current
    )] {
        try await query("SELECT \(SecretRows.columns) FROM secrets WHERE kek_version < $1", [String(kekVersion)]).rows
            .compactMap(SecretRows.version)
    }

    func rewrap(_ versions: [(SecretsManager.Slot, Int, SealedValue)], kekVersion: Int) async throws(AgentError) {
        let updates: [[String: JSONValue]] = versions.map { slot, version, sealed in
            [
                "service": .string(slot.service), "key_name": .string(slot.keyName), "scope": .string(slot.scope.name),
                "scope_id": .string(slot.scope.id), "version": .number(Double(version)),
                "wrapped_key": .string(SecretRows.b64(sealed.wrappedKey)),
                "wrap_nonce": .string(SecretRows.b64(sealed.wrapNonce)),
            ]
        }
        try await query(
            """
            UPDATE secrets s SET wrapped_key = v.wrapped_key, wrap_nonce = v.wrap_nonce, kek_version = $2::integer
            FROM jsonb_to_recordset($1::jsonb) AS v(service text, key_name text, scope text, scope_id text, version integer,
                                                    wrapped_key text, wrap_nonce text)
            WHERE s.service = v.service AND s.key_name = v.key_name AND s.scope = v.scope AND s.scope_id = v.scope_id
              AND s.version = v.version
            """, [SQL.json(updates), String(kekVersion)])
    }

    /// Nonisolated: the batch's JSON is built on the caller's task, not on the store's actor.
    nonisolated func appendAudit(_ records: [AuditRecord]) async throws(AgentError) {
        guard records.count > 1 else {
            if let record = records.first {
                let (sql, parameters) = SecretRows.insert(record)
                try await query(sql, parameters)
            }
            return
        }
        // One statement for a batch (the read audit's): the records as one JSON array, written
        // by hand: JSONEncoder over thousands of small records per second showed up as the
        // lead's biggest cost.
        var json = "["
        for (index, record) in records.enumerated() {
            if index > 0 { json += "," }
            json +=
                "{\"seq\":\(record.seq),\"at\":\(SecretsManager.quoted(record.at)),\"actor\":\(SecretsManager.quoted(record.actor)),"
            json +=
                "\"action\":\(SecretsManager.quoted(record.action)),\"service\":\(SecretsManager.quoted(record.service)),\"key_name\":\(SecretsManager.quoted(record.keyName)),"
            json +=
                "\"node\":\(record.node.map(SecretsManager.quoted) ?? "null"),\"scope\":\(record.scope.map(SecretsManager.quoted) ?? "null"),"
            json +=
                "\"version\":\(record.version.map(String.init) ?? "null"),\"result\":\(SecretsManager.quoted(record.result)),"
            json +=
                "\"previous_hash\":\(SecretsManager.quoted(record.previousHash)),\"hash\":\(SecretsManager.quoted(record.hash))}"
        }
        json += "]"
        try await query(
            """
            INSERT INTO secret_audit (seq, at, actor, action, service, key_name, node, scope, version, result, previous_hash, hash)
            SELECT seq, at, actor, action, service, key_name, node, scope, version, result, previous_hash, hash
            FROM jsonb_to_recordset($1::jsonb) AS r(seq bigint, at text, actor text, action text, service text, key_name text, node text,
                                                    scope text, version integer, result text, previous_hash text, hash text)
            """, [json])
    }

    func auditRecords() async throws(AgentError) -> (records: [AuditRecord], unreadable: Int) {
        let rows = try await query("SELECT \(SecretRows.auditColumns) FROM secret_audit ORDER BY seq").rows
        let records = rows.compactMap(SecretRows.audit)
        return (records, rows.count - records.count)
    }

    func lastAuditRecord() async throws(AgentError) -> AuditRecord? {
        try await query("SELECT \(SecretRows.auditColumns) FROM secret_audit ORDER BY seq DESC LIMIT 1").rows.first
            .flatMap(SecretRows.audit)
    }
}

/// The secrets tables' columns and rows.
enum SecretRows {
    /// A version's columns, as ``version(_:)`` reads them.
    static let columns =
        "service, key_name, scope, scope_id, version, ciphertext, nonce, wrapped_key, wrap_nonce, kek_version, \(SQL.iso("created_at"))"

    static let auditColumns =
        "seq, at, actor, action, service, key_name, node, scope, version, result, previous_hash, hash"

    /// A slot's four key columns as parameters `$1`…`$4`.
    static func key(_ slot: SecretsManager.Slot) -> [String?] {
        [slot.service, slot.keyName, slot.scope.name, slot.scope.id]
    }

    /// A row of ``columns`` (or the heads' query); nil when it does not read.
    static func version(_ row: [String?]) -> (SecretsManager.Slot, SecretsManager.Current)? {
        guard row.count >= 11, let service = row[0], let keyName = row[1], let scopeName = row[2],
            let scopeID = row[3], let scope = try? SecretScope(name: scopeName, id: scopeID),
            let version = row[4].flatMap({ Int($0) }), let ciphertext = unb64(row[5]), let nonce = unb64(row[6]),
            let wrapped = unb64(row[7]), let wrapNonce = unb64(row[8]), let kek = row[9].flatMap({ Int($0) }),
            let at = row[10]
        else { return nil }
        return (
            SecretsManager.Slot(service: service, keyName: keyName, scope: scope),
            SecretsManager.Current(
                version: version,
                sealed: SealedValue(
                    ciphertext: ciphertext, nonce: nonce, wrappedKey: wrapped, wrapNonce: wrapNonce, kekVersion: kek),
                updatedAt: at)
        )
    }

    /// One audit record's insert.
    static func insert(_ record: AuditRecord) -> (String, [String?]) {
        (
            """
            INSERT INTO secret_audit (seq, at, actor, action, service, key_name, node, scope, version, result, previous_hash, hash)
            VALUES ($1::bigint, $2, $3, $4, $5, $6, $7, $8, $9::integer, $10, $11, $12)
            """,
            [
                String(record.seq), record.at, record.actor, record.action, record.service, record.keyName, record.node,
                record.scope, record.version.map(String.init), record.result, record.previousHash, record.hash,
            ]
        )
    }

    /// A row of ``auditColumns``; nil when it does not read.
    static func audit(_ row: [String?]) -> AuditRecord? {
        guard row.count == 12, let seq = row[0].flatMap({ Int64($0) }), let at = row[1], let actor = row[2],
            let action = row[3], let service = row[4], let keyName = row[5], let result = row[9],
            let previous = row[10], let hash = row[11]
        else { return nil }
        return AuditRecord(
            seq: seq, at: at, actor: actor, action: action, service: service, keyName: keyName, node: row[6],
            scope: row[7], version: row[8].flatMap { Int($0) }, result: result, previousHash: previous, hash: hash)
    }

    static func b64(_ bytes: [UInt8]) -> String { Data(bytes).base64EncodedString() }
    static func unb64(_ text: String?) -> [UInt8]? {
        text.flatMap { Data(base64Encoded: $0) }.map { [UInt8]($0) }
    }
}
