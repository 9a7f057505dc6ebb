// The values the job book takes in and hands out: times, records, nodes, changes and outcomes.

extension JobBook {
    /// The two clocks an event happens at, read by the shell and passed in: the book reads no
    /// clock. Leases run on the monotonic `instant` (a wall-clock step never expires them);
    /// the wall time stamps rows (`started_at`, `lease_deadline`, …) and ages the queue.
    public struct Time: Sendable, Equatable {
        /// Monotonic: lease deadlines.
        public var instant: ContinuousClock.Instant
        /// Milliseconds since 1970-01-01 UTC: timestamps and queue aging.
        public var wallMs: Int64

        public init(instant: ContinuousClock.Instant, wallMs: Int64) {
            self.instant = instant
            self.wallMs = wallMs
        }

        /// The wall time in seconds, the scheduler's clock.
        public var wallSeconds: Double { Double(wallMs) / 1000 }

        /// This time moved on by `duration` on both clocks.
        public func advanced(by duration: Duration) -> Time {
            let (seconds, attoseconds) = duration.components
            return Time(
                instant: instant + duration, wallMs: wallMs + seconds * 1000 + attoseconds / 1_000_000_000_000_000)
        }
    }

    /// Where a job stands. Raw values are the API's `state`.
    public enum State: String, Sendable, CaseIterable {
        case queued, assigned, running, succeeded, failed, cancelled

        /// No further change will happen: the job has left the open book.
        public var isTerminal: Bool { self == .succeeded || self == .failed || self == .cancelled }

        /// Placed on a node (assigned, or running there): it holds a lease and a reservation.
        public var isPlaced: Bool { self == .assigned || self == .running }
    }

    /// A job a worker holds, by id and attempt: the attempt is the fencing token.
    public struct Lease: Sendable, Hashable {
        public var id: String
        public var attempt: Int

        public init(id: String, attempt: Int) {
            self.id = id
            self.attempt = attempt
        }
    }

    /// An idempotency key as the book indexes it: keys belong to their submitter, so the same
    /// key from another submitter is another key.
    public struct IdempotencyKey: Sendable, Hashable {
        public var submitter: String
        public var key: String

        public init(submitter: String, key: String) {
            self.submitter = submitter
            self.key = key
        }
    }

    /// A new job, checked by the shell.
    public struct Submission: Sendable {
        public var id: String
        /// What the shell keeps with the job and the book never reads (kind, payload, …).
        public var spec: Spec
        /// 0–9, 9 highest.
        public var priority: Int
        public var requirements: Scheduler.Requirements
        public var maxAttempts: Int
        public var key: IdempotencyKey?

        public init(
            id: String, spec: Spec, priority: Int, requirements: Scheduler.Requirements, maxAttempts: Int,
            key: IdempotencyKey?
        ) {
            self.id = id
            self.spec = spec
            self.priority = priority
            self.requirements = requirements
            self.maxAttempts = maxAttempts
            self.key = key
        }
    }

    /// An open job (queued, assigned or running) as the book keeps it, or a job as it left
    /// the book (in a ``Change``).
    public struct Record: Sendable {
        public var id: String
        public var spec: Spec
        public var priority: Int
        public var requirements: Scheduler.Requirements
        public var key: IdempotencyKey?
        public var state: State
        /// 1 for the first run; grows on every requeue.
        public var attempt: Int
        public var maxAttempts: Int
        public var node: String?
        public var gpus: [Int]?
        /// Wall times, ms since 1970.
        public var submittedAtMs: Int64
        public var startedAtMs: Int64?
        public var finishedAtMs: Int64?
        /// The lease's end as stored (wall time); ``lease`` is the one that counts.
        public var leaseDeadlineMs: Int64?
        public var error: String?
        /// When the lease runs out without a heartbeat naming the job: requeued.
        public internal(set) var lease: ContinuousClock.Instant?
        /// Handed to its worker (state running).
        public internal(set) var delivered: Bool
        /// Submission order, for FIFO among jobs submitted in the same instant.
        public internal(set) var order: Int64 = 0
        /// Restored as running by ``JobBook/restore(_:nodes:now:)`` (an earlier lead process
        /// delivered it) and not yet confirmed by its worker's first report to this one.
        public internal(set) var unconfirmed = false

        /// A job as stored, for ``JobBook/restore(_:nodes:now:)``.
        public init(
            id: String, spec: Spec, priority: Int, requirements: Scheduler.Requirements, key: IdempotencyKey?,
            state: State,
            attempt: Int, maxAttempts: Int, node: String? = nil, gpus: [Int]? = nil, submittedAtMs: Int64,
            startedAtMs: Int64? = nil, finishedAtMs: Int64? = nil, leaseDeadlineMs: Int64? = nil, error: String? = nil
        ) {
            self.id = id
            self.spec = spec
            self.priority = priority
            self.requirements = requirements
            self.key = key
            self.state = state
            self.attempt = attempt
            self.maxAttempts = maxAttempts
            self.node = node
            self.gpus = gpus
            self.submittedAtMs = submittedAtMs
            self.startedAtMs = startedAtMs
            self.finishedAtMs = finishedAtMs
            self.leaseDeadlineMs = leaseDeadlineMs
            self.error = error
            self.lease = nil
            self.delivered = state == .running
        }

        /// The job as a worker holds it.
        public var asLease: Lease { Lease(id: id, attempt: attempt) }
    }

    /// A node as the book needs it: its liveness for requeues and exec checks, its worker for
    /// placement.
    public struct Node: Sendable, Equatable {
        public var name: String
        public var state: MemberState
        /// Has a worker that accepts jobs.
        public var accepting: Bool
        public var allowExec: Bool
        /// Has a local inference server for `generate` jobs.
        public var canGenerate: Bool
        public var labels: [String: String]
        public var gpus: [Scheduler.GPUSlot]
        /// Round trip to the lead in ms; `.infinity` when unknown.
        public var rttMs: Double
        /// Its worker has reported (what it allows is known).
        public var reported: Bool
        /// An operator cordoned it (or drains it): no new jobs.
        public var cordoned: Bool
        /// Draining: when its running jobs are handed back (wall ms since 1970).
        public var drainDeadlineMs: Int64?
        /// Its inference server's models, loaded or not (nil: it does not say).
        public var models: [String: Bool]?

        public init(
            name: String, state: MemberState, accepting: Bool, allowExec: Bool, canGenerate: Bool,
            labels: [String: String],
            gpus: [Scheduler.GPUSlot], rttMs: Double = .infinity, models: [String: Bool]? = nil,
            reported: Bool = true, cordoned: Bool = false, drainDeadlineMs: Int64? = nil
        ) {
            self.models = models
            self.reported = reported
            self.cordoned = cordoned
            self.drainDeadlineMs = drainDeadlineMs
            self.name = name
            self.state = state
            self.accepting = accepting
            self.allowExec = allowExec
            self.canGenerate = canGenerate
            self.labels = labels
            self.gpus = gpus
            self.rttMs = rttMs
        }

        /// Dead or departed: its jobs go elsewhere.
        public var isGone: Bool { state == .dead || state == .left }

        /// Why its worker takes no new job now, or `ready`.
        public var standing: Scheduler.Standing {
            if state == .left { return .gone }
            if state != .alive { return .away }
            if cordoned { return .cordoned }
            if !reported { return .unreported }
            return accepting ? .ready : .notAccepting
        }
    }

    /// One change to persist (the job's row) and, for all but ``placed(_:)``, announce.
    public enum Change: Sendable {
        /// A new job (its record may already be placed): inserted, `job.queued`.
        case queued(Record)
        /// Placed on a node, state assigned: the row only.
        case placed(Record)
        /// Handed to its worker, state running: `job.started`.
        case started(Record)
        /// Back in the queue with the next attempt: `job.requeued`.
        case requeued(Record, from: String?, reason: String)
        /// Its worker reported the end (succeeded or failed): `job.succeeded` / `job.failed`.
        case finished(Record)
        /// Failed because its last attempt was lost: `job.failed`.
        case exhausted(Record)
        /// Cancelled from `from`: `job.cancelled`.
        case cancelled(Record, from: State)

        /// The job after the change.
        public var record: Record {
            switch self {
            case .queued(let r), .placed(let r), .started(let r), .requeued(let r, _, _), .finished(let r),
                .exhausted(let r),
                .cancelled(let r, _):
                r
            }
        }
    }

    /// What an event asks of the shell: rows to write with their events (in order), and the
    /// nodes whose long-polling worker has something new (a placement or a stop) to wake.
    public struct Directives: Sendable {
        public var changes: [Change] = []
        /// Sorted, without duplicates.
        public var wake: [String] = []

        public init(changes: [Change] = [], wake: [String] = []) {
            self.changes = changes
            self.wake = wake
        }

        public var isEmpty: Bool { changes.isEmpty && wake.isEmpty }

        mutating func addWake(_ nodes: some Sequence<String>) {
            wake = Array(Set(wake).union(nodes)).sorted()
        }
    }

    /// What ``JobBook/submit(_:now:)`` did.
    public enum Submitted: Sendable {
        /// The submitter's key already names an open job: that job, nothing changed.
        case existing(Record)
        /// Queued (and perhaps placed at once). `placed` holds every placement of the round,
        /// this job's included.
        case accepted(Record, placed: Directives)
    }

    /// What ``JobBook/deliver(to:now:)`` hands a node's worker.
    public struct Delivery: Sendable {
        /// Jobs now running: each a ``Change/started(_:)`` to persist.
        public var started: [Record] = []
        /// Jobs the worker must stop (cancelled, or requeued elsewhere).
        public var stops: [Lease] = []

        public var isEmpty: Bool { started.isEmpty && stops.isEmpty }
    }

    /// How a worker says a job ended.
    public enum Report: Sendable, Equatable {
        case succeeded
        /// `retry`: the failure was the node's, not the job's: run it elsewhere.
        case failed(error: String?, retry: Bool)
    }

    /// What ``JobBook/result(_:from:attempt:_:now:)`` did.
    public enum ResultOutcome: Sendable {
        /// Not in the open book (finished, or never existed): the store knows.
        case notOpen
        /// The job is placed on another node (or none).
        case notAssigned
        /// The attempt is not the job's current one: refused, nothing changed.
        case staleAttempt(current: Int)
        /// A retryable failure: the job was requeued (or failed, attempts spent). `before` is
        /// the job as it was.
        case requeued(before: Record, Directives)
        /// The job ended and left the open book.
        case finished(Record, Directives)
    }
}
