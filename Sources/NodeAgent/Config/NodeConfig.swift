import AuroraAPI
import Foundation
import Logging
import Mesh

/// Everything that goes into resolving a node's configuration. Pure data, so resolution is a
/// pure function and tested without files or a process environment.
public struct ConfigInputs: Sendable {
    /// The profile file's layer (lowest precedence but defaults).
    public var profile: ConfigLayer
    /// The node file's layer (`--config FILE`), if any.
    public var nodeFile: ConfigLayer?
    /// The process environment.
    public var environment: [String: String]
    /// Values given as flags, by key path (`data_dir` for `--data-dir`).
    public var flags: [String: String]
    /// The host name, for the default node name.
    public var hostName: String
    /// For relative paths in flags and variables.
    public var workingDirectory: String

    public init(
        profile: ConfigLayer, nodeFile: ConfigLayer? = nil, environment: [String: String] = [:],
        flags: [String: String] = [:], hostName: String, workingDirectory: String
    ) {
        self.profile = profile
        self.nodeFile = nodeFile
        self.environment = environment
        self.flags = flags
        self.hostName = hostName
        self.workingDirectory = workingDirectory
    }
}

/// Every key with its value and where the value came from, in schema order.
public struct ResolvedConfig: Sendable {
    /// One resolved key.
    public struct Entry: Sendable {
        /// The schema entry, with its kind, documentation and whether it is secret.
        public let key: ConfigKey
        public let value: ConfigValue
        public let source: ConfigSource
    }

    /// One entry per ``ConfigSchema/keys`` entry, in the same order.
    public let entries: [Entry]

    /// The value of `path`; every schema key has one after resolution.
    public subscript(path: String) -> ConfigValue {
        entries.first { $0.key.path == path }!.value
    }

    /// The source of `path`.
    public func source(of path: String) -> ConfigSource {
        entries.first { $0.key.path == path }!.source
    }

    /// Resolves flags > environment > node file > profile > default, parsing and validating
    /// each value where it came from.
    public static func resolve(_ inputs: ConfigInputs) throws(AgentError) -> ResolvedConfig {
        var entries: [Entry] = []
        for key in ConfigSchema.keys {
            var resolved: (ConfigValue, ConfigSource)
            if let text = inputs.flags[key.path] {
                let flag = key.flag ?? "--\(key.path)"
                resolved = (try key.kind.parse(text, key: key.path, origin: "flag \(flag)"), .flag(flag))
            } else if let variable = key.environment, let text = inputs.environment[variable], !text.isEmpty {
                resolved = (
                    try key.kind.parse(text, key: key.path, origin: "environment \(variable)"), .environment(variable)
                )
            } else if let fromFile = inputs.nodeFile?.values[key.path] {
                resolved = fromFile
            } else if let fromProfile = inputs.profile.values[key.path] {
                resolved = fromProfile
            } else if let value = key.defaultValue {
                resolved = (value, .defaultValue)
            } else if key.path == "name" {
                guard let name = NodeName.fromHostName(inputs.hostName) else {
                    throw AgentError(
                        .config, "the host name '\(inputs.hostName)' makes no valid node name; set NODE_NAME or --name")
                }
                resolved = (.string(name.value), .computed("host name"))
            } else {
                throw AgentError(
                    .config,
                    "'\(key.path)' is not set; the profile should set it\(key.environment.map { " (or set \($0))" } ?? "")"
                )
            }
            if case .path = key.kind, case .string(let path) = resolved.0, !path.hasPrefix("/") {
                resolved.0 = .string(
                    URL(
                        fileURLWithPath: path,
                        relativeTo: URL(fileURLWithPath: inputs.workingDirectory, isDirectory: true)
                    ).standardizedFileURL.path)
            }
            entries.append(Entry(key: ConfigSchema.key(key.path)!, value: resolved.0, source: resolved.1))
        }
        let config = ResolvedConfig(entries: entries)
        try config.validateTogether()
        return config
    }

    /// Rules that span keys.
    /// Today: `heartbeat.dead_after` must be greater than `heartbeat.suspect_after`; the error
    /// names both values and where each was set.
    private func validateTogether() throws(AgentError) {
        try validateExec()
        if case .int(let suspect) = self["heartbeat.suspect_after"], case .int(let dead) = self["heartbeat.dead_after"],
            dead <= suspect
        {
            throw AgentError(
                .config,
                "'heartbeat.dead_after' (\(dead), \(source(of: "heartbeat.dead_after"))) must be greater than 'heartbeat.suspect_after' (\(suspect), \(source(of: "heartbeat.suspect_after")))"
            )
        }
        if case .string("resolved") = self["dns.configure"], case .string(let listen) = self["dns.listen"],
            listen.isEmpty, self["dns.mesh"] != .bool(true)
        {
            throw AgentError(
                .config,
                "'dns.configure: resolved' (\(source(of: "dns.configure"))) needs a DNS server to route to: set dns.listen (e.g. 127.0.0.1:5353) or dns.mesh: true"
            )
        }
        if case .bool(true) = self["relay.enabled"], case .int(let base) = self["relay.port_base"],
            case .int(let pairs) = self["relay.pairs"], base + 2 * pairs - 1 > 65535
        {
            throw AgentError(
                .config,
                "'relay.port_base' (\(base), \(source(of: "relay.port_base"))) + 2 × 'relay.pairs' (\(pairs), \(source(of: "relay.pairs"))) runs past port 65535"
            )
        }
    }

    // MARK: Printing

    /// The value as `nodeagent config` shows it: secrets redacted.
    public func displayValue(_ entry: Entry) -> String {
        let text: String
        switch entry.value {
        case .string(let s): text = s
        case .int(let i): text = String(i)
        case .double(let d): text = d == d.rounded() ? String(Int(d)) : String(d)
        case .bool(let b): text = String(b)
        case .map(let m):
            text =
                m.isEmpty
                ? "{}"
                : "{" + m.sorted { $0.key < $1.key }.map { "\($0.key): \($0.value)" }.joined(separator: ", ") + "}"
        case .gpus(let g):
            text = g.isEmpty ? "[]" : g.map { "\($0.index): \($0.name) \($0.memoryTotalMB) MB" }.joined(separator: "; ")
        case .probes(let p):
            text =
                p.isEmpty
                ? "[]" : p.map { "\($0.name): \($0.method) \($0.url) every \($0.intervalS) s" }.joined(separator: "; ")
        case .checks(let c):
            text =
                c.isEmpty
                ? "[]"
                : c.map { "\($0.name): \($0.kind) \($0.targetDescription) every \($0.interval) s" }.joined(
                    separator: "; ")
        case .webhooks(let w):
            text = w.isEmpty ? "[]" : w.map(\.summary).joined(separator: "; ")
        }
        return entry.key.secret ? Redaction.redact(text) : text
    }

    /// A table: key, value, source.
    public func renderTable() -> String {
        let width = (entries.map(\.key.path.count).max() ?? 0) + 2
        let values = entries.map { displayValue($0) }
        let valueWidth = min((values.map(\.count).max() ?? 0) + 2, 48)
        return zip(entries, values).map { entry, value in
            let keyColumn = entry.key.path.padding(toLength: width, withPad: " ", startingAt: 0)
            let shown = value.isEmpty ? "\"\"" : value
            let valueColumn =
                shown.count >= valueWidth
                ? shown + "  " : shown.padding(toLength: valueWidth, withPad: " ", startingAt: 0)
            return keyColumn + valueColumn + entry.source.description
        }.joined(separator: "\n")
    }

    /// JSON: `{"key": {"value": ..., "source": "...", "secret": bool}}`, secrets redacted.
    public func renderJSON() -> String {
        var object: [String: Any] = [:]
        for entry in entries {
            let value: Any
            switch entry.value {
            case .string: value = displayValue(entry)
            case .int(let i): value = i
            case .double(let d): value = d
            case .bool(let b): value = b
            case .map(let m): value = m
            case .probes(let p):
                value = p.map {
                    [
                        "name": $0.name, "url": $0.url, "method": $0.method, "expect_status": $0.expectStatus,
                        "interval_s": $0.intervalS, "timeout_s": $0.timeoutS, "degraded_ms": $0.degradedMs,
                    ] as [String: Any]
                }
            case .checks(let c):
                value = c.map {
                    [
                        "name": $0.name, "kind": $0.kind, "target": $0.targetDescription, "interval_s": $0.interval,
                        "timeout_s": $0.timeout, "recovery": $0.recovery.map { _ in true } ?? false,
                    ] as [String: Any]
                }
            case .webhooks(let w):
                value = w.map { $0.summary }
            case .gpus(let g):
                value = g.map {
                    [
                        "index": $0.index, "uuid": $0.uuid, "name": $0.name, "memory_total_mb": $0.memoryTotalMB,
                        "memory_used_mb": $0.memoryUsedMB, "utilization_pct": $0.utilizationPct,
                    ] as [String: Any]
                }
            }
            object[entry.key.path] = ["value": value, "source": entry.source.description, "doc": entry.key.doc]
        }
        let data = try! JSONSerialization.data(
            withJSONObject: object, options: [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes])
        return String(decoding: data, as: UTF8.self)
    }
}

/// Hides secret values: whole tokens, and the password inside URLs and libpq strings.
public enum Redaction {
    /// What replaces a hidden value.
    public static let marker = "<redacted>"

    /// A URL keeps its scheme, user and host but loses the password; a libpq keyword string loses
    /// `password=`'s value; any other non-empty text (a token) is replaced whole.
    public static func redact(_ text: String) -> String {
        guard !text.isEmpty else { return text }
        if let schemeEnd = text.range(of: "://") {
            // scheme://user:password@host → scheme://user:<redacted>@host
            let rest = text[schemeEnd.upperBound...]
            guard let at = rest.firstIndex(of: "@") else { return redactConninfo(text) }
            let userinfo = rest[..<at]
            let user =
                userinfo.split(separator: ":", maxSplits: 1, omittingEmptySubsequences: false).first.map(String.init)
                ?? ""
            let hidden = userinfo.contains(":") ? "\(user):\(marker)" : user
            return redactConninfo(String(text[..<schemeEnd.upperBound]) + hidden + String(rest[at...]))
        }
        if text.contains("=") { return redactConninfo(text) }
        return marker
    }

    /// `password=...` in a libpq keyword string or URL query.
    private static func redactConninfo(_ text: String) -> String {
        guard
            let regex = try? NSRegularExpression(
                pattern: "(password\\s*=\\s*)('[^']*'|[^\\s&]+)", options: [.caseInsensitive])
        else { return marker }
        let range = NSRange(text.startIndex..., in: text)
        return regex.stringByReplacingMatches(in: text, range: range, withTemplate: "$1\(marker)")
    }
}

// MARK: - Typed configuration

extension NodeConfig {
    /// The failure detector's policy for this node's own timing.
    var detectorPolicy: FailureDetector.Policy { FailureDetector.Policy(heartbeatTiming) }
}

extension FailureDetector.Policy {
    /// The detector's policy for a node's reported timing (not validated here).
    init(_ timing: HeartbeatTiming) {
        self.init(
            interval: .milliseconds(Int64(timing.intervalS * 1000)), suspectAfter: timing.suspectAfter,
            awayAfter: timing.awayAfter, deadAfter: timing.deadAfter)
    }
}

/// The validated, immutable configuration of one agent, passed down to every component.
public struct NodeConfig: Sendable {
    /// `lead`, `compute` or `edge`: which services ``Agent/run`` starts.
    /// The profile's role; `standby` for the lead profile with `standby: true` until this agent
    /// is promoted (then the agent runs as `lead`).
    public internal(set) var role: NodeRole
    /// The node's name in the mesh (`name`, default: the host name's first label).
    public let name: String
    public let company: String
    /// Free-form labels (`labels`) the lead's placement matches jobs against.
    public let labels: [String: String]
    /// The data directory (`data_dir`), absolute: see ``DataDirectory``.
    public let dataDir: String
    /// The HTTP API's address (`listen`), loopback unless `http.insecure_plain` is set.
    public let listen: HostPort
    /// The lead's URL, when this node is not the lead.
    public let lead: String?
    /// The one-time join token (`join_token`, a secret: never logged); not needed once joined.
    public let joinToken: String?
    /// An external store's URL; nil for the managed cluster.
    public let storeURL: String?
    /// The OS user that runs the managed cluster when the agent runs as root (`store.run_as`).
    public let storeRunAs: String
    /// The directory of `initdb` and `pg_ctl` (`store.pg_bin`); nil: found by ``ManagedPostgres``.
    public let pgBinDirectory: String?
    /// `store.replication_listen`: where the lead's managed PostgreSQL serves standbys' replication
    /// connections (an IP literal and a port, checked by ``ReplicationListener``); nil: nowhere.
    public let storeReplicationListen: HostPort?
    /// `store.standby_ineligible_after_s`: seconds the synchronous standby may be disconnected
    /// before the lead records it ineligible and falls back to asynchronous commits.
    public let standbyIneligibleAfterS: Int
    /// The largest request body accepted, in bytes (`http.max_body_bytes`); larger gets 413.
    public let maxBodyBytes: Int
    /// `http.idle_timeout_s`.
    public let idleTimeoutS: Int
    /// `http.insecure_plain`: a plain listener on a non-loopback address was asked for.
    public let insecurePlain: Bool
    /// `tls.listen`: the TLS listener, when there is one.
    public let tlsListen: HostPort?
    /// `metrics.listen`: a plain HTTP listener serving `/metrics` alone, when there is one.
    public let metricsListen: HostPort?
    /// `dns.listen`: where the mesh DNS server answers (UDP and TCP), when it does.
    public let dnsListen: HostPort?
    /// `dns.domain`: the mesh's names' domain, lower case.
    public let dnsDomain: String
    /// `dns.mesh`: the port to answer DNS on at this agent's mesh address; nil when it does not.
    public let dnsMeshPort: Int?
    /// The relay table this agent offers (`relay.enabled`); nil when it relays nothing.
    public let relayOffer: RelayOffer?
    /// `dns.configure: hosts`: the hosts file to keep the mesh's names in; nil for `off`.
    public let dnsHostsFile: String?
    /// `dns.configure: resolved` (or `auto` where systemd-resolved runs): the resolvectl to run.
    public let dnsResolvectl: String?
    /// `tls.advertise`: the https URL of this agent for nodes.
    public let tlsAdvertise: String?
    /// `limits.*`: see ``RequestLimits``.
    public let limitRequestsPerS: Int
    public let limitBurst: Int
    public let limitJoinsPerMin: Int
    public let limitAuthFailuresPerMin: Int
    /// The least severe level logged (`log.level`), to stderr and to the log ring alike.
    public let logLevel: Logger.Level
    /// A static GPU inventory (`gpus`) used instead of `nvidia-smi`; empty: ask `nvidia-smi`.
    public let gpus: [GPUInventoryEntry]
    /// External APIs this node probes (`connectivity`).
    public let probes: [ConnectivityProbe]
    /// Service checks (`checks`).
    public let checks: [ServiceCheckConfig]
    /// Resource alert thresholds (`alerts.*`) and the sampling interval in seconds.
    public let alertThresholds: ResourceThresholds
    public let alertInterval: Double
    /// The lead's alert webhooks (`alerts.webhooks`); their URLs are secrets, never logged.
    public let webhooks: [WebhookConfig]
    /// The lead's Redis fan-out (`events.redis`, a secret: never logged); nil: none.
    public let redisURL: String?
    /// `events.redis_maxlen`.
    public let redisMaxLength: Int
    /// Log lines kept per subsystem (`log.ring_lines`).
    public let logRingLines: Int
    /// The lead derives its secrets master key from the passphrase in this file; nil: key file.
    public let secretsPassphraseFile: String?
    /// Take GPU jobs (`gpu.accept_jobs`).
    public let acceptJobs: Bool
    /// Run `exec` jobs (`gpu.allow_exec`).
    public let allowExec: Bool
    /// The local inference server for `generate` jobs; nil: none.
    public let gpuBackend: String?
    /// `gateway.providers`: cloud provider name → OpenAI-compatible base URL (the lead's).
    public let gatewayProviders: [String: String]
    /// `gateway.fallback`: mesh model → `provider` or `provider/model-there`.
    public let gatewayFallback: [String: String]
    /// `gateway.fallback_after_s`.
    public let gatewayFallbackAfter: Double
    /// `gpu.models`: mesh name → the backend's name, for models renamed or added by the profile.
    public let gpuModelNames: [String: String]
    /// Exec jobs' working directory (`exec.workdir`); nil: a fresh one per job under `DATA/jobs`.
    public let execWorkdir: String?
    /// Keep a job's fresh working directory after it ends (`exec.keep_workdir`).
    public let execKeepWorkdir: Bool
    /// Variables exec jobs get on top of the base environment (`exec.env`).
    public let execEnvironment: [String: String]
    /// Bytes of each exec job's output kept for `jobs logs` (`exec.output_tail_kib` × 1024).
    public let execOutputTailBytes: Int
    /// The lead's placement policy (`gpu.policy`).
    public let gpuPolicy: String
    /// The address this node asks for (`vpn_ip`); nil lets the lead allocate.
    public let vpnIP: String?
    /// The mesh network (`wireguard.cidr`); the lead takes its first host address.
    public let wireguardCIDR: String
    /// The public `HOST:PORT` peers dial (`wireguard.endpoint`); nil: the address the lead sees.
    public let wireguardEndpoint: String?
    /// The UDP port WireGuard listens on (`wireguard.listen_port`).
    public let wireguardListenPort: Int
    /// off | render | apply (`wireguard.mode`).
    public let wireguardMode: String
    /// The interface's name (`wireguard.interface`, default `aurora0`).
    public let wireguardInterface: String
    /// `wireguard.behind_nat`: send and ask for `PersistentKeepalive = 25`.
    public let wireguardBehindNAT: Bool
    /// Seconds before a removed node's address may be reused (`wireguard.reuse_after_s`).
    public let wireguardReuseAfter: Double
    /// The heartbeat timing of this node's profile, which the lead's failure detector applies.
    public let heartbeatTiming: HeartbeatTiming
    /// Tell the lead this node is leaving on SIGTERM (`left`, not `dead`).
    public let leaveOnStop: Bool
    /// The local PostgreSQL server to watch (`postgres.*`); nil: none.
    public let postgresMonitor: PostgresMonitorConfig?
    /// How a standby lead watches its own streaming replica (`postgres.*` thresholds, expecting a
    /// replica; the conninfo is the replica's socket, filled in by the agent).
    public let standbyReplicaMonitor: PostgresMonitorConfig
    /// etcd endpoints for automatic failover (`election.etcd`); empty: promotion is manual.
    public let etcdEndpoints: [String]
    /// The lead lease's TTL in seconds (`election.ttl_s`).
    public let electionTTL: Int
    /// `election.rejoin_as_standby`: a lead fenced by a newer term rejoins the new lead as its standby.
    public let rejoinAsStandby: Bool
    /// The profile file that was used.
    public let profileFile: String
    /// All keys with their sources, for `nodeagent config`.
    public let resolved: ResolvedConfig

    /// Reads every key of an already validated ``ResolvedConfig`` into its typed field; a key of
    /// the wrong kind is a programming error (the schema and this initializer disagree) and traps.
    public init(resolved: ResolvedConfig, profileFile: String) {
        func string(_ path: String) -> String {
            guard case .string(let value) = resolved[path] else { preconditionFailure("\(path) is not a string key") }
            return value
        }
        func int(_ path: String) -> Int {
            guard case .int(let value) = resolved[path] else { preconditionFailure("\(path) is not an integer key") }
            return value
        }
        func nonEmpty(_ path: String) -> String? { string(path).isEmpty ? nil : string(path) }
        let profileRole = NodeRole(rawValue: string("role"))!
        if case .bool(true) = resolved["standby"], profileRole == .lead {
            self.role = .standby
        } else {
            self.role = profileRole
        }
        self.name = string("name")
        self.company = string("company")
        if case .map(let labels) = resolved["labels"] { self.labels = labels } else { self.labels = [:] }
        self.dataDir = string("data_dir")
        self.listen = try! HostPort(parsing: string("listen"))  // validated by the schema
        self.lead = nonEmpty("lead")
        self.joinToken = nonEmpty("join_token")
        self.storeURL = nonEmpty("store.url")
        self.etcdEndpoints = string("election.etcd").split(separator: ",").map {
            $0.trimmingCharacters(in: .whitespaces)
        }.filter { !$0.isEmpty }
        self.electionTTL = int("election.ttl_s")
        self.storeRunAs = string("store.run_as")
        self.pgBinDirectory = nonEmpty("store.pg_bin")
        self.storeReplicationListen = nonEmpty("store.replication_listen").flatMap { try? HostPort(parsing: $0) }
        self.standbyIneligibleAfterS = int("store.standby_ineligible_after_s")
        self.maxBodyBytes = int("http.max_body_bytes")
        self.idleTimeoutS = int("http.idle_timeout_s")
        self.tlsListen = nonEmpty("tls.listen").flatMap { try? HostPort(parsing: $0) }
        self.metricsListen = nonEmpty("metrics.listen").flatMap { try? HostPort(parsing: $0) }
        self.dnsListen = nonEmpty("dns.listen").flatMap { try? HostPort(parsing: $0) }
        self.dnsDomain = string("dns.domain")
        // auto: systemd-resolved where it runs (its resolvectl and its runtime directory), else the hosts file.
        let resolvedRuns =
            FileManager.default.isExecutableFile(atPath: string("dns.resolvectl"))
            && FileManager.default.fileExists(atPath: "/run/systemd/resolve")
        let configure =
            string("dns.configure") == "auto" ? (resolvedRuns ? "resolved" : "hosts") : string("dns.configure")
        self.dnsHostsFile = configure == "hosts" ? string("dns.hosts_file") : nil
        self.dnsResolvectl = configure == "resolved" ? string("dns.resolvectl") : nil
        self.dnsMeshPort = bool("dns.mesh") ? int("dns.mesh_port") : nil
        let relay = RelayOffer(portBase: int("relay.port_base"), pairs: int("relay.pairs"))
        self.relayOffer = bool("relay.enabled") && relay.isValid ? relay : nil
        self.tlsAdvertise = nonEmpty("tls.advertise")
        self.limitRequestsPerS = int("limits.requests_per_s")
        self.limitBurst = int("limits.burst")
        self.limitJoinsPerMin = int("limits.joins_per_min")
        self.limitAuthFailuresPerMin = int("limits.auth_failures_per_min")
        self.logLevel = Logger.Level(rawValue: string("log.level")) ?? .info
        if case .gpus(let gpus) = resolved["gpus"] { self.gpus = gpus } else { self.gpus = [] }
        if case .probes(let probes) = resolved["connectivity"] { self.probes = probes } else { self.probes = [] }
        if case .checks(let checks) = resolved["checks"] { self.checks = checks } else { self.checks = [] }
        self.redisURL = nonEmpty("events.redis")
        self.redisMaxLength = int("events.redis_maxlen")
        self.logRingLines = int("log.ring_lines")
        self.secretsPassphraseFile = nonEmpty("secrets.passphrase_file")
        func bool(_ path: String) -> Bool {
            guard case .bool(let value) = resolved[path] else { preconditionFailure("\(path) is not a boolean key") }
            return value
        }
        self.insecurePlain = bool("http.insecure_plain")
        self.rejoinAsStandby = bool("election.rejoin_as_standby")
        self.acceptJobs = bool("gpu.accept_jobs")
        self.allowExec = bool("gpu.allow_exec")
        self.gpuBackend = nonEmpty("gpu.backend")
        if case .map(let providers) = resolved["gateway.providers"] {
            self.gatewayProviders = providers
        } else {
            self.gatewayProviders = [:]
        }
        if case .map(let routes) = resolved["gateway.fallback"] {
            self.gatewayFallback = routes
        } else {
            self.gatewayFallback = [:]
        }
        self.gatewayFallbackAfter = seconds("gateway.fallback_after_s")
        if case .map(let names) = resolved["gpu.models"] {
            self.gpuModelNames = names
        } else {
            self.gpuModelNames = [:]
        }
        self.execWorkdir = nonEmpty("exec.workdir")
        self.execKeepWorkdir = bool("exec.keep_workdir")
        if case .map(let env) = resolved["exec.env"] { self.execEnvironment = env } else { self.execEnvironment = [:] }
        self.execOutputTailBytes = int("exec.output_tail_kib") * 1024
        self.gpuPolicy = string("gpu.policy")
        self.vpnIP = nonEmpty("vpn_ip")
        self.wireguardCIDR = string("wireguard.cidr")
        self.wireguardEndpoint = nonEmpty("wireguard.endpoint")
        self.wireguardListenPort = int("wireguard.listen_port")
        self.wireguardMode = string("wireguard.mode")
        self.wireguardInterface = string("wireguard.interface")
        if case .bool(let nat) = resolved["wireguard.behind_nat"] {
            self.wireguardBehindNAT = nat
        } else {
            self.wireguardBehindNAT = false
        }
        switch resolved["wireguard.reuse_after_s"] {
        case .double(let value): self.wireguardReuseAfter = value
        case .int(let value): self.wireguardReuseAfter = Double(value)
        default: self.wireguardReuseAfter = 86_400
        }
        let interval: Double
        switch resolved["heartbeat.interval_s"] {
        case .double(let value): interval = value
        case .int(let value): interval = Double(value)
        default: interval = 1
        }
        self.heartbeatTiming = HeartbeatTiming(
            intervalS: interval, suspectAfter: int("heartbeat.suspect_after"),
            awayAfter: int("heartbeat.away_after"), deadAfter: int("heartbeat.dead_after"))
        func seconds(_ path: String) -> Double {
            switch resolved[path] {
            case .double(let value): return value
            case .int(let value): return Double(value)
            default: preconditionFailure("\(path) is not a seconds key")
            }
        }
        self.alertThresholds = ResourceThresholds(
            cpuPct: Double(int("alerts.cpu_pct")), cpuFor: seconds("alerts.cpu_for_s"),
            memoryPct: Double(int("alerts.memory_pct")), diskPct: Double(int("alerts.disk_pct")))
        self.alertInterval = seconds("alerts.interval_s")
        if case .webhooks(let webhooks) = resolved["alerts.webhooks"] {
            self.webhooks = webhooks
        } else {
            self.webhooks = []
        }
        let replicaThresholds = ReplicaThresholds(
            maxLagS: seconds("postgres.max_lag_s"), maxLagBytes: UInt64(int("postgres.max_lag_bytes")),
            stallAfterS: seconds("postgres.stall_after_s"))
        if let conninfo = nonEmpty("postgres.monitor") {
            let expect = string("postgres.expect")
            postgresMonitor = PostgresMonitorConfig(
                conninfo: conninfo, interval: seconds("postgres.interval_s"),
                expectPrimary: expect == "auto" ? role == .lead : expect == "primary",
                thresholds: replicaThresholds,
                slotMaxRetainedBytes: UInt64(int("postgres.slot_max_retained_bytes")))
        } else {
            postgresMonitor = nil
        }
        self.standbyReplicaMonitor = PostgresMonitorConfig(
            conninfo: "", interval: seconds("postgres.interval_s"), expectPrimary: false,
            thresholds: replicaThresholds, slotMaxRetainedBytes: UInt64(int("postgres.slot_max_retained_bytes")))
        if case .bool(let leave) = resolved["leave_on_stop"] {
            self.leaveOnStop = leave
        } else {
            self.leaveOnStop = false
        }
        self.profileFile = profileFile
        self.resolved = resolved
    }
}

/// How an agent watches its local PostgreSQL server (`postgres.*`).
public struct PostgresMonitorConfig: Sendable {
    /// libpq connection string; may hold a password, so it is never logged.
    public let conninfo: String
    /// Seconds between samples.
    public let interval: Double
    /// The server is meant to be the primary (it then also gets the heartbeat row).
    public let expectPrimary: Bool
    /// When the replica counts as catching up or stalled (`postgres.max_lag_s`, `max_lag_bytes`,
    /// `stall_after_s`), with `expectPrimary` copied in.
    public let thresholds: ReplicaThresholds
    /// An inactive replication slot holding more WAL than this many bytes is reported.
    public let slotMaxRetainedBytes: UInt64

    init(
        conninfo: String, interval: Double, expectPrimary: Bool, thresholds: ReplicaThresholds,
        slotMaxRetainedBytes: UInt64
    ) {
        self.conninfo = conninfo
        self.interval = interval
        self.expectPrimary = expectPrimary
        var thresholds = thresholds
        thresholds.expectPrimary = expectPrimary
        self.thresholds = thresholds
        self.slotMaxRetainedBytes = slotMaxRetainedBytes
    }
}
