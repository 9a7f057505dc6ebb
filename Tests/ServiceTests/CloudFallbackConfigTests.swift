import Testing

@testable import NodeAgent

@Suite("Cloud fallback routes (gateway.providers, gateway.fallback)")
struct CloudFallbackConfigTests {
    @Test("routes name a provider and, optionally, the model there; a bad table stops the start with the reason")
    func routes() throws {
        let fallback = try CloudFallback(
            providers: ["groq": "https://api.groq.com/openai/v1/", "local": "http://127.0.0.1:8000/v1"],
            fallback: ["llama3": "groq/llama-3.1-8b-instant", "qwen": "local"], after: 2.5)
        #expect(
            fallback.route(for: "llama3")
                == CloudFallback.Route(
                    provider: "groq", baseURL: "https://api.groq.com/openai/v1", model: "llama-3.1-8b-instant"))
        #expect(fallback.route(for: "qwen")?.model == "qwen" && fallback.route(for: "other") == nil)
        #expect(fallback.after == .milliseconds(2500))
        let bad: [([String: String], [String: String], String)] = [
            (["groq": "ftp://x/v1"], [:], "http(s) base URL"),
            (["groq": "https://"], [:], "http(s) base URL"),
            (["groq": "https://user:pw@x/v1"], [:], "http(s) base URL"),
            (["gr oq": "https://x/v1"], [:], "letters, digits"),
            (["groq": "https://x/v1"], ["m": "openai/gpt"], "names no provider"),
            (["groq": "https://x/v1"], ["m": "groq/a\u{1B}b"], "control character"),
        ]
        for (providers, routes, reason) in bad {
            #expect(throws: AgentError.self) { try CloudFallback(providers: providers, fallback: routes, after: 5) }
            do {
                _ = try CloudFallback(providers: providers, fallback: routes, after: 5)
            } catch {
                #expect(error.message.contains(reason), "\(providers) \(routes): \(error.message)")
            }
        }
        #expect(
            CloudFallback.redact("key sk-123456 leaked: sk-123456", key: "sk-123456")
                == "key [redacted] leaked: [redacted]")
    }
}
