import AuroraAPI
import AuroraTestKit
import Foundation
import Testing

#if canImport(Glibc)
    import Glibc
#endif

/// A `nodeagent` copied away from the checkout (no profiles/ above it, no share/ beside it, no
/// AURORA_PROFILES_DIR) starts with the profiles built into it.
@Suite("A moved nodeagent binary")
struct MovedBinaryTests {
    @Test("copied to a bare directory, it starts a lead with its built-in profile")
    func builtInProfile() async throws {
        let scratch = try ScratchDirectory("moved-binary")
        defer { scratch.remove() }
        let bin = scratch.path + "/bin"
        try FileManager.default.createDirectory(atPath: bin, withIntermediateDirectories: true)
        // Copied by cp, not in this process: another test spawning a child while this process held
        // the copy open for writing would pass that descriptor on, and exec would fail (ETXTBSY).
        let copy = try await ChildProcess.run(
            "/bin/cp", [Binaries.nodeagent, bin + "/nodeagent"], outputDirectory: scratch.path)
        #expect(copy.code == 0, "\(copy.stderr)")
        let lead = try AgentHarness(
            profile: "lead", dataDir: scratch.path + "/lead", extraArguments: ["--name", "moved-lead"],
            environment: ["AURORA_PROFILES_DIR": nil], outputDirectory: scratch.path,
            executable: bin + "/nodeagent")
        defer { if lead.process.isRunning { lead.process.signal(SIGKILL) } }
        let health = try await lead.waitHealthy()
        #expect(health.role == .lead)
        #expect(health.node == "moved-lead")
        let status = try await lead.agentStatus()
        #expect(status.pid == lead.process.pid)
        lead.process.signal(SIGTERM)
        #expect(try await lead.process.waitForExit(timeout: .seconds(10)) == 0)
    }
}
