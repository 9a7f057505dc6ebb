import AsyncAlgorithms
import Foundation
import Logging
import Mesh
import ServiceLifecycle

/// `dns.configure: hosts`: the mesh's names in a marked block of the hosts file (`dns.hosts_file`,
/// default `/etc/hosts`), so that every program on the machine resolves `NAME.DOMAIN` and
/// `lead.DOMAIN` without a DNS server. The block is rewritten when the names change (checked
/// every second, from the same registry view as the DNS server) and removed at the agent's
/// graceful stop. Lines outside the block are kept as they are.
struct HostsFileService: Service {
    let path: String
    let zones: DNSServer.ZoneSource
    let logger: Logger

    static let begin = "# BEGIN aurora-mesh (managed by nodeagent; removed when it stops)"
    static let end = "# END aurora-mesh"

    func run() async throws {
        await zones.refresh()
        var written: [String]? = nil
        func update() {
            guard let zone = zones.snapshot() else { return }
            let lines = Self.lines(zone)
            guard lines != written else { return }
            do {
                try Self.write(block: lines, to: path)
                written = lines
            } catch {
                logger.warning(
                    "cannot write the mesh's names into the hosts file",
                    metadata: ["nodeagent.file": "\(path)", "nodeagent.error": "\(error)"])
            }
        }
        update()
        for await _ in AsyncTimerSequence(interval: .seconds(1), clock: .continuous).cancelOnGracefulShutdown() {
            update()
        }
        do { try Self.write(block: nil, to: path) } catch {
            logger.warning(
                "cannot remove the mesh's names from the hosts file",
                metadata: ["nodeagent.file": "\(path)", "nodeagent.error": "\(error)"])
        }
    }

    /// The block's lines for `zone`: each live node as `ADDRESS NAME.DOMAIN`, and the lead's
    /// address as `lead.DOMAIN`. A name that is not a plain host name is left out: nothing a
    /// node reports can add a line of another shape.
    static func lines(_ zone: MeshZone) -> [String] {
        let domain = zone.domain.joined(separator: ".")
        func plain(_ name: String) -> Bool {
            !name.isEmpty && name.utf8.count <= 63
                && name.utf8.allSatisfy {
                    (0x61...0x7A).contains($0 | 0x20) || (0x30...0x39).contains($0) || $0 == 0x2D || $0 == 0x5F
                }
        }
        var lines: [String] = []
        for entry in zone.entries where entry.live && plain(entry.name) {
            lines.append("\(IPv4Network.format(entry.address)) \(entry.name.lowercased()).\(domain)")
        }
        if let lead = zone.lead, let entry = zone.entries.first(where: { $0.name == lead && $0.live }),
            !zone.entries.contains(where: { $0.name.lowercased() == "lead" })
        {
            lines.append("\(IPv4Network.format(entry.address)) lead.\(domain)")
        }
        return lines
    }

    /// `text` with its marked block replaced by `block` (nil: removed), other lines as they were.
    static func replacing(block: [String]?, in text: String) -> String {
        var kept: [Substring] = []
        var inside = false
        for line in text.split(separator: "\n", omittingEmptySubsequences: false) {
            if line == begin {
                inside = true
            } else if inside && line == end {
                inside = false
            } else if !inside {
                kept.append(line)
            }
        }
        var out = kept.joined(separator: "\n")
        while out.hasSuffix("\n\n") { out.removeLast() }
        if let block {
            if !out.isEmpty && !out.hasSuffix("\n") { out += "\n" }
            out += ([begin] + block + [end]).joined(separator: "\n") + "\n"
        } else if !out.isEmpty && !out.hasSuffix("\n") {
            out += "\n"
        }
        return out
    }

    /// Writes the block into `path`: a new file beside it renamed over it (its mode kept), or,
    /// where the file cannot be replaced (a bind mount), its content rewritten in place.
    static func write(block: [String]?, to path: String) throws {
        let current = (try? String(contentsOfFile: path, encoding: .utf8)) ?? ""
        let updated = replacing(block: block, in: current)
        guard updated != current else { return }
        let mode = (try? FileManager.default.attributesOfItem(atPath: path)[.posixPermissions] as? Int) ?? 0o644
        let temporary = path + ".aurora-new"
        do {
            try updated.write(toFile: temporary, atomically: false, encoding: .utf8)
            try FileManager.default.setAttributes([.posixPermissions: mode], ofItemAtPath: temporary)
            guard rename(temporary, path) == 0 else {
                throw CocoaError(.fileWriteUnknown)
            }
        } catch {
            try? FileManager.default.removeItem(atPath: temporary)
            try updated.write(toFile: path, atomically: false, encoding: .utf8)
        }
    }
}
