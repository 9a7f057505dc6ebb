import ArgumentParser
import AuroraAPI
import AuroraClient
import Foundation

#if canImport(Glibc)
    import Glibc
    import NIOCore
#endif

/// `aurora-cli doctor`: checks the local install and says, per check, what is wrong and how to
/// fix it.
struct Doctor: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract:
            "Check the local install: binaries, libraries, data dir permissions, agent, lead, store, port, WireGuard and PostgreSQL tools.",
        discussion: """
            On a compute or edge node the lead check fails while the node cannot reach its lead
            (it then serves cached views), saying since when and the last error.
            Exit status: 0 when no check failed (warnings allowed), 1 otherwise.
            """)

    @OptionGroup var localOptions: AgentOptions
    @ParentCommand var root: AuroraCLI

    var options: AgentOptions { localOptions.merged(with: root.options) }

    @Flag(help: "Print JSON: {checks: [{name, verdict, detail}], verdict}.")
    var json = false

    /// One check's outcome.
    struct Check: Codable {
        enum Verdict: String, Codable { case ok, warn, fail, skip }
        var name: String
        var verdict: Verdict
        var detail: String
    }

    struct Report: Codable {
        var checks: [Check]
        var verdict: Check.Verdict
    }

    func run() async throws {
        var checks: [Check] = []
        let nodeagent = Self.findNodeagent()
        checks.append(
            nodeagent.map { Check(name: "nodeagent binary", verdict: .ok, detail: $0) }
                ?? Check(
                    name: "nodeagent binary", verdict: .fail,
                    detail: "not found beside aurora-cli or on PATH; run ./bootstrap install"))
        checks.append(Self.libraries(of: nodeagent))
        checks.append(contentsOf: Self.dataDir(options.resolvedDataDir))

        let url = options.agentURL
        var health: HealthResponse?
        do {
            health = try await options.anonymousClient(timeout: .seconds(3)).health()
            checks.append(
                Check(
                    // Degraded only because its lead is away: the agent itself is fine (the lead
                    // check below fails for that).
                    name: "agent", verdict: health!.status == .ok || health!.servesWithoutLead ? .ok : .warn,
                    detail:
                        "\(url): \(health!.status.rawValue), \(health!.role.rawValue) '\(health!.node)', version \(health!.version)"
                        + (health!.servesWithoutLead ? " (only its lead is unreachable)" : "")
                ))
        } catch {
            checks.append(Check(name: "agent", verdict: .warn, detail: CLIError(error, style: .check).message))
        }
        checks.append(await tokenCheck(agentUp: health != nil))
        checks.append(await leadCheck(health))
        checks.append(Self.store(health))
        checks.append(Self.port(url: url, agentUp: health != nil))
        checks.append(Self.postgresTools())
        checks.append(Self.wireguardTools())

        let verdict: Check.Verdict =
            checks.contains { $0.verdict == .fail } ? .fail : checks.contains { $0.verdict == .warn } ? .warn : .ok
        if json {
            print(
                String(
                    decoding: try APICoding.encoder(pretty: true).encode(Report(checks: checks, verdict: verdict)),
                    as: UTF8.self))
        } else {
            let width = checks.map(\.name.count).max()! + 2
            for check in checks {
                print(
                    check.verdict.rawValue.padding(toLength: 6, withPad: " ", startingAt: 0)
                        + check.name.padding(toLength: width, withPad: " ", startingAt: 0) + check.detail)
            }
            let failed = checks.filter { $0.verdict == .fail }.count,
                warned = checks.filter { $0.verdict == .warn }.count
            print("verdict: \(verdict.rawValue) (\(failed) failed, \(warned) warnings, \(checks.count) checks)")
        }
        if verdict == .fail { throw ExitCode(1) }
    }

    // MARK: Checks

    static func findNodeagent() -> String? {
        let own =
            (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? CommandLine.arguments[0]
        let beside = (own as NSString).deletingLastPathComponent + "/nodeagent"
        if FileManager.default.isExecutableFile(atPath: beside) { return beside }
        return which("nodeagent")
    }

    static func libraries(of binary: String?) -> Check {
        let name = "shared libraries"
        guard let binary else { return Check(name: name, verdict: .skip, detail: "no nodeagent binary to inspect") }
        guard let ldd = which("ldd"), let output = run(ldd, [binary]) else {
            return Check(name: name, verdict: .warn, detail: "ldd not available; cannot inspect \(binary)")
        }
        let missing = output.split(separator: "\n").filter { $0.contains("not found") }.map {
            $0.split(separator: " ").first.map(String.init) ?? String($0)
        }
        if !missing.isEmpty {
            return Check(
                name: name, verdict: .fail,
                detail:
                    "missing: \(missing.joined(separator: ", ")); run ./bootstrap (apt: libsodium23 libpq5 libhiredis0.14)"
            )
        }
        let wanted = ["libsodium", "libpq", "libhiredis"]
        let present = wanted.filter { output.contains($0) }
        return Check(name: name, verdict: .ok, detail: present.joined(separator: ", ") + " resolved")
    }

    static func dataDir(_ path: String) -> [Check] {
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory) else {
            return [
                Check(
                    name: "data dir", verdict: .warn,
                    detail: "\(path) does not exist yet; the agent creates it on first start")
            ]
        }
        guard isDirectory.boolValue else {
            return [Check(name: "data dir", verdict: .fail, detail: "\(path) is not a directory")]
        }
        var checks: [Check] = []
        if let mode = mode(path), mode & 0o022 != 0 {
            checks.append(
                Check(
                    name: "data dir", verdict: .fail,
                    detail: "\(path) is writable by others (mode \(octal(mode))); run 'chmod 711 \(path)'"))
        } else if access(path, W_OK) != 0 {
            checks.append(
                Check(
                    name: "data dir", verdict: .warn,
                    detail: "\(path) is not writable by this user (the agent's user may differ)"))
        } else {
            checks.append(Check(name: "data dir", verdict: .ok, detail: "\(path) (mode \(octal(mode(path) ?? 0)))"))
        }
        var secretFiles = [path + "/" + Defaults.adminTokenFile]
        let keys = path + "/keys"
        if let names = try? FileManager.default.contentsOfDirectory(atPath: keys) {
            secretFiles += names.filter { $0.hasSuffix(".key") || $0.hasSuffix(".sha256") }.map { keys + "/" + $0 }
        }
        let present = secretFiles.filter { FileManager.default.fileExists(atPath: $0) }
        let loose = present.filter { (mode($0) ?? 0) & 0o077 != 0 }
        if present.isEmpty {
            checks.append(
                Check(
                    name: "key files", verdict: .warn,
                    detail: "no keys yet in \(keys); the agent creates them on first start"))
        } else if loose.isEmpty {
            checks.append(Check(name: "key files", verdict: .ok, detail: "\(present.count) secret files, all 0600"))
        } else {
            checks.append(
                Check(
                    name: "key files", verdict: .fail,
                    detail: "readable by others: \(loose.joined(separator: ", ")); run 'chmod 600' on them"))
        }
        return checks
    }

    func tokenCheck(agentUp: Bool) async -> Check {
        let name = "operator token"
        switch options.resolveToken() {
        case .failure(let error):
            return Check(name: name, verdict: .warn, detail: error.message)
        case .success(let (token, source)):
            guard agentUp else {
                return Check(name: name, verdict: .ok, detail: "from \(source) (agent not running: not verified)")
            }
            do {
                _ = try await AuroraClient(
                    baseURL: options.agentURL, token: token, pin: options.resolvedPin, timeout: .seconds(3)
                ).agentStatus()
                return Check(name: name, verdict: .ok, detail: "from \(source), accepted by the agent")
            } catch {
                return Check(
                    name: name, verdict: .fail,
                    detail: "from \(source), refused: \(CLIError(error, style: .check).message)")
            }
        }
    }

    /// Whether this node reaches its lead, as its `/health` says; the last error from its (stale)
    /// node list when the token allows.
    func leadCheck(_ health: HealthResponse?) async -> Check {
        let name = "lead"
        guard let health else { return Check(name: name, verdict: .skip, detail: "agent not running") }
        guard health.role != .lead else { return Check(name: name, verdict: .ok, detail: "this agent is the lead") }
        switch health.lead?.state {
        case .reachable:
            return Check(name: name, verdict: .ok, detail: "reachable from this node (its last heartbeat was answered)")
        case .unreachable:
            var detail = "UNREACHABLE from this node"
            if let lead = health.lead {
                detail += lead.since.map { " since \($0)" } ?? ""
                detail += lead.unreachableS.map { " (\(MeshTable.age($0)))" } ?? ""
            }
            if let client = try? options.client(), let list = try? await client.nodes(), list.stale,
                let reason = list.reason
            {
                detail += ": " + TerminalText.safe(reason)
            }
            detail +=
                "; the node serves cached views and keeps its reports in the outbox. Check that the lead runs and that this machine reaches it (network, firewall, TLS pin)"
            return Check(name: name, verdict: .fail, detail: detail)
        case .unknown, nil:
            return Check(
                name: name, verdict: .warn, detail: "no call to the lead has finished yet (the agent just started)")
        }
    }

    static func store(_ health: HealthResponse?) -> Check {
        let name = "store"
        guard let health else { return Check(name: name, verdict: .skip, detail: "agent not running") }
        switch health.store.state {
        case .none:
            return Check(name: name, verdict: .skip, detail: "this node keeps no store (\(health.role.rawValue))")
        case .ok:
            return Check(
                name: name, verdict: .ok,
                detail:
                    "\(health.store.mode.rawValue) PostgreSQL reachable, schema \(health.store.schemaVersion.map(String.init) ?? "?")"
            )
        case .starting: return Check(name: name, verdict: .warn, detail: "still starting")
        case .failed, .stopping:
            return Check(name: name, verdict: .fail, detail: health.store.message ?? health.store.state.rawValue)
        }
    }

    static func port(url: String, agentUp: Bool) -> Check {
        let name = "listen port"
        guard let components = URLComponents(string: url), let host = components.host else {
            return Check(name: name, verdict: .skip, detail: "cannot read a port from \(url)")
        }
        let port = components.port ?? (components.scheme == "https" ? 443 : 80)
        if agentUp { return Check(name: name, verdict: .ok, detail: "\(host):\(port) in use by the agent") }
        guard ["127.0.0.1", "localhost", "::1"].contains(host) else {
            return Check(name: name, verdict: .skip, detail: "\(host) is not this machine")
        }
        if let reason = bindFails(port: port) {
            return Check(
                name: name, verdict: .fail,
                detail:
                    "127.0.0.1:\(port) is taken by another program (\(reason)); stop it or set listen in the profile")
        }
        return Check(name: name, verdict: .ok, detail: "127.0.0.1:\(port) is free")
    }

    static func postgresTools() -> Check {
        let name = "postgresql server"
        let versions = ((try? FileManager.default.contentsOfDirectory(atPath: "/usr/lib/postgresql")) ?? []).compactMap(
            Int.init
        ).sorted()
        if let newest = versions.last,
            FileManager.default.isExecutableFile(atPath: "/usr/lib/postgresql/\(newest)/bin/initdb")
        {
            return Check(name: name, verdict: .ok, detail: "initdb and pg_ctl in /usr/lib/postgresql/\(newest)/bin")
        }
        return Check(
            name: name, verdict: .warn,
            detail: "initdb not found: a lead needs it for its managed store (apt install postgresql) or --store URL")
    }

    static func wireguardTools() -> Check {
        let name = "wireguard tools"
        let wg = which("wg")
        let userspace = which("wireguard-go")
        let kernel = FileManager.default.fileExists(atPath: "/sys/module/wireguard")
        switch (wg, userspace, kernel) {
        case (nil, _, _):
            return Check(
                name: name, verdict: .warn,
                detail: "wg not found; wireguard.mode apply needs it (apt install wireguard-tools)")
        case (let wg?, _, true): return Check(name: name, verdict: .ok, detail: "\(wg), kernel WireGuard")
        case (let wg?, let go?, false):
            return Check(name: name, verdict: .ok, detail: "\(wg), \(go) (no kernel module: userspace)")
        case (_?, nil, false):
            return Check(
                name: name, verdict: .warn,
                detail: "no kernel module and no wireguard-go (apt install --no-install-recommends wireguard-go)")
        }
    }

    // MARK: Helpers

    static func which(_ program: String) -> String? {
        let path =
            ProcessInfo.processInfo.environment["PATH"]
            ?? "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
        return path.split(separator: ":").map { "\($0)/\(program)" }.first {
            FileManager.default.isExecutableFile(atPath: $0)
        }
    }

    static func run(_ program: String, _ arguments: [String]) -> String? {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: program)
        process.arguments = arguments
        let pipe = Pipe()
        process.standardOutput = pipe
        process.standardError = pipe
        guard (try? process.run()) != nil else { return nil }
        let data = pipe.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        return String(decoding: data, as: UTF8.self)
    }

    static func mode(_ path: String) -> mode_t? {
        var info = stat()
        return stat(path, &info) == 0 ? info.st_mode & 0o7777 : nil
    }

    static func octal(_ mode: mode_t) -> String { String(mode, radix: 8) }

    /// nil when 127.0.0.1:port can be bound, else the reason.
    static func bindFails(port: Int) -> String? {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue | SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { return "socket failed" }
        defer { close(fd) }
        var yes: Int32 = 1
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &yes, socklen_t(MemoryLayout<Int32>.size))
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = UInt16(port).bigEndian
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        let result = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
            }
        }
        return result == 0 ? nil : String(cString: strerror(errno))
    }
}
