import AuroraAPI
import Foundation
import Secrets

@testable import NodeAgent

extension MemoryStore: SecretStore {
    /// One stored secret version.
    struct SecretRow {
        var stored: NewSecretVersion
        var createdAt: String
    }

    /// The secret tables, held in ``Tables`` under the store's one lock.
    struct SecretTables {
        var versions: [SecretRow] = []
        var heads: [SecretsManager.Slot: (version: Int, deleted: Bool, updatedAt: String)] = [:]
        var audit: [AuditRecord] = []
    }

    func secretHeads() async throws(AgentError) -> [(SecretsManager.Slot, SecretsManager.Current)] {
        try lockedSecrets { secrets, _ in
            secrets.heads.compactMap { slot, head in
                guard !head.deleted,
                    let row = secrets.versions.first(where: {
                        $0.stored.slot == slot && $0.stored.version == head.version
                    })
                else { return nil }
                return (
                    slot,
                    SecretsManager.Current(version: head.version, sealed: row.stored.sealed, updatedAt: head.updatedAt)
                )
            }
        }
    }

    func secretVersion(_ slot: SecretsManager.Slot, _ version: Int) async throws(AgentError) -> SecretsManager.Current?
    {
        try lockedSecrets { secrets, _ in
            secrets.versions.first { $0.stored.slot == slot && $0.stored.version == version }.map {
                SecretsManager.Current(version: version, sealed: $0.stored.sealed, updatedAt: $0.createdAt)
            }
        }
    }

    func latestSecretVersion(_ slot: SecretsManager.Slot) async throws(AgentError) -> Int {
        try lockedSecrets { secrets, _ in
            secrets.versions.filter { $0.stored.slot == slot }.map(\.stored.version).max() ?? 0
        }
    }

    func secretHistory(_ slot: SecretsManager.Slot) async throws(AgentError) -> [StoredVersion] {
        try lockedSecrets { secrets, _ in
            secrets.versions.filter { $0.stored.slot == slot }.sorted { $0.stored.version < $1.stored.version }.map {
                StoredVersion(
                    version: $0.stored.version, createdAt: $0.createdAt, createdBy: $0.stored.createdBy,
                    restoredFrom: $0.stored.restoredFrom)
            }
        }
    }

    func saveSecret(
        _ version: NewSecretVersion, audit: AuditRecord, event: EventLog.Draft, published: @escaping Published
    ) async throws(AgentError) {
        try lockedSecrets { (secrets, tables) throws(AgentError) in
            guard
                !secrets.versions.contains(where: {
                    $0.stored.slot == version.slot && $0.stored.version == version.version
                })
            else { throw AgentError(.store, "duplicate key value violates unique constraint \"secrets_pkey\"") }
            try Self.checkAudit(audit, after: secrets.audit)
            let now = ISOTime.string(self.now)
            secrets.versions.append(SecretRow(stored: version, createdAt: now))
            secrets.heads[version.slot] = (version.version, false, now)
            secrets.audit.append(audit)
            published(Self.record([event], in: &tables, at: self.now))
        }
    }

    func deleteSecret(
        _ slot: SecretsManager.Slot, audit: AuditRecord, event: EventLog.Draft, published: @escaping Published
    ) async throws(AgentError) {
        try lockedSecrets { (secrets, tables) throws(AgentError) in
            try Self.checkAudit(audit, after: secrets.audit)
            if let head = secrets.heads[slot] { secrets.heads[slot] = (head.version, true, ISOTime.string(self.now)) }
            secrets.audit.append(audit)
            published(Self.record([event], in: &tables, at: self.now))
        }
    }

    func highestKEKVersion() async throws(AgentError) -> Int {
        try lockedSecrets { secrets, _ in secrets.versions.map(\.stored.sealed.kekVersion).max() ?? 1 }
    }

    func versionsSealed(below kekVersion: Int) async throws(AgentError) -> [(
        SecretsManager.Slot, SecretsManager.Current
    )] {
        try lockedSecrets { secrets, _ in
            secrets.versions.filter { $0.stored.sealed.kekVersion < kekVersion }.map {
                (
                    $0.stored.slot,
                    SecretsManager.Current(
                        version: $0.stored.version, sealed: $0.stored.sealed, updatedAt: $0.createdAt)
                )
            }
        }
    }

    func rewrap(_ versions: [(SecretsManager.Slot, Int, SealedValue)], kekVersion: Int) async throws(AgentError) {
        try lockedSecrets { secrets, _ in
            for (slot, version, sealed) in versions {
                guard
                    let index = secrets.versions.firstIndex(where: {
                        $0.stored.slot == slot && $0.stored.version == version
                    })
                else { continue }
                secrets.versions[index].stored.sealed = sealed
            }
        }
    }

    func appendAudit(_ records: [AuditRecord]) async throws(AgentError) {
        try lockedSecrets { (secrets, _) throws(AgentError) in
            var chain = secrets.audit
            for record in records {
                try Self.checkAudit(record, after: chain)
                chain.append(record)
            }
            secrets.audit = chain
        }
    }

    func auditRecords() async throws(AgentError) -> (records: [AuditRecord], unreadable: Int) {
        try lockedSecrets { secrets, _ in (secrets.audit, 0) }
    }

    func lastAuditRecord() async throws(AgentError) -> AuditRecord? {
        try lockedSecrets { secrets, _ in secrets.audit.last }
    }

    /// `seq` is the audit table's primary key: a record may not take a taken number.
    static func checkAudit(_ record: AuditRecord, after chain: [AuditRecord]) throws(AgentError) {
        if chain.contains(where: { $0.seq == record.seq }) {
            throw AgentError(.store, "duplicate key value violates unique constraint \"secret_audit_pkey\"")
        }
    }
}
