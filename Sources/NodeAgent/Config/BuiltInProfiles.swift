/// The lead, compute and edge profiles, built into the binary (`profiles/embed` writes them
/// from `profiles/*.yaml`): the defaults when no profile file is found on disk, so a moved or
/// installed `nodeagent` always starts. A file found on disk wins.
public enum BuiltInProfiles {
    /// The pseudo-path ``ProfileLocator`` answers for a built-in profile: `built-in:NAME`.
    static let prefix = "built-in:"

    /// The profile text by name.
    static let all: [String: String] = ["lead": lead, "compute": compute, "edge": edge]

    /// The text behind a pseudo-path from ``ProfileLocator/locate(_:profilesDir:environment:executable:)``;
    /// nil for a real path.
    static func text(at path: String) -> String? {
        guard path.hasPrefix(prefix) else { return nil }
        return all[String(path.dropFirst(prefix.count))]
    }
}
