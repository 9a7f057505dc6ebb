import AsyncAlgorithms
import AsyncHTTPClient
import AuroraAPI
import Foundation
import Logging
import Mesh
import NIOCore
import NIOHTTP1
import ServiceLifecycle
import Synchronization

/// What this node's inference backend (`gpu.backend`) serves, asked every 15 s and reported in
/// ``Capabilities/models`` (so it reaches the lead only when it changes).
///
/// An Ollama server is asked `/api/tags` (what it has) and `/api/ps` (what it has loaded); any
/// other server OpenAI's `/v1/models` (all of them counted as loaded). The profile's `gpu.models`
/// (mesh name → backend name) renames a listed model or adds one the backend does not list.
/// Everything the backend answers is hostile input: at most 256 models, names of 1–200 bytes
/// without control characters; other entries are dropped. A backend that does not answer (or
/// answers something unreadable) keeps its last list through two more asks, then serves nothing
/// until it answers again.
final class ModelDiscovery: Service, Sendable {
    static let maxModels = 256
    static let maxNameBytes = 200
    static let interval = Duration.seconds(15)

    /// `scheme://host:port` of `gpu.backend`.
    let origin: String
    /// The backend speaks Ollama's API (its URL's path starts with `/api/`); nil: not known, try Ollama first.
    let ollama: Bool?
    let names: [String: String]
    private let current = Mutex<[ServedModel]?>(nil)
    /// Asks in a row the backend did not answer.
    private let misses = Mutex(0)
    private let logger: Logger

    /// Throws ``AgentError`` (`config`) for a `gpu.models` entry that is not a model name.
    init(backend: String, names: [String: String], logger: Logger) throws(AgentError) {
        guard let origin = InferenceCall.origin(of: backend), let url = URL(string: backend) else {
            throw AgentError(.config, "gpu.backend is not a URL")
        }
        self.origin = origin
        self.ollama = url.path.hasPrefix("/api/") ? true : (url.path.hasPrefix("/v1") ? false : nil)
        for (mesh, backend) in names {
            do throws(MeshError) {
                try Self.checkName(mesh, field: "gpu.models key '\(InputRules.printable(mesh))'")
                try Self.checkName(backend, field: "gpu.models['\(InputRules.printable(mesh))']")
            } catch {
                throw AgentError(.config, error.message)
            }
        }
        self.names = names
        var logger = logger
        logger[metadataKey: "nodeagent.subsystem"] = "models"
        self.logger = logger
    }

    static func checkName(_ name: String, field: String) throws(MeshError) {
        guard !name.isEmpty else { throw MeshError(.invalidName, "\(field) is empty") }
        try InputRules.identifier(name, field: field, maxBytes: maxNameBytes)
    }

    /// The last list (nil until the backend first answered).
    var models: [ServedModel]? { current.withLock { $0 } }

    func run() async throws {
        await refresh()
        for await _ in AsyncTimerSequence(interval: Self.interval, clock: .continuous).cancelOnGracefulShutdown() {
            await refresh()
        }
    }

    /// Asks the backend once and keeps what it said.
    func refresh() async {
        let listed: (names: [String], loaded: Set<String>?)?
        if ollama != false, let tags = await fetch("/api/tags").flatMap(Self.ollamaNames) {
            listed = (tags, Set(await fetch("/api/ps").flatMap(Self.ollamaNames) ?? []))
        } else if ollama != true, let served = await fetch("/v1/models").flatMap(Self.openAINames) {
            listed = (served, nil)
        } else {
            listed = nil
        }
        let models: [ServedModel]
        if let listed {
            misses.withLock { $0 = 0 }
            models = Self.served(listed: listed.names, loaded: listed.loaded, names: names)
        } else {
            let missed = misses.withLock { count in
                count += 1
                return count
            }
            guard missed >= 3, self.models?.isEmpty == false else { return }
            models = []
        }
        let previous = current.withLock { state in
            defer { state = models }
            return state
        }
        if previous != models {
            logger.info(
                "the backend's models changed",
                metadata: ["nodeagent.models": "\(models.map(\.name).joined(separator: ","))"])
        }
    }

    private func fetch(_ path: String) async -> [UInt8]? {
        let request = HTTPClientRequest(url: origin + path)
        do {
            let response = try await HTTPClient.shared.execute(request, timeout: .seconds(5))
            let body = try await response.body.collect(upTo: 4 << 20)
            guard response.status == .ok else { return nil }
            return Array(body.readableBytesView)
        } catch {
            logger.debug("the backend did not answer", metadata: ["nodeagent.path": "\(path)"])
            return nil
        }
    }

    // MARK: Pure parts

    private struct OllamaList: Decodable {
        struct Entry: Decodable { var name: String? }
        var models: [Entry]?
    }

    private struct OpenAIList: Decodable {
        struct Entry: Decodable { var id: String? }
        var data: [Entry]?
    }

    /// The names in an Ollama `/api/tags` or `/api/ps` answer; nil when it is not one.
    static func ollamaNames(_ bytes: [UInt8]) -> [String]? {
        guard let list = try? JSONDecoder().decode(OllamaList.self, from: Data(bytes)), let models = list.models
        else { return nil }
        return valid(models.compactMap(\.name))
    }

    /// The ids in an OpenAI-style `/v1/models` answer; nil when it is not one.
    static func openAINames(_ bytes: [UInt8]) -> [String]? {
        guard let list = try? JSONDecoder().decode(OpenAIList.self, from: Data(bytes)), let data = list.data
        else { return nil }
        return valid(data.compactMap(\.id))
    }

    /// The usable names, in order, without repeats: at most ``maxModels``.
    static func valid(_ names: [String]) -> [String] {
        var seen = Set<String>()
        return Array(
            names.filter { name in
                (try? checkName(name, field: "model")) != nil && seen.insert(name).inserted
            }.prefix(maxModels))
    }

    /// The models as the mesh names them: each listed one under its profile name (or its own),
    /// then each profile entry whose backend name the backend does not list (added, not loaded).
    /// `loaded` nil: every listed model is loaded (an OpenAI-style server serves what it lists).
    static func served(listed: [String], loaded: Set<String>?, names: [String: String]) -> [ServedModel] {
        var meshName: [String: String] = [:]
        for (mesh, backend) in names.sorted(by: { $0.key < $1.key }) where meshName[backend] == nil {
            meshName[backend] = mesh
        }
        var models: [ServedModel] = []
        var taken = Set<String>()
        for backend in listed {
            let name = meshName[backend] ?? backend
            guard taken.insert(name).inserted else { continue }
            models.append(
                ServedModel(
                    name: name, backendName: name == backend ? nil : backend,
                    loaded: loaded.map { $0.contains(backend) } ?? true))
        }
        let listedSet = Set(listed)
        for (mesh, backend) in names.sorted(by: { $0.key < $1.key }) where !listedSet.contains(backend) {
            guard taken.insert(mesh).inserted else { continue }
            models.append(ServedModel(name: mesh, backendName: backend, loaded: false))
        }
        return Array(models.prefix(maxModels))
    }
}
