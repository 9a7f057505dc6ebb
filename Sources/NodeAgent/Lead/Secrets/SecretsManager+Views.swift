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
        let slot = Slot(service: service, keyName: keyName, scope: scope)
        let history: [StoredVersion]
        do { history = try await store.secretHistory(slot) } catch { throw Refusal.storeUnavailable(error) }
        guard !history.isEmpty else { throw Refusal.notFound("no secret \(service)/\(keyName) at \(scope)") }
        let head = current[slot]?.version
        return SecretVersions(
            service: service, keyName: keyName, scope: scope.name, scopeID: scope.id,
            versions: history.map { stored in
                SecretVersions.Version(
                    version: stored.version, createdAt: stored.createdAt, createdBy: stored.createdBy,
                    current: stored.version == head, restoredFrom: stored.restoredFrom)
            })
    }

    /// The audit log, oldest first; with `verify`, whether its chain holds.
    func auditLog(verify: Bool, limit: Int) async throws(Refusal) -> AuditLog {
        let stored: (records: [AuditRecord], unreadable: Int)
        do { stored = try await store.auditRecords() } catch { throw Refusal.storeUnavailable(error) }
        let records = stored.records
        var log = AuditLog(entries: Array(records.suffix(limit)))
        if verify {
            let problem =
                stored.unreadable == 0 ? AuditChain.verify(records, head: lastAudit?.seq) : .changed(seq: 0)
            log.verified = problem == nil
            log.problem = problem?.description
        }
        return log
    }
}
