import ArgumentParser
import AuroraAPI
import AuroraClient

/// Token ids as people type them (``IDPrefix/matchToken(_:among:)``): `jt_3f2a`, `at_91c0`
/// or `3f2a` name the one token whose id starts so.
enum TokenID {
    /// `text` itself when it is a whole id; else the one join or API token whose id starts with
    /// it. No match (exit 3) and several matches are errors naming the prefix (and the candidates).
    static func resolve(_ text: String, with client: AuroraClient) async throws -> String {
        if IDPrefix.isWholeTokenID(text) { return text }
        let shown = TerminalText.safe(String(text.prefix(64)))
        if IDPrefix.matchToken(text, among: []) == .invalid {
            throw ValidationError(
                "'\(shown)' is not a token id or a prefix of one (jt_ or at_ and \(IDPrefix.minimumLength) or more hex digits, or the digits alone)"
            )
        }
        let list = try await client.tokens()
        let ids = list.tokens.map(\.id) + (list.apiTokens ?? []).map(\.id)
        switch IDPrefix.matchToken(text, among: ids) {
        case .one(let id): return id
        case .none, .invalid:
            throw CLIError("no token with an id starting '\(shown)'; 'aurora-cli token list' shows them", exitCode: 3)
        case .several(let ids):
            throw CLIError(PrefixMessage.several(shown, ids.count, "tokens", ids))
        }
    }
}

/// Backup names as people type them (``IDPrefix/matchBackup(_:among:)``): `20250312T10` or
/// `aurora-20250312` name the one backup whose name starts so.
enum BackupName {
    /// `text` itself when it is a whole name (`….dump`); else the one backup on the lead whose
    /// name starts with it. No match (exit 3) and several matches are errors.
    static func resolve(_ text: String, with client: AuroraClient) async throws -> String {
        if text.hasSuffix(".dump") { return text }
        let shown = TerminalText.safe(String(text.prefix(64)))
        if IDPrefix.matchBackup(text, among: []) == .invalid {
            throw ValidationError(
                "'\(shown)' is not a backup's name or a prefix of one (aurora-YYYYMMDDTHHMMSSZ.dump; \(IDPrefix.minimumLength) or more characters of it, 'aurora-' may be left out)"
            )
        }
        switch IDPrefix.matchBackup(text, among: try await client.backups().backups.map(\.file)) {
        case .one(let name): return name
        case .none, .invalid:
            throw CLIError(
                "no backup with a name starting '\(shown)'; 'aurora-cli backup list' shows them", exitCode: 3)
        case .several(let names):
            throw CLIError(PrefixMessage.several(shown, names.count, "backups", names))
        }
    }
}

enum PrefixMessage {
    /// "'3f2a' names 2 tokens; give more of it: a, b".
    static func several(_ shown: String, _ count: Int, _ what: String, _ candidates: [String]) -> String {
        "'\(shown)' names \(count) \(what); give more of it: "
            + candidates.prefix(10).map { TerminalText.safe($0) }.joined(separator: ", ")
            + (candidates.count > 10 ? ", …" : "")
    }
}
