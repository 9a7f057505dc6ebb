import ArgumentParser
import AuroraAPI
import AuroraClient
import Foundation

extension Jobs {
    /// `aurora-cli jobs logs ID [--follow] [--json]`: an exec job's output tail.
    struct Logs: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "The output of an exec job: the last KiB kept, or as it comes with --follow.",
            discussion: """
                The lead keeps the last exec.output_tail_kib KiB (default 64) of each exec job's
                stdout and stderr while it runs and for an hour after. stdout goes to stdout and
                stderr to stderr. With --follow it waits for more until the job ends, then prints
                a status line (to stderr) and exits 0 if the job succeeded, 1 if not.
                --json prints each answer as one JSON line instead (offsets, streams, text).
                """)
        @OptionGroup var localOptions: AgentOptions
        @ParentCommand var parent: Jobs
        @Argument(help: "The job id, or a unique prefix of it (the 8 characters the tables show).") var id: String
        @Flag(name: .shortAndLong, help: "Keep printing output until the job ends.") var follow = false
        @Option(help: "Start at this byte of the output (the next_offset of an earlier answer).") var offset = 0
        @Flag(help: "Print each answer as one JSON line.") var json = false

        func validate() throws {
            guard offset >= 0 else { throw ValidationError("--offset must be 0 or more") }
        }

        func run() async throws {
            let options = localOptions.merged(with: parent.options)
            let client = try options.client()
            let id = try await JobID.resolve(self.id, with: client)
            var offset = self.offset
            var attempt: Int?
            while true {
                let page = try await client.jobLogs(id, offset: offset, wait: follow ? 20 : nil)
                if let seen = attempt, let now = page.attempt, now != seen, !json {
                    JobLogPrinter.note("job \(id) runs again (attempt \(now)); its output starts over")
                }
                attempt = page.attempt ?? attempt
                if json {
                    print(String(decoding: try APICoding.encoder().encode(page), as: UTF8.self))
                } else {
                    if page.startOffset > offset, !page.chunks.isEmpty {
                        JobLogPrinter.note("[\(page.startOffset - offset) earlier bytes are no longer kept]")
                    }
                    JobLogPrinter.write(page.chunks)
                }
                offset = page.nextOffset
                if page.done {
                    if !json { JobLogPrinter.note(try await JobLogPrinter.status(of: id, page: page, client: client)) }
                    if page.state != .succeeded { throw ExitCode(1) }
                    return
                }
                if !follow { return }
            }
        }
    }
}

/// Writes job output to the terminal.
enum JobLogPrinter {
    /// Each chunk to the stream it came from; the lead made the text safe for a terminal.
    static func write(_ chunks: [JobLogChunk]) {
        for chunk in chunks {
            let handle = chunk.stream == .stdout ? FileHandle.standardOutput : FileHandle.standardError
            handle.write(Data(chunk.text.utf8))
        }
    }

    /// A line of the command's own on stderr.
    static func note(_ text: String) {
        FileHandle.standardError.write(Data((TerminalText.safe(text) + "\n").utf8))
    }

    /// `job ID succeeded on NODE`, or `... failed: ERROR`.
    static func status(of id: String, page: JobLogs, client: AuroraClient) async throws -> String {
        let job = try await client.job(id)
        var line = "job \(id) \(job.state.rawValue)" + (job.node.map { " on \($0)" } ?? "")
        if let error = job.error { line += ": \(error)" }
        return line
    }
}
