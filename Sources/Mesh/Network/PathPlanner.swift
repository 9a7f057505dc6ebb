// How two nodes that are both behind NAT reach each other: through a relay's pair of UDP ports,
// or directly once a hole-punched exchange worked. Pure: the lead feeds it what nodes report
// (endpoints seen from outside, their peers' counters) every second and publishes its answer.

/// The lead's per-pair path decisions. A pair of nodes both behind NAT starts **relayed** (a
/// relay forwards its WireGuard datagrams between two ports); after `firstTrialAfter` and each
/// backoff it is **trying**: both sides send to the other's outside endpoint, and it turns
/// **direct** when both see the other's traffic arrive from that endpoint, else goes back to
/// relayed. A direct pair whose traffic stops, or whose outside endpoint changes, tries again
/// and falls back to its relay. A side whose outside mapping differs between observers (a
/// symmetric NAT) is never tried: hole punching cannot work there.
public struct PathPlanner: Sendable {
    public enum Mode: String, Sendable { case direct, relayed, trying }

    /// What the lead knows of one node.
    public struct NodeView: Sendable, Equatable {
        public var name: String
        public var alive: Bool
        public var behindNAT: Bool
        /// The node's WireGuard endpoint as each public observer's interface last saw it (the lead
        /// first): equal ports mean an endpoint-independent mapping, different ones a symmetric NAT.
        public var outside: [String]
        /// The host its requests come from (its public address): the relay lets a side's
        /// datagrams move its latched address only when they come from it.
        public var publicHost: String?
        /// Its relay table, when it may relay (a public endpoint and the trust to): host, first port, pairs.
        public var relay: (host: String, portBase: Int, pairs: Int)?
        /// Prefer other relays to this one (the lead: it has enough to do, and a pair relayed by a
        /// node keeps flowing while the lead is away).
        public var relayLast: Bool
        /// Its WireGuard peers by node name: the endpoint its interface uses and bytes received.
        public var links: [String: Link]

        public struct Link: Sendable, Equatable {
            public var endpoint: String?
            public var rxBytes: Int64
            public init(endpoint: String?, rxBytes: Int64) {
                self.endpoint = endpoint
                self.rxBytes = rxBytes
            }
        }

        public init(
            name: String, alive: Bool, behindNAT: Bool, outside: [String], publicHost: String? = nil,
            relay: (host: String, portBase: Int, pairs: Int)? = nil, relayLast: Bool = false,
            links: [String: Link] = [:]
        ) {
            self.name = name
            self.alive = alive
            self.behindNAT = behindNAT
            self.outside = outside
            self.publicHost = publicHost
            self.relay = relay
            self.relayLast = relayLast
            self.links = links
        }

        public static func == (l: NodeView, r: NodeView) -> Bool {
            l.name == r.name && l.alive == r.alive && l.behindNAT == r.behindNAT && l.outside == r.outside
                && l.publicHost == r.publicHost && l.relay?.host == r.relay?.host
                && l.relay?.portBase == r.relay?.portBase && l.relay?.pairs == r.relay?.pairs
                && l.relayLast == r.relayLast && l.links == r.links
        }

        /// `endpoint-independent` when at least two observers saw the same port, `symmetric` when
        /// they saw different ones, nil when fewer than two saw it.
        public var natType: String? {
            let ports = Set(outside.compactMap { try? HostPort(parsing: $0).port })
            guard outside.count >= 2, !ports.isEmpty else { return nil }
            return ports.count == 1 ? "endpoint-independent" : "symmetric"
        }
    }

    /// One pair's decision.
    public struct Path: Sendable, Equatable {
        public var a: String
        public var b: String
        public var mode: Mode
        public var relay: String?
        public var relayA: String?
        public var relayB: String?
        public var directA: String?
        public var directB: String?
        /// The public hosts the relay accepts each side's datagrams from.
        public var hostA: String?
        public var hostB: String?
        public var reason: String
    }

    public struct Timing: Sendable {
        /// From a pair's first relayed minute to its first trial.
        public var firstTrialAfter: Duration
        /// How long a trial may take before the pair goes back to its relay.
        public var trialTimeout: Duration
        /// After a failed trial; doubled after each further one, up to `maxBackoff`.
        public var backoff: Duration
        public var maxBackoff: Duration
        /// A direct pair whose counters stand still this long goes back to its relay.
        public var directIdle: Duration

        public init(
            firstTrialAfter: Duration = .seconds(5), trialTimeout: Duration = .seconds(12),
            backoff: Duration = .seconds(60), maxBackoff: Duration = .seconds(900), directIdle: Duration = .seconds(75)
        ) {
            self.firstTrialAfter = firstTrialAfter
            self.trialTimeout = trialTimeout
            self.backoff = backoff
            self.maxBackoff = maxBackoff
            self.directIdle = directIdle
        }
    }

    /// What the planner remembers of a pair between rounds.
    struct PairState: Sendable {
        var mode: Mode = .relayed
        var relay: String?
        var slot: Int?
        var nextTrial: ContinuousClock.Instant
        var backoff: Duration
        var trialStart: ContinuousClock.Instant?
        /// The outside endpoints the current trial or direct path uses.
        var directA: String?
        var directB: String?
        /// Counters when both sides were first seen using the direct endpoints in this trial.
        var confirmFrom: (at: ContinuousClock.Instant, a: Int64, b: Int64)?
        /// When each side's counter for the other last moved (direct mode).
        var lastRx: (a: Int64, b: Int64, at: ContinuousClock.Instant)?
        var reason = "both sides are behind NAT: relayed"
    }

    /// At most this many nodes behind NAT are planned (their pairs grow with the square): the
    /// first by name; the others' pairs keep the registry's endpoints (see ``overflow``).
    public static let maxPlannedNodes = 128

    public let timing: Timing
    private var pairs: [String: PairState] = [:]
    /// How many nodes behind NAT the last round left out for ``maxPlannedNodes``.
    public private(set) var overflow = 0
    /// Each node's NAT type when last known: a node that moved is seen by one observer before
    /// the other, and must not look punchable in between.
    private var knownNAT: [String: String] = [:]

    public init(timing: Timing = Timing()) { self.timing = timing }

    /// The decision for every pair of alive nodes that are both behind NAT, sorted by pair.
    public mutating func plan(_ nodes: [NodeView], now: ContinuousClock.Instant) -> [Path] {
        for node in nodes { if let type = node.natType { knownNAT[node.name] = type } }
        let alive = nodes.filter(\.alive).sorted { $0.name < $1.name }
        let byName = Dictionary(alive.map { ($0.name, $0) }, uniquingKeysWith: { $1 })
        let allNatted = alive.filter(\.behindNAT)
        let natted = Array(allNatted.prefix(Self.maxPlannedNodes))
        overflow = allNatted.count - natted.count
        let relays = alive.filter { $0.relay != nil && !$0.behindNAT }.sorted {
            ($0.relayLast ? 1 : 0, $0.name) < ($1.relayLast ? 1 : 0, $1.name)
        }
        var wanted: [String] = []
        for (i, a) in natted.enumerated() {
            for b in natted[(i + 1)...] { wanted.append(Self.key(a.name, b.name)) }
        }
        let wantedSet = Set(wanted)
        pairs = pairs.filter { wantedSet.contains($0.key) }
        // Relay slots: pairs that keep theirs first, then new ones by their hash, probing on.
        // A pair on a last-resort relay (the lead) moves once another relay can carry it.
        let preferredExists = relays.contains { !$0.relayLast }
        var used: [String: Set<Int>] = [:]
        for key in wanted {
            guard var state = pairs[key] else { continue }
            let names = key.split(separator: "|").map(String.init)
            if let relay = state.relay, let slot = state.slot, let offer = byName[relay]?.relay, slot < offer.pairs,
                !used[relay, default: []].contains(slot),
                !(byName[relay]!.relayLast && preferredExists
                    && relays.contains {
                        !$0.relayLast && !names.contains($0.name)
                    })
            {
                used[relay, default: []].insert(slot)
            } else {
                state.relay = nil
                state.slot = nil
            }
            pairs[key] = state
        }
        var result: [Path] = []
        for key in wanted {
            let names = key.split(separator: "|").map(String.init)
            let a = byName[names[0]]!, b = byName[names[1]]!
            var state =
                pairs[key] ?? PairState(nextTrial: now + timing.firstTrialAfter, backoff: timing.backoff)
            if state.relay == nil {
                let candidates = relays.filter { $0.name != a.name && $0.name != b.name }
                let preferred = candidates.filter { !$0.relayLast }
                let group = preferred.isEmpty ? candidates : preferred
                if !group.isEmpty {
                    let hash = Self.fnv(key)
                    let relay = group[Int(hash % UInt64(group.count))]
                    let capacity = relay.relay!.pairs
                    var slot = Int(hash % UInt64(capacity))
                    var probes = 0
                    while used[relay.name, default: []].contains(slot), probes < capacity {
                        slot = (slot + 1) % capacity
                        probes += 1
                    }
                    if probes < capacity {
                        used[relay.name, default: []].insert(slot)
                        state.relay = relay.name
                        state.slot = slot
                    }
                }
            }
            step(&state, a: a, b: b, now: now)
            pairs[key] = state
            var path = Path(
                a: a.name, b: b.name, mode: state.mode, relay: state.relay, relayA: nil, relayB: nil,
                directA: state.directA, directB: state.directB, hostA: a.publicHost, hostB: b.publicHost,
                reason: state.reason)
            if let name = state.relay, let slot = state.slot, let offer = byName[name]?.relay {
                path.relayA = HostPort.render(offer.host, offer.portBase + 2 * slot)
                path.relayB = HostPort.render(offer.host, offer.portBase + 2 * slot + 1)
            }
            if path.mode == .relayed, path.relay == nil {
                path.reason = "both sides are behind NAT and no relay is available"
            }
            result.append(path)
        }
        return result
    }

    /// One pair's state machine for this round.
    private func step(_ state: inout PairState, a: NodeView, b: NodeView, now: ContinuousClock.Instant) {
        let outsideA = a.outside.first, outsideB = b.outside.first
        let symmetric = [a, b].first { ($0.natType ?? knownNAT[$0.name]) == "symmetric" }
        let aLink = a.links[b.name], bLink = b.links[a.name]
        if let symmetric, state.mode == .trying {
            state.mode = .relayed
            state.nextTrial = now + state.backoff
        }
        switch state.mode {
        case .relayed:
            if let symmetric {
                state.reason = "\(symmetric.name) is behind a symmetric NAT: relayed"
                return
            }
            guard now >= state.nextTrial, let outsideA, let outsideB else { return }
            state.mode = .trying
            state.trialStart = now
            state.directA = outsideA
            state.directB = outsideB
            state.confirmFrom = nil
            state.reason = "trying a direct path (hole punching)"
        case .trying:
            let usingDirect = aLink?.endpoint == state.directB && bLink?.endpoint == state.directA
            if usingDirect, let aLink, let bLink {
                if let from = state.confirmFrom {
                    if aLink.rxBytes > from.a, bLink.rxBytes > from.b, from.at.duration(to: now) >= .seconds(1) {
                        state.mode = .direct
                        state.backoff = timing.backoff
                        state.lastRx = (aLink.rxBytes, bLink.rxBytes, now)
                        state.reason = "a hole-punched handshake succeeded: direct"
                        return
                    }
                } else {
                    state.confirmFrom = (now, aLink.rxBytes, bLink.rxBytes)
                }
            } else {
                state.confirmFrom = nil
            }
            if let start = state.trialStart, start.duration(to: now) >= timing.trialTimeout {
                state.mode = .relayed
                state.nextTrial = now + state.backoff
                state.backoff = min(state.backoff * 2, timing.maxBackoff)
                state.reason = "the direct trial failed (no traffic arrived from the outside endpoints): relayed"
            }
        case .direct:
            if symmetric != nil || outsideA != state.directA || outsideB != state.directB {
                // A side moved (roaming, re-NAT): punch again at the new endpoints at once.
                state.mode = .relayed
                state.nextTrial = now
                state.backoff = timing.backoff
                state.reason = "an outside endpoint changed: relayed until a new trial succeeds"
                step(&state, a: a, b: b, now: now)
                return
            }
            if let aLink, let bLink, let last = state.lastRx {
                if aLink.rxBytes > last.a || bLink.rxBytes > last.b {
                    state.lastRx = (aLink.rxBytes, bLink.rxBytes, now)
                } else if last.at.duration(to: now) >= timing.directIdle {
                    state.mode = .relayed
                    state.nextTrial = now + state.backoff
                    state.reason = "no traffic on the direct path for \(timing.directIdle): relayed"
                }
            }
        }
    }

    static func key(_ a: String, _ b: String) -> String { a < b ? "\(a)|\(b)" : "\(b)|\(a)" }

    /// FNV-1a, 64 bits: a pair's relay and slot stay the same across lead restarts.
    static func fnv(_ text: String) -> UInt64 {
        var hash: UInt64 = 0xcbf2_9ce4_8422_2325
        for byte in text.utf8 {
            hash ^= UInt64(byte)
            hash = hash &* 0x100_0000_01b3
        }
        return hash
    }
}

extension HostPort {
    /// `HOST:PORT`, IPv6 hosts in brackets.
    static func render(_ host: String, _ port: Int) -> String {
        host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)"
    }
}

/// The shape of a WireGuard datagram, as a relay checks it before forwarding: a message type of
/// 1 (handshake initiation, 148 bytes), 2 (response, 92), 3 (cookie reply, 64) or 4 (transport
/// data: a 16-byte header, the padded ciphertext and a 16-byte tag, at least 32 bytes), and three
/// zero bytes after the type. Anything else is not forwarded.
public enum WireGuardFrame {
    public static func isValid(_ bytes: some Collection<UInt8>) -> Bool {
        guard bytes.count >= 4 else { return false }
        var iterator = bytes.makeIterator()
        let type = iterator.next()!
        guard iterator.next() == 0, iterator.next() == 0, iterator.next() == 0 else { return false }
        switch type {
        case 1: return bytes.count == 148
        case 2: return bytes.count == 92
        case 3: return bytes.count == 64
        // Padding to 16 stops at the interface MTU, so a full-size packet is not a multiple of 16.
        case 4: return bytes.count >= 32 && bytes.count <= 65535
        default: return false
        }
    }
}
