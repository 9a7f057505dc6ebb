import AuroraAPI
import AuroraTLS
import Foundation
import Logging
import Mesh
import Secrets

/// The `nodes` table: the registry's rows.
extension Registry {
    /// Writes a node's whole record by name: a join (with the join token's id), the lead's own
    /// record at load. A row that was removed comes back (`removed = false`) under the same name.
    static let upsertSQL = """
        INSERT INTO nodes (name, role, company, vpn_ip, sign_public_key, box_public_key, wg_public_key, wg_endpoint, wg_listen_port,
                           labels, capabilities, timing, version, address, state, removed, last_seen, joined_at, token_id, wg_behind_nat,
                           tls_pin, tls_port)
        VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9::integer, $10::jsonb, $11::jsonb, $12::jsonb, $13, $14, $15, false, $16::timestamptz,
                $17::timestamptz, $18, $19::boolean, $20, $21::integer)
        ON CONFLICT (name) DO UPDATE SET role = EXCLUDED.role, company = EXCLUDED.company, vpn_ip = EXCLUDED.vpn_ip,
            sign_public_key = EXCLUDED.sign_public_key, box_public_key = EXCLUDED.box_public_key, wg_public_key = EXCLUDED.wg_public_key,
            wg_endpoint = EXCLUDED.wg_endpoint, wg_listen_port = EXCLUDED.wg_listen_port, labels = EXCLUDED.labels,
            capabilities = EXCLUDED.capabilities, timing = EXCLUDED.timing, version = EXCLUDED.version, address = EXCLUDED.address,
            state = EXCLUDED.state, removed = false, removed_at = NULL, last_seen = EXCLUDED.last_seen, token_id = EXCLUDED.token_id,
            wg_behind_nat = EXCLUDED.wg_behind_nat, tls_pin = EXCLUDED.tls_pin, tls_port = EXCLUDED.tls_port
        """

    /// ``upsertSQL``'s 21 parameters, in order, from a registry entry; JSON columns as JSON text.
    static func upsertParameters(_ entry: Entry, tokenID: String? = nil) -> [String?] {
        let node = entry.node
        return [
            node.name, node.role.rawValue, node.company, node.vpnIP, node.signPublicKey, node.boxPublicKey,
            node.wireguard.publicKey,
            node.wireguard.endpoint, String(node.wireguard.listenPort), SQL.json(node.labels),
            SQL.json(node.capabilities),
            node.timing.map { SQL.json($0) }, node.version, node.address, node.state.rawValue,
            ISOTime.string(entry.lastSeen), node.joinedAt,
            tokenID, (node.wireguard.behindNAT ?? false) ? "true" : "false", node.tlsPin, node.tlsPort.map(String.init),
        ]
    }

    /// A registry entry from a row of ``load(capabilities:meshID:now:)``'s SELECT (21 columns in
    /// that order); nil when a required column is missing or does not parse, and the caller skips
    /// the row. Missing or invalid timing falls back to the role's default heartbeat timing.
    static func entry(_ row: [String?]) -> Entry? {
        guard row.count == 21, let name = row[0], let role = row[1].flatMap(NodeRole.init(rawValue:)),
            let vpnIP = row[3],
            let signText = row[4], let signKey = try? PublicKey(base64: signText), let box = row[5], let wg = row[6],
            let port = row[8].flatMap({ Int($0) }), let state = row[14].flatMap(NodeState.init(rawValue:)),
            let lastSeenText = row[16], let lastSeen = ISOTime.parse(lastSeenText), let joinedAt = row[17]
        else { return nil }
        let timing = SQL.decode(HeartbeatTiming.self, row[11]) ?? defaultTiming(for: role)
        var node = Node(
            name: name, role: role, company: row[2] ?? "", vpnIP: vpnIP, state: state, lastSeen: lastSeenText,
            labels: SQL.decode([String: String].self, row[9]) ?? [:],
            wireguard: WireGuardPeer(publicKey: wg, endpoint: row[7], listenPort: port, behindNAT: row[18] == "t"),
            capabilities: SQL.decode(Capabilities.self, row[10]) ?? .unknown, version: row[12] ?? "", address: row[13],
            joinedAt: joinedAt, signPublicKey: signText, boxPublicKey: box, timing: timing)
        node.tlsPin = row[19].flatMap { TLSPin(parsing: $0)?.description }
        node.tlsPort = row[20].flatMap { Int($0) }.flatMap { (1...65535).contains($0) ? $0 : nil }
        return Entry(
            node: node, signKey: signKey,
            policy: (try? policy(timing)) ?? FailureDetector.Policy(defaultTiming(for: role)),
            removed: row[15] == "t", lastSeen: lastSeen)
    }
}
