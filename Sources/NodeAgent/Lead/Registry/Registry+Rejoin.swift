import AuroraAPI
import AuroraTLS
import Foundation
import Logging
import Mesh

extension Registry {
    // MARK: An old lead comes back as a standby

    /// `name`, whose signature the caller checked, comes back as a standby (`POST /api/lead/rejoin`):
    /// an old lead fenced by a newer term, or a standby asking again. Only a lead-eligible member
    /// may: one this registry records as `lead` or `standby`, not removed, and not this lead
    /// itself (403 otherwise). Its name, keys and address stay; its role becomes `standby`, its
    /// reported address and TLS pin and port are the request's (400 when malformed), and
    /// `lead.rejoined` is recorded in the same transaction (503 when the store fails).
    func rejoinAsStandby(_ name: String, _ request: LeadRejoinRequest, observedHost: String?) async throws(Refusal)
        -> Node
    {
        try requireLoaded()
        guard name != config.name else {
            throw Refusal(.forbidden, code: "forbidden", message: "the lead cannot rejoin itself as a standby")
        }
        guard let previous = entries[name], !previous.removed else {
            throw Refusal.unauthorized(Self.unknownNode(name))
        }
        guard previous.node.role == .lead || previous.node.role == .standby else {
            throw Refusal(
                .forbidden, code: "forbidden",
                message: "only a lead-eligible member (an old lead or a standby) may rejoin as a standby")
        }
        if let address = request.address { _ = try Self.hostPort(address, field: "address") }
        try Self.validateTLSPort(request.tlsPort)
        let tlsPin = try request.tlsPin.map { text throws(Refusal) -> String in
            guard let pin = TLSPin(parsing: text) else {
                throw Refusal.badRequest("tls_pin must be sha256: and 64 hex digits")
            }
            return pin.description
        }
        var entry = previous
        entry.node.role = .standby
        entry.node.tlsPin = tlsPin
        entry.node.tlsPort = request.tlsPort
        if let address = request.address { entry.node.address = address }
        entry.observedHost = observedHost ?? previous.observedHost
        let event = EventLog.Draft(
            type: EventType.leadRejoined, node: name,
            data: ["from": .string(previous.node.role.rawValue), "lead": .string(config.name)])
        do {
            let hub = self.hub
            try await store.write(
                [.rejoined(name: name, tlsPin: tlsPin), .reported(entry)], events: [event],
                published: { hub.publish($0) })
        } catch {
            throw Refusal.storeUnavailable(error)
        }
        entries[name] = entry
        version += 1
        logger.notice(
            "an old lead rejoined as a standby",
            metadata: ["nodeagent.node": "\(name)", "nodeagent.from": "\(previous.node.role.rawValue)"])
        return entry.node
    }
}
