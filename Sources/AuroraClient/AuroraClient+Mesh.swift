import AuroraAPI
import Foundation
import NIOCore

// A node's calls to its lead. All but the join are signed: the client needs a ``AuroraClient/signer``
// for the node named in the path (the lead answers 401 for another node's signature). Each
// builds its path from ``API`` and escapes its parameters inside.

extension AuroraClient {
    /// `POST /api/nodes/join`: joins the mesh with the join token in `request`; the answer (201)
    /// holds the node's record and the mesh's keys.
    public func join(_ request: JoinRequest) async throws(AuroraClientError) -> JoinResponse {
        try await decode(call(API.join, body: request))
    }

    /// `POST /api/nodes/{name}/heartbeat`: node `name`'s heartbeat, signed by it.
    public func heartbeat(_ beat: HeartbeatRequest, of name: String) async throws(AuroraClientError)
        -> HeartbeatResponse
    {
        try await decode(call(API.heartbeat, name, body: beat))
    }

    /// `POST /api/nodes/{name}/leave`: node `name` leaves the mesh on purpose (left, not dead);
    /// signed by it. Returns its record.
    public func leave(_ name: String) async throws(AuroraClientError) -> Node {
        try await decode(call(API.leave, name))
    }

    /// `POST /api/nodes/{name}/reports`: a batch of node `name`'s outbox, signed by it; the
    /// answer has one outcome per report taken, in order.
    public func sendReports(_ batch: ReportBatch, of name: String) async throws(AuroraClientError) -> ReportAnswer {
        try await decode(call(API.nodeReports, name, body: batch))
    }

    /// `GET /api/gpu/assignments`: the signing worker's new assignments and the jobs it must
    /// stop; the lead holds the answer up to `wait` seconds (0-60, default 20) until there is
    /// one (the call's timeout grows by as much).
    public func assignments(wait: Double? = nil) async throws(AuroraClientError) -> AssignmentBatch {
        try await decode(
            call(
                API.gpuAssignments, query: [("wait", wait.map { String($0) })],
                timeout: .seconds(Int64(wait ?? 20) + 10)))
    }

    /// `POST /api/gpu/jobs/{id}/result`: the signing worker's result for job `id` at its current
    /// attempt (409 otherwise). Returns the job.
    public func reportJobResult(_ result: JobResult, for id: String) async throws(AuroraClientError) -> Job {
        try await decode(call(API.jobResult, id, body: result))
    }

    /// `POST /api/gpu/jobs/{id}/output`: new output of the job the signing worker runs, at its
    /// current attempt (409 otherwise). Returns how far the lead's copy reaches.
    public func reportJobOutput(_ report: JobOutputReport, for id: String) async throws(AuroraClientError)
        -> JobOutputAccepted
    {
        try await decode(call(API.jobOutput, id, body: report))
    }

    /// `POST /api/gpu/jobs/{id}/stream`: the next chunks of the streamed call the signing worker
    /// runs, at its current attempt (409 otherwise). Returns the index the lead expects next and
    /// whether to stop.
    public func pushJobStream(_ push: InferenceStreamPush, for id: String) async throws(AuroraClientError)
        -> InferenceStreamAck
    {
        try await decode(call(API.jobStream, id, body: push))
    }

    /// `POST /api/connectivity/status`: the signing node's probe results. Returns how many the
    /// lead accepted.
    public func reportConnectivity(_ report: ConnectivityReport) async throws(AuroraClientError) -> Int {
        try await decode(call(API.reportConnectivity, body: report), as: ConnectivityAccepted.self).accepted
    }
}

/// The answer of `POST /api/connectivity/status`: `{"accepted": N}`.
private struct ConnectivityAccepted: Decodable {
    var accepted: Int
}

// MARK: - Prometheus

extension AuroraClient {
    /// `GET /api/prometheus/targets`: every agent's metrics endpoint, as Prometheus's HTTP service
    /// discovery reads it.
    public func prometheusTargets() async throws(AuroraClientError) -> [PrometheusTargetGroup] {
        try await decode(call(API.prometheusTargets))
    }
}

// MARK: - Leads

extension AuroraClient {
    /// `GET /api/lead`: what the agent knows of the mesh's leads (its role, the epoch, the lead,
    /// the standbys).
    public func leadStatus() async throws(AuroraClientError) -> LeadStatus {
        try await decode(call(API.leadStatus))
    }

    /// `GET /api/lead/handoff`: the lead's signed term (the caller checks the signature).
    public func leadHandoff() async throws(AuroraClientError) -> LeadHandoff {
        try await decode(call(API.leadHandoff))
    }

    /// `GET /api/lead/followed`: the newest signed term the agent holds (the lead's own, or the
    /// one a node followed at a handoff); the caller checks the signature.
    public func followedTerm() async throws(AuroraClientError) -> LeadHandoff {
        try await decode(call(API.followedTerm))
    }

    /// `POST /api/lead/promote` on a standby's agent: promotes it; the agent restarts as the lead
    /// right after answering.
    public func promoteLead(acceptDataLoss: Bool = false) async throws(AuroraClientError) -> PromoteResponse {
        try await decode(
            call(
                API.promoteLead, body: PromoteRequest(acceptDataLoss: acceptDataLoss ? true : nil),
                timeout: .seconds(30))
        )
    }

    /// `POST /api/lead/step-down`, signed by a standby: the lead fences itself.
    public func stepDown() async throws(AuroraClientError) -> StepDownResponse {
        try await decode(call(API.stepDown))
    }

    /// `POST /api/lead/failsafe`, signed by the lead for one standby while etcd does not answer
    /// it: the standby promises not to campaign or promote for `ttlMs`.
    public func failsafe(_ request: FailsafeRequest) async throws(AuroraClientError) -> FailsafeAnswer {
        try await decode(call(API.failsafe, body: request))
    }

    /// `POST /api/lead/rejoin`, signed by an old lead that a newer term fenced: the lead takes it
    /// back as a standby and answers what a standby's join gets.
    public func rejoinLead(_ request: LeadRejoinRequest) async throws(AuroraClientError) -> JoinResponse {
        try await decode(call(API.rejoinLead, body: request))
    }
}
