import AuroraAPI
import AuroraTestKit
import Foundation
import Testing

#if canImport(Glibc)
    import Glibc
#endif

/// Each bad start is one line on stderr naming the cause, a non-zero exit, and nothing changed.
@Suite("Bad input to nodeagent and aurora-cli")
struct BadInputTests {
    /// Runs nodeagent and checks the one-line error.
    func expectOneLineError(
        _ arguments: [String], environment: [String: String?] = [:], in scratch: ScratchDirectory,
        contains cause: String, sourceLocation: SourceLocation = #_sourceLocation
    ) async throws {
        let result = try await ChildProcess.run(
            Binaries.nodeagent, arguments, environment: environment, outputDirectory: scratch.path)
        #expect(result.code != 0, "exit code 0 for \(arguments)", sourceLocation: sourceLocation)
        let lines = result.stderr.split(separator: "\n")
        #expect(lines.count == 1, "expected one line, got: \(result.stderr)", sourceLocation: sourceLocation)
        #expect(lines.first?.hasPrefix("nodeagent: error: ") == true, sourceLocation: sourceLocation)
        #expect(
            result.stderr.contains(cause), "'\(result.stderr)' does not name '\(cause)'", sourceLocation: sourceLocation
        )
    }

    @Test("a malformed profile, an unknown key, a bad value, a missing profile")
    func badProfiles() async throws {
        let scratch = try ScratchDirectory("badprofile")
        defer { scratch.remove() }
        let dataDir = scratch.path + "/data"
        let malformed = scratch.path + "/malformed.yaml"
        try "role: lead\nlisten: [unclosed\n".write(toFile: malformed, atomically: true, encoding: .utf8)
        try await expectOneLineError(
            ["--profile", malformed, "--data-dir", dataDir], in: scratch, contains: "\(malformed): invalid YAML: line ")

        let unknown = scratch.path + "/unknown.yaml"
        try "role: lead\nheartbeat:\n  intervall_s: 1\n".write(toFile: unknown, atomically: true, encoding: .utf8)
        try await expectOneLineError(
            ["--profile", unknown, "--data-dir", dataDir], in: scratch,
            contains: "\(unknown):3: unknown key 'heartbeat.intervall_s'; did you mean 'heartbeat.interval_s'?")

        let badValue = scratch.path + "/bad-value.yaml"
        try "role: lead\nlisten: localhost\n".write(toFile: badValue, atomically: true, encoding: .utf8)
        try await expectOneLineError(
            ["--profile", badValue, "--data-dir", dataDir], in: scratch,
            contains: "\(badValue):2: 'listen' must be HOST:PORT, got 'localhost'")

        try await expectOneLineError(
            ["--profile", "nosuchprofile", "--data-dir", dataDir], in: scratch,
            contains: "profile 'nosuchprofile' not found")
        try await expectOneLineError(
            ["--profile", "lead", "--data-dir", dataDir], environment: ["AURORA_LOG_LEVEL": "loud"], in: scratch,
            contains: "environment AURORA_LOG_LEVEL: 'log.level' must be one of trace")
        // Nothing was created.
        #expect(!FileManager.default.fileExists(atPath: dataDir))
    }

    @Test("an unknown flag names the flag")
    func unknownFlag() async throws {
        let scratch = try ScratchDirectory("badflag")
        defer { scratch.remove() }
        try await expectOneLineError(
            ["--profile", "lead", "--frobnicate"], in: scratch, contains: "Unknown option '--frobnicate'")
    }

    @Test("an occupied port names the address; the data dir is left untouched")
    func occupiedPort() async throws {
        let scratch = try ScratchDirectory("port")
        defer { scratch.remove() }
        let holder = try PortHolder()
        let dataDir = scratch.path + "/data"
        try await expectOneLineError(
            ["--profile", "lead", "--data-dir", dataDir, "--listen", "127.0.0.1:\(holder.port)"], in: scratch,
            contains: "cannot listen on 127.0.0.1:\(holder.port): address already in use")
        #expect(!FileManager.default.fileExists(atPath: dataDir))
        withExtendedLifetime(holder) {}
    }

    @Test("an unwritable data dir names the path and the reason")
    func unwritableDataDir() async throws {
        let scratch = try ScratchDirectory("datadir")
        defer { scratch.remove() }
        let file = scratch.path + "/a-file"
        try "x".write(toFile: file, atomically: true, encoding: .utf8)
        try await expectOneLineError(
            ["--profile", "lead", "--data-dir", file + "/data", "--listen", "127.0.0.1:\(try freePort())"], in: scratch,
            contains: "cannot create data dir \(file)/data: \(file) is not a directory")
        try await expectOneLineError(
            ["--profile", "lead", "--data-dir", file, "--listen", "127.0.0.1:\(try freePort())"], in: scratch,
            contains: "data dir \(file) exists and is not a directory")
        // A directory the agent's user may not write: run it as 'nobody' (root may write anywhere).
        if geteuid() == 0, FileManager.default.isExecutableFile(atPath: "/usr/sbin/runuser") {
            let readOnly = scratch.path + "/readonly"
            try FileManager.default.createDirectory(
                atPath: readOnly, withIntermediateDirectories: false, attributes: [.posixPermissions: 0o755])
            // 'nobody' must reach the binary: a checkout under a 0700 directory (mktemp -d) gets a copy.
            var executable = Binaries.nodeagent
            if !reachableByOthers(executable) {
                executable = scratch.path + "/nodeagent"
                // cp in its own process: a write descriptor held here could leak into a child that
                // another test forks meanwhile, and exec would then fail with ETXTBSY.
                let copy = try await ChildProcess.run(
                    "/bin/cp", [Binaries.nodeagent, executable], outputDirectory: scratch.path)
                #expect(copy.code == 0, "\(copy.stderr)")
            }
            let profile = scratch.path + "/edge.yaml"
            try "role: edge\n".write(toFile: profile, atomically: true, encoding: .utf8)
            chmod(profile, 0o644)
            let result = try await ChildProcess.run(
                "/usr/sbin/runuser",
                [
                    "-u", "nobody", "--", executable, "--profile", profile, "--data-dir", readOnly, "--listen",
                    "127.0.0.1:\(try freePort())",
                ],
                outputDirectory: scratch.path)
            #expect(result.code != 0)
            #expect(result.stderr == "nodeagent: error: data dir \(readOnly) is not writable: Permission denied\n")
        }
    }

    /// Whether every directory above `path` lets others through and `path` lets others execute.
    func reachableByOthers(_ path: String) -> Bool {
        var current = path
        while !current.isEmpty {
            var info = stat()
            guard stat(current, &info) == 0, info.st_mode & 0o001 != 0 else { return false }
            if current == "/" { return true }
            current = (current as NSString).deletingLastPathComponent
        }
        return true
    }

    @Test("aurora-cli says plainly when no agent runs, with exit code 3")
    func cliWithoutAgent() async throws {
        let scratch = try ScratchDirectory("cli")
        defer { scratch.remove() }
        let url = "http://127.0.0.1:\(try freePort())"
        let result = try await ChildProcess.run(
            Binaries.auroraCLI, ["status", "--agent", url], outputDirectory: scratch.path)
        #expect(result.code == 3)
        #expect(result.stderr.hasPrefix("aurora-cli: error: no nodeagent is answering at \(url)"))
        let badFlag = try await ChildProcess.run(
            Binaries.auroraCLI, ["status", "--colour"], outputDirectory: scratch.path)
        #expect(badFlag.code != 0)
        #expect(badFlag.stderr == "aurora-cli: error: Unknown option '--colour' (see 'aurora-cli --help')\n")
    }
}
