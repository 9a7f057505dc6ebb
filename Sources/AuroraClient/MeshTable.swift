import AuroraAPI
import Foundation

/// The mesh as one table, for `aurora-cli status` and `aurora-cli nodes`. Pure: the caller says
/// whether to colour and what time it is, so tests render it without a terminal or a clock.
///
/// By default the table fits ``width`` columns: NODE, ROLE, STATE, LAST SEEN, GPUS (free/total
/// and the model), VRAM GB (free/total), JOBS and REPLICA, the widest cells cut with `…` when the
/// rows would not fit. `wide` adds COMPANY, VPN IP, VERSION and HANDSHAKE and cuts nothing. Every
/// cell is made safe for a terminal (``TerminalText``): names and versions come from other machines.
public enum MeshTable {
    /// The most columns a line takes unless `wide`.
    public static let width = 100

    /// One column: its header, and how narrow cutting may make it (nil: never cut, as STATE,
    /// whose age mark must show, and the short numeric columns).
    struct Column {
        var header: String
        var minimum: Int?
        var cell: (Row) -> String
    }

    /// What one row is made of.
    struct Row {
        var node: Node
        var worker: GPUStatus.NodeView?
    }

    // MARK: Table

    /// The table and its summary line. A stale list (the answering agent's cached copy) marks each
    /// state with the copy's age, `alive (8s ago)`: the state as of then, not now. The warning
    /// that goes first is ``staleWarning(_:lead:wide:)``'s.
    public static func render(
        _ list: NodeList, gpu: GPUStatus? = nil, wide: Bool = false, colour: Bool, now: Date = Date()
    ) -> String {
        let workers = Dictionary((gpu?.nodes ?? []).map { ($0.name, $0) }, uniquingKeysWith: { $1 })
        let rows = list.nodes.map { Row(node: $0, worker: workers[$0.name]) }
        let staleAge = list.stale ? (list.ageS ?? 0) : nil
        let columns = columns(wide: wide, staleAge: staleAge, now: now)
        let header = columns.map(\.header)
        let cells = rows.map { row in columns.map { TerminalText.safe($0.cell(row)) } }
        var widths = header.indices.map { column in ([header] + cells).map { $0[column].count }.max() ?? 0 }
        if !wide {
            let minimums = zip(columns, widths).map { column, width in min(width, column.minimum ?? width) }
            widths = fit(widths, minimums: minimums, limit: width)
        }
        let stateColumn = header.firstIndex(of: "STATE")
        func line(_ cells: [String], state: NodeState? = nil) -> String {
            cells.enumerated().map { index, cell in
                let clipped = clip(cell, to: widths[index])
                let padded =
                    index == cells.count - 1
                    ? clipped : clipped.padding(toLength: widths[index], withPad: " ", startingAt: 0)
                guard index == stateColumn, let state else { return padded }
                return paint(padded, state, colour: colour)
            }.joined(separator: "  ")
        }
        var lines = [colour ? "\u{1B}[1m\(line(header))\u{1B}[0m" : line(header)]
        for (row, cells) in zip(rows, cells) { lines.append(line(cells, state: row.node.state)) }
        let summary =
            summary(list, workers: workers)
            + (gpu.map { status in
                "  ·  jobs \(status.nodes.reduce(0) { $0 + $1.running }) running, \(status.queued) queued"
            } ?? "")
        // Too long for one line: one part a line.
        lines.append(wide || summary.count <= width ? summary : summary.replacingOccurrences(of: "  ·  ", with: "\n"))
        return lines.joined(separator: "\n")
    }

    /// The columns, narrow or wide.
    static func columns(wide: Bool, staleAge: Double?, now: Date) -> [Column] {
        let state = Column(header: "STATE", minimum: nil) { row in
            row.node.state.rawValue + (row.node.scheduling.map { ", \($0.state.rawValue)" } ?? "")
                + (staleAge.map { " (\(age($0)) ago)" } ?? "")
        }
        let gpus = Column(header: wide ? "GPUS FREE/TOTAL" : "GPUS", minimum: 9) { gpuSummary($0, wide: wide) }
        let vram = Column(header: wide ? "VRAM GB FREE/TOTAL" : "VRAM GB", minimum: nil) {
            MeshTable.vram($0.node, gpu: $0.worker)
        }
        let jobs = Column(header: "JOBS", minimum: nil) { row in
            row.worker.map { String($0.running) + ($0.accepting ? "" : wide ? " (not accepting)" : " off") } ?? "-"
        }
        let seen = Column(header: "LAST SEEN", minimum: nil) { lastSeen($0.node.lastSeen, now: now) }
        let name = Column(header: "NODE", minimum: 12) { $0.node.name }
        let role = Column(header: "ROLE", minimum: nil) { $0.node.role.rawValue }
        let replica = Column(header: "REPLICA", minimum: 13) { MeshTable.replica($0.node) }
        guard wide else { return [name, role, state, seen, gpus, vram, jobs, replica] }
        return [
            name, role,
            Column(header: "COMPANY", minimum: 7) { $0.node.company.isEmpty ? "-" : $0.node.company },
            Column(header: "VPN IP", minimum: 6) { $0.node.vpnIP },
            state, seen, gpus, vram, jobs,
            Column(header: "VERSION", minimum: 7) { $0.node.version.isEmpty ? "-" : $0.node.version },
            replica,
            Column(header: "HANDSHAKE", minimum: 9) { row in
                row.node.wireguard.handshakeAgeS.map { String(format: "%.0fs", $0) } ?? "-"
            },
        ]
    }

    /// Column widths that fit `limit` with two spaces between columns: the widest column that can
    /// still give a character gives one, until the line fits or every column is at its minimum.
    /// The narrow columns' minimums (NODE 12, GPUS 9, REPLICA 13 so that `not_a_replica` shows
    /// whole, the rest uncut: at most 7 + 17 + 9 + 13 + 6) add up to 100 with the gaps.
    static func fit(_ widths: [Int], minimums: [Int], limit: Int) -> [Int] {
        var widths = widths
        var total = widths.reduce(0, +) + 2 * max(0, widths.count - 1)
        while total > limit {
            let shrinkable = widths.indices.filter { widths[$0] > minimums[$0] }
            guard let widest = shrinkable.max(by: { widths[$0] < widths[$1] }) else { break }
            widths[widest] -= 1
            total -= 1
        }
        return widths
    }

    /// `text` cut to `width` characters, the last one `…` when it was cut.
    static func clip(_ text: String, to width: Int) -> String {
        guard text.count > width else { return text }
        guard width > 1 else { return String(text.prefix(width)) }
        return String(text.prefix(width - 1)) + "…"
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

    // MARK: Stale view

    /// The lines that go before the table when `list` is an agent's cached copy (nil when it is
    /// the lead's own): that the lead is unreachable, since when (from `/health`'s `lead`), how
    /// old the copy is, and why the last call failed; each line cut to ``width`` unless `wide`.
    public static func staleWarning(_ list: NodeList, lead: LeadHealth? = nil, wide: Bool = false) -> [String]? {
        guard list.stale else { return nil }
        var first = "STALE VIEW: the lead is unreachable"
        if let lead, lead.state == .unreachable {
            first += lead.unreachableS.map { " for \(age($0))" } ?? ""
            first += lead.since.map { " (since \($0))" } ?? ""
        }
        var lines = [
            first,
            "  the rows are this agent's copy cached " + (list.ageS.map { age($0) + " ago" } ?? "earlier")
                + ", not the mesh now",
        ]
        if let reason = list.reason { lines.append("  last error: " + TerminalText.safe(reason)) }
        return wide ? lines : lines.map { clip($0, to: width) }
    }

    /// An age in seconds, short: `8s`, `12m`, `3h`, `2d`.
    public static func age(_ seconds: Double) -> String {
        let seconds = max(0, seconds)
        if seconds < 60 { return "\(Int(seconds))s" }
        if seconds < 3600 { return "\(Int(seconds / 60))m" }
        if seconds < 86_400 { return "\(Int(seconds / 3600))h" }
        return "\(Int(seconds / 86_400))d"
    }

    // MARK: Cells

    /// `free/total model`: `1/2 RTX 4090`; `mixed` for several models; the model's full name when `wide`.
    static func gpuSummary(_ row: Row, wide: Bool) -> String {
        let gpus = row.node.capabilities.gpus
        guard !gpus.isEmpty else { return "-" }
        let names = Set(gpus.map(\.name))
        let model = names.count == 1 ? (wide ? gpus[0].name : shortModel(gpus[0].name)) : "mixed"
        return "\(freeGPUs(row.node, worker: row.worker))/\(gpus.count) \(model)"
    }

    /// A GPU model without its vendor and brand words: `NVIDIA GeForce RTX 4090` → `RTX 4090`.
    static func shortModel(_ name: String) -> String {
        var words = name.split(separator: " ").map(String.init)
        words.removeAll { ["NVIDIA", "GeForce", "Tesla", "AMD", "Radeon"].contains($0) }
        return words.isEmpty ? name : words.joined(separator: " ")
    }

    /// GPUs that nothing uses. Without the coordinator's view: under 10 % of memory and of
    /// utilization in use. With it, also nothing reserved on it, and one more GPU taken for each
    /// placed job that reserves no VRAM (such a job does not say which GPU it holds): a busy
    /// GPU never counts as free, at the price of sometimes counting an idle one as busy.
    static func freeGPUs(_ node: Node, worker: GPUStatus.NodeView?) -> Int {
        let idle = { (gpu: GPU) in gpu.memoryUsedMB * 10 < max(gpu.memoryTotalMB, 1) && gpu.utilizationPct < 10 }
        guard let worker else { return node.capabilities.gpus.filter(idle).count }
        let reserved = worker.gpus.filter { $0.reservedMB > 0 }.count
        let open = worker.gpus.filter { $0.reservedMB == 0 && idle($0.gpu) }.count
        return max(0, open - max(0, worker.running - reserved))
    }

    public static func lastSeen(_ iso: String, now: Date = Date()) -> String {
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
    public static func bytes(_ count: Int64) -> String {
        switch count {
        case ..<1024: "\(count)B"
        case ..<(1 << 20): String(format: "%.0fkB", Double(count) / 1024)
        case ..<(1 << 30): String(format: "%.1fMB", Double(count) / 1_048_576)
        default: String(format: "%.1fGB", Double(count) / 1_073_741_824)
        }
    }

    /// `N nodes: a alive, d dead  ·  GPUs f/t free` (free GPUs of alive nodes only).
    static func summary(_ list: NodeList, workers: [String: GPUStatus.NodeView]) -> String {
        let counts = NodeState.allCases.compactMap { state -> String? in
            let n = list.nodes.filter { $0.state == state }.count
            return n == 0 ? nil : "\(n) \(state.rawValue)"
        }
        let gpus = list.nodes.reduce(0) { $0 + $1.capabilities.gpus.count }
        let free = list.nodes.filter { $0.state == .alive }.reduce(0) { $0 + freeGPUs($1, worker: workers[$1.name]) }
        return
            "\(list.nodes.count) node\(list.nodes.count == 1 ? "" : "s"): \(counts.joined(separator: ", "))  ·  GPUs \(free)/\(gpus) free"
            + (list.stale ? " (as of the cached copy)" : "")
    }
}
