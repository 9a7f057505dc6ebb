import AuroraAPI
import Foundation
import Hummingbird
import Logging
import Mesh
import Metrics
import NIOCore
import NIOPosix
import Prometheus
import Secrets
import ServiceLifecycle

#if canImport(Glibc)
    import Glibc
    import NIOHTTP1
    import UnixSignals
#endif

/// The daemon: checks everything it can before it starts (so bad input fails fast, in one
/// line, changing nothing), then runs its services in one `ServiceGroup` ordered
/// store → HTTP and stops them in reverse on SIGTERM or SIGINT.
public enum Agent {
    /// Runs until a graceful shutdown; throws ``AgentError`` for anything that stops a start.
    ///
    /// Returns true when the agent stopped to start again: as the lead (a standby promoted by
    /// `POST /api/lead/promote`), or as a standby (an old lead that rejoined the new lead,
    /// ``LeadRejoin``): the caller executes the same command line again.
    @discardableResult
    public static func run(config: NodeConfig, metrics: PrometheusCollectorRegistry?, logger baseLogger: Logger)
        async throws -> Bool
    {
        var config = config
        // Promoted: the lead now, whatever its command line says. Fenced by a newer term and
        // rejoined: a standby until promoted again.
        let starting = LeadRejoin.startingRole(
            configured: config.role, promoted: LeadPromotion.promoted(dataDir: config.dataDir),
            rejoined: try RejoinMarker.load(dataDir: config.dataDir) != nil)
        if starting != config.role {
            config.role = starting
        } else if case .bool(true) = config.resolved["standby"], config.role != .standby {
            throw AgentError(.config, "--standby (standby: true) is for the lead profile: use --profile lead --standby")
        }
        var logger = baseLogger
        logger[metadataKey: "nodeagent.node"] = "\(config.name)"
        // A peer that closes a socket or pipe mid-write is an error to handle, never a silent death.
        signal(SIGPIPE, SIG_IGN)

        // Preflight, in the order a person would fix things.
        try ListenCheck.ensureFree(config.listen)
        let dataDir = try DataDirectory(path: config.dataDir)
        let identity = try NodeIdentity.loadOrCreate(in: dataDir.file("keys"), logger: logger)
        var token = try AdminToken.loadOrCreate(dataDir: dataDir.path, keysDir: dataDir.file("keys"), logger: logger)
        let tls = try TLSIdentity.loadOrCreate(in: dataDir.file("keys"), name: config.name, logger: logger)
        if config.tlsListen != nil {
            Gauge(label: "aurora_tls_certificate_expiry_timestamp_seconds").record(
                tls.expiresAt)
        }
        // Every listener that is not loopback speaks TLS, unless the operator says otherwise in so many words.
        if !HTTPServer.isLoopback(config.listen.host), !config.insecurePlain {
            throw AgentError(
                .config,
                "listen \(config.listen) is not a loopback address: plain HTTP there would carry tokens and secrets in clear; "
                    + "serve nodes and remote operators with tls.listen (--tls-listen \(config.listen)), or set http.insecure_plain: true "
                    + "inside a network you trust")
        }
        let state = AgentState(config: config, identity: identity)

        // What the inference backend serves, asked every 15 s; a bad gpu.models entry stops the start here.
        let models = try config.gpuBackend.map { backend throws(AgentError) in
            try ModelDiscovery(backend: backend, names: config.gpuModelNames, logger: logger)
        }
        let inventory = Inventory(config: config, logger: logger, board: state.checkBoard, models: models)
        let hub = EventHub()
        // Reports for the lead (job results, connectivity changes, check and alert events) go
        // through the durable outbox; restartable subsystems are known by name.
        let outbox = try Outbox(dataDir: dataDir.path, logger: logger)
        state.setOutbox(outbox)
        let subsystems = Subsystems()
        LogRing.shared.configure(linesPerSubsystem: config.logRingLines)
        var deliverReports: @Sendable ([NodeReport]) async throws -> [ReportOutcome] = { _ in [] }

        // Services start in this order and stop in reverse: store → registry or membership → HTTP.
        var services: [ServiceGroupConfiguration.ServiceConfiguration] = []
        if let models { services.append(.init(service: models)) }
        // A standby's reads from its own copy: their connection closes when the agent stops.
        var standbyReads: StandbyReads?
        var connectivity: ConnectivityService?
        // What the routes serve from: the role's parts, each present (built below).
        let role: RoleParts
        let wireguard: WireGuardService
        let relay: RelayService?
        var leadJobs: JobCoordinator?
        if config.role == .lead {
            let storeService = try StoreService(config: config, state: state, logger: logger)
            let generation = SecretsGeneration()
            let registry = try Registry(
                store: storeService.store, hub: hub, config: config, identity: identity, secretsGeneration: generation,
                logger: logger)
            let jobs = JobCoordinator(
                store: storeService.store, hub: hub, leadName: config.name,
                policy: Scheduler.Policy(rawValue: config.gpuPolicy) ?? .binpack, logger: logger)
            let master = try SecretsMasterKey.loadOrCreate(
                in: dataDir.file("keys"), passphraseFile: config.secretsPassphraseFile,
                logger: logger)
            let secrets = SecretsManager(
                store: storeService.store, hub: hub, master: master, signing: identity.signing,
                generation: generation, logger: logger)
            leadJobs = jobs
            let board = ConnectivityBoard(store: storeService.store, hub: hub, logger: logger)
            let inbox = ReportInbox(store: storeService.store, hub: hub, jobs: jobs, board: board, logger: logger)
            deliverReports = { [name = config.name] reports in try await inbox.receive(from: name, reports) }
            connectivity = ConnectivityService(config: config, logger: logger) { [name = config.name] results, _ in
                do { try await board.report(name, results); return true } catch { return false }
            }
            relay = config.relayOffer.map { table in
                RelayService(name: config.name, table: table, logger: logger) { await registry.paths }
            }
            wireguard = WireGuardService(
                config: config, identity: identity, agent: state, dataDir: dataDir.path, logger: logger,
                network: { [network = registry.network] in network }, paths: { await registry.paths }, relay: relay
            ) {
                try? await registry.list().nodes
            }
            let backups = BackupArchive(
                dataDir: dataDir.path, store: storeService.store,
                source: .init(
                    conninfo: storeService.managed?.conninfo ?? config.storeURL ?? "",
                    binDirectory: storeService.managed?.binDirectory ?? config.pgBinDirectory),
                logger: logger)
            services.append(.init(service: storeService))
            await storeService.store.wantLeadLock()
            let leadership = Leadership(
                store: storeService.store, signing: identity.signing,
                template: Leadership.template(config: config, identity: identity, tls: tls),
                report: { [state] epoch, fenced in state.setLeadTerm(epoch: epoch, fenced: fenced) },
                newerTermElsewhere: config.storeURL != nil
                    ? nil : Leadership.standbysTerm(store: storeService.store, name: config.name),
                // With etcd, nothing is acknowledged before this process holds the lead key.
                awaitsKey: !config.etcdEndpoints.isEmpty, logger: logger)
            storeService.setReconnected { try? await leadership.begin(operatorTokenHash: nil) }
            let apiTokens = APITokens(store: storeService.store)
            token.scoped = apiTokens
            var replication: StandbyReplicationService?
            if let managed = storeService.managed, let listener = managed.replication {
                // Streaming standbys: credentials at their join, synchronous replication while they keep up.
                let service = try StandbyReplicationService(
                    managed: managed, listener: listener, store: storeService.store, registry: registry, hub: hub,
                    ineligibleAfterS: config.standbyIneligibleAfterS, isFenced: { leadership.fencedReason != nil },
                    logger: logger)
                services.append(.init(service: service))
                replication = service
            }
            if config.rejoinAsStandby {
                // Fenced by a newer term: rejoin that term's lead as its standby, then restart as one.
                services.append(
                    .init(
                        service: LeadRejoinService(
                            config: config, identity: identity, tls: tls,
                            conninfo: storeService.managed?.conninfo ?? config.storeURL ?? "", leadership: leadership,
                            state: state, logger: logger)))
            }
            if !config.etcdEndpoints.isEmpty {
                // Automatic failover: the lead holds /aurora/lead on an etcd lease and fences itself
                // before the lease can expire without a renewal.
                // etcd down: it serves on only while every standby promises not to take over (FailsafeRound).
                let failsafe = FailsafeRound(
                    name: config.name, key: identity.signing,
                    standbys: { [name = config.name] in
                        guard let nodes = try? await registry.list().nodes else { return nil }
                        return nodes.filter { $0.role == .standby && $0.state != .left && $0.name != name }
                    },
                    epoch: { leadership.fencedReason == nil ? leadership.epoch : nil }, logger: logger)
                let election = try LeaderElection(
                    client: try EtcdClient(endpoints: config.etcdEndpoints), key: LeaderElection.leadKey,
                    value: config.name, ttl: config.electionTTL,
                    eligible: { leadership.fencedReason == nil || leadership.recoverable },
                    onLead: { [state] _ in
                        // The first key of this process: serve. A fence from a lost lease: restart.
                        if leadership.keyWon() { return true }
                        if await leadership.mayLiftFence() { state.requestRestart() }
                        return true
                    },
                    onFence: {
                        await leadership.fence(
                            "the etcd lead key /aurora/lead was not renewed in time", recoverable: true)
                    },
                    // Fenced for good (a newer term, a step-down): the key goes, so the new lead can take it.
                    keepsKey: { leadership.fencedReason == nil || leadership.recoverable },
                    failsafe: { ttl, timeout in await failsafe.run(ttl: ttl, timeout: timeout) }, logger: logger)
                state.setElectionView { election.view }
                services.append(.init(service: election))
            }
            let gatewayKeys = GatewayKeys(store: storeService.store)
            let fallback =
                config.gatewayFallback.isEmpty
                ? nil
                : try CloudFallback(
                    providers: config.gatewayProviders, fallback: config.gatewayFallback,
                    after: config.gatewayFallbackAfter)
            role = .lead(
                LeadParts(
                    registry: registry, jobs: jobs, secrets: secrets, connectivity: board, tokens: storeService.store,
                    events: storeService.store,
                    inbox: inbox,
                    backups: backups, apiTokens: apiTokens, gatewayKeys: gatewayKeys,
                    leadTLS: config.tlsListen != nil ? LeadTLS(identity: tls, config: config) : nil, fallback: fallback,
                    outputs: JobOutputs(capacity: config.execOutputTailBytes), leadership: leadership,
                    replication: replication))
            services.append(
                .init(
                    service: RegistryService(
                        registry: registry, apiTokens: apiTokens, gatewayKeys: gatewayKeys, leadership: leadership,
                        operatorTokenHash: token.hashHex, state: state, inventory: inventory, hub: hub,
                        logger: logger)))
            services.append(
                .init(
                    service: JobService(jobs: jobs, registry: registry, secrets: secrets, state: state, logger: logger))
            )
            services.append(.init(service: GatewayKeysService(keys: gatewayKeys, state: state, logger: logger)))
            if let url = config.redisURL {
                let publisher = try RedisPublisher(
                    url: url, maxLength: config.redisMaxLength, hub: hub, store: storeService.store, state: state,
                    logger: logger)
                services.append(.init(service: subsystems.wrap("redis", publisher, logger: logger)))
            }
            if !config.webhooks.isEmpty {
                // After the store: it stops first, so its last cursor write reaches the store.
                let webhooks = try WebhookDelivery(
                    webhooks: config.webhooks, store: storeService.store, hub: hub, state: state, logger: logger)
                services.append(.init(service: subsystems.wrap("webhooks", webhooks, logger: logger)))
            }
        } else {
            if !config.webhooks.isEmpty {
                logger.warning("alerts.webhooks is set, but only the lead sends webhooks; ignoring it")
            }
            let saved = try Membership.load(dataDir: dataDir.path)
            if saved == nil, config.joinToken == nil {
                throw AgentError(
                    .config,
                    "this node has not joined a mesh yet: pass --join-token-file (or AURORA_JOIN_TOKEN) from 'aurora-cli token create' on the lead"
                )
            }
            // A joined node finds its lead (and its pinned certificate) in its membership: no --lead needed.
            let link = try LeadLink.forNode(config: config, saved: saved)
            let cache = RegistryCache(dataDir: dataDir.path)
            var replicaService: StandbyReplicaService?
            let worker =
                config.acceptJobs
                ? GPUWorker(
                    config: config, state: state,
                    lead: LeadClient.signed(config: config, identity: identity, link: link),
                    groups: inventory.jobGroups,
                    outbox: outbox, logger: logger) : nil
            let secretCache = SecretCache(
                dataDir: dataDir.path, node: config.name, box: identity.box,
                leadSignKey: saved.flatMap { try? PublicKey(base64: $0.lead.signPublicKey) }, logger: logger)
            let membership = try MembershipService(
                config: config, identity: identity, state: state, inventory: inventory, cache: cache, worker: worker,
                link: link, tlsPin: tls.pin,
                onSecretsChanged: { [state] membership in
                    for (service, keyName) in secretCache.names {
                        _ = await HTTPServer.fetchFromLead(
                            service: service, keyName: keyName, state: state, membership: membership, cache: secretCache
                        )
                    }
                }, logger: logger)
            // A standby lead reads from its own copy of the lead's store: the store both leads
            // use, or its streaming replica of the lead's managed store (once the join carried
            // credentials; a rejoined old lead first moves the data it had as a primary aside).
            if config.role == .standby, let url = config.storeURL {
                standbyReads = StandbyReads(
                    copy: .store, conninfo: url, node: config.name, state: state, logger: logger)
            } else if config.role == .standby {
                try await LeadRejoin.keepOldData(config: config, logger: logger)
                do throws(AgentError) {
                    let replica = try StandbyReplicaService(
                        config: config, identity: identity, state: state, logger: logger)
                    replicaService = replica
                    standbyReads = StandbyReads(
                        copy: .replica, conninfo: replica.managed.conninfo, node: config.name, state: state,
                        logger: logger)
                } catch {
                    logger.warning(
                        "this standby cannot run a replica of the lead's store",
                        metadata: ["nodeagent.error": "\(error.message)"])
                }
            }
            role = .node(
                NodeParts(
                    membership: membership, cache: cache, secretCache: secretCache, standbyReads: standbyReads))
            relay = config.relayOffer.map { table in
                RelayService(name: config.name, table: table, logger: logger) { cache.current?.topology?.paths }
            }
            wireguard = WireGuardService(
                config: config, identity: identity, agent: state, dataDir: dataDir.path, logger: logger,
                network: { [path = dataDir.path] in WireGuardService.joinedNetwork(dataDir: path) },
                paths: { cache.current?.topology?.paths ?? [] }, relay: relay
            ) {
                cache.current?.nodes.nodes
            }
            services.append(.init(service: membership))
            if let replicaService { services.append(.init(service: replicaService)) }
            if config.role == .standby, !config.etcdEndpoints.isEmpty {
                // Automatic failover: while its lead is unreachable, the standby campaigns for
                // /aurora/lead; it wins only once the lead's lease expired, and then promotes itself.
                let election = try LeaderElection(
                    client: try EtcdClient(endpoints: config.etcdEndpoints), key: LeaderElection.leadKey,
                    value: config.name, ttl: config.electionTTL,
                    // Only while the lead is unreachable and, with a replica of its own, only
                    // when that replica streamed until the lead was lost (it holds what the lead
                    // acknowledged); a standby that cannot show it leaves the key to an operator.
                    // Never while it promised its lead, which etcd does not answer, not to (the failsafe).
                    eligible: { [state, shared = config.storeURL != nil] in
                        state.leadHealth?.state == .unreachable && (shared || state.replicaStreamedUntilLeadLost())
                            && !state.failsafePromiseBinds
                    },
                    onLead: { [state, logger] _ in
                        // A promise made between the campaign's start and its win: the key goes back.
                        guard state.beginAutomaticPromotion() else {
                            logger.notice("won the etcd lead key while a failsafe promise binds; not promoting")
                            return false
                        }
                        logger.notice("promoting after winning the etcd lead key")
                        do throws(Refusal) {
                            _ = try await LeadPromotion(state: state, membership: membership).run(PromoteRequest())
                            state.requestRestart()
                        } catch {
                            // The key goes back at once: a lead that cannot promote must not hold it.
                            state.promotionFailed()
                            logger.error(
                                "automatic promotion failed; giving the etcd lead key up",
                                metadata: ["nodeagent.error": "\(error.message)"])
                            return false
                        }
                        return true
                    },
                    onFence: {}, logger: logger)
                state.setElectionView { election.view }
                services.append(.init(service: election))
            }
            if let worker { services.append(.init(service: subsystems.wrap("gpu-worker", worker, logger: logger))) }
            let reporter = LeadClient.signed(config: config, identity: identity, link: link)
            deliverReports = { [name = config.name] reports in
                try await OutboxSender.toLead(reports, node: name, lead: reporter)
            }
            connectivity = ConnectivityService(config: config, logger: logger) { results, changed in
                // A changed state must arrive: through the outbox, in order. A refresh with
                // nothing new goes directly, and waits while the outbox still holds reports.
                if changed {
                    do {
                        try await outbox.append(
                            .make(.connectivity, connectivity: ConnectivityReport(results: results)))
                    } catch { return false }
                    return true
                }
                if !outbox.isEmpty { return true }
                do {
                    _ = try await reporter.send(
                        API.reportConnectivity, body: ConnectivityReport(results: results),
                        timeout: .seconds(3))
                    return true
                } catch {
                    return false
                }
            }
        }
        if let connectivity, !config.probes.isEmpty {
            services.append(.init(service: subsystems.wrap("connectivity", connectivity, logger: logger)))
        }
        let reportEvent: @Sendable (NodeEvent) async -> Void = { [logger] event in
            do throws(AgentError) { try await outbox.append(.make(.event, event: event)) } catch {
                logger.error("cannot record an event in the outbox", metadata: ["nodeagent.error": "\(error.message)"])
            }
        }
        if !config.checks.isEmpty {
            services.append(
                .init(
                    service: subsystems.wrap(
                        "checks",
                        HealthCheckService(
                            checks: config.checks, board: state.checkBoard, logger: logger,
                            report: reportEvent), logger: logger)))
        }
        services.append(
            .init(
                service: subsystems.wrap(
                    "alerts",
                    ResourceMonitorService(
                        config: config, board: state.checkBoard, logger: logger,
                        report: reportEvent), logger: logger)))
        services.append(
            .init(
                service: subsystems.wrap(
                    "outbox", OutboxSender(outbox: outbox, logger: logger, deliver: deliverReports), logger: logger)))
        if wireguard.mode != .off { services.append(.init(service: wireguard)) }
        if let relay { services.append(.init(service: relay)) }
        if let postgres = config.postgresMonitor {
            services.append(.init(service: ReplicaMonitor(config: postgres, state: state, logger: logger)))
        }
        for http in try HTTPServer.applications(
            agent: AgentParts(state: state, token: token, hub: hub, subsystems: subsystems, wireguard: wireguard),
            role: role,
            metrics: metrics, tls: tls, logger: logger)
        {
            services.append(.init(service: http))
        }
        if let resolvectl = config.dnsResolvectl {
            let listen = config.dnsListen, meshPort = config.dnsMeshPort
            services.append(
                .init(
                    service: ResolvedLinkService(
                        resolvectl: resolvectl, interface: config.wireguardInterface, domain: config.dnsDomain,
                        server: { [wireguard] in
                            if let listen { return ResolvedLinkService.server(host: listen.host, port: listen.port) }
                            guard let meshPort, let address = wireguard.rendered?.interface.address,
                                let ip = address.split(separator: "/").first
                            else { return nil }
                            return ResolvedLinkService.server(host: String(ip), port: meshPort)
                        }, logger: logger)))
        }
        if config.dnsListen != nil || config.dnsHostsFile != nil || config.dnsMeshPort != nil {
            let settled = config
            let zones = DNSServer.ZoneSource { await DNSServer.zone(role: role, config: settled) }
            if let dns = config.dnsListen {
                services.append(.init(service: DNSServer(address: dns, zones: zones, logger: logger)))
            }
            if let port = config.dnsMeshPort {
                services.append(
                    .init(service: MeshDNSListener(name: config.name, port: port, zones: zones, logger: logger)))
            }
            if let hosts = config.dnsHostsFile {
                services.append(.init(service: HostsFileService(path: hosts, zones: zones, logger: logger)))
            }
        }
        services.append(.init(service: StreamCloser(hub: hub, jobs: leadJobs)))

        logger.info(
            "starting",
            metadata: [
                "nodeagent.role": "\(config.role.rawValue)", "nodeagent.version": "\(AuroraVersion.current)",
                "nodeagent.data_dir": "\(config.dataDir)", "nodeagent.profile": "\(config.profileFile)",
            ])
        let group = ServiceGroup(
            configuration: .init(
                services: services, gracefulShutdownSignals: [.sigterm, .sigint], cancellationSignals: [],
                logger: logger))
        state.setRestartTrigger { Task { await group.triggerGracefulShutdown() } }
        do {
            try await group.run()
        } catch let error as IOError where error.errnoCode == EADDRINUSE {
            await outbox.close()
            throw AgentError(.portInUse, "cannot listen on \(config.listen): address already in use")
        } catch {
            await outbox.close()
            throw error
        }
        await outbox.close()
        await standbyReads?.close()
        withExtendedLifetime(dataDir) {}  // the lock is held until here
        if state.restartRequested {
            logger.notice("stopped to start again (promoted to lead, or rejoined as a standby)")
            return true
        }
        logger.info("stopped")
        return false
    }
}

/// Checks that the listen address can be bound before anything else starts, so an occupied
/// port is a one-line error and not a half-started agent.
enum ListenCheck {
    /// Binds and listens on `address` once and lets go at once; throws ``AgentError`` with code
    /// `portInUse` (taken, refused) or `config` (no such local address). Called first by ``Agent/run``.
    static func ensureFree(_ address: HostPort) throws(AgentError) {
        var hints = addrinfo()
        hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
        hints.ai_flags = AI_PASSIVE
        var result: UnsafeMutablePointer<addrinfo>?
        guard getaddrinfo(address.host, String(address.port), &hints, &result) == 0, let info = result else {
            throw AgentError(
                .config, "cannot listen on \(address): '\(address.host)' does not resolve to a local address")
        }
        defer { freeaddrinfo(result) }
        let fd = socket(
            info.pointee.ai_family, info.pointee.ai_socktype | Int32(SOCK_CLOEXEC.rawValue), info.pointee.ai_protocol)
        guard fd >= 0 else { return }
        defer { close(fd) }
        var yes: Int32 = 1
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &yes, socklen_t(MemoryLayout<Int32>.size))
        guard bind(fd, info.pointee.ai_addr, info.pointee.ai_addrlen) == 0 else {
            let code = errno
            switch code {
            case EADDRINUSE: throw AgentError(.portInUse, "cannot listen on \(address): address already in use")
            case EADDRNOTAVAIL: throw AgentError(.config, "cannot listen on \(address): not an address of this machine")
            case EACCES:
                throw AgentError(
                    .portInUse, "cannot listen on \(address): permission denied (ports below 1024 need root)")
            default: throw AgentError(.portInUse, "cannot listen on \(address): \(String(cString: strerror(code)))")
            }
        }
        guard listen(fd, 1) == 0 else {
            throw AgentError(.portInUse, "cannot listen on \(address): \(String(cString: strerror(errno)))")
        }
    }
}
