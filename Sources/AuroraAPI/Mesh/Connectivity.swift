// Connectivity to external APIs (shared/DESIGN.md, Secrets): nodes probe what their profile
// lists and report healthy, degraded or down with the latency; the lead shows the matrix.

/// One external API a node probes (`connectivity:` in a profile).
public struct ConnectivityProbe: Codable, Sendable, Equatable {
    public var name: String
    public var url: String
    /// GET (default) or HEAD.
    public var method: String
    public var expectStatus: Int
    public var intervalS: Double
    public var timeoutS: Double
    /// Slower than this (ms) is degraded.
    public var degradedMs: Double

    public init(
        name: String, url: String, method: String = "GET", expectStatus: Int = 200, intervalS: Double = 30,
        timeoutS: Double = 5,
        degradedMs: Double = 1000
    ) {
        self.name = name
        self.url = url
        self.method = method
        self.expectStatus = expectStatus
        self.intervalS = intervalS
        self.timeoutS = timeoutS
        self.degradedMs = degradedMs
    }

    enum CodingKeys: String, CodingKey {
        case name, url, method
        case expectStatus = "expect_status"
        case intervalS = "interval_s"
        case timeoutS = "timeout_s"
        case degradedMs = "degraded_ms"
    }
}

public enum ConnectivityState: String, Codable, Sendable, CaseIterable {
    /// The expected status, in time.
    case healthy
    /// Answered, but slower than `degraded_ms` or with another status below 500.
    case degraded
    /// No answer in time, the connection failed, or a 5xx.
    case down
}

/// One probe's latest outcome.
public struct ProbeResult: Codable, Sendable, Equatable {
    public var service: String
    public var url: String
    public var state: ConnectivityState
    public var latencyMs: Double?
    public var status: Int?
    public var error: String?
    public var checkedAt: String

    public init(
        service: String, url: String, state: ConnectivityState, latencyMs: Double?, status: Int?, error: String?,
        checkedAt: String
    ) {
        self.service = service
        self.url = url
        self.state = state
        self.latencyMs = latencyMs
        self.status = status
        self.error = error
        self.checkedAt = checkedAt
    }

    enum CodingKeys: String, CodingKey {
        case service, url, state, status, error
        case latencyMs = "latency_ms"
        case checkedAt = "checked_at"
    }
}

/// `POST /api/connectivity/status` (signed by a node): its latest results.
public struct ConnectivityReport: Codable, Sendable, Equatable {
    public var results: [ProbeResult]

    public init(results: [ProbeResult]) { self.results = results }

    public static let fields: Set<String> = ["results"]
}

/// `GET /api/connectivity/status`: node × service.
public struct ConnectivityMatrix: Codable, Sendable, Equatable {
    public var nodes: [String: [String: ProbeResult]]

    public init(nodes: [String: [String: ProbeResult]]) { self.nodes = nodes }
}

/// `GET /api/connectivity/health`: overall and per service.
public struct ConnectivityHealth: Codable, Sendable, Equatable {
    public struct Service: Codable, Sendable, Equatable {
        public var state: ConnectivityState
        public var healthy: Int
        public var degraded: Int
        public var down: Int

        public init(state: ConnectivityState, healthy: Int, degraded: Int, down: Int) {
            self.state = state
            self.healthy = healthy
            self.degraded = degraded
            self.down = down
        }
    }

    public var state: ConnectivityState
    public var services: [String: Service]

    public init(state: ConnectivityState, services: [String: Service]) {
        self.state = state
        self.services = services
    }

    /// A service is healthy when every node reaching it is, down when none can, else degraded;
    /// overall is the worst service.
    public static func summarize(_ matrix: ConnectivityMatrix) -> ConnectivityHealth {
        var counts: [String: (Int, Int, Int)] = [:]
        for results in matrix.nodes.values {
            for (service, result) in results {
                var count = counts[service] ?? (0, 0, 0)
                switch result.state {
                case .healthy: count.0 += 1
                case .degraded: count.1 += 1
                case .down: count.2 += 1
                }
                counts[service] = count
            }
        }
        var services: [String: Service] = [:]
        for (service, (healthy, degraded, down)) in counts {
            let state: ConnectivityState =
                degraded == 0 && down == 0 ? .healthy : healthy == 0 && degraded == 0 ? .down : .degraded
            services[service] = Service(state: state, healthy: healthy, degraded: degraded, down: down)
        }
        let states = services.values.map(\.state)
        let overall: ConnectivityState =
            states.contains(.down)
            ? (states.allSatisfy { $0 == .down } ? .down : .degraded)
            : states.contains(.degraded) ? .degraded : .healthy
        return ConnectivityHealth(state: overall, services: services)
    }
}

extension EventType {
    /// A node's view of an external API changed state.
    public static let connectivityChanged = "connectivity.changed"
}
