import Foundation

/// Finds profile files: `--profile NAME` names `NAME.yaml` in the first directory that has it,
/// or is a path to a YAML file itself.
public enum ProfileLocator {
    /// The directories searched, in order.
    /// `--profiles-dir`, then `AURORA_PROFILES_DIR`, then `/etc/aurora/profiles`, then the
    /// installed `../share/aurora/profiles` from the binary's directory, then any `profiles/` with a
    /// `lead.yaml` up to five levels above it (a source checkout). Missing directories stay in the
    /// list: ``locate(_:profilesDir:environment:executable:)`` names them all in its error. After
    /// them come the profiles built into the binary.
    public static func searchDirectories(profilesDir: String?, environment: [String: String], executable: String)
        -> [String]
    {
        var directories: [String] = []
        if let profilesDir { directories.append(profilesDir) }
        if let fromEnvironment = environment["AURORA_PROFILES_DIR"], !fromEnvironment.isEmpty {
            directories.append(fromEnvironment)
        }
        directories.append("/etc/aurora/profiles")
        // Installed layout (/usr/local/bin/nodeagent → /usr/local/share/aurora/profiles), then a
        // source checkout (…/.build/debug/nodeagent → …/profiles).
        var directory = URL(fileURLWithPath: executable).resolvingSymlinksInPath().deletingLastPathComponent()
        directories.append(directory.deletingLastPathComponent().appendingPathComponent("share/aurora/profiles").path)
        for _ in 0..<5 {
            directory = directory.deletingLastPathComponent()
            let candidate = directory.appendingPathComponent("profiles").path
            if FileManager.default.fileExists(atPath: candidate + "/lead.yaml") { directories.append(candidate) }
        }
        return directories
    }

    /// The file for `profile`, or an error listing where it looked.
    /// A name with a `/` or a `.yaml`/`.yml` suffix is a path and must exist; any other name must
    /// be letters, digits, `-` and `_`. When no directory has `lead`, `compute` or `edge`, the
    /// answer is `built-in:NAME` (``BuiltInProfiles``). Throws ``AgentError`` with code
    /// `profileNotFound`.
    public static func locate(
        _ profile: String, profilesDir: String?, environment: [String: String], executable: String
    ) throws(AgentError) -> String {
        if profile.contains("/") || profile.hasSuffix(".yaml") || profile.hasSuffix(".yml") {
            guard FileManager.default.fileExists(atPath: profile) else {
                throw AgentError(.profileNotFound, "profile file '\(profile)' does not exist")
            }
            return profile
        }
        guard !profile.isEmpty, profile.allSatisfy({ $0.isLetter || $0.isNumber || $0 == "-" || $0 == "_" }) else {
            throw AgentError(
                .profileNotFound, "'\(profile)' is not a profile name; use lead, compute, edge or a path to a YAML file"
            )
        }
        let directories = searchDirectories(profilesDir: profilesDir, environment: environment, executable: executable)
        for directory in directories {
            let candidate = (directory as NSString).appendingPathComponent(profile + ".yaml")
            if FileManager.default.fileExists(atPath: candidate) { return candidate }
        }
        // No file on disk: the profile built into the binary, when there is one by that name.
        if BuiltInProfiles.all[profile] != nil { return BuiltInProfiles.prefix + profile }
        throw AgentError(
            .profileNotFound,
            "profile '\(profile)' not found; looked for \(profile).yaml in \(directories.joined(separator: ", "))")
    }
}

/// Loading the whole configuration from files and the process.
public enum ConfigLoader {
    /// What `nodeagent` was asked for on its command line.
    public struct Request: Sendable {
        /// `--profile`: a profile name or a path; nil falls back to `AURORA_PROFILE`, then `NODE_ROLE`.
        public var profile: String?
        /// `--profiles-dir`, searched before every other profile directory.
        public var profilesDir: String?
        /// `--config`: the node file layered over the profile; nil falls back to `AURORA_CONFIG`.
        public var configFile: String?
        /// The `nodeagent run` flags that were given, by key path (`data_dir` for `--data-dir`).
        public var flags: [String: String]

        public init(profile: String?, profilesDir: String?, configFile: String?, flags: [String: String]) {
            self.profile = profile
            self.profilesDir = profilesDir
            self.configFile = configFile
            self.flags = flags
        }
    }

    /// Locates and reads the profile and node file, then resolves every key.
    /// Called once by `nodeagent run` and `nodeagent config`. Every failure is an ``AgentError``
    /// whose message names the file and line, variable or flag at fault; nothing is changed on disk.
    public static func load(
        _ request: Request, environment: [String: String] = ProcessInfo.processInfo.environment,
        executable: String = CommandLine.arguments[0]
    ) throws(AgentError) -> NodeConfig {
        guard
            let profile = request.profile ?? environment["AURORA_PROFILE"].flatMap({ $0.isEmpty ? nil : $0 })
                ?? environment["NODE_ROLE"].flatMap({ $0.isEmpty ? nil : $0 })
        else {
            throw AgentError(.profileNotFound, "no profile given; pass --profile lead|compute|edge (or set NODE_ROLE)")
        }
        let executablePath = executable.contains("/") ? executable : (ProcessRunner.find(executable) ?? executable)
        let profileFile = try ProfileLocator.locate(
            profile, profilesDir: request.profilesDir, environment: environment, executable: executablePath)
        let profileLayer: ConfigLayer
        if let text = BuiltInProfiles.text(at: profileFile) {
            profileLayer = try ConfigFile.parse(text, file: profileFile, kind: .profile)
        } else {
            profileLayer = try ConfigFile.load(path: profileFile, kind: .profile)
        }
        let nodeLayer: ConfigLayer?
        if let file = request.configFile ?? environment["AURORA_CONFIG"].flatMap({ $0.isEmpty ? nil : $0 }) {
            nodeLayer = try ConfigFile.load(path: file, kind: .nodeFile)
        } else {
            nodeLayer = nil
        }
        let inputs = ConfigInputs(
            profile: profileLayer, nodeFile: nodeLayer, environment: environment, flags: request.flags,
            hostName: ProcessInfo.processInfo.hostName, workingDirectory: FileManager.default.currentDirectoryPath)
        return NodeConfig(resolved: try ResolvedConfig.resolve(inputs), profileFile: profileFile)
    }
}
