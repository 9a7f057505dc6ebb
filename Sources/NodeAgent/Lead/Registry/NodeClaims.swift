import AuroraAPI
import Foundation
import Logging
import Mesh
import Secrets

/// What a node says about itself at join and in heartbeats, checked before anything stores it;
/// heartbeat timing turned into the failure detector's policy.
extension Registry {
    /// The timing a node that reports none is judged by: compute (and lead) nodes beat every 1 s,
    /// suspect after 3 missed, dead after 10; edge nodes every 5 s, suspect after 3, away after 6,
    /// dead after 720 (an hour).
    static func defaultTiming(for role: NodeRole) -> HeartbeatTiming {
        role == .edge
            ? HeartbeatTiming(intervalS: 5, suspectAfter: 3, awayAfter: 6, deadAfter: 720)
            : HeartbeatTiming(intervalS: 1, suspectAfter: 3, awayAfter: 0, deadAfter: 10)
    }

    /// The detector policy for reported timing, within sane bounds.
    /// Refuses (400) an interval outside 0.05–3600 s, `suspect_after` outside 1–100, an
    /// `away_after` that is not 0 or above `suspect_after`, and a `dead_after` that is not above both
    /// (at most 100,000).
    static func policy(_ timing: HeartbeatTiming) throws(Refusal) -> FailureDetector.Policy {
        guard timing.intervalS >= 0.05, timing.intervalS <= 3600 else {
            throw Refusal.badRequest("timing.interval_s must be 0.05-3600")
        }
        guard (1...100).contains(timing.suspectAfter) else {
            throw Refusal.badRequest("timing.suspect_after must be 1-100")
        }
        guard timing.awayAfter == 0 || timing.awayAfter > timing.suspectAfter else {
            throw Refusal.badRequest("timing.away_after must be 0 or greater than suspect_after")
        }
        guard timing.deadAfter > timing.suspectAfter, timing.deadAfter > timing.awayAfter, timing.deadAfter <= 100_000
        else {
            throw Refusal.badRequest("timing.dead_after must be greater than suspect_after and away_after")
        }
        return FailureDetector.Policy(timing)
    }

    /// What a node says about itself, checked before anything stores or renders it: no control
    /// characters, bounded lengths, an endpoint that is a real `HOST:PORT` (it is written into
    /// every peer's WireGuard file).
    static func validateClaims(
        company: String?, labels: [String: String]?, version: String?, endpoint: String?,
        capabilities: Capabilities?
    ) throws(Refusal) {
        do throws(MeshError) {
            if let company { try InputRules.identifier(company, field: "company", maxBytes: 128) }
            if let labels { try InputRules.labels(labels, field: "labels") }
            if let version { try InputRules.identifier(version, field: "version", maxBytes: 64) }
            if let endpoint, !endpoint.isEmpty {
                try InputRules.identifier(endpoint, field: "wireguard.endpoint")
                do { _ = try HostPort(parsing: endpoint) } catch {
                    throw MeshError(.invalidAddress, "wireguard.endpoint: \(error.message)")
                }
            }
            if let capabilities {
                try InputRules.identifier(capabilities.os, field: "capabilities.os", maxBytes: 128)
                try InputRules.identifier(capabilities.arch, field: "capabilities.arch", maxBytes: 64)
                guard capabilities.gpus.count <= 64 else {
                    throw MeshError(.tooMany, "capabilities.gpus has more than 64 entries")
                }
                for (index, gpu) in capabilities.gpus.enumerated() {
                    try InputRules.identifier(gpu.name, field: "capabilities.gpus[\(index)].name", maxBytes: 128)
                    try InputRules.identifier(gpu.uuid, field: "capabilities.gpus[\(index)].uuid", maxBytes: 128)
                }
                let models = capabilities.models ?? []
                guard models.count <= ModelDiscovery.maxModels else {
                    throw MeshError(.tooMany, "capabilities.models has more than \(ModelDiscovery.maxModels) entries")
                }
                for (index, model) in models.enumerated() {
                    try ModelDiscovery.checkName(model.name, field: "capabilities.models[\(index)].name")
                    if let backend = model.backendName {
                        try ModelDiscovery.checkName(backend, field: "capabilities.models[\(index)].backend_name")
                    }
                }
            }
        } catch {
            throw Refusal.badRequest(error.message)
        }
    }

    /// A base64 public key from a request; a 400 naming `field` when it is not one.
    static func publicKey(_ text: String, field: String) throws(Refusal) -> PublicKey {
        do { return try PublicKey(base64: text) } catch { throw Refusal.badRequest("\(field): \(error.message)") }
    }

    /// A `HOST:PORT` from a request; a 400 naming `field` when it is not one.
    static func hostPort(_ text: String, field: String) throws(Refusal) -> HostPort {
        do { return try HostPort(parsing: text) } catch { throw Refusal.badRequest("\(field): \(error.message)") }
    }
}

extension Double {
    /// Rounded to `places` decimals (ages and latencies in the API: 3 for seconds, 1 for ms).
    func rounded(toPlaces places: Int) -> Double {
        let scale = Foundation.pow(10, Double(places))
        return (self * scale).rounded() / scale
    }
}
