// Events (shared/DESIGN.md, Events): every state change, with a UUID and a sequence.

/// A JSON value, for event data whose shape depends on the event type.
public enum JSONValue: Codable, Sendable, Equatable {
    case string(String)
    case number(Double)
    case bool(Bool)
    case array([JSONValue])
    case object([String: JSONValue])
    case null

    public init(from decoder: any Decoder) throws {
        let container = try decoder.singleValueContainer()
        if container.decodeNil() {
            self = .null
        } else if let value = try? container.decode(Bool.self) {
            self = .bool(value)
        } else if let value = try? container.decode(Double.self) {
            self = .number(value)
        } else if let value = try? container.decode(String.self) {
            self = .string(value)
        } else if let value = try? container.decode([JSONValue].self) {
            self = .array(value)
        } else {
            self = .object(try container.decode([String: JSONValue].self))
        }
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.singleValueContainer()
        switch self {
        case .string(let value): try container.encode(value)
        case .number(let value):
            if value == value.rounded(), abs(value) < 1e15 {
                try container.encode(Int64(value))
            } else {
                try container.encode(value)
            }
        case .bool(let value): try container.encode(value)
        case .array(let value): try container.encode(value)
        case .object(let value): try container.encode(value)
        case .null: try container.encodeNil()
        }
    }

    /// The string inside, if this is one.
    public var string: String? {
        if case .string(let value) = self { return value }
        return nil
    }
}

/// Event types of the registry.
public enum EventType {
    public static let nodeJoined = "node.joined"
    /// A standby became the lead (its term's epoch, the old lead).
    public static let leadPromoted = "lead.promoted"
    /// A lead saw a newer term and stopped acknowledging writes.
    public static let leadFenced = "lead.fenced"
    /// An old lead fenced by a newer term came back as a standby of the lead (`POST /api/lead/rejoin`).
    public static let leadRejoined = "lead.rejoined"
    /// The lead's synchronous standby was disconnected too long: recorded ineligible, and the
    /// lead commits without waiting for it (asynchronous replication) until it is back.
    public static let leadStandbyIneligible = "lead.standby_ineligible"
    /// The standby is streaming and caught up again: eligible, and synchronous again.
    public static let leadStandbyEligible = "lead.standby_eligible"
    public static let nodeStateChanged = "node.state_changed"
    public static let nodeLeft = "node.left"
    /// An operator set a node's trusted labels.
    public static let nodeLabelsChanged = "node.labels_changed"
    /// An operator removed a node for good: its record is gone, its name and address are free.
    public static let nodeRemoved = "node.removed"
    /// An operator changed a node's company.
    public static let nodeCompanyChanged = "node.company_changed"
    /// An operator cordoned, drained or reopened a node.
    public static let nodeSchedulingChanged = "node.scheduling_changed"
}

/// One event, as `GET /api/events` sends it in an SSE `data:` line (and Redis later).
public struct MeshEvent: Codable, Sendable, Equatable {
    /// A UUID, unique per event.
    public var id: String
    /// Monotonic across the mesh's store: resume after it with `Last-Event-ID` or `?since=`.
    public var seq: Int64
    public var type: String
    /// ISO 8601.
    public var at: String
    public var node: String?
    public var data: [String: JSONValue]

    public init(id: String, seq: Int64, type: String, at: String, node: String?, data: [String: JSONValue]) {
        self.id = id
        self.seq = seq
        self.type = type
        self.at = at
        self.node = node
        self.data = data
    }
}
