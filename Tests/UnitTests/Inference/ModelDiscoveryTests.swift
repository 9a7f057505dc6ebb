import AuroraAPI
import Foundation
import Logging
import Testing

@testable import NodeAgent

/// What a node makes of its backend's model listings (hostile input), the profile's renames and
/// additions, and how the mesh's list is built from the nodes' reports.
@Suite("Model discovery (pure)")
struct ModelDiscoveryTests {
    static func bytes(_ text: String) -> [UInt8] { Array(text.utf8) }

    @Test("Ollama's /api/tags and /api/ps and OpenAI's /v1/models are read; anything else is not a listing")
    func listings() {
        let tags = #"{"models":[{"name":"llama3:8b","size":1},{"name":"qwen2:7b"},{"model":"nameless"}]}"#
        #expect(ModelDiscovery.ollamaNames(Self.bytes(tags)) == ["llama3:8b", "qwen2:7b"])
        #expect(
            ModelDiscovery.openAINames(Self.bytes(#"{"object":"list","data":[{"id":"mistral-7b"}]}"#)) == ["mistral-7b"]
        )
        for bad in ["", "[]", "null", #"{"models":"x"}"#, "<html>", #"{"data":7}"#] {
            #expect(ModelDiscovery.ollamaNames(Self.bytes(bad)) == nil, "\(bad)")
            #expect(ModelDiscovery.openAINames(Self.bytes(bad)) == nil, "\(bad)")
        }
        #expect(ModelDiscovery.ollamaNames(Self.bytes(#"{"models":[]}"#)) == [])
    }

    @Test("a hostile backend's names: control characters, empty, oversized and repeated names are dropped; at most 256")
    func hostileNames() {
        let names = ["ok", "", "bad\u{1B}[2J", "nul\u{0}", String(repeating: "x", count: 201), "ok", "fine"]
        #expect(ModelDiscovery.valid(names) == ["ok", "fine"])
        #expect(ModelDiscovery.valid((0..<1000).map { "m\($0)" }).count == 256)
        let escaped = #"{"models":[{"name":"a\u001b]0;owned\u0007"},{"name":"b"}]}"#
        #expect(ModelDiscovery.ollamaNames(Self.bytes(escaped)) == ["b"])
    }

    @Test("gpu.models renames a listed model and adds one the backend does not list (not loaded)")
    func profileNames() {
        let served = ModelDiscovery.served(
            listed: ["llama3:8b-instruct", "qwen2:7b"], loaded: ["llama3:8b-instruct"],
            names: ["llama3": "llama3:8b-instruct", "big": "llama3:70b"])
        #expect(
            served == [
                ServedModel(name: "llama3", backendName: "llama3:8b-instruct", loaded: true),
                ServedModel(name: "qwen2:7b", loaded: false),
                ServedModel(name: "big", backendName: "llama3:70b", loaded: false),
            ])
        // An OpenAI-style server serves what it lists: loaded.
        #expect(ModelDiscovery.served(listed: ["m"], loaded: nil, names: [:]) == [ServedModel(name: "m", loaded: true)])
        // A rename onto a name the backend also lists keeps one model of that name.
        #expect(ModelDiscovery.served(listed: ["a", "b"], loaded: nil, names: ["b": "a"]).map(\.name) == ["b"])
    }

    @Test("a gpu.models entry that is not a model name stops the start with one line naming it")
    func badProfileNames() throws {
        #expect(throws: AgentError.self) {
            try ModelDiscovery(backend: "http://127.0.0.1:11434", names: ["ok": "bad\u{7}"], logger: .init(label: "t"))
        }
        #expect(throws: AgentError.self) {
            try ModelDiscovery(backend: "http://127.0.0.1:11434", names: ["": "x"], logger: .init(label: "t"))
        }
        let ollama = try ModelDiscovery(
            backend: "http://127.0.0.1:11434/api/generate", names: [:], logger: .init(label: "t"))
        #expect(ollama.origin == "http://127.0.0.1:11434" && ollama.ollama == true)
        let vllm = try ModelDiscovery(backend: "http://[::1]:8000/v1", names: [:], logger: .init(label: "t"))
        #expect(vllm.origin == "http://[::1]:8000" && vllm.ollama == false)
    }

    @Test("the mesh's list: alive and suspect nodes only, by model, loaded nodes first")
    func meshList() {
        func node(_ name: String, _ state: NodeState, _ models: [ServedModel]?) -> Node {
            var capabilities = Capabilities(cpuCores: 1, memoryMB: 1, os: "l", arch: "x", gpus: [])
            capabilities.models = models
            return Node(
                name: name, role: .compute, company: "", vpnIP: "10.0.0.2", state: state, lastSeen: "", labels: [:],
                wireguard: WireGuardPeer(publicKey: "k", listenPort: 1), capabilities: capabilities, version: "",
                address: nil, joinedAt: "", signPublicKey: "", boxPublicKey: "")
        }
        let list = ModelList.mesh([
            node("b", .alive, [ServedModel(name: "llama3", loaded: false), ServedModel(name: "qwen", loaded: true)]),
            node("a", .suspect, [ServedModel(name: "llama3", loaded: false)]),
            node("c", .alive, [ServedModel(name: "llama3", loaded: true)]),
            node("d", .dead, [ServedModel(name: "gone", loaded: true)]),
            node("e", .alive, nil),
        ])
        #expect(list.object == "list")
        #expect(list.data.map(\.id) == ["llama3", "qwen"])
        #expect(list.data[0].nodes.map(\.node) == ["c", "a", "b"])
        #expect(list.data[0].object == "model" && list.data[0].ownedBy == "aurora")
    }
}

/// Where an ephemeral (gateway) job's end waits for its waiter: bounded in number and time.
@Suite("Ephemeral job ends")
struct EphemeralEndsTests {
    static func job(_ id: String) -> Job {
        Job(
            id: id, kind: .generate, priority: 5, state: .succeeded, attempt: 1, maxAttempts: 3,
            requirements: JobRequirements(), submittedAt: "2026-12-01T00:00:00Z")
    }

    @Test("kept for 60 s, at most 1024, the oldest going first")
    func bounded() {
        var ends = EphemeralEnds()
        let start = ContinuousClock.now
        ends.keep(Self.job("a"), now: start)
        #expect(ends.job("a", now: start + .seconds(59))?.id == "a")
        #expect(ends.job("a", now: start + .seconds(61)) == nil)
        #expect(ends.job("nope", now: start) == nil)
        for index in 0..<1100 { ends.keep(Self.job("j\(index)"), now: start + .seconds(1)) }
        #expect(ends.job("j0", now: start + .seconds(2)) == nil)
        #expect(ends.job("j75", now: start + .seconds(2)) == nil)
        #expect(ends.job("j76", now: start + .seconds(2))?.id == "j76")
        #expect(ends.job("j1099", now: start + .seconds(2))?.id == "j1099")
    }
}
