import AsyncHTTPClient
import Foundation
import NIOCore
import NIOHTTP1

/// A streamed HTTP answer read one server-sent event at a time (its `data:`), for tests of
/// streaming endpoints. Stopping early (``close()``, or dropping it) closes the connection, as a
/// client that goes away does.
public final class EventStream: @unchecked Sendable {  // one reader task at a time
    public let status: Int
    /// Response headers by lower-case name.
    public let headers: [String: String]
    private var iterator: HTTPClientResponse.Body.AsyncIterator?
    private var buffer: [UInt8] = []
    /// The whole body when the status is not 200.
    public private(set) var errorBody = ""

    /// Sends the request and waits for the answer's head (`timeout` bounds the whole exchange).
    public init(
        _ url: String, method: String = "POST", headers: [String: String] = [:], body: [UInt8],
        timeout: Duration = .seconds(120)
    ) async throws {
        var request = HTTPClientRequest(url: url)
        request.method = .init(rawValue: method)
        for (name, value) in headers { request.headers.add(name: name, value: value) }
        request.headers.add(name: "Content-Type", value: "application/json")
        request.body = .bytes(ByteBuffer(bytes: body))
        let response = try await HTTPClient.shared.execute(
            request, timeout: .milliseconds(timeout.components.seconds * 1000))
        status = Int(response.status.code)
        self.headers = Dictionary(
            response.headers.map { ($0.name.lowercased(), $0.value) }, uniquingKeysWith: { $1 })
        if status == 200 {
            iterator = response.body.makeAsyncIterator()
        } else {
            errorBody = String(buffer: try await response.body.collect(upTo: 1 << 20))
        }
    }

    /// The next event's data (`data:` lines joined); nil at the end of the stream.
    public func next() async throws -> String? {
        while true {
            if let end = Self.eventEnd(in: buffer) {
                let event = String(decoding: buffer[..<end], as: UTF8.self)
                buffer.removeFirst(end + 2)
                let data = event.split(separator: "\n", omittingEmptySubsequences: false)
                    .filter { $0.hasPrefix("data:") }
                    .map { $0.dropFirst(5).drop(while: { $0 == " " }) }
                    .joined(separator: "\n")
                if data.isEmpty { continue }  // a comment
                return data
            }
            guard var more = try await iterator?.next() else { return nil }
            buffer += more.readBytes(length: more.readableBytes) ?? []
        }
    }

    /// Stops reading: the connection closes.
    public func close() {
        iterator = nil
    }

    /// Index of the blank line (`\n\n`) that ends the first event, if one has arrived.
    private static func eventEnd(in bytes: [UInt8]) -> Int? {
        guard bytes.count >= 2 else { return nil }
        for index in 0..<(bytes.count - 1) where bytes[index] == 0x0A && bytes[index + 1] == 0x0A { return index }
        return nil
    }
}
