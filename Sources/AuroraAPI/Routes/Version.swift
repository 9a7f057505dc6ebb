/// The version of the agent and the CLI, reported in `/health` and heartbeats.
public enum AuroraVersion {
    public static let current = "0.1.0"
}
