import AsyncHTTPClient
import AuroraAPI
import AuroraTLS
import Foundation
import NIOCore
import NIOHTTP1
import NIOSSL

/// A typed client of one agent's HTTP API: one method per endpoint of the route table (``API``)
/// (AuroraClient+Endpoints.swift for the operator's calls, AuroraClient+Postgres.swift for the
/// PostgreSQL views and checks, AuroraClient+Mesh.swift for a node's signed calls to its lead),
/// paths only from the route table, parameters and query values escaped inside, and failures as
/// ``AuroraClientError``. Tests/UnitTests/ClientCoverageTests.swift checks that every endpoint
/// has a method.
///
/// For an https agent the client needs the pin of the agent's TLS key: before each call it reads
/// the key in a handshake that sends nothing, compares it with the pin, and only then talks to
/// that certificate alone, so the token never reaches an impostor.
public struct AuroraClient: Sendable {
    /// `http://127.0.0.1:9999` or `https://…`, without a trailing `/`.
    public let baseURL: String
    /// The bearer token (operator or API token); nil for unauthenticated calls such as ``health()``.
    public let token: String?
    /// The pin of an https agent's key.
    public let pin: TLSPin?
    /// How long an ordinary call may take; long calls take their own (``restoreBackup(_:into:timeout:)``).
    public var timeout: TimeAmount
    let httpClient: HTTPClient
    /// Signs each request (a node's calls to its lead): the headers to add for the method, the
    /// path as sent (with its query) and the body. Nil: only the bearer token, if any.
    public var signer: Signer?
    /// A TLS configuration that already trusts exactly one pinned certificate (a node's lead,
    /// whose certificate it saved at join): used as it is, without the pin handshake.
    public var pinnedTLS: TLSConfiguration?

    /// Signs a request: `(method, path with query, body) -> headers`.
    public typealias Signer = @Sendable (_ method: String, _ path: String, _ body: [UInt8]) -> [(String, String)]

    public init(
        baseURL: String, token: String? = nil, pin: TLSPin? = nil, timeout: TimeAmount = .seconds(5),
        httpClient: HTTPClient = .shared
    ) {
        self.baseURL = baseURL.hasSuffix("/") ? String(baseURL.dropLast()) : baseURL
        self.token = token
        self.pin = pin
        self.timeout = timeout
        self.httpClient = httpClient
    }

    /// Answers larger than this are refused (streams are bounded per line instead).
    static let maxAnswerBytes = 8 << 20
    /// A refusal's body is read up to this.
    static let maxErrorBytes = 1 << 20

    // MARK: TLS

    /// For an https agent: a configuration that trusts only the certificate whose key matches
    /// the pin, checked in a handshake before anything is sent. Nil for http.
    func tlsConfiguration() async throws(AuroraClientError) -> TLSConfiguration? {
        if let pinnedTLS { return pinnedTLS }
        guard let url = URLComponents(string: baseURL), url.scheme?.lowercased() == "https" else { return nil }
        guard let pin else {
            var failure = AuroraClientError(
                .pinRequired,
                "\(baseURL) is https: a pin of the agent's key is needed so that it is checked before the token is sent"
            )
            failure.baseURL = baseURL
            throw failure
        }
        do {
            let certificate = try await PinnedTLS.verifiedCertificate(
                url: baseURL, host: url.host ?? "", port: url.port ?? 443, pin: pin)
            return PinnedTLS.clientConfiguration(trusting: certificate)
        } catch let error as PinningError {
            var failure = AuroraClientError(error.isMismatch ? .pinMismatch : .tlsFailed, error.message)
            failure.baseURL = baseURL
            throw failure
        } catch {
            var failure = AuroraClientError(
                .tlsFailed, "cannot reach \(baseURL) over TLS: \(AuroraClientError.reason(error))")
            failure.baseURL = baseURL
            throw failure
        }
    }

    // MARK: Calls

    /// One request to be sent: the endpoint, its path as sent, and what goes with it.
    struct Call {
        /// `GET`, `POST`, …: the endpoint's, or a forwarded call's own.
        var method: String
        var path: String
        var body: Data?
        var accept: String?
        var timeout: TimeAmount?
        /// More headers (`Last-Event-ID`).
        var headers: [(name: String, value: String)] = []
        /// Whether the client's token goes with the call (a console call carries a cookie instead).
        var sendsToken = true
    }

    /// A call of `endpoint` with `parameters` filled into its path and `query` appended.
    func call(
        _ endpoint: Endpoint, _ parameters: String..., query: [(name: String, value: String?)] = [],
        body: (some Encodable)? = Optional<Int>.none, accept: String? = nil, timeout: TimeAmount? = nil
    ) throws(AuroraClientError) -> Call {
        if parameters.contains(where: \.isEmpty) {
            throw AuroraClientError(.invalidArgument, "\(endpoint): a path parameter is empty")
        }
        let data: Data?
        do { data = try body.map { try APICoding.encoder().encode($0) } } catch {
            throw AuroraClientError(.invalidArgument, "\(endpoint): the request does not encode: \(error)")
        }
        return Call(
            method: endpoint.method, path: endpoint.path(parameters, query: query), body: data, accept: accept,
            timeout: timeout)
    }

    /// Sends `call` and returns the answer's head and streaming body, whatever its status.
    func send(_ call: Call) async throws(AuroraClientError) -> HTTPClientResponse {
        var request = HTTPClientRequest(url: baseURL + call.path)
        request.tlsConfiguration = try await tlsConfiguration()
        request.method = HTTPMethod(rawValue: call.method)
        if let body = call.body {
            request.body = .bytes(ByteBuffer(bytes: body))
            request.headers.add(name: "Content-Type", value: "application/json")
        }
        if let signer {
            for (name, value) in signer(call.method, call.path, call.body.map { [UInt8]($0) } ?? []) {
                request.headers.add(name: name, value: value)
            }
        }
        if let token, call.sendsToken { request.headers.add(name: Headers.authorization, value: "Bearer \(token)") }
        if let accept = call.accept { request.headers.add(name: "Accept", value: accept) }
        for (name, value) in call.headers { request.headers.add(name: name, value: value) }
        do {
            return try await httpClient.execute(request, timeout: call.timeout ?? timeout)
        } catch {
            throw AuroraClientError.cannotConnect(baseURL, error)
        }
    }

    /// The whole body, up to `limit` bytes.
    func collect(_ response: HTTPClientResponse, _ call: Call, upTo limit: Int) async throws(AuroraClientError) -> Data
    {
        do {
            return Data(try await response.body.collect(upTo: limit).readableBytesView)
        } catch is NIOTooManyBytesError {
            var failure = AuroraClientError(
                .undecodable, "\(call.method) \(call.path): the answer is larger than \(limit) bytes")
            failure.status = Int(response.status.code)
            throw failure
        } catch {
            throw AuroraClientError.cannotConnect(baseURL, error)
        }
    }

    /// The failure an answer with an unwanted status stands for: the API's refusal when its body
    /// is `{"error": …}`, else an unexpected answer.
    func failure(_ response: HTTPClientResponse, _ call: Call, body: Data? = nil) async -> AuroraClientError {
        let status = Int(response.status.code)
        let data: Data
        if let body {
            data = body
        } else {
            do { data = try await collect(response, call, upTo: Self.maxErrorBytes) } catch { return error }
        }
        if let refusal = try? APICoding.decoder().decode(ErrorResponse.self, from: data) {
            return .refused(
                refusal.error, status: status, method: call.method, path: call.path, baseURL: baseURL)
        }
        return .unexpected(status: status, method: call.method, path: call.path, baseURL: baseURL)
    }

    /// Sends `call` and decodes `T` from an answer whose status `accepts` takes (any 2xx unless
    /// told otherwise).
    func decode<T: Decodable>(
        _ call: Call, as type: T.Type = T.self, accepting accepts: (Int) -> Bool = { (200..<300).contains($0) }
    )
        async throws(AuroraClientError) -> T
    {
        let response = try await send(call)
        let body = try await collect(response, call, upTo: Self.maxAnswerBytes)
        if accepts(Int(response.status.code)), let value = try? APICoding.decoder().decode(T.self, from: body) {
            return value
        }
        throw await failure(response, call, body: body)
    }

    /// Sends `method path` as it is (a path built from the route table, with its query) and
    /// returns the status and body whatever the status: for an agent forwarding a client's call
    /// to its lead verbatim. Throws only when there is no answer (or it is over `limit` bytes).
    public func exchange(
        method: String, path: String, body: [UInt8], timeout: TimeAmount? = nil, limit: Int = 32 << 20
    ) async throws(AuroraClientError) -> (status: Int, body: [UInt8]) {
        let answer = try await exchange(
            method: method, path: path, body: body, timeout: timeout, limit: limit, keep: [])
        return (answer.status, answer.body)
    }

    /// ``exchange(method:path:body:timeout:limit:)`` that also returns the answer's headers named
    /// in `keep` (lower-case), in the order they came.
    public func exchange(
        method: String, path: String, body: [UInt8], timeout: TimeAmount? = nil, limit: Int = 32 << 20,
        keep: Set<String>
    ) async throws(AuroraClientError) -> (status: Int, body: [UInt8], headers: [(name: String, value: String)]) {
        let call = Call(
            method: method, path: path, body: body.isEmpty ? nil : Data(body), accept: nil, timeout: timeout)
        let response = try await send(call)
        let data = try await collect(response, call, upTo: limit)
        let headers = response.headers.filter { keep.contains($0.name.lowercased()) }.map { ($0.name, $0.value) }
        return (Int(response.status.code), [UInt8](data), headers)
    }

    /// ``exchange(method:path:body:timeout:limit:keep:)`` that hands back the answer's body as it
    /// arrives, whatever the status: for an agent relaying a stream (server-sent events) to its
    /// client. Dropping the body ends the request.
    public func open(
        method: String, path: String, body: [UInt8], timeout: TimeAmount? = nil, keep: Set<String>
    ) async throws(AuroraClientError) -> (
        status: Int, headers: [(name: String, value: String)], body: HTTPClientResponse.Body
    ) {
        let call = Call(
            method: method, path: path, body: body.isEmpty ? nil : Data(body), accept: nil, timeout: timeout)
        let response = try await send(call)
        let headers = response.headers.filter { keep.contains($0.name.lowercased()) }.map { ($0.name, $0.value) }
        return (Int(response.status.code), headers, response.body)
    }

    /// Sends `call` and returns the whole body of a 200 answer as it is (text, a document).
    func data(_ call: Call) async throws(AuroraClientError) -> Data {
        let response = try await send(call)
        let body = try await collect(response, call, upTo: Self.maxAnswerBytes)
        guard response.status == .ok else { throw await failure(response, call, body: body) }
        return body
    }

    /// Sends `call` and returns its body, a stream, once the answer is 200.
    func stream(_ call: Call) async throws(AuroraClientError) -> HTTPClientResponse.Body {
        let response = try await send(call)
        guard response.status == .ok else { throw await failure(response, call) }
        return response.body
    }
}
