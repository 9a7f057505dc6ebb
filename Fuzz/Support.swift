// Shared by every fuzz target (compiled into each binary next to its one target file): the
// input as text or as a stream of values, and the one way a target reports a broken invariant.

/// The input as the agent would see it: bytes decoded as UTF-8, invalid sequences replaced.
func text(_ start: UnsafeRawPointer, _ count: Int) -> String {
    String(decoding: UnsafeRawBufferPointer(start: start, count: count), as: UTF8.self)
}

/// The input as bytes.
func bytes(_ start: UnsafeRawPointer, _ count: Int) -> [UInt8] {
    Array(UnsafeRawBufferPointer(start: start, count: count))
}

/// Stops the run: libFuzzer saves the input that broke `invariant` as a crash.
func expect(_ condition: Bool, _ invariant: @autoclosure () -> String) {
    if !condition { fatalError("fuzz invariant broken: \(invariant())") }
}

/// Structured values drawn from the input, for targets that build a valid value and check that
/// it survives a round trip. Reads past the end give zeros and empty strings.
struct InputReader {
    private var bytes: ArraySlice<UInt8>

    init(_ bytes: [UInt8]) { self.bytes = bytes[...] }

    var isEmpty: Bool { bytes.isEmpty }

    mutating func byte() -> UInt8 { bytes.popFirst() ?? 0 }

    mutating func integer() -> UInt64 {
        (0..<8).reduce(UInt64(0)) { value, _ in value << 8 | UInt64(byte()) }
    }

    /// A length-prefixed chunk (at most 255 bytes).
    mutating func chunk() -> [UInt8] {
        let count = min(Int(byte()), bytes.count)
        defer { bytes = bytes.dropFirst(count) }
        return Array(bytes.prefix(count))
    }

    /// A length-prefixed string.
    mutating func string() -> String { String(decoding: chunk(), as: UTF8.self) }
}
