import AuroraAPI
import Foundation
import HTTPTypes
import Secrets
import Synchronization
import Testing

@testable import NodeAgent

/// The lead's route groups end to end in process: router, subsystems and the in-memory row
/// stores (no PostgreSQL, no sockets). Each test checks the answers and what the store holds
/// afterwards, including that a refused call changed nothing.
@Suite("Lead routes over in-memory stores")
struct LeadServiceTests {
    /// Creates a join token; returns the token and its id.
    static func joinToken(
        _ session: Session, profile: String = "compute", company: String? = nil, labels: [String: String]? = nil,
        reusable: Bool = false
    ) async throws -> (token: String, id: String) {
        let request = TokenCreateRequest(
            profile: try #require(NodeRole(rawValue: profile)), company: company, reusable: reusable, labels: labels)
        let answer = try await session.call(.post, "/api/tokens", body: request)
        #expect(answer.status == 201, "\(answer.body)")
        let created = try answer.decode(TokenCreated.self)
        return (created.token, created.info.id)
    }

    @Test("join tokens: created, listed and revoked by the operator only; the token is never stored")
    func tokens() async throws {
        let lead = try await LeadHarness.start()
        try await lead.session { session in
            var request = TokenCreateRequest(profile: .compute)
            #expect(try await session.call(.post, "/api/tokens", token: "", body: request).status == 401)
            #expect(try await session.call(.post, "/api/tokens", token: "wrong", body: request).status == 401)
            let stranger = TestNode(name: "stranger")
            #expect(try await session.call(.post, "/api/tokens", signer: stranger.signer, body: request).status == 401)
            #expect(lead.store.tables.withLock { $0.joinTokens.isEmpty })

            let (token, id) = try await Self.joinToken(session, company: "acme")
            #expect(token.hasPrefix("aurjoin_"))
            let stored = lead.store.tables.withLock { $0.joinTokens }
            #expect(stored.count == 1)
            #expect(stored[0].hash == Hex.encode(Crypto.sha256(Array(token.utf8))))
            #expect(!stored[0].hash.contains(token))

            let list = try await session.call(.get, "/api/tokens").decode(TokenList.self)
            #expect(list.tokens.map(\.id) == [id])
            #expect(list.tokens.first?.state == .active)
            #expect(list.tokens.first?.company == "acme")

            let revoked = try await session.call(.delete, "/api/tokens/\(id)")
            #expect(revoked.status == 200)
            #expect(try revoked.decode(TokenInfo.self).state == .revoked)
            #expect(try await session.call(.delete, "/api/tokens/jt_000000000000").status == 404)

            // Bad input changes nothing.
            request.ttlS = 0
            let refused = try await session.call(.post, "/api/tokens", body: request)
            #expect(refused.status == 400)
            #expect(refused.error?.message.contains("ttl_s") == true)
            #expect(lead.store.tables.withLock { $0.joinTokens.count } == 1)
        }
    }

    @Test("join: the token decides company and labels, is used once, and a refused join changes nothing")
    func join() async throws {
        let lead = try await LeadHarness.start()
        try await lead.session { session in
            let (token, tokenID) = try await Self.joinToken(session, company: "acme", labels: ["zone": "a"])
            let gpu1 = TestNode(name: "gpu-1")
            let before = lead.store.tables.withLock { ($0.nodes.count, $0.events.count) }

            // Refusals first: nothing is written, the token is not used up.
            let bad = try await session.call(
                .post, "/api/nodes/join", token: "", body: gpu1.join(token: "aurjoin_nope"))
            #expect(bad.status == 401)
            let edge = try await session.call(
                .post, "/api/nodes/join", token: "", body: gpu1.join(token: token, profile: .edge))
            #expect(edge.status == 403)
            #expect(edge.error?.code == "wrong_profile")
            let claim = try await session.call(
                .post, "/api/nodes/join", token: "", body: gpu1.join(token: token, company: "globex"))
            #expect(claim.status == 403)
            let lead1 = try await session.call(
                .post, "/api/nodes/join", token: "", body: TestNode(name: lead.leadName).join(token: token))
            #expect(lead1.status == 409)
            #expect(lead.store.tables.withLock { ($0.nodes.count, $0.events.count) } == before)
            #expect(lead.store.tables.withLock { $0.joinTokens[0].uses } == 0)

            // The join: company and labels are the token's, never the node's own claim.
            let joined = try await session.call(
                .post, "/api/nodes/join", token: "", body: gpu1.join(token: token, labels: ["zone": "secure"]))
            #expect(joined.status == 201, "\(joined.body)")
            let node = try joined.decode(JoinResponse.self).node
            #expect(node.company == "acme")
            #expect(node.labels == ["zone": "a"])
            let row = try #require(lead.store.tables.withLock { $0.nodes["gpu-1"] })
            #expect(row.tokenID == tokenID)
            #expect(row.entry.node.vpnIP == node.vpnIP)
            #expect(row.entry.node.labels == ["zone": "a"])
            let event = try #require(lead.store.tables.withLock { $0.events.last })
            #expect(event.type == EventType.nodeJoined)
            #expect(event.node == "gpu-1")
            #expect(event.data["token"] == .string(tokenID))

            // Single use: a second node is refused, and the first keeps its address.
            let again = try await session.call(
                .post, "/api/nodes/join", token: "", body: TestNode(name: "gpu-2").join(token: token))
            #expect(again.status == 401)
            #expect(again.error?.message.contains("already used") == true)
            #expect(lead.store.tables.withLock { $0.nodes["gpu-2"] } == nil)

            // Addresses are unique across a reusable token's nodes.
            let (shared, _) = try await Self.joinToken(session, company: "acme", reusable: true)
            var addresses = Set([node.vpnIP])
            for index in 2...4 {
                let answer = try await session.call(
                    .post, "/api/nodes/join", token: "", body: TestNode(name: "gpu-\(index)").join(token: shared))
                #expect(answer.status == 201)
                addresses.insert(try answer.decode(JoinResponse.self).node.vpnIP)
            }
            #expect(addresses.count == 4)

            let listed = try await session.call(.get, "/nodes").decode(NodeList.self)
            #expect(Set(listed.nodes.map(\.name)) == [lead.leadName, "gpu-1", "gpu-2", "gpu-3", "gpu-4"])
        }
    }

    @Test("heartbeats: only the node's own signature; another node's, an impostor's or a bearer token is refused")
    func heartbeats() async throws {
        let lead = try await LeadHarness.start()
        try await lead.session { session in
            let (token, _) = try await Self.joinToken(session, reusable: true)
            let gpu1 = TestNode(name: "gpu-1"), gpu2 = TestNode(name: "gpu-2")
            for node in [gpu1, gpu2] {
                #expect(
                    try await session.call(.post, "/api/nodes/join", token: "", body: node.join(token: token)).status
                        == 201)
            }
            let path = "/api/nodes/gpu-1/heartbeat"
            let own = try await session.call(.post, path, signer: gpu1.signer, body: gpu1.heartbeat())
            #expect(own.status == 200, "\(own.body)")
            #expect(try await session.call(.post, path, body: gpu1.heartbeat()).status == 401)
            let other = try await session.call(.post, path, signer: gpu2.signer, body: gpu1.heartbeat())
            #expect(other.status == 401)
            #expect(other.error?.message.contains("cannot send heartbeats for 'gpu-1'") == true)
            // A key that is not gpu-1's, claiming to be gpu-1.
            let impostor = RequestSigner(node: "gpu-1", key: SigningKey.generate())
            #expect(try await session.call(.post, path, signer: impostor, body: gpu1.heartbeat()).status == 401)
            // Removed by the operator (kept as left): its heartbeats are refused until it joins again.
            #expect(try await session.call(.delete, "/nodes/gpu-1?keep=true").status == 200)
            #expect(lead.store.tables.withLock { $0.nodes["gpu-1"]?.entry.removed } == true)
            #expect(try await session.call(.post, path, signer: gpu1.signer, body: gpu1.heartbeat()).status != 200)
        }
    }

    @Test(
        "a heartbeat's metrics_address: kept for a wildcard or the node's mesh address, dropped for a host it only names, 400 when malformed; discovery lists it"
    )
    func metricsAddress() async throws {
        let lead = try await LeadHarness.start()
        try await lead.session { session in
            let (token, _) = try await Self.joinToken(session)
            let gpu1 = TestNode(name: "gpu-1")
            #expect(
                try await session.call(.post, "/api/nodes/join", token: "", body: gpu1.join(token: token)).status == 201
            )
            let vpnIP = try #require(lead.store.tables.withLock { $0.nodes["gpu-1"]?.entry.node.vpnIP })
            let path = "/api/nodes/gpu-1/heartbeat"
            func beat(_ address: String?) async throws -> Int {
                var heartbeat = gpu1.heartbeat()
                heartbeat.metricsAddress = address
                return try await session.call(.post, path, signer: gpu1.signer, body: heartbeat).status
            }
            func kept() async throws -> String? {
                try await session.call(.get, "/nodes/gpu-1").decode(Node.self).metricsAddress
            }
            #expect(try await beat("0.0.0.0:9464") == 200)
            #expect(try await kept() == "0.0.0.0:9464")
            #expect(try await beat("\(vpnIP):9465") == 200)
            #expect(try await kept() == "\(vpnIP):9465")
            let targets = try await session.call(.get, "/api/prometheus/targets")
            #expect(targets.status == 200 && targets.body.contains("\"\(vpnIP):9465\""), "\(targets.body)")
            // A host that is neither: a node cannot point Prometheus at someone else.
            #expect(try await beat("203.0.113.7:9464") == 200)
            #expect(try await kept() == nil)
            #expect(try await beat("\(vpnIP):9465") == 200)
            for malformed in ["no-port", "10.0.0.1:0", "a b:9464", String(repeating: "a", count: 400) + ":1"] {
                #expect(try await beat(malformed) == 400, "\(malformed)")
                #expect(try await kept() == "\(vpnIP):9465", "a refused heartbeat changed nothing")
            }
            #expect(try await beat(nil) == 200)
            #expect(try await kept() == nil)
        }
    }

    @Test("labels: only the operator sets them; bad labels are refused and change nothing")
    func labels() async throws {
        let lead = try await LeadHarness.start()
        try await lead.session { session in
            let (token, _) = try await Self.joinToken(session, labels: ["zone": "a"])
            let gpu1 = TestNode(name: "gpu-1")
            #expect(
                try await session.call(.post, "/api/nodes/join", token: "", body: gpu1.join(token: token)).status == 201
            )
            let update = NodeLabelsUpdate(labels: ["zone": "b", "tier": "gold"])
            let byNode = try await session.call(.put, "/nodes/gpu-1/labels", signer: gpu1.signer, body: update)
            #expect(byNode.status == 401)
            #expect(byNode.error?.message.contains("operator token") == true)
            let set = try await session.call(.put, "/nodes/gpu-1/labels", body: update)
            #expect(set.status == 200, "\(set.body)")
            #expect(try set.decode(Node.self).labels == update.labels)
            #expect(lead.store.tables.withLock { $0.nodes["gpu-1"]?.entry.node.labels } == update.labels)
            let bad = try await session.call(
                .put, "/nodes/gpu-1/labels", body: NodeLabelsUpdate(labels: ["bad key": "x"]))
            #expect(bad.status == 400)
            #expect(lead.store.tables.withLock { $0.nodes["gpu-1"]?.entry.node.labels } == update.labels)
            #expect(try await session.call(.put, "/nodes/nobody/labels", body: update).status == 404)
        }
    }

    @Test("scheduling: only the operator cordons or drains; bad states and deadlines are refused and change nothing")
    func scheduling() async throws {
        let lead = try await LeadHarness.start()
        try await lead.session { session in
            let (token, _) = try await Self.joinToken(session, reusable: true)
            let gpu1 = TestNode(name: "gpu-1"), gpu2 = TestNode(name: "gpu-2")
            for node in [gpu1, gpu2] {
                #expect(
                    try await session.call(.post, "/api/nodes/join", token: "", body: node.join(token: token)).status
                        == 201)
            }
            func stored() -> NodeScheduling? { lead.store.tables.withLock { $0.nodes["gpu-1"]?.entry.node.scheduling } }
            let path = "/nodes/gpu-1/scheduling"
            let cordon = NodeSchedulingUpdate(state: .cordoned)
            // Unauthenticated, a node for itself, another node, a wrong token: all 401, nothing stored.
            #expect(try await session.call(.put, path, token: "", body: cordon).status == 401)
            #expect(try await session.call(.put, path, signer: gpu1.signer, body: cordon).status == 401)
            #expect(try await session.call(.put, path, signer: gpu2.signer, body: cordon).status == 401)
            #expect(try await session.call(.put, path, token: "at_nope.nope", body: cordon).status == 401)
            #expect(stored() == nil)
            // Malformed, unknown fields, out-of-range deadlines, a deadline on a cordon, oversized.
            for (body, status) in [
                (#"{"state":"frozen"}"#, 400), (#"{"state":"draining","deadline_s":-1}"#, 400),
                (#"{"state":"draining","deadline_s":1e9}"#, 400), (#"{"state":"cordoned","deadline_s":5}"#, 400),
                (#"{"state":"open","force":true}"#, 400), ("not json", 400),
                (String(repeating: "x", count: 2_000_000), 413),
            ] {
                let answer = try await session.call(.put, path, body: RawJSON(body))
                #expect(answer.status == status, "\(body.prefix(60)): \(answer.status) \(answer.body.prefix(200))")
            }
            #expect(stored() == nil)
            #expect(try await session.call(.put, "/nodes/nobody/scheduling", body: cordon).status == 404)

            let set = try await session.call(.put, path, body: cordon)
            #expect(set.status == 200, "\(set.body)")
            #expect(try set.decode(Node.self).scheduling?.state == .cordoned)
            #expect(stored()?.state == .cordoned)
            let drain = try await session.call(.put, path, body: NodeSchedulingUpdate(state: .draining, deadlineS: 60))
            let draining = try drain.decode(Node.self).scheduling
            #expect(draining?.state == .draining && draining?.deadline != nil)
            // A rejoin keeps the operator's choice.
            #expect(
                try await session.call(.post, "/api/nodes/join", token: "", body: gpu1.join(token: token)).status == 201
            )
            #expect(try await session.call(.get, "/nodes/gpu-1").decode(Node.self).scheduling?.state == .draining)
            let reopened = try await session.call(.put, path, body: NodeSchedulingUpdate(state: .open))
            #expect(try reopened.decode(Node.self).scheduling == nil)
            #expect(stored() == nil)
            let events = lead.store.tables.withLock { $0.events.filter { $0.type == EventType.nodeSchedulingChanged } }
            #expect(events.map { $0.data["state"]?.string } == ["cordoned", "draining", "open"])
        }
    }

    @Test("jobs: stored on submit, one job per idempotency key, another caller's job is not found, cancel is durable")
    func jobs() async throws {
        let lead = try await LeadHarness.start()
        try await lead.session { session in
            let (token, _) = try await Self.joinToken(session)
            let gpu1 = TestNode(name: "gpu-1")
            #expect(
                try await session.call(.post, "/api/nodes/join", token: "", body: gpu1.join(token: token)).status == 201
            )
            var submission = JobSubmission(
                kind: .generate, payload: ["model": .string("llama3"), "prompt": .string("hello")])
            submission.idempotencyKey = "k-1"
            // No node with a GPU has joined: refused with the reasons, and nothing is stored.
            let refused = try await session.call(.post, "/api/gpu/jobs", body: submission)
            #expect(refused.status == 422, "\(refused.body)")
            #expect(refused.error?.code == "unplaceable")
            #expect(refused.error?.message.contains(": 1 node no GPU;") == true, "\(refused.body)")
            #expect(lead.store.tables.withLock { $0.jobs.isEmpty })
            // Asked to wait for a fitting node, it is queued, with a warning that says why.
            submission.allowUnplaceable = true
            let created = try await session.call(.post, "/api/gpu/jobs", body: submission)
            #expect(created.status == 201, "\(created.body)")
            let job = try created.decode(Job.self)
            #expect(job.state == .queued)
            #expect(job.warnings?.first?.contains("no node that has joined could ever run this job") == true)
            #expect(job.waiting?.reasons.map(\.code) == ["gpu_count"])
            let again = try await session.call(.post, "/api/gpu/jobs", body: submission)
            #expect(again.status == 200)
            #expect(try again.decode(Job.self).id == job.id)
            #expect(lead.store.tables.withLock { $0.jobs.map(\.job.id) } == [job.id])

            // The same key from another submitter is another job; neither sees the other's.
            let theirs = try await session.call(.post, "/api/gpu/jobs", signer: gpu1.signer, body: submission)
            #expect(theirs.status == 201, "\(theirs.body)")
            let theirID = try theirs.decode(Job.self).id
            #expect(theirID != job.id)
            #expect(try await session.call(.get, "/api/gpu/jobs/\(job.id)", signer: gpu1.signer).status == 404)
            #expect(try await session.call(.delete, "/api/gpu/jobs/\(job.id)", signer: gpu1.signer).status == 404)
            let mine = try await session.call(.get, "/api/gpu/jobs", signer: gpu1.signer).decode(JobList.self)
            #expect(mine.jobs.map(\.id) == [theirID])

            let cancelled = try await session.call(.delete, "/api/gpu/jobs/\(job.id)")
            #expect(cancelled.status == 200)
            #expect(try cancelled.decode(Job.self).state == .cancelled)
            #expect(lead.store.tables.withLock { $0.jobs.first { $0.job.id == job.id }?.job.state } == .cancelled)
            let types = lead.store.tables.withLock { $0.events.filter { $0.data["id"] == .string(job.id) }.map(\.type) }
            #expect(types.first == EventType.jobQueued)
            #expect(types.last == EventType.jobCancelled)

            // Malformed and oversized submissions change nothing.
            let count = lead.store.tables.withLock { $0.jobs.count }
            var bad = JobSubmission(kind: .generate, payload: [:])
            bad.maxAttempts = 0
            #expect(try await session.call(.post, "/api/gpu/jobs", body: bad).status == 400)
            let huge = JobSubmission(
                kind: .generate, payload: ["prompt": .string(String(repeating: "x", count: 2_000_000))])
            #expect(try await session.call(.post, "/api/gpu/jobs", body: huge).status == 413)
            #expect(lead.store.tables.withLock { $0.jobs.count } == count)
            #expect(try await session.call(.get, "/api/gpu/jobs/nope").status == 404)
        }
    }

    @Test(
        "rejoin: a lead-eligible member's own signature makes it a standby with a sealed master key; unsigned, another node's, an impostor's, the lead's name, malformed and oversized are refused and change nothing"
    )
    func rejoin() async throws {
        let lead = try await LeadHarness.start()
        try await lead.session { session in
            let (standbyToken, _) = try await Self.joinToken(session, profile: "standby")
            let (computeToken, _) = try await Self.joinToken(session)
            let standby = TestNode(name: "lead-b"), gpu1 = TestNode(name: "gpu-1")
            #expect(
                try await session.call(
                    .post, "/api/nodes/join", token: "", body: standby.join(token: standbyToken, profile: .standby)
                ).status == 201)
            #expect(
                try await session.call(.post, "/api/nodes/join", token: "", body: gpu1.join(token: computeToken))
                    .status == 201)
            let path = API.rejoinLead.pattern
            let pin = "sha256:" + String(repeating: "ab", count: 32)
            let request = LeadRejoinRequest(address: "127.0.0.1:9444", tlsPin: pin, tlsPort: 9443)
            let before = lead.store.tables.withLock { $0.events.count }

            // Refusals: nothing is written.
            #expect(try await session.call(.post, path, token: "", body: request).status == 401)
            #expect(
                try await session.call(.post, path, body: request).status == 401, "the operator token is no signature")
            let compute = try await session.call(.post, path, signer: gpu1.signer, body: request)
            #expect(compute.status == 403 && compute.error?.code == "forbidden", "\(compute.body)")
            let impostor = RequestSigner(node: "lead-b", key: SigningKey.generate())
            #expect(try await session.call(.post, path, signer: impostor, body: request).status == 401)
            let asLead = RequestSigner(node: lead.leadName, key: SigningKey.generate())
            #expect(try await session.call(.post, path, signer: asLead, body: request).status == 401)
            let unknownField = try await session.call(
                .post, path, signer: standby.signer, body: RawJSON(#"{"role":"lead"}"#))
            #expect(unknownField.status == 400 && unknownField.body.contains("role"), "\(unknownField.body)")
            let badPin = try await session.call(
                .post, path, signer: standby.signer, body: LeadRejoinRequest(tlsPin: "sha256:zz"))
            #expect(badPin.status == 400 && badPin.body.contains("tls_pin"), "\(badPin.body)")
            let badPort = try await session.call(
                .post, path, signer: standby.signer, body: LeadRejoinRequest(tlsPort: 70000))
            #expect(badPort.status == 400)
            let badAddress = try await session.call(
                .post, path, signer: standby.signer, body: LeadRejoinRequest(address: "not an address"))
            #expect(badAddress.status == 400)
            let huge = RawJSON(#"{"address":""# + String(repeating: "x", count: 2_000_000) + #""}"#)
            #expect(try await session.call(.post, path, signer: standby.signer, body: huge).status == 413)
            #expect(lead.store.tables.withLock { $0.events.count } == before)
            #expect(lead.store.tables.withLock { $0.nodes["gpu-1"]?.entry.node.role } == .compute)

            // The standby's own signature: a standby's join answer, its record updated, the event.
            let answer = try await session.call(.post, path, signer: standby.signer, body: request)
            #expect(answer.status == 200, "\(answer.body)")
            let joined = try answer.decode(JoinResponse.self)
            #expect(joined.node.name == "lead-b" && joined.node.role == .standby)
            #expect(joined.mesh.lead.name == lead.leadName)
            let sealed = try #require(joined.sealedMasterKey.flatMap { Data(base64Encoded: $0) })
            #expect((try? standby.box.open(sealed: [UInt8](sealed))) != nil, "the master key is sealed to its box key")
            let row = try #require(lead.store.tables.withLock { $0.nodes["lead-b"] })
            #expect(row.entry.node.role == .standby && row.entry.node.tlsPin == pin)
            #expect(row.entry.node.tlsPort == 9443 && row.entry.node.address == "127.0.0.1:9444")
            let event = try #require(lead.store.tables.withLock { $0.events.last })
            #expect(event.type == EventType.leadRejoined && event.node == "lead-b")
            #expect(try await session.call(.get, "/nodes/lead-b").decode(Node.self).role == .standby)

            // Removed by the operator: refused.
            #expect(try await session.call(.delete, "/nodes/lead-b?keep=true").status == 200)
            #expect(try await session.call(.post, path, signer: standby.signer, body: request).status == 401)
        }
    }

    @Test("events: the backlog comes from the store's log, in order")
    func events() async throws {
        let lead = try await LeadHarness.start()
        try await lead.session { session in
            let (token, _) = try await Self.joinToken(session)
            #expect(
                try await session.call(
                    .post, "/api/nodes/join", token: "", body: TestNode(name: "gpu-1").join(token: token)
                )
                .status == 201)
            let answer = try await session.call(.get, "/api/events?since=0&follow=false")
            #expect(answer.status == 200)
            #expect(answer.body.contains("event: \(EventType.nodeJoined)"))
            let ids = answer.body.split(separator: "\n").filter { $0.hasPrefix("id: ") }.map { $0.dropFirst(4) }
            let stored = lead.store.tables.withLock { $0.events.map { String($0.seq) } }
            #expect(ids.map(String.init) == stored)
            #expect(try await session.call(.get, "/api/events?since=-1&follow=false").status == 400)
            #expect(try await session.call(.get, "/api/events?follow=false", token: "").status == 401)
        }
    }

    @Test("a store that is down: 503 store_unavailable, nothing changes, nothing leaks")
    func storeDown() async throws {
        let lead = try await LeadHarness.start()
        try await lead.session { session in
            let (token, _) = try await Self.joinToken(session)
            let before = lead.store.tables.withLock { ($0.nodes.count, $0.events.count, $0.joinTokens.count) }
            lead.store.failing = AgentError(.store, "connection to server at 10.9.9.9 failed: password=hunter2")
            let request = TokenCreateRequest(profile: .compute)
            for answer in [
                try await session.call(.post, "/api/tokens", body: request),
                try await session.call(.get, "/api/tokens"),
                try await session.call(
                    .post, "/api/nodes/join", token: "", body: TestNode(name: "gpu-1").join(token: token)),
                try await session.call(
                    .post, "/api/gpu/jobs",
                    body: JobSubmission(
                        kind: .generate, payload: ["model": .string("m"), "prompt": .string("p")],
                        allowUnplaceable: true)),
                try await session.call(.get, "/api/events?since=0&follow=false"),
            ] {
                #expect(answer.status == 503, "\(answer.body)")
                #expect(answer.error?.code == "store_unavailable")
                #expect(!answer.body.contains("hunter2"))
            }
            lead.store.failing = nil
            #expect(lead.store.tables.withLock { ($0.nodes.count, $0.events.count, $0.joinTokens.count) } == before)
            // The token was not used up by the failed join.
            #expect(
                try await session.call(
                    .post, "/api/nodes/join", token: "", body: TestNode(name: "gpu-1").join(token: token)
                )
                .status == 201)
        }
    }
}
