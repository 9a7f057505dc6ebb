import AuroraAPI
import AuroraTestKit
import Foundation
import Testing

#if canImport(Glibc)
    import Glibc
#endif

/// `aurora-cli jobs show|cancel` take the 8 characters the tables print.
@Suite("Job ids by prefix in aurora-cli")
struct JobPrefixTests {
    @Test("show and cancel by the printed prefix; an unknown prefix exits 3; nonsense is refused before any call")
    func prefixes() async throws {
        let scratch = try ScratchDirectory("job-prefix")
        let lead = try AgentHarness(
            profile: "lead", dataDir: scratch.path + "/lead", extraArguments: ["--name", "lead-1"],
            outputDirectory: scratch.path)
        defer {
            if lead.process.isRunning { lead.process.signal(SIGKILL) }
            scratch.remove()
        }
        try await lead.waitHealthy()
        // No worker: the job stays queued.
        // No worker has joined: the job is queued only because it is allowed to wait for one.
        let submission = JobSubmission(
            kind: .generate, payload: ["model": .string("m"), "prompt": .string("p")], allowUnplaceable: true)
        let job = try await http(
            lead.baseURL + Routes.gpuJobs, method: "POST", headers: ["Authorization": "Bearer \(try lead.adminToken)"],
            body: Array(try APICoding.encoder().encode(submission))
        ).decode(Job.self)
        func cli(_ arguments: [String]) async throws -> (code: Int32, stdout: String, stderr: String) {
            let result = try await ChildProcess.run(
                Binaries.auroraCLI, arguments + ["--agent", lead.baseURL, "--data-dir", lead.dataDir],
                outputDirectory: scratch.path)
            return (result.code, result.stdout, result.stderr)
        }
        let prefix = String(job.id.prefix(8))
        let shown = try await cli(["jobs", "show", prefix, "--json"])
        #expect(shown.code == 0, "\(shown.stderr)")
        #expect(try APICoding.decoder().decode(Job.self, from: Data(shown.stdout.utf8)).id == job.id)
        let upper = try await cli(["jobs", "show", prefix.uppercased()])
        #expect(upper.code == 0, "\(upper.stderr)")

        let unknown = String(job.id.first == "f" ? "0000" : "ffff") + "0000"
        let missing = try await cli(["jobs", "show", unknown])
        #expect(missing.code == 3)
        #expect(missing.stderr.contains("no job with an id starting '\(unknown)'"))
        let nonsense = try await cli(["jobs", "cancel", "x;1"])
        #expect(nonsense.code != 0)
        #expect(nonsense.stderr.contains("is not a job id or a prefix of one"))

        let cancelled = try await cli(["jobs", "cancel", prefix])
        #expect(cancelled.code == 0, "\(cancelled.stderr)")
        #expect(cancelled.stdout.contains("cancelled \(job.id)"))
    }
}
