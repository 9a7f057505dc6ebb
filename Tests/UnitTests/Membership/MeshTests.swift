import Testing

@testable import Mesh

@Suite("Node names and addresses")
struct MeshTests {
    @Test("valid names pass, invalid ones say why")
    func names() throws {
        #expect(try NodeName("gpu-box_1.eu").value == "gpu-box_1.eu")
        #expect(throws: MeshError.self) { try NodeName("") }
        let bad = #expect(throws: MeshError.self) { try NodeName("bad name") }
        #expect(bad?.message == "node name 'bad name' contains ' '; use letters, digits, '-', '_' or '.'")
        #expect(throws: MeshError.self) { try NodeName("-lead") }
        #expect(throws: MeshError.self) { try NodeName(String(repeating: "a", count: 64)) }
        #expect(NodeName.fromHostName("My-Laptop.local")?.value == "my-laptop")
        #expect(NodeName.fromHostName("...") == nil)
    }

    @Test("HOST:PORT parses IPv4, names and bracketed IPv6")
    func hostPort() throws {
        #expect(try HostPort(parsing: "127.0.0.1:9999") == HostPort(host: "127.0.0.1", port: 9999))
        #expect(try HostPort(parsing: "[::1]:80").host == "::1")
        #expect(try HostPort(parsing: "[::1]:80").description == "[::1]:80")
        #expect(throws: MeshError.self) { try HostPort(parsing: "127.0.0.1") }
        #expect(throws: MeshError.self) { try HostPort(parsing: "::1:80") }
        #expect(throws: MeshError.self) { try HostPort(parsing: "h:70000") }
        #expect(throws: MeshError.self) { try HostPort(parsing: ":80") }
    }
}
