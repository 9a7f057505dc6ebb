/// Text from the mesh made safe for a terminal: a node's name, version, labels or a job's
/// error come from other machines, and an escape sequence in them must not move the cursor,
/// change colours, clear the screen or hide the rest of a line. Every control character is
/// shown as `\u{XX}`; `keepNewlines` keeps line breaks and tabs in free text (a job's output).
public enum TerminalText {
    public static func safe(_ text: String, keepNewlines: Bool = false) -> String {
        guard text.unicodeScalars.contains(where: { isControl($0, keepNewlines: keepNewlines) }) else { return text }
        var out = ""
        for scalar in text.unicodeScalars {
            if isControl(scalar, keepNewlines: keepNewlines) {
                let digits = String(scalar.value, radix: 16, uppercase: true)
                out += "\\u{" + String(repeating: "0", count: max(0, 4 - digits.count)) + digits + "}"
            } else {
                out.unicodeScalars.append(scalar)
            }
        }
        return out
    }

    /// C0, DEL, C1, line and paragraph separators, bidirectional overrides (as InputRules).
    private static func isControl(_ scalar: Unicode.Scalar, keepNewlines: Bool) -> Bool {
        if keepNewlines, scalar == "\n" || scalar == "\t" { return false }
        switch scalar.value {
        case 0x00...0x1F, 0x7F...0x9F, 0x2028, 0x2029, 0x202A...0x202E, 0x2066...0x2069: return true
        default: return false
        }
    }
}
