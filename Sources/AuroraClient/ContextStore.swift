import Foundation

#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

/// The operator's saved contexts: `$XDG_CONFIG_HOME/aurora` (else `~/.config/aurora`) holds
/// `contexts/NAME.json`, one per context, and `current-context`, the name `context use` chose.
/// Directories are 0700 and files 0600; every file is written whole to a temporary file and
/// renamed over the old one, so a crash leaves the old file or the new one, never half of one.
/// A file readable by others, a link, or one that does not parse is refused with its path.
public struct ContextStore: Sendable {
    /// `…/aurora`.
    public let directory: String

    /// The longest file the store reads.
    static let maximumFileSize = 64 * 1024

    public init(directory: String) {
        self.directory = directory
    }

    /// The store of this user: `$XDG_CONFIG_HOME/aurora` when that is an absolute path, else
    /// `$HOME/.config/aurora`.
    public init(environment: [String: String]) throws(AuroraClientError) {
        if let config = environment["XDG_CONFIG_HOME"], config.hasPrefix("/") {
            self.init(directory: Self.trimmed(config) + "/aurora")
        } else if let home = environment["HOME"], home.hasPrefix("/") {
            self.init(directory: Self.trimmed(home) + "/.config/aurora")
        } else {
            throw AuroraClientError(
                .context, "neither XDG_CONFIG_HOME nor HOME is an absolute path, so there is no context store")
        }
    }

    var contextsDirectory: String { directory + "/contexts" }
    /// The file naming the current context.
    public var currentPath: String { directory + "/current-context" }
    /// The file of the context `name`.
    public func path(of name: String) -> String { contextsDirectory + "/" + name + ".json" }

    // MARK: - Contexts

    /// Saves `context`; an existing one of that name is replaced only when `replace` is true.
    public func add(_ context: AgentContext, replace: Bool = false) throws(AuroraClientError) {
        try makeDirectories()
        let path = path(of: context.name)
        if !replace, exists(path) {
            throw AuroraClientError(
                .context,
                "a context named '\(context.name)' exists (\(path)); remove it first or pass --force to replace it")
        }
        let data: Data
        do {
            data = try JSONEncoder.sorted.encode(context.file)
        } catch {
            throw AuroraClientError(.context, "cannot encode context '\(context.name)'")
        }
        try Self.writeAtomically(Array(data) + [10], to: path)
    }

    /// The context `name`; throws when there is none or its file is not a valid context.
    public func context(_ name: String) throws(AuroraClientError) -> AgentContext {
        try AgentContext.validateName(name)
        let path = path(of: name)
        guard let bytes = try Self.readPrivate(path) else {
            throw AuroraClientError(
                .context, "there is no context '\(name)' (\(path)); 'aurora-cli context list' shows the saved ones")
        }
        let file: AgentContext.File
        do {
            file = try JSONDecoder().decode(AgentContext.File.self, from: Data(bytes))
        } catch {
            throw Self.corrupt(path, name: name, "it is not a context's JSON")
        }
        guard file.version == 1 else { throw Self.corrupt(path, name: name, "version \(file.version) is unknown") }
        guard file.name == name else { throw Self.corrupt(path, name: name, "it names another context") }
        do {
            return try AgentContext(name: file.name, agent: file.agent, pin: file.pin, token: file.token)
        } catch {
            throw Self.corrupt(path, name: name, error.message)
        }
    }

    /// The names of the saved contexts, sorted (valid or not: ``context(_:)`` says which).
    public func names() throws(AuroraClientError) -> [String] {
        guard exists(contextsDirectory) else { return [] }
        let entries: [String]
        do {
            entries = try FileManager.default.contentsOfDirectory(atPath: contextsDirectory)
        } catch {
            throw AuroraClientError(.context, "cannot read \(contextsDirectory): \(Self.reason(error))")
        }
        return entries.filter { $0.hasSuffix(".json") }.map { String($0.dropLast(5)) }
            .filter { (try? AgentContext.validateName($0)) != nil }.sorted()
    }

    /// Deletes the context `name`, and the current-context pointer when it named it. Works on a
    /// file that no longer parses. Returns whether it was the current context.
    @discardableResult
    public func remove(_ name: String) throws(AuroraClientError) -> Bool {
        try AgentContext.validateName(name)
        let path = path(of: name)
        guard exists(path) else {
            throw AuroraClientError(.context, "there is no context '\(name)' (\(path))")
        }
        let wasCurrent = (try? current()) == name
        guard unlink(path) == 0 else {
            throw AuroraClientError(.context, "cannot remove \(path): \(String(cString: strerror(errno)))")
        }
        if wasCurrent { try clearCurrent() }
        return wasCurrent
    }

    // MARK: - The current context

    /// The name in `current-context`, nil when there is none.
    public func current() throws(AuroraClientError) -> String? {
        guard let bytes = try Self.readPrivate(currentPath) else { return nil }
        let name = String(decoding: bytes, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
        do {
            try AgentContext.validateName(name)
        } catch {
            throw AuroraClientError(
                .context,
                "\(currentPath) does not hold a context name; choose one with 'aurora-cli context use NAME' "
                    + "(or 'context use --none')")
        }
        return name
    }

    /// Makes `name` (which must be a valid saved context) the current one.
    public func use(_ name: String) throws(AuroraClientError) {
        _ = try context(name)
        try makeDirectories()
        try Self.writeAtomically(Array((name + "\n").utf8), to: currentPath)
    }

    /// Forgets the current context (commands fall back to their defaults).
    public func clearCurrent() throws(AuroraClientError) {
        guard unlink(currentPath) == 0 || errno == ENOENT else {
            throw AuroraClientError(.context, "cannot remove \(currentPath): \(String(cString: strerror(errno)))")
        }
    }

    // MARK: - Files

    func exists(_ path: String) -> Bool {
        var info = stat()
        return lstat(path, &info) == 0
    }

    /// Creates the store's directories 0700 (and a missing parent such as `~/.config` 0700),
    /// and tightens them to 0700 when they exist.
    func makeDirectories() throws(AuroraClientError) {
        let parent = (directory as NSString).deletingLastPathComponent
        for path in [parent, directory, contextsDirectory] {
            if mkdir(path, 0o700) != 0 && errno != EEXIST {
                throw AuroraClientError(.context, "cannot create \(path): \(String(cString: strerror(errno)))")
            }
            var info = stat()
            guard stat(path, &info) == 0, (info.st_mode & S_IFMT) == S_IFDIR else {
                throw AuroraClientError(.context, "\(path) is not a directory")
            }
            if path != parent, info.st_mode & 0o777 != 0o700 {
                guard chmod(path, 0o700) == 0 else {
                    throw AuroraClientError(
                        .context, "cannot make \(path) private (chmod 700): \(String(cString: strerror(errno)))")
                }
            }
        }
    }

    /// Writes `bytes` to `path` through a 0600 temporary file in the same directory: fsync,
    /// rename over `path`, fsync of the directory.
    static func writeAtomically(_ bytes: [UInt8], to path: String) throws(AuroraClientError) {
        let temporary =
            (path as NSString).deletingLastPathComponent + "/." + (path as NSString).lastPathComponent
            + ".tmp-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        let fd = open(temporary, O_CREAT | O_EXCL | O_WRONLY | O_CLOEXEC | O_NOFOLLOW, 0o600)
        guard fd >= 0 else {
            throw AuroraClientError(.context, "cannot write \(path): \(String(cString: strerror(errno)))")
        }
        func fail(_ reason: String) -> AuroraClientError {
            close(fd)
            unlink(temporary)
            return AuroraClientError(.context, "cannot write \(path): \(reason)")
        }
        guard fchmod(fd, 0o600) == 0 else { throw fail(String(cString: strerror(errno))) }
        var written = 0
        while written < bytes.count {
            let n = bytes.withUnsafeBytes { write(fd, $0.baseAddress! + written, bytes.count - written) }
            if n < 0 {
                if errno == EINTR { continue }
                throw fail(String(cString: strerror(errno)))
            }
            written += n
        }
        guard fsync(fd) == 0 else { throw fail(String(cString: strerror(errno))) }
        close(fd)
        guard rename(temporary, path) == 0 else {
            let reason = String(cString: strerror(errno))
            unlink(temporary)
            throw AuroraClientError(.context, "cannot write \(path): \(reason)")
        }
        let directory = open((path as NSString).deletingLastPathComponent, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        if directory >= 0 {
            fsync(directory)
            close(directory)
        }
    }

    /// The bytes of a private file, nil when it does not exist. Refuses a link, anything but a
    /// regular file, a file others may read or write, and one over 64 KiB.
    static func readPrivate(_ path: String) throws(AuroraClientError) -> [UInt8]? {
        let fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW)
        guard fd >= 0 else {
            if errno == ENOENT { return nil }
            if errno == ELOOP {
                throw AuroraClientError(.context, "\(path) is a symbolic link; the context store takes only files")
            }
            throw AuroraClientError(.context, "cannot read \(path): \(String(cString: strerror(errno)))")
        }
        defer { close(fd) }
        var info = stat()
        guard fstat(fd, &info) == 0, (info.st_mode & S_IFMT) == S_IFREG else {
            throw AuroraClientError(.context, "\(path) is not a regular file")
        }
        guard info.st_mode & 0o077 == 0 else {
            throw AuroraClientError(
                .context,
                "\(path) may be read by others (mode \(String(info.st_mode & 0o777, radix: 8))); "
                    + "it holds a token: run 'chmod 600 \(path)'")
        }
        guard info.st_size <= maximumFileSize else {
            throw AuroraClientError(.context, "\(path) is larger than \(maximumFileSize / 1024) KiB")
        }
        var bytes = [UInt8](repeating: 0, count: Int(info.st_size) + 1)
        var total = 0
        while total < bytes.count {
            let n = bytes.withUnsafeMutableBytes { read(fd, $0.baseAddress! + total, $0.count - total) }
            if n < 0 {
                if errno == EINTR { continue }
                throw AuroraClientError(.context, "cannot read \(path): \(String(cString: strerror(errno)))")
            }
            if n == 0 { break }
            total += n
        }
        guard total <= maximumFileSize else {
            throw AuroraClientError(.context, "\(path) is larger than \(maximumFileSize / 1024) KiB")
        }
        return Array(bytes.prefix(total))
    }

    static func corrupt(_ path: String, name: String, _ reason: String) -> AuroraClientError {
        AuroraClientError(
            .context,
            "context '\(name)' is damaged (\(path): \(reason)); "
                + "replace it with 'aurora-cli context add \(name) --force ...' or 'aurora-cli context remove \(name)'")
    }

    static func reason(_ error: any Error) -> String {
        let nsError = error as NSError
        if let underlying = nsError.userInfo[NSUnderlyingErrorKey] as? NSError, underlying.domain == NSPOSIXErrorDomain
        {
            return String(cString: strerror(Int32(underlying.code)))
        }
        return nsError.localizedDescription
    }

    static func trimmed(_ path: String) -> String {
        path.count > 1 && path.hasSuffix("/") ? String(path.dropLast()) : path
    }
}

extension JSONEncoder {
    /// Sorted keys, so a context file reads the same every time it is written.
    static var sorted: JSONEncoder {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        return encoder
    }
}
