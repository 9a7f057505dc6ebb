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

@Suite("Token id and backup name prefixes")
struct TypedPrefixTests {
    static let tokens = ["jt_3f2a00112233", "jt_3f2b44556677", "at_3f2a99887766", "at_c0ffee001122"]
    static let backups = [
        "aurora-20250312T104500Z.dump", "aurora-20250312T114500Z.dump", "aurora-20250401T000000Z.dump",
    ]

    @Test("token ids: the kind and 4+ hex digits, or the digits alone (either kind); shared prefixes list candidates")
    func tokens() {
        #expect(IDPrefix.matchToken("jt_3f2a", among: Self.tokens) == .one("jt_3f2a00112233"))
        #expect(IDPrefix.matchToken("AT_3F2A", among: Self.tokens) == .one("at_3f2a99887766"))
        #expect(IDPrefix.matchToken("c0ff", among: Self.tokens) == .one("at_c0ffee001122"))
        #expect(IDPrefix.matchToken("3f2a", among: Self.tokens) == .several(["jt_3f2a00112233", "at_3f2a99887766"]))
        #expect(IDPrefix.matchToken("jt_3f2", among: Self.tokens) == .invalid)
        #expect(IDPrefix.matchToken("dead", among: Self.tokens) == .none)
        for bad in ["", "jt_", "3f2", "jt_3f2a001122334", "xx_3f2a", "3f2a;", "jt_3f2g"] {
            #expect(IDPrefix.matchToken(bad, among: Self.tokens) == .invalid, "\(bad)")
        }
        #expect(IDPrefix.isWholeTokenID("jt_3f2a00112233"))
        #expect(!IDPrefix.isWholeTokenID("jt_3f2a"))
        #expect(!IDPrefix.isWholeTokenID("jt_3F2A00112233"))
    }

    @Test("backup names: 4+ characters, with or without 'aurora-'; a whole name wins over longer ones")
    func backups() {
        #expect(IDPrefix.matchBackup("20250401", among: Self.backups) == .one(Self.backups[2]))
        #expect(IDPrefix.matchBackup("aurora-20250312t11", among: Self.backups) == .one(Self.backups[1]))
        #expect(IDPrefix.matchBackup("20250312", among: Self.backups) == .several(Array(Self.backups.prefix(2))))
        #expect(IDPrefix.matchBackup("2024", among: Self.backups) == .none)
        for bad in ["", "aurora-", "202", "../x", "2025 03", "2025/03"] {
            #expect(IDPrefix.matchBackup(bad, among: Self.backups) == .invalid, "\(bad)")
        }
    }
}
