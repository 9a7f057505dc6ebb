import AsyncHTTPClient
import AuroraAPI
import AuroraClient
import Foundation
import Mesh
import NIOCore
import NIOHTTP1
import Secrets

/// The lead's cloud fallback for gateway calls (`gateway.providers`, `gateway.fallback`): for a
/// model with a route, a call that no GPU node has started within ``after`` (or that no node
/// serves at all) goes to an OpenAI-compatible provider, with the provider's key taken from the
/// mesh's secrets (`PROVIDER/api_key`, resolved for the lead at each call, audited). The key
/// goes only into the provider's `Authorization` header: never into a log, an event or an error
/// (a provider's error that repeats it has it cut out).
struct CloudFallback: Sendable {
    struct Route: Sendable, Equatable {
        /// The provider's name (its key is the secret NAME/api_key).
        var provider: String
        /// Its base URL, without a trailing slash (`https://api.groq.com/openai/v1`).
        var baseURL: String
        /// The model's name there.
        var model: String
    }

    let routes: [String: Route]
    let after: Duration

    /// Checks the profile's tables: every provider an http(s) URL, every route a known
    /// provider and model names that are names. Throws ``AgentError`` (`config`).
    init(providers: [String: String], fallback: [String: String], after seconds: Double) throws(AgentError) {
        var bases: [String: String] = [:]
        for (name, url) in providers {
            guard InputRules.isPlainName(name, maxBytes: 64, also: "_-")
            else {
                throw AgentError(
                    .config, "gateway.providers: '\(InputRules.printable(name))' must be 1-64 letters, digits, - or _")
            }
            guard let parsed = URL(string: url), ["http", "https"].contains(parsed.scheme?.lowercased() ?? ""),
                parsed.host?.isEmpty == false, parsed.query == nil, parsed.user == nil
            else {
                throw AgentError(
                    .config,
                    "gateway.providers['\(name)'] must be an http(s) base URL such as https://api.groq.com/openai/v1")
            }
            bases[name] = url.hasSuffix("/") ? String(url.dropLast()) : url
        }
        var routes: [String: Route] = [:]
        for (model, target) in fallback {
            let parts = target.split(separator: "/", maxSplits: 1).map(String.init)
            guard let provider = parts.first, let base = bases[provider] else {
                throw AgentError(
                    .config,
                    "gateway.fallback['\(InputRules.printable(model))']: '\(InputRules.printable(target))' names no provider of gateway.providers"
                )
            }
            let there = parts.count > 1 ? parts[1] : model
            do throws(MeshError) {
                try ModelDiscovery.checkName(model, field: "gateway.fallback key")
                try ModelDiscovery.checkName(there, field: "gateway.fallback['\(InputRules.printable(model))']")
            } catch {
                throw AgentError(.config, error.message)
            }
            routes[model] = Route(provider: provider, baseURL: base, model: there)
        }
        self.routes = routes
        self.after = .milliseconds(Int64(max(0, min(seconds, 300)) * 1000))
    }

    func route(for model: String) -> Route? { routes[model] }

    /// The provider's key, resolved for the lead (audited); 502 `provider_unavailable` when no
    /// such secret resolves.
    static func key(for route: Route, secrets: SecretsManager, lead: String) async throws(Refusal) -> String {
        do {
            let (slot, found) = try await secrets.resolveAudited(
                service: route.provider, keyName: "api_key", node: lead, company: "", actor: "gateway",
                action: "read")
            let value = try secrets.open(found, at: slot)
            return value.withUnsafeBytes { String(decoding: $0, as: UTF8.self) }
        } catch {
            throw Refusal(
                .upstreamFailed, code: "provider_unavailable",
                message:
                    "the fallback provider '\(route.provider)' has no key: set the secret \(route.provider)/api_key")
        }
    }

    /// Sends an OpenAI call (`path` under `/v1`) to the provider with `body` naming its model;
    /// the provider's answer as it came. 502 `provider_failed` when it cannot be reached.
    static func send(
        _ route: Route, path: String, body: [String: JSONValue], key: String, timeout: Duration
    ) async throws(Refusal) -> HTTPClientResponse {
        var body = body
        body["model"] = .string(route.model)
        var request = HTTPClientRequest(url: route.baseURL + String(path.dropFirst("/v1".count)))
        request.method = .POST
        request.headers.add(name: "Content-Type", value: "application/json")
        request.headers.add(name: "Authorization", value: "Bearer \(key)")
        request.body = .bytes(ByteBuffer(bytes: Array((try? APICoding.encoder().encode(body)) ?? Data())))
        do {
            return try await HTTPClient.shared.execute(
                request, timeout: .milliseconds(Int64(timeout / .milliseconds(1))))
        } catch {
            throw Refusal(
                .upstreamFailed, code: "provider_failed",
                message: redact(
                    "the fallback provider '\(route.provider)' cannot be reached: \(AuroraClientError.reason(error))",
                    key: key))
        }
    }

    /// `text` with every occurrence of `key` cut out.
    static func redact(_ text: String, key: String) -> String {
        guard key.utf8.count >= 4 else { return text }
        return text.replacingOccurrences(of: key, with: "[redacted]")
    }
}
