import AsyncHTTPClient
import AuroraAPI
import AuroraClient
import Foundation
import Logging
import Mesh
import Metrics
import NIOCore
import NIOHTTP1
import ServiceLifecycle
import Synchronization

/// The lead's alert webhooks (`alerts.webhooks`): each webhook reads the event log in `seq`
/// order from its own cursor, POSTs every event it takes (``WebhookPayload``) and moves the
/// cursor only after a 2xx answer.
///
/// The cursor lives in the store (`webhook_cursors`), next to the events it points into: it is
/// as durable as the log, goes with it into backups and to a standby, and a restarted lead
/// resumes right after the last event a receiver took. A webhook seen for the first time takes
/// the events recorded since the lead started. Events are never skipped: an event that fails (no answer, a timeout,
/// not 2xx) is tried again with ``WebhookBackoff`` (500 ms doubling to 60 s) and holds the
/// cursor; after three failures in a row the webhook is logged as failing and
/// `aurora_webhook_failing{webhook}` is 1 until a delivery succeeds. Logs show a webhook's
/// name and `scheme://host`, never its path (a Slack URL's path is its secret).
///
/// Each webhook runs in a child task of ``run()``; new events wake it through an ``EventHub``
/// tap (which only hands a wake-up over). Graceful shutdown lets a request in flight finish
/// (its `timeout_s` bounds it), stores the cursor and ends; it abandons only the wait between
/// attempts. So a 2xx answer is followed by its cursor write before the store stops, and a
/// restart neither repeats nor loses an event. Only a crash (or the store failing) between a
/// 2xx and the cursor write sends that event again, with the same `X-Aurora-Event-ID`.
final class WebhookDelivery: Service {
    /// A webhook with its URL read (from the profile or its `url_file`).
    struct Hook: Sendable {
        let config: WebhookConfig
        /// The whole URL: a secret, never logged.
        let url: String
        /// `scheme://host[:port]`, for logs.
        let shown: String
    }

    /// Events read from the store per page.
    static let page = 500

    let hooks: [Hook]
    let store: any WebhookCursorStore
    let state: AgentState
    let logger: Logger
    let backoff: WebhookBackoff
    /// When the agent started (this service was made): a new webhook takes the events from then on.
    let startedAt = Date()
    /// One wake-up continuation per running webhook loop, fed by the hub's tap.
    private let wakes = Mutex<[AsyncStream<Void>.Continuation]>([])

    /// Reads every webhook's URL (a bad or unsafe `url_file` stops the start with an
    /// ``AgentError`` naming the webhook and file) and taps `hub` for new events.
    init(
        webhooks: [WebhookConfig], store: any WebhookCursorStore, hub: EventHub, state: AgentState, logger: Logger,
        backoff: WebhookBackoff = WebhookBackoff()
    ) throws(AgentError) {
        var hooks: [Hook] = []
        for webhook in webhooks {
            let url = try webhook.resolveURL()
            hooks.append(Hook(config: webhook, url: url, shown: WebhookConfig.redacted(url)))
        }
        self.hooks = hooks
        self.store = store
        self.state = state
        var logger = logger
        logger[metadataKey: "nodeagent.subsystem"] = "webhooks"
        self.logger = logger
        self.backoff = backoff
        hub.addTap { [weak self] _ in
            guard let self else { return }
            for wake in self.wakes.withLock({ $0 }) { wake.yield() }
        }
    }

    /// Runs every webhook until graceful shutdown, on one HTTP client that follows no redirects
    /// (a redirect could carry the event, and the secret URL's traffic, elsewhere).
    func run() async throws {
        var configuration = HTTPClient.Configuration()
        configuration.redirectConfiguration = .disallow
        configuration.connectionPool.retryConnectionEstablishment = false
        let client = HTTPClient(eventLoopGroupProvider: .singleton, configuration: configuration)
        await withTaskGroup(of: Void.self) { group in
            for hook in hooks {
                group.addTask { await self.deliver(hook, client: client) }
            }
        }
        wakes.withLock { $0.removeAll() }
        try? await client.shutdown()
    }

    // MARK: One webhook

    /// One webhook's loop: reads its cursor once the store is up, then delivers whatever the log
    /// has after it, at start and at every wake-up, until graceful shutdown.
    private func deliver(_ hook: Hook, client: HTTPClient) async {
        var logger = self.logger
        logger[metadataKey: "nodeagent.webhook"] = "\(hook.config.name)"
        logger[metadataKey: "nodeagent.target"] = "\(hook.shown)"
        let (wakes, wake) = AsyncStream<Void>.makeStream(bufferingPolicy: .bufferingNewest(1))
        self.wakes.withLock { $0.append(wake) }
        let metrics = HookMetrics(name: hook.config.name)
        await withGracefulShutdownHandler {
            guard var progress = await start(hook, logger: logger) else { return }
            metrics.cursor.record(progress.cursor)
            wake.yield()
            for await _ in wakes {
                await pump(hook, &progress, client: client, metrics: metrics, logger: logger)
                if Task.isShuttingDownGracefully || Task.isCancelled { break }
            }
            if progress.unstored { await storeCursor(hook, &progress, logger: logger) }
        } onGracefulShutdown: {
            wake.finish()
        }
    }

    /// The webhook's progress from its stored cursor, once the store answers; nil on shutdown.
    private func start(_ hook: Hook, logger: Logger) async -> WebhookProgress? {
        var delay = Duration.milliseconds(200)
        while !Task.isShuttingDownGracefully, !Task.isCancelled {
            if state.store.state == .ok {
                do throws(AgentError) {
                    let cursor = try await store.webhookCursor(hook.config.name, startingBefore: startedAt)
                    logger.info(
                        "webhook delivering",
                        metadata: [
                            "nodeagent.cursor": "\(cursor)", "nodeagent.format": "\(hook.config.format.rawValue)",
                            "nodeagent.events": "\(hook.config.events.joined(separator: ","))",
                        ])
                    return WebhookProgress(types: Set(hook.config.events), cursor: cursor, backoff: backoff)
                } catch {
                    logger.warning(
                        "cannot read the webhook's cursor", metadata: ["nodeagent.error": "\(error.message)"])
                }
            }
            do { try await pause(delay) } catch { return nil }
            delay = min(delay * 2, .seconds(1))
        }
        return nil
    }

    /// Delivers the log after the cursor, page by page, until it has caught up (the cursor of
    /// passed-over events is stored then) or shutdown. A store error waits and reads again.
    private func pump(
        _ hook: Hook, _ progress: inout WebhookProgress, client: HTTPClient, metrics: HookMetrics, logger: Logger
    ) async {
        var delay = Duration.milliseconds(200)
        while !Task.isShuttingDownGracefully, !Task.isCancelled {
            let page: [MeshEvent]
            do throws(AgentError) {
                page = try await store.events(since: progress.cursor, limit: Self.page)
            } catch {
                logger.warning("cannot read the event log; retrying", metadata: ["nodeagent.error": "\(error.message)"])
                do { try await pause(delay) } catch { return }
                delay = min(delay * 2, .seconds(5))
                continue
            }
            for event in page {
                guard progress.onEvent(seq: event.seq, type: event.type) == .deliver else { continue }
                let delivered = await send(event, hook, &progress, client: client, metrics: metrics, logger: logger)
                guard delivered else { return }
                await storeCursor(hook, &progress, logger: logger)
            }
            if page.count < Self.page {
                if progress.unstored { await storeCursor(hook, &progress, logger: logger) }
                return
            }
        }
    }

    /// Attempts `event` until the receiver answers 2xx (true) or the agent shuts down between
    /// attempts (false: the cursor stays before the event, which goes first after the restart).
    private func send(
        _ event: MeshEvent, _ hook: Hook, _ progress: inout WebhookProgress, client: HTTPClient,
        metrics: HookMetrics, logger: Logger
    ) async -> Bool {
        let body = WebhookPayload.body(event, format: hook.config.format)
        var attempt = 0
        while !Task.isShuttingDownGracefully, !Task.isCancelled {
            attempt += 1
            let failure = await post(body, event: event, hook: hook, attempt: attempt, client: client)
            guard let failure else {
                if progress.failing {
                    logger.notice(
                        "webhook delivering again",
                        metadata: ["nodeagent.seq": "\(event.seq)", "nodeagent.attempts": "\(attempt)"])
                }
                progress.onDelivered(event.seq)
                metrics.delivered.increment()
                metrics.failing.record(0)
                metrics.cursor.record(progress.cursor)
                return true
            }
            let delay = progress.onFailed(event.seq)
            metrics.failures.increment()
            let details: Logger.Metadata = [
                "nodeagent.seq": "\(event.seq)", "nodeagent.event": "\(event.type)",
                "nodeagent.attempts": "\(progress.failures)", "nodeagent.error": "\(failure)",
                "nodeagent.retry_in_ms": "\(delay / .milliseconds(1))",
            ]
            if progress.justStartedFailing {
                logger.warning(
                    "webhook failing; it holds its place in the event log and keeps trying", metadata: details)
                metrics.failing.record(1)
            } else if !progress.failing {
                logger.notice("webhook attempt failed; retrying", metadata: details)
            }
            do { try await pause(delay) } catch { return false }
        }
        return false
    }

    /// One POST; nil when the receiver answered 2xx, else why not (status or error, never the URL).
    private func post(_ body: [UInt8], event: MeshEvent, hook: Hook, attempt: Int, client: HTTPClient) async -> String?
    {
        var request = HTTPClientRequest(url: hook.url)
        request.method = .POST
        for (name, value) in WebhookPayload.headers(event, webhook: hook.config.name, attempt: attempt) {
            request.headers.add(name: name, value: value)
        }
        request.body = .bytes(ByteBuffer(bytes: body))
        do {
            let response = try await client.execute(request, timeout: .milliseconds(Int64(hook.config.timeout * 1000)))
            // The answer's body is read and dropped (a receiver's reply is not the lead's business).
            _ = try? await response.body.collect(upTo: 64 << 10)
            let status = Int(response.status.code)
            return (200..<300).contains(status) ? nil : "HTTP \(status)"
        } catch {
            return AuroraClientError.reason(error)
        }
    }

    /// Stores the cursor; a store error leaves it unstored (the next store, or the one at
    /// shutdown, catches up), so a crash before then could repeat events up to it.
    private func storeCursor(_ hook: Hook, _ progress: inout WebhookProgress, logger: Logger) async {
        let cursor = progress.cursor
        do throws(AgentError) {
            try await store.setWebhookCursor(hook.config.name, to: cursor)
            progress.onStored(cursor)
        } catch {
            logger.warning(
                "cannot store the webhook's cursor; a restart may send its last events again (same X-Aurora-Event-ID)",
                metadata: ["nodeagent.cursor": "\(cursor)", "nodeagent.error": "\(error.message)"])
        }
    }

    /// Sleeps for `duration`; throws at once on graceful shutdown.
    private func pause(_ duration: Duration) async throws {
        try await cancelWhenGracefulShutdown { try await Task.sleep(for: duration) }
    }
}

/// One webhook's metrics, labelled `webhook=NAME`.
private struct HookMetrics {
    /// `aurora_webhook_deliveries_total`: events the receiver took (2xx).
    let delivered: Counter
    /// `aurora_webhook_failures_total`: failed attempts (no answer, timeout, not 2xx).
    let failures: Counter
    /// `aurora_webhook_failing`: 1 after three failures in a row, 0 after a delivery.
    let failing: Gauge
    /// `aurora_webhook_cursor_seq`: the `seq` up to which the webhook is done.
    let cursor: Gauge

    init(name: String) {
        let dimensions = [("webhook", name)]
        delivered = Counter(label: "aurora_webhook_deliveries_total", dimensions: dimensions)
        failures = Counter(label: "aurora_webhook_failures_total", dimensions: dimensions)
        failing = Gauge(label: "aurora_webhook_failing", dimensions: dimensions)
        cursor = Gauge(label: "aurora_webhook_cursor_seq", dimensions: dimensions)
        failing.record(0)
    }
}
