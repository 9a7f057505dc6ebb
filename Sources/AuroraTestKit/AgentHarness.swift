import AuroraAPI
import Foundation

#if canImport(Glibc)
    import Glibc
#endif

/// A real `nodeagent` process on loopback with its own data directory.
public final class AgentHarness: Sendable {
    public let process: ChildProcess
    public let port: Int
    public let dataDir: String
    public var baseURL: String { "http://127.0.0.1:\(port)" }
    /// The agent's managed PostgreSQL, in ``StartedProcesses`` in case the agent cannot stop it.
    private let postgresRegistration: UInt64

    /// Starts `nodeagent run --profile PROFILE --data-dir DATA --listen 127.0.0.1:PORT EXTRA...`;
    /// `executable` is the built `nodeagent` unless given.
    public init(
        profile: String = "lead", dataDir: String, port: Int? = nil, extraArguments: [String] = [],
        environment: [String: String?] = [:], outputDirectory: String, executable: String? = nil
    ) throws {
        let port = try port ?? freePort()
        self.port = port
        self.dataDir = dataDir
        self.process = try ChildProcess(
            executable ?? Binaries.nodeagent,
            ["run", "--profile", profile, "--data-dir", dataDir, "--listen", "127.0.0.1:\(port)"] + extraArguments,
            environment: environment, outputDirectory: outputDirectory)
        postgresRegistration = StartedProcesses.registerPostmaster(dataDirectory: dataDir + "/postgres")
    }

    deinit { StartedProcesses.unregister(postgresRegistration) }

    /// Polls `/health` every `interval` until it says `ok` (or, on a node, `degraded` only because
    /// its lead is unreachable: the agent itself is up); fails at once if the process exits.
    @discardableResult
    public func waitHealthy(timeout: Duration = .seconds(60), every interval: Duration = .milliseconds(25)) async throws
        -> HealthResponse
    {
        try await poll(timeout: timeout, every: interval, "nodeagent on port \(port) to be healthy") {
            () async throws -> HealthResponse? in
            if let code = process.exitCode {
                throw PollStop(
                    TestKitError("nodeagent exited with \(code) before it was healthy: \(process.stderr.suffix(800))"))
            }
            let answer = try await http(baseURL + Routes.health)
            let health = try answer.decode(HealthResponse.self)
            return health.status == .ok || health.servesWithoutLead ? health : nil
        }
    }

    /// The operator token the agent wrote.
    public var adminToken: String {
        get throws {
            try String(contentsOfFile: dataDir + "/" + Defaults.adminTokenFile, encoding: .utf8).trimmingCharacters(
                in: .whitespacesAndNewlines)
        }
    }

    /// `GET /api/agent` with the operator token.
    public func agentStatus() async throws -> AgentStatus {
        try await http(baseURL + Routes.agent, headers: ["Authorization": "Bearer \(try adminToken)"]).decode(
            AgentStatus.self)
    }

    /// A join token from this lead (`aurora-cli token create`).
    public func joinToken(profile: String = "compute", reusable: Bool = false, outputDirectory: String) async throws
        -> String
    {
        let outcome = try await ChildProcess.run(
            Binaries.auroraCLI,
            ["token", "create", "--profile", profile, "--agent", baseURL, "--data-dir", dataDir]
                + (reusable ? ["--reusable"] : []), outputDirectory: outputDirectory)
        let token = outcome.stdout.trimmingCharacters(in: .whitespacesAndNewlines)
        guard outcome.code == 0, !token.isEmpty else {
            throw TestKitError("token create failed (\(outcome.code)): \(outcome.stderr.suffix(400))")
        }
        return token
    }

    /// The managed PostgreSQL's postmaster PID, if its pid file exists.
    public var postgresPID: pid_t? {
        (try? String(contentsOfFile: dataDir + "/postgres/postmaster.pid", encoding: .utf8))?
            .split(separator: "\n").first.flatMap { pid_t($0) }
    }
}

/// PIDs of processes whose command line mentions `text` (like `pgrep -f`).
public func processes(mentioning text: String) -> [pid_t] {
    let entries = (try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? []
    return entries.compactMap { entry -> pid_t? in
        guard let pid = pid_t(entry), pid != getpid(),
            let data = FileManager.default.contents(atPath: "/proc/\(entry)/cmdline")
        else { return nil }
        let commandLine = String(decoding: data.map { $0 == 0 ? 32 : $0 }, as: UTF8.self)
        return commandLine.contains(text) ? pid : nil
    }
}

extension AgentHarness {
    /// A lead named `leadName` (with the node file `leadConfig`, when given) and compute agents
    /// that joined it with one reusable join token, each started with its node file (`config`,
    /// written to `SCRATCH/NAME.yaml`), healthy, and listed by the lead.
    /// Every agent goes into `agents` as soon as it starts, so the caller stops them however
    /// this ends. Returns the lead and the workers, in order.
    public static func leadWithWorkers(
        in scratch: ScratchDirectory, lead leadName: String, leadConfig: String? = nil,
        workers: [(name: String, config: String)], agents: inout [AgentHarness]
    ) async throws -> (lead: AgentHarness, workers: [AgentHarness]) {
        var arguments = ["--name", leadName]
        if let leadConfig {
            try leadConfig.write(toFile: scratch.path + "/\(leadName).yaml", atomically: true, encoding: .utf8)
            arguments += ["--config", scratch.path + "/\(leadName).yaml"]
        }
        let lead = try AgentHarness(
            profile: "lead", dataDir: scratch.path + "/lead", extraArguments: arguments, outputDirectory: scratch.path)
        agents.append(lead)
        try await lead.waitHealthy()
        let join = try await lead.joinToken(reusable: true, outputDirectory: scratch.path)
        var started: [AgentHarness] = []
        for (name, config) in workers {
            let file = scratch.path + "/\(name).yaml"
            try config.write(toFile: file, atomically: true, encoding: .utf8)
            let worker = try AgentHarness(
                profile: "compute", dataDir: scratch.path + "/" + name,
                extraArguments: ["--name", name, "--lead", lead.baseURL, "--join-token", join, "--config", file],
                outputDirectory: scratch.path)
            agents.append(worker)
            started.append(worker)
            try await worker.waitHealthy()
        }
        // A compute agent is healthy before its join is through: wait until the lead lists them all.
        let admin = ["Authorization": "Bearer \(try lead.adminToken)"]
        _ = try await poll(timeout: .seconds(60), every: .milliseconds(50), "the workers to join the lead") {
            () async throws -> Bool? in
            let listed = try? await http(lead.baseURL + Routes.nodes, headers: admin).decode(NodeList.self)
            let names = Set(listed?.nodes.map(\.name) ?? [])
            return workers.allSatisfy { names.contains($0.name) } ? true : nil
        }
        return (lead, started)
    }
}
