import Mesh
import Testing

/// The join rules without a store or a process: company from the token, names held by keys,
/// rejoins keeping the operator's labels and the address, allocation around live and removed nodes.
@Suite("Join rules (pure node book)")
struct JoinRulesTests {
    let grant = JoinRules.Grant(id: "tok-1", company: "acme", labels: ["zone": "eu"])
    let allocator = AddressAllocator(network: try! IPv4Network(parsing: "10.0.0.0/24"))

    func identity(
        name: String = "gpu-1", key: String = "KEY-A", company: String? = nil, requested: String? = nil,
        grant: JoinRules.Grant? = nil, holder: JoinRules.Holder? = nil
    ) throws(MeshError) -> JoinRules.Identity {
        try JoinRules.identity(
            name: name, signPublicKey: key, claimedCompany: company, requested: requested.flatMap(IPv4Network.parse),
            grant: grant ?? self.grant, holder: holder, leadName: "lead-1")
    }

    @Test("a first join gets the token's company and labels and no kept address; claiming the same company is fine")
    func firstJoin() throws {
        let fresh = try identity()
        #expect(
            fresh
                == JoinRules.Identity(
                    company: "acme", labels: ["zone": "eu"], rejoin: false, keptAddress: nil, keptJoinedAt: nil))
        #expect(try identity(company: "acme").company == "acme")
        #expect(try identity(company: "").company == "acme", "an empty claim is no claim")
    }

    @Test("a node cannot choose another company than its token's, nor any when the token sets none")
    func companyFromToken() {
        let other = #expect(throws: MeshError.self) { try identity(company: "globex") }
        #expect(other?.code == .forbidden && other?.message.contains("is for company 'acme'") == true)
        let none = #expect(throws: MeshError.self) {
            try identity(company: "globex", grant: JoinRules.Grant(id: "tok-2", company: "", labels: [:]))
        }
        #expect(none?.code == .forbidden && none?.message.contains("sets no company") == true)
    }

    @Test("the company is checked before the name: a company claim on a taken name is forbidden, not name_taken")
    func companyBeforeName() {
        let holder = JoinRules.Holder(
            signPublicKey: "KEY-B", removed: false, vpnIP: "10.0.0.2", joinedAt: nil, labels: nil)
        let error = #expect(throws: MeshError.self) { try identity(company: "globex", holder: holder) }
        #expect(error?.code == .forbidden)
    }

    @Test("another key holds the name: refused while it is live; free once removed; the lead's name never")
    func nameHeldByKey() throws {
        let live = JoinRules.Holder(
            signPublicKey: "KEY-B", removed: false, vpnIP: "10.0.0.2", joinedAt: "t0", labels: nil)
        let taken = #expect(throws: MeshError.self) { try identity(holder: live) }
        #expect(taken?.code == .nameTaken && taken?.message.contains("'gpu-1'") == true)
        var removed = live
        removed.removed = true
        let reused = try identity(holder: removed)
        #expect(
            !reused.rejoin && reused.keptAddress == "10.0.0.2" && reused.keptJoinedAt == nil,
            "a new key on a removed name keeps its address but not its join time")
        let lead = #expect(throws: MeshError.self) { try identity(name: "lead-1", holder: removed) }
        #expect(lead?.code == .nameTaken)
    }

    @Test(
        "the same key joining again is a rejoin: the operator's labels win over the token's, the address and join time are kept"
    )
    func rejoin() throws {
        let holder = JoinRules.Holder(
            signPublicKey: "KEY-A", removed: false, vpnIP: "10.0.0.7", joinedAt: "2026-01-01T00:00:00Z",
            labels: ["zone": "us", "rack": "r2"])
        let again = try identity(holder: holder)
        #expect(again.rejoin && again.labels == ["zone": "us", "rack": "r2"])
        #expect(again.keptAddress == "10.0.0.7" && again.keptJoinedAt == "2026-01-01T00:00:00Z")
        #expect(
            try identity(requested: "10.0.0.7", holder: holder).keptAddress == "10.0.0.7",
            "asking for its own address keeps it")
        let moved = try identity(requested: "10.0.0.9", holder: holder)
        #expect(moved.keptAddress == nil && moved.rejoin, "asking for another address allocates it")
    }

    @Test("the same key after a removal is no rejoin: the token's labels only")
    func sameKeyAfterRemoval() throws {
        let holder = JoinRules.Holder(
            signPublicKey: "KEY-A", removed: true, vpnIP: "", joinedAt: "t0", labels: ["zone": "us"])
        let back = try identity(holder: holder)
        #expect(
            !back.rejoin && back.labels == ["zone": "eu"] && back.keptAddress == nil,
            "an address it let go of is not kept")
    }

    @Test(
        "allocation skips the lead, live nodes and removed nodes within grace; reclaims after grace; names the address in errors"
    )
    func allocation() throws {
        let others = [
            JoinRules.AddressHolder(node: "a", vpnIP: "10.0.0.2", removed: false, removedAgoS: 0),
            JoinRules.AddressHolder(node: "b", vpnIP: "10.0.0.3", removed: true, removedAgoS: 100),
            JoinRules.AddressHolder(node: "c", vpnIP: "10.0.0.4", removed: true, removedAgoS: 900),
            JoinRules.AddressHolder(node: "junk", vpnIP: "not-an-ip", removed: false, removedAgoS: 0),
        ]
        let first = try JoinRules.address(requested: nil, others: others, allocator: allocator, grace: 600)
        #expect(IPv4Network.format(first.address) == "10.0.0.4" && first.reclaimed == "c")
        let within = try JoinRules.address(requested: nil, others: others, allocator: allocator, grace: 3600)
        #expect(IPv4Network.format(within.address) == "10.0.0.5" && within.reclaimed == nil)
        let live = #expect(throws: MeshError.self) {
            try JoinRules.address(
                requested: IPv4Network.parse("10.0.0.2"), others: others, allocator: allocator, grace: 600)
        }
        #expect(live?.code == .addressTaken && live?.message.hasPrefix("vpn_ip: ") == true)
        let held = #expect(throws: MeshError.self) {
            try JoinRules.address(
                requested: IPv4Network.parse("10.0.0.3"), others: others, allocator: allocator, grace: 600)
        }
        #expect(held?.code == .addressTaken && held?.message.contains("'b'") == true)
        let lead = #expect(throws: MeshError.self) {
            try JoinRules.address(
                requested: IPv4Network.parse("10.0.0.1"), others: [], allocator: allocator, grace: 600)
        }
        #expect(lead?.code == .addressTaken)
        let outside = #expect(throws: MeshError.self) {
            try JoinRules.address(
                requested: IPv4Network.parse("192.168.1.1"), others: [], allocator: allocator, grace: 600)
        }
        #expect(outside?.code == .invalidAddress)
    }
}
