import AuroraAPI
import Foundation

#if canImport(Glibc)
    import Glibc
#endif

/// A mesh across network namespaces with homes behind NAT, for the NAT tests and the relay
/// benchmark: a public lead (namespace 1), a public compute node that relays (namespace 2,
/// `relay.enabled` and the trusted label `relay=true`), and one home per entry of `homes`
/// (namespaces 3…, behind their own NAT routers; `true` is a symmetric NAT). Every agent runs
/// wireguard-go in apply mode, answers DNS on its mesh address, and its namespace's resolver is
/// that agent. ``stop()`` ends the agents, the resolver files and the namespaces.
public final class NATMesh: @unchecked Sendable {
    public static let port = 7000

    public struct Member: Sendable {
        public let name: String
        public let namespace: String
        /// The address its agent listens on: public, or its LAN address in a home.
        public let address: String
        public let dataDir: String
        public let interface: String
        public let meshIP: String
        /// Its router's public address (homes only).
        public let publicAddress: String?
        public var url: String { "http://\(address):\(NATMesh.port)" }
        public var fqdn: String { "\(name).aurora.internal" }
        public var operatorToken: String {
            ((try? String(contentsOfFile: dataDir + "/" + Defaults.adminTokenFile, encoding: .utf8)) ?? "")
                .trimmingCharacters(in: .whitespacesAndNewlines)
        }
    }

    public let net: NetworkNamespaces
    public let lead: Member
    public let relay: Member
    public let homes: [Member]
    public var everyone: [Member] { [lead, relay] + homes }
    public private(set) var processes: [String: ChildProcess] = [:]
    private var resolvers: [String] = []
    private let root: String

    /// Builds the namespaces and starts every agent; returns once each is healthy.
    public init(root: String, homes symmetric: [Bool], executable: String, cli: String) async throws {
        for tool in ["/usr/bin/wireguard-go", "/usr/sbin/nft", "/usr/sbin/conntrack"] {
            guard FileManager.default.isExecutableFile(atPath: tool) else {
                throw TestKitError(
                    "\(tool) is missing (apt-get install wireguard-go wireguard-tools nftables conntrack)")
            }
        }
        self.root = root
        let net = try await NetworkNamespaces(outputDirectory: root)
        self.net = net
        func member(_ name: String, _ namespace: String, _ address: String, _ index: Int, _ outside: String?) -> Member
        {
            Member(
                name: name, namespace: namespace, address: address, dataDir: root + "/" + name,
                interface: "\(net.tag)-wg\(index)", meshIP: "10.79.0.\(index)", publicAddress: outside)
        }
        var built: [Member] = []
        do {
            let (leadNS, leadAddress) = try await net.node(1)
            let (relayNS, relayAddress) = try await net.node(2)
            built = [member("lead", leadNS, leadAddress, 1, nil), member("gpu-1", relayNS, relayAddress, 2, nil)]
            for (offset, isSymmetric) in symmetric.enumerated() {
                let index = offset + 3
                let home = try await net.home(index, symmetric: isSymmetric)
                built.append(member("home-\(offset + 1)", home.namespace, "192.168.\(index).2", index, home.public))
            }
        } catch {
            await net.remove()
            throw error
        }
        lead = built[0]
        relay = built[1]
        homes = Array(built.dropFirst(2))
        do { try await start(executable: executable, cli: cli) } catch {
            await stop()
            throw error
        }
    }

    private func start(executable: String, cli: String) async throws {
        func spawn(_ m: Member, profile: String, extra: [String], wireguard: String = "", yaml: String = "") throws {
            let file = root + "/\(m.name).yaml"
            try """
            wireguard:
              mode: apply
              interface: \(m.interface)
              cidr: 10.79.0.0/24
              \(wireguard)
            vpn_ip: \(m.meshIP)
            http:
              insecure_plain: true
            dns:
              mesh: true
            heartbeat: {interval_s: 0.5, suspect_after: 4, dead_after: 8}
            \(yaml)
            """.write(toFile: file, atomically: true, encoding: .utf8)
            processes[m.name] = try net.spawn(
                in: m.namespace, executable,
                [
                    "run", "--profile", profile, "--name", m.name, "--data-dir", m.dataDir, "--listen",
                    "\(m.address):\(Self.port)", "--config", file,
                ] + extra)
        }
        try spawn(lead, profile: "lead", extra: [], wireguard: "endpoint: \"\(lead.address):51820\"")
        try await healthy(lead)
        func token(_ arguments: [String]) async throws -> String {
            let answer = try await net.run(
                in: lead.namespace, cli,
                ["token", "create", "--profile", "compute", "--agent", lead.url, "--data-dir", lead.dataDir] + arguments
            )
            let token = answer.stdout.trimmingCharacters(in: .whitespacesAndNewlines)
            guard answer.code == 0, !token.isEmpty else { throw TestKitError("token create: \(answer.stderr)") }
            return token
        }
        try spawn(
            relay, profile: "compute",
            extra: ["--lead", lead.url, "--join-token", try await token(["--labels", "relay=true"])],
            yaml: "relay: {enabled: true, port_base: 41000, pairs: 64}")
        let homeToken = try await token(["--reusable"])
        for home in homes {
            try spawn(
                home, profile: "compute", extra: ["--lead", lead.url, "--join-token", homeToken],
                wireguard: "behind_nat: true")
        }
        for m in everyone.dropFirst() { try await healthy(m) }
        for m in everyone {
            let directory = "/etc/netns/\(m.namespace)"
            try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
            resolvers.append(directory)
            try "nameserver \(m.meshIP)\noptions timeout:1 attempts:2\n".write(
                toFile: directory + "/resolv.conf", atomically: true, encoding: .utf8)
        }
    }

    /// Polls `/health` of `m`'s agent until it is ok; throws when the agent exits.
    public func healthy(_ m: Member) async throws {
        let process = processes[m.name]!
        _ = try await poll(timeout: .seconds(90), every: .milliseconds(200), "\(m.name) to be healthy") {
            () async throws -> Bool? in
            if let code = process.exitCode {
                throw PollStop(TestKitError("\(m.name) exited with \(code): \(process.stderr.suffix(600))"))
            }
            let answer = try await net.run(in: m.namespace, "/usr/bin/curl", ["-s", "-m", "2", m.url + "/health"])
            return answer.stdout.contains("\"status\":\"ok\"") ? true : nil
        }
    }

    /// `GET path` on `m`'s agent with its operator token, decoded.
    public func api<T: Decodable>(_ m: Member, _ path: String, as type: T.Type) async throws -> T {
        let answer = try await net.run(
            in: m.namespace, "/usr/bin/curl",
            ["-s", "-m", "5", "-H", "Authorization: Bearer \(m.operatorToken)", m.url + path])
        return try APICoding.decoder().decode(T.self, from: Data(answer.stdout.utf8))
    }

    /// The lead's paths by `a|b`.
    public func paths() async throws -> [String: MeshPath] {
        let topology = try await api(lead, Routes.topology, as: Topology.self)
        return Dictionary((topology.paths ?? []).map { ("\($0.a)|\($0.b)", $0) }, uniquingKeysWith: { a, _ in a })
    }

    /// Whether `from` resolves `to`'s name to its mesh address and pings it by name.
    public func reachesByName(_ from: Member, _ to: Member) async -> Bool {
        let found = try? await net.run(in: from.namespace, "/usr/bin/getent", ["hosts", to.fqdn])
        guard found?.stdout.hasPrefix(to.meshIP + " ") == true else { return false }
        return await net.pings(from: from.namespace, to.fqdn)
    }

    /// Sends SIGTERM to `name`'s agent and returns its exit status.
    public func stop(_ name: String) async throws -> Int32 {
        let process = processes[name]!
        process.signal(SIGTERM)
        return try await process.waitForExit(timeout: .seconds(20))
    }

    /// Stops every agent, removes the resolver files and the namespaces. Never throws.
    public func stop() async {
        for process in processes.values where process.isRunning {
            process.signal(SIGTERM)
            if (try? await process.waitForExit(timeout: .seconds(20))) == nil { process.signal(SIGKILL) }
        }
        for directory in resolvers { try? FileManager.default.removeItem(atPath: directory) }
        await net.remove()
    }
}
