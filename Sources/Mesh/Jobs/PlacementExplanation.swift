/// Why a job is not running, node by node, like Nomad's placement failures: every known worker
/// is put under the first rule it fails, and the rules say whether the node could ever take the
/// job (it lacks the hardware, the labels or the permission) or only not now (it is away, not
/// accepting, cordoned, or its GPUs are busy).
///
/// The order of the rules: what the node is (labels, GPU model, GPU count, total VRAM), what its
/// worker allows (exec, inference; unknown until it reported), whether it takes work now, and
/// last its free VRAM. A node is counted once, under its first failure.
public struct PlacementExplanation: Sendable, Equatable {
    /// One rule a node failed. Raw values are the API's `code`.
    public enum Reason: String, Sendable, CaseIterable, Comparable {
        case labels
        case gpuModel = "gpu_model"
        case gpuCount = "gpu_count"
        case vramTotal = "vram_total"
        case noExec = "exec_not_allowed"
        case noInference = "no_inference"
        case noModel = "no_model"
        case away
        case unreported
        case notAccepting = "not_accepting"
        case cordoned
        case vramFree = "vram_free"

        /// The node could never run the job as it is: more capacity or time will not help.
        public var isPermanent: Bool {
            switch self {
            case .labels, .gpuModel, .gpuCount, .vramTotal, .noExec, .noInference, .noModel: true
            case .away, .unreported, .notAccepting, .cordoned, .vramFree: false
            }
        }

        public static func < (a: Reason, b: Reason) -> Bool {
            allCases.firstIndex(of: a)! < allCases.firstIndex(of: b)!
        }
    }

    /// The nodes that failed one rule.
    public struct Entry: Sendable, Equatable {
        public var reason: Reason
        /// Sorted by name.
        public var nodes: [String]
        /// For the VRAM rules: the most any of these nodes has (total or free) in MB.
        public var bestMB: Int?

        public init(reason: Reason, nodes: [String], bestMB: Int? = nil) {
            self.reason = reason
            self.nodes = nodes
            self.bestMB = bestMB
        }
    }

    public var requirements: Scheduler.Requirements
    /// Most nodes first, then in rule order.
    public var entries: [Entry]
    /// Nodes that could take the job now: it waits only for its turn.
    public var fitsNow: [String]

    public init(requirements: Scheduler.Requirements, entries: [Entry], fitsNow: [String]) {
        self.requirements = requirements
        self.entries = entries
        self.fitsNow = fitsNow
    }

    /// Some known node could run the job, now or once it is back, accepting or free.
    public var couldEverRun: Bool { !fitsNow.isEmpty || entries.contains { !$0.reason.isPermanent } }

    /// Some node could run it now, or its only obstacle is busy GPUs (it runs once work ends).
    public var runsWithoutHelp: Bool {
        !fitsNow.isEmpty || entries.contains { $0.reason == .vramFree }
    }

    /// One line: "2 nodes too little free VRAM (need 50000 MB, best 24064), 1 node not accepting".
    public var summary: String {
        if entries.isEmpty && fitsNow.isEmpty { return "no GPU worker has joined the mesh" }
        var parts: [String] = []
        if !fitsNow.isEmpty {
            parts.append("\(Self.count(fitsNow.count)) can take it now (waiting for its turn)")
        }
        for entry in entries { parts.append(phrase(entry)) }
        return parts.joined(separator: ", ")
    }

    /// What one entry says, with the node count first.
    public func phrase(_ entry: Entry) -> String {
        let nodes = Self.count(entry.nodes.count)
        let need = requirements
        switch entry.reason {
        case .labels:
            let wanted = need.labels.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: ",")
            return "\(nodes) without the labels \(wanted)"
        case .gpuModel: return "\(nodes) no GPU matching '\(need.gpuModel ?? "")'"
        case .gpuCount:
            return need.gpuCount <= 1 ? "\(nodes) no GPU" : "\(nodes) fewer than \(need.gpuCount) fitting GPUs"
        case .vramTotal:
            return "\(nodes) too little VRAM (need \(need.minVramMB) MB, largest \(entry.bestMB ?? 0))"
        case .noExec: return "\(nodes) not allowing exec jobs"
        case .noInference: return "\(nodes) without an inference server"
        case .noModel: return "\(nodes) not serving the model '\(need.model ?? "")'"
        case .away: return "\(nodes) away"
        case .unreported: return "\(nodes) not reported yet"
        case .notAccepting: return "\(nodes) not accepting"
        case .cordoned: return "\(nodes) cordoned"
        case .vramFree:
            return "\(nodes) too little free VRAM (need \(need.minVramMB) MB, best \(entry.bestMB ?? 0))"
        }
    }

    static func count(_ n: Int) -> String { n == 1 ? "1 node" : "\(n) nodes" }
}

extension Scheduler {
    /// Why a job with `need` would not be placed now, node by node. Departed nodes are left out.
    public func explain(_ need: Requirements) -> PlacementExplanation {
        let count = max(1, need.gpuCount)
        let pattern = need.gpuModel?.lowercased()
        var failed: [PlacementExplanation.Reason: (nodes: [String], best: Int?)] = [:]
        var fitsNow: [String] = []
        for member in members where member.standing != .gone {
            let (reason, best) = failure(member, need: need, count: count, pattern: pattern)
            guard let reason else {
                fitsNow.append(member.name)
                continue
            }
            var entry = failed[reason] ?? ([], nil)
            entry.nodes.append(member.name)
            if let best { entry.best = max(entry.best ?? best, best) }
            failed[reason] = entry
        }
        let entries = failed.map {
            PlacementExplanation.Entry(reason: $0.key, nodes: $0.value.nodes.sorted(), bestMB: $0.value.best)
        }
        .sorted { $0.nodes.count != $1.nodes.count ? $0.nodes.count > $1.nodes.count : $0.reason < $1.reason }
        return PlacementExplanation(requirements: need, entries: entries, fitsNow: fitsNow.sorted())
    }

    /// Whether any known node could ever run a job with `need` (the quick form of
    /// ``explain(_:)``'s ``PlacementExplanation/couldEverRun``: it stops at the first such node).
    public func couldEverRun(_ need: Requirements) -> Bool {
        let count = max(1, need.gpuCount)
        let pattern = need.gpuModel?.lowercased()
        for member in members where member.standing != .gone {
            let (reason, _) = failure(member, need: need, count: count, pattern: pattern)
            if reason.map({ !$0.isPermanent }) ?? true { return true }
        }
        return false
    }

    /// The first rule `member` fails for `need`, with the best VRAM figure for the VRAM rules;
    /// nil when it could take the job now.
    private func failure(_ member: Member, need: Requirements, count: Int, pattern: String?)
        -> (PlacementExplanation.Reason?, Int?)
    {
        if !need.labels.allSatisfy({ member.labels[$0.key] == $0.value }) { return (.labels, nil) }
        let present = member.slots.filter { $0.totalMB > 0 }
        let matching = pattern.map { p in present.filter { Self.matches(models[$0.model], p) } } ?? present
        if pattern != nil && matching.isEmpty && !present.isEmpty { return (.gpuModel, nil) }
        if matching.count < count { return (.gpuCount, nil) }
        let totals = matching.map(\.totalMB).sorted(by: >)
        if totals[count - 1] < need.minVramMB { return (.vramTotal, totals[0]) }
        if member.standing != .unreported {
            if need.exec && !member.allowExec { return (.noExec, nil) }
            if !need.exec && !member.canGenerate { return (.noInference, nil) }
            if !need.exec && member.serving(need.model) == nil { return (.noModel, nil) }
        }
        switch member.standing {
        case .away: return (.away, nil)
        case .unreported: return (.unreported, nil)
        case .notAccepting: return (.notAccepting, nil)
        case .cordoned: return (.cordoned, nil)
        case .ready, .gone: break
        }
        let frees = matching.map(\.freeMB).sorted(by: >)
        if frees[count - 1] < need.minVramMB { return (.vramFree, frees[0]) }
        return (nil, nil)
    }
}
