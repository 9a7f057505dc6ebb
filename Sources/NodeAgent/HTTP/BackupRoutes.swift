import AuroraAPI
import Foundation
import Hummingbird
import NIOCore
import ServiceLifecycle

extension HTTPServer {
    /// Backup routes (docs/API.md, section 4.13): operator calls on the lead, which owns the
    /// mesh database and DATA/backups. Other agents answer `not_lead`.
    ///
    /// Every route needs the operator token; failures map through ``backupError(_:)``.
    ///
    /// - `GET /api/backups`: the archive's backups, newest first;
    /// - `POST /api/backups`: takes one while the request lasts; 201 with it, or, with
    ///   `Accept: application/x-ndjson`, 200 and progress lines ending in one line with the backup or
    ///   the error (409 `backup_running` is still a status, checked before the 200);
    /// - `POST /api/backups/{file}/verify`: the checksum, and that pg_restore reads the backup;
    /// - `POST /api/backups/{file}/restore`: into the new database the body's `into` names (201),
    ///   never over an existing one (409 `database_exists`).
    static func addBackupRoutes(to router: Router<AgentRequestContext>, agent: AgentParts, lead: LeadParts) {
        let maxBody = agent.maxBody, token = agent.token
        let backups = lead.backups

        router.on(API.listBackups) { request, _ -> Response in
            try authorize(request, token: token)
            let list: BackupList
            do throws(AgentError) { list = try await backups.list() } catch { throw backupError(error) }
            return try json(list, status: .ok)
        }

        // A backup runs with the request; graceful shutdown or a client that goes away stops
        // pg_dump and leaves nothing behind.
        router.on(API.createBackup) { request, _ -> Response in
            try authorize(request, token: token)
            guard request.headers[.accept]?.contains(MediaTypes.ndjson) == true else {
                let created = try await cancelWhenGracefulShutdown { () async throws -> BackupCreated in
                    do throws(AgentError) { return try await backups.create() } catch { throw backupError(error) }
                }
                return try json(created, status: .created)
            }
            // Streamed: a refusal is still a status; after the 200, progress lines and then
            // one line with the backup or the error.
            do throws(AgentError) { try await backups.checkIdle() } catch { throw backupError(error) }
            let (lines, sink) = AsyncStream.makeStream(of: BackupStreamLine.self, bufferingPolicy: .bufferingNewest(8))
            let body = ResponseBody { writer in
                async let outcome = streamedBackup(backups, sink: sink)
                for await line in lines { try await writer.write(ndjson(line)) }
                try await writer.write(ndjson(await outcome))
                try await writer.finish(nil)
            }
            return Response(
                status: .ok, headers: [.contentType: MediaTypes.ndjson, .cacheControl: "no-cache"], body: body)
        }

        router.on(API.verifyBackup) { request, context -> Response in
            try authorize(request, token: token)
            let file = try backupFile(context)
            let verification: BackupVerification
            do throws(AgentError) { verification = try await backups.verify(file) } catch { throw backupError(error) }
            return try json(verification, status: .ok)
        }

        router.on(API.restoreBackup) { request, context -> Response in
            try authorize(request, token: token)
            let file = try backupFile(context)
            let restore = try await decode(
                BackupRestoreRequest.self, request, maxBody: maxBody, allowed: BackupRestoreRequest.fields)
            let restored: BackupRestored
            do throws(AgentError) { restored = try await backups.restore(file, into: restore.into) } catch {
                throw backupError(error)
            }
            return try json(restored, status: .created)
        }
    }

    /// On a compute or edge node every backup call is the lead's.
    /// All four answer 421 `not_lead` before any token is checked.
    static func addBackupRoutes(to router: Router<AgentRequestContext>, agent: AgentParts, node: NodeParts) {
        leadOnly(router, API.listBackups, "backups", agent: agent)
        leadOnly(router, API.createBackup, "backups", agent: agent)
        leadOnly(router, API.verifyBackup, "backups", agent: agent)
        leadOnly(router, API.restoreBackup, "backups", agent: agent)
    }

    /// Runs the backup for a streamed answer: progress into `sink`, then the last line.
    ///
    /// The last line is the backup, or the error as ``backupError(_:)`` maps it; any other error (a
    /// graceful shutdown stopped pg_dump) is `backup_failed`. `sink` is finished either way.
    private static func streamedBackup(_ backups: BackupArchive, sink: AsyncStream<BackupStreamLine>.Continuation) async
        -> BackupStreamLine
    {
        defer { sink.finish() }
        do {
            let created = try await cancelWhenGracefulShutdown { () async throws -> BackupCreated in
                try await backups.create { progress in sink.yield(BackupStreamLine(progress: progress)) }
            }
            return BackupStreamLine(backup: created)
        } catch let error as AgentError {
            let answer = backupError(error)
            return BackupStreamLine(error: .init(code: answer.code, message: answer.message))
        } catch {
            return BackupStreamLine(
                error: .init(code: "backup_failed", message: "the backup was stopped: the agent is shutting down"))
        }
    }

    /// One NDJSON line: the JSON object and a newline.
    private static func ndjson(_ line: BackupStreamLine) throws -> ByteBuffer {
        var data = try APICoding.encoder().encode(line)
        data.append(UInt8(ascii: "\n"))
        return ByteBuffer(bytes: data)
    }

    /// The `{file}` of the path, percent-decoded; the archive checks that it is exactly a
    /// backup's name.
    private static func backupFile(_ context: AgentRequestContext) throws -> String {
        try context.parameters.decoded("file")
    }

    /// The HTTP face of a backup failure.
    ///
    /// Another backup running and an existing database are 409, a missing backup 404, a corrupt one
    /// 422 `backup_corrupt`, bad input 400, a store failure 503 `store_unavailable`; anything else
    /// 500 `backup_failed` with the error's message (never the store's password).
    static func backupError(_ error: AgentError) -> Refusal {
        switch error.code {
        case .backupRunning: Refusal(.conflict, code: "backup_running", message: error.message)
        case .backupNotFound: Refusal.notFound(error.message)
        case .backupCorrupt: Refusal(.unprocessable, code: "backup_corrupt", message: error.message)
        case .databaseExists: Refusal(.conflict, code: "database_exists", message: error.message)
        case .invalidInput: Refusal.badRequest(error.message)
        case .store: Refusal.storeUnavailable(error)
        default: Refusal(.internalFailure, code: "backup_failed", message: error.message)
        }
    }
}
