import AuroraAPI
import Foundation
import Testing

@testable import NodeAgent

/// The profiles built into the binary are the files in profiles/, and they are what a
/// `nodeagent` without any profile directory runs with.
@Suite("Built-in profiles")
struct BuiltInProfileTests {
    static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent().deletingLastPathComponent()

    @Test("the built-in profiles are profiles/*.yaml (else run profiles/embed)")
    func sameAsFiles() throws {
        for name in ["lead", "compute", "edge"] {
            let file = try String(
                contentsOf: Self.root.appendingPathComponent("profiles/\(name).yaml"), encoding: .utf8)
            #expect(
                BuiltInProfiles.all[name] == file, "Sources/NodeAgent/Config/BuiltInProfiles/\(name).swift is stale")
        }
    }

    @Test("with no profile directory, lead, compute and edge load from the binary; other names still fail")
    func fallback() throws {
        let scratch = FileManager.default.temporaryDirectory.appendingPathComponent("aurora-profiles-\(UUID())")
        try FileManager.default.createDirectory(at: scratch, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: scratch) }
        let executable = scratch.appendingPathComponent("bin/nodeagent").path
        let installed = FileManager.default.fileExists(atPath: "/etc/aurora/profiles/lead.yaml")
        for name in ["lead", "compute", "edge"] {
            let config = try ConfigLoader.load(
                ConfigLoader.Request(
                    profile: name, profilesDir: scratch.path, configFile: nil,
                    flags: ["data_dir": scratch.appendingPathComponent("data").path, "name": "n1"]),
                environment: [:], executable: executable)
            #expect(config.role.rawValue == name)
            if !installed { #expect(config.profileFile == "built-in:\(name)") }
        }
        let error = #expect(throws: AgentError.self) {
            try ProfileLocator.locate("gpu-box", profilesDir: scratch.path, environment: [:], executable: executable)
        }
        #expect(error?.code == .profileNotFound)
        // A file on disk wins over the built-in profile.
        try "role: compute\nlisten: 127.0.0.1:7123\n".write(
            to: scratch.appendingPathComponent("compute.yaml"), atomically: true, encoding: .utf8)
        let located = try ProfileLocator.locate(
            "compute", profilesDir: scratch.path, environment: [:], executable: executable)
        #expect(located == scratch.appendingPathComponent("compute.yaml").path)
    }
}
