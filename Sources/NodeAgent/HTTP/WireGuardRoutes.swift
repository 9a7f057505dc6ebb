import AuroraAPI
import Hummingbird
import Mesh
import NIOCore

extension HTTPServer {
    /// The local WireGuard view (docs/API.md §4.14): the interface and its peers, and the
    /// rendered configuration with the private key hidden unless asked for.
    ///
    /// Registered on every agent, both for the operator token:
    ///
    /// - `GET /api/wireguard`: the interface's mode, state, address, public key, listen port, last
    ///   error and peers;
    /// - `GET /api/wireguard/config`: the configuration the mesh asks for now (else the one last
    ///   rendered), as a wg-quick file or, with `?setconf=true`, in `wg setconf` form (no `Address`);
    ///   the private key is hidden unless `?show_private=true`. 503 `starting` while this node's mesh
    ///   address is not known.
    static func addWireGuardRoutes(to router: Router<AgentRequestContext>, agent: AgentParts) {
        let token = agent.token, wireguard = agent.wireguard
        router.on(API.wireguard) { request, _ -> Response in
            try authorize(request, token: token)
            return try json(wireguard.status, status: .ok)
        }
        router.on(API.wireguardConfig) { request, _ -> Response in
            try authorize(request, token: token)
            let showPrivate = try flag(request, "show_private")
            let setconf = try flag(request, "setconf")
            guard let rendered = await wireguard.desired() ?? wireguard.rendered else {
                throw Refusal(
                    .unavailable, code: "starting",
                    message:
                        "this node's mesh address is not known yet (not joined, or no registry copy); retry after it joins"
                )
            }
            let shown = showPrivate ? rendered : rendered.redacted
            return Response(
                status: .ok, headers: [.contentType: "text/plain; charset=utf-8"],
                body: .init(byteBuffer: ByteBuffer(string: setconf ? shown.setconf() : shown.wgQuick())))
        }
    }

    /// `?name=true|false|1|0`; 400 for anything else. Absent is false; present without a value
    /// (`?name`, `?name=`) is true.
    static func flag(_ request: Request, _ name: String) throws -> Bool {
        guard let text = request.uri.queryParameters.get(name) else { return false }
        switch text {
        case "true", "1", "": return true
        case "false", "0": return false
        default: throw Refusal.badRequest("\(name) must be true or false; got '\(text)'")
        }
    }
}
