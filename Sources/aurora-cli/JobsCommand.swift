import ArgumentParser
import AuroraAPI
import AuroraClient
import Foundation

extension JobKind: ExpressibleByArgument {}
extension JobState: ExpressibleByArgument {}

/// `aurora-cli jobs`: GPU jobs, through any agent (the lead answers; others forward).
struct Jobs: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Submit, list, show, cancel GPU jobs and see the queue.",
        subcommands: [Submit.self, List.self, Show.self, Cancel.self, Queue.self, Logs.self],
        defaultSubcommand: List.self)

    @OptionGroup var localOptions: AgentOptions
    @ParentCommand var root: AuroraCLI

    var options: AgentOptions { localOptions.merged(with: root.options) }

    struct Submit: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Submit a job: generate (--model, --prompt) or exec (a command after --).",
            discussion: """
                Examples:
                  aurora-cli jobs submit --model llama3 --prompt "Hi" --wait 60
                  aurora-cli jobs submit --gpus 2 --min-vram 20000 -- python train.py
                Priority: 0-9 (9 highest) or low, normal, high, critical.
                Prints the job id (the job as JSON with --json). With --wait it
                waits for the job to finish and exits 1 if the job failed.
                """)
        @OptionGroup var localOptions: AgentOptions
        @ParentCommand var parent: Jobs
        @Option(help: "generate or exec (default: exec when a command follows --, else generate).") var kind: JobKind?
        @Option(help: "Model name (generate).") var model: String?
        @Option(help: "Prompt (generate); '-' reads it from stdin.") var prompt: String?
        @Option(help: "Priority: 0-9 or low, normal, high, critical.") var priority: String = "normal"
        @Option(name: .customLong("min-vram"), help: "Free VRAM needed on each GPU, in MB.") var minVram: Int = 0
        @Option(name: .customLong("gpu-model"), help: "GPU model pattern, e.g. 4090 or 'A100*'.") var gpuModel: String?
        @Option(help: "GPUs on one node (default 1).") var gpus: Int?
        @Option(help: "Node labels required, k=v,k=v.") var labels: String?
        @Option(name: .customLong("idempotency-key"), help: "Same key, same job: safe to retry.") var idempotencyKey:
            String?
        @Option(name: .customLong("max-attempts"), help: "Runs before the job fails (default 3).") var maxAttempts: Int?
        @Option(help: "exec: seconds before the command is killed.") var timeout: Double?
        @Option(help: "Wait up to this many seconds for the job to finish.") var wait: Double?
        @Flag(
            name: .customLong("allow-unplaceable"),
            help: "Queue the job even if no node that has joined could ever run it (it waits for one to join).")
        var allowUnplaceable = false
        @Flag(help: "Print the job as JSON.") var json = false
        @Argument(parsing: .postTerminator, help: "exec: the command and its arguments, after --.") var command:
            [String] = []

        func run() async throws {
            let options = localOptions.merged(with: parent.options)
            guard let priorityValue = JobPriority.parse(priority) else {
                throw ValidationError("--priority must be 0-9 or low, normal, high, critical")
            }
            let kind = self.kind ?? (command.isEmpty ? .generate : .exec)
            var payload: [String: JSONValue] = [:]
            switch kind {
            case .generate:
                guard let model else { throw ValidationError("generate jobs need --model") }
                guard var text = prompt else {
                    throw ValidationError("generate jobs need --prompt (or --prompt - for stdin)")
                }
                if text == "-" {
                    text = String(decoding: FileHandle.standardInput.readDataToEndOfFile(), as: UTF8.self)
                }
                payload = ["model": .string(model), "prompt": .string(text)]
            case .exec:
                guard !command.isEmpty else { throw ValidationError("exec jobs need a command after --") }
                payload = ["argv": .array(command.map(JSONValue.string))]
                if let timeout { payload["timeout_s"] = .number(timeout) }
            }
            var requiredLabels: [String: String]?
            if let labels {
                requiredLabels = [:]
                for pair in labels.split(separator: ",") {
                    let parts = pair.split(separator: "=", maxSplits: 1).map(String.init)
                    guard parts.count == 2, !parts[0].isEmpty else {
                        throw ValidationError("--labels takes k=v,k=v; '\(pair)' is not k=v")
                    }
                    requiredLabels?[parts[0]] = parts[1]
                }
            }
            let submission = JobSubmission(
                kind: kind, priority: priorityValue,
                requirements: JobRequirements(
                    minVramMB: minVram, gpuModel: gpuModel, gpuCount: gpus, labels: requiredLabels),
                payload: payload, idempotencyKey: idempotencyKey, maxAttempts: maxAttempts,
                allowUnplaceable: allowUnplaceable ? true : nil)
            let client = try options.client()
            var job = try await client.submitJob(submission)
            for warning in job.warnings ?? [] {
                FileHandle.standardError.write(
                    Data(TerminalText.safe("warning: \(warning)\n", keepNewlines: true).utf8))
            }
            if let wait, !job.state.isTerminal {
                job = try await client.job(job.id, wait: wait)
            }
            print(json ? try encodePretty(job) : wait == nil ? job.id : JobTable.describe(job))
            if job.state == .failed { throw ExitCode(1) }
        }
    }

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Recent jobs, newest first.")
        @OptionGroup var localOptions: AgentOptions
        @ParentCommand var parent: Jobs
        @Option(help: "Only jobs in this state: queued, assigned, running, succeeded, failed, cancelled.") var state:
            JobState?
        @Option(help: "How many (1-10000).") var limit: Int = 50
        @Flag(help: "Print {jobs: [...]} as JSON.") var json = false

        func run() async throws {
            let options = localOptions.merged(with: parent.options)
            let list = try await options.client().jobs(state: state, limit: limit)
            print(json ? try encodePretty(list) : JobTable.render(list.jobs))
        }
    }

    struct Show: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "One job: its state, and for a queued one its place, ETA and why it is not running.",
            discussion: "--wait waits for it to finish; --json prints the job as JSON.")
        @OptionGroup var localOptions: AgentOptions
        @ParentCommand var parent: Jobs
        @Argument(help: "The job id, or a unique prefix of it (the 8 characters the tables show).") var id: String
        @Option(help: "Wait up to this many seconds for the job to finish.") var wait: Double?
        @Flag(help: "Print the job as JSON.") var json = false

        func run() async throws {
            let options = localOptions.merged(with: parent.options)
            let client = try options.client()
            let job = try await client.job(try await JobID.resolve(id, with: client), wait: wait)
            print(json ? try encodePretty(job) : JobTable.details(job))
        }
    }

    struct Cancel: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Cancel a job; a running one is stopped on its worker.")
        @OptionGroup var localOptions: AgentOptions
        @ParentCommand var parent: Jobs
        @Argument(help: "The job id, or a unique prefix of it (the 8 characters the tables show).") var id: String
        @Flag(help: "Print the job as JSON.") var json = false

        func run() async throws {
            let options = localOptions.merged(with: parent.options)
            let client = try options.client()
            let job = try await client.cancelJob(try await JobID.resolve(id, with: client))
            print(json ? try encodePretty(job) : "cancelled \(job.id)")
        }
    }

    struct Queue: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Queued jobs in the order they will be placed, with ETAs.")
        @OptionGroup var localOptions: AgentOptions
        @ParentCommand var parent: Jobs
        @Flag(help: "Print the queue as JSON.") var json = false

        func run() async throws {
            let options = localOptions.merged(with: parent.options)
            let queue = try await options.client().queue()
            if json { return print(try encodePretty(queue)) }
            let rows = queue.queued.map { entry in
                [
                    String(entry.position), String(entry.id.prefix(8)), entry.kind.rawValue, String(entry.priority),
                    String(entry.minVramMB),
                    JobTable.eta(entry.etaS), MeshTable.lastSeen(entry.submittedAt),
                ]
            }
            print(JobTable.table(["POS", "ID", "KIND", "PRIO", "VRAM MB", "ETA", "SUBMITTED"], rows))
            print(
                "\(queue.queued.count) queued"
                    + (queue.meanRunS.map { String(format: "  ·  mean run %.1fs", $0) } ?? ""))
        }
    }
}

/// Jobs as tables.
enum JobTable {
    static func render(_ jobs: [Job]) -> String {
        let rows = jobs.map { job -> [String] in
            let gpus: String = job.gpus.map { $0.map(String.init).joined(separator: ",") } ?? "-"
            let error: String = job.error.map { String($0.prefix(60)) } ?? ""
            let node: String = job.node ?? "-"
            return [
                String(job.id.prefix(8)), job.kind.rawValue, String(job.priority), job.state.rawValue,
                String(job.attempt),
                node, gpus, MeshTable.lastSeen(job.submittedAt), error,
            ]
        }
        return table(["ID", "KIND", "PRIO", "STATE", "TRY", "NODE", "GPUS", "SUBMITTED", "ERROR"], rows)
    }

    static func describe(_ job: Job) -> String {
        var text =
            "\(job.id)  \(job.state.rawValue)" + (job.node.map { " on \($0)" } ?? "") + "  attempt \(job.attempt)"
        if let error = job.error { text += "\nerror: \(error)" }
        if case .object(let result)? = job.result {
            if let answer = result["text"]?.string { text += "\n" + answer }
            if let out = result["stdout"]?.string, !out.isEmpty { text += "\n" + out }
        }
        return TerminalText.safe(text, keepNewlines: true)
    }

    /// A job as people read it: state, node, attempts; for a queued one its place, ETA and why
    /// it waits, node by node.
    static func details(_ job: Job) -> String {
        var lines = [
            "\(job.id)  \(job.kind.rawValue)  \(job.state.rawValue)" + (job.node.map { " on \($0)" } ?? "")
                + "  attempt \(job.attempt)/\(job.maxAttempts)  priority \(job.priority)",
            "submitted \(MeshTable.lastSeen(job.submittedAt))" + (job.submittedBy.map { " by \($0)" } ?? ""),
        ]
        if job.state == .queued {
            lines.append(
                "position \(job.position.map(String.init) ?? "?")  ·  ETA \(eta(job.etaS))")
        }
        if let waiting = job.waiting {
            lines.append("waiting: \(waiting.summary)")
            for reason in waiting.reasons {
                let more = reason.count > reason.nodes.count ? ", …" : ""
                lines.append("  \(reason.code): \(reason.nodes.joined(separator: ", "))\(more)")
            }
        }
        if let error = job.error { lines.append("error: \(error)") }
        if case .object(let result)? = job.result {
            if let answer = result["text"]?.string { lines.append(answer) }
            if let out = result["stdout"]?.string, !out.isEmpty { lines.append(out) }
        }
        return TerminalText.safe(lines.joined(separator: "\n"), keepNewlines: true)
    }

    /// An ETA in seconds, or `unknown`.
    static func eta(_ seconds: Double?) -> String {
        guard let seconds else { return "unknown" }
        if seconds < 1 { return "<1s" }
        if seconds < 120 { return String(format: "%.0fs", seconds) }
        if seconds < 7200 { return String(format: "%.0fm", seconds / 60) }
        return String(format: "%.1fh", seconds / 3600)
    }

    static func table(_ header: [String], _ rows: [[String]]) -> String {
        let rows = rows.map { $0.map { TerminalText.safe($0) } }
        let widths = header.indices.map { column in ([header] + rows).map { $0[column].count }.max() ?? 0 }
        return ([header] + rows).map { cells in
            cells.enumerated().map { index, cell in
                index == cells.count - 1 ? cell : cell.padding(toLength: widths[index], withPad: " ", startingAt: 0)
            }.joined(separator: "  ")
        }.joined(separator: "\n")
    }
}

/// Job ids as people type them (``IDPrefix``): the tables print the first 8 characters.
enum JobID {
    /// `text` itself when it is a whole id; else the one job among the caller's newest 10,000
    /// whose id starts with it. No match (exit 3) and several matches are errors naming the
    /// prefix (and the candidates).
    static func resolve(_ text: String, with client: AuroraClient) async throws -> String {
        if IDPrefix.isWholeID(text) { return text.lowercased() }
        let shown = TerminalText.safe(String(text.prefix(64)))
        if !IDPrefix.isPrefix(text) {
            throw ValidationError(
                "'\(shown)' is not a job id or a prefix of one (\(IDPrefix.minimumLength) or more hex digits)")
        }
        switch IDPrefix.match(text, among: try await client.jobs(limit: 10_000).jobs.map(\.id)) {
        case .one(let id): return id
        case .none, .invalid:
            throw CLIError("no job with an id starting '\(shown)' among your newest 10000 jobs", exitCode: 3)
        case .several(let ids):
            throw CLIError(
                "'\(shown)' names \(ids.count) jobs; give more of the id: "
                    + ids.prefix(10).joined(separator: ", ") + (ids.count > 10 ? ", …" : ""))
        }
    }
}
