import AuroraAPI
import Foundation
import Secrets
import Testing

@testable import NodeAgent

/// The lead's synchronous-standby rule as a pure core (an injected clock, no I/O), and the
/// standby's checks of the replication credentials a join answer carries.
@Suite("Synchronous standby rule")
struct SynchronousStandbyRuleTests {
    typealias Rule = SynchronousStandbyRule
    let start = ContinuousClock.now

    func sample(_ standby: String?, connected: Bool, caughtUp: Bool = false) -> Rule.Sample {
        .init(standby: standby, connected: connected, caughtUp: caughtUp)
    }

    @Test(
        "caught up: synchronous once; gone too long: ineligible FIRST, then asynchronous; back: eligible, synchronous")
    func lifecycle() {
        var rule = Rule(ineligibleAfter: .seconds(3))
        #expect(rule.onSample(sample("b", connected: true), now: start).isEmpty)  // streaming, not caught up
        #expect(
            rule.onSample(sample("b", connected: true, caughtUp: true), now: start + .seconds(1)) == [
                .setSynchronous("b")
            ])
        #expect(rule.onSample(sample("b", connected: true, caughtUp: true), now: start + .seconds(2)).isEmpty)
        // Gone: nothing until the limit, then the record before the fallback.
        #expect(rule.onSample(sample("b", connected: false), now: start + .seconds(4)).isEmpty)
        #expect(rule.onSample(sample("b", connected: false), now: start + .seconds(5)).isEmpty)
        let fallback = rule.onSample(sample("b", connected: false), now: start + .milliseconds(5_100))
        #expect(fallback == [.markIneligible("b", reason: "disconnected for more than 3 s"), .setSynchronous(nil)])
        #expect(!rule.isEligible("b") && rule.synchronous == nil)
        #expect(rule.onSample(sample("b", connected: false), now: start + .seconds(9)).isEmpty)
        // Back but catching up: still ineligible and asynchronous.
        #expect(rule.onSample(sample("b", connected: true), now: start + .seconds(10)).isEmpty)
        #expect(
            rule.onSample(sample("b", connected: true, caughtUp: true), now: start + .seconds(11))
                == [.markEligible("b"), .setSynchronous("b")])
        #expect(rule.isEligible("b") && rule.synchronous == "b")
    }

    @Test("recorded ineligible at start, a standby that goes away, and a new designated standby")
    func designation() {
        var rule = Rule(ineligibleAfter: .seconds(3), eligibility: ["b": false])
        #expect(!rule.isEligible("b"))
        #expect(rule.onSample(sample("b", connected: false), now: start + .seconds(10)).isEmpty)  // already recorded
        #expect(
            rule.onSample(sample("b", connected: true, caughtUp: true), now: start + .seconds(11))
                == [.markEligible("b"), .setSynchronous("b")])
        #expect(rule.onSample(sample("c", connected: false), now: start + .seconds(12)) == [.setSynchronous(nil)])
        #expect(rule.onSample(sample(nil, connected: false), now: start + .seconds(13)).isEmpty)
        // A never-connected designated standby counts from when it was designated.
        #expect(rule.onSample(sample("c", connected: false), now: start + .seconds(14)).isEmpty)
        #expect(
            rule.onSample(sample("c", connected: false), now: start + .seconds(18))
                == [.markIneligible("c", reason: "disconnected for more than 3 s")])
    }

    @Test("a listener on every address offers the address the standby reached")
    func advertisedHost() {
        typealias Service = StandbyReplicationService
        #expect(Service.advertisedHost(listener: "10.0.0.1", reached: "192.0.2.7") == "10.0.0.1")
        #expect(Service.advertisedHost(listener: "0.0.0.0", reached: "192.0.2.7") == "192.0.2.7")
        #expect(Service.advertisedHost(listener: "::", reached: "::ffff:192.0.2.7") == "192.0.2.7")
        #expect(Service.advertisedHost(listener: "::", reached: "2001:db8::1") == "2001:db8::1")
        #expect(Service.advertisedHost(listener: "0.0.0.0", reached: nil) == "0.0.0.0")
    }

    @Test("the standby refuses hostile replication credentials")
    func hostileCredentials() throws {
        let box = BoxKey.generate()
        let other = BoxKey.generate()
        let password = String(repeating: "ab", count: 32)
        func offer(
            host: String = "127.0.0.1", port: Int = 5433, user: String = "aurora_repl_lead_b",
            slot: String = "aurora_lead_b", certificate: String = Self.certificate, sealedTo key: BoxKey? = nil,
            password: String = password
        ) -> JoinResponse.Replication {
            JoinResponse.Replication(
                host: host, port: port, user: user, slot: slot, certificate: certificate,
                sealedPassword: Data(BoxKey.seal(Array(password.utf8), to: (key ?? box).publicKey))
                    .base64EncodedString())
        }
        let kept = try StandbyReplication(checking: offer(), node: "lead-b", box: box)
        #expect(try kept.password(box: box) == password)
        for hostile in [
            offer(host: "lead.example.net"), offer(host: "127.0.0.1 sslmode=disable"), offer(port: 0),
            offer(port: 70_000), offer(user: "postgres"), offer(slot: "aurora_other"),
            offer(certificate: "-----BEGIN CERTIFICATE-----\nnot one\n-----END CERTIFICATE-----\n"),
            offer(sealedTo: other), offer(password: "short"), offer(password: String(repeating: "zz", count: 32)),
        ] {
            #expect(throws: AgentError.self) { try StandbyReplication(checking: hostile, node: "lead-b", box: box) }
        }
    }

    /// A self-signed P-256 certificate (`openssl req -x509`).
    static let certificate = """
        -----BEGIN CERTIFICATE-----
        MIIBgTCCASegAwIBAgIUHgm9monSW3JWwcZvT3DsSGJgWEgwCgYIKoZIzj0EAwIw
        FjEUMBIGA1UEAwwLYXVyb3JhIGxlYWQwHhcNMjYxMjAxMDUwMjU5WhcNMzYxMTI4
        MDUwMjU5WjAWMRQwEgYDVQQDDAthdXJvcmEgbGVhZDBZMBMGByqGSM49AgEGCCqG
        SM49AwEHA0IABEW3kLo8qVpyfTMIGT+5OqIPUIBmGcLL3USgDOwdfct3MxwSgt9R
        paYUy8I4ja9KEiAGIC4H3HszyGLeOriQA8SjUzBRMB0GA1UdDgQWBBTB1n5zVrw3
        gm6Uyg32I6aKfWowGTAfBgNVHSMEGDAWgBTB1n5zVrw3gm6Uyg32I6aKfWowGTAP
        BgNVHRMBAf8EBTADAQH/MAoGCCqGSM49BAMCA0gAMEUCIHJE1kuQsEjnEJbNqWCL
        afkaiT8LqGtrMmSXChcSDvCaAiEAn9xrmr1h9SWUl0RrxQOUaN3vky+o1zk4A5EJ
        DFOnVyU=
        -----END CERTIFICATE-----
        """
}
