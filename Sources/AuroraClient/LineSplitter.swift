/// Splits bytes into lines ended by LF, CRLF or CR (a CRLF split across two chunks counts once),
/// and refuses a line longer than `maxLineBytes` before it is held in full: a hostile server
/// cannot make the client buffer without bound. Both stream parsers read through it.
struct LineSplitter {
    let maxLineBytes: Int
    private var line: [UInt8] = []
    private var afterCR = false

    init(maxLineBytes: Int) {
        self.maxLineBytes = maxLineBytes
    }

    /// Appends `bytes` and returns the lines they complete, without their ends.
    mutating func append(_ bytes: some Sequence<UInt8>) throws(AuroraClientError) -> [[UInt8]] {
        var lines: [[UInt8]] = []
        for byte in bytes {
            if afterCR {
                afterCR = false
                if byte == UInt8(ascii: "\n") { continue }
            }
            switch byte {
            case UInt8(ascii: "\n"):
                lines.append(line)
                line.removeAll(keepingCapacity: true)
            case UInt8(ascii: "\r"):
                lines.append(line)
                line.removeAll(keepingCapacity: true)
                afterCR = true
            default:
                guard line.count < maxLineBytes else {
                    throw AuroraClientError(.lineTooLong, "the stream sent a line longer than \(maxLineBytes) bytes")
                }
                line.append(byte)
            }
        }
        return lines
    }

    /// At the end of the stream: the last line when it had no end, else nil.
    mutating func finish() -> [UInt8]? {
        defer { line = [] }
        return line.isEmpty ? nil : line
    }
}
