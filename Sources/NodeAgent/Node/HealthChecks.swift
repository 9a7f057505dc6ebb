import AsyncAlgorithms
import AsyncHTTPClient
import AuroraAPI
import AuroraClient
import Foundation
import Logging
import Mesh
import NIOCore
import ServiceLifecycle
import Synchronization
import Yams

#if canImport(Glibc)
    import Glibc
    import NIOHTTP1
#endif

// MARK: - Board

/// The latest state of every service check and the raised resource alerts: written by the
/// check and alert services, read by `/health`, `/api/checks` and every heartbeat.
final class CheckBoard: Sendable {
    /// Checks by name in the profile's order, and raised alerts by resource.
    private struct State {
        var checks: [String: ServiceCheckState] = [:]
        var order: [String] = []
        var alerts: [String: ResourceAlert] = [:]
    }

    private let state = Mutex(State())

    /// Sets a check's whole state; a new name goes to the end of the order.
    func update(_ check: ServiceCheckState) {
        state.withLock { state in
            if state.checks[check.name] == nil { state.order.append(check.name) }
            state.checks[check.name] = check
        }
    }

    /// Edits a known check's state in place (a run's result, a recovery); unknown names are ignored.
    func change(_ name: String, _ body: (inout ServiceCheckState) -> Void) {
        state.withLock { state in
            guard var check = state.checks[name] else { return }
            body(&check)
            state.checks[name] = check
        }
    }

    /// Every check's full state, in the profile's order, for `GET /api/checks`.
    var checks: [ServiceCheckState] { state.withLock { state in state.order.compactMap { state.checks[$0] } } }

    /// Checks with a status, as heartbeats and `/health` carry them.
    var results: [CheckResult] {
        checks.compactMap { check in
            check.status.map { CheckResult(name: check.name, status: $0, output: check.output) }
        }
    }

    /// Raised alerts sorted by resource (`cpu`, `disk`, `memory`), for `/health` and `/api/checks`.
    var activeAlerts: [ResourceAlert] { state.withLock { $0.alerts.values.sorted { $0.resource < $1.resource } } }

    func raise(_ alert: ResourceAlert) { state.withLock { $0.alerts[alert.resource] = alert } }

    func clear(_ resource: String) { state.withLock { _ = $0.alerts.removeValue(forKey: resource) } }

    /// `GET /api/checks`: every check and every raised alert.
    var report: CheckReport { CheckReport(checks: checks, alerts: activeAlerts) }

    /// Severity for "the worst status wins": passing 0, warning 1, critical 2.
    static func rank(_ status: CheckResult.Status) -> Int {
        switch status {
        case .passing: 0
        case .warning: 1
        case .critical: 2
        }
    }
}

extension CheckStatus {
    init(_ status: CheckResult.Status) {
        switch status {
        case .passing: self = .passing
        case .warning: self = .warning
        case .critical: self = .critical
        }
    }
}

extension CheckResult.Status {
    init(_ status: CheckStatus) {
        switch status {
        case .passing: self = .passing
        case .warning: self = .warning
        case .critical: self = .critical
        }
    }
}

// MARK: - Service checks

/// Runs the profile's service checks, each on its own interval, through the pure
/// ``CheckTracker``: results go to the ``CheckBoard`` (heartbeats, `/health`), status changes
/// and recovery runs become `check.changed` / `check.recovery` reports (through the outbox).
/// A recovery command runs without a shell, with a timeout, at most once per window, while
/// the check goes on.
final class HealthCheckService: Service {
    let checks: [ServiceCheckConfig]
    let board: CheckBoard
    let logger: Logger
    /// Records a node event (the outbox).
    let report: @Sendable (NodeEvent) async -> Void
    private let epoch = ContinuousClock.now

    init(
        checks: [ServiceCheckConfig], board: CheckBoard, logger: Logger,
        report: @escaping @Sendable (NodeEvent) async -> Void
    ) {
        self.checks = checks
        self.board = board
        var logger = logger
        logger[metadataKey: "nodeagent.subsystem"] = "checks"
        self.logger = logger
        self.report = report
        for check in checks {
            board.update(
                ServiceCheckState(
                    name: check.name, kind: check.kind, target: check.targetDescription, status: nil, lastOutcome: nil,
                    output: "not run yet", consecutiveFailures: 0, consecutiveSuccesses: 0, checkedAt: nil,
                    recoveries: 0, lastRecoveryAt: nil, lastRecoveryExitCode: nil))
        }
    }

    /// The service: one loop per check and, for checks with a recovery command, one recovery
    /// runner fed by it (a request waiting while a recovery runs is replaced by the newest), until
    /// graceful shutdown.
    func run() async throws {
        await withDiscardingTaskGroup { group in
            for check in checks {
                let (requests, requested) = AsyncStream<Int>.makeStream(bufferingPolicy: .bufferingNewest(1))
                group.addTask {
                    await self.loop(check, requestRecovery: requested)
                    requested.finish()
                }
                if check.recovery != nil {
                    group.addTask {
                        for await attempt in requests { await self.recover(check, attempt: attempt) }
                    }
                }
            }
        }
    }

    /// Seconds since the service started, on the monotonic clock: the tracker's time.
    private var now: Double { Double((ContinuousClock.now - epoch) / .milliseconds(1)) / 1000 }

    /// One check's loop: a run at once, then one every `interval_s`, until graceful shutdown.
    /// Runs of one check never overlap: the next waits for the one before.
    private func loop(_ check: ServiceCheckConfig, requestRecovery: AsyncStream<Int>.Continuation) async {
        let known = board.checks.first { $0.name == check.name }?.status.map(CheckStatus.init)
        var tracker = CheckTracker(policy: check.policy, status: known)
        await runOnce(check, tracker: &tracker, requestRecovery: requestRecovery)
        let interval = Duration.milliseconds(Int64(check.interval * 1000))
        for await _ in AsyncTimerSequence(interval: interval, clock: .continuous).cancelOnGracefulShutdown() {
            await runOnce(check, tracker: &tracker, requestRecovery: requestRecovery)
        }
    }

    /// Runs the check, feeds the tracker, updates the board, and turns the tracker's directives
    /// into a `check.changed` report (output cut to 200 characters) or a recovery request.
    private func runOnce(
        _ check: ServiceCheckConfig, tracker: inout CheckTracker, requestRecovery: AsyncStream<Int>.Continuation
    ) async {
        let (outcome, output) = await Self.execute(check)
        let directives = tracker.onResult(outcome, at: now)
        let checkedAt = ISOTime.string(Date())
        let status = tracker.status.map(CheckResult.Status.init)
        let (failures, successes) = (tracker.consecutiveFailures, tracker.consecutiveSuccesses)
        board.change(check.name) { state in
            state.status = status
            state.lastOutcome = CheckResult.Status(outcome)
            state.output = output
            state.consecutiveFailures = failures
            state.consecutiveSuccesses = successes
            state.checkedAt = checkedAt
        }
        for directive in directives {
            switch directive {
            case .changed(let from, let to):
                logger.notice(
                    "check changed",
                    metadata: [
                        "nodeagent.check": "\(check.name)", "nodeagent.from": "\(from?.rawValue ?? "none")",
                        "nodeagent.to": "\(to.rawValue)", "nodeagent.output": "\(output)",
                    ])
                await report(
                    NodeEvent(
                        type: EventType.checkChanged,
                        data: [
                            "check": .string(check.name), "kind": .string(check.kind),
                            "from": from.map { .string($0.rawValue) } ?? .null,
                            "to": .string(to.rawValue), "output": .string(String(output.prefix(200))),
                        ]))
            case .runRecovery:
                requestRecovery.yield(tracker.recoveries)
            }
        }
    }

    /// Runs the recovery command once (argv, no shell, AURORA_* variables removed, timeout).
    private func recover(_ check: ServiceCheckConfig, attempt: Int) async {
        guard let argv = check.recovery else { return }
        let startedAt = ISOTime.string(Date())
        logger.warning(
            "running a recovery action",
            metadata: [
                "nodeagent.check": "\(check.name)", "nodeagent.program": "\(argv[0])",
                "nodeagent.attempt": "\(attempt)",
            ])
        let environment = ProcessInfo.processInfo.environment.filter { !$0.key.hasPrefix("AURORA_") }
        var data: [String: JSONValue] = [
            "check": .string(check.name), "program": .string(argv[0]), "attempt": .number(Double(attempt)),
        ]
        var exitCode: Int?
        do {
            let outcome = try await cancelWhenGracefulShutdown {
                try await ExecRunner.run(
                    argv, environment: environment, timeout: .milliseconds(Int64(check.recoveryTimeout * 1000)),
                    maxOutput: 4096)
            }
            exitCode = outcome.exitCode.map(Int.init) ?? outcome.signal.map { 128 + Int($0) }
            data["exit_code"] = exitCode.map { .number(Double($0)) } ?? .null
            data["timed_out"] = .bool(outcome.timedOut)
            data["duration_s"] = .number(outcome.duration.seconds.rounded(toPlaces: 3))
            logger.notice(
                "recovery action finished",
                metadata: [
                    "nodeagent.check": "\(check.name)", "nodeagent.exit_code": "\(exitCode ?? -1)",
                    "nodeagent.timed_out": "\(outcome.timedOut)",
                ])
        } catch {
            data["error"] = .string((error as? AgentError)?.message ?? "stopped")
            logger.error(
                "recovery action failed",
                metadata: [
                    "nodeagent.check": "\(check.name)",
                    "nodeagent.error": "\((error as? AgentError)?.message ?? "stopped")",
                ])
        }
        board.change(check.name) { state in
            state.recoveries = attempt
            state.lastRecoveryAt = startedAt
            state.lastRecoveryExitCode = exitCode
        }
        await report(NodeEvent(type: EventType.checkRecovery, data: data))
    }

    /// One run of a check: its own outcome and a short output.
    static func execute(_ check: ServiceCheckConfig) async -> (CheckStatus, String) {
        let timeout = Duration.milliseconds(Int64(check.timeout * 1000))
        switch check.target {
        case .http(let url, let method, let expect):
            var request = HTTPClientRequest(url: url)
            request.method = .init(rawValue: method)
            let started = ContinuousClock.now
            do {
                let response = try await LeadClient.http.execute(
                    request, timeout: .milliseconds(Int64(check.timeout * 1000)))
                _ = try await response.body.collect(upTo: 1 << 20)
                let status = Int(response.status.code)
                let ms = Int(started.duration(to: .now) / .milliseconds(1))
                let outcome: CheckStatus =
                    if let expect { status == expect ? .passing : .critical } else {
                        (200..<300).contains(status) ? .passing : status == 429 ? .warning : .critical
                    }
                return (outcome, "HTTP \(status) in \(ms) ms")
            } catch {
                return (.critical, "HTTP \(method) failed: \(AuroraClientError.reason(error))")
            }
        case .tcp(let host, let port):
            switch await TCPProbe.connect(host: host, port: port, timeout: timeout) {
            case .connected(let elapsed):
                return (.passing, String(format: "connected in %.1f ms", Double(elapsed / .microseconds(1)) / 1000))
            case .refused: return (.critical, "connection refused")
            case .inconclusive: return (.critical, "no connection within \(check.timeout) s")
            }
        case .command(let argv):
            let environment = ProcessInfo.processInfo.environment.filter { !$0.key.hasPrefix("AURORA_") }
            do {
                let outcome = try await ExecRunner.run(
                    argv, environment: environment, timeout: timeout, maxOutput: 4096)
                let text = String(decoding: outcome.stdout + outcome.stderr, as: UTF8.self).trimmingCharacters(
                    in: .whitespacesAndNewlines)
                let line = text.split(separator: "\n").first.map { String($0.prefix(200)) } ?? ""
                if outcome.timedOut { return (.critical, "timed out after \(check.timeout) s") }
                guard let code = outcome.exitCode else { return (.critical, "killed by signal \(outcome.signal ?? 0)") }
                let status: CheckStatus = code == 0 ? .passing : code == 1 ? .warning : .critical
                return (status, "exit \(code)" + (line.isEmpty ? "" : ": \(line)"))
            } catch {
                return (.critical, error.message)
            }
        }
    }
}

// MARK: - Resource alerts

/// Samples CPU (`/proc/stat`), memory (`/proc/meminfo`) and the data directory's file system
/// every `alerts.interval_s` and raises and clears alerts through the pure ``ResourceWatch``:
/// `alert.raised` / `alert.cleared` reports (through the outbox) and the board.
final class ResourceMonitorService: Service {
    /// Percentages that raise an alert (`alerts.cpu_pct` for `alerts.cpu_for_s`, `memory_pct`, `disk_pct`).
    let thresholds: ResourceThresholds
    /// Seconds between samples (`alerts.interval_s`).
    let interval: Double
    let dataDir: String
    let board: CheckBoard
    let logger: Logger
    let report: @Sendable (NodeEvent) async -> Void
    private let epoch = ContinuousClock.now

    init(config: NodeConfig, board: CheckBoard, logger: Logger, report: @escaping @Sendable (NodeEvent) async -> Void) {
        thresholds = config.alertThresholds
        interval = config.alertInterval
        dataDir = config.dataDir
        self.board = board
        var logger = logger
        logger[metadataKey: "nodeagent.subsystem"] = "alerts"
        self.logger = logger
        self.report = report
    }

    /// The sampling loop, every `alerts.interval_s` until graceful shutdown; CPU is the busy share
    /// between two samples, so the first sample has none. Alerts already on the board (a restart
    /// of the subsystem) stay raised rather than being raised again.
    func run() async throws {
        var watch = ResourceWatch(
            thresholds: thresholds,
            active: Set(board.activeAlerts.compactMap { WatchedResource(rawValue: $0.resource) }))
        var previous = CPUTimes.read()
        for await _ in AsyncTimerSequence(interval: .milliseconds(Int64(interval * 1000)), clock: .continuous)
            .cancelOnGracefulShutdown()
        {
            let current = CPUTimes.read()
            let cpu = previous.flatMap { before in current.flatMap { $0.busyPercent(since: before) } }
            previous = current
            let now = Double((ContinuousClock.now - epoch) / .milliseconds(1)) / 1000
            for directive in watch.onSample(
                cpuPct: cpu, memoryPct: Self.memoryPercent(), diskPct: Self.diskPercent(dataDir), at: now)
            {
                switch directive {
                case .raised(let resource, let value, let threshold):
                    board.raise(
                        ResourceAlert(
                            resource: resource.rawValue, valuePct: value.rounded(toPlaces: 1), thresholdPct: threshold,
                            since: ISOTime.string(Date())))
                    logger.warning(
                        "resource alert raised",
                        metadata: [
                            "nodeagent.resource": "\(resource.rawValue)",
                            "nodeagent.value_pct": "\(value.rounded(toPlaces: 1))",
                        ])
                    var data: [String: JSONValue] = [
                        "resource": .string(resource.rawValue), "value_pct": .number(value.rounded(toPlaces: 1)),
                        "threshold_pct": .number(threshold),
                    ]
                    if resource == .cpu { data["for_s"] = .number(thresholds.cpuFor) }
                    await report(NodeEvent(type: EventType.alertRaised, data: data))
                case .cleared(let resource, let value, let threshold):
                    board.clear(resource.rawValue)
                    logger.notice(
                        "resource alert cleared",
                        metadata: [
                            "nodeagent.resource": "\(resource.rawValue)",
                            "nodeagent.value_pct": "\(value.rounded(toPlaces: 1))",
                        ])
                    await report(
                        NodeEvent(
                            type: EventType.alertCleared,
                            data: [
                                "resource": .string(resource.rawValue),
                                "value_pct": .number(value.rounded(toPlaces: 1)), "threshold_pct": .number(threshold),
                            ]))
                }
            }
        }
    }

    /// Memory in use: 100 × (1 − MemAvailable / MemTotal).
    static func memoryPercent() -> Double? {
        guard let text = try? String(contentsOfFile: "/proc/meminfo", encoding: .utf8) else { return nil }
        var total: Double?, available: Double?
        for line in text.split(separator: "\n") {
            let fields = line.split(separator: " ", omittingEmptySubsequences: true)
            guard fields.count >= 2, let value = Double(fields[1]) else { continue }
            if fields[0] == "MemTotal:" { total = value }
            if fields[0] == "MemAvailable:" { available = value }
        }
        guard let total, total > 0, let available else { return nil }
        return 100 * (1 - available / total)
    }

    /// The data directory's file system, percent used (as `df` counts it).
    static func diskPercent(_ path: String) -> Double? {
        var stats = statvfs()
        guard statvfs(path, &stats) == 0, stats.f_blocks > 0 else { return nil }
        let used = Double(stats.f_blocks - stats.f_bfree)
        let available = Double(stats.f_bavail)
        return used + available > 0 ? 100 * used / (used + available) : nil
    }
}

/// The aggregate CPU counters of `/proc/stat`.
struct CPUTimes: Sendable {
    /// Jiffies spent busy, and in all, since boot (all CPUs together).
    var busy: UInt64
    var total: UInt64

    /// The `cpu` line of `/proc/stat`: idle and iowait count as idle; the total is the first eight
    /// fields (guest time is already in user); nil when the file cannot be read.
    static func read() -> CPUTimes? {
        guard let text = try? String(contentsOfFile: "/proc/stat", encoding: .utf8),
            let line = text.split(separator: "\n").first, line.hasPrefix("cpu ")
        else { return nil }
        let values = line.split(separator: " ").dropFirst().compactMap { UInt64($0) }
        guard values.count >= 4 else { return nil }
        let idle = values[3] + (values.count > 4 ? values[4] : 0)  // idle + iowait
        let total = values.prefix(8).reduce(0, +)
        return CPUTimes(busy: total - idle, total: total)
    }

    /// Busy share in percent between `before` and now; nil when no time passed between them.
    func busyPercent(since before: CPUTimes) -> Double? {
        guard total > before.total else { return nil }
        return 100 * Double(busy &- before.busy) / Double(total - before.total)
    }
}
