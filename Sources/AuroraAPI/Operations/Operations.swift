// Node reports and their outbox, service checks, resource alerts, the Redis fan-out, the log
// ring and subsystem restarts (docs/API.md 4.15-4.18).

// MARK: - Node reports

/// A report a node makes to the lead: a job result, a connectivity report, or an event (a
/// check or alert change). Reports go through the node's durable outbox and are replayed in
/// order until the lead answers; the lead takes each `id` once.
public struct NodeReport: Codable, Sendable, Equatable {
    public enum Kind: String, Codable, Sendable {
        case jobResult = "job_result"
        case connectivity
        case event
    }

    /// A UUID made on the node; for `event` reports it becomes the mesh event's id.
    public var id: String
    public var kind: Kind
    /// When the node made the report (ISO 8601).
    public var at: String
    /// `job_result`: the job and its result.
    public var job: String?
    public var result: JobResult?
    /// `connectivity`: the node's latest probe results.
    public var connectivity: ConnectivityReport?
    /// `event`: what happened on the node.
    public var event: NodeEvent?

    public init(
        id: String, kind: Kind, at: String, job: String? = nil, result: JobResult? = nil,
        connectivity: ConnectivityReport? = nil, event: NodeEvent? = nil
    ) {
        self.id = id
        self.kind = kind
        self.at = at
        self.job = job
        self.result = result
        self.connectivity = connectivity
        self.event = event
    }
}

/// An event a node reports (`check.changed`, `check.recovery`, `alert.raised`, `alert.cleared`).
public struct NodeEvent: Codable, Sendable, Equatable {
    public var type: String
    public var data: [String: JSONValue]

    public init(type: String, data: [String: JSONValue]) {
        self.type = type
        self.data = data
    }

    /// The event types a node may report; the lead refuses others.
    public static let reportable: Set<String> = [
        EventType.checkChanged, EventType.checkRecovery, EventType.alertRaised, EventType.alertCleared,
    ]
}

/// `POST /api/nodes/{name}/reports` (signed): reports in the order they were made.
public struct ReportBatch: Codable, Sendable, Equatable {
    public var reports: [NodeReport]

    public init(reports: [NodeReport]) { self.reports = reports }

    public static let fields: Set<String> = ["reports"]
}

/// What the lead did with one report.
public struct ReportOutcome: Codable, Sendable, Equatable {
    public enum Status: String, Codable, Sendable {
        /// Taken now.
        case accepted
        /// Taken before (same id): nothing changed this time.
        case duplicate
        /// Refused for good (a stale job attempt, an event type a node may not report): the
        /// node drops it.
        case refused
    }

    public var id: String
    public var status: Status
    public var duplicate: Bool
    /// For `refused`: the error code and message.
    public var code: String?
    public var message: String?

    public init(id: String, status: Status, code: String? = nil, message: String? = nil) {
        self.id = id
        self.status = status
        self.duplicate = status == .duplicate
        self.code = code
        self.message = message
    }
}

/// The answer to a report batch: one outcome per report, in order. Fewer outcomes than
/// reports means the lead stopped at a passing failure (its store); the node sends the rest again.
public struct ReportAnswer: Codable, Sendable, Equatable {
    public var results: [ReportOutcome]

    public init(results: [ReportOutcome]) { self.results = results }
}

/// `GET /api/outbox` (operator, any agent): the local outbox.
public struct OutboxStatus: Codable, Sendable, Equatable {
    /// Reports not yet taken by the lead.
    public var pending: Int
    public var pendingBytes: Int
    /// Seconds since the oldest pending report was made.
    public var oldestAgeS: Double?
    /// Reports delivered (accepted, duplicate or refused) since the agent started.
    public var delivered: Int
    /// Whether the last attempt to deliver failed (the lead is away).
    public var failing: Bool
    /// The last delivery error, if the last attempt failed.
    public var lastError: String?
    /// What opening the file found: a torn tail cut off, damaged records skipped.
    public var tornTailRepaired: Bool
    public var corruptRegionsSkipped: Int
    public var path: String

    public init(
        pending: Int, pendingBytes: Int, oldestAgeS: Double?, delivered: Int, failing: Bool, lastError: String?,
        tornTailRepaired: Bool, corruptRegionsSkipped: Int, path: String
    ) {
        self.pending = pending
        self.pendingBytes = pendingBytes
        self.oldestAgeS = oldestAgeS
        self.delivered = delivered
        self.failing = failing
        self.lastError = lastError
        self.tornTailRepaired = tornTailRepaired
        self.corruptRegionsSkipped = corruptRegionsSkipped
        self.path = path
    }

    enum CodingKeys: String, CodingKey {
        case pending, delivered, failing, path
        case pendingBytes = "pending_bytes"
        case oldestAgeS = "oldest_age_s"
        case lastError = "last_error"
        case tornTailRepaired = "torn_tail_repaired"
        case corruptRegionsSkipped = "corrupt_regions_skipped"
    }
}

// MARK: - Service checks

/// One service check's state (`GET /api/checks`).
public struct ServiceCheckState: Codable, Sendable, Equatable {
    public var name: String
    /// `http`, `tcp` or `command`.
    public var kind: String
    /// The URL, HOST:PORT or program.
    public var target: String
    /// nil until the first result.
    public var status: CheckResult.Status?
    /// The last result's own outcome (before thresholds) and what it said.
    public var lastOutcome: CheckResult.Status?
    public var output: String
    public var consecutiveFailures: Int
    public var consecutiveSuccesses: Int
    public var checkedAt: String?
    /// How often the recovery action ran, and when last.
    public var recoveries: Int
    public var lastRecoveryAt: String?
    public var lastRecoveryExitCode: Int?

    public init(
        name: String, kind: String, target: String, status: CheckResult.Status?, lastOutcome: CheckResult.Status?,
        output: String,
        consecutiveFailures: Int, consecutiveSuccesses: Int, checkedAt: String?, recoveries: Int,
        lastRecoveryAt: String?,
        lastRecoveryExitCode: Int?
    ) {
        self.name = name
        self.kind = kind
        self.target = target
        self.status = status
        self.lastOutcome = lastOutcome
        self.output = output
        self.consecutiveFailures = consecutiveFailures
        self.consecutiveSuccesses = consecutiveSuccesses
        self.checkedAt = checkedAt
        self.recoveries = recoveries
        self.lastRecoveryAt = lastRecoveryAt
        self.lastRecoveryExitCode = lastRecoveryExitCode
    }

    enum CodingKeys: String, CodingKey {
        case name, kind, target, status, output, recoveries
        case lastOutcome = "last_outcome"
        case consecutiveFailures = "consecutive_failures"
        case consecutiveSuccesses = "consecutive_successes"
        case checkedAt = "checked_at"
        case lastRecoveryAt = "last_recovery_at"
        case lastRecoveryExitCode = "last_recovery_exit_code"
    }
}

/// `GET /api/checks`: every service check and the active resource alerts.
public struct CheckReport: Codable, Sendable, Equatable {
    public var checks: [ServiceCheckState]
    public var alerts: [ResourceAlert]

    public init(checks: [ServiceCheckState], alerts: [ResourceAlert]) {
        self.checks = checks
        self.alerts = alerts
    }
}

/// A raised resource alert.
public struct ResourceAlert: Codable, Sendable, Equatable {
    /// `cpu`, `memory` or `disk`.
    public var resource: String
    public var valuePct: Double
    public var thresholdPct: Double
    public var since: String

    public init(resource: String, valuePct: Double, thresholdPct: Double, since: String) {
        self.resource = resource
        self.valuePct = valuePct
        self.thresholdPct = thresholdPct
        self.since = since
    }

    enum CodingKeys: String, CodingKey {
        case resource, since
        case valuePct = "value_pct"
        case thresholdPct = "threshold_pct"
    }
}

// MARK: - Redis fan-out

/// The lead's Redis fan-out, in `/health` when `events.redis` is set.
public struct RedisHealth: Codable, Sendable, Equatable {
    public enum State: String, Codable, Sendable {
        case connecting, connected, down
    }

    public var state: State
    /// The highest event sequence in the stream, as far as the lead knows.
    public var writtenSeq: Int64?
    /// Why it is not connected.
    public var message: String?

    public init(state: State, writtenSeq: Int64? = nil, message: String? = nil) {
        self.state = state
        self.writtenSeq = writtenSeq
        self.message = message
    }

    enum CodingKeys: String, CodingKey {
        case state, message
        case writtenSeq = "written_seq"
    }
}

/// Names of the Redis stream and channel.
public enum RedisNames {
    /// `XADD aurora:events` and `PUBLISH aurora:events`.
    public static let events = "aurora:events"
}

// MARK: - Logs and subsystems

/// One structured log line kept in the agent's ring.
public struct LogLine: Codable, Sendable, Equatable {
    /// Grows with every line the agent keeps: `?since=` resumes after it.
    public var seq: Int64
    public var at: String
    public var level: String
    public var subsystem: String
    public var message: String
    public var metadata: [String: String]

    public init(seq: Int64, at: String, level: String, subsystem: String, message: String, metadata: [String: String]) {
        self.seq = seq
        self.at = at
        self.level = level
        self.subsystem = subsystem
        self.message = message
        self.metadata = metadata
    }
}

/// `GET /api/logs`: recent lines, oldest first.
public struct LogPage: Codable, Sendable, Equatable {
    public var node: String
    public var lines: [LogLine]
    /// Subsystems with lines in the ring.
    public var subsystems: [String]

    public init(node: String, lines: [LogLine], subsystems: [String]) {
        self.node = node
        self.lines = lines
        self.subsystems = subsystems
    }
}

/// One restartable subsystem of an agent.
public struct SubsystemState: Codable, Sendable, Equatable {
    public var name: String
    /// `running`, `restarting` or `stopped`.
    public var state: String
    public var restarts: Int
    public var startedAt: String?

    public init(name: String, state: String, restarts: Int, startedAt: String?) {
        self.name = name
        self.state = state
        self.restarts = restarts
        self.startedAt = startedAt
    }

    enum CodingKeys: String, CodingKey {
        case name, state, restarts
        case startedAt = "started_at"
    }
}

/// `GET /api/subsystems`.
public struct SubsystemList: Codable, Sendable, Equatable {
    public var subsystems: [SubsystemState]

    public init(subsystems: [SubsystemState]) { self.subsystems = subsystems }
}

// MARK: - Event types and routes

extension EventType {
    /// A service check's status changed (event `node`: the checking node).
    public static let checkChanged = "check.changed"
    /// A check's recovery action ran.
    public static let checkRecovery = "check.recovery"
    /// A resource went over its threshold (CPU for a sustained time).
    public static let alertRaised = "alert.raised"
    /// It is back below the threshold (minus a margin).
    public static let alertCleared = "alert.cleared"
}
