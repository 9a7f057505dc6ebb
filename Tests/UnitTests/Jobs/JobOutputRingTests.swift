import Mesh
import Testing

/// The output tail a worker fills and the lead keeps: offsets, wrap-around, gaps, repeated
/// pieces, bounds, and characters split across reads.
@Suite("Job output ring")
struct JobOutputRingTests {
    static func text(_ segments: [JobOutputRing.Segment]) -> String {
        String(decoding: segments.flatMap(\.bytes), as: UTF8.self)
    }

    @Test("appends keep offsets; one stream's adjacent pieces merge, the other stream starts a segment")
    func appendAndRead() {
        var ring = JobOutputRing(capacity: 100)
        ring.append(.stdout, Array("hello ".utf8))
        ring.append(.stdout, Array("world\n".utf8))
        ring.append(.stderr, Array("oops\n".utf8))
        #expect(ring.segments.count == 2)
        #expect(ring.start == 0 && ring.end == 17 && ring.count == 17)
        let (all, next) = ring.read(from: 0, limit: 1000)
        #expect(all.map(\.stream) == [.stdout, .stderr])
        #expect(all.map(\.offset) == [0, 12])
        #expect(next == 17)
        let (rest, after) = ring.read(from: 6, limit: 1000)
        #expect(Self.text(rest) == "world\noops\n")
        #expect(rest.first?.offset == 6)
        #expect(after == 17)
        #expect(ring.read(from: 17, limit: 1000).segments.isEmpty)
    }

    @Test("past capacity the oldest bytes go: start moves, offsets stay absolute, count never exceeds capacity")
    func wrapAround() {
        var ring = JobOutputRing(capacity: 10)
        for index in 0..<25 {
            ring.append(index % 2 == 0 ? .stdout : .stderr, [UInt8(ascii: "a") + UInt8(index % 26)])
            #expect(ring.count <= 10)
        }
        #expect(ring.end == 25)
        #expect(ring.start == 15)
        #expect(ring.count == 10)
        // An offset before start reads from start.
        let (segments, next) = ring.read(from: 3, limit: 100)
        #expect(segments.first?.offset == 15)
        #expect(segments.reduce(0) { $0 + $1.bytes.count } == 10)
        #expect(next == 25)
        // One piece larger than the ring keeps its last bytes at their offsets.
        var big = JobOutputRing(capacity: 4)
        big.append(.stdout, Array("0123456789".utf8))
        #expect(big.start == 6 && big.end == 10)
        #expect(Self.text(big.read(from: 0, limit: 100).segments) == "6789")
    }

    @Test("limits: bytes and segments per read, and reads continue where the last stopped")
    func limits() {
        var ring = JobOutputRing(capacity: 1000)
        for index in 0..<10 { ring.append(index % 2 == 0 ? .stdout : .stderr, Array("abcde".utf8)) }
        let (first, next) = ring.read(from: 0, limit: 12)
        #expect(first.reduce(0) { $0 + $1.bytes.count } == 12)
        #expect(next == 12)
        let (few, fewNext) = ring.read(from: 0, limit: 1000, maxSegments: 3)
        #expect(few.count == 3 && fewNext == 15)
        var offset = 0
        var collected: [UInt8] = []
        while true {
            let (part, after) = ring.read(from: offset, limit: 7, maxSegments: 2)
            if part.isEmpty { break }
            collected += part.flatMap(\.bytes)
            offset = after
        }
        #expect(collected.count == 50)
    }

    @Test("the lead's inserts: a repeated piece is taken once, an overlapping one from its new bytes, a gap stays")
    func inserts() {
        var ring = JobOutputRing(capacity: 100)
        ring.insert(.stdout, at: 0, Array("abcdef".utf8))
        ring.insert(.stdout, at: 0, Array("abcdef".utf8))
        #expect(ring.end == 6 && ring.count == 6)
        ring.insert(.stdout, at: 4, Array("efgh".utf8))
        #expect(ring.end == 8)
        #expect(Self.text(ring.read(from: 0, limit: 100).segments) == "abcdefgh")
        ring.insert(.stderr, at: 20, Array("late".utf8))
        #expect(ring.end == 24)
        let (segments, next) = ring.read(from: 8, limit: 100)
        #expect(segments.map(\.offset) == [20])
        #expect(next == 24)
        ring.insert(.stdout, at: -5, Array("x".utf8))
        ring.insert(.stdout, at: 30, [])
        #expect(ring.end == 24)
        var skipping = JobOutputRing(capacity: 100)
        skipping.append(.stdout, Array("ab".utf8))
        skipping.append(.stdout, Array("yz".utf8), skipping: 1000)
        #expect(skipping.end == 1004)
        #expect(skipping.segments.map(\.offset) == [0, 1002])
    }

    @Test("a character split across reads is held back while the job runs, and given once it ends")
    func partialCharacters() {
        let euro = Array("€".utf8)  // E2 82 AC
        var ring = JobOutputRing(capacity: 100)
        ring.append(.stdout, Array("price: ".utf8) + euro.prefix(2))
        let (held, next) = ring.read(from: 0, limit: 100, holdingBackPartialCharacter: true)
        #expect(Self.text(held) == "price: ")
        #expect(next == 7)
        ring.append(.stdout, Array(euro.suffix(1)))
        #expect(Self.text(ring.read(from: next, limit: 100, holdingBackPartialCharacter: true).segments) == "€")
        // Invalid bytes are not waited for; the final read gives everything.
        var invalid = JobOutputRing(capacity: 100)
        invalid.append(.stdout, [0x41, 0xFF, 0xFE])
        #expect(invalid.read(from: 0, limit: 100, holdingBackPartialCharacter: true).next == 3)
        var cut = JobOutputRing(capacity: 100)
        cut.append(.stdout, [0x41, 0xF0, 0x9F])
        #expect(cut.read(from: 0, limit: 100, holdingBackPartialCharacter: true).next == 1)
        #expect(cut.read(from: 0, limit: 100).next == 3)
        #expect(JobOutputRing.partialCharacterLength([]) == 0)
        #expect(JobOutputRing.partialCharacterLength([0xF0, 0x9F, 0x98]) == 3)
        #expect(JobOutputRing.partialCharacterLength([0xF0, 0x9F, 0x98, 0x80]) == 0)
        #expect(JobOutputRing.partialCharacterLength([0x80, 0x80, 0x80]) == 0)
        // Only a partial character: nothing is returned yet.
        var only = JobOutputRing(capacity: 100)
        only.append(.stderr, [0xC3])
        let (none, stay) = only.read(from: 0, limit: 100, holdingBackPartialCharacter: true)
        #expect(none.isEmpty && stay == 0)
    }
}
