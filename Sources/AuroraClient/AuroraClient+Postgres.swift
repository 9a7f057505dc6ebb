import AsyncHTTPClient
import AuroraAPI
import Foundation
import NIOHTTP1

// The PostgreSQL views (operator) and the load-balancer checks (no token).

/// How far behind a replica may be for the load-balancer checks (`?lag=` of
/// ``AuroraClient/postgresReplica(lag:)`` and ``AuroraClient/postgresReadOnly(lag:)``): a time
/// or a size. A lag the replica does not know in that unit is over the limit.
public enum PostgresLagLimit: Sendable, Equatable {
    /// Seconds behind the primary.
    case seconds(Double)
    /// Bytes of WAL behind the primary.
    case bytes(UInt64)

    /// The value of `?lag=`: `5.0s`, `0.5s` or a number of bytes (`16777216`).
    public var queryValue: String {
        switch self {
        case .seconds(let seconds): "\(seconds)s"
        case .bytes(let bytes): String(bytes)
        }
    }
}

extension AuroraClient {
    /// `GET /api/postgres/health`: the latest sample of the PostgreSQL server this agent watches
    /// (404 `not_configured` without `postgres.monitor`, 503 `starting` before the first sample).
    public func postgresHealth() async throws(AuroraClientError) -> ReplicaHealth {
        try await decode(call(API.postgresHealth))
    }

    /// `GET /api/postgres/replicas`: every node's server beside the primary's view of it (from
    /// the lead; another agent forwards the call).
    public func postgresReplicas() async throws(AuroraClientError) -> ReplicaOverview {
        try await decode(call(API.postgresReplicas))
    }

    /// `GET /postgres/primary`: the load-balancer check that this agent's server is the primary.
    /// The agent answers 200 or 503, both with the reason: the check's ``PostgresCheck/ok`` is
    /// true exactly when it answered 200.
    public func postgresPrimary() async throws(AuroraClientError) -> PostgresCheck {
        try await postgresCheck(call(API.postgresPrimary))
    }

    /// `GET /postgres/replica`: the load-balancer check that this agent's server is a replica
    /// that serves reads, with its lag within `lag` when one is given. ``PostgresCheck/ok`` is
    /// true exactly when the agent answered 200 (else 503).
    public func postgresReplica(lag: PostgresLagLimit? = nil) async throws(AuroraClientError) -> PostgresCheck {
        try await postgresCheck(call(API.postgresReplica, query: [("lag", lag?.queryValue)]))
    }

    /// `GET /postgres/read-only`: the load-balancer check that reads may go to this agent's
    /// server (a primary, or a replica with its lag within `lag` when one is given).
    /// ``PostgresCheck/ok`` is true exactly when the agent answered 200 (else 503).
    public func postgresReadOnly(lag: PostgresLagLimit? = nil) async throws(AuroraClientError) -> PostgresCheck {
        try await postgresCheck(call(API.postgresReadOnly, query: [("lag", lag?.queryValue)]))
    }

    /// A load-balancer check's answer: 200 with `ok` true or 503 with `ok` false; any other
    /// status (a 400 for a bad `?lag=`), or a body that disagrees with its status, is a failure.
    func postgresCheck(_ call: Call) async throws(AuroraClientError) -> PostgresCheck {
        let response = try await send(call)
        let body = try await collect(response, call, upTo: Self.maxAnswerBytes)
        let status = Int(response.status.code)
        if status == 200 || status == 503, let check = try? APICoding.decoder().decode(PostgresCheck.self, from: body),
            check.ok == (status == 200)
        {
            return check
        }
        throw await failure(response, call, body: body)
    }
}
