import AuroraAPI
import Foundation
import Synchronization

#if canImport(Glibc)
    import Glibc
#endif

/// A throw-away Prometheus (Debian's `prometheus`) on 127.0.0.1 for tests: started with the
/// configuration text given (written next to its data, so relative paths in it resolve there),
/// ready once `/-/ready` answers 200; read through its HTTP API.
public final class PrometheusServer: Sendable {
    public static let serverPath = "/usr/bin/prometheus"
    public static let toolPath = "/usr/bin/promtool"

    public let port: Int
    /// Where its configuration lives (`prometheus.yml`): put files it names here.
    public let directory: String
    private let child: ChildProcess

    public var url: String { "http://127.0.0.1:\(port)" }

    /// Writes `files` (name → text) and `prometheus.yml` (`config`) into a folder of `scratch`,
    /// starts Prometheus on them and waits until it is ready.
    public init(in scratch: ScratchDirectory, config: String, files: [String: String] = [:]) async throws {
        try Binaries.requireTool(Self.serverPath, hint: "install prometheus (./bootstrap does)")
        port = try freePort()
        directory = scratch.path + "/prometheus"
        try FileManager.default.createDirectory(atPath: directory + "/data", withIntermediateDirectories: true)
        for (name, text) in files { try text.write(toFile: directory + "/" + name, atomically: true, encoding: .utf8) }
        try config.write(toFile: directory + "/prometheus.yml", atomically: true, encoding: .utf8)
        child = try ChildProcess(
            Self.serverPath,
            [
                "--config.file=\(directory)/prometheus.yml", "--storage.tsdb.path=\(directory)/data",
                "--web.listen-address=127.0.0.1:\(port)", "--log.level=warn",
            ], outputDirectory: scratch.path)
        let child = self.child, url = "http://127.0.0.1:\(port)"
        _ = try await poll(timeout: .seconds(30), every: .milliseconds(100), "prometheus to be ready") {
            () async throws -> Bool? in
            if let code = child.exitCode {
                throw PollStop(TestKitError("prometheus exited with \(code): \(child.stderr.suffix(600))"))
            }
            return (try? await http(url + "/-/ready"))?.status == 200 ? true : nil
        }
    }

    /// `GET /api/v1/<path>`'s `data`, as JSON.
    public func api(_ path: String) async throws -> Any {
        let answer = try await http(url + "/api/v1/" + path)
        guard answer.status == 200,
            let object = try JSONSerialization.jsonObject(with: answer.body) as? [String: Any],
            object["status"] as? String == "success", let data = object["data"]
        else { throw TestKitError("prometheus \(path): \(answer.status) \(answer.text.prefix(400))") }
        return data
    }

    /// An instant query's series: each one's labels and value.
    public func query(_ expression: String) async throws -> [(labels: [String: String], value: Double)] {
        let escaped = expression.addingPercentEncoding(withAllowedCharacters: .alphanumerics) ?? ""
        guard let data = try await api("query?query=" + escaped) as? [String: Any],
            let result = data["result"] as? [[String: Any]]
        else { throw TestKitError("prometheus query \(expression): no result") }
        return result.compactMap { series in
            guard let labels = series["metric"] as? [String: String], let pair = series["value"] as? [Any],
                pair.count == 2, let text = pair[1] as? String, let value = Double(text)
            else { return nil }
            return (labels, value)
        }
    }

    /// The active scrape targets: each one's labels and health (`up`, `down`, `unknown`).
    public func activeTargets() async throws -> [(labels: [String: String], health: String)] {
        guard let data = try await api("targets?state=active") as? [String: Any],
            let targets = data["activeTargets"] as? [[String: Any]]
        else { throw TestKitError("prometheus targets: no activeTargets") }
        return targets.compactMap { target in
            guard let labels = target["labels"] as? [String: String], let health = target["health"] as? String
            else { return nil }
            return (labels, health)
        }
    }

    /// The alerts that are pending or firing: each one's labels and state.
    public func alerts() async throws -> [(labels: [String: String], state: String)] {
        guard let data = try await api("alerts") as? [String: Any], let alerts = data["alerts"] as? [[String: Any]]
        else { throw TestKitError("prometheus alerts: no alerts") }
        return alerts.compactMap { alert in
            guard let labels = alert["labels"] as? [String: String], let state = alert["state"] as? String
            else { return nil }
            return (labels, state)
        }
    }

    /// Stops the server; for cleanup paths, never throws.
    public func stop() async {
        guard child.isRunning else { return }
        child.signal(SIGTERM)
        if (try? await child.waitForExit(timeout: .seconds(10))) == nil { child.signal(SIGKILL) }
    }
}
