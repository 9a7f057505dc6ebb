import AuroraAPI
import Foundation

/// What a job submission may ask for, and the check every submission passes before the job
/// book sees it. Every refusal names the field.
extension JobCoordinator {
    /// Limits of what a submission may ask for.
    enum Limits {
        static let maxPayloadBytes = 256 * 1024
        static let maxAttempts = 1...10
        static let defaultMaxAttempts = 3
        static let gpuCount = 1...16
        static let maxWait = 300.0
    }

    /// A submission checked and normalised.
    struct Valid: Sendable {
        var kind: JobKind
        var priority: Int
        var requirements: JobRequirements
        var payload: [String: JSONValue]
        var idempotencyKey: String?
        var maxAttempts: Int
    }

    /// Checks a submission; every refusal names the field.
    static func validate(_ submission: JobSubmission) throws(Refusal) -> Valid {
        var requirements = submission.requirements ?? JobRequirements()
        guard requirements.minVramMB >= 0 else {
            throw Refusal.badRequest("requirements.min_vram_mb must be 0 or more (MB)")
        }
        guard requirements.minVramMB <= 16 << 20 else {
            throw Refusal.badRequest("requirements.min_vram_mb is larger than any GPU")
        }
        let count = requirements.gpuCount ?? 1
        guard Limits.gpuCount.contains(count) else { throw Refusal.badRequest("requirements.gpu_count must be 1-16") }
        requirements.gpuCount = count
        if let model = requirements.gpuModel, model.isEmpty || model.count > 128 {
            throw Refusal.badRequest("requirements.gpu_model must be 1-128 characters")
        }
        let maxAttempts = submission.maxAttempts ?? Limits.defaultMaxAttempts
        guard Limits.maxAttempts.contains(maxAttempts) else { throw Refusal.badRequest("max_attempts must be 1-10") }
        if let key = submission.idempotencyKey, key.isEmpty || key.utf8.count > 200 {
            throw Refusal.badRequest("idempotency_key must be 1-200 bytes")
        }
        let size = (try? APICoding.encoder().encode(submission.payload).count) ?? Int.max
        guard size <= Limits.maxPayloadBytes else {
            throw Refusal(
                .tooLarge, code: "payload_too_large",
                message: "payload is \(size) bytes; the limit is \(Limits.maxPayloadBytes)")
        }
        let payload = submission.payload
        switch submission.kind {
        case .generate:
            guard case .string(let model)? = payload["model"], !model.isEmpty else {
                throw Refusal.badRequest("payload.model must be a non-empty string")
            }
            if let openAI = payload["openai"] {
                // An OpenAI-style request passed through to the backend as it is (the gateway's).
                guard case .object(let call) = openAI, call.count == 2, case .string(let path)? = call["path"],
                    OpenAIPassthrough.paths.contains(path), case .object? = call["body"]
                else {
                    throw Refusal.badRequest(
                        "payload.openai must be {path: \(OpenAIPassthrough.paths.joined(separator: " | ")), body: {…}}")
                }
                if let unknown = payload.keys.sorted().first(where: { !["model", "openai", "timeout_s"].contains($0) })
                {
                    throw Refusal.badRequest("unknown field 'payload.\(unknown)' next to payload.openai")
                }
                break
            }
            switch (payload["prompt"], payload["messages"]) {
            case (.string?, nil), (nil, .array?): break
            case (nil, nil): throw Refusal.badRequest("payload needs 'prompt' (a string) or 'messages' (a list)")
            case (.some, .some): throw Refusal.badRequest("payload takes 'prompt' or 'messages', not both")
            case (.some, nil): throw Refusal.badRequest("payload.prompt must be a string")
            case (nil, .some): throw Refusal.badRequest("payload.messages must be a list")
            }
            if let options = payload["options"], case .object = options {
            } else if payload["options"] != nil {
                throw Refusal.badRequest("payload.options must be an object")
            }
            if let unknown = payload.keys.sorted().first(where: {
                !["model", "prompt", "messages", "options", "timeout_s"].contains($0)
            }) {
                throw Refusal.badRequest("unknown field 'payload.\(unknown)'")
            }
        case .exec:
            guard case .array(let argv)? = payload["argv"], !argv.isEmpty else {
                throw Refusal.badRequest("payload.argv must be a non-empty list of strings")
            }
            guard argv.allSatisfy({ $0.string != nil }) else {
                throw Refusal.badRequest("payload.argv must be a list of strings")
            }
            if let unknown = payload.keys.sorted().first(where: {
                !["argv", "timeout_s", "max_output_bytes"].contains($0)
            }) {
                throw Refusal.badRequest("unknown field 'payload.\(unknown)'")
            }
            if let value = payload["max_output_bytes"] {
                guard case .number(let n) = value, n >= 0, n <= 262_144 else {
                    throw Refusal.badRequest("payload.max_output_bytes must be 0-262144")
                }
            }
        }
        if let value = payload["timeout_s"] {
            guard case .number(let n) = value, n > 0, n <= 7 * 86_400 else {
                throw Refusal.badRequest("payload.timeout_s must be a number of seconds (up to 604800)")
            }
        }
        // The store's text and jsonb cannot hold U+0000: refused here, not as a store failure.
        if let field = Self.fieldHoldingNUL(submission) { throw Refusal.badRequest("\(field) must not contain U+0000") }
        return Valid(
            kind: submission.kind, priority: submission.priority?.value ?? JobPriority.normal,
            requirements: requirements,
            payload: payload, idempotencyKey: submission.idempotencyKey, maxAttempts: maxAttempts)
    }

    /// The first field of a submission whose text (a key or a string, at any depth) holds U+0000.
    static func fieldHoldingNUL(_ submission: JobSubmission) -> String? {
        func holds(_ value: JSONValue) -> Bool {
            switch value {
            case .string(let text): text.unicodeScalars.contains("\u{0}")
            case .array(let items): items.contains(where: holds)
            case .object(let members): members.contains { $0.key.unicodeScalars.contains("\u{0}") || holds($0.value) }
            case .number, .bool, .null: false
            }
        }
        let requirements = submission.requirements
        if holds(.object(submission.payload)) { return "payload" }
        if let key = submission.idempotencyKey, holds(.string(key)) { return "idempotency_key" }
        if let model = requirements?.gpuModel, holds(.string(model)) { return "requirements.gpu_model" }
        if let labels = requirements?.labels, holds(.object(labels.mapValues(JSONValue.string))) {
            return "requirements.labels"
        }
        return nil
    }
}
