/// One model a node's inference backend serves (in ``Capabilities/models``).
public struct ServedModel: Codable, Sendable, Equatable, Hashable {
    /// The name the mesh routes by: the backend's own, or the one the profile gives it (`gpu.models`).
    public var name: String
    /// The backend's name for it, when the profile renamed or added it.
    public var backendName: String?
    /// In the backend's memory now (Ollama's `/api/ps`; every model an OpenAI-style server lists):
    /// a request for it starts at once, without loading.
    public var loaded: Bool

    public init(name: String, backendName: String? = nil, loaded: Bool) {
        self.name = name
        self.backendName = backendName
        self.loaded = loaded
    }

    enum CodingKeys: String, CodingKey {
        case name, loaded
        case backendName = "backend_name"
    }
}

/// `GET /v1/models`: the mesh's models in OpenAI's list shape, each with the nodes that serve it.
public struct ModelList: Codable, Sendable, Equatable {
    /// One model (OpenAI's `model` object) and where it lives.
    public struct Model: Codable, Sendable, Equatable {
        public var id: String
        public var object: String
        /// OpenAI's field; the mesh does not know when a model was made: 0.
        public var created: Int
        public var ownedBy: String
        /// The alive nodes whose backend serves it, those that have it loaded first.
        public var nodes: [Placement]

        public init(id: String, nodes: [Placement]) {
            self.id = id
            self.object = "model"
            self.created = 0
            self.ownedBy = "aurora"
            self.nodes = nodes
        }

        enum CodingKeys: String, CodingKey {
            case id, object, created, nodes
            case ownedBy = "owned_by"
        }
    }

    /// A node that serves a model.
    public struct Placement: Codable, Sendable, Equatable {
        public var node: String
        public var loaded: Bool

        public init(node: String, loaded: Bool) {
            self.node = node
            self.loaded = loaded
        }
    }

    public var object: String
    public var data: [Model]
    /// True when the answering agent built the list from its cached registry (the lead is away).
    public var stale: Bool?

    public init(data: [Model], stale: Bool? = nil) {
        self.object = "list"
        self.data = data
        self.stale = stale
    }

    /// The models of every alive (or suspect) node that serves some, by name; for each, the
    /// nodes with it loaded first, then by name. Dead, left and removed nodes serve nothing.
    public static func mesh(_ nodes: [Node], stale: Bool? = nil) -> ModelList {
        var placements: [String: [Placement]] = [:]
        for node in nodes where node.state == .alive || node.state == .suspect {
            for model in node.capabilities.models ?? [] {
                placements[model.name, default: []].append(Placement(node: node.name, loaded: model.loaded))
            }
        }
        return ModelList(
            data: placements.keys.sorted().map { name in
                Model(
                    id: name,
                    nodes: placements[name]!.sorted {
                        $0.loaded != $1.loaded ? $0.loaded : $0.node < $1.node
                    })
            }, stale: stale)
    }
}

/// The OpenAI-style calls the gateway passes through to a node's backend unchanged (but for
/// the model's name there): a `generate` job's `payload.openai` is `{path, body}`.
public enum OpenAIPassthrough {
    public static let paths = ["/v1/chat/completions", "/v1/completions", "/v1/embeddings"]
}
