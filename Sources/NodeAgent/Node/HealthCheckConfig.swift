import AsyncAlgorithms
import AsyncHTTPClient
import AuroraAPI
import Foundation
import Logging
import Mesh
import NIOCore
import ServiceLifecycle
import Synchronization
import Yams

// MARK: - Configuration

/// One service check of the profile (`checks[]`), Consul-style: an HTTP, TCP or command check
/// with an interval, a timeout, thresholds and an optional recovery command.
public struct ServiceCheckConfig: Sendable, Equatable {
    /// What the check does.
    public enum Target: Sendable, Equatable {
        /// A request to the URL: 2xx (or `expect_status`) is passing, 429 warning, anything else critical.
        case http(url: String, method: String, expectStatus: Int?)
        /// A TCP connect: connected is passing, anything else critical.
        case tcp(host: String, port: Int)
        /// A command (argv, no shell): exit 0 passing, 1 warning, anything else or a timeout critical.
        case command([String])
    }

    /// Unique among the profile's checks: letters, digits, `-`, `_`, `.`, at most 63.
    public var name: String
    public var target: Target
    /// Seconds between runs, and the longest a run may take.
    public var interval: Double
    /// Seconds a run may take before it counts as critical (default: the interval, at most 2 s).
    public var timeout: Double
    /// How many results change the status (`success_before_passing`, `failures_before_warning`,
    /// `failures_before_critical`) and when recovery runs (`recovery_after`, `recovery_window_s`).
    public var policy: CheckPolicy
    /// The recovery command (argv, no shell), e.g. `[systemctl, restart, api.service]`.
    public var recovery: [String]?
    /// Seconds the recovery command may run before it is killed (`recovery_timeout_s`, default 60).
    public var recoveryTimeout: Double

    /// `http`, `tcp` or `command`, as the API and events name it.
    public var kind: String {
        switch target {
        case .http: "http"
        case .tcp: "tcp"
        case .command: "command"
        }
    }

    /// The URL, HOST:PORT or program, for people (never the whole command line).
    public var targetDescription: String {
        switch target {
        case .http(let url, _, _): url
        case .tcp(let host, let port): "\(host):\(port)"
        case .command(let argv): argv.first ?? ""
        }
    }

    /// The keys a `checks:` entry may have; any other is a configuration error.
    static let keys = [
        "name", "http", "method", "expect_status", "tcp", "args", "interval_s", "timeout_s", "success_before_passing",
        "failures_before_warning", "failures_before_critical", "recovery", "recovery_after", "recovery_window_s",
        "recovery_timeout_s",
    ]

    /// Parses one `checks:` entry; errors name the file, line, entry and key.
    static func parse(_ node: Yams.Node, position: Int, origin: String) throws(AgentError) -> ServiceCheckConfig {
        let at = "checks[\(position)]"
        guard case .mapping(let mapping) = node else {
            throw AgentError(.config, "\(origin): \(at) must be a mapping {name, http | tcp | args, ...}")
        }
        var scalars: [String: String] = [:]
        var lists: [String: [String]] = [:]
        for (keyNode, valueNode) in mapping {
            guard let key = keyNode.string, keys.contains(key) else {
                throw AgentError(
                    .config,
                    "\(origin): unknown key '\(at).\(keyNode.string ?? "?")'; known: \(keys.joined(separator: ", "))")
            }
            if key == "args" || key == "recovery" {
                guard case .sequence(let items) = valueNode, !items.isEmpty else {
                    throw AgentError(
                        .config,
                        "\(origin): '\(at).\(key)' must be a non-empty list: [program, argument, ...] (no shell)")
                }
                var argv: [String] = []
                for item in items {
                    guard case .scalar(let scalar) = item else {
                        throw AgentError(.config, "\(origin): '\(at).\(key)' must be a list of strings")
                    }
                    argv.append(scalar.string)
                }
                guard !argv[0].isEmpty else {
                    throw AgentError(.config, "\(origin): '\(at).\(key)' must start with a program")
                }
                lists[key] = argv
            } else {
                guard case .scalar(let scalar) = valueNode else {
                    throw AgentError(.config, "\(origin): '\(at).\(key)' must be a single value")
                }
                scalars[key] = scalar.string
            }
        }
        func number(_ key: String, _ fallback: Double, _ range: ClosedRange<Double>) throws(AgentError) -> Double {
            guard let text = scalars[key] else { return fallback }
            guard let value = Double(text), range.contains(value) else {
                throw AgentError(
                    .config,
                    "\(origin): '\(at).\(key)' must be a number in \(range.lowerBound)...\(range.upperBound), got '\(text)'"
                )
            }
            return value
        }
        func count(_ key: String, _ fallback: Int?) throws(AgentError) -> Int? {
            guard let text = scalars[key] else { return fallback }
            guard let value = Int(text), (1...1000).contains(value) else {
                throw AgentError(.config, "\(origin): '\(at).\(key)' must be an integer in 1...1000, got '\(text)'")
            }
            return value
        }
        guard let name = scalars["name"], !name.isEmpty else {
            throw AgentError(.config, "\(origin): \(at) needs 'name'")
        }
        guard name.count <= 63, name.allSatisfy({ $0.isASCII && ($0.isLetter || $0.isNumber || "-_.".contains($0)) })
        else {
            throw AgentError(
                .config, "\(origin): '\(at).name' must be letters, digits, '-', '_' or '.' (at most 63), got '\(name)'")
        }
        let targets = [scalars["http"] != nil, scalars["tcp"] != nil, lists["args"] != nil].filter { $0 }.count
        guard targets == 1 else {
            throw AgentError(
                .config,
                "\(origin): check '\(name)' needs exactly one of 'http' (a URL), 'tcp' (HOST:PORT) or 'args' (a command)"
            )
        }
        let target: Target
        if let url = scalars["http"] {
            guard let parsed = URL(string: url), ["http", "https"].contains(parsed.scheme ?? ""), parsed.host != nil
            else {
                throw AgentError(.config, "\(origin): '\(at).http' must be an http(s) URL, got '\(url)'")
            }
            let method = (scalars["method"] ?? "GET").uppercased()
            guard ["GET", "HEAD", "POST"].contains(method) else {
                throw AgentError(.config, "\(origin): '\(at).method' must be GET, HEAD or POST")
            }
            let expect = try scalars["expect_status"].map { text throws(AgentError) -> Int in
                guard let status = Int(text), (100...599).contains(status) else {
                    throw AgentError(
                        .config, "\(origin): '\(at).expect_status' must be an HTTP status 100...599, got '\(text)'")
                }
                return status
            }
            target = .http(url: url, method: method, expectStatus: expect)
        } else if let text = scalars["tcp"] {
            guard let address = try? HostPort(parsing: text) else {
                throw AgentError(.config, "\(origin): '\(at).tcp' must be HOST:PORT, got '\(text)'")
            }
            target = .tcp(host: address.host, port: address.port)
        } else {
            target = .command(lists["args"]!)
        }
        for key in ["method", "expect_status"] where scalars[key] != nil && target.isHTTP == false {
            throw AgentError(.config, "\(origin): '\(at).\(key)' applies to http checks only")
        }
        let critical = try count("failures_before_critical", 1)!
        let warning = try count("failures_before_warning", nil)
        if let warning, warning > critical {
            throw AgentError(
                .config,
                "\(origin): '\(at).failures_before_warning' (\(warning)) must not exceed 'failures_before_critical' (\(critical))"
            )
        }
        let recovery = lists["recovery"]
        if recovery == nil,
            let key = ["recovery_after", "recovery_window_s", "recovery_timeout_s"].first(where: { scalars[$0] != nil })
        {
            throw AgentError(.config, "\(origin): '\(at).\(key)' needs 'recovery' (the command to run)")
        }
        let interval = try number("interval_s", 10, 0.05...86_400)
        let timeout = try number("timeout_s", min(2, interval), 0.05...600)
        let policy = CheckPolicy(
            successBeforePassing: try count("success_before_passing", 1)!, failuresBeforeWarning: warning,
            failuresBeforeCritical: critical,
            recoveryAfter: recovery == nil ? nil : try count("recovery_after", critical),
            recoveryWindow: try number("recovery_window_s", 300, 0...604_800))
        return ServiceCheckConfig(
            name: name, target: target, interval: interval, timeout: timeout, policy: policy, recovery: recovery,
            recoveryTimeout: try number("recovery_timeout_s", 60, 0.1...3600))
    }
}

extension ServiceCheckConfig.Target {
    var isHTTP: Bool { if case .http = self { true } else { false } }
}
