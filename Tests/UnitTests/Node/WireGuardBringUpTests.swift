import Foundation
import Testing

@testable import NodeAgent

/// Issue 19, part 4: what kept a loaded node without tunnels. Its registry copy was fetched
/// within the heartbeat's own timeout (1 s for compute), so on a busy machine the copy never
/// arrived and the WireGuard service had nothing to render; and a hung tool held it for ever.
@Suite("WireGuard bring-up: registry copy and tools")
struct WireGuardBringUpTests {
    @Test("a registry copy refresh runs one at a time; a failure is retried next beat; a new version starts another")
    func cacheRefresh() {
        var refresh = MembershipService.CacheRefresh()
        let start = ContinuousClock.now
        #expect(refresh.start(registryVersion: 3, now: start) == 3)
        #expect(refresh.start(registryVersion: 3, now: start) == nil, "one in flight")
        #expect(refresh.start(registryVersion: 4, now: start) == nil, "one in flight, even for a new version")
        refresh.finish(nil, now: start)
        #expect(refresh.start(registryVersion: 4, now: start) == 4, "a failure is retried at the next beat")
        refresh.finish(4, now: start)
        #expect(refresh.start(registryVersion: 4, now: start + .seconds(5)) == nil, "up to date")
        #expect(refresh.start(registryVersion: 4, now: start + .seconds(11)) == 4, "10 s after the last success")
        refresh.finish(4, now: start + .seconds(11))
        #expect(refresh.start(registryVersion: 5, now: start + .seconds(12)) == 5, "a new version")
        #expect(MembershipService.cacheRefreshTimeout >= .seconds(5))
    }

    @Test(
        "a tool that hangs is killed at its timeout and the call fails with a message naming it",
        .timeLimit(.minutes(1)))
    func toolTimeout() async throws {
        // Without the kill the call would take the child's 600 s; the test's own time limit ends it.
        let error = await #expect(throws: AgentError.self) {
            try await ProcessRunner.run("/bin/sleep", ["600"], timeout: .milliseconds(200))
        }
        #expect(error?.message.contains("sleep did not finish within") == true, "\(error?.message ?? "")")
        let quick = try await ProcessRunner.run("/bin/echo", ["ok"], timeout: .seconds(5))
        #expect(quick.status == 0 && quick.output == "ok")
        let failing = try await ProcessRunner.run("/bin/sh", ["-c", "exit 3"], timeout: .seconds(5))
        #expect(failing.status == 3)
    }
}
