import AuroraAPI
import Foundation

#if canImport(Glibc)
    import Glibc
#endif

/// The mesh as one table, for `status` and `nodes`.
enum MeshTable {
    /// Whether to colour: a terminal, and NO_COLOR unset.
    static var colour: Bool {
        isatty(STDOUT_FILENO) == 1 && ProcessInfo.processInfo.environment["NO_COLOR"] == nil
    }

    static func paint(_ text: String, _ state: NodeState, colour: Bool) -> String {
        guard colour else { return text }
        let code =
            switch state {
            case .alive: "32"
            case .suspect: "33"
            case .away: "34"
            case .dead: "31"
            case .left: "90"
            }
        return "\u{1B}[\(code)m\(text)\u{1B}[0m"
    }

    /// A GPU counts as free when under 10 % of its memory and 10 % utilization are in use.
    static func freeGPUs(_ node: Node) -> Int {
        node.capabilities.gpus.filter { $0.memoryUsedMB * 10 < max($0.memoryTotalMB, 1) && $0.utilizationPct < 10 }
            .count
    }

    static func lastSeen(_ iso: String, now: Date = Date()) -> String {
        guard let date = parseISO(iso) else { return iso }
        let seconds = max(0, now.timeIntervalSince(date))
        if seconds < 60 { return String(format: "%.1fs ago", seconds) }
        if seconds < 3600 { return "\(Int(seconds / 60))m ago" }
        if seconds < 86_400 { return "\(Int(seconds / 3600))h ago" }
        return "\(Int(seconds / 86_400))d ago"
    }

    static func parseISO(_ text: String) -> Date? {
        let formatter = ISO8601DateFormatter()
        formatter.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
        return formatter.date(from: text) ?? ISO8601DateFormatter().date(from: text)
    }

    /// Free and total VRAM of a node's GPUs in GB: free as the coordinator counts it (total −
    /// used by other processes − reserved by placed jobs) when known.
    static func vram(_ node: Node, gpu: GPUStatus.NodeView?) -> String {
        guard !node.capabilities.gpus.isEmpty else { return "-" }
        let total = node.capabilities.gpus.reduce(0) { $0 + $1.memoryTotalMB }
        let free =
            gpu.map { $0.gpus.reduce(0) { $0 + max(0, $1.freeVramMB) } }
            ?? node.capabilities.gpus.reduce(0) { $0 + max(0, $1.memoryTotalMB - $1.memoryUsedMB) }
        return String(format: "%.1f/%.1f", Double(free) / 1024, Double(total) / 1024)
    }

    /// A node's PostgreSQL server: its state, and the lag of a replica (`streaming 0B 0.0s`).
    static func replica(_ node: Node) -> String {
        guard let postgres = node.postgres else { return "-" }
        guard postgres.role == .replica else { return postgres.state }
        let seconds = postgres.lagS.map { String(format: "%.1fs", $0) }
        return ([postgres.state] + [postgres.lagBytes.map(bytes), seconds].compactMap { $0 }).joined(separator: " ")
    }

    /// A byte count in short form: `512B`, `12kB`, `48.0MB`, `1.2GB`.
    static func bytes(_ count: Int64) -> String {
        switch count {
        case ..<1024: "\(count)B"
        case ..<(1 << 20): String(format: "%.0fkB", Double(count) / 1024)
        case ..<(1 << 30): String(format: "%.1fMB", Double(count) / 1_048_576)
        default: String(format: "%.1fGB", Double(count) / 1_073_741_824)
        }
    }

    /// The table, columns padded; HANDSHAKE is filled by the WireGuard issue.
    static func render(_ list: NodeList, gpu: GPUStatus? = nil, colour: Bool) -> String {
        let header = [
            "NODE", "ROLE", "COMPANY", "VPN IP", "STATE", "LAST SEEN", "GPUS FREE/TOTAL", "VRAM GB FREE/TOTAL", "JOBS",
            "VERSION",
            "REPLICA", "HANDSHAKE",
        ]
        let workers = Dictionary((gpu?.nodes ?? []).map { ($0.name, $0) }, uniquingKeysWith: { $1 })
        let rows: [[String]] = list.nodes.map { node in
            let worker = workers[node.name]
            return [
                node.name, node.role.rawValue, node.company.isEmpty ? "-" : node.company, node.vpnIP,
                node.state.rawValue,
                lastSeen(node.lastSeen), "\(freeGPUs(node))/\(node.capabilities.gpus.count)", vram(node, gpu: worker),
                worker.map { String($0.running) + ($0.accepting ? "" : " (not accepting)") } ?? "-",
                node.version.isEmpty ? "-" : node.version,
                replica(node), node.wireguard.handshakeAgeS.map { String(format: "%.0fs", $0) } ?? "-",
            ].map { TerminalText.safe($0) }
        }
        let widths = header.indices.map { column in ([header] + rows).map { $0[column].count }.max() ?? 0 }
        func line(_ cells: [String], states: NodeState? = nil) -> String {
            cells.enumerated().map { index, cell in
                let padded =
                    index == cells.count - 1 ? cell : cell.padding(toLength: widths[index], withPad: " ", startingAt: 0)
                return index == 4 && states != nil ? paint(padded, states!, colour: colour) : padded
            }.joined(separator: "  ")
        }
        var lines = [colour ? "\u{1B}[1m\(line(header))\u{1B}[0m" : line(header)]
        for (node, row) in zip(list.nodes, rows) { lines.append(line(row, states: node.state)) }
        lines.append(
            summary(list)
                + (gpu.map { status in
                    "  ·  jobs \(status.nodes.reduce(0) { $0 + $1.running }) running, \(status.queued) queued"
                } ?? ""))
        if list.stale {
            let age = list.ageS.map { String(format: "%.1fs", $0) } ?? "unknown"
            let warning =
                "STALE VIEW: the lead is unreachable (\(TerminalText.safe(list.reason ?? "no answer"))); showing the copy cached \(age) ago"
            lines.append(colour ? "\u{1B}[33m\(warning)\u{1B}[0m" : warning)
        }
        return lines.joined(separator: "\n")
    }

    static func summary(_ list: NodeList) -> String {
        let counts = NodeState.allCases.compactMap { state -> String? in
            let n = list.nodes.filter { $0.state == state }.count
            return n == 0 ? nil : "\(n) \(state.rawValue)"
        }
        let gpus = list.nodes.reduce(0) { $0 + $1.capabilities.gpus.count }
        let free = list.nodes.filter { $0.state == .alive }.reduce(0) { $0 + freeGPUs($1) }
        return
            "\(list.nodes.count) node\(list.nodes.count == 1 ? "" : "s"): \(counts.joined(separator: ", "))  ·  GPUs \(free)/\(gpus) free"
    }
}
