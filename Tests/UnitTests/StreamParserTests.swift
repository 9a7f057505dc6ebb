import AuroraClient
import NIOCore
import Testing

/// A body delivered in the given chunks (split anywhere, as a network would).
struct BodyChunks: AsyncSequence {
    typealias Element = ByteBuffer
    let parts: [String]

    init(_ parts: String...) { self.parts = parts }
    init(parts: [String]) { self.parts = parts }

    /// The whole text cut every `size` bytes.
    init(_ text: String, every size: Int) {
        let bytes = Array(text.utf8)
        parts = stride(from: 0, to: bytes.count, by: size).map {
            String(decoding: bytes[$0..<Swift.min($0 + size, bytes.count)], as: UTF8.self)
        }
    }

    func makeAsyncIterator() -> AsyncIterator { AsyncIterator(parts: parts[...]) }

    struct AsyncIterator: AsyncIteratorProtocol {
        var parts: ArraySlice<String>
        mutating func next() async throws -> ByteBuffer? {
            guard let part = parts.popFirst() else { return nil }
            return ByteBuffer(string: part)
        }
    }
}

struct NumberLine: Decodable, Equatable {
    var n: Int
}

/// Everything `sequence` yields.
func elements<S: AsyncSequence>(of sequence: S) async throws -> [S.Element] {
    var all: [S.Element] = []
    for try await element in sequence { all.append(element) }
    return all
}

@Suite("Server-Sent Events parser")
struct SSEStreamParserTests {
    @Test("fields, multi-line data, comments and pings, ids that persist")
    func fields() async throws {
        let body = """
            : following from 3

            id: 4
            event: node.joined
            data: {"a":1}

            : ping

            data: first
            data: second
            data:third
            retry: 1500

            id: 9
            event
            data


            """
        let events = try await elements(of: ServerSentEvents(BodyChunks(body)))
        #expect(
            events == [
                ServerSentEvent(type: "node.joined", data: #"{"a":1}"#, id: "4"),
                ServerSentEvent(type: "message", data: "first\nsecond\nthird", id: "4", retry: 1500),
                ServerSentEvent(type: "message", data: "", id: "9"),
            ])
    }

    @Test("CRLF, CR and LF line ends, split anywhere across chunks")
    func lineEnds() async throws {
        let body = "id: 1\r\ndata: a\r\n\r\ndata: b\r\rdata: c\n\n"
        let expected = [
            ServerSentEvent(data: "a", id: "1"), ServerSentEvent(data: "b", id: "1"),
            ServerSentEvent(data: "c", id: "1"),
        ]
        for size in [1, 2, 3, 5, 100] {
            #expect(
                try await elements(of: ServerSentEvents(BodyChunks(body, every: size))) == expected, "chunks of \(size)"
            )
        }
        // A CR ending one chunk and the LF starting the next are one line end, not two.
        #expect(
            try await elements(of: ServerSentEvents(BodyChunks("data: x\r", "\ndata: y\r\n", "\r\n"))) == [
                ServerSentEvent(data: "x\ny")
            ])
    }

    @Test("a stream cut in the middle of an event drops that event")
    func cutMidEvent() async throws {
        let events = try await elements(
            of: ServerSentEvents(BodyChunks("data: whole\n\n", "data: half", "\ndata: more")))
        #expect(events == [ServerSentEvent(data: "whole")])
        #expect(try await elements(of: ServerSentEvents(BodyChunks())) == [])
    }

    @Test("a line over the limit ends the stream with lineTooLong, before it is held whole")
    func lineTooLong() async throws {
        let long = String(repeating: "x", count: 100)
        let sequence = ServerSentEvents(BodyChunks("data: ok\n\n", "data: " + long, long, "\n\n"), maxLineBytes: 64)
        var received: [ServerSentEvent] = []
        let error = await #expect(throws: AuroraClientError.self) {
            for try await event in sequence { received.append(event) }
        }
        #expect(error?.code == .lineTooLong)
        #expect(received == [ServerSentEvent(data: "ok")])
        // Many short data lines cannot grow one event without bound either.
        let many = BodyChunks(parts: Array(repeating: "data: 0123456789\n", count: 20) + ["\n"])
        let tooBig = await #expect(throws: AuroraClientError.self) {
            _ = try await elements(of: ServerSentEvents(many, maxEventBytes: 100))
        }
        #expect(tooBig?.code == .lineTooLong)
        // The default limit is 1 MiB per line.
        let fits = String(repeating: "y", count: (1 << 20) - 5)
        #expect(
            try await elements(of: ServerSentEvents(BodyChunks("data:", fits, "\n\n"))).first?.data.count == (1 << 20)
                - 5)
        await #expect(throws: AuroraClientError.self) {
            _ = try await elements(of: ServerSentEvents(BodyChunks("data: ", fits, "\n\n")))
        }
    }
}

@Suite("NDJSON parser")
struct NDJSONStreamParserTests {
    @Test("one value per line; blank lines skipped; chunks split anywhere")
    func lines() async throws {
        let body = "{\"n\":1}\n\n  \n{\"n\":2}\r\n{\"n\":3}\n"
        for size in [1, 4, 100] {
            #expect(
                try await elements(of: NDJSONLines(BodyChunks(body, every: size), as: NumberLine.self)) == [
                    NumberLine(n: 1), NumberLine(n: 2), NumberLine(n: 3),
                ])
        }
    }

    @Test("a complete last line without a newline is read; a cut one is an error")
    func lastLine() async throws {
        #expect(
            try await elements(of: NDJSONLines(BodyChunks("{\"n\":1}\n{\"n\":2}"), as: NumberLine.self)) == [
                NumberLine(n: 1), NumberLine(n: 2),
            ])
        var received: [NumberLine] = []
        let error = await #expect(throws: AuroraClientError.self) {
            for try await line in NDJSONLines(BodyChunks("{\"n\":1}\n{\"n\":"), as: NumberLine.self) {
                received.append(line)
            }
        }
        #expect(error?.code == .undecodable && received == [NumberLine(n: 1)])
        #expect(error?.message.contains("line 2") == true)
    }

    @Test("a line that is not the type ends the stream with undecodable, naming the line")
    func badLine() async throws {
        var received: [NumberLine] = []
        let error = await #expect(throws: AuroraClientError.self) {
            for try await line in NDJSONLines(BodyChunks("{\"n\":1}\n\n{\"m\":2}\n{\"n\":3}\n"), as: NumberLine.self) {
                received.append(line)
            }
        }
        #expect(error?.code == .undecodable && received == [NumberLine(n: 1)])
        #expect(error?.message.contains("line 3") == true, "\(error?.message ?? "")")
    }

    @Test("a line over the limit ends the stream with lineTooLong")
    func lineTooLong() async throws {
        let error = await #expect(throws: AuroraClientError.self) {
            _ = try await elements(
                of: NDJSONLines(
                    BodyChunks("{\"n\":1}\n", String(repeating: " ", count: 70), "{\"n\":2}\n"), as: NumberLine.self,
                    maxLineBytes: 64))
        }
        #expect(error?.code == .lineTooLong)
    }
}
