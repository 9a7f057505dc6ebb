import AuroraAPI
import Foundation
import Logging
import Testing

@testable import NodeAgent

/// GPU sampling with a fake `nvidia-smi`: the first sample is waited for by every caller at
/// once; a later one never holds up a caller, not even when `nvidia-smi` hangs.
@Suite("GPU inventory from nvidia-smi")
struct InventoryTests {
    static let line = "0, GPU-cccc, NVIDIA A100-SXM4-80GB, 81920, 1024, 5"

    static func config() throws -> NodeConfig {
        NodeConfig(
            resolved: try ResolvedConfig.resolve(
                ConfigInputs(
                    profile: try ConfigFile.parse("role: compute\ndata_dir: /d\n", file: "p.yaml", kind: .profile),
                    hostName: "h", workingDirectory: "/")),
            profileFile: "p.yaml")
    }

    /// An executable shell script in a fresh directory; returns its path.
    static func script(_ body: String) throws -> (path: String, directory: String) {
        let directory = NSTemporaryDirectory() + "inventory-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        let path = directory + "/nvidia-smi"
        try ("#!/bin/sh\n" + body + "\n").write(toFile: path, atomically: true, encoding: .utf8)
        chmod(path, 0o755)
        return (path, directory)
    }

    @Test("callers beside the first sample all get its GPUs, not an empty list")
    func firstSampleIsShared() async throws {
        let fake = try Self.script("sleep 0.5; echo \"\(Self.line)\"")
        defer { try? FileManager.default.removeItem(atPath: fake.directory) }
        let inventory = Inventory(
            config: try Self.config(), logger: Logger(label: "test"), nvidiaSMI: fake.path, gpuRefresh: .seconds(60))
        let names = await withTaskGroup(of: [String].self) { group in
            for _ in 0..<8 { group.addTask { await inventory.capabilities().gpus.map(\.name) } }
            return await group.reduce(into: [[String]]()) { $0.append($1) }
        }
        #expect(names.count == 8 && names.allSatisfy { $0 == ["NVIDIA A100-SXM4-80GB"] }, "\(names)")
    }

    @Test("a hung nvidia-smi: the first sample ends at its timeout; later ones keep the last sample at once")
    func hungSample() async throws {
        let flag = NSTemporaryDirectory() + "inventory-hang-\(UUID().uuidString)"
        defer { try? FileManager.default.removeItem(atPath: flag) }
        // Answers while the flag file is absent, hangs once it exists.
        let fake = try Self.script("if [ -e \(flag) ]; then exec sleep 60; fi\necho \"\(Self.line)\"")
        defer { try? FileManager.default.removeItem(atPath: fake.directory) }
        let inventory = Inventory(
            config: try Self.config(), logger: Logger(label: "test"), nvidiaSMI: fake.path,
            gpuRefresh: .milliseconds(100), smiTimeout: .seconds(5))
        #expect(await inventory.capabilities().gpus.map(\.uuid) == ["GPU-cccc"])

        // nvidia-smi hangs from now on: every call still answers at once with the last sample,
        // while a run is stuck for up to 5 s beside them.
        FileManager.default.createFile(atPath: flag, contents: Data())
        for _ in 0..<5 {
            try await Task.sleep(for: .milliseconds(150))  // past the refresh: each call wants a new sample
            let start = ContinuousClock.now
            #expect(await inventory.capabilities().gpus.map(\.uuid) == ["GPU-cccc"])
            #expect(start.duration(to: .now) < .seconds(2), "a caller waited for the hung nvidia-smi")
        }

        // A fresh inventory whose very first run hangs: it ends at the timeout, with no GPUs.
        let stuck = Inventory(
            config: try Self.config(), logger: Logger(label: "test"), nvidiaSMI: fake.path, smiTimeout: .seconds(1))
        let stuckStart = ContinuousClock.now
        #expect(await stuck.capabilities().gpus.isEmpty)
        #expect(stuckStart.duration(to: .now) < .seconds(20), "the first sample did not end at its timeout")
    }
}
