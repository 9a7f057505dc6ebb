import AsyncHTTPClient
import AuroraAPI
import AuroraTLS
import Foundation
import NIOCore
import NIOHTTP1
import NIOSSL

/// A few typed calls to the local agent's HTTP API.
struct AgentClient {
    let baseURL: String
    let token: String?
    var timeout: TimeAmount = .seconds(5)
    /// The pin of the agent's TLS key, for an https agent (`--pin`, `AURORA_PIN`).
    var pin: TLSPin? = AgentOptions.environmentPin

    /// For an https agent: a TLS configuration that trusts only the certificate whose key
    /// matches the pin (checked in a handshake before the token is sent). Nil for http.
    func tlsConfiguration() async throws -> TLSConfiguration? {
        guard let url = URLComponents(string: baseURL), url.scheme?.lowercased() == "https" else { return nil }
        guard let pin else {
            throw CLIError("\(baseURL) is https: pass --pin sha256:... (or set AURORA_PIN) so the agent's key is checked before the token is sent; "
                           + "the agent logs its pin at start, and 'token create' on the lead prints it")
        }
        do {
            let certificate = try await PinnedTLS.verifiedCertificate(url: baseURL, host: url.host ?? "", port: url.port ?? 443, pin: pin)
            return PinnedTLS.clientConfiguration(trusting: certificate)
        } catch let error as PinningError {
            throw CLIError(error.message, exitCode: error.message.contains("refusing") ? 1 : 3)
        }
    }

    struct Reply {
        var status: Int
        var body: Data
    }

    /// GET `path`; a connection failure becomes ``CLIError/notRunning(_:_:)``.
    func get(_ path: String) async throws -> Reply {
        try await send("GET", path, body: nil)
    }

    /// Sends `method path` with an optional JSON body.
    func send(_ method: String, _ path: String, body: Data?) async throws -> Reply {
        var request = HTTPClientRequest(url: baseURL + path)
        request.tlsConfiguration = try await tlsConfiguration()
        request.method = .init(rawValue: method)
        if let body {
            request.body = .bytes(ByteBuffer(bytes: body))
            request.headers.add(name: "Content-Type", value: "application/json")
        }
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

    /// Sends and decodes `T` from a 2xx answer, or throws the agent's JSON error as one line.
    func call<T: Decodable>(_ method: String, _ path: String, body: (some Encodable)? = Optional<Int>.none, as type: T.Type) async throws -> T {
        let data = try body.map { try APICoding.encoder().encode($0) }
        let reply = try await send(method, path, body: data)
        if (200..<300).contains(reply.status), let value = try? APICoding.decoder().decode(T.self, from: reply.body) {
            return value
        }
        if let error = try? APICoding.decoder().decode(ErrorResponse.self, from: reply.body) {
            throw CLIError("\(error.error.message) (\(reply.status) \(error.error.code))")
        }
        throw CLIError("\(method) \(path): unexpected answer \(reply.status) from \(baseURL)")
    }

    /// Streams Server-Sent Events from `path`, calling `onEvent` with each `data:` payload.
    func stream(_ path: String, onEvent: (String) throws -> Void) async throws {
        var request = HTTPClientRequest(url: baseURL + path)
        request.tlsConfiguration = try await tlsConfiguration()
        if let token { request.headers.add(name: Headers.authorization, value: "Bearer \(token)") }
        request.headers.add(name: "Accept", value: "text/event-stream")
        let response: HTTPClientResponse
        do {
            response = try await HTTPClient.shared.execute(request, timeout: .hours(24 * 365))
        } catch {
            throw CLIError.notRunning(baseURL, Self.reason(error))
        }
        guard response.status.code == 200 else {
            let body = try await response.body.collect(upTo: 1 << 20)
            if let error = try? APICoding.decoder().decode(ErrorResponse.self, from: Data(buffer: body)) {
                throw CLIError("\(error.error.message) (\(response.status.code) \(error.error.code))")
            }
            throw CLIError("\(path): unexpected answer \(response.status.code) from \(baseURL)")
        }
        var pending = ""
        for try await chunk in response.body {
            pending += String(decoding: chunk.readableBytesView, as: UTF8.self)
            while let end = pending.range(of: "\n\n") {
                let block = pending[..<end.lowerBound]
                pending = String(pending[end.upperBound...])
                for line in block.split(separator: "\n") where line.hasPrefix("data: ") {
                    try onEvent(String(line.dropFirst(6)))
                }
            }
        }
    }

    /// Sends `method path` asking for newline-delimited JSON and calls `onLine` with each line
    /// as it arrives; a refusal before the stream starts throws the agent's JSON error.
    func lines(_ method: String, _ path: String, timeout: TimeAmount, onLine: (String) throws -> Void) async throws {
        var request = HTTPClientRequest(url: baseURL + path)
        request.tlsConfiguration = try await tlsConfiguration()
        request.method = .init(rawValue: method)
        if let token { request.headers.add(name: Headers.authorization, value: "Bearer \(token)") }
        request.headers.add(name: "Accept", value: MediaTypes.ndjson)
        let response: HTTPClientResponse
        do {
            response = try await HTTPClient.shared.execute(request, timeout: timeout)
        } catch {
            throw CLIError.notRunning(baseURL, Self.reason(error))
        }
        guard response.status.code == 200 else {
            let body = try await response.body.collect(upTo: 1 << 20)
            if let error = try? APICoding.decoder().decode(ErrorResponse.self, from: Data(buffer: body)) {
                throw CLIError("\(error.error.message) (\(response.status.code) \(error.error.code))")
            }
            throw CLIError("\(method) \(path): unexpected answer \(response.status.code) from \(baseURL)")
        }
        var pending = Data()
        for try await chunk in response.body {
            pending.append(contentsOf: chunk.readableBytesView)
            while let newline = pending.firstIndex(of: UInt8(ascii: "\n")) {
                let line = String(decoding: pending[pending.startIndex..<newline], as: UTF8.self)
                pending.removeSubrange(pending.startIndex...newline)
                if !line.isEmpty { try onLine(line) }
            }
        }
        if !pending.isEmpty { try onLine(String(decoding: pending, as: UTF8.self)) }
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
