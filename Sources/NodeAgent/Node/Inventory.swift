import AuroraAPI
import Foundation
import Logging
import NIOCore
import NIOPosix
import Synchronization

/// What this machine offers, as its heartbeats report it: CPU, memory, OS, architecture and
/// GPUs (from the `gpus:` inventory when set, else from `nvidia-smi`, else none).
actor Inventory {
    /// Process groups of the `exec` jobs this node's worker runs: their GPU memory is not
    /// "used by other processes", so it is left out of `memory_used_mb` (the lead reserves it).
    nonisolated let jobGroups = JobGroups()

    private let config: NodeConfig
    private let logger: Logger
    /// The profile's service checks, reported with the local ones.
    nonisolated let board: CheckBoard?
    /// The last `nvidia-smi` answer (own jobs' memory taken out), kept when a later call fails.
    private var cachedGPUs: [GPU] = []
    private var gpusSampledAt: ContinuousClock.Instant?
    /// The `nvidia-smi` run in flight, if any. Only the first sample is waited for (a join must
    /// not report a GPU box as having none); later callers take the last sample at once, so an
    /// `nvidia-smi` that hangs (a GPU fallen off the bus) never holds up a heartbeat.
    private var sampling: Task<[GPU], Never>?
    private var firstSampleDone = false
    /// CPU cores, memory in MB, OS and architecture: read once at start, they do not change.
    private let base: Capabilities
    /// nvidia-smi is asked at most this often.
    private let gpuRefresh: Duration
    /// How long one nvidia-smi run may take before it is killed and the last sample kept.
    private let smiTimeout: Duration
    /// nil: `nvidia-smi` from PATH, looked up at each sample.
    private let smiPath: String?

    /// What the inference backend serves (`gpu.backend`), reported as ``Capabilities/models``.
    nonisolated let models: ModelDiscovery?

    init(
        config: NodeConfig, logger: Logger, board: CheckBoard? = nil, models: ModelDiscovery? = nil,
        nvidiaSMI: String? = nil, gpuRefresh: Duration = .seconds(2), smiTimeout: Duration = .seconds(10)
    ) {
        self.smiPath = nvidiaSMI
        self.gpuRefresh = gpuRefresh
        self.smiTimeout = smiTimeout
        self.board = board
        self.models = models
        self.config = config
        self.logger = logger
        var system = utsname()
        uname(&system)
        let arch = withUnsafeBytes(of: &system.machine) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
        let release = withUnsafeBytes(of: &system.release) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
        self.base = Capabilities(
            cpuCores: ProcessInfo.processInfo.activeProcessorCount,
            memoryMB: Int(ProcessInfo.processInfo.physicalMemory / (1 << 20)),
            os: Self.osName(kernel: release), arch: arch, gpus: [])
    }

    /// The capabilities now.
    /// Called for every heartbeat (a node's, and the lead's own record); `nvidia-smi` runs at most
    /// every 2 s, so a fast heartbeat reuses the last GPU sample.
    func capabilities() async -> Capabilities {
        var capabilities = base
        capabilities.gpus = await gpus()
        capabilities.models = models?.models
        return capabilities
    }

    /// The static `gpus:` inventory when set; else `nvidia-smi`, with the memory of this node's own
    /// `exec` jobs subtracted; else none. A failing `nvidia-smi` is logged and the last sample kept.
    /// A stale sample starts a new run beside the caller; only the very first is waited for.
    private func gpus() async -> [GPU] {
        if !config.gpus.isEmpty { return config.gpus }
        let stale = gpusSampledAt.map { $0.duration(to: .now) >= gpuRefresh } ?? true
        if stale, sampling == nil {
            gpusSampledAt = .now
            sampling = Task {
                let gpus = await self.sampleGPUs()
                await self.sampled()
                return gpus
            }
        }
        if !firstSampleDone, let sampling { return await sampling.value }
        return cachedGPUs
    }

    private func sampled() {
        sampling = nil
        firstSampleDone = true
    }

    /// One `nvidia-smi` run into `cachedGPUs`.
    private func sampleGPUs() async -> [GPU] {
        guard let smi = smiPath ?? ProcessRunner.find("nvidia-smi") else {  // no nvidia-smi: no GPUs
            cachedGPUs = []
            return []
        }
        do {
            let result = try await ProcessRunner.run(
                smi,
                [
                    "--query-gpu=index,uuid,name,memory.total,memory.used,utilization.gpu",
                    "--format=csv,noheader,nounits",
                ], timeout: smiTimeout)
            guard result.status == 0 else {
                logger.warning("nvidia-smi failed", metadata: ["nodeagent.error": "\(result.lastLine)"])
                return cachedGPUs
            }
            cachedGPUs = GPUQuery.parse(result.output)
            let own = jobGroups.current
            if !own.isEmpty {
                let apps = try await ProcessRunner.run(
                    smi, ["--query-compute-apps=gpu_uuid,pid,used_memory", "--format=csv,noheader,nounits"],
                    timeout: smiTimeout)
                if apps.status == 0 {
                    cachedGPUs = GPUQuery.subtract(cachedGPUs, apps: apps.output) { own.contains(getpgid($0)) }
                }
            }
        } catch {
            logger.warning("cannot run nvidia-smi", metadata: ["nodeagent.error": "\(error.message)"])
        }
        return cachedGPUs
    }

    /// Local checks reported with every heartbeat: the data dir's disk, then the profile's
    /// service checks that have run.
    nonisolated func checks() -> [CheckResult] {
        diskCheck() + (board?.results ?? [])
    }

    /// `data_dir_disk`: warning from 85 % used, critical from 95 % (blocks reserved for root count
    /// as used), critical when the directory cannot be stat'ed.
    private nonisolated func diskCheck() -> [CheckResult] {
        var stats = statvfs()
        guard statvfs(config.dataDir, &stats) == 0, stats.f_blocks > 0 else {
            return [CheckResult(name: "data_dir_disk", status: .critical, output: "cannot stat \(config.dataDir)")]
        }
        let used = 100.0 * Double(stats.f_blocks - stats.f_bavail) / Double(stats.f_blocks)
        let status: CheckResult.Status = used >= 95 ? .critical : used >= 85 ? .warning : .passing
        return [CheckResult(name: "data_dir_disk", status: status, output: String(format: "%.0f%% used", used))]
    }

    /// `PRETTY_NAME` from `/etc/os-release` with the kernel release, e.g. `Ubuntu 24.04 LTS (Linux 6.8.0)`.
    private static func osName(kernel: String) -> String {
        let release = (try? String(contentsOfFile: "/etc/os-release", encoding: .utf8)) ?? ""
        let pretty = release.split(separator: "\n").first { $0.hasPrefix("PRETTY_NAME=") }
            .map { String($0.dropFirst("PRETTY_NAME=".count)).trimmingCharacters(in: CharacterSet(charactersIn: "\"")) }
        return pretty.map { "\($0) (Linux \(kernel))" } ?? "Linux \(kernel)"
    }
}

/// The process groups of running `exec` jobs, shared by the worker and the inventory.
final class JobGroups: Sendable {
    private let groups = Mutex<Set<pid_t>>([])

    /// The groups running now; the inventory subtracts their GPU memory.
    var current: Set<pid_t> { groups.withLock { $0 } }
    /// Called by ``ExecRunner/run(_:environment:timeout:maxOutput:groups:)`` as the child starts,
    /// with `remove` once it ended.
    func add(_ group: pid_t) { groups.withLock { _ = $0.insert(group) } }
    func remove(_ group: pid_t) { groups.withLock { _ = $0.remove(group) } }
}

/// Parses `nvidia-smi --query-gpu=index,uuid,name,memory.total,memory.used,utilization.gpu
/// --format=csv,noheader,nounits`. Lines that do not parse are skipped; `[N/A]` counts as 0.
enum GPUQuery {
    /// Memory is in MiB (nvidia-smi's `nounits`); utilization in percent.
    static func parse(_ output: String) -> [GPU] {
        output.split(separator: "\n").compactMap { line -> GPU? in
            let fields = line.split(separator: ",", omittingEmptySubsequences: false).map {
                $0.trimmingCharacters(in: .whitespaces)
            }
            guard fields.count == 6, let index = Int(fields[0]), let total = Int(fields[3]) else { return nil }
            return GPU(
                index: index, uuid: fields[1], name: fields[2], memoryTotalMB: total,
                memoryUsedMB: Int(fields[4]) ?? 0, utilizationPct: Int(fields[5]) ?? 0)
        }
    }

    /// Takes the memory of this node's own job processes (`isOwn(pid)`) out of each GPU's
    /// `memory_used_mb`, from `nvidia-smi --query-compute-apps=gpu_uuid,pid,used_memory
    /// --format=csv,noheader,nounits`: what is left is other processes' use.
    static func subtract(_ gpus: [GPU], apps: String, isOwn: (pid_t) -> Bool) -> [GPU] {
        var own: [String: Int] = [:]
        for line in apps.split(separator: "\n") {
            let fields = line.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }
            guard fields.count == 3, let pid = pid_t(fields[1]), let used = Int(fields[2]), isOwn(pid) else { continue }
            own[fields[0], default: 0] += used
        }
        return gpus.map { gpu in
            var gpu = gpu
            gpu.memoryUsedMB = max(0, gpu.memoryUsedMB - (own[gpu.uuid] ?? 0))
            return gpu
        }
    }
}

/// TCP connects, for the lead's probe of a late node and for nodes' RTT to their peers.
enum TCPProbe {
    enum Outcome: Sendable, Equatable {
        /// Connected; the time the connect took.
        case connected(Duration)
        /// The host answered that nothing listens on the port.
        case refused
        /// No answer in time, or another error: proves nothing.
        case inconclusive
    }

    /// `host` must be an IP address (no name lookup: anything else is inconclusive). The channel is
    /// closed at once: only whether and how fast the connect succeeds matters.
    static func connect(host: String, port: Int, timeout: Duration) async -> Outcome {
        let address: SocketAddress
        do { address = try SocketAddress(ipAddress: host, port: port) } catch { return .inconclusive }
        let started = ContinuousClock.now
        let bootstrap = ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .connectTimeout(
                .milliseconds(
                    timeout.components.seconds * 1000 + timeout.components.attoseconds / 1_000_000_000_000_000))
        do {
            let channel = try await bootstrap.connect(to: address).get()
            let elapsed = started.duration(to: .now)
            try? await channel.close()
            return .connected(elapsed)
        } catch let error as IOError where error.errnoCode == ECONNREFUSED {
            return .refused
        } catch let error as NIOConnectionError
            where error.connectionErrors.contains(where: { ($0.error as? IOError)?.errnoCode == ECONNREFUSED })
        {
            return .refused
        } catch {
            return .inconclusive
        }
    }
}
