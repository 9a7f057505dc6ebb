import AuroraAPI
import AuroraTLS
import Foundation
import Logging
import Mesh
import Secrets

/// The `nodes` table: the registry's rows.
enum NodeRows {
    /// Writes a node's whole record by name: a join (with the join token's id), the lead's own
    /// record at load. A row that was removed comes back (`removed = false`) under the same name.
    /// The columns ``entry(_:)`` reads.
    static let columns = """
        name, role, company, vpn_ip, sign_public_key, box_public_key, wg_public_key, wg_endpoint, wg_listen_port,
        labels::text, capabilities::text, timing::text, version, address, state, removed, \(SQL.iso("last_seen")),
        \(SQL.iso("joined_at")), wg_behind_nat, tls_pin, tls_port, scheduling, \(SQL.iso("drain_deadline")),
        \(SQL.iso("scheduling_since")), metrics_address
        """

    static let upsertSQL = """
        INSERT INTO nodes (name, role, company, vpn_ip, sign_public_key, box_public_key, wg_public_key, wg_endpoint, wg_listen_port,
                           labels, capabilities, timing, version, address, state, removed, last_seen, joined_at, token_id, wg_behind_nat,
                           tls_pin, tls_port, metrics_address)
        VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9::integer, $10::jsonb, $11::jsonb, $12::jsonb, $13, $14, $15, false, $16::timestamptz,
                $17::timestamptz, $18, $19::boolean, $20, $21::integer, $22)
        ON CONFLICT (name) DO UPDATE SET role = EXCLUDED.role, company = EXCLUDED.company, vpn_ip = EXCLUDED.vpn_ip,
            sign_public_key = EXCLUDED.sign_public_key, box_public_key = EXCLUDED.box_public_key, wg_public_key = EXCLUDED.wg_public_key,
            wg_endpoint = EXCLUDED.wg_endpoint, wg_listen_port = EXCLUDED.wg_listen_port, labels = EXCLUDED.labels,
            capabilities = EXCLUDED.capabilities, timing = EXCLUDED.timing, version = EXCLUDED.version, address = EXCLUDED.address,
            state = EXCLUDED.state, removed = false, removed_at = NULL, forgotten = false, last_seen = EXCLUDED.last_seen, token_id = EXCLUDED.token_id,
            wg_behind_nat = EXCLUDED.wg_behind_nat, tls_pin = EXCLUDED.tls_pin, tls_port = EXCLUDED.tls_port,
            metrics_address = EXCLUDED.metrics_address,
            scheduling = CASE WHEN nodes.removed THEN 'open' ELSE nodes.scheduling END,
            drain_deadline = CASE WHEN nodes.removed THEN NULL ELSE nodes.drain_deadline END,
            scheduling_since = CASE WHEN nodes.removed THEN NULL ELSE nodes.scheduling_since END
        """

    /// ``upsertSQL``'s 22 parameters, in order, from a registry entry; JSON columns as JSON text.
    static func upsertParameters(_ entry: Registry.Entry, tokenID: String? = nil) -> [String?] {
        let node = entry.node
        return [
            node.name, node.role.rawValue, node.company, node.vpnIP, node.signPublicKey, node.boxPublicKey,
            node.wireguard.publicKey,
            node.wireguard.endpoint, String(node.wireguard.listenPort), SQL.json(node.labels),
            SQL.json(node.capabilities),
            node.timing.map { SQL.json($0) }, node.version, node.address, node.state.rawValue,
            ISOTime.string(entry.lastSeen), node.joinedAt,
            tokenID, (node.wireguard.behindNAT ?? false) ? "true" : "false", node.tlsPin, node.tlsPort.map(String.init),
            node.metricsAddress,
        ]
    }

    /// A registry entry from a row of ``columns`` (25 columns in that order); nil when a required column is missing or does not parse, and the caller skips
    /// the row. Missing or invalid timing falls back to the role's default heartbeat timing.
    static func entry(_ row: [String?]) -> Registry.Entry? {
        guard row.count == 25, let name = row[0], let role = row[1].flatMap(NodeRole.init(rawValue:)),
            let vpnIP = row[3],
            let signText = row[4], let signKey = try? PublicKey(base64: signText), let box = row[5], let wg = row[6],
            let port = row[8].flatMap({ Int($0) }), let state = row[14].flatMap(NodeState.init(rawValue:)),
            let lastSeenText = row[16], let lastSeen = ISOTime.parse(lastSeenText), let joinedAt = row[17]
        else { return nil }
        let timing = SQL.decode(HeartbeatTiming.self, row[11]) ?? Registry.defaultTiming(for: role)
        var node = Node(
            name: name, role: role, company: row[2] ?? "", vpnIP: vpnIP, state: state, lastSeen: lastSeenText,
            labels: SQL.decode([String: String].self, row[9]) ?? [:],
            wireguard: WireGuardPeer(publicKey: wg, endpoint: row[7], listenPort: port, behindNAT: row[18] == "t"),
            capabilities: SQL.decode(Capabilities.self, row[10]) ?? .unknown, version: row[12] ?? "", address: row[13],
            joinedAt: joinedAt, signPublicKey: signText, boxPublicKey: box, timing: timing)
        node.tlsPin = row[19].flatMap { TLSPin(parsing: $0)?.description }
        node.tlsPort = row[20].flatMap { Int($0) }.flatMap { (1...65535).contains($0) ? $0 : nil }
        node.metricsAddress = row[24].flatMap { try? HostPort(parsing: $0) }.map(\.description)
        if let state = row[21].flatMap(SchedulingState.init(rawValue:)), state != .open {
            node.scheduling = NodeScheduling(state: state, deadline: row[22], since: row[23])
        }
        return Registry.Entry(
            node: node, signKey: signKey,
            policy: (try? Registry.policy(timing)) ?? FailureDetector.Policy(Registry.defaultTiming(for: role)),
            removed: row[15] == "t", lastSeen: lastSeen)
    }
}

extension Store: NodeStore {
    func nodes() async throws(AgentError) -> (entries: [Registry.Entry], unreadable: [String]) {
        var entries: [Registry.Entry] = []
        var unreadable: [String] = []
        for row in try await query("SELECT \(NodeRows.columns) FROM nodes WHERE NOT forgotten").rows {
            if let entry = NodeRows.entry(row) {
                entries.append(entry)
            } else {
                unreadable.append(row.first.flatMap { $0 } ?? "?")
            }
        }
        return (entries, unreadable)
    }

    /// The lead-eligible members (role `lead` or `standby`, not removed), read as the leadership
    /// reads: also once this lead is fenced, when its store refuses every other statement. A
    /// fenced lead looks among them for the newer term's lead (``LeadRejoin``).
    func leadEligibleMembers() async throws(AgentError) -> [Node] {
        try await leadQuery(
            "SELECT \(NodeRows.columns) FROM nodes WHERE role IN ('lead', 'standby') AND NOT removed AND NOT forgotten"
        ).rows.compactMap { NodeRows.entry($0)?.node }
    }

    /// Up to `limit` nodes that are neither leads nor standbys, not removed, last seen first
    /// (an old lead asks them for the term they follow).
    func recentlySeenNodes(limit: Int, excluding name: String) async throws(AgentError) -> [Node] {
        try await leadQuery(
            """
            SELECT \(NodeRows.columns) FROM nodes
            WHERE role NOT IN ('lead', 'standby') AND NOT removed AND NOT forgotten AND name <> $1
            ORDER BY last_seen DESC LIMIT $2::integer
            """, [name, String(limit)]
        ).rows.compactMap { NodeRows.entry($0)?.node }
    }

    func write(_ changes: [NodeChange], events drafts: [EventLog.Draft], published: @escaping Published)
        async throws(AgentError)
    {
        try await commit(changes.map(NodeRows.statement), events: drafts, published: published)
    }

    func join(_ attempt: JoinAttempt, published: @escaping Published) async throws(AgentError) -> Result<
        JoinAttempt.Joined, Refusal
    > {
        try await inTransaction(
            { (connection) throws(AgentError) -> Result<JoinAttempt.Joined, Refusal> in
                let token = try TokenRows.joinRow(hash: attempt.tokenHash, on: connection)
                // An unknown token reads nothing more; the decision refuses an invalid one first.
                let holder =
                    token == nil
                    ? nil
                    : try connection.execute(
                        "SELECT sign_public_key, removed, vpn_ip, \(SQL.iso("joined_at")), labels::text FROM nodes WHERE name = $1 FOR UPDATE",
                        [attempt.name]
                    ).rows.first.map {
                        JoinRules.Holder(
                            signPublicKey: $0[0] ?? "", removed: $0[1] == "t", vpnIP: $0[2], joinedAt: $0[3],
                            labels: SQL.decode([String: String].self, $0[4]))
                    }
                // Live nodes' addresses are taken; a removed node's only until the grace period
                // after its removal has passed.
                let decided = try attempt.decide(token: token, holder: holder) { () throws(AgentError) in
                    try connection.execute(
                        """
                        SELECT name, vpn_ip, removed, extract(epoch FROM now() - coalesce(removed_at, now()))::float8::text
                        FROM nodes WHERE name <> $1 AND vpn_ip <> ''
                        """, [attempt.name]
                    ).rows.map {
                        JoinRules.AddressHolder(
                            node: $0[0] ?? "?", vpnIP: $0[1] ?? "", removed: $0[2] == "t",
                            removedAgoS: $0[3].flatMap(Double.init) ?? 0)
                    }
                }
                let decision: JoinAttempt.Decision
                switch decided {
                case .failure(let refusal): return .failure(refusal)
                case .success(let accepted): decision = accepted
                }
                if let reclaimed = decision.reclaimed {
                    // A forgotten node's tombstone held nothing but the address.
                    _ = try connection.execute("DELETE FROM nodes WHERE name = $1 AND forgotten", [reclaimed])
                    _ = try connection.execute("UPDATE nodes SET vpn_ip = '' WHERE name = $1 AND removed", [reclaimed])
                }
                _ = try connection.execute("UPDATE join_tokens SET uses = uses + 1 WHERE id = $1", [decision.tokenID])
                _ = try connection.execute(
                    NodeRows.upsertSQL, NodeRows.upsertParameters(decision.entry, tokenID: decision.tokenID))
                let event = try EventLog.insert(decision.event, on: connection)
                return .success(JoinAttempt.Joined(node: decision.entry.node, tokenID: decision.tokenID, event: event))
            },
            afterCommit: { result in
                if case .success(let joined) = result { published([joined.event]) }
            })
    }
}

extension NodeRows {
    /// One change as a statement and its parameters.
    static func statement(_ change: NodeChange) -> (String, [String?]) {
        switch change {
        case .upsert(let entry, let tokenID):
            return (upsertSQL, upsertParameters(entry, tokenID: tokenID))
        case .state(let name, let state, let lastSeen):
            return (
                "UPDATE nodes SET state = $2, last_seen = $3::timestamptz WHERE name = $1",
                [name, state.rawValue, ISOTime.string(lastSeen)]
            )
        case .seen(let seen):
            return (
                """
                UPDATE nodes SET last_seen = v.seen::timestamptz
                FROM unnest($1::text[], $2::text[]) AS v(name, seen) WHERE nodes.name = v.name
                """,
                [
                    "{" + seen.map(\.name).joined(separator: ",") + "}",
                    "{" + seen.map { ISOTime.string($0.at) }.joined(separator: ",") + "}",
                ]
            )
        case .reported(let entry):
            return (
                """
                UPDATE nodes SET labels = $2::jsonb, capabilities = $3::jsonb, timing = $4::jsonb, version = $5, address = $6,
                    tls_port = $7::integer, metrics_address = $8 WHERE name = $1
                """,
                [
                    entry.node.name, SQL.json(entry.node.labels), SQL.json(entry.node.capabilities),
                    entry.node.timing.map { SQL.json($0) }, entry.node.version, entry.node.address,
                    entry.node.tlsPort.map(String.init), entry.node.metricsAddress,
                ]
            )
        case .labels(let name, let labels):
            return ("UPDATE nodes SET labels = $2::jsonb WHERE name = $1", [name, SQL.json(labels)])
        case .scheduling(let name, let scheduling):
            return (
                """
                UPDATE nodes SET scheduling = $2, drain_deadline = $3::timestamptz, scheduling_since = $4::timestamptz
                WHERE name = $1
                """,
                [
                    name, (scheduling?.state ?? .open).rawValue, scheduling?.deadline, scheduling?.since,
                ]
            )
        case .removed(let name):
            return ("UPDATE nodes SET removed = true, removed_at = now() WHERE name = $1", [name])
        case .forgotten(let name):
            return (
                """
                WITH gone AS (DELETE FROM nodes WHERE name = $1 AND vpn_ip = '' RETURNING name)
                UPDATE nodes SET forgotten = true WHERE name = $1 AND vpn_ip <> ''
                """, [name]
            )
        case .company(let name, let company):
            return ("UPDATE nodes SET company = $2 WHERE name = $1", [name, company])
        case .rejoined(let name, let tlsPin):
            return (
                "UPDATE nodes SET role = $2, tls_pin = $3 WHERE name = $1", [name, NodeRole.standby.rawValue, tlsPin]
            )
        }
    }
}
