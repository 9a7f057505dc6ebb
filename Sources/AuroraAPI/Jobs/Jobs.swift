// GPU job routing's part of the public contract (shared/DESIGN.md, API shapes): jobs,
// submissions, the queue, GPU status, and the worker protocol (assignments, results).

// MARK: - Jobs

/// What a job does on its worker.
public enum JobKind: String, Codable, Sendable, CaseIterable {
    /// Forwarded to the worker's local inference server (`gpu.backend`).
    case generate
    /// A command with `CUDA_VISIBLE_DEVICES` set; only where `gpu.allow_exec` is true.
    case exec
}

/// Where a job stands.
public enum JobState: String, Codable, Sendable, CaseIterable {
    /// Waiting for a GPU that fits.
    case queued
    /// Placed on a node; its worker has not picked it up yet.
    case assigned
    /// Its worker has it.
    case running
    case succeeded
    case failed
    case cancelled

    /// No further change will happen.
    public var isTerminal: Bool { self == .succeeded || self == .failed || self == .cancelled }
}

/// Priorities: 0–9, 9 highest; names for the usual levels.
public enum JobPriority {
    public static let low = 2
    public static let normal = 5
    public static let high = 7
    public static let critical = 9
    public static let range = 0...9

    /// `0`–`9` or `low`, `normal`, `high`, `critical`.
    public static func parse(_ text: String) -> Int? {
        switch text.lowercased() {
        case "low": low
        case "normal": normal
        case "high": high
        case "critical": critical
        default: Int(text).flatMap { range.contains($0) ? $0 : nil }
        }
    }
}

/// What a job needs from a GPU node.
public struct JobRequirements: Codable, Sendable, Equatable {
    /// Free VRAM needed on each assigned GPU, in MB.
    public var minVramMB: Int
    /// A GPU model pattern, matched case-insensitively: a substring, or a glob with `*`.
    public var gpuModel: String?
    /// GPUs on one node (default 1).
    public var gpuCount: Int?
    /// Node labels that must all match.
    public var labels: [String: String]?

    public init(minVramMB: Int = 0, gpuModel: String? = nil, gpuCount: Int? = nil, labels: [String: String]? = nil) {
        self.minVramMB = minVramMB
        self.gpuModel = gpuModel
        self.gpuCount = gpuCount
        self.labels = labels
    }

    public static let fields: Set<String> = ["min_vram_mb", "gpu_model", "gpu_count", "labels"]

    enum CodingKeys: String, CodingKey {
        case labels
        case minVramMB = "min_vram_mb"
        case gpuModel = "gpu_model"
        case gpuCount = "gpu_count"
    }

    public init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        minVramMB = try container.decodeIfPresent(Int.self, forKey: .minVramMB) ?? 0
        gpuModel = try container.decodeIfPresent(String.self, forKey: .gpuModel)
        gpuCount = try container.decodeIfPresent(Int.self, forKey: .gpuCount)
        labels = try container.decodeIfPresent([String: String].self, forKey: .labels)
    }
}

/// A priority as a request may give it: a number 0–9 or a name.
public struct PriorityValue: Codable, Sendable, Equatable {
    public var value: Int

    public init(_ value: Int) { self.value = value }

    public init(from decoder: any Decoder) throws {
        let container = try decoder.singleValueContainer()
        if let number = try? container.decode(Int.self) {
            guard JobPriority.range.contains(number) else {
                throw DecodingError.dataCorruptedError(
                    in: container, debugDescription: "must be 0-9 (9 highest) or low, normal, high, critical")
            }
            value = number
        } else if let text = try? container.decode(String.self), let number = JobPriority.parse(text) {
            value = number
        } else {
            throw DecodingError.dataCorruptedError(
                in: container, debugDescription: "must be 0-9 (9 highest) or low, normal, high, critical")
        }
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.singleValueContainer()
        try container.encode(value)
    }
}

/// `POST /api/gpu/jobs`.
public struct JobSubmission: Codable, Sendable, Equatable {
    public var kind: JobKind
    public var priority: PriorityValue?
    public var requirements: JobRequirements?
    /// `generate`: `{model, prompt | messages, options?}`; `exec`: `{argv, timeout_s?, max_output_bytes?}`.
    public var payload: [String: JSONValue]
    public var idempotencyKey: String?
    public var maxAttempts: Int?
    /// Queue the job although no known node could ever run it (it waits for a fitting node to
    /// join); without it such a job is refused with the reasons (422 `unplaceable`).
    public var allowUnplaceable: Bool?

    public init(
        kind: JobKind, priority: Int? = nil, requirements: JobRequirements? = nil, payload: [String: JSONValue],
        idempotencyKey: String? = nil, maxAttempts: Int? = nil, allowUnplaceable: Bool? = nil
    ) {
        self.kind = kind
        self.priority = priority.map(PriorityValue.init)
        self.requirements = requirements
        self.payload = payload
        self.idempotencyKey = idempotencyKey
        self.maxAttempts = maxAttempts
        self.allowUnplaceable = allowUnplaceable
    }

    public static let fields: Set<String> = [
        "kind", "priority", "requirements", "payload", "idempotency_key", "max_attempts", "allow_unplaceable",
    ]

    enum CodingKeys: String, CodingKey {
        case kind, priority, requirements, payload
        case idempotencyKey = "idempotency_key"
        case maxAttempts = "max_attempts"
        case allowUnplaceable = "allow_unplaceable"
    }
}

/// `POST /api/gpu/generate`: a `generate` job in one call, optionally waiting for its answer.
public struct GenerateRequest: Codable, Sendable, Equatable {
    public var model: String
    public var prompt: String?
    public var messages: [JSONValue]?
    public var options: [String: JSONValue]?
    public var priority: PriorityValue?
    public var minVramMB: Int?
    public var gpuModel: String?
    public var labels: [String: String]?
    public var idempotencyKey: String?
    /// Wait up to this many seconds for the answer (200 when it finished, else 202).
    public var waitS: Double?

    public init(
        model: String, prompt: String? = nil, messages: [JSONValue]? = nil, options: [String: JSONValue]? = nil,
        priority: Int? = nil, minVramMB: Int? = nil, idempotencyKey: String? = nil, waitS: Double? = nil
    ) {
        self.model = model
        self.prompt = prompt
        self.messages = messages
        self.options = options
        self.priority = priority.map(PriorityValue.init)
        self.minVramMB = minVramMB
        self.idempotencyKey = idempotencyKey
        self.waitS = waitS
    }

    public static let fields: Set<String> = [
        "model", "prompt", "messages", "options", "priority", "min_vram_mb", "gpu_model", "labels",
        "idempotency_key", "wait_s",
    ]

    enum CodingKeys: String, CodingKey {
        case model, prompt, messages, options, priority, labels
        case minVramMB = "min_vram_mb"
        case gpuModel = "gpu_model"
        case idempotencyKey = "idempotency_key"
        case waitS = "wait_s"
    }
}

/// A job as the API shows it.
public struct Job: Codable, Sendable, Equatable {
    public var id: String
    public var kind: JobKind
    public var priority: Int
    public var state: JobState
    /// 1 for the first run; grows on every requeue. Results must name it (fencing token).
    public var attempt: Int
    public var maxAttempts: Int
    public var requirements: JobRequirements
    public var idempotencyKey: String?
    public var node: String?
    public var gpus: [Int]?
    public var submittedAt: String
    public var startedAt: String?
    public var finishedAt: String?
    public var leaseDeadline: String?
    /// Queued jobs: 1 is next.
    public var position: Int?
    /// Queued jobs: seconds until it is expected to start, from the jobs ahead, the running
    /// jobs' elapsed time and recent run times; absent when unknown.
    public var etaS: Double?
    public var result: JSONValue?
    public var error: String?
    /// `operator` or `node:NAME`.
    public var submittedBy: String?
    /// Queued jobs: why it is not running, node by node.
    public var waiting: JobWaiting?
    /// The submit answer only: what the submitter should know (no node can run it now, …).
    public var warnings: [String]?

    public init(
        id: String, kind: JobKind, priority: Int, state: JobState, attempt: Int, maxAttempts: Int,
        requirements: JobRequirements, idempotencyKey: String? = nil, node: String? = nil, gpus: [Int]? = nil,
        submittedAt: String, startedAt: String? = nil, finishedAt: String? = nil, leaseDeadline: String? = nil,
        position: Int? = nil, etaS: Double? = nil, result: JSONValue? = nil, error: String? = nil,
        submittedBy: String? = nil
    ) {
        self.id = id
        self.kind = kind
        self.priority = priority
        self.state = state
        self.attempt = attempt
        self.maxAttempts = maxAttempts
        self.requirements = requirements
        self.idempotencyKey = idempotencyKey
        self.node = node
        self.gpus = gpus
        self.submittedAt = submittedAt
        self.startedAt = startedAt
        self.finishedAt = finishedAt
        self.leaseDeadline = leaseDeadline
        self.position = position
        self.etaS = etaS
        self.result = result
        self.error = error
        self.submittedBy = submittedBy
    }

    enum CodingKeys: String, CodingKey {
        case id, kind, priority, state, attempt, requirements, node, gpus, position, result, error, waiting, warnings
        case maxAttempts = "max_attempts"
        case idempotencyKey = "idempotency_key"
        case submittedAt = "submitted_at"
        case startedAt = "started_at"
        case finishedAt = "finished_at"
        case leaseDeadline = "lease_deadline"
        case etaS = "eta_s"
        case submittedBy = "submitted_by"
    }
}

/// Why a queued job is not running: the nodes grouped by the first rule each fails.
public struct JobWaiting: Codable, Sendable, Equatable {
    public struct Reason: Codable, Sendable, Equatable {
        /// `labels`, `gpu_model`, `gpu_count`, `vram_total`, `exec_not_allowed`, `no_inference`
        /// (the node could never run it); `away`, `unreported`, `not_accepting`, `cordoned`,
        /// `vram_free` (not now); `fits` (it can run there and waits for its turn).
        public var code: String
        /// "2 nodes too little free VRAM (need 50000 MB, best 24064)".
        public var message: String
        /// How many nodes.
        public var count: Int
        /// Their names, sorted; at most 20.
        public var nodes: [String]

        public init(code: String, message: String, count: Int, nodes: [String]) {
            self.code = code
            self.message = message
            self.count = count
            self.nodes = nodes
        }
    }

    /// The reasons on one line.
    public var summary: String
    public var reasons: [Reason]

    public init(summary: String, reasons: [Reason]) {
        self.summary = summary
        self.reasons = reasons
    }
}

/// `GET /api/gpu/jobs`.
public struct JobList: Codable, Sendable, Equatable {
    public var jobs: [Job]

    public init(jobs: [Job]) { self.jobs = jobs }
}

/// `GET /api/gpu/queue`.
public struct QueueView: Codable, Sendable, Equatable {
    public struct Entry: Codable, Sendable, Equatable {
        public var id: String
        public var kind: JobKind
        public var priority: Int
        public var position: Int
        public var etaS: Double?
        public var submittedAt: String
        public var minVramMB: Int

        public init(
            id: String, kind: JobKind, priority: Int, position: Int, etaS: Double?, submittedAt: String, minVramMB: Int
        ) {
            self.id = id
            self.kind = kind
            self.priority = priority
            self.position = position
            self.etaS = etaS
            self.submittedAt = submittedAt
            self.minVramMB = minVramMB
        }

        enum CodingKeys: String, CodingKey {
            case id, kind, priority, position
            case etaS = "eta_s"
            case submittedAt = "submitted_at"
            case minVramMB = "min_vram_mb"
        }
    }

    public var queued: [Entry]
    /// Queued jobs per priority ("0"–"9").
    public var byPriority: [String: Int]
    /// Mean run time of recent jobs, the base of the ETAs.
    public var meanRunS: Double?

    public init(queued: [Entry], byPriority: [String: Int], meanRunS: Double?) {
        self.queued = queued
        self.byPriority = byPriority
        self.meanRunS = meanRunS
    }

    enum CodingKeys: String, CodingKey {
        case queued
        case byPriority = "by_priority"
        case meanRunS = "mean_run_s"
    }
}

/// `GET /api/gpu/status`.
public struct GPUStatus: Codable, Sendable, Equatable {
    /// A GPU as the node reports it, plus what placement counts: flat in JSON.
    public struct GPUView: Codable, Sendable, Equatable {
        public var gpu: GPU
        /// Reserved by jobs placed on this GPU.
        public var reservedMB: Int
        /// total − used by other processes − reserved.
        public var freeVramMB: Int

        public init(gpu: GPU, reservedMB: Int, freeVramMB: Int) {
            self.gpu = gpu
            self.reservedMB = reservedMB
            self.freeVramMB = freeVramMB
        }

        enum CodingKeys: String, CodingKey {
            case reservedMB = "reserved_mb"
            case freeVramMB = "free_vram_mb"
        }

        public init(from decoder: any Decoder) throws {
            gpu = try GPU(from: decoder)
            let container = try decoder.container(keyedBy: CodingKeys.self)
            reservedMB = try container.decode(Int.self, forKey: .reservedMB)
            freeVramMB = try container.decode(Int.self, forKey: .freeVramMB)
        }

        public func encode(to encoder: any Encoder) throws {
            try gpu.encode(to: encoder)
            var container = encoder.container(keyedBy: CodingKeys.self)
            try container.encode(reservedMB, forKey: .reservedMB)
            try container.encode(freeVramMB, forKey: .freeVramMB)
        }
    }

    public struct NodeView: Codable, Sendable, Equatable {
        public var name: String
        public var state: NodeState
        public var accepting: Bool
        public var allowExec: Bool
        public var gpus: [GPUView]
        /// Jobs placed on the node (assigned or running).
        public var running: Int
        /// Cordoned or draining by an operator; absent while open.
        public var scheduling: NodeScheduling?

        public init(
            name: String, state: NodeState, accepting: Bool, allowExec: Bool, gpus: [GPUView], running: Int,
            scheduling: NodeScheduling? = nil
        ) {
            self.name = name
            self.state = state
            self.accepting = accepting
            self.allowExec = allowExec
            self.gpus = gpus
            self.running = running
            self.scheduling = scheduling
        }

        enum CodingKeys: String, CodingKey {
            case name, state, accepting, gpus, running, scheduling
            case allowExec = "allow_exec"
        }
    }

    public var nodes: [NodeView]
    public var queued: Int
    public var policy: String

    public init(nodes: [NodeView], queued: Int, policy: String) {
        self.nodes = nodes
        self.queued = queued
        self.policy = policy
    }
}

// MARK: - Worker protocol

/// What a worker reports about itself with every heartbeat.
public struct WorkerReport: Codable, Sendable, Equatable {
    /// `gpu.accept_jobs`, and the worker is running.
    public var accepting: Bool
    /// `gpu.allow_exec`.
    public var allowExec: Bool
    /// `gpu.backend` is set: it takes `generate` jobs.
    public var generate: Bool
    /// The jobs it is running; their leases are extended.
    public var jobs: [JobLease]
    /// When this worker started (ISO 8601): a lead that took over tells from it whether a job
    /// delivered before the takeover ever reached the worker.
    public var startedAt: String?

    public init(accepting: Bool, allowExec: Bool, generate: Bool, jobs: [JobLease], startedAt: String? = nil) {
        self.accepting = accepting
        self.allowExec = allowExec
        self.generate = generate
        self.jobs = jobs
        self.startedAt = startedAt
    }

    enum CodingKeys: String, CodingKey {
        case accepting, jobs, generate
        case allowExec = "allow_exec"
        case startedAt = "started_at"
    }
}

/// A job a worker holds, by id and attempt.
public struct JobLease: Codable, Sendable, Equatable, Hashable {
    public var id: String
    public var attempt: Int

    public init(id: String, attempt: Int) {
        self.id = id
        self.attempt = attempt
    }
}

/// One job handed to a worker.
public struct Assignment: Codable, Sendable, Equatable {
    public var id: String
    public var attempt: Int
    public var kind: JobKind
    public var payload: [String: JSONValue]
    /// GPU indices on the worker (`CUDA_VISIBLE_DEVICES`).
    public var gpus: [Int]
    /// Who submitted the job, as the lead recorded it (`operator` is the mesh admin). A worker
    /// runs an exec job only for a submitter it trusts.
    public var submittedBy: String?

    public init(
        id: String, attempt: Int, kind: JobKind, payload: [String: JSONValue], gpus: [Int], submittedBy: String? = nil
    ) {
        self.id = id
        self.attempt = attempt
        self.kind = kind
        self.payload = payload
        self.gpus = gpus
        self.submittedBy = submittedBy
    }

    enum CodingKeys: String, CodingKey {
        case id, attempt, kind, payload, gpus
        case submittedBy = "submitted_by"
    }
}

/// `GET /api/gpu/assignments?wait=S`: new jobs for this worker, and jobs it must stop
/// (cancelled, or requeued elsewhere).
public struct AssignmentBatch: Codable, Sendable, Equatable {
    public var assignments: [Assignment]
    public var cancel: [JobLease]
    /// The assigning lead's epoch: a worker takes nothing from a lower one than it has seen.
    public var epoch: Int64?

    public init(assignments: [Assignment], cancel: [JobLease], epoch: Int64? = nil) {
        self.epoch = epoch
        self.assignments = assignments
        self.cancel = cancel
    }
}

/// `POST /api/gpu/jobs/{id}/result`.
public struct JobResult: Codable, Sendable, Equatable {
    public enum Outcome: String, Codable, Sendable {
        case succeeded, failed
    }

    /// The attempt the worker ran: a stale one is refused with 409.
    public var attempt: Int
    public var outcome: Outcome
    public var result: JSONValue?
    public var error: String?
    /// The failure was the node's, not the job's (the backend was down): run it elsewhere.
    public var retry: Bool?

    public init(attempt: Int, outcome: Outcome, result: JSONValue? = nil, error: String? = nil, retry: Bool? = nil) {
        self.attempt = attempt
        self.outcome = outcome
        self.result = result
        self.error = error
        self.retry = retry
    }

    public static let fields: Set<String> = ["attempt", "outcome", "result", "error", "retry"]
}

/// Event types of GPU routing.
extension EventType {
    public static let jobQueued = "job.queued"
    public static let jobStarted = "job.started"
    public static let jobSucceeded = "job.succeeded"
    public static let jobFailed = "job.failed"
    public static let jobRequeued = "job.requeued"
    public static let jobCancelled = "job.cancelled"
}
