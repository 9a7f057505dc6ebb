import AuroraAPI
import AuroraClient
import NIOCore

// The CLI reaches agents only through AuroraClient; this file makes its clients from the
// options and turns its failures into the CLI's one-line errors and exit codes.

extension AgentOptions {
    /// A client with the operator token.
    func client() throws -> AuroraClient {
        do {
            let settings = try settings()
            return AuroraClient(baseURL: settings.agentURL, token: try settings.token().token, pin: settings.pin)
        } catch {
            throw CLIError(error.message)
        }
    }

    /// A client without a token, for `/health`.
    func anonymousClient(timeout: TimeAmount = .seconds(5)) throws(AuroraClientError) -> AuroraClient {
        let settings = try settings()
        return AuroraClient(baseURL: settings.agentURL, token: nil, pin: settings.pin, timeout: timeout)
    }
}

extension CLIError {
    /// How a refusal reads: `message (401 unauthorized)` after a command, or
    /// `/api/agent: 401 unauthorized: message` where a check names the path it read.
    enum Style {
        case command, check
    }

    /// The client's failure as one line and an exit code: 3 when no agent answers (or no TLS
    /// handshake can be made), 1 otherwise.
    init(_ error: AuroraClientError, style: Style = .command) {
        switch error.code {
        case .cannotConnect:
            self = .notRunning(error.baseURL, error.reason ?? "unreachable")
        case .pinRequired:
            self.init(
                "\(error.baseURL) is https: pass --pin sha256:... (or set AURORA_PIN, or save it with 'aurora-cli context add') so the agent's key is checked before the token is sent; "
                    + "the agent logs its pin at start, and 'token create' on the lead prints it")
        case .tlsFailed:
            self.init(error.message, exitCode: 3)
        case .refused where style == .check:
            let detail = error.apiError.map { "\($0.code): \($0.message)" } ?? error.message
            self.init("\(error.path ?? ""): \(error.status ?? 0) \(detail)")
        case .undecodable where style == .check && error.status != nil:
            self.init("\(error.path ?? ""): unexpected answer \(error.status ?? 0) from \(error.baseURL)")
        default:
            self.init(error.message)
        }
    }
}
