// Service checks (Consul-style): each run of an HTTP, TCP or command check gives an outcome;
// this core turns outcomes into a status with thresholds, and decides when a recovery action
// runs (after N failures in a row, at most once per window). Pure: the caller passes the time
// in seconds on any monotonic scale.

/// What a check says about a service.
public enum CheckStatus: String, Sendable, CaseIterable, Comparable {
    case passing, warning, critical

    /// passing < warning < critical.
    public static func < (a: CheckStatus, b: CheckStatus) -> Bool {
        allCases.firstIndex(of: a)! < allCases.firstIndex(of: b)!
    }
}

/// A check's thresholds and recovery rule (profile `checks[]`).
public struct CheckPolicy: Sendable, Equatable {
    /// Passing results in a row before a failing check is passing again.
    public var successBeforePassing: Int
    /// Failing results in a row before the status becomes warning.
    public var failuresBeforeWarning: Int
    /// Failing results in a row before the status becomes critical.
    public var failuresBeforeCritical: Int
    /// Failing results in a row before the recovery action runs; nil: no recovery action.
    public var recoveryAfter: Int?
    /// The recovery action runs at most once per this many seconds.
    public var recoveryWindow: Double

    public init(
        successBeforePassing: Int = 1, failuresBeforeWarning: Int? = nil, failuresBeforeCritical: Int = 1,
        recoveryAfter: Int? = nil, recoveryWindow: Double = 300
    ) {
        self.successBeforePassing = max(1, successBeforePassing)
        self.failuresBeforeCritical = max(1, failuresBeforeCritical)
        self.failuresBeforeWarning = max(
            1, min(failuresBeforeWarning ?? failuresBeforeCritical, self.failuresBeforeCritical))
        self.recoveryAfter = recoveryAfter.map { max(1, $0) }
        self.recoveryWindow = max(0, recoveryWindow)
    }
}

/// One check's state: the status the thresholds allow, and the recovery bookkeeping.
public struct CheckTracker: Sendable, Equatable {
    /// What the tracker asks its shell to do after a result.
    public enum Directive: Sendable, Equatable {
        /// The status changed (from nil: the first result).
        case changed(from: CheckStatus?, to: CheckStatus)
        /// Run the recovery action now.
        case runRecovery
    }

    public let policy: CheckPolicy
    /// nil until the first result.
    public private(set) var status: CheckStatus?
    public private(set) var consecutiveFailures = 0
    public private(set) var consecutiveSuccesses = 0
    /// When the recovery action last ran.
    public private(set) var lastRecoveryAt: Double?
    /// How often it ran.
    public private(set) var recoveries = 0

    /// A tracker; `status` carries a known status over (a restarted check service), so it is
    /// not announced again as if it were new.
    public init(policy: CheckPolicy, status: CheckStatus? = nil) {
        self.policy = policy
        self.status = status
    }

    /// A check ran and gave `outcome` at `now`.
    ///
    /// The first result sets the status directly. After that a passing check turns warning or
    /// critical only after `failuresBeforeWarning` / `failuresBeforeCritical` failing results in
    /// a row (a warning result never counts as critical), and a failing one turns passing only
    /// after `successBeforePassing` passing results in a row. The recovery action is due when
    /// the failures in a row reach `recoveryAfter` and the last run is at least
    /// `recoveryWindow` ago; failures that go on only bring it back once the window has passed.
    public mutating func onResult(_ outcome: CheckStatus, at now: Double) -> [Directive] {
        var directives: [Directive] = []
        let before = status
        if outcome == .passing {
            consecutiveSuccesses += 1
            consecutiveFailures = 0
            if status == nil || (status != .passing && consecutiveSuccesses >= policy.successBeforePassing) {
                status = .passing
            }
        } else {
            consecutiveFailures += 1
            consecutiveSuccesses = 0
            if status == nil {
                status = outcome
            } else if outcome == .critical && consecutiveFailures >= policy.failuresBeforeCritical {
                status = .critical
            } else if consecutiveFailures >= policy.failuresBeforeWarning {
                // A warning result, or a critical one not yet over its threshold.
                status = outcome == .critical && status == .critical ? .critical : .warning
            }
        }
        if let status, status != before { directives.append(.changed(from: before, to: status)) }
        if outcome != .passing, let after = policy.recoveryAfter, consecutiveFailures >= after,
            lastRecoveryAt.map({ now - $0 >= policy.recoveryWindow }) ?? true
        {
            lastRecoveryAt = now
            recoveries += 1
            directives.append(.runRecovery)
        }
        return directives
    }
}

// MARK: - Resource alerts

/// A machine resource the agent watches.
public enum WatchedResource: String, Sendable, CaseIterable {
    case cpu, memory, disk
}

/// When a resource alert is raised (profile `alerts.*`).
public struct ResourceThresholds: Sendable, Equatable {
    /// CPU busy percentage that, held for `cpuFor` seconds, raises an alert.
    public var cpuPct: Double
    public var cpuFor: Double
    /// Memory in use (total − available), percent.
    public var memoryPct: Double
    /// The data directory's file system, percent used.
    public var diskPct: Double
    /// An alert clears only when the value is this many points below its threshold.
    public var clearMargin: Double

    public init(
        cpuPct: Double = 80, cpuFor: Double = 300, memoryPct: Double = 90, diskPct: Double = 85, clearMargin: Double = 5
    ) {
        self.cpuPct = cpuPct
        self.cpuFor = cpuFor
        self.memoryPct = memoryPct
        self.diskPct = diskPct
        self.clearMargin = clearMargin
    }

    public func threshold(_ resource: WatchedResource) -> Double {
        switch resource {
        case .cpu: cpuPct
        case .memory: memoryPct
        case .disk: diskPct
        }
    }
}

/// Raises and clears resource alerts from samples: CPU above its threshold for a sustained
/// time, memory and disk above theirs at once. Each alert is raised once and cleared once,
/// with a margin so a value at the threshold does not flap.
public struct ResourceWatch: Sendable, Equatable {
    /// A change the shell records as an event.
    public enum Directive: Sendable, Equatable {
        case raised(WatchedResource, valuePct: Double, thresholdPct: Double)
        case cleared(WatchedResource, valuePct: Double, thresholdPct: Double)
    }

    public let thresholds: ResourceThresholds
    /// Alerts raised and not cleared.
    public private(set) var active: Set<WatchedResource> = []
    /// Since when CPU has been above its threshold without a dip (nil: it is not).
    public private(set) var cpuAboveSince: Double?

    /// A watch; `active` carries raised alerts over (a restarted monitor), so they are not raised twice.
    public init(thresholds: ResourceThresholds, active: Set<WatchedResource> = []) {
        self.thresholds = thresholds
        self.active = active
    }

    /// One sample (percentages; nil where unknown) at `now` seconds.
    public mutating func onSample(cpuPct: Double?, memoryPct: Double?, diskPct: Double?, at now: Double) -> [Directive]
    {
        var directives: [Directive] = []
        for resource in WatchedResource.allCases {
            let value: Double?
            switch resource {
            case .cpu: value = cpuPct
            case .memory: value = memoryPct
            case .disk: value = diskPct
            }
            guard let value else { continue }
            let threshold = thresholds.threshold(resource)
            if active.contains(resource) {
                if value < threshold - thresholds.clearMargin {
                    active.remove(resource)
                    if resource == .cpu { cpuAboveSince = nil }
                    directives.append(.cleared(resource, valuePct: value, thresholdPct: threshold))
                }
                continue
            }
            guard value > threshold else {
                if resource == .cpu { cpuAboveSince = nil }
                continue
            }
            if resource == .cpu {
                let since = cpuAboveSince ?? now
                cpuAboveSince = since
                guard now - since >= thresholds.cpuFor else { continue }
            }
            active.insert(resource)
            directives.append(.raised(resource, valuePct: value, thresholdPct: threshold))
        }
        return directives
    }
}
