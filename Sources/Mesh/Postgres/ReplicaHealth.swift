// The replica-health classifier: turns samples of a PostgreSQL server into a state, with
// hysteresis so a replica hovering at a threshold does not flap. Pure: no I/O, the clock is
// the sample's `at` (seconds on any monotonic scale).

/// A write-ahead-log position (`16/B374D848`): the high and low 32 bits of a byte offset.
public struct LSN: Sendable, Hashable, Comparable, CustomStringConvertible {
    public let value: UInt64

    public init(_ value: UInt64) { self.value = value }

    /// Parses PostgreSQL's text form `X/Y` (both hexadecimal); nil for anything else.
    public init?(_ text: String) {
        let parts = text.split(separator: "/", omittingEmptySubsequences: false)
        guard parts.count == 2, (1...8).contains(parts[0].count), (1...8).contains(parts[1].count),
            let high = UInt64(parts[0], radix: 16), let low = UInt64(parts[1], radix: 16)
        else { return nil }
        value = high << 32 | low
    }

    public var description: String {
        String(value >> 32, radix: 16, uppercase: true) + "/" + String(value & 0xFFFF_FFFF, radix: 16, uppercase: true)
    }

    public static func < (a: LSN, b: LSN) -> Bool { a.value < b.value }

    /// Bytes from `other` up to this position; 0 when `other` is ahead.
    public func bytes(after other: LSN) -> UInt64 { value > other.value ? value - other.value : 0 }
}

/// What a replica-health check concluded.
public enum ReplicaState: String, Sendable, CaseIterable {
    /// Receiving and replaying within the lag thresholds.
    case streaming
    /// Lag above a threshold; stays until it is back below half of it.
    case catchingUp = "catching_up"
    /// The receiver is up but replay has not advanced for `stallAfter` while WAL is pending.
    case stalled
    /// In recovery with no WAL receiver (or one silent for too long).
    case disconnected
    /// Expected to be a replica, but the server is out of recovery (promoted).
    case notAReplica = "not_a_replica"
    /// The server cannot be reached.
    case down
    /// A primary that is meant to be one.
    case primary

    /// Whether a load balancer may send replica reads here (lag limits aside).
    public var servesReplicaReads: Bool { self == .streaming || self == .catchingUp }
}

/// One observation of the local server.
public struct ReplicaSample: Sendable, Equatable {
    public enum Server: Sendable, Equatable {
        /// Could not connect or the query failed; the reason is for people.
        case down(String)
        /// Out of recovery.
        case primary
        /// In recovery.
        case standby(Standby)
    }

    /// A standby's figures. LSNs are nil where PostgreSQL reports none.
    public struct Standby: Sendable, Equatable {
        /// `pg_stat_wal_receiver.status`; nil when there is no receiver row.
        public var receiverStatus: String?
        /// Last WAL received and flushed (`pg_last_wal_receive_lsn()`).
        public var receiveLSN: LSN?
        /// Last WAL replayed (`pg_last_wal_replay_lsn()`).
        public var replayLSN: LSN?
        /// The primary's end of WAL as its sender last reported it (`latest_end_lsn`).
        public var primaryEndLSN: LSN?
        /// Seconds since the receiver last heard from the primary.
        public var lastMessageAgeS: Double?
        /// Seconds since the primary wrote the replayed heartbeat row; nil without one.
        public var heartbeatAgeS: Double?

        public init(
            receiverStatus: String?, receiveLSN: LSN?, replayLSN: LSN?, primaryEndLSN: LSN?,
            lastMessageAgeS: Double?, heartbeatAgeS: Double?
        ) {
            self.receiverStatus = receiverStatus
            self.receiveLSN = receiveLSN
            self.replayLSN = replayLSN
            self.primaryEndLSN = primaryEndLSN
            self.lastMessageAgeS = lastMessageAgeS
            self.heartbeatAgeS = heartbeatAgeS
        }
    }

    public var at: Double
    public var server: Server

    public init(at: Double, _ server: Server) {
        self.at = at
        self.server = server
    }
}

/// The classifier's limits (profile `postgres.*`).
public struct ReplicaThresholds: Sendable, Equatable {
    /// Lag above this many seconds is catching up (`postgres.max_lag_s`).
    public var maxLagS: Double
    /// Lag above this many bytes is catching up (`postgres.max_lag_bytes`).
    public var maxLagBytes: UInt64
    /// Back to streaming only below this share of both limits.
    public var recoverFraction: Double
    /// Replay not advancing for this long while WAL is pending is a stall.
    public var stallAfterS: Double
    /// A receiver that heard nothing for this long counts as disconnected.
    public var silentAfterS: Double
    /// A server out of recovery is `primary` when true, `not_a_replica` when false.
    public var expectPrimary: Bool

    public init(
        maxLagS: Double = 5, maxLagBytes: UInt64 = 16 << 20, recoverFraction: Double = 0.5, stallAfterS: Double = 10,
        silentAfterS: Double = 30, expectPrimary: Bool = false
    ) {
        self.maxLagS = maxLagS
        self.maxLagBytes = maxLagBytes
        self.recoverFraction = recoverFraction
        self.stallAfterS = stallAfterS
        self.silentAfterS = silentAfterS
        self.expectPrimary = expectPrimary
    }
}

/// The classifier's answer for one sample.
public struct ReplicaVerdict: Sendable, Equatable {
    public var state: ReplicaState
    /// WAL the replica has not replayed yet: the primary's reported end (or what was
    /// received, whichever is further) minus the replay position.
    public var lagBytes: UInt64?
    /// Seconds behind: 0 when everything known is replayed, else the heartbeat row's age.
    public var lagS: Double?
    /// Why, in a few words, for `/health` and the checks.
    public var reason: String

    public init(state: ReplicaState, lagBytes: UInt64? = nil, lagS: Double? = nil, reason: String) {
        self.state = state
        self.lagBytes = lagBytes
        self.lagS = lagS
        self.reason = reason
    }
}

/// Keeps what hysteresis and stall detection need between samples.
public struct ReplicaClassifier: Sendable {
    public let thresholds: ReplicaThresholds
    public private(set) var state: ReplicaState?
    private var lastReplay: LSN?
    private var replayAdvancedAt: Double?

    public init(thresholds: ReplicaThresholds) {
        self.thresholds = thresholds
    }

    public mutating func classify(_ sample: ReplicaSample) -> ReplicaVerdict {
        let verdict = judge(sample)
        state = verdict.state
        return verdict
    }

    private mutating func judge(_ sample: ReplicaSample) -> ReplicaVerdict {
        switch sample.server {
        case .down(let reason):
            forgetReplay()
            return ReplicaVerdict(state: .down, reason: reason)
        case .primary:
            forgetReplay()
            return thresholds.expectPrimary
                ? ReplicaVerdict(state: .primary, reason: "primary (not in recovery)")
                : ReplicaVerdict(
                    state: .notAReplica, reason: "expected a replica, but the server is not in recovery (promoted?)")
        case .standby(let standby):
            return judge(standby, at: sample.at)
        }
    }

    private mutating func judge(_ standby: ReplicaSample.Standby, at now: Double) -> ReplicaVerdict {
        let replay = standby.replayLSN ?? standby.receiveLSN
        let known = [standby.primaryEndLSN, standby.receiveLSN].compactMap { $0 }.max()
        let lagBytes: UInt64? = replay.flatMap { replay in known.map { $0.bytes(after: replay) } }
        let lagS: Double? = lagBytes == 0 ? 0 : standby.heartbeatAgeS.map { max(0, $0) }

        // Stall bookkeeping: when did replay last move (or have nothing to do)?
        if let replay, replay != lastReplay || lagBytes == 0 || replayAdvancedAt == nil {
            replayAdvancedAt = now
        }
        lastReplay = replay

        guard let status = standby.receiverStatus else {
            return ReplicaVerdict(
                state: .disconnected, lagBytes: lagBytes, lagS: lagS,
                reason: "in recovery with no WAL receiver (primary unreachable?)")
        }
        guard status == "streaming" else {
            return ReplicaVerdict(
                state: .disconnected, lagBytes: lagBytes, lagS: lagS, reason: "WAL receiver is \(status), not streaming"
            )
        }
        if let silent = standby.lastMessageAgeS, silent > thresholds.silentAfterS {
            return ReplicaVerdict(
                state: .disconnected, lagBytes: lagBytes, lagS: lagS,
                reason: "WAL receiver heard nothing from the primary for \(Int(silent)) s")
        }
        if let since = replayAdvancedAt, let lagBytes, lagBytes > 0, now - since >= thresholds.stallAfterS {
            return ReplicaVerdict(
                state: .stalled, lagBytes: lagBytes, lagS: lagS,
                reason: "replay has not advanced for \(Int(now - since)) s with \(lagBytes) bytes pending")
        }
        let bytes = lagBytes ?? 0, seconds = lagS ?? 0
        let over = bytes > thresholds.maxLagBytes || seconds > thresholds.maxLagS
        let wasCatchingUp = state == .catchingUp || state == .stalled
        let recovered =
            Double(bytes) <= Double(thresholds.maxLagBytes) * thresholds.recoverFraction
            && seconds <= thresholds.maxLagS * thresholds.recoverFraction
        if over || (wasCatchingUp && !recovered) {
            return ReplicaVerdict(
                state: .catchingUp, lagBytes: lagBytes, lagS: lagS,
                reason:
                    "lag \(bytes) bytes, \(Self.format(seconds)) s (limits \(thresholds.maxLagBytes) bytes, \(Self.format(thresholds.maxLagS)) s)"
            )
        }
        return ReplicaVerdict(state: .streaming, lagBytes: lagBytes, lagS: lagS, reason: "streaming")
    }

    private mutating func forgetReplay() {
        lastReplay = nil
        replayAdvancedAt = nil
    }

    static func format(_ seconds: Double) -> String {
        let tenths = CheckedNumber.clamped(seconds * 10, to: -999_999_999_999...999_999_999_999)
        return "\(tenths / 10).\(tenths % 10)"
    }
}

/// Replication slots that keep WAL for no one: inactive and retaining more than `limit`
/// bytes (they fill the primary's disk).
public enum SlotCheck {
    public struct Slot: Sendable, Equatable {
        public var name: String
        public var active: Bool
        public var retainedBytes: UInt64?

        public init(name: String, active: Bool, retainedBytes: UInt64?) {
            self.name = name
            self.active = active
            self.retainedBytes = retainedBytes
        }
    }

    public static func inactive(_ slots: [Slot], retainingMoreThan limit: UInt64) -> [Slot] {
        slots.filter { !$0.active && ($0.retainedBytes ?? 0) > limit }.sorted { $0.name < $1.name }
    }
}

/// A load-balancer lag limit: `?lag=5s`, `500ms`, `16MB`, `1GB`, `4096` (bytes).
public enum LagLimit: Sendable, Equatable {
    case seconds(Double)
    case bytes(UInt64)

    /// The largest limits accepted: ten years, and 2^60 bytes (an exbibyte).
    public static let maxSeconds: Double = 315_360_000
    public static let maxBytes: UInt64 = 1 << 60

    public init?(_ text: String) {
        let lower = text.lowercased()
        let units: [(String, Double, Bool)] = [
            ("ms", 0.001, true), ("s", 1, true), ("min", 60, true),
            ("kb", 1024, false), ("mb", 1_048_576, false), ("gb", 1_073_741_824, false), ("b", 1, false),
        ]
        // Letters, digits, '.', '+' and '-' only: a NUL would end the number early (`5%00xyzs` is not 5 s).
        guard (1...32).contains(lower.utf8.count),
            lower.utf8.allSatisfy({
                (48...57).contains($0) || (97...122).contains($0) || $0 == 46 || $0 == 43 || $0 == 45
            })
        else { return nil }
        for (suffix, factor, isTime) in units where lower.hasSuffix(suffix) {
            // Range before conversion: `1e20b` or `99999999999999999999GB` must not trap.
            guard let number = Double(lower.dropLast(suffix.count)), number >= 0, number.isFinite else { return nil }
            let value = number * factor
            if isTime {
                guard value <= Self.maxSeconds else { return nil }
                self = .seconds(value)
            } else {
                guard let bytes = CheckedNumber.uint64(value.rounded(.down)), bytes <= Self.maxBytes else { return nil }
                self = .bytes(bytes)
            }
            return
        }
        guard let bytes = UInt64(lower), bytes <= Self.maxBytes else { return nil }
        self = .bytes(bytes)
    }

    /// Whether a verdict's lag is within the limit; unknown lag is not.
    public func admits(lagBytes: UInt64?, lagS: Double?) -> Bool {
        switch self {
        case .seconds(let limit): lagS.map { $0 <= limit } ?? false
        case .bytes(let limit): lagBytes.map { $0 <= limit } ?? false
        }
    }
}
