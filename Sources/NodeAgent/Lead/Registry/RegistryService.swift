import AsyncAlgorithms
import AuroraAPI
import Foundation
import Logging
import ServiceLifecycle

/// Runs the lead's registry: waits for the store, loads the registry, then ticks the failure
/// detector every 100 ms (probing late nodes concurrently), beats for the lead itself every
/// interval and flushes `last_seen` every two seconds.
final class RegistryService: Service {
    let registry: Registry
    let state: AgentState
    let inventory: Inventory
    let hub: EventHub
    let logger: Logger

    /// Scoped API tokens, loaded with the registry.
    let apiTokens: APITokens?
    /// This lead's term, begun (or resumed, or found superseded) once the registry loaded.
    let leadership: Leadership?
    /// The operator token's hash, recorded in the store for every later lead.
    let operatorTokenHash: String?

    /// Gateway keys, loaded with the API tokens (so a healthy lead knows every key).
    let gatewayKeys: GatewayKeys?

    init(
        registry: Registry, apiTokens: APITokens? = nil, gatewayKeys: GatewayKeys? = nil,
        leadership: Leadership? = nil, operatorTokenHash: String? = nil, state: AgentState, inventory: Inventory,
        hub: EventHub, logger: Logger
    ) {
        self.apiTokens = apiTokens
        self.gatewayKeys = gatewayKeys
        self.leadership = leadership
        self.operatorTokenHash = operatorTokenHash
        self.registry = registry
        self.state = state
        self.inventory = inventory
        self.hub = hub
        self.logger = logger
    }

    /// Loads once the store is `ok` (retrying every 50 ms; the registry answers 503 meanwhile),
    /// then runs the 100 ms loop until graceful shutdown: detector tick (late nodes probed with a
    /// 500 ms TCP connect, in parallel), the lead's own heartbeat every `heartbeat.interval_s`,
    /// a `last_seen` flush every 2 s and an SSE ping every 15 s. Flushes once more at the end.
    func run() async throws {
        // The store comes first; until it answers the registry answers 503. A failed load is
        // retried after 250 ms.
        try? await cancelWhenGracefulShutdown { await self.state.storeAnswered.wait() }
        while state.storeAnswered.isOpen, !Task.isCancelled, !Task.isShuttingDownGracefully {
            do {
                // The term first: a lead that is no longer the lead loads and writes nothing.
                try await leadership?.begin(operatorTokenHash: operatorTokenHash)
                if leadership?.fencedReason != nil {
                    logger.error(
                        "this agent is not the lead; it answers 503 fenced; with election.rejoin_as_standby it rejoins the new lead as its standby, else it stays fenced until stopped"
                    )
                    try? await gracefulShutdown()
                    return
                }
                try await registry.load(capabilities: await inventory.capabilities(), meshID: state.meshID)
                try await apiTokens?.load()
                try await gatewayKeys?.load()
                state.registryLoaded.open()
                break
            } catch {
                logger.error("cannot load the registry; retrying", metadata: ["nodeagent.error": "\(error.message)"])
                try? await Task.sleep(for: .milliseconds(250))
            }
        }
        guard await registry.loaded else { return }
        let beatEvery = max(1, Int(state.config.heartbeatTiming.intervalS * 10))
        var ticks = 0
        await withDiscardingTaskGroup { group in
            for await _ in AsyncTimerSequence(interval: .milliseconds(100), clock: .continuous)
                .cancelOnGracefulShutdown()
            {
                ticks += 1
                for target in await registry.tick() {
                    group.addTask { [registry] in
                        let outcome = await TCPProbe.connect(
                            host: target.host, port: target.port, timeout: .milliseconds(500))
                        await registry.probed(target, outcome: outcome)
                    }
                }
                if ticks % beatEvery == 0 {
                    await registry.beatLead(
                        capabilities: await inventory.capabilities(), checks: inventory.checks(),
                        postgres: state.postgres?.health, links: state.wireguardReport.peers)
                }
                if ticks % 10 == 0 { await registry.planPaths() }
                if ticks % 20 == 0 { await registry.flush() }
                if ticks % 150 == 0 { hub.ping() }
            }
        }
        await registry.flush()
    }
}

/// The last service in the group, so the first to hear of a graceful shutdown: it ends
/// long-lived streams (SSE) and long-polls (job waits, worker assignments) so the HTTP server
/// can drain.
struct StreamCloser: Service {
    let hub: EventHub
    let jobs: JobCoordinator?

    /// Waits for the graceful shutdown, then ends every SSE stream and job long-poll.
    func run() async throws {
        try? await gracefulShutdown()
        hub.close()
        await jobs?.close()
    }
}

/// Runs the lead's job coordinator: once the registry is loaded, loads the open jobs (and the
/// secrets manager's current versions), then
/// every 250 ms requeues jobs whose lease ran out and places what fits.
/// The lead is healthy once both are loaded.
final class JobService: Service {
    let jobs: JobCoordinator
    let registry: Registry
    let secrets: SecretsManager
    let state: AgentState
    let logger: Logger

    init(jobs: JobCoordinator, registry: Registry, secrets: SecretsManager, state: AgentState, logger: Logger) {
        self.jobs = jobs
        self.registry = registry
        self.secrets = secrets
        self.state = state
        self.logger = logger
    }

    /// The job loop, with the secrets read audit's writer beside it as a child task; both end
    /// on graceful shutdown.
    func run() async throws {
        // The secrets manager's read audit runs as a child of this service and ends with it.
        await withDiscardingTaskGroup { group in
            group.addTask { [secrets] in await secrets.runReadAudit() }
            await runJobs()
            group.cancelAll()
        }
    }

    /// Waits for the registry to load, attaches the coordinator to it, loads open jobs and
    /// secrets versions (a failure is retried after 250 ms; the lead reports `starting`
    /// meanwhile), marks the lead ready, then ticks the coordinator every 250 ms until graceful
    /// shutdown.
    private func runJobs() async {
        try? await cancelWhenGracefulShutdown { await self.state.registryLoaded.wait() }
        guard state.registryLoaded.isOpen else { return }
        await registry.attach(jobs)
        while !Task.isCancelled, !Task.isShuttingDownGracefully {
            do {
                try await jobs.load(nodes: await registry.jobUpdates())
                try await secrets.load()
                state.setRegistryReady()
                break
            } catch {
                logger.error("cannot load jobs; retrying", metadata: ["nodeagent.error": "\(error.message)"])
                try? await Task.sleep(for: .milliseconds(250))
            }
        }
        for await _ in AsyncTimerSequence(interval: .milliseconds(250), clock: .continuous).cancelOnGracefulShutdown() {
            await jobs.tick()
        }
    }
}
