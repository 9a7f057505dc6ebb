import AuroraAPI
import Mesh

/// A value of a configuration key, after parsing and validation.
public enum ConfigValue: Sendable, Equatable {
    case string(String)
    case int(Int)
    case double(Double)
    case bool(Bool)
    case map([String: String])
    case gpus([GPUInventoryEntry])
    case probes([ConnectivityProbe])
    case checks([ServiceCheckConfig])
    case webhooks([WebhookConfig])
}

/// One GPU of a static inventory (`gpus:` in a profile), used instead of `nvidia-smi`: the
/// API's GPU shape.
public typealias GPUInventoryEntry = GPU

/// What kind of value a key takes; each kind parses text (from YAML, the environment or a
/// flag) and says precisely what it expected when the text does not fit.
public enum ConfigKind: Sendable, Equatable {
    /// Any text, taken as it is.
    case string
    /// A valid ``NodeName`` (the name the mesh knows the node by).
    case nodeName
    /// A DNS domain: dot-separated labels of letters, digits and '-', lower-cased.
    case domain
    /// A non-empty path; a relative one is resolved against the working directory at resolution.
    case path
    case int(ClosedRange<Int>)
    /// A positive number of seconds, at most a year, kept as a `Double` (fractions allowed).
    case seconds
    case bool
    case oneOf([String])
    /// `HOST:PORT`, required; `optionalHostPort` also takes the empty string for "none".
    case hostPort
    case optionalHostPort
    /// A URL with one of `schemes` and a host (PostgreSQL URLs may leave the host to libpq), or empty.
    case url(schemes: [String])
    case ipv4
    /// An IPv4 network with a prefix of 8 to 30 bits and its host bits zero.
    case cidr
    /// `map`, `gpus`, `probes`, `checks` and `webhooks` are structured: they can only be set in a YAML file.
    case map
    case gpus
    case probes
    case checks
    case webhooks

    /// A short description for errors and documentation.
    var expectation: String {
        switch self {
        case .string: "a string"
        case .nodeName: "a node name (letters, digits, '-', '_', '.'; at most 63)"
        case .domain: "a DNS domain (labels of 1-63 letters, digits or '-', at most 253 bytes), e.g. aurora.internal"
        case .path: "an absolute path"
        case .int(let range): "an integer in \(range.lowerBound)...\(range.upperBound)"
        case .seconds: "a positive number of seconds, at most 31536000 (a year)"
        case .bool: "true or false"
        case .oneOf(let choices): "one of " + choices.joined(separator: ", ")
        case .hostPort: "HOST:PORT"
        case .optionalHostPort: "HOST:PORT or empty"
        case .url(let schemes): "a URL (" + schemes.map { $0 + "://" }.joined(separator: ", ") + ") or empty"
        case .ipv4: "an IPv4 address or empty"
        case .cidr: "an IPv4 CIDR such as 10.0.0.0/24"
        case .map: "a mapping of names to strings"
        case .gpus: "a list of GPUs"
        case .probes: "a list of probes ({name, url, method?, expect_status?, interval_s?, timeout_s?, degraded_ms?})"
        case .checks: "a list of checks ({name, http | tcp | args, interval_s?, timeout_s?, thresholds?, recovery?})"
        case .webhooks: "a list of webhooks ({name, url | url_file, format?: json | slack, events?, timeout_s?})"
        }
    }
}

/// One configuration key: where it may come from, what it takes, its default and meaning.
///
/// The table ``ConfigSchema/keys`` is the single source of truth: the loader rejects keys that
/// are not in it, `nodeagent config` prints them all, and profiles document them.
public struct ConfigKey: Sendable {
    /// Dotted path, as in YAML (`wireguard.mode`).
    public let path: String
    /// How the key's text is parsed and validated, wherever it comes from.
    public let kind: ConfigKind
    /// The value when no layer sets it; `nil` for keys computed at resolution (host name).
    public let defaultValue: ConfigValue?
    /// The environment variable that sets it, if any.
    public let environment: String?
    /// The `nodeagent run` flag that sets it, if any.
    public let flag: String?
    /// Redact in `nodeagent config` output.
    public let secret: Bool
    /// One line for people.
    public let doc: String

    init(
        _ path: String, _ kind: ConfigKind, default defaultValue: ConfigValue?, env: String? = nil, flag: String? = nil,
        secret: Bool = false, _ doc: String
    ) {
        self.path = path
        self.kind = kind
        self.defaultValue = defaultValue
        self.environment = env
        self.flag = flag
        self.secret = secret
        self.doc = doc
    }
}

/// Every key the agent understands.
public enum ConfigSchema {
    /// The `log.level` choices, least severe first (swift-log's levels).
    public static let logLevels = ["trace", "debug", "info", "notice", "warning", "error", "critical"]

    /// Every key in the order `nodeagent config` prints them. Adding a key here is all it takes for
    /// the loader to accept it; ``NodeConfig`` must then read it into a typed field.
    public static let keys: [ConfigKey] = [
        // MARK: Node
        ConfigKey(
            "role", .oneOf(["lead", "compute", "edge"]), default: nil, env: "NODE_ROLE",
            "what this node runs: lead, compute or edge"),
        ConfigKey(
            "name", .nodeName, default: nil, env: "NODE_NAME", flag: "--name",
            "the node's name in the mesh; default: the host name's first label"),
        ConfigKey(
            "company", .string, default: .string(""), env: "AURORA_COMPANY",
            "the company the node belongs to (secrets overrides, placement labels)"),
        ConfigKey("labels", .map, default: .map([:]), "free-form labels used by placement"),
        ConfigKey(
            "data_dir", .path, default: .string("/var/lib/aurora"), env: "AURORA_DATA_DIR", flag: "--data-dir",
            "keys, tokens, caches, outbox and the managed PostgreSQL cluster"),
        ConfigKey(
            "listen", .hostPort, default: .string("127.0.0.1:9999"), env: "AURORA_LISTEN", flag: "--listen",
            "HTTP API address (loopback; remote callers use tls.listen, Prometheus metrics.listen)"),
        ConfigKey(
            "vpn_ip", .ipv4, default: .string(""), env: "VPN_IP",
            "the mesh address to ask the lead for; empty: the lead allocates one"),
        // MARK: Mesh membership
        ConfigKey(
            "lead", .url(schemes: ["http", "https"]), default: .string(""), env: "AURORA_LEAD", flag: "--lead",
            "URL of the lead agent (compute and edge nodes)"),
        ConfigKey(
            "join_token", .string, default: .string(""), env: "AURORA_JOIN_TOKEN", flag: "--join-token",
            secret: true, "one-time token for the first join; not needed once joined"),
        ConfigKey(
            "standby", .bool, default: .bool(false), env: "AURORA_STANDBY", flag: "--standby",
            "with the lead profile: join the lead as a standby lead (lead-eligible, promotable with 'aurora-cli lead promote')"
        ),
        ConfigKey(
            "leave_on_stop", .bool, default: .bool(false), env: "AURORA_LEAVE_ON_STOP", flag: "--leave-on-stop",
            "on SIGTERM tell the lead this node leaves (left, not dead)"),
        ConfigKey("heartbeat.interval_s", .seconds, default: .double(1), "seconds between heartbeats"),
        ConfigKey("heartbeat.suspect_after", .int(1...100), default: .int(3), "missed heartbeats before suspect"),
        ConfigKey(
            "heartbeat.away_after", .int(0...10_000), default: .int(0),
            "missed heartbeats before away (edge); 0: never away"),
        ConfigKey("heartbeat.dead_after", .int(2...10_000), default: .int(10), "missed heartbeats before dead"),
        // MARK: Store
        ConfigKey(
            "store.url", .url(schemes: ["postgres", "postgresql"]), default: .string(""), env: "AURORA_STORE",
            flag: "--store", secret: true,
            "PostgreSQL URL for the lead's store; empty: a managed cluster in DATA/postgres"),
        ConfigKey(
            "election.etcd", .string, default: .string(""), env: "AURORA_ETCD",
            "etcd endpoints (http://HOST:PORT, comma-separated) for automatic failover between the lead and its standby; empty: promotion is manual"
        ),
        ConfigKey(
            "election.ttl_s", .int(2...60), default: .int(5),
            "seconds the lead's etcd lease lives without renewal; the lead fences itself 1.5 s before it can expire"),
        ConfigKey(
            "election.rejoin_as_standby", .bool, default: .bool(true),
            "a lead fenced by a newer term rejoins the new lead as its standby (its managed PostgreSQL data kept aside); false: it stays fenced"
        ),
        ConfigKey(
            "store.run_as", .string, default: .string("postgres"),
            "OS user that runs the managed cluster when the agent runs as root"),
        ConfigKey(
            "store.pg_bin", .string, default: .string(""),
            "directory of initdb and pg_ctl; empty: pg_config --bindir, then /usr/lib/postgresql/*/bin"),
        ConfigKey(
            "store.replication_listen", .optionalHostPort, default: .string(""),
            "IP:PORT where the lead's managed PostgreSQL streams its WAL to standby leads (TLS, the lead's certificate); empty: no replication"
        ),
        ConfigKey(
            "store.standby_ineligible_after_s", .int(1...3600), default: .int(30),
            "seconds a synchronous standby may be disconnected before the lead records it ineligible and commits without it"
        ),
        // MARK: HTTP
        ConfigKey(
            "http.max_body_bytes", .int(1024...(64 << 20)), default: .int(1 << 20),
            "largest request body accepted; larger gets 413"),
        ConfigKey(
            "http.insecure_plain", .bool, default: .bool(false),
            "serve plain HTTP on a listen address that is not loopback (only inside a network you trust; use tls.listen)"
        ),
        // MARK: TLS
        ConfigKey(
            "tls.listen", .optionalHostPort, default: .string(""), env: "AURORA_TLS_LISTEN", flag: "--tls-listen",
            "HOST:PORT of the TLS 1.3 listener for nodes and remote operators (self-signed; peers pin its key); empty: none"
        ),
        // MARK: DNS
        ConfigKey(
            "dns.listen", .optionalHostPort, default: .string(""), env: "AURORA_DNS_LISTEN",
            "HOST:PORT the mesh DNS server answers on (UDP and TCP; names from the registry); empty: none"),
        ConfigKey(
            "dns.domain", .domain, default: .string("aurora.internal"), env: "AURORA_DNS_DOMAIN",
            "the domain of the mesh's names: NAME.DOMAIN, lead.DOMAIN, ROLE.DOMAIN, company.C.DOMAIN"),
        ConfigKey(
            "dns.mesh", .bool, default: .bool(false), env: "AURORA_DNS_MESH",
            "also answer DNS on this agent's mesh address (dns.mesh_port), once its tunnel is up"),
        ConfigKey(
            "dns.mesh_port", .int(1...65535), default: .int(53),
            "the port of the DNS server on the mesh address (dns.mesh)"),
        ConfigKey(
            "dns.configure", .oneOf(["off", "auto", "resolved", "hosts"]), default: .string("off"),
            env: "AURORA_DNS_CONFIGURE",
            "resolved: route DOMAIN to this agent through systemd-resolved (per-link DNS and ~DOMAIN on the WireGuard interface); hosts: a marked block of dns.hosts_file; auto: resolved where it runs, else hosts; all undone at stop"
        ),
        ConfigKey(
            "dns.resolvectl", .path, default: .string("/usr/bin/resolvectl"),
            "the resolvectl that dns.configure: resolved runs"),
        ConfigKey(
            "dns.hosts_file", .path, default: .string("/etc/hosts"),
            "the hosts file dns.configure: hosts writes its block into"),
        // MARK: Relay
        ConfigKey(
            "relay.enabled", .bool, default: .bool(false), env: "AURORA_RELAY",
            "relay WireGuard datagrams for pairs of nodes behind NAT (needs a public endpoint; a node also needs the trusted label relay=true)"
        ),
        ConfigKey(
            "relay.port_base", .int(1024...65534), default: .int(41000),
            "the first UDP port of the relay's table: pair i uses port_base+2i and port_base+2i+1"),
        ConfigKey(
            "relay.pairs", .int(1...4096), default: .int(256), "how many pairs the relay carries at most"),
        // MARK: Metrics
        ConfigKey(
            "metrics.listen", .optionalHostPort, default: .string(""), env: "AURORA_METRICS_LISTEN",
            "HOST:PORT of a plain HTTP listener that serves GET /metrics only (for Prometheus over the mesh); empty: none"
        ),
        ConfigKey(
            "tls.advertise", .url(schemes: ["https"]), default: .string(""),
            "the https URL nodes should use for this agent, printed by 'token create'; empty: from tls.listen"),
        ConfigKey(
            "http.idle_timeout_s", .int(1...3600), default: .int(15),
            "seconds before an idle connection, or one whose request head or body stalls, is closed"),
        // MARK: Limits (token buckets; 429 with Retry-After)
        ConfigKey(
            "limits.requests_per_s", .int(1...1_000_000), default: .int(200),
            "requests per second from one source address as one identity (node, token or anonymous)"),
        ConfigKey(
            "limits.burst", .int(1...1_000_000), default: .int(400),
            "requests one source and identity may send at once above the steady rate"),
        ConfigKey(
            "limits.joins_per_min", .int(1...1_000_000), default: .int(120),
            "join attempts per minute from one source address (a quarter of it at once)"),
        ConfigKey(
            "limits.auth_failures_per_min", .int(1...1_000_000), default: .int(120),
            "failed authentications per minute from one source address before its authenticated calls get 429"),
        ConfigKey(
            "log.level", .oneOf(logLevels), default: .string("info"), env: "AURORA_LOG_LEVEL", flag: "--log-level",
            "least severe log level written to stderr"),
        // MARK: WireGuard
        ConfigKey(
            "wireguard.mode", .oneOf(["off", "render", "apply"]), default: .string("off"),
            "off; render (write DATA/wireguard/IF.conf); apply (also configure the interface)"),
        ConfigKey(
            "wireguard.cidr", .cidr, default: .string("10.0.0.0/24"), "mesh network; the lead takes the first host"),
        ConfigKey("wireguard.interface", .string, default: .string("aurora0"), "WireGuard interface name"),
        ConfigKey("wireguard.listen_port", .int(1...65535), default: .int(51820), "UDP port WireGuard listens on"),
        ConfigKey(
            "wireguard.endpoint", .optionalHostPort, default: .string(""),
            "public HOST:PORT peers dial; empty: what the lead sees"),
        ConfigKey("wireguard.behind_nat", .bool, default: .bool(false), "send and ask for PersistentKeepalive = 25"),
        ConfigKey(
            "wireguard.reuse_after_s", .seconds, default: .double(86_400),
            "lead: a removed node's mesh address is given to another node only this long after the removal"),
        // MARK: GPU
        ConfigKey("gpu.accept_jobs", .bool, default: .bool(false), "take GPU jobs from the lead"),
        ConfigKey("gpu.allow_exec", .bool, default: .bool(false), "allow exec jobs (commands) on this node"),
        ConfigKey(
            "gpu.backend", .url(schemes: ["http", "https"]), default: .string(""),
            "local inference server (OpenAI-compatible or Ollama) for generate jobs"),
        ConfigKey(
            "gpu.models", .map, default: .map([:]),
            "mesh name: backend name; renames a model the backend serves, or adds one it does not list"),
        ConfigKey(
            "gpu.policy", .oneOf(["binpack", "spread"]), default: .string("binpack"),
            "lead: placement scoring; binpack fills the tightest GPU, spread the emptiest"),
        ConfigKey("gpus", .gpus, default: .gpus([]), "static GPU inventory used instead of nvidia-smi"),
        // MARK: Inference gateway (lead)
        ConfigKey(
            "gateway.providers", .map, default: .map([:]),
            "lead: cloud providers (name: OpenAI-compatible base URL); a provider's key is the secret NAME/api_key"),
        ConfigKey(
            "gateway.fallback", .map, default: .map([:]),
            "lead: mesh model: provider[/model there], called when no GPU node takes the call in time"),
        ConfigKey(
            "gateway.fallback_after_s", .seconds, default: .double(5),
            "lead: seconds a call with a fallback waits for a GPU node to start it"),
        // MARK: Exec jobs
        ConfigKey(
            "exec.workdir", .string, default: .string(""),
            "exec jobs' working directory (absolute); empty: a fresh DATA/jobs/ID-ATTEMPT per job"),
        ConfigKey(
            "exec.keep_workdir", .bool, default: .bool(false),
            "keep each job's fresh working directory after the job (default: removed)"),
        ConfigKey(
            "exec.env", .map, default: .map([:]),
            "variables exec jobs get on top of the base environment (PATH, HOME, TMPDIR, LANG)"),
        ConfigKey(
            "exec.output_tail_kib", .int(1...512), default: .int(64),
            "KiB of each exec job's output (stdout and stderr together) kept for `jobs logs`"),
        ConfigKey(
            "secrets.passphrase_file", .string, default: .string(""), env: "AURORA_SECRETS_PASSPHRASE_FILE",
            flag: "--secrets-passphrase-file",
            "lead: file with the passphrase the secrets master key is derived from (Argon2id); empty: DATA/keys/secrets.master"
        ),
        ConfigKey(
            "connectivity", .probes, default: .probes([]),
            "external APIs this node probes and reports (healthy, degraded, down)"),
        // MARK: PostgreSQL monitor and events
        ConfigKey(
            "postgres.monitor", .string, default: .string(""), secret: true,
            "libpq connection string of the local server to watch; empty: no monitor"),
        ConfigKey("postgres.interval_s", .seconds, default: .double(2), "seconds between samples of the local server"),
        ConfigKey(
            "postgres.expect", .oneOf(["auto", "primary", "replica"]), default: .string("auto"),
            "what the local server should be; auto: the lead's is the primary, other nodes' are replicas"),
        ConfigKey(
            "postgres.max_lag_s", .seconds, default: .double(5),
            "replica lag in seconds above which it is catching_up (degraded)"),
        ConfigKey(
            "postgres.max_lag_bytes", .int(1...(1 << 40)), default: .int(16 << 20),
            "replica lag in bytes above which it is catching_up (degraded)"),
        ConfigKey(
            "postgres.stall_after_s", .seconds, default: .double(10),
            "replay not advancing this long while WAL is pending is stalled"),
        ConfigKey(
            "postgres.slot_max_retained_bytes", .int(0...(1 << 50)), default: .int(1 << 30),
            "an inactive replication slot retaining more WAL than this is reported"),
        ConfigKey(
            "events.redis", .url(schemes: ["redis"]), default: .string(""), secret: true,
            "Redis URL for the event stream; empty: no Redis fan-out"),
        ConfigKey(
            "events.redis_maxlen", .int(100...100_000_000), default: .int(100_000),
            "lead: the Redis stream keeps about this many newest events (XADD MAXLEN ~)"),
        // MARK: Service checks, resource alerts, log ring
        ConfigKey(
            "checks", .checks, default: .checks([]),
            "service checks (HTTP, TCP, command) with thresholds and an optional recovery command"),
        ConfigKey(
            "alerts.cpu_pct", .int(1...100), default: .int(80),
            "CPU busy above this percentage for alerts.cpu_for_s raises alert.raised"),
        ConfigKey("alerts.cpu_for_s", .seconds, default: .double(300), "seconds CPU must stay above alerts.cpu_pct"),
        ConfigKey(
            "alerts.memory_pct", .int(1...100), default: .int(90), "memory in use above this percentage raises an alert"
        ),
        ConfigKey(
            "alerts.disk_pct", .int(1...100), default: .int(85),
            "the data dir's file system above this percentage used raises an alert"),
        ConfigKey("alerts.interval_s", .seconds, default: .double(10), "seconds between resource samples"),
        ConfigKey(
            "alerts.webhooks", .webhooks, default: .webhooks([]),
            "lead: webhooks that get node, check, alert and replica events (JSON or Slack), each once, in order"),
        ConfigKey(
            "log.ring_lines", .int(0...100_000), default: .int(1000),
            "recent log lines kept per subsystem for aurora-cli logs; 0: none"),
    ]

    /// The key with this path, if any.
    public static func key(_ path: String) -> ConfigKey? { byPath[path] }

    /// ``keys`` by dotted path, for ``key(_:)``.
    static let byPath: [String: ConfigKey] = Dictionary(uniqueKeysWithValues: keys.map { ($0.path, $0) })

    /// Section names (`wireguard`, `heartbeat`, ...) that hold keys.
    /// A top-level YAML name in this set is a mapping of the section's keys, not a key itself.
    static let sections: Set<String> = Set(
        keys.compactMap { key in
            key.path.firstIndex(of: ".").map { String(key.path[..<$0]) }
        })
}
