import AuroraAPI
import Foundation
import Logging
import Synchronization

/// The agent's recent structured log lines, kept in memory per subsystem (the
/// `nodeagent.subsystem` metadata value; `agent` without one) and served at `GET /api/logs`
/// for `aurora-cli logs`. Each subsystem keeps its last N lines (`log.ring_lines`), so a chatty
/// subsystem cannot push out a quiet one's lines.
///
/// It keeps what the log calls hold: constant messages and metadata that, by the logging
/// rules of this code base, never carries a secret.
public final class LogRing: Sendable {
    /// The process's ring, which ``RingLogHandler`` writes to.
    public static let shared = LogRing()

    private struct Ring {
        var lines: [LogLine] = []
        var head = 0

        /// Appends until `capacity` lines are held, then overwrites the oldest (at `head`).
        mutating func append(_ line: LogLine, capacity: Int) {
            if lines.count < capacity {
                lines.append(line)
            } else if capacity > 0 {
                lines[head] = line
                head = (head + 1) % capacity
            }
        }

        /// Oldest first.
        var ordered: [LogLine] { Array(lines[head...] + lines[..<head]) }

        /// Keeps the newest `capacity` lines, oldest first, after `log.ring_lines` changes.
        mutating func resize(_ capacity: Int) {
            let kept = ordered.suffix(capacity)
            lines = Array(kept)
            head = 0
        }
    }

    private struct State {
        var rings: [String: Ring] = [:]
        var next: Int64 = 1
        var capacity = 1000
    }

    private let state = Mutex(State())

    public init() {}

    /// Lines kept per subsystem (`log.ring_lines`); 0 keeps none.
    public func configure(linesPerSubsystem capacity: Int) {
        state.withLock { state in
            state.capacity = max(0, capacity)
            for key in state.rings.keys { state.rings[key]?.resize(state.capacity) }
        }
    }

    /// Records one line under `subsystem` with the next sequence number (`seq`, shared by all
    /// subsystems, so `since` pages through every ring at once). Called by ``RingLogHandler``.
    func append(level: Logger.Level, message: String, subsystem: String, metadata: [String: String]) {
        let at = ISOTime.string(Date())
        state.withLock { state in
            guard state.capacity > 0 else { return }
            let line = LogLine(
                seq: state.next, at: at, level: level.rawValue, subsystem: subsystem, message: message,
                metadata: metadata)
            state.next += 1
            state.rings[subsystem, default: Ring()].append(line, capacity: state.capacity)
        }
    }

    /// Lines after `since` of `subsystem` (nil: all), at `level` or more severe, oldest first,
    /// at most the newest `limit`.
    public func lines(subsystem: String?, since: Int64 = 0, level: Logger.Level = .trace, limit: Int) -> [LogLine] {
        let selected = state.withLock { state -> [LogLine] in
            if let subsystem { return state.rings[subsystem]?.ordered ?? [] }
            return state.rings.values.flatMap(\.ordered)
        }
        let filtered = selected.filter { $0.seq > since && (Logger.Level(rawValue: $0.level) ?? .trace) >= level }
            .sorted { $0.seq < $1.seq }
        return Array(filtered.suffix(max(0, limit)))
    }

    /// Subsystems with lines.
    public var subsystems: [String] { state.withLock { $0.rings.keys.sorted() } }
}

/// A swift-log handler that writes into a ``LogRing``; multiplexed with the stderr handler in
/// `nodeagent run`.
public struct RingLogHandler: LogHandler {
    public var metadata: Logger.Metadata = [:]
    public var metadataProvider: Logger.MetadataProvider?
    public var logLevel: Logger.Level = .info
    let ring: LogRing

    public init(label: String, ring: LogRing = .shared) {
        self.ring = ring
    }

    public subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    /// Files the line under its `nodeagent.subsystem` value (`agent` without one) and drops the
    /// `nodeagent.` prefix from the other metadata keys, as `aurora-cli logs` shows them.
    public func log(event: LogEvent) {
        var merged = metadata
        if let provided = metadataProvider?.get() { merged.merge(provided) { $1 } }
        if let extra = event.metadata { merged.merge(extra) { $1 } }
        let subsystem = merged.removeValue(forKey: "nodeagent.subsystem").map { "\($0)" } ?? "agent"
        var flat: [String: String] = [:]
        for (key, value) in merged {
            flat[key.hasPrefix("nodeagent.") ? String(key.dropFirst("nodeagent.".count)) : key] = "\(value)"
        }
        ring.append(level: event.level, message: "\(event.message)", subsystem: subsystem, metadata: flat)
    }
}
