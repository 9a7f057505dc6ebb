import AuroraAPI
import AuroraTestKit
import Foundation
import Testing

#if canImport(Glibc)
    import Glibc
#endif

/// The README's quickstart and secrets example, run as written: the shell blocks between its
/// `<!-- readme-test:NAME -->` markers become one script, with only the build step, the ports and
/// the directories replaced, so the README and this test cannot drift apart.
@Suite("README examples", .serialized)
struct ReadmeTests {
    /// The `sh` code of the fenced blocks between `<!-- readme-test:NAME` and `<!-- /readme-test:NAME -->`.
    static func block(_ name: String, in readme: String) throws -> String {
        guard let start = readme.range(of: "<!-- readme-test:\(name)"),
            let end = readme.range(of: "<!-- /readme-test:\(name) -->", range: start.upperBound..<readme.endIndex)
        else { throw TestKitError("README.md has no readme-test:\(name) markers") }
        var code: [Substring] = []
        var inside = false
        for line in readme[start.upperBound..<end.lowerBound].split(separator: "\n", omittingEmptySubsequences: false) {
            if line.hasPrefix("```") {
                inside = line == "```sh" ? true : false
                continue
            }
            if inside { code.append(line) }
        }
        guard !code.isEmpty else { throw TestKitError("readme-test:\(name) holds no sh block") }
        return code.joined(separator: "\n")
    }

    /// Replaces `text` in `script` (which must contain it, or the README changed under the test).
    static func replace(_ text: String, with replacement: String, in script: inout String) throws {
        guard script.contains(text) else { throw TestKitError("the README's example no longer contains '\(text)'") }
        script = script.replacingOccurrences(of: text, with: replacement)
    }

    @Test("the quickstart and the secrets example work as written, from a clean data dir")
    func quickstartAndSecrets() async throws {
        let scratch = try ScratchDirectory("readme")
        defer {
            for pid in processes(mentioning: scratch.path) { kill(pid, SIGKILL) }
            scratch.remove()
        }
        let readme = try String(contentsOfFile: Binaries.repositoryRoot + "/README.md", encoding: .utf8)
        var script = try Self.block("quickstart", in: readme) + "\n" + Self.block("secrets", in: readme)
        let (lead, gpu1, gpu2) = (try freePort(), try freePort(), try freePort())
        try Self.replace("./bootstrap ", with: ": ", in: &script)
        try Self.replace("$PWD/.build/release", with: Binaries.directory, in: &script)
        try Self.replace("/tmp/aurora", with: scratch.path + "/aurora", in: &script)
        try Self.replace("127.0.0.1:9999", with: "127.0.0.1:\(lead)", in: &script)
        try Self.replace("127.0.0.1:9998", with: "127.0.0.1:\(gpu1)", in: &script)
        try Self.replace("127.0.0.1:9997", with: "127.0.0.1:\(gpu2)", in: &script)
        try Self.replace("events --follow", with: "events --since 0", in: &script)
        // Every agent it starts ends with it (SIGTERM: the lead stops its PostgreSQL too).
        script = "set -euo pipefail\ntrap 'kill $(jobs -p) 2> /dev/null; wait' EXIT\n" + script + "\n"
        let path = scratch.path + "/readme.sh"
        try script.write(toFile: path, atomically: true, encoding: .utf8)

        let key = "sk-readme-\(UInt32.random(in: 0...UInt32.max))"
        let result = try await ChildProcess.run(
            "/bin/bash", [path],
            environment: [
                "OPENAI_KEY": key, "AURORA_TOKEN": nil, "AURORA_LEAD": nil, "AURORA_JOIN_TOKEN": nil,
                "AURORA_DATA_DIR": nil, "AURORA_COMPANY": nil, "AURORA_CONTEXT": nil, "AURORA_AGENT": nil,
                // Its `context add` writes here, not into the user's ~/.config.
                "HOME": scratch.path, "XDG_CONFIG_HOME": scratch.path + "/config",
            ],
            outputDirectory: scratch.path, timeout: .seconds(180))
        #expect(result.code == 0, "\(result.stdout.suffix(1500))\n\(result.stderr.suffix(1500))")
        let lines = result.stdout.split(separator: "\n").map { $0.trimmingCharacters(in: .whitespaces) }
        // The preview on the lead and the read on gpu-1 both print acme's value.
        #expect(lines.filter { $0 == key }.count == 2, "\(result.stdout.suffix(1500))")
        #expect(result.stdout.contains("gpu-2"))
        #expect(result.stdout.contains("node.joined"))
    }
}
