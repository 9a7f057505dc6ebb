/// The mesh's names, answered from a registry view (the lead's, or a node's cached copy): the
/// zone every agent's DNS server serves. Pure: a question in, a response code and records out.
///
/// Names under the domain (default `aurora.internal`), all answered with A records of mesh
/// addresses:
/// - `NAME.DOMAIN`: that node;
/// - `lead.DOMAIN`: the current lead (a node named `lead` wins over it);
/// - `ROLE.DOMAIN` (`lead` aside: `compute`, `edge`, `standby`): every node of that role;
/// - `company.C.DOMAIN`: every node of company C;
/// - SRV `_aurora._tcp.DOMAIN`: each node's agent API (its TLS port, else its API port), the
///   target its `NAME.DOMAIN`; `_aurora._tcp.NAME.DOMAIN`: that node's.
///
/// Only nodes that answer count: dead and left ones are in no answer, so they drop out within the
/// failure detector's time. A name under the domain that matches nothing is NXDOMAIN; a known
/// name asked for another type is an empty answer (NODATA). A name outside the domain is
/// REFUSED: this is no open resolver.
public struct MeshZone: Sendable, Equatable {
    public struct Entry: Sendable, Equatable {
        public var name: String
        public var role: String
        public var company: String
        /// The mesh address, host byte order.
        public var address: UInt32
        /// Whether the node answers now (not dead, not left).
        public var live: Bool
        /// The agent API's port (TLS when the node has a TLS listener), for SRV.
        public var apiPort: Int?

        public init(name: String, role: String, company: String, address: UInt32, live: Bool, apiPort: Int?) {
            self.name = name
            self.role = role
            self.company = company
            self.address = address
            self.live = live
            self.apiPort = apiPort
        }
    }

    /// The domain's labels, lower case (`["aurora", "internal"]`).
    public var domain: [String]
    public var entries: [Entry]
    /// The current lead's name, when known.
    public var lead: String?
    /// Seconds answers may be cached: short, so that a dead node drops out quickly.
    public var ttl: UInt32

    /// Live entries by lower-case name, role and company: built once, read by every answer.
    private let byName: [String: Entry]
    private let byRole: [String: [Entry]]
    private let byCompany: [String: [Entry]]
    private let live: [Entry]

    public init(domain: String, entries: [Entry], lead: String?, ttl: UInt32 = 5) {
        self.domain = Self.labels(domain)
        self.entries = entries.sorted { $0.name < $1.name }
        self.lead = lead
        self.ttl = ttl
        let live = self.entries.filter(\.live)
        self.live = live
        byName = Dictionary(live.map { ($0.name.lowercased(), $0) }, uniquingKeysWith: { first, _ in first })
        byRole = Dictionary(grouping: live, by: \.role)
        byCompany = Dictionary(grouping: live.filter { !$0.company.isEmpty }, by: { $0.company.lowercased() })
    }

    public static func == (lhs: MeshZone, rhs: MeshZone) -> Bool {
        lhs.domain == rhs.domain && lhs.entries == rhs.entries && lhs.lead == rhs.lead && lhs.ttl == rhs.ttl
    }

    /// `text` as lower-case labels, without empty ones (a trailing dot).
    public static func labels(_ text: String) -> [String] {
        text.lowercased().split(separator: ".").map(String.init)
    }

    /// The answer to `question`.
    public func answer(_ question: DNSMessage.Question) -> (DNSMessage.ResponseCode, [DNSMessage.Record]) {
        let labels = question.labels
        guard question.dnsClass == 1 || question.dnsClass == 255, labels.count >= domain.count,
            Array(labels.suffix(domain.count)) == domain
        else { return (.refused, []) }
        let relative = Array(labels.dropLast(domain.count))
        guard let matched = match(relative) else { return (.nameError, []) }
        switch DNSMessage.RecordType(rawValue: question.type) {
        case .a, .any:
            guard case .hosts(let hosts) = matched else { return (.noError, []) }
            return (.noError, hosts.map { .a(name: labels, address: $0.address, ttl: ttl) })
        case .srv:
            guard case .services(let hosts) = matched else { return (.noError, []) }
            return (
                .noError,
                hosts.compactMap { host in
                    guard let port = host.apiPort, (1...65535).contains(port) else { return nil }
                    return .srv(
                        name: labels, priority: 0, weight: 0, port: UInt16(port), target: [host.name] + domain,
                        ttl: ttl)
                }
            )
        default:
            return (.noError, [])
        }
    }

    private enum Match {
        case hosts([Entry])
        case services([Entry])
        case apex
    }

    /// What the name relative to the domain stands for; nil when nothing (NXDOMAIN).
    private func match(_ relative: [String]) -> Match? {
        switch relative.count {
        case 0:
            return .apex
        case 1:
            let name = relative[0]
            if let node = byName[name] { return .hosts([node]) }
            if name == "lead" {
                guard let lead, let node = byName[lead.lowercased()] else { return nil }
                return .hosts([node])
            }
            return byRole[name].map { .hosts($0) }
        case 2 where relative[0] == "company":
            return byCompany[relative[1]].map { .hosts($0) }
        case 2 where relative == ["_aurora", "_tcp"]:
            return live.isEmpty ? nil : .services(live)
        case 3 where relative[0] == "_aurora" && relative[1] == "_tcp":
            return byName[relative[2]].map { .services([$0]) }
        default:
            return nil
        }
    }
}
