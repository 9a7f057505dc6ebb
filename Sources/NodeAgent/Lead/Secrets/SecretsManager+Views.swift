import AuroraAPI
import Foundation
import Logging
import Secrets
import Synchronization

/// What an operator reads about secrets: the list, a secret's versions and the audit log.
extension SecretsManager {
    // MARK: Views (operator)

    /// `GET /api/secrets`: every current secret's name, scope and version, never a value.
    func list() throws(Refusal) -> SecretList {
        try requireLoaded()
        let secrets = current.map { slot, found in
            SecretInfo(
                service: slot.service, keyName: slot.keyName, scope: slot.scope.name, scopeID: slot.scope.id,
                version: found.version,
                updatedAt: found.updatedAt)
        }
        return SecretList(
            secrets: secrets.sorted {
                ($0.service, $0.keyName, $0.scope, $0.scopeID) < ($1.service, $1.keyName, $1.scope, $1.scopeID)
            })
    }

    /// Every stored version of one slot, oldest first, marking the current one (none after a
    /// delete); 404 when the slot never had a version.
    func versions(service: String, keyName: String, scope: SecretScope) async throws(Refusal) -> SecretVersions {
        try requireLoaded()
        let rows: [[String?]]
        do {
            rows = try await store.query(
                """
                SELECT version, \(SQL.iso("created_at")), created_by, restored_from FROM secrets
                WHERE service = $1 AND key_name = $2 AND scope = $3 AND scope_id = $4 ORDER BY version
                """, [service, keyName, scope.name, scope.id]
            ).rows
        } catch { throw Refusal.storeUnavailable(error) }
        guard !rows.isEmpty else { throw Refusal.notFound("no secret \(service)/\(keyName) at \(scope)") }
        let head = current[Slot(service: service, keyName: keyName, scope: scope)]?.version
        return SecretVersions(
            service: service, keyName: keyName, scope: scope.name, scopeID: scope.id,
            versions: rows.compactMap { row in
                guard let version = row[0].flatMap({ Int($0) }), let at = row[1] else { return nil }
                return SecretVersions.Version(
                    version: version, createdAt: at, createdBy: row[2] ?? "", current: version == head,
                    restoredFrom: row[3].flatMap { Int($0) })
            })
    }

    /// The audit log, oldest first; with `verify`, whether its chain holds.
    func auditLog(verify: Bool, limit: Int) async throws(Refusal) -> AuditLog {
        let rows: [[String?]]
        do {
            rows = try await store.query(
                "SELECT seq, at, actor, action, service, key_name, node, scope, version, result, previous_hash, hash FROM secret_audit ORDER BY seq"
            ).rows
        } catch { throw Refusal.storeUnavailable(error) }
        let records = rows.compactMap(Self.audit)
        var log = AuditLog(entries: Array(records.suffix(limit)))
        if verify {
            let problem =
                records.count == rows.count ? AuditChain.verify(records, head: lastAudit?.seq) : .changed(seq: 0)
            log.verified = problem == nil
            log.problem = problem?.description
        }
        return log
    }
}
