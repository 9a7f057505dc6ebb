import AsyncHTTPClient
import AuroraAPI
import Foundation
import NIOCore

/// A few typed calls to the local agent's HTTP API.
struct AgentClient {
    let baseURL: String
    let token: String?
    var timeout: TimeAmount = .seconds(5)

    struct Reply {
        var status: Int
        var body: Data
    }

    /// GET `path`; a connection failure becomes ``CLIError/notRunning(_:_:)``.
    func get(_ path: String) async throws -> Reply {
        var request = HTTPClientRequest(url: baseURL + path)
        if let token { request.headers.add(name: Headers.authorization, value: "Bearer \(token)") }
        let response: HTTPClientResponse
        do {
            response = try await HTTPClient.shared.execute(request, timeout: timeout)
        } catch {
            throw CLIError.notRunning(baseURL, Self.reason(error))
        }
        let body = try await response.body.collect(upTo: 8 << 20)
        return Reply(status: Int(response.status.code), body: Data(buffer: body))
    }

    /// GET and decode `T`, or throw the agent's JSON error as one line.
    func get<T: Decodable>(_ path: String, as type: T.Type, acceptServiceUnavailable: Bool = false) async throws -> T {
        let reply = try await get(path)
        if reply.status == 200 || (acceptServiceUnavailable && reply.status == 503), let value = try? APICoding.decoder().decode(T.self, from: reply.body) {
            return value
        }
        if let error = try? APICoding.decoder().decode(ErrorResponse.self, from: reply.body) {
            throw CLIError("\(path): \(reply.status) \(error.error.code): \(error.error.message)")
        }
        throw CLIError("\(path): unexpected answer \(reply.status) from \(baseURL)")
    }

    static func reason(_ error: any Error) -> String {
        let text = String(describing: error)
        if text.contains("connectTimeout") || text.contains("Timeout") { return "timed out" }
        if text.contains("refused") || text.contains("ECONNREFUSED") || text.contains("errno: 111") { return "connection refused" }
        return text.split(separator: "\n").first.map(String.init) ?? "unreachable"
    }
}

extension Data {
    init(buffer: ByteBuffer) {
        self.init(buffer.readableBytesView)
    }
}
