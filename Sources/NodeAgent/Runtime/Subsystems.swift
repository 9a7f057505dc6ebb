import AuroraAPI
import Foundation
import Logging
import ServiceLifecycle
import Synchronization

/// A service that can be restarted in place (`aurora-cli restart NAME`): it runs the wrapped
/// service in a nested `ServiceGroup` of its own; a restart shuts that group down gracefully
/// (the service finishes as it would on SIGTERM: the GPU worker hands its jobs back) and runs
/// the same service again. The agent's own graceful shutdown reaches the nested group too.
final class RestartableService: Service {
    private struct State {
        var group: ServiceGroup?
        var restarting = false
        var restarts = 0
        var startedAt: Date?
    }

    /// The name operators restart it by (`redis`, `gpu`, `connectivity`, `checks`, `alerts`, `outbox`).
    let name: String
    let service: any Service
    let logger: Logger
    private let state = Mutex(State())

    init(_ name: String, _ service: any Service, logger: Logger) {
        self.name = name
        self.service = service
        self.logger = logger
    }

    /// The service-group entry point: runs the wrapped service in a fresh nested group until the
    /// agent shuts down. A restart (``restart(timeout:)``) ends one round and starts the next; an
    /// error from the wrapped service ends `run()` with it (and so the agent). A service that
    /// returns by itself is not started again: `run()` then waits for the agent's shutdown.
    func run() async throws {
        while true {
            let group = ServiceGroup(
                configuration: .init(
                    services: [.init(service: service)], gracefulShutdownSignals: [], cancellationSignals: [],
                    logger: logger))
            state.withLock { state in
                state.group = group
                state.startedAt = Date()
            }
            do {
                try await group.run()
            } catch {
                state.withLock { $0.group = nil }
                throw error
            }
            let restart = state.withLock { state -> Bool in
                defer { state.restarting = false; state.group = nil }
                return state.restarting
            }
            if Task.isShuttingDownGracefully || Task.isCancelled { return }
            if restart {
                logger.notice("subsystem restarted", metadata: ["nodeagent.restarted": "\(name)"])
                continue
            }
            // It ended by itself: wait for the agent's shutdown (a service that ends must not stop the agent).
            try? await gracefulShutdown()
            return
        }
    }

    /// Stops the service gracefully and starts it again; returns once it runs again (or after
    /// `timeout`).
    func restart(timeout: Duration = .seconds(20)) async -> SubsystemState {
        let (group, generation) = state.withLock { state -> (ServiceGroup?, Int) in
            guard state.group != nil, !state.restarting else { return (nil, state.restarts) }
            state.restarting = true
            state.restarts += 1
            return (state.group, state.restarts)
        }
        logger.notice("restarting subsystem", metadata: ["nodeagent.restarting": "\(name)"])
        await group?.triggerGracefulShutdown()
        let deadline = ContinuousClock.now + timeout
        while ContinuousClock.now < deadline {
            let running = state.withLock { !$0.restarting && $0.group != nil && $0.restarts >= generation }
            if running { break }
            try? await Task.sleep(for: .milliseconds(10))
        }
        return view
    }

    /// The subsystem as `GET /api/subsystems` shows it: `running`, `restarting` or `stopped`, how
    /// many restarts it has had and when the current round started.
    var view: SubsystemState {
        state.withLock { state in
            SubsystemState(
                name: name, state: state.restarting ? "restarting" : state.group == nil ? "stopped" : "running",
                restarts: state.restarts, startedAt: state.startedAt.map(ISOTime.string))
        }
    }
}

/// The agent's restartable subsystems by name.
final class Subsystems: Sendable {
    private let services = Mutex<[String: RestartableService]>([:])

    /// Wraps `service` as the subsystem `name` and returns the wrapper for the service group.
    func wrap(_ name: String, _ service: any Service, logger: Logger) -> RestartableService {
        let wrapper = RestartableService(name, service, logger: logger)
        services.withLock { $0[name] = wrapper }
        return wrapper
    }

    /// Other names operators use for a subsystem (the GPU worker was `gpu` before it was named
    /// as its log lines are), mapped to the one it is shown under.
    static let aliases = ["gpu": "gpu-worker"]

    /// The name a subsystem is shown under, for `name` or one of its ``aliases``.
    static func canonical(_ name: String) -> String { aliases[name] ?? name }

    /// The subsystem called `name` (or an alias of it), for `POST /api/subsystems/NAME/restart`;
    /// nil when unknown.
    func named(_ name: String) -> RestartableService? { services.withLock { $0[Self.canonical(name)] } }

    /// Every subsystem's name, sorted.
    var names: [String] { services.withLock { $0.keys.sorted() } }

    /// All subsystems' states, sorted by name, for `GET /api/subsystems`.
    var list: SubsystemList { SubsystemList(subsystems: names.compactMap { named($0)?.view }) }
}
