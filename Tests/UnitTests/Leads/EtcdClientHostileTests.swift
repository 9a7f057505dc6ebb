import AuroraTestKit
import Foundation
import Testing

@testable import NodeAgent

/// The etcd client against a fake backend that answers garbage: every broken answer is a typed
/// ``AgentError``, never a crash, and every call ends within its timeout.
@Suite("EtcdClient against a hostile backend", .serialized)
struct EtcdClientHostileTests {
    /// `text` as etcd's base64.
    static func b64(_ text: String) -> String { Data(text.utf8).base64EncodedString() }

    /// The code `call` fails with, or nil when it does not fail (or fails with another type).
    func code(_ call: () async throws -> Void) async -> AgentError.Code? {
        do {
            try await call()
            return nil
        } catch let error as AgentError {
            return error.code
        } catch {
            Issue.record("not an AgentError: \(error)")
            return nil
        }
    }

    /// A grant's ID and TTL, for one comparison.
    func granted(_ client: EtcdClient) async throws -> [Int64] {
        let lease = try await client.grant(ttl: 5)
        return [lease.id, Int64(lease.ttl)]
    }

    func withServer(_ body: (CannedHTTPServer, EtcdClient) async throws -> Void) async throws {
        let server = try await CannedHTTPServer()
        do {
            try await body(server, try EtcdClient(endpoints: [server.url], timeout: .seconds(3)))
        } catch {
            await server.stop()
            throw error
        }
        await server.stop()
    }

    @Test("garbage, wrong types and missing fields are etcdInvalidAnswer")
    func garbage() async throws {
        try await withServer { server, client in try await garbage(server, client) }
    }

    func garbage(_ server: CannedHTTPServer, _ client: EtcdClient) async throws {
        do {
            let grants: [String] = [
                "not json", "[]", "{}", "null", "{\"ID\":\"1\"}", "{\"TTL\":\"5\"}", "{\"ID\":\"x\",\"TTL\":\"5\"}",
                "{\"ID\":true,\"TTL\":\"5\"}", "{\"ID\":\"1\",\"TTL\":5.5}",
                "{\"ID\":\"99999999999999999999999\",\"TTL\":\"5\"}",
                "{\"ID\":\"1\",\"TTL\":\"-5\"}", "{\"ID\":\"1\",\"TTL\":\"99999999999\"}",
                "{\"ID\":\"0\",\"TTL\":\"5\"}",
                "{\"ID\":{\"a\":1},\"TTL\":\"5\"}", "{\"ID\":\"1\",\"TTL\":\"5\"", "\u{0}\u{1}\u{2}",
                String(repeating: "[", count: 50_000),
            ]
            for body in grants {
                server.set(.ok(body))
                #expect(
                    await code { _ = try await client.grant(ttl: 5) } == .etcdInvalidAnswer,
                    "grant answer \(body.prefix(60))")
            }
            server.set(.ok("{\"ID\":\"7\",\"TTL\":\"5\"}"))
            #expect(try await granted(client) == [7, 5])
            server.set(.ok("{\"ID\":7,\"TTL\":5}"))
            #expect(try await granted(client) == [7, 5])

            let key = Self.b64("/aurora/lead")
            let ranges: [String] = [
                "{\"kvs\":{}}", "{\"kvs\":[1]}", "{\"kvs\":[{}]}",
                "{\"kvs\":[{\"key\":\"\(Self.b64("/other"))\",\"create_revision\":\"2\",\"mod_revision\":\"2\"}]}",
                "{\"kvs\":[{\"key\":\"!!notbase64\",\"create_revision\":\"2\",\"mod_revision\":\"2\"}]}",
                "{\"kvs\":[{\"key\":\"\(key)\",\"mod_revision\":\"2\"}]}",
                "{\"kvs\":[{\"key\":\"\(key)\",\"create_revision\":\"0\",\"mod_revision\":\"2\"}]}",
                "{\"kvs\":[{\"key\":\"\(key)\",\"create_revision\":\"3\",\"mod_revision\":\"2\"}]}",
                "{\"kvs\":[{\"key\":\"\(key)\",\"create_revision\":\"2\",\"mod_revision\":\"2\",\"value\":\"%%%\"}]}",
                "{\"kvs\":[{\"key\":\"\(key)\",\"create_revision\":\"2\",\"mod_revision\":\"2\",\"value\":\"/w==\"}]}",
                "{\"kvs\":[{\"key\":\"\(key)\",\"create_revision\":\"2\",\"mod_revision\":\"2\",\"lease\":\"-1\"}]}",
                "{\"kvs\":[{\"key\":\"\(key)\",\"create_revision\":\"2\",\"mod_revision\":\"2\"},"
                    + "{\"key\":\"\(key)\",\"create_revision\":\"2\",\"mod_revision\":\"2\"}]}",
            ]
            for body in ranges {
                server.set(.ok(body))
                #expect(
                    await code { _ = try await client.get(key: "/aurora/lead") } == .etcdInvalidAnswer, "range \(body)")
            }
            server.set(.ok("{\"header\":{}}"))
            #expect(try await client.get(key: "/aurora/lead") == nil)
            server.set(
                .ok(
                    "{\"kvs\":[{\"key\":\"\(key)\",\"create_revision\":\"4\",\"mod_revision\":\"6\","
                        + "\"value\":\"\(Self.b64("{\"name\":\"a\"}"))\",\"lease\":\"9\"}]}"))
            #expect(
                try await client.get(key: "/aurora/lead")
                    == .init(value: "{\"name\":\"a\"}", createRevision: 4, modRevision: 6, lease: 9))

            let txns: [String] = [
                "{\"succeeded\":true}", "{\"succeeded\":true,\"responses\":[{}]}",
                "{\"succeeded\":true,\"responses\":[{\"response_put\":{\"header\":{\"revision\":\"0\"}}}]}",
                "{\"succeeded\":\"yes\",\"responses\":[]}", "{\"responses\":[{\"response_range\":{}}]}",
                "{\"responses\":[{\"response_put\":{}}]}", "{\"responses\":[]}",
            ]
            for body in txns {
                server.set(.ok(body))
                #expect(
                    await code { _ = try await client.campaign(key: "/aurora/lead", value: "a", lease: 9) }
                        == .etcdInvalidAnswer, "txn \(body)")
            }

            let keepalives: [String] = [
                "{}", "{\"result\":[]}", "{\"result\":{\"ID\":\"8\",\"TTL\":\"5\"}}",
                "{\"result\":{\"ID\":\"9\",\"TTL\":\"abc\"}}", "{\"result\":{\"ID\":\"9\",\"TTL\":\"99999999999\"}}",
            ]
            for body in keepalives {
                server.set(.ok(body))
                #expect(
                    await code { _ = try await client.keepAlive(lease: 9) } == .etcdInvalidAnswer, "keepalive \(body)")
            }
            // etcd leaves TTL out for a lease it no longer has: that is 0, not an error.
            server.set(.ok("{\"result\":{\"ID\":\"9\"}}"))
            #expect(try await client.keepAlive(lease: 9) == 0)
            server.set(.ok("{\"error\":{\"grpc_code\":14,\"message\":\"no leader\"}}"))
            #expect(await code { _ = try await client.keepAlive(lease: 9) } == .etcdRefused)
        }
    }

    @Test("a huge body is refused without reading it all; errors, silence and closed connections are typed")
    func hugeSilentAndErrors() async throws {
        try await withServer { server, client in try await hugeSilentAndErrors(server, client) }
    }

    func hugeSilentAndErrors(_ server: CannedHTTPServer, _ client: EtcdClient) async throws {
        do {
            server.set(.respond(status: 200, body: Array(repeating: UInt8(ascii: "a"), count: 8 << 20)))
            #expect(await code { _ = try await client.grant(ttl: 5) } == .etcdInvalidAnswer)

            server.set(
                .respond(status: 400, body: Array("{\"error\":\"bad\",\"message\":\"bad\u{1b}[31m\",\"code\":3}".utf8)))
            var refusal: AgentError?
            do { _ = try await client.grant(ttl: 5) } catch { refusal = error }
            #expect(refusal?.code == .etcdRefused)
            #expect(refusal?.message.contains("\u{1b}") == false)
            server.set(.respond(status: 418, body: Array("garbage".utf8)))
            #expect(await code { _ = try await client.grant(ttl: 5) } == .etcdRefused)
            // A lease etcd does not know is revoked already.
            server.set(
                .respond(
                    status: 404, body: Array("{\"error\":\"etcdserver: requested lease not found\",\"code\":5}".utf8)))
            try await client.revoke(lease: 9)

            server.set(.respond(status: 503, body: []))
            #expect(await code { _ = try await client.grant(ttl: 5) } == .etcdUnreachable)
            server.set(.close)
            #expect(await code { _ = try await client.grant(ttl: 5) } == .etcdUnreachable)
            server.set(.silent)
            let started = ContinuousClock.now
            #expect(await code { _ = try await client.keepAlive(lease: 9) } == .etcdUnreachable)
            #expect(started.duration(to: .now) < .seconds(8))
        }
    }

    @Test("endpoints are tried in turn: a refused one is skipped, and the one that answered is tried first next")
    func failover() async throws {
        let server = try await CannedHTTPServer()
        let dead = try freePort()
        let client = try EtcdClient(endpoints: ["http://127.0.0.1:\(dead)", server.url], timeout: .milliseconds(500))
        server.set(.ok("{\"ID\":\"7\",\"TTL\":\"5\"}"))
        #expect(try await granted(client) == [7, 5])
        #expect(try await granted(client) == [7, 5])
        #expect(server.paths == ["/v3/lease/grant", "/v3/lease/grant"])
        // Both failing (one refuses, one answers 503): unreachable, after trying each once.
        server.set(.respond(status: 503, body: []))
        #expect(await code { _ = try await client.grant(ttl: 5) } == .etcdUnreachable)
        #expect(server.paths.count == 3)
        await server.stop()
        #expect(throws: AgentError.self) { try EtcdClient(endpoints: []) }
        #expect(throws: AgentError.self) { try EtcdClient(endpoints: ["127.0.0.1:2379"]) }
        #expect(throws: AgentError.self) { try EtcdClient(endpoints: ["http://127.0.0.1:2379/v3"]) }
    }
}
