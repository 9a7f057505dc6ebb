import Foundation
import Mesh

/// Where an exec job runs and what it sees: the per-profile `exec.*` settings applied to one
/// job (README, "Exec jobs").
///
/// - Working directory: `exec.workdir` when set (created 0700 if missing, never removed); otherwise
///   a fresh `DATA/jobs/ID-ATTEMPT` (0700), removed when the job ends unless `exec.keep_workdir`.
/// - Environment: a clean base, never the agent's own: `PATH` (the agent's, which also finds the
///   command), `HOME` and `TMPDIR` (the working directory), `LANG=C.UTF-8`; then `exec.env`; then
///   the job's `CUDA_VISIBLE_DEVICES`, `AURORA_JOB_ID`, `AURORA_JOB_ATTEMPT` and `AURORA_JOB_AGENT`.
///   No other variable of the agent (tokens, store URLs, passphrase files) reaches a job.
struct ExecSettings: Sendable {
    /// `exec.workdir`; nil: a fresh directory per job.
    let workdir: String?
    let keepWorkdir: Bool
    let environment: [String: String]
    let dataDir: String

    init(config: NodeConfig) {
        workdir = config.execWorkdir
        keepWorkdir = config.execKeepWorkdir
        environment = config.execEnvironment
        dataDir = config.dataDir
    }

    /// The `PATH` jobs get when the agent has none.
    static let defaultPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

    /// The directory job `id`'s attempt runs in, and whether it is removed afterwards.
    func directory(job id: String, attempt: Int) -> (path: String, fresh: Bool) {
        if let workdir { return (workdir, false) }
        return (dataDir + "/jobs/\(id)-\(attempt)", true)
    }

    /// Creates the job's directory (0700; parents as needed).
    func prepare(_ path: String) throws(AgentError) {
        do {
            try FileManager.default.createDirectory(
                atPath: path, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
        } catch {
            throw AgentError(
                .process, "cannot create the job's working directory \(path): \(error.localizedDescription)")
        }
    }

    /// Removes a fresh directory after its job, unless `exec.keep_workdir`.
    func finish(_ path: String, fresh: Bool) {
        guard fresh, !keepWorkdir else { return }
        try? FileManager.default.removeItem(atPath: path)
    }

    /// The job's environment: the base, `exec.env`, then the job's own variables (which win).
    func environment(directory: String, job: [String: String]) -> [String: String] {
        var result: [String: String] = [
            "PATH": ProcessInfo.processInfo.environment["PATH"] ?? Self.defaultPath,
            "HOME": directory, "TMPDIR": directory, "LANG": "C.UTF-8",
        ]
        for (name, value) in environment { result[name] = value }
        for (name, value) in job { result[name] = value }
        return result
    }

    // MARK: Validation

    /// Names `exec.env` may not set: the job's own variables.
    static func reserved(_ name: String) -> Bool {
        name.hasPrefix("AURORA_") || name == "CUDA_VISIBLE_DEVICES"
    }

    /// `exec.workdir`: empty, or an absolute path of at most 4096 bytes without control characters
    /// or `..`. `exec.env`: at most 128 variables; names `[A-Za-z_][A-Za-z0-9_]*` of at most 128
    /// bytes, not `AURORA_*` or `CUDA_VISIBLE_DEVICES`; values at most 32 KiB without control characters.
    static func validate(workdir: String, environment: [String: String]) throws(MeshError) {
        if !workdir.isEmpty {
            try InputRules.identifier(workdir, field: "exec.workdir", maxBytes: 4096)
            guard workdir.hasPrefix("/") else {
                throw MeshError(.invalidText, "exec.workdir must be an absolute path")
            }
            guard !workdir.split(separator: "/").contains("..") else {
                throw MeshError(.invalidText, "exec.workdir must not contain '..'")
            }
        }
        guard environment.count <= 128 else {
            throw MeshError(.tooMany, "exec.env has \(environment.count) variables; at most 128 are allowed")
        }
        for (name, value) in environment.sorted(by: { $0.key < $1.key }) {
            let shown = InputRules.printable(String(name.prefix(64)))
            guard (1...128).contains(name.utf8.count), let first = name.unicodeScalars.first,
                first == "_" || (first.isASCII && first.properties.isAlphabetic),
                name.unicodeScalars.allSatisfy({
                    $0 == "_" || ($0.isASCII && $0.properties.isAlphabetic) || ("0"..."9").contains($0)
                })
            else {
                throw MeshError(
                    .invalidText,
                    "exec.env: '\(shown)' is not a variable name (letters, digits, '_'; not a digit first)")
            }
            guard !reserved(name) else {
                throw MeshError(
                    .invalidText,
                    "exec.env: '\(shown)' is set by the worker for every job (AURORA_*, CUDA_VISIBLE_DEVICES)")
            }
            try InputRules.identifier(value, field: "exec.env.\(shown)", maxBytes: 32_768)
        }
    }
}

extension ResolvedConfig {
    /// `exec.workdir` and `exec.env` (``ExecSettings/validate(workdir:environment:)``); the error
    /// names where the value was set.
    func validateExec() throws(AgentError) {
        guard case .string(let workdir) = self["exec.workdir"], case .map(let environment) = self["exec.env"] else {
            return
        }
        do throws(MeshError) {
            try ExecSettings.validate(workdir: workdir, environment: environment)
        } catch {
            let key = error.message.hasPrefix("exec.workdir") ? "exec.workdir" : "exec.env"
            throw AgentError(.config, "\(error.message) (\(source(of: key)))")
        }
    }
}
