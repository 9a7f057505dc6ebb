import CLibPQ
import Foundation

/// Rows of a query, in text form.
public struct QueryResult: Sendable {
    /// Column names, in the order of every row; empty for a statement that returns no rows.
    public var columns: [String]
    /// Every value in PostgreSQL's text form (`t`/`f` for booleans); nil is SQL NULL.
    public var rows: [[String?]]

    /// The first column of the first row.
    public var scalar: String? { rows.first?.first ?? nil }
}

/// One libpq connection. Owns its `PGconn` and closes it in `deinit`.
///
/// Every call blocks; ``Store`` makes all calls from its own single thread, never from Swift's
/// cooperative pool.
final class PostgresConnection: @unchecked Sendable {  // owns a PGconn; used by one thread at a time (Store's)
    private let connection: OpaquePointer
    /// Names of the statements prepared on this connection (``execute(_:_:prepared:)``).
    /// A name is added once `PQprepare` succeeded; a new connection starts empty and prepares again.
    private var prepared = Set<String>()

    /// Connects with a libpq URL or keyword string; PG* environment variables apply as in psql.
    /// The connection string is never part of an error (it may hold a password).
    init(conninfo: String, connectTimeoutSeconds: Int = 5) throws(AgentError) {
        let keywords = ["connect_timeout", "application_name", "dbname"]
        let values = [String(connectTimeoutSeconds), "nodeagent", conninfo]
        let connection: OpaquePointer? = withCStrings(keywords) { keywordPointers in
            withCStrings(values) { valuePointers in
                PQconnectdbParams(keywordPointers, valuePointers, 1)
            }
        }
        guard let connection else { throw AgentError(.store, "libpq could not allocate a connection") }
        guard PQstatus(connection) == CONNECTION_OK else {
            let message = Self.message(connection)
            PQfinish(connection)
            throw AgentError(.store, "cannot connect to PostgreSQL: \(message)")
        }
        self.connection = connection
    }

    deinit {
        PQfinish(connection)
    }

    /// Whether the connection is still usable.
    var isConnected: Bool { PQstatus(connection) == CONNECTION_OK }

    /// Runs one statement with text parameters (`$1`, `$2`, ...). Without parameters the
    /// text may hold several statements (a migration); the last one's rows are returned.
    func execute(_ sql: String, _ parameters: [String?] = []) throws(AgentError) -> QueryResult {
        let result: OpaquePointer? =
            parameters.isEmpty
            ? PQexec(connection, sql)
            : withOptionalCStrings(parameters) { pointers in
                PQexecParams(connection, sql, Int32(parameters.count), nil, pointers, nil, nil, 0)
            }
        return try read(result)
    }

    /// Runs a hot statement as a prepared statement named `name`: parsed and planned once per
    /// connection, then only executed.
    func execute(_ sql: String, _ parameters: [String?], prepared name: String) throws(AgentError) -> QueryResult {
        if !prepared.contains(name) {
            let preparation = PQprepare(connection, name, sql, Int32(parameters.count), nil)
            _ = try read(preparation)
            prepared.insert(name)
        }
        let result: OpaquePointer? = withOptionalCStrings(parameters) { pointers in
            PQexecPrepared(connection, name, Int32(parameters.count), pointers, nil, nil, 0)
        }
        return try read(result)
    }

    /// Copies a result's rows out and frees it. A failed statement throws ``AgentError`` with code
    /// `store` and the server's message (which can quote values sent, so callers log it, not the API).
    private func read(_ result: OpaquePointer?) throws(AgentError) -> QueryResult {
        guard let result else { throw AgentError(.store, "query failed: \(Self.message(connection))") }
        defer { PQclear(result) }
        switch PQresultStatus(result) {
        case PGRES_COMMAND_OK, PGRES_EMPTY_QUERY:
            return QueryResult(columns: [], rows: [])
        case PGRES_TUPLES_OK:
            let rowCount = PQntuples(result), columnCount = PQnfields(result)
            let columns = (0..<columnCount).map { String(cString: PQfname(result, $0)) }
            var rows: [[String?]] = []
            rows.reserveCapacity(Int(rowCount))
            for row in 0..<rowCount {
                rows.append(
                    (0..<columnCount).map { column in
                        PQgetisnull(result, row, column) == 1 ? nil : String(cString: PQgetvalue(result, row, column))
                    })
            }
            return QueryResult(columns: columns, rows: rows)
        default:
            let message = PQresultErrorMessage(result).map { String(cString: $0) } ?? "unknown error"
            throw AgentError(.store, "query failed: \(message.trimmingCharacters(in: .whitespacesAndNewlines))")
        }
    }

    /// The SCRAM-SHA-256 verifier of `password` for role `user` (`PQencryptPasswordConn`, computed
    /// here), for `ALTER ROLE ... PASSWORD`: the password itself never reaches the server, its log
    /// or an error.
    func encryptPassword(_ password: String, user: String) throws(AgentError) -> String {
        guard let verifier = PQencryptPasswordConn(connection, password, user, "scram-sha-256") else {
            throw AgentError(.store, "cannot hash a password: \(Self.message(connection))")
        }
        defer { PQfreemem(verifier) }
        return String(cString: verifier)
    }

    /// The server's version number, e.g. 150018.
    var serverVersion: Int { Int(PQserverVersion(connection)) }

    /// The first line of libpq's last error on `connection`, trimmed.
    private static func message(_ connection: OpaquePointer) -> String {
        let text = PQerrorMessage(connection).map { String(cString: $0) } ?? "unknown error"
        return text.split(separator: "\n").first.map { String($0).trimmingCharacters(in: .whitespaces) }
            ?? "unknown error"
    }
}

/// Calls `body` with a NULL-terminated array of C strings that live for the call.
private func withCStrings<R>(_ strings: [String], _ body: ([UnsafePointer<CChar>?]) -> R) -> R {
    let pointers = strings.map { strdup($0) }
    defer { pointers.forEach { free($0) } }
    return body(pointers.map { UnsafePointer($0) } + [nil])
}

/// Like `withCStrings`, with NULL for nil (SQL NULL parameters).
private func withOptionalCStrings<R>(_ strings: [String?], _ body: ([UnsafePointer<CChar>?]) -> R) -> R {
    let pointers = strings.map { $0.map { strdup($0) } ?? nil }
    defer { pointers.forEach { free($0) } }
    return body(pointers.map { UnsafePointer($0) })
}
