/// Rules for bytes that come from the network or a file, checked at the edge before anything
/// stores, renders or converts them (STYLE.md 19: trust nothing from the wire).
///
/// Two classes of text:
/// - **identifiers** (names, companies, label keys and values, versions, endpoints, keys):
///   printable, no control character at all (no newline, no escape, no NUL);
/// - **free text** (a prompt, a check's output): any character but NUL, the C0 controls other
///   than tab, newline and carriage return, DEL and the C1 controls (which include the
///   terminal's escape introducers).
public enum InputRules {
    /// Why a text was refused; the message names the field and never repeats the text.
    public static func identifier(_ text: String, field: String, maxBytes: Int = 253) throws(MeshError) {
        guard text.utf8.count <= maxBytes else {
            throw MeshError(.invalidText, "\(field) is longer than \(maxBytes) bytes")
        }
        if let scalar = text.unicodeScalars.first(where: { isControl($0) }) {
            throw MeshError(.invalidText, "\(field) contains a control character (U+\(hex(scalar)))")
        }
    }

    /// Whether `text` is 1-`maxBytes` bytes of ASCII letters, digits and the characters of
    /// `also` (an app's, a company's or a provider's name).
    public static func isPlainName(_ text: String, maxBytes: Int, also: String = "._-") -> Bool {
        let extra = Set(also.utf8)
        return (1...max(1, maxBytes)).contains(text.utf8.count)
            && text.utf8.allSatisfy { byte in
                (byte >= 0x30 && byte <= 0x39) || (byte >= 0x41 && byte <= 0x5A) || (byte >= 0x61 && byte <= 0x7A)
                    || extra.contains(byte)
            }
    }

    /// Free text: newlines and tabs are fine; NUL, escapes and other controls are not.
    public static func freeText(_ text: String, field: String, maxBytes: Int) throws(MeshError) {
        guard text.utf8.count <= maxBytes else {
            throw MeshError(.invalidText, "\(field) is longer than \(maxBytes) bytes")
        }
        if let scalar = text.unicodeScalars.first(where: { isControl($0) && !allowedInFreeText($0) }) {
            throw MeshError(.invalidText, "\(field) contains a control character (U+\(hex(scalar)))")
        }
    }

    /// A label map: at most `maxCount` entries; keys 1-63 bytes of `[A-Za-z0-9._/-]`, values
    /// identifiers of at most 253 bytes.
    public static func labels(_ labels: [String: String], field: String, maxCount: Int = 64) throws(MeshError) {
        guard labels.count <= maxCount else {
            throw MeshError(.tooMany, "\(field) has \(labels.count) entries; at most \(maxCount) are allowed")
        }
        for (key, value) in labels {
            guard (1...63).contains(key.utf8.count),
                key.unicodeScalars.allSatisfy({
                    $0.isASCII && (isAlphanumeric($0) || "._/-".unicodeScalars.contains($0))
                })
            else {
                throw MeshError(
                    .invalidText, "\(field): keys must be 1-63 characters of letters, digits, '.', '_', '/' and '-'")
            }
            try identifier(value, field: "\(field).\(key)")
        }
    }

    /// A host name or address as it may appear in `HOST:PORT`: a DNS name (letters, digits,
    /// '-', '.'), an IPv4 address, or an IPv6 address (hex digits, ':' and '.').
    public static func host(_ host: String) -> Bool {
        guard (1...253).contains(host.utf8.count) else { return false }
        if host.contains(":") {
            return host.unicodeScalars.allSatisfy { $0.isASCII && (isHexDigit($0) || $0 == ":" || $0 == ".") }
        }
        guard host.unicodeScalars.allSatisfy({ $0.isASCII && (isAlphanumeric($0) || $0 == "-" || $0 == ".") }) else {
            return false
        }
        return host.split(separator: ".", omittingEmptySubsequences: false).allSatisfy {
            (1...63).contains($0.utf8.count) && !$0.hasPrefix("-")
        }
    }

    /// C0 (U+0000-U+001F), DEL and C1 (U+0080-U+009F), and the Unicode line and paragraph
    /// separators and bidirectional overrides that make text render other than it reads.
    public static func isControl(_ scalar: Unicode.Scalar) -> Bool {
        switch scalar.value {
        case 0x00...0x1F, 0x7F...0x9F, 0x2028, 0x2029, 0x202A...0x202E, 0x2066...0x2069: true
        default: false
        }
    }

    /// Tab, newline and carriage return.
    public static func allowedInFreeText(_ scalar: Unicode.Scalar) -> Bool {
        scalar == "\t" || scalar == "\n" || scalar == "\r"
    }

    /// Text for a terminal: every control character shown as `\u{XX}`, so a value cannot
    /// move the cursor, change colours or hide itself.
    public static func printable(_ text: String) -> String {
        guard text.unicodeScalars.contains(where: isControl) else { return text }
        var out = ""
        for scalar in text.unicodeScalars {
            if isControl(scalar) { out += "\\u{\(hex(scalar))}" } else { out.unicodeScalars.append(scalar) }
        }
        return out
    }

    private static func hex(_ scalar: Unicode.Scalar) -> String {
        let digits = String(scalar.value, radix: 16, uppercase: true)
        return String(repeating: "0", count: max(0, 4 - digits.count)) + digits
    }

    private static func isAlphanumeric(_ s: Unicode.Scalar) -> Bool {
        ("a"..."z").contains(s) || ("A"..."Z").contains(s) || ("0"..."9").contains(s)
    }

    private static func isHexDigit(_ s: Unicode.Scalar) -> Bool {
        ("a"..."f").contains(s) || ("A"..."F").contains(s) || ("0"..."9").contains(s)
    }
}

/// Range-checked conversions of numbers parsed from input: a `Double` becomes an integer only
/// when it is finite and inside the target's range, so no input can trap a conversion.
public enum CheckedNumber {
    /// `value` as a `UInt64` when it is finite, not negative and below 2^64.
    public static func uint64(_ value: Double) -> UInt64? {
        guard value.isFinite, value >= 0, value < 18_446_744_073_709_551_616.0 else { return nil }
        return UInt64(value)
    }

    /// `value` as an `Int64` when it is finite and within ±2^63.
    public static func int64(_ value: Double) -> Int64? {
        guard value.isFinite, value >= -9_223_372_036_854_775_808.0, value < 9_223_372_036_854_775_808.0 else {
            return nil
        }
        return Int64(value)
    }

    /// `value` as an `Int`, rounded, clamped into `range` (NaN gives the lower bound).
    public static func clamped(_ value: Double, to range: ClosedRange<Int>) -> Int {
        guard !value.isNaN else { return range.lowerBound }
        if value <= Double(range.lowerBound) { return range.lowerBound }
        if value >= Double(range.upperBound) { return range.upperBound }
        return Int(value.rounded())
    }

    /// Whole milliseconds of `seconds` when it is finite and within 0...`maxSeconds`.
    public static func milliseconds(seconds: Double, maxSeconds: Double) -> Int64? {
        guard seconds.isFinite, seconds >= 0, seconds <= maxSeconds else { return nil }
        return int64((seconds * 1000).rounded())
    }
}

extension InputRules {
    /// The first control character that a JSON text carries inside a string, escaped
    /// (`\u0000`, `\b`, `\f`) or raw (DEL, the C1 controls, U+2028/U+2029, bidirectional
    /// overrides), other than tab, newline and carriage return; nil when there is none.
    ///
    /// One pass over the bytes, no allocation: it runs on every request body before decoding.
    /// Raw C0 bytes are not looked for: JSON does not allow them in strings, so the decoder
    /// refuses them.
    public static func controlCharacter(inJSON bytes: [UInt8]) -> Unicode.Scalar? {
        bytes.withUnsafeBufferPointer { controlCharacter(inJSON: $0) }
    }

    /// The same over a buffer (one specialised loop, no generic dispatch per byte).
    public static func controlCharacter(inJSON bytes: UnsafeBufferPointer<UInt8>) -> Unicode.Scalar? {
        var iterator = bytes.makeIterator()
        var previous: (UInt8, UInt8) = (0, 0)
        while let byte = iterator.next() {
            switch byte {
            case UInt8(ascii: "\\"):
                guard let escaped = iterator.next() else { return nil }
                previous = (0, 0)
                switch escaped {
                case UInt8(ascii: "b"): return "\u{8}"
                case UInt8(ascii: "f"): return "\u{C}"
                case UInt8(ascii: "u"):
                    var value: UInt32 = 0
                    for _ in 0..<4 {
                        // the decoder refuses it
                        guard let digit = iterator.next(), let nibble = hexValue(digit) else { return nil }
                        value = value << 4 | UInt32(nibble)
                    }
                    if let scalar = Unicode.Scalar(value), isControl(scalar), !allowedInFreeText(scalar) {
                        return scalar
                    }
                default:
                    continue
                }
            case 0x7F:
                return "\u{7F}"
            case 0x80...0x9F where previous.1 == 0xC2:
                return Unicode.Scalar(UInt32(byte))
            case 0xA8...0xAE where previous == (0xE2, 0x80):
                return Unicode.Scalar(0x2000 | UInt32(byte & 0x3F))
            case 0xA6...0xA9 where previous == (0xE2, 0x81):
                return Unicode.Scalar(0x2040 | UInt32(byte & 0x3F))
            default:
                previous = (previous.1, byte)
                continue
            }
            previous = (previous.1, byte)
        }
        return nil
    }

    private static func hexValue(_ byte: UInt8) -> UInt8? {
        switch byte {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): byte - UInt8(ascii: "0")
        case UInt8(ascii: "a")...UInt8(ascii: "f"): byte - UInt8(ascii: "a") + 10
        case UInt8(ascii: "A")...UInt8(ascii: "F"): byte - UInt8(ascii: "A") + 10
        default: nil
        }
    }

    /// Free text made safe to pass on: every control character other than tab, newline and
    /// carriage return becomes `\u{XX}`. For what a node relays from a program or a backend
    /// (an exec job's output, a model's answer) before it crosses the mesh.
    public static func sanitizedFreeText(_ text: String) -> String {
        guard text.unicodeScalars.contains(where: { isControl($0) && !allowedInFreeText($0) }) else { return text }
        var out = ""
        out.unicodeScalars.reserveCapacity(text.unicodeScalars.count)
        for scalar in text.unicodeScalars {
            if isControl(scalar), !allowedInFreeText(scalar) {
                out += "\\u{\(hex(scalar))}"
            } else {
                out.unicodeScalars.append(scalar)
            }
        }
        return out
    }
}
