import AuroraAPI
import Foundation
import HTTPTypes
import Hummingbird
import Logging
import Mesh

/// A standby lead's reads from its own copy (``StandbyReads``), for the node and job routes of
/// a node: each helper answers from the copy, or returns nil when the copy cannot answer now
/// (not cloned yet, its server down), and the route goes on to the lead as on any node.
///
/// Who may read is decided here, once, for all four routes: this node's operator token reads as
/// `node:NAME` (what the lead sees when this node forwards it), the mesh admin token and API
/// tokens (any role) as their grant in the copy says; anything else is 401, as on the lead. Job
/// reads keep the lead's visibility rules (``JobAccess``): another caller's job is 404.
extension HTTPServer {
    static let readFromHeader = HTTPField.Name("X-Aurora-Read-From")!
    static let replicaStateHeader = HTTPField.Name("X-Aurora-Replica-State")!

    /// The caller's name for a read from the copy; nil when the copy cannot check the token now.
    static func standbyReader(
        _ request: Request, token: AdminToken, node: String, reads: StandbyReads
    ) async throws(Refusal) -> String? {
        guard let presented = bearerToken(request) else {
            throw Refusal.unauthorized("this call needs the operator token or an API token (Authorization: Bearer …)")
        }
        if token.accepts(presented) { return "node:\(node)" }
        guard presented.utf8.count <= 256, presented.allSatisfy({ $0.isASCII && !$0.isWhitespace }) else {
            throw Refusal.unauthorized("the bearer token is malformed")
        }
        let grant: APITokens.Grant?
        do throws(AgentError) { grant = try await reads.grant(for: presented) } catch { return nil }
        guard let grant else { throw Refusal.unauthorized("the token is not valid for this agent") }
        return grant.caller
    }

    /// `GET /nodes` or `GET /nodes/{name}` (`name`) from the copy.
    static func standbyNodes(
        _ request: Request, name: String?, token: AdminToken, node: NodeParts, reads: StandbyReads
    ) async throws -> Response? {
        guard try await standbyReader(request, token: token, node: node.membership.config.name, reads: reads) != nil
        else { return nil }
        let list: NodeList
        do throws(AgentError) { list = try await reads.nodes(lead: node.membership.leadView.name) } catch {
            return nil
        }
        guard let name else { return try standbyJSON(list, reads: reads) }
        guard let found = list.nodes.first(where: { $0.name == name }) else {
            throw Refusal.notFound("no node named '\(name)'")
        }
        return try standbyJSON(found, reads: reads)
    }

    /// `GET /gpu/jobs?state=&limit=` from the copy, newest first, as the caller may see them.
    static func standbyJobs(
        _ request: Request, state: JobState?, limit: Int, token: AdminToken, node: NodeParts, reads: StandbyReads
    ) async throws -> Response? {
        guard
            let caller = try await standbyReader(request, token: token, node: node.membership.config.name, reads: reads)
        else { return nil }
        let jobs: [Job]
        do throws(AgentError) { jobs = try await reads.jobs(state: state, visibleTo: caller, limit: limit) } catch {
            return nil
        }
        return try standbyJSON(JobList(jobs: jobs), reads: reads)
    }

    /// `GET /gpu/jobs/{id}` (without `?wait=`) from the copy; another caller's job is 404.
    static func standbyJob(
        _ request: Request, id: String, token: AdminToken, node: NodeParts, reads: StandbyReads
    ) async throws -> Response? {
        guard
            let caller = try await standbyReader(request, token: token, node: node.membership.config.name, reads: reads)
        else { return nil }
        let stored: Job?
        do throws(AgentError) { stored = try await reads.job(id) } catch { return nil }
        guard let job = stored, JobAccess.mayRead(job, caller) else { throw JobCoordinator.notFound(id) }
        return try standbyJSON(job, reads: reads)
    }

    /// 200 with the value and where it was read: `X-Aurora-Read-From`, and the replica's state
    /// when it is not streaming.
    private static func standbyJSON(_ value: some Encodable, reads: StandbyReads) throws -> Response {
        var response = try json(value, status: .ok)
        response.headers[readFromHeader] = reads.copy.rawValue
        if let lagging = reads.lagging() { response.headers[replicaStateHeader] = lagging.state }
        return response
    }
}
