// swift-tools-version:6.1
// Aurora mesh: one daemon (`nodeagent`) and one operator tool (`aurora-cli`).
// Layering (shared/DESIGN.md, Layout): Mesh and AuroraAPI are pure; Secrets wraps libsodium;
// NodeAgent is the daemon as a library; the executables are thin; the CLI links no C library.
import PackageDescription

let swiftSettings: [SwiftSetting] = [
    .enableUpcomingFeature("ExistentialAny"),
    .enableUpcomingFeature("MemberImportVisibility"),
]

let package = Package(
    name: "aurora-mesh",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "nodeagent", targets: ["nodeagent"]),
        .executable(name: "aurora-cli", targets: ["aurora-cli"]),
    ],
    dependencies: [
        .package(
            url: "https://github.com/hummingbird-project/hummingbird.git", from: "2.28.1", traits: ["FullFoundation"]),
        .package(url: "https://github.com/swift-server/async-http-client.git", from: "1.37.0"),
        .package(url: "https://github.com/apple/swift-argument-parser.git", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-log.git", from: "1.16.2"),
        .package(url: "https://github.com/apple/swift-metrics.git", from: "2.13.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus.git", from: "2.4.1"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle.git", from: "2.13.0"),
        .package(url: "https://github.com/apple/swift-nio.git", from: "2.101.2"),
        .package(url: "https://github.com/jpsim/Yams.git", from: "6.2.2"),
        .package(url: "https://github.com/apple/swift-async-algorithms.git", from: "1.1.4"),
        // TLS: NIOSSL serves and pins it; swift-certificates makes each agent's self-signed
        // certificate at first start; swift-crypto hashes keys for pins (the CLI links no libsodium).
        .package(url: "https://github.com/apple/swift-nio-ssl.git", from: "2.37.6"),
        .package(url: "https://github.com/apple/swift-certificates.git", from: "1.21.1"),
        .package(url: "https://github.com/apple/swift-crypto.git", from: "4.5.2"),
    ],
    targets: [
        // MARK: System libraries (apt providers; see shared/PLATFORM.md)
        .systemLibrary(name: "CSodium", pkgConfig: "libsodium", providers: [.apt(["libsodium-dev"])]),
        .systemLibrary(name: "CLibPQ", pkgConfig: "libpq", providers: [.apt(["libpq-dev"])]),
        .systemLibrary(name: "CHiredis", pkgConfig: "hiredis", providers: [.apt(["libhiredis-dev"])]),

        // One glibc function Swift's Glibc module hides (posix_spawn closefrom): children of the
        // agent must not inherit its sockets.
        .target(name: "CSpawn"),

        // MARK: Libraries
        .target(name: "Secrets", dependencies: ["CSodium", "AuroraAPI"], swiftSettings: swiftSettings),
        .target(name: "Mesh", swiftSettings: swiftSettings),
        .target(name: "AuroraAPI", swiftSettings: swiftSettings),
        // Pins and pinned TLS clients, shared by the daemon and the CLI.
        .target(
            name: "AuroraTLS",
            dependencies: [
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "NIOTLS", package: "swift-nio"),
                .product(name: "Crypto", package: "swift-crypto"),
            ],
            swiftSettings: swiftSettings
        ),
        // The typed client of the agent's API (one method per endpoint, streams parsed once);
        // the CLI talks to agents only through it.
        .target(
            name: "AuroraClient",
            dependencies: [
                "AuroraAPI", "AuroraTLS",
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
            ],
            swiftSettings: swiftSettings
        ),
        .target(
            name: "NodeAgent",
            dependencies: [
                "Secrets", "Mesh", "AuroraAPI", "AuroraTLS", "AuroraClient", "CLibPQ", "CHiredis", "CSpawn",
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "HummingbirdTLS", package: "hummingbird"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "X509", package: "swift-certificates"),
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "Yams", package: "Yams"),
                .product(name: "AsyncAlgorithms", package: "swift-async-algorithms"),
            ],
            swiftSettings: swiftSettings
        ),

        // MARK: Executables
        .executableTarget(
            name: "nodeagent",
            dependencies: [
                "NodeAgent",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ],
            swiftSettings: swiftSettings
        ),
        .executableTarget(
            name: "aurora-cli",
            dependencies: [
                "AuroraAPI", "AuroraTLS", "AuroraClient",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "NIOCore", package: "swift-nio"),
            ],
            swiftSettings: swiftSettings
        ),

        // MARK: Benchmarks: beside the product, not in it. They start the built `nodeagent` as
        // child processes through the test kit and talk to it over HTTP.
        .executableTarget(
            name: "aurora-bench",
            dependencies: [
                "AuroraTestKit", "AuroraAPI", "AuroraTLS", "Mesh", "Secrets",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
            ],
            path: "Benchmarks/AuroraBench",
            swiftSettings: swiftSettings
        ),
        .executableTarget(
            name: "wireguard-bench",
            dependencies: ["AuroraTestKit", "AuroraAPI", "Mesh"],
            path: "Benchmarks/WireGuard",
            swiftSettings: swiftSettings
        ),

        // MARK: Tests
        .target(
            name: "AuroraTestKit",
            dependencies: [
                "AuroraAPI", "AuroraClient", "AuroraTLS", "Secrets", "CSpawn",
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "NIOTLS", package: "swift-nio"),
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
            ],
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "UnitTests",
            dependencies: [
                "Mesh", "Secrets", "AuroraAPI", "AuroraTLS", "AuroraClient", "NodeAgent", "AuroraTestKit",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            swiftSettings: swiftSettings
        ),
        // In-process route tests (HummingbirdTesting): each role's router, no sockets, no processes.
        .testTarget(
            name: "ServiceTests",
            dependencies: [
                "Mesh", "Secrets", "AuroraAPI", "NodeAgent",
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "HummingbirdTesting", package: "hummingbird"),
            ],
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "IntegrationTests",
            dependencies: [
                "AuroraAPI", "AuroraTLS", "AuroraTestKit", "Secrets",
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
            ],
            swiftSettings: swiftSettings
        ),
    ]
)
