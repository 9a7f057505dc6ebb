import AuroraAPI
import Foundation

/// What an alert webhook sends for one event: the body in the webhook's format and the headers
/// a receiver dedupes and routes by. Pure, so the formats are tested without a server.
enum WebhookPayload {
    /// The request body: the API's event JSON (`json`), or `{"text": "..."}` (`slack`).
    static func body(_ event: MeshEvent, format: WebhookConfig.Format) -> [UInt8] {
        switch format {
        case .json:
            return (try? APICoding.encoder().encode(event)).map { Array($0) } ?? Array("{}".utf8)
        case .slack:
            let text = SlackMessage(text: slackText(event))
            return (try? APICoding.encoder().encode(text)).map { Array($0) } ?? Array("{}".utf8)
        }
    }

    /// Headers of every attempt at `event`: the event's id (the same on every attempt and after a
    /// restart, so a receiver can drop a repeat), its type and sequence, the webhook's name.
    static func headers(_ event: MeshEvent, webhook: String, attempt: Int) -> [(String, String)] {
        [
            ("Content-Type", "application/json"),
            ("User-Agent", "aurora-nodeagent/\(AuroraVersion.current)"),
            ("X-Aurora-Event-ID", event.id),
            ("X-Aurora-Event-Type", event.type),
            ("X-Aurora-Event-Seq", String(event.seq)),
            ("X-Aurora-Webhook", webhook),
            ("X-Aurora-Attempt", String(attempt)),
        ]
    }

    /// Slack's incoming-webhook body.
    struct SlackMessage: Encodable {
        var text: String
    }

    // MARK: Slack text

    /// One readable line for people, e.g. `[aurora] node gpu-1 is dead (was suspect: missed_heartbeats)`.
    /// Every value from the event is cut short, loses control characters and has `&`, `<` and `>`
    /// escaped, so a node's report cannot break the line or inject Slack markup (mentions, links).
    static func slackText(_ event: MeshEvent) -> String {
        let node = event.node.map(clean) ?? "the mesh"
        func field(_ key: String) -> String? { event.data[key].flatMap(describe).map(clean) }
        let from = field("from")
        let was = from.map { " (was \($0)" } ?? ""
        let line: String
        switch event.type {
        case EventType.nodeStateChanged:
            let reason = field("reason").map { ": \($0)" } ?? ""
            line = "node \(node) is \(field("to") ?? "?")" + (from != nil ? was + reason + ")" : reason)
        case EventType.nodeJoined:
            line = "node \(node) joined"
        case EventType.nodeLeft:
            line = "node \(node) left"
        case EventType.alertRaised:
            let resource = field("resource") ?? "resource"
            let duration = field("for_s").map { " for \($0) s" } ?? ""
            line =
                "alert on \(node): \(resource) at \(field("value_pct") ?? "?") %\(duration) (threshold \(field("threshold_pct") ?? "?") %)"
        case EventType.alertCleared:
            line = "alert cleared on \(node): \(field("resource") ?? "resource") at \(field("value_pct") ?? "?") %"
        case EventType.checkChanged:
            let output = field("output").flatMap { $0.isEmpty ? nil : ": \($0)" } ?? ""
            line =
                "check \(field("check") ?? "?") on \(node) is \(field("to") ?? "?")" + (from != nil ? was + ")" : "")
                + output
        case EventType.checkRecovery:
            let exit = field("exit_code").map { " (exit \($0))" } ?? ""
            line = "recovery of check \(field("check") ?? "?") ran on \(node)\(exit)"
        case EventType.replicaStateChanged:
            var details: [String] = []
            if let reason = field("reason"), !reason.isEmpty { details.append(reason) }
            if let lag = field("lag_s") { details.append("lag \(lag) s") }
            if let lag = field("lag_bytes") { details.append("lag \(lag) bytes") }
            let detail = details.isEmpty ? "" : ": " + details.joined(separator: ", ")
            line = "PostgreSQL on \(node) is \(field("to") ?? "?")" + (from != nil ? was + ")" : "") + detail
        case EventType.replicaSlotInactive:
            line =
                "replication slot \(field("slot") ?? "?") on \(node) retains \(field("retained_bytes") ?? "?") bytes for no one"
        default:
            line = "\(clean(event.type)) on \(node)"
        }
        return "[aurora] " + line
    }

    /// A value as text: strings as they are, whole numbers without a fraction, others with one decimal.
    static func describe(_ value: JSONValue) -> String? {
        switch value {
        case .string(let text): return text
        case .number(let number):
            guard number.isFinite else { return nil }
            if number == number.rounded(), abs(number) < 1e15 { return String(Int64(number)) }
            return String(format: "%.1f", number)
        case .bool(let flag): return String(flag)
        case .null, .array, .object: return nil
        }
    }

    /// At most 200 characters, control characters as spaces, Slack's `&`, `<`, `>` escaped.
    static func clean(_ text: String) -> String {
        var result = ""
        for character in text.prefix(200) {
            switch character {
            case "&": result += "&amp;"
            case "<": result += "&lt;"
            case ">": result += "&gt;"
            default:
                if character.unicodeScalars.contains(where: { $0.properties.generalCategory == .control }) {
                    result += " "
                } else {
                    result.append(character)
                }
            }
        }
        return result
    }
}
