import AuroraTestKit
import Foundation
import Testing

#if canImport(Glibc)
    import Glibc
#endif

/// The test kit's own promises that other suites stand on.
@Suite("Test kit: child processes and ports")
struct ChildProcessTests {
    /// A socket bound without close-on-exec, as any test or library may have open at the
    /// instant another test starts a child.
    static func boundSocket() throws -> (fd: Int32, port: Int) {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        try #require(fd >= 0)
        var address = loopbackAddress(port: 0)
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let bound = withUnsafeMutablePointer(to: &address) { pointer in
            pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                bind(fd, $0, length) == 0 && getsockname(fd, $0, &length) == 0
            }
        }
        try #require(bound, "bind: \(String(cString: strerror(errno)))")
        return (fd, Int(UInt16(bigEndian: address.sin_port)))
    }

    @Test(
        "a child keeps none of the test process's descriptors: a port bound when it started is free once the test lets go"
    )
    func childInheritsNothing() async throws {
        let scratch = try ScratchDirectory("child-fds")
        defer { scratch.remove() }
        let (fd, port) = try Self.boundSocket()
        let child = try ChildProcess("/bin/sleep", ["30"], outputDirectory: scratch.path)
        defer { if child.isRunning { child.signal(SIGKILL) } }
        close(fd)
        // posix_spawn returns once the child runs `sleep`: what it holds now, it holds for its life.
        let descriptors = try FileManager.default.contentsOfDirectory(atPath: "/proc/\(child.pid)/fd").compactMap {
            Int($0)
        }
        #expect(descriptors.sorted() == [0, 1, 2], "the child holds \(descriptors.sorted())")
        #expect(portIsFree(port), "port \(port) is still bound after the test closed its socket")
        child.signal(SIGKILL)
        _ = try await child.waitForExit(timeout: .seconds(10))
    }
}
