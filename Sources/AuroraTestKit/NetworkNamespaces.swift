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
