import Foundation

#if canImport(Glibc)
    import Glibc
#endif

/// Network namespaces a test makes itself: a hub namespace with a bridge, and one namespace
/// per node joined to the hub by a veth pair, with an address on a private /24. Traffic stays
/// inside them. ``remove()`` kills every process left in them and deletes them.
public final class NetworkNamespaces: Sendable {
    /// A short random tag that keeps names (≤ 15 characters for links) apart between runs.
    public let tag: String
    /// The first three octets of the underlay, e.g. `172.31.57`.
    public let subnet: String
    /// Where the output of the `ip` commands goes (the test's scratch directory).
    public let outputDirectory: String
    public var hub: String { "\(tag)-hub" }

    public init(outputDirectory: String) async throws {
        guard geteuid() == 0 else {
            throw TestKitError("network namespaces need root (ip netns); run the tests as root")
        }
        tag = "au" + String(UInt32.random(in: 0...0xFFFF), radix: 16)
        subnet = "172.31.\(Int.random(in: 1...254))"
        self.outputDirectory = outputDirectory
        try await ip(["netns", "add", hub])
        try await ip(["-n", hub, "link", "add", "br0", "type", "bridge"])
        try await ip(["-n", hub, "link", "set", "br0", "up"])
    }

    /// The namespace of node `index` (1...250): created and wired to the hub on first use.
    /// Returns its name and underlay address.
    @discardableResult
    public func node(_ index: Int) async throws -> (namespace: String, address: String) {
        let namespace = "\(tag)-n\(index)", address = "\(subnet).\(index)"
        try await ip(["netns", "add", namespace])
        try await ip([
            "link", "add", "\(tag)v\(index)", "netns", namespace, "type", "veth", "peer", "name", "\(tag)h\(index)",
            "netns", hub,
        ])
        try await ip(["-n", namespace, "link", "set", "lo", "up"])
        try await ip(["-n", namespace, "address", "add", "\(address)/24", "dev", "\(tag)v\(index)"])
        try await ip(["-n", namespace, "link", "set", "\(tag)v\(index)", "up"])
        try await ip(["-n", hub, "link", "set", "\(tag)h\(index)", "master", "br0"])
        try await ip(["-n", hub, "link", "set", "\(tag)h\(index)", "up"])
        return (namespace, address)
    }

    /// A home behind NAT: a router namespace `TAG-rI` on the hub with the public address
    /// `SUBNET.(100+I)`, and the node's namespace `TAG-nI` behind it on `192.168.I.0/24`
    /// (the node is `192.168.I.2`, its default route the router). The router masquerades what
    /// leaves and lets in only replies (no inbound); `symmetric` gives each destination its own
    /// random source port (a symmetric NAT), else Linux keeps the port (endpoint-independent
    /// mapping, so hole punching works). Returns the node's namespace and the router's.
    @discardableResult
    public func home(_ index: Int, symmetric: Bool) async throws -> (namespace: String, router: String, public: String)
    {
        let router = "\(tag)-r\(index)", namespace = "\(tag)-n\(index)", address = "\(subnet).\(100 + index)"
        let wan = "\(tag)w\(index)", lan = "\(tag)l\(index)", inside = "\(tag)v\(index)"
        try await ip(["netns", "add", router])
        try await ip(["netns", "add", namespace])
        try await ip([
            "link", "add", wan, "netns", router, "type", "veth", "peer", "name", "\(tag)x\(index)", "netns", hub,
        ])
        try await ip(["-n", hub, "link", "set", "\(tag)x\(index)", "master", "br0"])
        try await ip(["-n", hub, "link", "set", "\(tag)x\(index)", "up"])
        try await ip(["link", "add", lan, "netns", router, "type", "veth", "peer", "name", inside, "netns", namespace])
        for (ns, links) in [(router, ["lo", wan, lan]), (namespace, ["lo", inside])] {
            for link in links { try await ip(["-n", ns, "link", "set", link, "up"]) }
        }
        try await ip(["-n", router, "address", "add", "\(address)/24", "dev", wan])
        try await ip(["-n", router, "address", "add", "192.168.\(index).1/24", "dev", lan])
        try await ip(["-n", namespace, "address", "add", "192.168.\(index).2/24", "dev", inside])
        try await ip(["-n", namespace, "route", "add", "default", "via", "192.168.\(index).1"])
        try await exec(router, "/usr/sbin/sysctl", ["-q", "-w", "net.ipv4.ip_forward=1"])
        // Unsolicited packets are dropped before conntrack confirms them, so they leave no entry
        // that would make the NAT pick another port for the node's own next packet.
        let rules = """
            table ip aurora {
              chain postrouting { type nat hook postrouting priority 100; oifname "\(wan)" masquerade\(symmetric ? " fully-random" : ""); }
              chain forward { type filter hook forward priority 0; policy drop; iifname "\(lan)" accept; ct state established,related accept; }
              chain input { type filter hook input priority 0; policy drop; iifname "lo" accept; ct state established,related accept; }
            }
            """
        let file = outputDirectory + "/\(router).nft"
        try rules.write(toFile: file, atomically: true, encoding: .utf8)
        try await exec(router, "/usr/sbin/nft", ["-f", file])
        return (namespace, router, address)
    }

    /// The home's router gets another public address (`SUBNET.(150+I)`, or back to 100+I with
    /// `back`), and its NAT forgets every mapping: the node's traffic comes from the new address.
    @discardableResult
    public func renumber(home index: Int, back: Bool = false) async throws -> String {
        let router = "\(tag)-r\(index)", wan = "\(tag)w\(index)"
        let old = "\(subnet).\(back ? 150 + index : 100 + index)", new = "\(subnet).\(back ? 100 + index : 150 + index)"
        // The old address goes first: deleting a subnet's primary address also deletes the
        // secondaries (promote_secondaries is off).
        try await ip(["-n", router, "address", "del", "\(old)/24", "dev", wan])
        try await ip(["-n", router, "address", "add", "\(new)/24", "dev", wan])
        _ = try? await ChildProcess.run(
            "/usr/sbin/ip", ["netns", "exec", router, "/usr/sbin/conntrack", "-F"], outputDirectory: outputDirectory)
        return new
    }

    private func exec(_ namespace: String, _ program: String, _ arguments: [String]) async throws {
        let outcome = try await run(in: namespace, program, arguments)
        guard outcome.code == 0 else {
            throw TestKitError(
                "\(program) \(arguments.joined(separator: " ")) in \(namespace) failed: \(outcome.stderr.suffix(300))")
        }
    }

    /// `ip netns exec NS PROGRAM ARGS...` to completion.
    public func run(in namespace: String, _ program: String, _ arguments: [String]) async throws -> (
        code: Int32, stdout: String, stderr: String
    ) {
        try await ChildProcess.run(
            "/usr/sbin/ip", ["netns", "exec", namespace, program] + arguments, outputDirectory: outputDirectory)
    }

    /// A long-running process inside `namespace`.
    public func spawn(in namespace: String, _ program: String, _ arguments: [String]) throws -> ChildProcess {
        try ChildProcess(
            "/usr/sbin/ip", ["netns", "exec", namespace, program] + arguments, outputDirectory: outputDirectory)
    }

    /// Whether one ping from `namespace` to `address` gets an answer within a second.
    public func pings(from namespace: String, _ address: String) async -> Bool {
        (try? await run(in: namespace, "/usr/bin/ping", ["-c", "1", "-W", "1", "-q", address]))?.code == 0
    }

    /// Every namespace of this test, by name.
    public var namespaces: [String] {
        get async {
            let listing =
                (try? await ChildProcess.run("/usr/sbin/ip", ["netns", "list"], outputDirectory: outputDirectory))?
                .stdout ?? ""
            return listing.split(separator: "\n").compactMap { $0.split(separator: " ").first.map(String.init) }.filter
            { $0.hasPrefix(tag + "-") }
        }
    }

    /// PIDs of processes inside `namespace` (`ip netns pids`).
    public func pids(in namespace: String) async -> [pid_t] {
        let output =
            (try? await ChildProcess.run(
                "/usr/sbin/ip", ["netns", "pids", namespace], outputDirectory: outputDirectory))?.stdout ?? ""
        return output.split(separator: "\n").compactMap { pid_t($0) }
    }

    /// Kills whatever still runs in the namespaces (agents, wireguard-go, PostgreSQL), waits
    /// for it to go, and deletes the namespaces. Never throws.
    public func remove() async {
        for namespace in await namespaces {
            // SIGTERM first (wireguard-go then removes its interface and control socket), SIGKILL
            // what is left after 3 s.
            for pid in await pids(in: namespace) { kill(pid, SIGTERM) }
            for attempt in 0..<80 {
                let pids = await pids(in: namespace)
                if pids.isEmpty { break }
                if attempt >= 30 { for pid in pids { kill(pid, SIGKILL) } }
                try? await Task.sleep(for: .milliseconds(100))  // the processes exit; polled with a bound
            }
            _ = try? await ip(["netns", "del", namespace])
        }
        // Control sockets of a wireguard-go that could not clean up after itself.
        let sockets = (try? FileManager.default.contentsOfDirectory(atPath: "/var/run/wireguard")) ?? []
        for socket in sockets where socket.hasPrefix(tag + "-") { unlink("/var/run/wireguard/" + socket) }
    }

    @discardableResult
    func ip(_ arguments: [String]) async throws -> String {
        let outcome = try await ChildProcess.run("/usr/sbin/ip", arguments, outputDirectory: outputDirectory)
        guard outcome.code == 0 else {
            throw TestKitError("ip \(arguments.joined(separator: " ")) failed: \(outcome.stderr.suffix(300))")
        }
        return outcome.stdout
    }
}
