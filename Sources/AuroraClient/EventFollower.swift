import AuroraAPI
import NIOCore

/// When a broken event stream is opened again: after a delay that doubles from `initialDelay` up
/// to `maximumDelay`, until no stream could be opened for `giveUpAfter` (nil: never). Pure: the
/// caller passes the time.
public struct Reconnection: Sendable, Equatable {
    public let initialDelay: Duration
    public let maximumDelay: Duration
    public let giveUpAfter: Duration?
    /// The delay before the next try.
    public private(set) var delay: Duration
    /// When the stream broke (the first failure since the last stream opened).
    public private(set) var brokenSince: ContinuousClock.Instant?

    public init(
        initialDelay: Duration = .milliseconds(250), maximumDelay: Duration = .seconds(5), giveUpAfter: Duration? = nil
    ) {
        self.initialDelay = initialDelay
        self.maximumDelay = max(initialDelay, maximumDelay)
        self.giveUpAfter = giveUpAfter
        self.delay = initialDelay
    }

    /// The stream broke, or a try to open it failed, at `now`: the delay before the next try, or
    /// nil when it has been broken for `giveUpAfter`. A delay never runs past that point.
    public mutating func failed(at now: ContinuousClock.Instant) -> Duration? {
        let since = brokenSince ?? now
        brokenSince = since
        let wait = delay
        delay = min(delay * 2, maximumDelay)
        guard let giveUpAfter else { return wait }
        let left = giveUpAfter - since.duration(to: now)
        guard left > .zero else { return nil }
        return min(wait, left)
    }

    /// A stream is open again: the next failure starts from `initialDelay`.
    public mutating func opened() {
        delay = initialDelay
        brokenSince = nil
    }
}

/// What ``AuroraClient/followEvents(since:tail:types:node:reconnection:)`` yields.
public enum FollowedEvent: Sendable {
    /// An event, each one once.
    case event(ReceivedEvent)
    /// The stream ended or could not be opened (`reason`); the next try is in `retryIn`.
    case disconnected(reason: String, retryIn: Duration)
    /// A stream is open again, resuming after sequence number `after` (nil: from where the first
    /// one started, nothing having been read).
    case reconnected(after: Int64?)
}

/// `GET /api/events?follow=true` that outlives the agent: when the stream ends or breaks, or the
/// agent does not answer (no answer's head within 5 s: AsyncHTTPClient retries a refused
/// connection until then), it opens a new one with `Last-Event-ID` (the last `id:` read, events
/// and position markers alike), so no event is lost or repeated across the gap. It fails at once
/// when the first stream cannot be opened, when the agent refuses a later one for a reason that
/// waiting does not change (4xx but 408 and 429: a token revoked, not the lead), on a stream that
/// breaks the protocol, and when ``Reconnection`` gives up.
public struct FollowedEvents: AsyncSequence, Sendable {
    public typealias Element = FollowedEvent

    let client: AuroraClient
    let since: Int64?
    let tail: Int?
    let types: String?
    let node: String?
    let reconnection: Reconnection

    public func makeAsyncIterator() -> AsyncIterator {
        AsyncIterator(sequence: self, reconnection: reconnection)
    }

    /// Opens, reads and reopens streams.
    public struct AsyncIterator: AsyncIteratorProtocol {
        let sequence: FollowedEvents
        var reconnection: Reconnection
        var stream: MeshEventStream.AsyncIterator?
        /// Where a new stream resumes: the last `id:` read.
        var resumeAfter: Int64?
        var opened = false
        var wait: Duration?

        init(sequence: FollowedEvents, reconnection: Reconnection) {
            self.sequence = sequence
            self.reconnection = reconnection
        }

        public mutating func next() async throws -> FollowedEvent? {
            while true {
                if var current = stream {
                    let reason: String
                    do {
                        let event = try await current.next()
                        resumeAfter = current.lastSeq ?? resumeAfter
                        stream = current
                        if let event { return .event(event) }
                        reason = "the stream ended"
                    } catch let error as AuroraClientError
                        where error.code == .undecodable || error.code == .lineTooLong
                    {
                        throw error
                    } catch {
                        resumeAfter = current.lastSeq ?? resumeAfter
                        reason = AuroraClientError.reason(error)
                    }
                    stream = nil
                    return try broken(reason)
                }
                if let delay = wait {
                    wait = nil
                    try await Task.sleep(for: delay)
                }
                do throws(AuroraClientError) {
                    let opening = try await sequence.client.events(
                        since: sequence.since, tail: sequence.tail, follow: true, types: sequence.types,
                        node: sequence.node, lastEventID: resumeAfter, timeout: .seconds(5))
                    stream = opening.makeAsyncIterator()
                    reconnection.opened()
                    if opened { return .reconnected(after: resumeAfter) }
                    opened = true
                } catch {
                    guard opened, Self.worthRetrying(error) else { throw error }
                    return try broken(error.message)
                }
            }
        }

        /// The stream broke: when to try again, or the failure that gives up.
        mutating func broken(_ reason: String) throws(AuroraClientError) -> FollowedEvent {
            guard let delay = reconnection.failed(at: .now) else {
                var failure = AuroraClientError(
                    .cannotConnect,
                    "gave up: no event stream from \(sequence.client.baseURL) for \(reconnection.giveUpAfter ?? .zero) (\(reason))"
                )
                failure.baseURL = sequence.client.baseURL
                failure.reason = reason
                throw failure
            }
            wait = delay
            return .disconnected(reason: reason, retryIn: delay)
        }

        /// No answer, a TLS handshake that failed, a 5xx, 408 or 429: waiting may help.
        static func worthRetrying(_ error: AuroraClientError) -> Bool {
            switch error.code {
            case .cannotConnect, .tlsFailed: return true
            case .refused, .undecodable:
                guard let status = error.status else { return false }
                return status >= 500 || status == 408 || status == 429
            default: return false
            }
        }
    }
}

extension AuroraClient {
    /// `GET /api/events` followed for as long as it takes: ``FollowedEvents``.
    public func followEvents(
        since: Int64? = nil, tail: Int? = nil, types: String? = nil, node: String? = nil,
        reconnection: Reconnection = Reconnection()
    ) -> FollowedEvents {
        FollowedEvents(client: self, since: since, tail: tail, types: types, node: node, reconnection: reconnection)
    }
}
