import Foundation

#if canImport(Glibc)
    import Glibc
#endif

/// A minimal DNS client for tests that time an answer: it asks one A question over UDP on
/// loopback from a thread of its own, so the instant it reports is when the server answered,
/// not when a `dig` child process got started on a busy machine or this test got a turn on the
/// cooperative pool. `dig` stays the tool the tests check answers with; this only times them.
public enum DNSProbe {
    /// The IPv4 addresses in the answer to an A question for `name`, sorted; nil when no answer
    /// came within `timeout` or it could not be read.
    public static func addresses(port: Int, name: String, timeout: Duration = .seconds(1)) -> [String]? {
        let fd = socket(AF_INET, Int32(SOCK_DGRAM.rawValue | SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        let micros =
            Int(timeout.components.seconds) * 1_000_000 + Int(timeout.components.attoseconds / 1_000_000_000_000)
        var wait = timeval(tv_sec: micros / 1_000_000, tv_usec: micros % 1_000_000)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &wait, socklen_t(MemoryLayout<timeval>.size))
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = in_port_t(UInt16(port).bigEndian)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        let id = UInt16.random(in: 0...UInt16.max)
        var query: [UInt8] = [UInt8(id >> 8), UInt8(id & 0xff), 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]
        for label in name.split(separator: ".") {
            query.append(UInt8(label.utf8.count))
            query.append(contentsOf: label.utf8)
        }
        query.append(contentsOf: [0, 0, 1, 0, 1])
        let sent = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                sendto(fd, query, query.count, 0, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
            }
        }
        guard sent == query.count else { return nil }
        var buffer = [UInt8](repeating: 0, count: 1500)
        let count = recv(fd, &buffer, buffer.count, 0)
        guard count >= 12 else { return nil }
        return parseAddresses(Array(buffer[0..<count]), id: id)
    }

    /// The A records of a response with this id, as dotted quads, sorted; nil if it is not one.
    static func parseAddresses(_ bytes: [UInt8], id: UInt16) -> [String]? {
        guard bytes.count >= 12, UInt16(bytes[0]) << 8 | UInt16(bytes[1]) == id, bytes[2] & 0x80 != 0 else {
            return nil
        }
        let questions = Int(bytes[4]) << 8 | Int(bytes[5])
        let answers = Int(bytes[6]) << 8 | Int(bytes[7])
        var offset = 12
        func skipName() -> Bool {
            while offset < bytes.count {
                let length = bytes[offset]
                if length & 0xc0 == 0xc0 {
                    offset += 2
                    return offset <= bytes.count
                }
                offset += 1 + Int(length)
                if length == 0 { return offset <= bytes.count }
            }
            return false
        }
        for _ in 0..<questions {
            guard skipName(), offset + 4 <= bytes.count else { return nil }
            offset += 4
        }
        var found: [String] = []
        for _ in 0..<answers {
            guard skipName(), offset + 10 <= bytes.count else { return nil }
            let type = Int(bytes[offset]) << 8 | Int(bytes[offset + 1])
            let length = Int(bytes[offset + 8]) << 8 | Int(bytes[offset + 9])
            offset += 10
            guard offset + length <= bytes.count else { return nil }
            if type == 1, length == 4 {
                found.append(bytes[offset..<offset + 4].map(String.init).joined(separator: "."))
            }
            offset += length
        }
        return found.sorted()
    }

    /// Asks every 20 ms, from a thread of its own, until the answer is `expected`; returns the
    /// instant that answer came, or nil if it did not within `timeout`.
    public static func waitForAnswer(
        port: Int, name: String, _ expected: [String], timeout: Duration
    ) async -> ContinuousClock.Instant? {
        await withCheckedContinuation { (continuation: CheckedContinuation<ContinuousClock.Instant?, Never>) in
            let asker = Thread {
                let deadline = ContinuousClock.now + timeout
                while ContinuousClock.now < deadline {
                    if addresses(port: port, name: name, timeout: .milliseconds(500)) == expected.sorted() {
                        return continuation.resume(returning: ContinuousClock.now)
                    }
                    usleep(20_000)
                }
                continuation.resume(returning: nil)
            }
            asker.start()
        }
    }
}
