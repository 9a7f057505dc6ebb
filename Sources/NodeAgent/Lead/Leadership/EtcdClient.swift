import AsyncHTTPClient
import Foundation
import NIOCore
import NIOHTTP1
import Synchronization

/// A typed client of etcd's v3 JSON gateway (`/v3/...`, served by etcd 3.4 and later; plain
/// HTTP/JSON, no gRPC), one method per call the lead election needs.
///
/// Endpoints (`http://host:port`) are tried in turn, starting with the one that answered last:
/// a refused connection, a timeout or a 5xx moves on to the next; a 4xx is etcd's own answer
/// and is thrown as ``AgentError/Code/etcdRefused``. Every attempt has a deadline. Lease
/// renewals alone go to every endpoint at once (``keepAlive(lease:timeout:)``).
///
/// Nothing from the wire is trusted: bodies are capped, every field is checked for presence,
/// type and range, keys and values are base64 and must decode (values to UTF-8). A broken or
/// hostile answer is an ``AgentError/Code/etcdInvalidAnswer``, never a crash.
///
/// Reads are linearizable (etcd's default; this client never asks for serializable), so a
/// member cut off from the quorum cannot hand out a stale holder.
final class EtcdClient: Sendable {
    /// The outcome of a campaign for a key.
    enum CampaignResult: Sendable, Equatable {
        /// This campaign created the key; `createRevision` is its epoch.
        case won(createRevision: Int64)
        /// The key exists: `value` is its holder's value.
        case held(by: String, createRevision: Int64)
    }

    /// One key as etcd has it.
    struct KeyValue: Sendable, Equatable {
        var value: String
        var createRevision: Int64
        var modRevision: Int64
        /// The lease the key is attached to; 0 for none.
        var lease: Int64
    }

    /// The gateway's base URLs, without a trailing `/`.
    let endpoints: [String]
    /// The deadline of one attempt on one endpoint.
    let timeout: Duration
    /// The largest answer body read; anything larger is an invalid answer.
    let maxBodyBytes: Int
    /// The largest key or value this client sends or accepts.
    static let maxValueBytes = 64 << 10
    private let http: HTTPClient
    /// The endpoint that answered last: the first to try next time.
    private let preferred = Atomic<Int>(0)

    /// A client of `endpoints` (`http://host:port`); throws ``AgentError/Code/config`` when the
    /// list is empty or an entry is not a plain http(s) URL without a path.
    init(endpoints: [String], timeout: Duration = .seconds(1), maxBodyBytes: Int = 1 << 20) throws(AgentError) {
        guard !endpoints.isEmpty else { throw AgentError(.config, "etcd needs at least one endpoint") }
        var checked: [String] = []
        for endpoint in endpoints {
            let trimmed = endpoint.hasSuffix("/") ? String(endpoint.dropLast()) : endpoint
            guard let url = URL(string: trimmed), url.scheme == "http" || url.scheme == "https", url.host != nil,
                url.path.isEmpty, url.query == nil, url.user == nil
            else {
                throw AgentError(.config, "etcd endpoint \(endpoint) is not http(s)://host:port")
            }
            checked.append(trimmed)
        }
        guard timeout > .zero else { throw AgentError(.config, "the etcd timeout must be positive") }
        self.endpoints = checked
        self.timeout = timeout
        self.maxBodyBytes = maxBodyBytes
        self.http = Self.sharedHTTP
    }

    /// One client for every etcd call of the process. A refused connection fails at once (the
    /// next endpoint is tried), redirects are never followed.
    private static let sharedHTTP: HTTPClient = {
        var configuration = HTTPClient.Configuration()
        configuration.connectionPool.retryConnectionEstablishment = false
        configuration.redirectConfiguration = .disallow
        configuration.timeout.connect = .seconds(1)
        return HTTPClient(eventLoopGroupProvider: .singleton, configuration: configuration)
    }()

    // MARK: Leases

    /// Grants a lease of `ttl` seconds; returns its ID and the TTL etcd granted (etcd raises a
    /// TTL below its minimum, 1.5 × its election timeout).
    func grant(ttl: Int) async throws(AgentError) -> (id: Int64, ttl: Int) {
        guard ttl > 0 else { throw AgentError(.invalidInput, "a lease TTL must be positive") }
        let answer = try await call("/v3/lease/grant", ["TTL": String(ttl)], as: EtcdWire.Lease.self)
        guard let id = answer.id?.value, id != 0, let granted = answer.ttl?.value, granted > 0,
            granted <= Int64(Int32.max)
        else {
            throw AgentError(.etcdInvalidAnswer, "etcd's lease grant answer has no valid ID and TTL")
        }
        return (id, Int(granted))
    }

    /// Renews `lease`; returns its TTL from now in seconds, 0 when etcd no longer has it.
    ///
    /// The renewal goes to every endpoint at once and the first answer counts (a renewal is
    /// idempotent): a frozen member costs nothing, and during a raft election the request to a
    /// live member waits for the new leader. Each request waits up to `timeout` (the client's
    /// by default); the lead passes the time left before its fence.
    func keepAlive(lease: Int64, timeout: Duration? = nil) async throws(AgentError) -> Int {
        // A streaming call on the gateway: one request object in, one `{"result": ...}` out.
        let answer = try await callEach(
            "/v3/lease/keepalive", ["ID": String(lease)], as: EtcdWire.KeepAlive.self, timeout: timeout ?? self.timeout)
        guard let result = answer.result else {
            if let message = answer.error?.message {
                throw AgentError(.etcdRefused, "etcd refused the keepalive: \(Self.printable(message))")
            }
            throw AgentError(.etcdInvalidAnswer, "etcd's keepalive answer has no result")
        }
        if let id = result.id?.value, id != lease {
            throw AgentError(.etcdInvalidAnswer, "etcd's keepalive answer is for another lease")
        }
        let ttl = result.ttl?.value ?? 0
        guard ttl <= Int64(Int32.max) else {
            throw AgentError(.etcdInvalidAnswer, "etcd's keepalive answer has an out-of-range TTL")
        }
        return Int(max(ttl, 0))
    }

    /// Revokes `lease` and deletes every key on it. A lease etcd does not know is gone already.
    func revoke(lease: Int64) async throws(AgentError) {
        do {
            _ = try await call("/v3/lease/revoke", ["ID": String(lease)], as: EtcdWire.Empty.self)
        } catch  where error.code == .etcdRefused && error.message.contains("lease not found") {
            return
        }
    }

    // MARK: Keys

    /// Creates `key` with `value` on `lease` only if the key does not exist (its
    /// `create_revision` is 0), in one transaction; otherwise reads who holds it. A retry of a
    /// campaign whose answer was lost finds the key on this lease: that is a win too.
    func campaign(key: String, value: String, lease: Int64) async throws(AgentError) -> CampaignResult {
        let encodedKey = try Self.encode(key)
        let body: [String: Any] = [
            "compare": [["key": encodedKey, "target": "CREATE", "result": "EQUAL", "create_revision": "0"]],
            "success": [["request_put": ["key": encodedKey, "value": try Self.encode(value), "lease": String(lease)]]],
            "failure": [["request_range": ["key": encodedKey]]],
        ]
        let answer = try await call("/v3/kv/txn", body, as: EtcdWire.Txn.self)
        let responses = answer.responses ?? []
        guard responses.count == 1 else {
            throw AgentError(.etcdInvalidAnswer, "etcd's campaign answer has \(responses.count) responses, not 1")
        }
        if answer.succeeded == true {
            // The put's revision (in its header) is the key's create_revision.
            guard let revision = responses[0].put?.header?.revision?.value, revision > 0 else {
                throw AgentError(.etcdInvalidAnswer, "etcd's campaign answer has no put revision")
            }
            return .won(createRevision: revision)
        }
        guard let range = responses[0].range else {
            throw AgentError(.etcdInvalidAnswer, "etcd's campaign answer has no range response")
        }
        guard let current = try Self.single(range, key: key, in: "campaign") else {
            // The compare saw the key and the read in the same transaction does not: broken.
            throw AgentError(.etcdInvalidAnswer, "etcd's campaign lost to a key it does not show")
        }
        if current.lease == lease { return .won(createRevision: current.createRevision) }
        return .held(by: current.value, createRevision: current.createRevision)
    }

    /// The key's value and revisions (a linearizable read), or nil when it does not exist.
    ///
    /// With `everyEndpoint`, the read goes to every endpoint at once, each waiting up to
    /// `timeout`, and the first answer counts (the lead's check that it still owns the key,
    /// which must not hold up its renewals); otherwise endpoints are tried in turn.
    func get(key: String, everyEndpoint: Bool = false, timeout: Duration? = nil) async throws(AgentError)
        -> KeyValue?
    {
        let body = ["key": try Self.encode(key)]
        let answer =
            everyEndpoint
            ? try await callEach("/v3/kv/range", body, as: EtcdWire.Range.self, timeout: timeout ?? self.timeout)
            : try await call("/v3/kv/range", body, as: EtcdWire.Range.self)
        return try Self.single(answer, key: key, in: "get")
    }

    /// Deletes `key` (nothing happens when it does not exist).
    func delete(key: String) async throws(AgentError) {
        _ = try await call("/v3/kv/deleterange", ["key": try Self.encode(key)], as: EtcdWire.Empty.self)
    }

    // MARK: Calls

    /// What one endpoint made of a call.
    private enum Outcome<T: Sendable>: Sendable {
        /// A 2xx answer that decoded.
        case answer(T)
        /// No answer worth the name: refused, timed out, a broken connection, a 5xx.
        case unreachable(String)
        /// etcd's own refusal (4xx) or a broken answer.
        case failed(AgentError)
    }

    /// POSTs `body` as JSON to `path` on each endpoint in turn until one answers; returns the
    /// answer decoded as `T`.
    private func call<T: Decodable & Sendable>(_ path: String, _ body: [String: Any], as type: T.Type)
        async throws(AgentError) -> T
    {
        let payload = try Self.payload(body, path: path)
        let first = preferred.load(ordering: .relaxed) % endpoints.count
        var failures: [String] = []
        for step in 0..<endpoints.count {
            let index = (first + step) % endpoints.count
            switch await exchange(index, path, payload, as: T.self, timeout: timeout) {
            case .answer(let answer):
                preferred.store(index, ordering: .relaxed)
                return answer
            case .failed(let error):
                preferred.store(index, ordering: .relaxed)
                throw error
            case .unreachable(let why):
                if Task.isCancelled { throw AgentError(.etcdUnreachable, "the etcd call \(path) was cancelled") }
                failures.append(why)
            }
        }
        throw AgentError(.etcdUnreachable, "no etcd endpoint answered \(path): \(failures.joined(separator: "; "))")
    }

    /// POSTs `body` to `path` on every endpoint at once, each within `timeout`; the first
    /// answer that decodes wins and the other requests are cancelled. For idempotent calls whose
    /// latency matters more than their count (a lease renewal while a member is frozen or the
    /// cluster elects a new raft leader: a request to a live member waits for the new leader
    /// instead of timing out). When none succeeds, etcd's own refusal beats unreachability.
    private func callEach<T: Decodable & Sendable>(
        _ path: String, _ body: [String: Any], as type: T.Type, timeout: Duration
    ) async throws(AgentError) -> T {
        let payload = try Self.payload(body, path: path)
        let outcome: Outcome<T> = await withTaskGroup(of: (Int, Outcome<T>).self) { group in
            for index in endpoints.indices {
                group.addTask { (index, await self.exchange(index, path, payload, as: T.self, timeout: timeout)) }
            }
            var failures: [String] = []
            var refusal: AgentError?
            for await (index, outcome) in group {
                switch outcome {
                case .answer:
                    preferred.store(index, ordering: .relaxed)
                    group.cancelAll()
                    return outcome
                case .failed(let error): refusal = refusal ?? error
                case .unreachable(let why): failures.append(why)
                }
            }
            if let refusal { return .failed(refusal) }
            return .unreachable("no etcd endpoint answered \(path): \(failures.joined(separator: "; "))")
        }
        switch outcome {
        case .answer(let answer): return answer
        case .failed(let error): throw error
        case .unreachable(let why): throw AgentError(.etcdUnreachable, why)
        }
    }

    /// `body` as JSON.
    private static func payload(_ body: [String: Any], path: String) throws(AgentError) -> Data {
        do { return try JSONSerialization.data(withJSONObject: body) } catch {
            throw AgentError(.invalidInput, "cannot encode the etcd request for \(path)")
        }
    }

    /// One call on endpoint `index`: a 2xx is decoded as `T`, a 4xx is etcd's refusal.
    private func exchange<T: Decodable & Sendable>(
        _ index: Int, _ path: String, _ payload: Data, as type: T.Type, timeout: Duration
    ) async -> Outcome<T> {
        let endpoint = endpoints[index]
        let status: Int
        let bytes: ByteBuffer
        do {
            (status, bytes) = try await attempt(endpoint + path, payload, timeout: timeout)
        } catch let error as AgentError {
            return .failed(error)
        } catch {
            return .unreachable("\(endpoint): \(Self.describe(error))")
        }
        if (500..<600).contains(status) { return .unreachable("\(endpoint): HTTP \(status)") }
        let data = Data(bytes.readableBytesView)
        guard (200..<300).contains(status) else {
            let refusal = try? JSONDecoder().decode(EtcdWire.Refusal.self, from: data)
            let message = refusal?.message ?? refusal?.error ?? "HTTP \(status)"
            return .failed(AgentError(.etcdRefused, "etcd refused \(path): \(Self.printable(message))"))
        }
        do { return .answer(try JSONDecoder().decode(T.self, from: data)) } catch {
            return .failed(AgentError(.etcdInvalidAnswer, "etcd's answer to \(path) does not decode"))
        }
    }

    /// One request to one endpoint within `timeout`: status and body (at most ``maxBodyBytes``).
    private func attempt(_ url: String, _ payload: Data, timeout: Duration) async throws -> (Int, ByteBuffer) {
        let request = {
            var request = HTTPClientRequest(url: url)
            request.method = .POST
            request.headers.add(name: "Content-Type", value: "application/json")
            request.body = .bytes(ByteBuffer(bytes: payload))
            return request
        }()
        let limit = maxBodyBytes
        let http = self.http
        // The deadline covers the head and the whole body: a server that trickles bytes forever
        // cannot hold the caller. It is a child task, ended as soon as the answer is in.
        return try await withThrowingTaskGroup(of: (Int, ByteBuffer)?.self) { group in
            group.addTask {
                let response = try await http.execute(
                    request, timeout: .nanoseconds(Int64(timeout / .nanoseconds(1))))
                let body: ByteBuffer
                do { body = try await response.body.collect(upTo: limit) } catch is NIOTooManyBytesError {
                    throw AgentError(.etcdInvalidAnswer, "etcd's answer is larger than \(limit) bytes")
                }
                return (Int(response.status.code), body)
            }
            group.addTask {
                try await Task.sleep(for: timeout)
                return nil
            }
            defer { group.cancelAll() }
            guard let first = try await group.next(), let answer = first else { throw TimedOut() }
            return answer
        }
    }

    /// An attempt that did not finish within ``timeout``.
    private struct TimedOut: Error {}

    private static func describe(_ error: any Error) -> String {
        switch error {
        case is TimedOut: "timed out"
        default: printable(String(describing: error))
        }
    }

    // MARK: Answers

    /// The only key-value of a range answer for `key`, or nil when there is none.
    private static func single(_ range: EtcdWire.Range, key: String, in call: String) throws(AgentError) -> KeyValue? {
        let kvs = range.kvs ?? []
        guard kvs.count <= 1 else { throw AgentError(.etcdInvalidAnswer, "etcd's \(call) answer has several keys") }
        guard let kv = kvs.first else { return nil }
        guard try decode(kv.key, field: "key", in: call) == key else {
            throw AgentError(.etcdInvalidAnswer, "etcd's \(call) answer is for another key")
        }
        guard let createRevision = kv.createRevision?.value, let modRevision = kv.modRevision?.value,
            createRevision > 0, modRevision >= createRevision
        else {
            throw AgentError(.etcdInvalidAnswer, "etcd's \(call) answer has missing or impossible revisions")
        }
        let lease = kv.lease?.value ?? 0
        guard lease >= 0 else { throw AgentError(.etcdInvalidAnswer, "etcd's \(call) answer has a negative lease") }
        // etcd leaves an empty value out.
        let value = try kv.value == nil ? "" : decode(kv.value, field: "value", in: call)
        return KeyValue(value: value, createRevision: createRevision, modRevision: modRevision, lease: lease)
    }

    /// A base64 field decoded to UTF-8 text of at most ``maxValueBytes``.
    private static func decode(_ text: String?, field: String, in call: String) throws(AgentError) -> String {
        guard let text, text.utf8.count <= maxValueBytes * 4 / 3 + 4, let data = Data(base64Encoded: text),
            data.count <= maxValueBytes, let decoded = String(data: data, encoding: .utf8)
        else {
            throw AgentError(.etcdInvalidAnswer, "etcd's \(call) answer has a malformed \(field)")
        }
        return decoded
    }

    /// `text` as base64 for a request; refuses text larger than ``maxValueBytes``.
    private static func encode(_ text: String) throws(AgentError) -> String {
        guard !text.isEmpty, text.utf8.count <= maxValueBytes else {
            throw AgentError(.invalidInput, "an etcd key or value must be 1 to \(maxValueBytes) bytes")
        }
        return Data(text.utf8).base64EncodedString()
    }

    /// An etcd message cut to 200 characters without control characters, for an error's one line.
    private static func printable(_ message: String) -> String {
        String(
            String.UnicodeScalarView(message.unicodeScalars.prefix(200).filter { $0.value >= 0x20 && $0.value != 0x7f })
        )
    }
}

// MARK: Wire

/// etcd's JSON as its gateway writes it: field names as in its protobufs, int64s as strings,
/// zero values left out (so every field is optional here and checked by the caller).
private enum EtcdWire {
    /// An int64 as etcd writes it: a string of digits (a plain JSON integer is taken too).
    struct Int64Text: Decodable, Sendable {
        let value: Int64

        init(from decoder: any Decoder) throws {
            let container = try decoder.singleValueContainer()
            if let text = try? container.decode(String.self) {
                guard text.utf8.count <= 20, let value = Int64(text) else {
                    throw DecodingError.dataCorruptedError(in: container, debugDescription: "not an int64")
                }
                self.value = value
            } else {
                value = try container.decode(Int64.self)
            }
        }
    }

    struct Header: Decodable, Sendable {
        var revision: Int64Text?
    }

    /// A lease grant's answer, and a keepalive's `result`.
    struct Lease: Decodable, Sendable {
        var id: Int64Text?
        var ttl: Int64Text?

        private enum CodingKeys: String, CodingKey {
            case id = "ID"
            case ttl = "TTL"
        }
    }

    /// A streaming call's error: a string, or an object with a message.
    struct StreamError: Decodable, Sendable {
        var message: String?

        private enum CodingKeys: String, CodingKey { case message }

        init(from decoder: any Decoder) throws {
            if let text = try? decoder.singleValueContainer().decode(String.self) {
                message = text
            } else {
                message = try decoder.container(keyedBy: CodingKeys.self).decodeIfPresent(String.self, forKey: .message)
            }
        }
    }

    struct KeepAlive: Decodable, Sendable {
        var result: Lease?
        var error: StreamError?
    }

    struct KeyValue: Decodable, Sendable {
        var key: String?
        var value: String?
        var createRevision: Int64Text?
        var modRevision: Int64Text?
        var lease: Int64Text?

        private enum CodingKeys: String, CodingKey {
            case key, value, lease
            case createRevision = "create_revision"
            case modRevision = "mod_revision"
        }
    }

    struct Range: Decodable, Sendable {
        var header: Header?
        var kvs: [KeyValue]?
    }

    struct Put: Decodable, Sendable {
        var header: Header?
    }

    struct TxnResponse: Decodable, Sendable {
        var put: Put?
        var range: Range?

        private enum CodingKeys: String, CodingKey {
            case put = "response_put"
            case range = "response_range"
        }
    }

    struct Txn: Decodable, Sendable {
        var succeeded: Bool?
        var responses: [TxnResponse]?
    }

    /// An answer whose content does not matter, as long as it is a JSON object.
    struct Empty: Decodable, Sendable {
        var header: Header?
    }

    /// etcd's error body: `{"error": "...", "message": "...", "code": N}`.
    struct Refusal: Decodable, Sendable {
        var error: String?
        var message: String?
    }
}
