import AuroraClient
import Testing

@Suite("Job id prefixes")
struct IDPrefixTests {
    static let ids = [
        "03014b35-1111-4000-8000-000000000001", "03014b99-2222-4000-8000-000000000002",
        "7f00aa10-3333-4000-8000-000000000003",
    ]

    @Test("a unique prefix names its id; a shared one names the candidates; none and nonsense are told apart")
    func matching() {
        #expect(IDPrefix.match("03014b35", among: Self.ids) == .one(Self.ids[0]))
        #expect(IDPrefix.match("7F00", among: Self.ids) == .one(Self.ids[2]))
        #expect(IDPrefix.match("0301", among: Self.ids) == .several([Self.ids[0], Self.ids[1]]))
        #expect(IDPrefix.match(Self.ids[1], among: Self.ids) == .one(Self.ids[1]))
        #expect(IDPrefix.match("abcd", among: Self.ids) == .none)
        for bad in ["", "030", "0301x", "03014b35; rm -rf /", String(repeating: "a", count: 37), "../.."] {
            #expect(IDPrefix.match(bad, among: Self.ids) == .invalid, "\(bad)")
        }
        #expect(IDPrefix.isWholeID(Self.ids[0]))
        #expect(!IDPrefix.isWholeID("03014b35"))
    }
}
