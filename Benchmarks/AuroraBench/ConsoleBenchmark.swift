import AsyncHTTPClient
import AuroraAPI
import AuroraTestKit
import Foundation
import NIOCore
import NIOHTTP1
import Synchronization

#if canImport(Glibc)
    import Glibc
#endif

/// `aurora-bench console`: what the web console costs. A first load's bytes and time over
/// loopback (the page and every file it loads, each run on a fresh connection, as a browser
/// with an empty cache; then with the sign-in and the Mesh page's first data), and the lead's
/// RSS and event fan-out with N consoles open on the live stream while events flow.
struct ConsoleBenchmark: Sendable {
    struct Report: Codable, Sendable {
        var nodes: Int
        var loads: Int
        /// The page and its files, as served (no compression).
        var assetBytes: Int
        var assetsP50Ms: Double
        var assetsP99Ms: Double
        /// Assets, sign-in, the session, and the Mesh page's calls (nodes, topology, GPU status).
        var firstViewP50Ms: Double
        var firstViewP99Ms: Double
        var firstViewBytes: Int
        var consoles: Int
        var events: Int
        var rssIdleMB: Double
        var rssConsolesMB: Double
        var rssAfterEventsMB: Double
        /// From the write that makes an event to its arrival on each console's stream.
        var fanoutP50Ms: Double
        var fanoutP99Ms: Double

        enum CodingKeys: String, CodingKey {
            case nodes, loads, consoles, events
            case assetBytes = "asset_bytes", assetsP50Ms = "assets_p50_ms", assetsP99Ms = "assets_p99_ms"
            case firstViewP50Ms = "first_view_p50_ms", firstViewP99Ms = "first_view_p99_ms"
            case firstViewBytes = "first_view_bytes"
            case rssIdleMB = "rss_idle_mb", rssConsolesMB = "rss_consoles_mb", rssAfterEventsMB = "rss_after_events_mb"
            case fanoutP50Ms = "fanout_p50_ms", fanoutP99Ms = "fanout_p99_ms"
        }
    }

    var executable: String
    var nodes: Int
    var loads: Int
    var consoles: Int
    var events: Int
    var progress: @Sendable (String) -> Void

    static let assets = ["/ui/", "/ui/assets/app.css", "/ui/assets/app.js", "/ui/assets/icon.svg"]

    func run() async throws -> Report {
        let lead = try await BenchLead.start("console", executable: executable)
        defer { lead.discard() }
        try await lead.joinIdleSimulated(nodes, progress: progress)
        progress("timing \(loads) first loads…")
        var assetTimes: [Double] = [], viewTimes: [Double] = []
        var assetBytes = 0, viewBytes = 0
        for _ in 0..<loads {
            // A fresh client each time: a new connection, nothing cached (a first visit).
            let client = HTTPClient(eventLoopGroupProvider: .singleton)
            let started = ContinuousClock.now
            assetBytes = try await Self.loadAssets(lead.baseURL, client: client)
            assetTimes.append(Measurements.ms(started.duration(to: .now)))
            let (cookie, _, signInBytes) = try await Self.signIn(lead.baseURL, token: lead.token, client: client)
            viewBytes = assetBytes + signInBytes
            for path in ["/ui/session", "/nodes", "/topology", "/api/gpu/status"] {
                viewBytes += try await Self.get(lead.baseURL + path, cookie: cookie, client: client)
            }
            viewTimes.append(Measurements.ms(started.duration(to: .now)))
            try await client.shutdown()
        }

        progress("opening \(consoles) consoles on the live stream…")
        let rssIdle = Measurements.rssMB(pid: lead.process.pid) ?? .nan
        let client = loadClient(connections: consoles + 4)
        defer { _ = client.shutdown() }
        var cookies: [String] = []
        for _ in 0..<consoles {
            let (cookie, _, _) = try await Self.signIn(lead.baseURL, token: lead.token, client: client)
            _ = try await Self.loadAssets(lead.baseURL, client: client)
            cookies.append(cookie)
        }
        let arrivals = Arrivals()
        let streams = try await withThrowingTaskGroup(of: Void.self, returning: [Double].self) { group in
            for cookie in cookies {
                group.addTask {
                    try await Self.follow(
                        lead.baseURL, cookie: cookie, client: client, until: events, arrivals: arrivals)
                }
            }
            try await poll(timeout: .seconds(20), every: .milliseconds(20), "\(consoles) streams open") {
                arrivals.opened == consoles ? true : nil
            }
            let rssConsoles = Measurements.rssMB(pid: lead.process.pid) ?? .nan
            progress("writing \(events) secrets (one event each, to every console)…")
            let admin = ["Authorization": "Bearer \(lead.token)", "Content-Type": "application/json"]
            for i in 0..<events {
                let body = SecretWrite(service: "bench", keyName: "k\(i)", value: "v", scope: "global")
                arrivals.sent(i, at: .now)
                let answer = try await http(
                    lead.baseURL + Routes.secrets, method: "POST", headers: admin,
                    body: Array(try APICoding.encoder().encode(body)), client: client)
                guard answer.status == 201 else {
                    throw TestKitError("writing a secret: \(answer.status) \(answer.text)")
                }
            }
            try await group.waitForAll()
            return [rssConsoles]
        }
        let rssAfter = Measurements.rssMB(pid: lead.process.pid) ?? .nan
        let latencies = arrivals.latencies.sorted()
        guard latencies.count == consoles * events else {
            throw TestKitError("\(latencies.count) arrivals, expected \(consoles * events)")
        }
        return Report(
            nodes: nodes, loads: loads, assetBytes: assetBytes,
            assetsP50Ms: Samples.percentile(assetTimes.sorted(), 0.5),
            assetsP99Ms: Samples.percentile(assetTimes.sorted(), 0.99),
            firstViewP50Ms: Samples.percentile(viewTimes.sorted(), 0.5),
            firstViewP99Ms: Samples.percentile(viewTimes.sorted(), 0.99), firstViewBytes: viewBytes,
            consoles: consoles, events: events, rssIdleMB: rssIdle, rssConsolesMB: streams[0],
            rssAfterEventsMB: rssAfter,
            fanoutP50Ms: Samples.percentile(latencies, 0.5), fanoutP99Ms: Samples.percentile(latencies, 0.99))
    }

    /// Loads the page and its files as a browser does (the page first, then its three files at
    /// once); the bytes of all four.
    static func loadAssets(_ base: String, client: HTTPClient) async throws -> Int {
        var total = try await get(base + assets[0], cookie: nil, client: client)
        total += try await withThrowingTaskGroup(of: Int.self, returning: Int.self) { group in
            for path in assets.dropFirst() { group.addTask { try await get(base + path, cookie: nil, client: client) } }
            return try await group.reduce(0, +)
        }
        return total
    }

    static func get(_ url: String, cookie: String?, client: HTTPClient) async throws -> Int {
        let answer = try await http(url, headers: cookie.map { ["Cookie": $0] } ?? [:], client: client)
        guard answer.status == 200 else {
            throw TestKitError("GET \(url): \(answer.status) \(answer.text.prefix(200))")
        }
        return answer.body.count
    }

    /// Signs in: the cookie header value, the session, and the answer's bytes.
    static func signIn(_ base: String, token: String, client: HTTPClient) async throws -> (
        String, ConsoleSessionInfo, Int
    ) {
        let answer = try await http(
            base + API.consoleSignIn.pattern, method: "POST", headers: ["Content-Type": "application/json"],
            body: Array(try APICoding.encoder().encode(ConsoleSignIn(token: token))), client: client)
        guard answer.status == 201, let cookie = answer.headers["set-cookie"]?.split(separator: ";").first else {
            throw TestKitError("sign-in: \(answer.status) \(answer.text.prefix(200))")
        }
        return (String(cookie), try answer.decode(ConsoleSessionInfo.self), answer.body.count)
    }

    /// Follows the event stream as a console does (`?tail=100`, the cookie) until `until`
    /// `bench` secrets' events have arrived, noting when each did.
    static func follow(_ base: String, cookie: String, client: HTTPClient, until: Int, arrivals: Arrivals) async throws
    {
        var request = HTTPClientRequest(url: base + API.events.pattern + "?tail=100")
        request.headers.add(name: "Cookie", value: cookie)
        request.headers.add(name: "Accept", value: "text/event-stream")
        let response = try await client.execute(request, timeout: .seconds(600))
        guard response.status == .ok else { throw TestKitError("GET /api/events: \(response.status)") }
        arrivals.open()
        var pending = ""
        var seen = 0
        for try await buffer in response.body {
            pending += String(buffer: buffer)
            while let end = pending.range(of: "\n\n") {
                let event = pending[..<end.lowerBound]
                pending = String(pending[end.upperBound...])
                // data: {... "key_name":"kN" ... "service":"bench" ...}
                guard event.contains("\"service\":\"bench\""), let key = event.range(of: "\"key_name\":\"k") else {
                    continue
                }
                let digits = event[key.upperBound...].prefix { $0.isNumber }
                if let index = Int(digits) { arrivals.arrived(index, at: .now) }
                seen += 1
                if seen == until { return }
            }
        }
    }
}

/// When each event was written and when it reached each stream.
final class Arrivals: Sendable {
    private struct State {
        var sentAt: [Int: ContinuousClock.Instant] = [:]
        var latencies: [Double] = []
        var opened = 0
    }
    private let state = Mutex(State())

    var opened: Int { state.withLock { $0.opened } }
    var latencies: [Double] { state.withLock { $0.latencies } }
    func open() { state.withLock { $0.opened += 1 } }
    func sent(_ index: Int, at instant: ContinuousClock.Instant) { state.withLock { $0.sentAt[index] = instant } }
    func arrived(_ index: Int, at instant: ContinuousClock.Instant) {
        state.withLock { state in
            guard let sent = state.sentAt[index] else { return }
            state.latencies.append(Measurements.ms(sent.duration(to: instant)))
        }
    }
}
