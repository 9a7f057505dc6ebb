import AuroraAPI
import Foundation
import Yams

/// One alert webhook of the lead's profile (`alerts.webhooks[]`): where the lead POSTs the
/// events it takes, and in which form.
///
/// ```yaml
/// alerts:
///   webhooks:
///     - {name: ops, url_file: /etc/aurora/ops-webhook.url, format: slack}
///     - {name: pager, url: "https://hooks.example.net/aurora", events: [node.state_changed, alert.raised]}
/// ```
public struct WebhookConfig: Sendable, Equatable {
    /// The body of each request.
    public enum Format: String, Sendable, CaseIterable {
        /// The event as the API writes it (`{"id","seq","type","at","node","data"}`).
        case json
        /// `{"text": "..."}` with a one-line summary (Slack, Mattermost, Rocket.Chat incoming webhooks).
        case slack
    }

    /// Where the URL comes from.
    public enum Target: Sendable, Equatable {
        /// Written in the profile (`url`).
        case url(String)
        /// Read at start from a file only its owner may read (`url_file`), so the secret path of
        /// a Slack URL is not in the profile.
        case file(String)
    }

    /// Unique among the webhooks: letters, digits, `-`, `_`, `.`, at most 63. The lead keeps the
    /// webhook's place in the event log under this name: a new name takes the events from the lead's start on.
    public var name: String
    public var target: Target
    public var format: Format
    /// The event types it takes, sorted, without duplicates.
    public var events: [String]
    /// Seconds one attempt may take before it counts as failed (`timeout_s`, default 10).
    public var timeout: Double

    /// The event types a webhook may take.
    public static let eventTypes: [String] = [
        EventType.nodeStateChanged, EventType.alertRaised, EventType.checkChanged, EventType.replicaStateChanged,
        EventType.alertCleared, EventType.checkRecovery, EventType.nodeJoined, EventType.nodeLeft,
        EventType.replicaSlotInactive,
    ]

    /// What a webhook without `events` takes.
    public static let defaultEvents: [String] = [
        EventType.alertRaised, EventType.checkChanged, EventType.nodeStateChanged, EventType.replicaStateChanged,
    ]

    /// The keys a `webhooks:` entry may have; any other is a configuration error.
    static let keys = ["name", "url", "url_file", "format", "events", "timeout_s"]

    /// The longest URL accepted.
    static let maxURLLength = 2048

    /// `alerts.webhooks[N]`: how errors name an entry.
    static func position(_ index: Int) -> String { "alerts.webhooks[\(index)]" }

    /// Parses one `alerts.webhooks` entry; errors name the file, line, entry and key, never a URL.
    static func parse(_ node: Yams.Node, position index: Int, origin: String) throws(AgentError) -> WebhookConfig {
        let at = position(index)
        guard case .mapping(let mapping) = node else {
            throw AgentError(.config, "\(origin): \(at) must be a mapping {name, url | url_file, format?, events?}")
        }
        var scalars: [String: String] = [:]
        var events: [String]?
        for (keyNode, valueNode) in mapping {
            guard let key = keyNode.string, keys.contains(key) else {
                throw AgentError(
                    .config,
                    "\(origin): unknown key '\(at).\(keyNode.string ?? "?")'; known: \(keys.joined(separator: ", "))")
            }
            if key == "events" {
                guard case .sequence(let items) = valueNode, !items.isEmpty else {
                    throw AgentError(
                        .config,
                        "\(origin): '\(at).events' must be a non-empty list of event types: \(eventTypes.joined(separator: ", "))"
                    )
                }
                var types: [String] = []
                for item in items {
                    guard case .scalar(let scalar) = item, eventTypes.contains(scalar.string) else {
                        let shown = item.string.map { String($0.prefix(60)) } ?? "?"
                        throw AgentError(
                            .config,
                            "\(origin): '\(at).events' has '\(shown)', which is not an event type a webhook takes; known: \(eventTypes.joined(separator: ", "))"
                        )
                    }
                    types.append(scalar.string)
                }
                events = types
            } else {
                guard case .scalar(let scalar) = valueNode else {
                    throw AgentError(.config, "\(origin): '\(at).\(key)' must be a single value")
                }
                scalars[key] = scalar.string
            }
        }
        guard let name = scalars["name"], !name.isEmpty else {
            throw AgentError(.config, "\(origin): \(at) needs 'name'")
        }
        guard name.count <= 63, name.allSatisfy({ $0.isASCII && ($0.isLetter || $0.isNumber || "-_.".contains($0)) })
        else {
            throw AgentError(
                .config, "\(origin): '\(at).name' must be letters, digits, '-', '_' or '.' (at most 63)")
        }
        let target: Target
        switch (scalars["url"], scalars["url_file"]) {
        case (let url?, nil):
            if let problem = urlProblem(url) {
                throw AgentError(.config, "\(origin): '\(at).url' \(problem)")
            }
            target = .url(url)
        case (nil, let file?):
            guard file.hasPrefix("/"), !file.contains("\0") else {
                throw AgentError(.config, "\(origin): '\(at).url_file' must be an absolute path")
            }
            target = .file(file)
        default:
            throw AgentError(
                .config,
                "\(origin): webhook '\(name)' needs exactly one of 'url' or 'url_file' (a 0600 file holding the URL)")
        }
        let formatText = scalars["format"] ?? Format.json.rawValue
        guard let format = Format(rawValue: formatText) else {
            throw AgentError(
                .config,
                "\(origin): '\(at).format' must be one of \(Format.allCases.map(\.rawValue).joined(separator: ", ")), got '\(formatText.prefix(60))'"
            )
        }
        var timeout = 10.0
        if let text = scalars["timeout_s"] {
            guard let value = Double(text), (0.1...120).contains(value) else {
                throw AgentError(
                    .config, "\(origin): '\(at).timeout_s' must be a number in 0.1...120, got '\(text.prefix(60))'")
            }
            timeout = value
        }
        return WebhookConfig(
            name: name, target: target, format: format, events: Array(Set(events ?? defaultEvents)).sorted(),
            timeout: timeout)
    }

    /// Why `text` is not a webhook URL (`must be ...`), or nil when it is one: http or https,
    /// a host, no user name or password, at most 2048 characters, no spaces or control characters.
    /// The reason never repeats the URL (its path may be a secret).
    static func urlProblem(_ text: String) -> String? {
        let expectation = "must be an http:// or https:// URL with a host"
        guard !text.isEmpty, text.utf8.count <= maxURLLength else {
            return "must be an http(s) URL of 1 to \(maxURLLength) characters"
        }
        guard !text.unicodeScalars.contains(where: { $0.properties.generalCategory == .control || $0 == " " }) else {
            return "must not contain spaces or control characters"
        }
        guard let components = URLComponents(string: text), let scheme = components.scheme?.lowercased(),
            ["http", "https"].contains(scheme), let host = components.host, !host.isEmpty
        else { return expectation }
        guard components.user == nil, components.password == nil else {
            return "must not carry a user name or password (put the secret in the path, and the URL in url_file)"
        }
        return nil
    }

    /// `scheme://host[:port]` of a URL: what logs and errors show of a webhook (its path and query
    /// may hold the secret).
    public static func redacted(_ url: String) -> String {
        guard let components = URLComponents(string: url), let scheme = components.scheme, let host = components.host
        else { return Redaction.marker }
        return "\(scheme.lowercased())://\(host)" + (components.port.map { ":\($0)" } ?? "")
    }

    /// The webhook's URL: the profile's, or the first line of `url_file`. The file must be a
    /// regular file that only its owner can read or write (0600 or 0400), since it holds a
    /// secret; throws ``AgentError`` with code `config` naming the webhook and file otherwise.
    public func resolveURL() throws(AgentError) -> String {
        switch target {
        case .url(let url): return url
        case .file(let path):
            guard let status = FileStatus.of(path) else {
                throw AgentError(.config, "webhook '\(name)': cannot read url_file \(path)")
            }
            guard status.isRegularFile, status.size <= 8192 else {
                throw AgentError(.config, "webhook '\(name)': url_file \(path) must be a small regular file")
            }
            guard status.permissions & 0o077 == 0 else {
                throw AgentError(
                    .config,
                    "webhook '\(name)': url_file \(path) is readable by others (mode \(String(status.permissions, radix: 8))); chmod 600 it"
                )
            }
            guard let text = try? String(contentsOfFile: path, encoding: .utf8) else {
                throw AgentError(.config, "webhook '\(name)': cannot read url_file \(path)")
            }
            let url = text.trimmingCharacters(in: .whitespacesAndNewlines)
            if let problem = Self.urlProblem(url) {
                throw AgentError(.config, "webhook '\(name)': the URL in \(path) \(problem)")
            }
            return url
        }
    }

    /// For `nodeagent config`: the name, format, where the URL comes from (scheme and host only)
    /// and the event types.
    public var summary: String {
        let url: String
        switch target {
        case .url(let text): url = Self.redacted(text) + "/…"
        case .file(let path): url = "url_file " + path
        }
        return "\(name): \(format.rawValue) \(url) [\(events.joined(separator: ","))]"
    }
}
