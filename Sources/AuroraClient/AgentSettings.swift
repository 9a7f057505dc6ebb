import AuroraAPI
import AuroraTLS
import Foundation

/// Which agent a command talks to, with which token and pin, and where each of those came
/// from. One order for every setting: explicit flags (`--agent`, `--token`, `--data-dir`,
/// `--pin`) > environment (`AURORA_AGENT`, `AURORA_TOKEN`, `AURORA_DATA_DIR`, `AURORA_PIN`) >
/// the selected context (`--context`, else `AURORA_CONTEXT`, else the current one) > defaults
/// (`http://127.0.0.1:9999`, token in `/var/lib/aurora/admin.token`).
///
/// A context's token and pin go only to its own agent: when `--agent` or `AURORA_AGENT` names
/// another URL, they are not used.
public struct AgentSettings: Sendable {
    /// Where one setting came from, for messages.
    public enum Origin: Sendable, Equatable, CustomStringConvertible {
        /// A command-line option, such as `--agent`.
        case flag(String)
        /// An environment variable, such as `AURORA_AGENT`.
        case environment(String)
        /// The context of this name.
        case context(String)
        /// Nothing chose: the built-in default.
        case builtIn

        public var description: String {
            switch self {
            case .flag(let name): name
            case .environment(let name): name
            case .context(let name): "context '\(name)'"
            case .builtIn: "the default"
            }
        }
    }

    /// What the command line said; nil (or empty) where an option was not given.
    public struct Choice: Sendable {
        public var agent: String?
        public var token: String?
        public var dataDir: String?
        public var pin: String?
        public var context: String?

        public init(
            agent: String? = nil, token: String? = nil, dataDir: String? = nil, pin: String? = nil,
            context: String? = nil
        ) {
            self.agent = agent
            self.token = token
            self.dataDir = dataDir
            self.pin = pin
            self.context = context
        }
    }

    /// How the operator token is found.
    public enum Credential: Sendable, Equatable {
        /// The token itself (from `--token`, `AURORA_TOKEN` or a context).
        case token(String, Origin)
        /// `DIR/admin.token`, read when needed.
        case dataDir(String, Origin)
    }

    /// The agent's URL, without a trailing `/`.
    public let agentURL: String
    public let agentOrigin: Origin
    public let pin: TLSPin?
    /// Where the pin came from; nil without a pin.
    public let pinOrigin: Origin?
    public let credential: Credential
    /// The selected context's name and how it was selected (`--context`, `AURORA_CONTEXT`, or
    /// the current-context file's path); nil when none is.
    public let context: (name: String, selectedBy: String)?
    /// Why the selected context's token and pin were left out, when they were.
    public let contextSetAside: String?

    /// Resolves `choice` with `environment` and `store`. The selected context is read only
    /// when a setting falls through to it (or when `--context`/`AURORA_CONTEXT` names one),
    /// so a damaged context does not stop a command whose flags say everything.
    public static func resolve(
        _ choice: Choice, environment: [String: String], store: () throws(AuroraClientError) -> ContextStore
    )
        throws(AuroraClientError) -> AgentSettings
    {
        func given(_ value: String?) -> String? { value.flatMap { $0.isEmpty ? nil : $0 } }
        let agentFlag: (String, Origin)? = given(choice.agent).map { ($0, .flag("--agent")) }
        let agentEnvironment: (String, Origin)? = given(environment["AURORA_AGENT"]).map {
            ($0, .environment("AURORA_AGENT"))
        }
        let tokenGiven: Credential? =
            given(choice.token).map { Credential.token($0, .flag("--token")) }
            ?? given(choice.dataDir).map { Credential.dataDir($0, .flag("--data-dir")) }
            ?? given(environment["AURORA_TOKEN"]).map { Credential.token($0, .environment("AURORA_TOKEN")) }
            ?? given(environment["AURORA_DATA_DIR"]).map { Credential.dataDir($0, .environment("AURORA_DATA_DIR")) }
        let pinGiven: (text: String, origin: Origin)? =
            given(choice.pin).map { ($0, .flag("--pin")) }
            ?? given(environment["AURORA_PIN"]).map { ($0, .environment("AURORA_PIN")) }

        // The context: explicit choices always load; the current one only when needed.
        let explicit: (name: String, selectedBy: String)? =
            given(choice.context).map { ($0, "--context") }
            ?? given(environment["AURORA_CONTEXT"]).map { ($0, "AURORA_CONTEXT") }
        var selected: (context: AgentContext, selectedBy: String)?
        if let explicit {
            do {
                selected = (try store().context(explicit.name), explicit.selectedBy)
            } catch {
                throw AuroraClientError(.context, "\(error.message) (the context was chosen by \(explicit.selectedBy))")
            }
        } else if agentFlag == nil && agentEnvironment == nil || tokenGiven == nil {
            let contexts = try store()
            if let name = try contexts.current() {
                do {
                    selected = (try contexts.context(name), contexts.currentPath)
                } catch {
                    throw AuroraClientError(
                        .context,
                        "\(error.message) (it is the current context, named in \(contexts.currentPath); "
                            + "'aurora-cli context use NAME' picks another)")
                }
            }
        } else if pinGiven == nil, let contexts = try? store(), let name = try? contexts.current(),
            let context = try? contexts.context(name)
        {
            // Agent and token are given: the current context can only add its pin (for its own
            // agent), and a damaged one is no reason to fail.
            selected = (context, contexts.currentPath)
        }

        let fromContext: (String, Origin)? = selected.map { ($0.context.agent, .context($0.context.name)) }
        let (agentText, agentOrigin): (String, Origin) =
            agentFlag ?? agentEnvironment ?? fromContext ?? (Defaults.agentURL, .builtIn)
        let agentURL = agentText.hasSuffix("/") ? String(agentText.dropLast()) : agentText

        var contextSetAside: String?
        var usable = selected?.context
        if let context = selected?.context, agentURL != context.agent {
            contextSetAside =
                "context '\(context.name)' is for \(context.agent), and \(agentOrigin) names \(agentURL): "
                + "its token and pin go only to its own agent"
            usable = nil
        }
        let credential =
            tokenGiven ?? usable.map { Credential.token($0.token, .context($0.name)) }
            ?? .dataDir(Defaults.dataDir, .builtIn)
        var pin: TLSPin?
        var pinOrigin: Origin?
        if let pinGiven {
            guard let parsed = TLSPin(parsing: pinGiven.text) else {
                throw AuroraClientError(.context, "\(pinGiven.origin) must be sha256: and 64 hex digits")
            }
            (pin, pinOrigin) = (parsed, pinGiven.origin)
        } else if let context = usable, let contextPin = context.pin {
            (pin, pinOrigin) = (contextPin, .context(context.name))
        }
        return AgentSettings(
            agentURL: agentURL, agentOrigin: agentOrigin, pin: pin, pinOrigin: pinOrigin, credential: credential,
            context: selected.map { ($0.context.name, $0.selectedBy) }, contextSetAside: contextSetAside)
    }

    // MARK: - The token

    /// The operator token and where it came from (a flag, a variable, a context or the path of
    /// the file read). The error names the data directory tried, what chose it, and how to
    /// choose another; it never contains a token.
    public func token() throws(AuroraClientError) -> (token: String, source: String) {
        switch credential {
        case .token(let token, let origin):
            return (token, origin.description)
        case .dataDir(let directory, let origin):
            let path =
                (directory.hasSuffix("/") ? String(directory.dropLast()) : directory) + "/"
                + Defaults.adminTokenFile
            let text: String
            do {
                text = try String(contentsOfFile: path, encoding: .utf8)
            } catch {
                let missing = !FileManager.default.fileExists(atPath: path)
                throw AuroraClientError(
                    .context,
                    "no operator token: "
                        + (missing ? "\(path) does not exist" : "cannot read \(path) (\(ContextStore.reason(error)))")
                        + "; \(explanation(directory: directory, origin: origin))"
                        + (missing ? "" : "; or run as the agent's user or root"))
            }
            let token = text.trimmingCharacters(in: .whitespacesAndNewlines)
            guard !token.isEmpty else {
                throw AuroraClientError(
                    .context,
                    "no operator token: \(path) is empty; \(explanation(directory: directory, origin: origin))")
            }
            return (token, path)
        }
    }

    /// "the data dir D came from X; pick another with ...".
    func explanation(directory: String, origin: Origin) -> String {
        let why: String
        switch origin {
        case .builtIn:
            why =
                "\(directory) is the default data dir (no --token, --data-dir, AURORA_TOKEN, AURORA_DATA_DIR or usable context chose another)"
        default:
            why = "the data dir \(directory) came from \(origin)"
        }
        let setAside = contextSetAside.map { "; \($0)" } ?? ""
        return why + setAside
            + "; pick another with --data-dir DIR (or AURORA_DATA_DIR), a token in AURORA_TOKEN, "
            + "or a saved context: 'aurora-cli context use NAME' ('aurora-cli context list' shows them)"
    }
}
