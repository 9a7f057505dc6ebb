import AuroraAPI
import Foundation
import Logging
import Mesh

extension Registry {
    // MARK: Operator changes

    /// An operator sets a node's company: its secrets resolve through it from now on (the node
    /// refreshes its cached secrets at its next heartbeat). Validated as a join token's company is;
    /// records `node.company_changed` with both values. Setting the company it has changes nothing.
    /// 400 for a bad company or the lead itself (its company is its configuration's), 404 for an
    /// unknown node, 503 when the store fails.
    func setCompany(_ name: String, _ company: String) async throws(Refusal) -> Node {
        try requireLoaded()
        guard let entry = entries[name] else {
            throw Refusal.notFound("no node named '\(InputRules.printable(name))'")
        }
        guard name != config.name else {
            throw Refusal.badRequest("the lead's company comes from its configuration ('company'), not from this call")
        }
        do throws(MeshError) { try InputRules.identifier(company, field: "company", maxBytes: 128) } catch {
            throw Refusal.badRequest(error.message)
        }
        let previous = entry.node.company
        guard previous != company else { return try node(name) }
        do {
            let hub = self.hub
            try await store.write(
                [.company(name: name, company: company)],
                events: [
                    EventLog.Draft(
                        type: EventType.nodeCompanyChanged, node: name,
                        data: ["from": .string(previous), "to": .string(company), "by": .string("operator")])
                ],
                published: { hub.publish($0) })
        } catch {
            throw Refusal.storeUnavailable(error)
        }
        entries[name]?.node.company = company
        version += 1
        // What resolves for the node changed: nodes refresh their cached secrets.
        secretsGeneration.bump()
        logger.notice(
            "node company set",
            metadata: ["nodeagent.node": "\(name)", "nodeagent.from": "\(previous)", "nodeagent.to": "\(company)"])
        return try node(name)
    }

    /// Drops everything the registry holds for a deleted node: its record, its key, its place in
    /// the failure detector and its metric series. Its jobs were requeued when it became `left`.
    func forget(_ name: String) {
        entries[name] = nil
        signKeys.remove(name)
        detector.remove(name)
        seenDirty.remove(name)
        recordDirty.remove(name)
        version += 1
    }
}
