import AuroraAPI
import Foundation
import Testing

/// The route table (AuroraAPI's ``API``) is the API's one list of endpoints: it must be exactly
/// docs/openapi.yaml's operations, its router patterns must be its patterns, and the paths it
/// builds must keep their shape whatever the names.
@Suite("Route table")
struct RouteTableTests {
    static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent()

    /// `METHOD /path` of every operation under `paths:` in docs/openapi.yaml (two-space path
    /// keys, four-space method keys).
    static func documentedOperations() throws -> Set<String> {
        let text = try String(contentsOf: root.appendingPathComponent("docs/openapi.yaml"), encoding: .utf8)
        let methods: Set<String> = ["get", "put", "post", "delete", "patch", "head", "options", "trace"]
        var operations: Set<String> = []
        var inPaths = false
        var path: String?
        for line in text.split(separator: "\n", omittingEmptySubsequences: false) {
            if !line.hasPrefix(" "), !line.isEmpty, !line.hasPrefix("#") {
                inPaths = line == "paths:"
                continue
            }
            guard inPaths else { continue }
            if line.hasPrefix("  /"), !line.hasPrefix("   "), line.hasSuffix(":") {
                path = String(line.dropFirst(2).dropLast())
            } else if line.hasPrefix("    "), !line.hasPrefix("     "), let path {
                let key = line.dropFirst(4).prefix { $0 != ":" }
                if methods.contains(String(key)) { operations.insert("\(key.uppercased()) \(path)") }
            }
        }
        return operations
    }

    @Test("API.all is exactly the operations of docs/openapi.yaml, each once")
    func tableMatchesDocument() throws {
        let documented = try Self.documentedOperations()
        let table = API.all.map(\.description)
        #expect(documented.count > 40)
        #expect(Set(table).count == table.count, "an endpoint is listed twice in API.all")
        #expect(Set(table).subtracting(documented).sorted() == [], "endpoints missing from docs/openapi.yaml")
        #expect(documented.subtracting(table).sorted() == [], "operations of docs/openapi.yaml missing from API.all")
    }

    @Test("every router pattern is its pattern with {name} as :name")
    func routerPatterns() {
        #expect(API.getJob.routerPattern == "/api/gpu/jobs/:id")
        #expect(API.rollbackSecret.routerPattern == "/api/secrets/:service/:key/rollback")
        #expect(API.listNodes.routerPattern == "/nodes")
        for endpoint in API.all {
            let pattern = endpoint.pattern.split(separator: "/", omittingEmptySubsequences: false)
            let router = endpoint.routerPattern.split(separator: "/", omittingEmptySubsequences: false)
            #expect(pattern.count == router.count, "\(endpoint)")
            for (documented, routed) in zip(pattern, router) {
                if documented.hasPrefix("{") {
                    #expect(
                        documented.hasSuffix("}") && routed == ":" + documented.dropFirst().dropLast(), "\(endpoint)")
                } else {
                    #expect(documented == routed && !routed.hasPrefix(":"), "\(endpoint)")
                }
            }
            #expect(endpoint.parameterNames == router.filter { $0.hasPrefix(":") }.map { String($0.dropFirst()) })
        }
    }

    @Test("a filled path matches its router pattern, one segment per parameter")
    func filledPathsMatch() {
        for endpoint in API.all {
            let values = endpoint.parameterNames.map { "x/\($0)?#% y" }
            let path = endpoint.path(values)
            let segments = path.split(separator: "/", omittingEmptySubsequences: false)
            let router = endpoint.routerPattern.split(separator: "/", omittingEmptySubsequences: false)
            #expect(segments.count == router.count, "\(endpoint): \(path)")
            for (segment, routed) in zip(segments, router) where !routed.hasPrefix(":") {
                #expect(segment == routed, "\(endpoint): \(path)")
            }
            #expect(!path.contains("?") && !path.contains("#") && !path.contains(" "), "\(path)")
        }
    }

    @Test("names with /, ?, #, % or spaces are escaped and cannot change the path")
    func escaping() {
        #expect(API.getNode.path("gpu-1") == "/nodes/gpu-1")
        #expect(API.getNode.path("a/b?c#d%e f") == "/nodes/a%2Fb%3Fc%23d%25e%20f")
        #expect(API.getNode.path("..") == "/nodes/%2E%2E")
        #expect(API.getNode.path(".") == "/nodes/%2E")
        #expect(
            API.verifyBackup.path("aurora-20250312T104500Z.dump") == "/api/backups/aurora-20250312T104500Z.dump/verify")
        #expect(API.readSecret.path("open ai", "api/key") == "/api/secrets/open%20ai/api%2Fkey")
        #expect(API.getNode.path("zürich") == "/nodes/z%C3%BCrich")
        #expect(Routes.gpuJob("a/b") == "/api/gpu/jobs/a%2Fb")
    }

    @Test("query names and values are escaped; nil values are left out")
    func query() {
        #expect(API.listJobs.path(query: [("limit", "50"), ("state", nil)]) == "/api/gpu/jobs?limit=50")
        #expect(
            API.events.path(query: [("type", "job.*,node.joined"), ("node", "a&b=c+d #e")])
                == "/api/events?type=job.%2A%2Cnode.joined&node=a%26b%3Dc%2Bd%20%23e")
        #expect(API.getJob.path("j1", query: [("wait", String(60.0))]) == "/api/gpu/jobs/j1?wait=60.0")
        #expect(API.health.path() == "/health")
    }

    @Test("a request's route label is its endpoint's pattern, or other: a bounded set whatever the path")
    func routeLabels() {
        for endpoint in API.all {
            let filled = endpoint.path(endpoint.parameterNames.map { "x-\($0)" })
            #expect(API.route(method: endpoint.method, path: filled) == endpoint.pattern, "\(endpoint)")
        }
        #expect(API.route(method: "GET", path: "/api/keys/usage") == "/api/keys/usage")
        #expect(API.route(method: "DELETE", path: "/api/keys/gk_1") == "/api/keys/{id}")
        for (method, path) in [
            ("GET", "/nope"), ("GET", "/api/gpu/jobs/a/b/c"), ("PATCH", "/health"), ("GET", ""),
            ("GET", "/" + String(repeating: "a", count: 5000)), ("GET", "/api/gpu/jobs/"),
        ] {
            #expect(API.route(method: method, path: path) == "other", "\(method) \(path.prefix(30))")
        }
    }
}
