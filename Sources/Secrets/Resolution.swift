/// Where a secret value is set: for every node, for one company, or for one node.
public enum SecretScope: Sendable, Hashable, CustomStringConvertible {
    case global
    case company(String)
    case node(String)

    /// `global`, `company` or `node`: the API's `scope`.
    public var name: String {
        switch self {
        case .global: "global"
        case .company: "company"
        case .node: "node"
        }
    }

    /// The company or node name; empty for global: the API's `scope_id`.
    public var id: String {
        switch self {
        case .global: ""
        case .company(let company): company
        case .node(let node): node
        }
    }

    /// A scope from the API's `scope` and `scope_id`.
    public init(name: String, id: String?) throws(SecretsError) {
        let id = id ?? ""
        // The store cannot hold U+0000 (the audit and the event refuse it).
        guard !id.unicodeScalars.contains("\u{0}") else {
            throw SecretsError(.invalidScope, "scope_id must not contain U+0000")
        }
        switch name {
        case "global":
            guard id.isEmpty else { throw SecretsError(.invalidScope, "scope_id must be empty for the global scope") }
            self = .global
        case "company":
            guard !id.isEmpty else { throw SecretsError(.invalidScope, "scope_id must name the company") }
            self = .company(id)
        case "node":
            guard !id.isEmpty else { throw SecretsError(.invalidScope, "scope_id must name the node") }
            self = .node(id)
        default:
            throw SecretsError(.invalidScope, "scope must be global, company or node, not '\(name)'")
        }
    }

    public var description: String { id.isEmpty ? name : "\(name):\(id)" }
}

/// Which value a node gets: its own override, else its company's, else the global one.
public enum SecretResolution {
    /// The scopes node `node` of company `company` reads, most specific first.
    public static func chain(node: String, company: String) -> [SecretScope] {
        company.isEmpty ? [.node(node), .global] : [.node(node), .company(company), .global]
    }

    /// The winning scope and its value among those that hold the secret, for `node` of
    /// `company`; nil when none applies to it.
    public static func resolve<Value>(_ available: [SecretScope: Value], node: String, company: String) -> (
        scope: SecretScope, value: Value
    )? {
        for scope in chain(node: node, company: company) {
            if let value = available[scope] { return (scope, value) }
        }
        return nil
    }

    /// Whether `node` of `company` may read a value set at `scope`: never another node's
    /// override or another company's value.
    public static func mayRead(_ scope: SecretScope, node: String, company: String) -> Bool {
        chain(node: node, company: company).contains(scope)
    }
}
