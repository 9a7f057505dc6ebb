import AuroraAPI
import Foundation
import Logging
import Mesh
import Testing

@testable import NodeAgent

@Suite("Service checks: thresholds and recovery window (pure core, test clock)")
struct ServiceCheckTests {
    @Test("the first result sets the status; then critical only after N failures in a row, passing after M successes")
    func thresholds() {
        var tracker = CheckTracker(policy: CheckPolicy(successBeforePassing: 2, failuresBeforeCritical: 3))
        #expect(tracker.onResult(.passing, at: 0) == [.changed(from: nil, to: .passing)])
        #expect(tracker.onResult(.critical, at: 1).isEmpty)
        #expect(tracker.onResult(.critical, at: 2).isEmpty)
        #expect(tracker.status == .passing && tracker.consecutiveFailures == 2)
        // A success in between resets the count.
        #expect(tracker.onResult(.passing, at: 3).isEmpty)
        #expect(tracker.onResult(.critical, at: 4).isEmpty && tracker.onResult(.critical, at: 5).isEmpty)
        #expect(tracker.onResult(.critical, at: 6) == [.changed(from: .passing, to: .critical)])
        #expect(tracker.onResult(.critical, at: 7).isEmpty)
        #expect(tracker.onResult(.passing, at: 8).isEmpty, "one success is not enough")
        #expect(tracker.onResult(.critical, at: 9).isEmpty)
        #expect(tracker.onResult(.passing, at: 10).isEmpty)
        #expect(tracker.onResult(.passing, at: 11) == [.changed(from: .critical, to: .passing)])
    }

    @Test("warning results warn; failures below the critical threshold warn when failures_before_warning says so")
    func warnings() {
        var tracker = CheckTracker(policy: CheckPolicy(failuresBeforeWarning: 1, failuresBeforeCritical: 3))
        _ = tracker.onResult(.passing, at: 0)
        #expect(tracker.onResult(.critical, at: 1) == [.changed(from: .passing, to: .warning)])
        #expect(tracker.onResult(.critical, at: 2).isEmpty)
        #expect(tracker.onResult(.critical, at: 3) == [.changed(from: .warning, to: .critical)])
        #expect(tracker.onResult(.warning, at: 4) == [.changed(from: .critical, to: .warning)])
        var plain = CheckTracker(policy: CheckPolicy(failuresBeforeCritical: 1))
        _ = plain.onResult(.passing, at: 0)
        #expect(
            plain.onResult(.warning, at: 1) == [.changed(from: .passing, to: .warning)],
            "a warning result is never critical")
        #expect(plain.onResult(.warning, at: 2).isEmpty)
        #expect(
            CheckPolicy(failuresBeforeWarning: 9, failuresBeforeCritical: 2).failuresBeforeWarning == 2,
            "never above critical")
        var carried = CheckTracker(policy: CheckPolicy(), status: .critical)
        #expect(carried.onResult(.critical, at: 0).isEmpty, "a restarted check does not announce a status it had")
    }

    @Test("recovery runs after N failures, then at most once per window while failures go on, not in a loop")
    func recoveryWindow() {
        var tracker = CheckTracker(policy: CheckPolicy(failuresBeforeCritical: 3, recoveryAfter: 3, recoveryWindow: 60))
        _ = tracker.onResult(.passing, at: 0)
        var runs: [Double] = []
        // Failing every second for five minutes.
        for second in 1...300 {
            if tracker.onResult(.critical, at: Double(second)).contains(.runRecovery) { runs.append(Double(second)) }
        }
        #expect(runs == [3, 63, 123, 183, 243])
        #expect(tracker.recoveries == 5)
        // Back to passing, then failing again within the window: no recovery until the window has passed.
        _ = tracker.onResult(.passing, at: 301)
        var again: [Double] = []
        for second in 302...320 where tracker.onResult(.critical, at: Double(second)).contains(.runRecovery) {
            again.append(Double(second))
        }
        #expect(again == [304], "303 is the 60 s after 243; the third failure in a row is at 304")
        var none = CheckTracker(policy: CheckPolicy(failuresBeforeCritical: 1))
        for second in 0..<20 { #expect(!none.onResult(.critical, at: Double(second)).contains(.runRecovery)) }
    }

    @Test(
        "resource alerts: CPU only after it stays high, memory and disk at once, each raised and cleared once with a margin"
    )
    func resourceAlerts() {
        var watch = ResourceWatch(
            thresholds: ResourceThresholds(cpuPct: 80, cpuFor: 300, memoryPct: 90, diskPct: 85, clearMargin: 5))
        #expect(watch.onSample(cpuPct: 95, memoryPct: 50, diskPct: 50, at: 0).isEmpty)
        #expect(watch.onSample(cpuPct: 95, memoryPct: 50, diskPct: 50, at: 200).isEmpty)
        // A dip below the threshold restarts the clock.
        #expect(watch.onSample(cpuPct: 70, memoryPct: 50, diskPct: 50, at: 250).isEmpty)
        #expect(watch.onSample(cpuPct: 90, memoryPct: 50, diskPct: 50, at: 260).isEmpty)
        #expect(watch.onSample(cpuPct: 90, memoryPct: 50, diskPct: 50, at: 500).isEmpty)
        #expect(
            watch.onSample(cpuPct: 90, memoryPct: 50, diskPct: 50, at: 560) == [
                .raised(.cpu, valuePct: 90, thresholdPct: 80)
            ])
        #expect(
            watch.onSample(cpuPct: 99, memoryPct: 91, diskPct: 86, at: 570)
                == [.raised(.memory, valuePct: 91, thresholdPct: 90), .raised(.disk, valuePct: 86, thresholdPct: 85)])
        #expect(
            watch.onSample(cpuPct: 78, memoryPct: 88, diskPct: 84, at: 580).isEmpty, "within the margin: still raised")
        #expect(
            watch.onSample(cpuPct: 74, memoryPct: 84, diskPct: 79, at: 590)
                == [
                    .cleared(.cpu, valuePct: 74, thresholdPct: 80), .cleared(.memory, valuePct: 84, thresholdPct: 90),
                    .cleared(.disk, valuePct: 79, thresholdPct: 85),
                ])
        #expect(watch.active.isEmpty)
        #expect(
            watch.onSample(cpuPct: nil, memoryPct: nil, diskPct: nil, at: 600).isEmpty, "unknown values change nothing")
    }

    @Test(
        "Redis fan-out: resume after the stream's end, refill an emptied stream up to its length, publish each event once"
    )
    func fanOut() {
        var fanOut = EventFanOut(maxLength: 100)
        #expect(!fanOut.needs(1), "nothing before a connect")
        #expect(fanOut.connected(streamLast: nil, newest: 40) == 0)
        for seq in Int64(1)...40 {
            #expect(fanOut.needs(seq) && fanOut.publishes(seq))
            fanOut.wrote(seq)
        }
        #expect(!fanOut.needs(40))
        fanOut.disconnected()
        // Redis came back with the stream intact (paused): resume right after its end.
        #expect(fanOut.connected(streamLast: 38, newest: 45) == 38)
        #expect(
            fanOut.needs(39) && !fanOut.publishes(39),
            "written again (Redis refuses the duplicate), not published again")
        fanOut.wrote(39, duplicate: true)
        fanOut.wrote(40, duplicate: true)
        #expect(fanOut.publishes(41))
        fanOut.wrote(41)
        fanOut.disconnected()
        // Redis restarted empty, far behind: refill the newest 100 only; the ones already sent are not published twice.
        #expect(fanOut.connected(streamLast: nil, newest: 500) == 400)
        #expect(fanOut.publishes(401))
        var fresh = EventFanOut(maxLength: 100)
        #expect(fresh.connected(streamLast: 90, newest: 5000) == 90, "an existing stream is never left with a gap")
        #expect(EventFanOut.entryID(seq: 42) == "42-0")
    }
}

@Suite("Service check configuration")
struct ServiceCheckConfigTests {
    func parse(_ yaml: String) throws -> [ServiceCheckConfig] {
        let layer = try ConfigFile.parse(yaml, file: "node.yaml", kind: .nodeFile)
        guard case .checks(let checks)? = layer.values["checks"]?.value else { return [] }
        return checks
    }

    @Test("http, tcp and command checks parse with defaults and thresholds")
    func parses() throws {
        let checks = try parse(
            """
            checks:
              - {name: api, http: "http://127.0.0.1:8080/health", interval_s: 5, failures_before_critical: 3, recovery: [systemctl, restart, api.service]}
              - {name: db, tcp: "127.0.0.1:5432"}
              - name: disk
                args: [/usr/lib/nagios/check_disk, -w, "80"]
                success_before_passing: 2
            """)
        #expect(checks.count == 3)
        #expect(checks[0].target == .http(url: "http://127.0.0.1:8080/health", method: "GET", expectStatus: nil))
        #expect(checks[0].interval == 5 && checks[0].timeout == 2)
        #expect(checks[0].policy == CheckPolicy(failuresBeforeCritical: 3, recoveryAfter: 3, recoveryWindow: 300))
        #expect(checks[0].recovery == ["systemctl", "restart", "api.service"])
        #expect(checks[1].target == .tcp(host: "127.0.0.1", port: 5432) && checks[1].interval == 10)
        #expect(
            checks[2].target == .command(["/usr/lib/nagios/check_disk", "-w", "80"])
                && checks[2].policy.successBeforePassing == 2)
    }

    @Test(
        "bad entries name the file, line, entry and key",
        arguments: [
            ("checks:\n  - {name: a, http: \"http://x\", tcp: \"h:1\"}\n", "needs exactly one of 'http'"),
            ("checks:\n  - {http: \"http://x\"}\n", "checks[0] needs 'name'"),
            ("checks:\n  - {name: a, tcp: nowhere}\n", "'checks[0].tcp' must be HOST:PORT"),
            ("checks:\n  - {name: a, args: \"ls -l\"}\n", "'checks[0].args' must be a non-empty list"),
            (
                "checks:\n  - {name: a, tcp: \"h:1\", interval_s: 0}\n",
                "'checks[0].interval_s' must be a number in 0.05...86400.0"
            ),
            (
                "checks:\n  - {name: a, tcp: \"h:1\", recovery_window_s: 5}\n",
                "'checks[0].recovery_window_s' needs 'recovery'"
            ),
            (
                "checks:\n  - {name: a, tcp: \"h:1\", expect_status: 200}\n",
                "'checks[0].expect_status' applies to http checks only"
            ),
            ("checks:\n  - {name: a, tcp: \"h:1\", colour: red}\n", "unknown key 'checks[0].colour'"),
            ("checks:\n  - {name: a, tcp: \"h:1\"}\n  - {name: a, tcp: \"h:2\"}\n", "two checks are named 'a'"),
            (
                "checks:\n  - {name: a, tcp: \"h:1\", failures_before_warning: 3}\n",
                "must not exceed 'failures_before_critical'"
            ),
        ])
    func refuses(_ yaml: String, _ message: String) {
        let error = #expect(throws: AgentError.self) { try parse(yaml) }
        #expect(error?.message.contains(message) == true, "\(error?.message ?? "no error")")
        #expect(error?.message.hasPrefix("node.yaml:") == true)
    }

    @Test("alert thresholds come from alerts.* and the Redis URL's password never shows")
    func alertsAndRedis() throws {
        let resolved = try ResolvedConfig.resolve(
            ConfigInputs(
                profile: try ConfigFile.parse(
                    "role: lead\nalerts:\n  cpu_pct: 70\n  cpu_for_s: 60\n  disk_pct: 95\nevents:\n  redis: redis://:s3cret@127.0.0.1:6380/2\n",
                    file: "p.yaml", kind: .profile),
                hostName: "h", workingDirectory: "/"))
        let config = NodeConfig(resolved: resolved, profileFile: "p.yaml")
        #expect(config.alertThresholds == ResourceThresholds(cpuPct: 70, cpuFor: 60, memoryPct: 90, diskPct: 95))
        #expect(!resolved.renderTable().contains("s3cret"))
        let endpoint = try RedisEndpoint(url: try #require(config.redisURL))
        #expect(
            endpoint.host == "127.0.0.1" && endpoint.port == 6380 && endpoint.database == 2
                && endpoint.password == "s3cret")
        #expect(!"\(endpoint)".contains("s3cret"))
        #expect(throws: AgentError.self) { try RedisEndpoint(url: "redis://127.0.0.1/db") }
    }
}

@Suite("Log ring and event filters")
struct LogRingTests {
    @Test("each subsystem keeps its own last N lines; since, level and limit select")
    func ring() {
        let ring = LogRing()
        ring.configure(linesPerSubsystem: 3)
        for index in 1...5 {
            ring.append(level: .info, message: "gpu \(index)", subsystem: "gpu-worker", metadata: [:])
        }
        ring.append(level: .error, message: "store down", subsystem: "store", metadata: ["error": "refused"])
        #expect(ring.lines(subsystem: "gpu-worker", limit: 10).map(\.message) == ["gpu 3", "gpu 4", "gpu 5"])
        #expect(ring.lines(subsystem: "store", limit: 10).first?.metadata == ["error": "refused"])
        let all = ring.lines(subsystem: nil, limit: 10)
        #expect(all.map(\.seq) == all.map(\.seq).sorted() && all.count == 4)
        #expect(ring.lines(subsystem: nil, level: .error, limit: 10).map(\.message) == ["store down"])
        #expect(ring.lines(subsystem: nil, since: all[1].seq, limit: 10).count == 2)
        #expect(ring.lines(subsystem: nil, limit: 1).map(\.message) == ["store down"], "the newest")
        #expect(ring.subsystems == ["gpu-worker", "store"])
        ring.configure(linesPerSubsystem: 1)
        #expect(ring.lines(subsystem: "gpu-worker", limit: 10).map(\.message) == ["gpu 5"])
    }

    @Test("the ring handler files lines by nodeagent.subsystem and drops the prefix from metadata")
    func handler() {
        let ring = LogRing()
        var logger = Logger(label: "test") { label in
            var handler = RingLogHandler(label: label, ring: ring)
            handler.logLevel = .debug
            return handler
        }
        logger[metadataKey: "nodeagent.subsystem"] = "checks"
        logger.notice("check changed", metadata: ["nodeagent.check": "api"])
        logger.trace("too verbose")
        let lines = ring.lines(subsystem: "checks", limit: 10)
        #expect(
            lines.map(\.message) == ["check changed"] && lines.first?.metadata == ["check": "api"]
                && lines.first?.level == "notice")
    }

    @Test("event filters: exact types, prefixes and a node")
    func filters() throws {
        let event = MeshEvent(id: "1", seq: 1, type: "job.succeeded", at: "", node: "gpu-1", data: [:])
        #expect(try EventFilter(types: nil, node: nil).matches(event))
        #expect(try EventFilter(types: "job.*", node: nil).matches(event))
        #expect(try EventFilter(types: "node.joined,job.succeeded", node: "gpu-1").matches(event))
        #expect(try !EventFilter(types: "job.failed", node: nil).matches(event))
        #expect(try !EventFilter(types: nil, node: "gpu-2").matches(event))
        #expect(throws: Refusal.self) { try EventFilter(types: "job.*,", node: nil) }
        #expect(throws: Refusal.self) { try EventFilter(types: "j*b", node: nil) }
    }
}
