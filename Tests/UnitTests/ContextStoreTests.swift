import AuroraAPI
import AuroraTLS
import AuroraTestKit
import Foundation
import Testing

@testable import AuroraClient

#if canImport(Glibc)
    import Glibc
#endif

/// The operator's saved contexts (`aurora-cli context`) and the one order in which flags,
/// environment, the selected context and defaults choose the agent, token and pin.
@Suite("Contexts of aurora-cli")
struct ContextStoreTests {
    static let pin = "sha256:" + String(repeating: "ab", count: 32)

    /// A store in a fresh scratch directory (`SCRATCH/config/aurora`), removed afterwards.
    func withStore(_ body: (ContextStore, String) throws -> Void) throws {
        let scratch = try ScratchDirectory("contexts")
        defer { scratch.remove() }
        let store = try ContextStore(environment: ["XDG_CONFIG_HOME": scratch.path + "/config", "HOME": "/nonexistent"])
        try body(store, scratch.path)
    }

    // FileManager rather than lstat(2): which C module `stat` comes from depends on the order the
    // compiler loads modules in, and member-import checking then asks for that module.
    func mode(_ path: String) -> mode_t {
        guard let attributes = try? FileManager.default.attributesOfItem(atPath: path),
            (attributes[.type] as? FileAttributeType) != .typeSymbolicLink,
            let permissions = attributes[.posixPermissions] as? Int
        else { return 0 }
        return mode_t(permissions) & 0o777
    }

    func inode(_ path: String) -> UInt64? {
        (try? FileManager.default.attributesOfItem(atPath: path))?[.systemFileNumber] as? UInt64
    }

    func context(_ name: String, agent: String = "http://127.0.0.1:9999", pin: String? = nil, token: String = "tok-1")
        throws -> AgentContext
    {
        try AgentContext(name: name, agent: agent, pin: pin, token: token)
    }

    // MARK: - Where the store is

    @Test("XDG_CONFIG_HOME (absolute) wins, else HOME/.config; neither is a clear error")
    func location() throws {
        #expect(
            try ContextStore(environment: ["XDG_CONFIG_HOME": "/x/cfg/", "HOME": "/home/a"]).directory
                == "/x/cfg/aurora")
        #expect(
            try ContextStore(environment: ["XDG_CONFIG_HOME": "relative", "HOME": "/home/a"]).directory
                == "/home/a/.config/aurora")
        #expect(try ContextStore(environment: ["HOME": "/home/a"]).directory == "/home/a/.config/aurora")
        #expect(throws: AuroraClientError.self) { try ContextStore(environment: [:]) }
    }

    // MARK: - Validation at add

    @Test("names: 1-32 of a-z 0-9 . _ -, starting with a letter or digit")
    func names() throws {
        for good in ["prod", "a", "lead-1", "eu.west_2", String(repeating: "a", count: 32), "0x"] {
            try AgentContext.validateName(good)
        }
        for bad in [
            "", "Prod", "-x", ".hidden", "..", "a/b", "a b", "a\u{1B}[31m", "ü", String(repeating: "a", count: 33),
            "../../etc/passwd", "x.json\n",
        ] {
            #expect(throws: AuroraClientError.self, "\(bad)") { try AgentContext.validateName(bad) }
        }
    }

    @Test("agent URLs: http(s) with a host; no user, query, fragment, spaces or control characters")
    func urls() throws {
        #expect(try AgentContext.validateAgentURL("http://127.0.0.1:9999/") == "http://127.0.0.1:9999")
        #expect(try AgentContext.validateAgentURL("HTTPS://lead.example:9443") == "https://lead.example:9443")
        for bad in [
            "", "127.0.0.1:9999", "ftp://x", "file:///etc/passwd", "http://", "http://u:p@host", "http://h/?a=1",
            "http://h/#f", "http://h /x", "http://h\n", "javascript:alert(1)",
            "http://" + String(repeating: "a", count: 600),
        ] {
            #expect(throws: AuroraClientError.self, "\(bad)") { try AgentContext.validateAgentURL(bad) }
        }
    }

    @Test("pins: sha256 and 64 hex; https needs one, http refuses one; tokens: printable, no spaces")
    func pinsAndTokens() throws {
        let secure = try context("p", agent: "https://lead.example:9443", pin: Self.pin)
        #expect(secure.pin?.description == Self.pin)
        let badPin = #expect(throws: AuroraClientError.self) {
            try context("p", agent: "https://lead.example:9443", pin: "sha256:1234")
        }
        #expect(badPin?.message.contains("sha256: and 64 hex digits") == true)
        let noPin = #expect(throws: AuroraClientError.self) { try context("p", agent: "https://lead.example:9443") }
        #expect(noPin?.message.contains("--pin") == true)
        #expect(throws: AuroraClientError.self) { try context("p", agent: "http://127.0.0.1:9999", pin: Self.pin) }
        for bad in ["", "a b", "tok\n", "tok\u{0}", "tök", String(repeating: "t", count: 1025)] {
            #expect(throws: AuroraClientError.self, "\(bad.debugDescription)") { try context("p", token: bad) }
        }
    }

    // MARK: - Files

    @Test("add, use, list, remove: directories 0700, files 0600, nothing left behind, the token only in its file")
    func lifecycle() throws {
        try withStore { store, scratch in
            #expect(try store.names().isEmpty)
            #expect(try store.current() == nil)
            try store.add(try context("local", token: "secret-token-1"))
            try store.add(try context("prod", agent: "https://lead.example:9443", pin: Self.pin))
            #expect(mode(store.directory) == 0o700)
            #expect(mode(store.directory + "/contexts") == 0o700)
            #expect(mode(store.path(of: "local")) == 0o600)
            #expect(try store.names() == ["local", "prod"])
            #expect(try store.context("local").token == "secret-token-1")
            #expect(try store.context("prod").pin?.description == Self.pin)

            let again = #expect(throws: AuroraClientError.self) { try store.add(try context("local")) }
            #expect(again?.message.contains("--force") == true)
            try store.add(try context("local", token: "secret-token-2"), replace: true)
            #expect(try store.context("local").token == "secret-token-2")

            try store.use("prod")
            #expect(try store.current() == "prod")
            #expect(mode(store.currentPath) == 0o600)
            #expect(throws: AuroraClientError.self) { try store.use("nope") }
            #expect(try store.current() == "prod")

            // Only the two context files and the pointer: no temporary files.
            #expect(
                try FileManager.default.contentsOfDirectory(atPath: store.directory + "/contexts").sorted() == [
                    "local.json", "prod.json",
                ])
            #expect(
                try FileManager.default.contentsOfDirectory(atPath: store.directory).sorted() == [
                    "contexts", "current-context",
                ])

            #expect(try store.remove("prod") == true)
            #expect(try store.current() == nil)
            #expect(try store.remove("local") == false)
            #expect(throws: AuroraClientError.self) { try store.remove("local") }
            #expect(try store.names().isEmpty)
            _ = scratch
        }
    }

    @Test("an existing loose directory is tightened to 0700")
    func tightens() throws {
        try withStore { store, _ in
            try FileManager.default.createDirectory(atPath: store.directory, withIntermediateDirectories: true)
            chmod(store.directory, 0o755)
            try store.add(try context("a"))
            #expect(mode(store.directory) == 0o700)
        }
    }

    @Test("writes are atomic: a new file replaces the old one by rename, and a crashed write's leftover is ignored")
    func atomicWrite() throws {
        try withStore { store, _ in
            try store.add(try context("a", token: "first"))
            let before = inode(store.path(of: "a"))
            try store.add(try context("a", token: "second"), replace: true)
            let after = inode(store.path(of: "a"))
            #expect(before != nil && before != after, "rewritten in place, not renamed over")
            #expect(try store.context("a").token == "second")

            // What a write interrupted before its rename leaves: a dot-file beside the context.
            let leftover = store.directory + "/contexts/.a.json.tmp-1-2"
            #expect(FileManager.default.createFile(atPath: leftover, contents: Data("{\"na".utf8)))
            chmod(leftover, 0o600)
            #expect(try store.names() == ["a"])
            #expect(try store.context("a").token == "second")
        }
    }

    @Test("a damaged context file, a loose one, a link or a bad pointer is a clear error naming the file")
    func damaged() throws {
        try withStore { store, scratch in
            try store.add(try context("good"))
            let path = store.path(of: "bad")
            for (contents, expected) in [
                ("{not json", "not a context's JSON"),
                (#"{"version":1,"name":"other","agent":"http://h:1","token":"t"}"#, "names another context"),
                (#"{"version":9,"name":"bad","agent":"http://h:1","token":"t"}"#, "version 9"),
                (#"{"version":1,"name":"bad","agent":"ftp://h","token":"t"}"#, "http(s) URL"),
                (#"{"version":1,"name":"bad","agent":"http://h:1","token":"a b"}"#, "token"),
                (String(repeating: "x", count: 70_000), "larger than"),
            ] {
                #expect(FileManager.default.createFile(atPath: path, contents: Data(contents.utf8)))
                chmod(path, 0o600)
                let error = #expect(throws: AuroraClientError.self) { try store.context("bad") }
                #expect(error?.message.contains(expected) == true, "\(error?.message ?? "")")
                #expect(error?.message.contains(path) == true)
                #expect(error?.message.contains("t\"") != true)
            }
            #expect(try store.names() == ["bad", "good"])

            // Readable by others: refused, with the fix.
            try store.add(try context("bad"), replace: true)
            chmod(path, 0o644)
            let loose = #expect(throws: AuroraClientError.self) { try store.context("bad") }
            #expect(loose?.message.contains("chmod 600 \(path)") == true)

            // A symbolic link is not followed.
            unlink(path)
            symlink(store.path(of: "good"), path)
            let link = #expect(throws: AuroraClientError.self) { try store.context("bad") }
            #expect(link?.message.contains("symbolic link") == true)
            #expect(try store.remove("bad") == false)

            // A pointer naming nonsense, and one naming a damaged context, as a command sees them.
            #expect(FileManager.default.createFile(atPath: store.currentPath, contents: Data("../../x\n".utf8)))
            chmod(store.currentPath, 0o600)
            let pointer = #expect(throws: AuroraClientError.self) { try store.current() }
            #expect(pointer?.message.contains("context use") == true)
            try store.add(try context("broken"))
            try store.use("broken")
            #expect(
                FileManager.default.createFile(
                    atPath: store.path(of: "broken"), contents: Data("[]".utf8), attributes: [.posixPermissions: 0o600])
            )
            let command = #expect(throws: AuroraClientError.self) {
                try AgentSettings.resolve(.init(), environment: [:]) { store }
            }
            #expect(command?.message.contains("current context") == true)
            #expect(command?.message.contains(store.path(of: "broken")) == true)
            // Flags that say everything need no context, damaged or not.
            let settings = try AgentSettings.resolve(
                .init(agent: "http://127.0.0.1:1", dataDir: scratch), environment: [:]
            ) { store }
            #expect(settings.agentURL == "http://127.0.0.1:1")
        }
    }

    // MARK: - Precedence

    @Test("flags > environment > the selected context > defaults, setting by setting")
    func precedence() throws {
        try withStore { store, _ in
            try store.add(try context("local", agent: "http://127.0.0.1:7000", token: "local-token"))
            try store.add(
                try context("prod", agent: "https://lead.example:9443", pin: Self.pin, token: "prod-token"))
            func resolve(_ choice: AgentSettings.Choice, _ environment: [String: String] = [:]) throws -> AgentSettings
            {
                try AgentSettings.resolve(choice, environment: environment) { store }
            }

            // No context: the defaults.
            let plain = try resolve(.init())
            #expect(plain.agentURL == Defaults.agentURL)
            #expect(plain.agentOrigin == .builtIn)
            #expect(plain.credential == .dataDir(Defaults.dataDir, .builtIn))
            #expect(plain.pin == nil)

            // The current context fills every setting.
            try store.use("prod")
            let current = try resolve(.init())
            #expect(current.agentURL == "https://lead.example:9443")
            #expect(current.agentOrigin == .context("prod"))
            #expect(current.credential == .token("prod-token", .context("prod")))
            #expect(current.pin?.description == Self.pin)
            #expect(current.pinOrigin == .context("prod"))
            #expect(current.context?.selectedBy == store.currentPath)
            #expect(try current.token() == ("prod-token", "context 'prod'"))

            // AURORA_CONTEXT beats the current one; --context beats AURORA_CONTEXT.
            #expect(try resolve(.init(), ["AURORA_CONTEXT": "local"]).agentURL == "http://127.0.0.1:7000")
            #expect(
                try resolve(.init(context: "prod"), ["AURORA_CONTEXT": "local"]).agentURL == "https://lead.example:9443"
            )
            let unknown = #expect(throws: AuroraClientError.self) { try resolve(.init(context: "nope")) }
            #expect(unknown?.message.contains("--context") == true)

            // The environment beats the context, a flag beats the environment.
            let environment = [
                "AURORA_TOKEN": "env-token", "AURORA_PIN": "sha256:" + String(repeating: "cd", count: 32),
            ]
            let fromEnvironment = try resolve(.init(), environment)
            #expect(fromEnvironment.agentURL == "https://lead.example:9443")
            #expect(fromEnvironment.credential == .token("env-token", .environment("AURORA_TOKEN")))
            #expect(fromEnvironment.pinOrigin == .environment("AURORA_PIN"))
            let fromFlags = try resolve(.init(token: "flag-token", pin: Self.pin), environment)
            #expect(fromFlags.credential == .token("flag-token", .flag("--token")))
            #expect(fromFlags.pinOrigin == .flag("--pin"))
            // --data-dir (a flag) beats AURORA_TOKEN (a variable); AURORA_DATA_DIR beats the context.
            #expect(try resolve(.init(dataDir: "/d"), environment).credential == .dataDir("/d", .flag("--data-dir")))
            #expect(
                try resolve(.init(), ["AURORA_DATA_DIR": "/e"]).credential
                    == .dataDir("/e", .environment("AURORA_DATA_DIR")))
            #expect(try resolve(.init(agent: "https://lead.example:9443/")).agentOrigin == .flag("--agent"))

            // A context's token and pin go only to its own agent.
            let elsewhere = try resolve(.init(agent: "http://127.0.0.1:9999"))
            #expect(elsewhere.credential == .dataDir(Defaults.dataDir, .builtIn))
            #expect(elsewhere.pin == nil)
            #expect(elsewhere.contextSetAside?.contains("go only to its own agent") == true)
            let viaEnvironment = try resolve(.init(), ["AURORA_AGENT": "https://lead.example:9443"])
            #expect(viaEnvironment.credential == .token("prod-token", .context("prod")))
            #expect(viaEnvironment.agentOrigin == .environment("AURORA_AGENT"))
        }
    }

    // MARK: - The token error

    @Test("a missing, unreadable or empty admin.token names the data dir, what chose it and how to choose another")
    func tokenErrors() throws {
        try withStore { store, scratch in
            func message(_ choice: AgentSettings.Choice, _ environment: [String: String] = [:]) throws -> String {
                let settings = try AgentSettings.resolve(choice, environment: environment) { store }
                let error = #expect(throws: AuroraClientError.self) { try settings.token() }
                return error?.message ?? ""
            }
            let missing = scratch + "/missing"
            let flag = try message(.init(dataDir: missing))
            #expect(flag.contains("\(missing)/admin.token does not exist"))
            #expect(flag.contains("the data dir \(missing) came from --data-dir"))
            for hint in ["--data-dir", "AURORA_TOKEN", "aurora-cli context use"] { #expect(flag.contains(hint)) }
            let environment = try message(.init(), ["AURORA_DATA_DIR": missing])
            #expect(environment.contains("came from AURORA_DATA_DIR"))

            let empty = scratch + "/empty"
            try FileManager.default.createDirectory(atPath: empty, withIntermediateDirectories: true)
            #expect(FileManager.default.createFile(atPath: empty + "/admin.token", contents: Data("\n".utf8)))
            #expect(try message(.init(dataDir: empty)).contains("admin.token is empty"))
            let unreadable = scratch + "/unreadable"
            try FileManager.default.createDirectory(
                atPath: unreadable + "/admin.token", withIntermediateDirectories: true)
            #expect(try message(.init(dataDir: unreadable)).contains("cannot read \(unreadable)/admin.token"))

            let builtIn = try AgentSettings.resolve(.init(), environment: [:]) { store }
            let explained = builtIn.explanation(directory: Defaults.dataDir, origin: .builtIn)
            #expect(explained.contains("/var/lib/aurora is the default data dir"))
            #expect(explained.contains("aurora-cli context use NAME"))

            // A context set aside for another agent is named in the error.
            try store.add(try context("prod", agent: "http://127.0.0.1:7000", token: "prod-token"))
            try store.use("prod")
            let setAside = try message(.init(agent: "http://127.0.0.1:7001", dataDir: missing))
            #expect(setAside.contains("context 'prod' is for http://127.0.0.1:7000"))
            #expect(!setAside.contains("prod-token"))
        }
    }
}
