import AuroraAPI
import Foundation
import NIOCore

/// The values of a newline-delimited JSON (`application/x-ndjson`) body, decoded as `Value`
/// one line at a time as the chunks arrive. Blank lines are skipped; a last line without a
/// newline is decoded too. A line that is not a `Value` (or a last line cut off in the middle)
/// ends the sequence with ``AuroraClientError/Code/undecodable``, and a line longer than
/// `maxLineBytes` with ``AuroraClientError/Code/lineTooLong``.
public struct NDJSONLines<Base: AsyncSequence, Value: Decodable>: AsyncSequence where Base.Element == ByteBuffer {
    public typealias Element = Value

    let base: Base
    let maxLineBytes: Int

    /// `Value`s read from `base`, a body's chunks.
    public init(_ base: Base, as type: Value.Type = Value.self, maxLineBytes: Int = 1 << 20) {
        self.base = base
        self.maxLineBytes = maxLineBytes
    }

    public func makeAsyncIterator() -> AsyncIterator {
        AsyncIterator(base: base.makeAsyncIterator(), lines: LineSplitter(maxLineBytes: maxLineBytes))
    }

    /// Reads chunks until a line is complete.
    public struct AsyncIterator: AsyncIteratorProtocol {
        var base: Base.AsyncIterator
        var lines: LineSplitter
        var queued: [[UInt8]] = []
        var next = 0
        var number = 0
        var finished = false
        let decoder = APICoding.decoder()

        public mutating func next() async throws -> Value? {
            while true {
                while next < queued.count {
                    let line = queued[next]
                    next += 1
                    number += 1
                    if let value = try decode(line, last: false) { return value }
                }
                guard !finished else { return nil }
                guard let chunk = try await base.next() else {
                    finished = true
                    queued = []
                    guard let rest = lines.finish() else { return nil }
                    number += 1
                    return try decode(rest, last: true)
                }
                queued = try lines.append(chunk.readableBytesView)
                next = 0
            }
        }

        private func decode(_ line: [UInt8], last: Bool) throws(AuroraClientError) -> Value? {
            let blank: (UInt8) -> Bool = { $0 == UInt8(ascii: " ") || $0 == UInt8(ascii: "\t") }
            if line.allSatisfy(blank) { return nil }
            do {
                return try decoder.decode(Value.self, from: Data(line))
            } catch {
                throw AuroraClientError(
                    .undecodable,
                    last
                        ? "the stream ended in the middle of line \(number), or its last line is not a \(Value.self)"
                        : "line \(number) of the stream is not a \(Value.self)")
            }
        }
    }
}
