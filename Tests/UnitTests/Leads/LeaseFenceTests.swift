import Testing

@testable import Mesh

/// The lead's self-fence and the campaign loop's decisions, on a test clock: no I/O, no sleeps.
@Suite("Lease fence and leadership (pure, test clock)")
struct LeaseFenceTests {
    let t0 = ContinuousClock.now
    let margin = Duration.milliseconds(1500)

    func at(_ seconds: Double) -> ContinuousClock.Instant { t0 + .milliseconds(Int64(seconds * 1000)) }

    /// A lead of epoch 7 on lease 42, granted with `ttl` seconds by a request sent at `sentAt`.
    func leading(ttl: Int = 5, sentAt: Double = 0, answeredAt: Double = 0.05) -> LeaseElection {
        var leadership = LeaseElection(margin: margin)
        let directives = leadership.on(
            .campaignWon(revision: 7, lease: 42, ttl: .seconds(ttl), sentAt: at(sentAt), now: at(answeredAt)))
        #expect(directives == [.startLeading(epoch: 7)])
        return leadership
    }

    // MARK: LeaseFence

    @Test("the fence comes exactly at sentAt + ttl − margin")
    func fenceDeadline() {
        let fence = LeaseFence(ttl: .seconds(5), margin: margin, sentAt: at(10))
        #expect(fence.deadline == at(13.5))
        #expect(fence.earliestExpiry == at(15))
        #expect(!fence.isFenced(at: at(13.499)))
        #expect(fence.isFenced(at: at(13.5)))
    }

    @Test("a late answer to a keepalive counts from when it was sent, not when it came back")
    func lateAnswerDoesNotExtend() {
        var fence = LeaseFence(ttl: .seconds(5), margin: margin, sentAt: at(0))
        // Sent at 1.0, answered at 3.4 (the machine only learns of it then): still from 1.0.
        fence.renewed(sentAt: at(1), ttl: .seconds(5))
        #expect(fence.deadline == at(4.5))
        #expect(fence.earliestExpiry == at(6))
        // An answer to an older keepalive arriving after a newer one moves nothing back.
        fence.renewed(sentAt: at(0.5), ttl: .seconds(5))
        #expect(fence.deadline == at(4.5))
    }

    @Test("a margin at least the TTL fences at once, never before sentAt")
    func hugeMargin() {
        let fence = LeaseFence(ttl: .seconds(1), margin: .seconds(3), sentAt: at(2))
        #expect(fence.deadline == at(2))
        #expect(fence.isFenced(at: at(2)))
    }

    // MARK: LeaseElection

    @Test("a won campaign leads with the key's create_revision as the epoch")
    func winLeads() {
        let leadership = leading()
        #expect(leadership.state == .leading(epoch: 7, lease: 42))
        #expect(leadership.fence?.deadline == at(3.5))
    }

    @Test("no keepalive: fenced exactly at the grant's sentAt + ttl − margin, once, and the lease resigned")
    func fenceWithoutKeepalive() {
        var leadership = leading()
        #expect(leadership.on(.tick(now: at(3.49))).isEmpty)
        #expect(leadership.on(.keepaliveFailed(now: at(3.2))).isEmpty)
        #expect(leadership.on(.tick(now: at(3.5))) == [.fence(epoch: 7), .resign(lease: 42)])
        #expect(leadership.state == .fenced(epoch: 7))
        // Once per term: later ticks and failures say nothing more.
        #expect(leadership.on(.tick(now: at(3.6))).isEmpty)
        #expect(leadership.on(.keepaliveFailed(now: at(3.7))).isEmpty)
        #expect(!leadership.mayCampaign)
    }

    @Test("keepalives move the fence; the deadline follows the last one sent, not received")
    func keepalivesMoveFence() {
        var leadership = leading()
        #expect(leadership.on(.keepaliveOK(sentAt: at(1), ttl: .seconds(5))).isEmpty)
        #expect(leadership.on(.keepaliveOK(sentAt: at(2), ttl: .seconds(5))).isEmpty)
        #expect(leadership.fence?.deadline == at(5.5))
        // The keepalive sent at 3 comes back at 5.4: the deadline is 6.5, not 5.4 + 3.5.
        #expect(leadership.on(.tick(now: at(5.4))).isEmpty)
        #expect(leadership.on(.keepaliveOK(sentAt: at(3), ttl: .seconds(5))).isEmpty)
        #expect(leadership.on(.tick(now: at(6.49))).isEmpty)
        #expect(leadership.on(.tick(now: at(6.5))) == [.fence(epoch: 7), .resign(lease: 42)])
    }

    @Test("an answer that arrives after the deadline does not bring the lead back")
    func lateAnswerAfterFence() {
        var leadership = leading()
        #expect(leadership.on(.tick(now: at(3.5))) == [.fence(epoch: 7), .resign(lease: 42)])
        // The keepalive sent at 1.0 is answered only now: too late, the term is over.
        #expect(leadership.on(.keepaliveOK(sentAt: at(1), ttl: .seconds(5))).isEmpty)
        #expect(leadership.state == .fenced(epoch: 7))
    }

    @Test("a lost lease (keepalive TTL 0) fences at once")
    func lostLease() {
        var leadership = leading()
        #expect(leadership.on(.keepaliveOK(sentAt: at(1), ttl: .zero)) == [.fence(epoch: 7), .resign(lease: 42)])
        #expect(leadership.state == .fenced(epoch: 7))
    }

    @Test("a read that shows the key gone or another's ends the term; one of an older term does not")
    func keyRead() {
        var leadership = leading()
        #expect(leadership.on(.keyRead(epoch: 7, createRevision: 7, lease: 42)).isEmpty)
        #expect(leadership.on(.keyRead(epoch: 6, createRevision: nil, lease: nil)).isEmpty)
        #expect(leadership.state == .leading(epoch: 7, lease: 42))
        #expect(
            leadership.on(.keyRead(epoch: 7, createRevision: nil, lease: nil)) == [
                .fence(epoch: 7), .resign(lease: 42),
            ])
        var replaced = leading()
        #expect(
            replaced.on(.keyRead(epoch: 7, createRevision: 9, lease: 42)) == [.fence(epoch: 7), .resign(lease: 42)])
        var otherLease = leading()
        #expect(
            otherLease.on(.keyRead(epoch: 7, createRevision: 7, lease: 43)) == [.fence(epoch: 7), .resign(lease: 42)])
    }

    @Test("a TTL etcd raised is the one used")
    func raisedTTL() {
        // Asked for 1 s, etcd granted 2 s (its minimum); the margin is 1.5 s.
        var leadership = LeaseElection(margin: margin)
        #expect(
            leadership.on(.campaignWon(revision: 3, lease: 9, ttl: .seconds(2), sentAt: at(0), now: at(0.1)))
                == [.startLeading(epoch: 3)])
        #expect(leadership.fence?.deadline == at(0.5))
        // A renewal answered with a raised TTL moves the deadline by it too.
        #expect(leadership.on(.keepaliveOK(sentAt: at(0.3), ttl: .seconds(10))).isEmpty)
        #expect(leadership.fence?.deadline == at(8.8))
        #expect(leadership.on(.tick(now: at(8.79))).isEmpty)
        #expect(leadership.on(.tick(now: at(8.8))) == [.fence(epoch: 3), .resign(lease: 9)])
    }

    @Test("a campaign answered past its lease's deadline never leads")
    func slowCampaign() {
        var leadership = LeaseElection(margin: margin)
        #expect(
            leadership.on(.campaignWon(revision: 3, lease: 9, ttl: .seconds(5), sentAt: at(0), now: at(3.6)))
                == [.resign(lease: 9)])
        #expect(leadership.state == .follower)
    }

    @Test("a fenced node becomes a follower once its old lease cannot be alive")
    func fencedThenFollower() {
        var leadership = leading()
        _ = leadership.on(.keepaliveOK(sentAt: at(1), ttl: .seconds(5)))
        _ = leadership.on(.tick(now: at(4.5)))
        #expect(leadership.state == .fenced(epoch: 7))
        #expect(leadership.on(.tick(now: at(5.99))).isEmpty)
        #expect(leadership.state == .fenced(epoch: 7))
        #expect(leadership.on(.tick(now: at(6))).isEmpty)
        #expect(leadership.state == .follower)
        #expect(leadership.mayCampaign)
        // A new term has a new epoch.
        #expect(
            leadership.on(.campaignWon(revision: 20, lease: 43, ttl: .seconds(5), sentAt: at(7), now: at(7.1)))
                == [.startLeading(epoch: 20)])
    }

    @Test("a lost campaign resigns the unused lease and remembers the holder")
    func lostCampaign() {
        var leadership = LeaseElection(margin: margin)
        #expect(leadership.on(.campaignLost(holder: "{\"name\":\"b\"}", lease: 5)) == [.resign(lease: 5)])
        #expect(leadership.on(.campaignLost(holder: "{\"name\":\"b\"}", lease: nil)).isEmpty)
        #expect(leadership.holder == "{\"name\":\"b\"}")
        #expect(leadership.on(.campaignFailed(lease: 6)) == [.resign(lease: 6)])
        #expect(leadership.state == .follower)
    }

    @Test("graceful shutdown fences then resigns; a follower has nothing to do")
    func shutdown() {
        var follower = LeaseElection(margin: margin)
        #expect(follower.on(.shutdown).isEmpty)
        var leadership = leading()
        #expect(leadership.on(.shutdown) == [.fence(epoch: 7), .resign(lease: 42)])
        #expect(leadership.on(.shutdown).isEmpty)
    }

    @Test("a win while already leading resigns the extra lease")
    func doubleWin() {
        var leadership = leading()
        #expect(
            leadership.on(.campaignWon(revision: 8, lease: 43, ttl: .seconds(5), sentAt: at(1), now: at(1)))
                == [.resign(lease: 43)])
        #expect(leadership.state == .leading(epoch: 7, lease: 42))
    }

    // MARK: Failsafe

    @Test(
        "etcd silent, every peer promised: the fence moves to the request's sentAt + ttl − margin; etcd's answer ends it"
    )
    func failsafeRenews() {
        var leadership = leading()
        #expect(leadership.on(.keepaliveFailed(now: at(1))).isEmpty)
        #expect(leadership.on(.failsafeAcknowledged(sentAt: at(2))).isEmpty)
        #expect(leadership.failsafe)
        #expect(leadership.fence?.deadline == at(5.5))
        // An older round's answer moves nothing back.
        #expect(leadership.on(.failsafeAcknowledged(sentAt: at(1))).isEmpty)
        #expect(leadership.fence?.deadline == at(5.5))
        // No promise since: fenced at its deadline, like a lease.
        #expect(leadership.on(.tick(now: at(5.499))).isEmpty)
        #expect(leadership.on(.tick(now: at(5.5))) == [.fence(epoch: 7), .resign(lease: 42)])
        #expect(!leadership.failsafe)
    }

    @Test(
        "etcd back: a renewal ends the failsafe; etcd saying the lease is gone fences at once, whatever peers promised")
    func etcdOutranksPeers() {
        var leadership = leading()
        _ = leadership.on(.failsafeAcknowledged(sentAt: at(2)))
        #expect(leadership.on(.keepaliveOK(sentAt: at(3), ttl: .seconds(5))).isEmpty)
        #expect(!leadership.failsafe && leadership.fence?.deadline == at(6.5))
        _ = leadership.on(.failsafeAcknowledged(sentAt: at(4)))
        #expect(leadership.on(.keepaliveOK(sentAt: at(4.5), ttl: .zero)) == [.fence(epoch: 7), .resign(lease: 42)])
        // A fenced or following node takes no promise as a renewal.
        #expect(leadership.on(.failsafeAcknowledged(sentAt: at(5))).isEmpty)
        #expect(leadership.state == .fenced(epoch: 7))
        var follower = LeaseElection(margin: margin)
        #expect(follower.on(.failsafeAcknowledged(sentAt: at(0))).isEmpty)
        #expect(follower.state == .follower && follower.fence == nil)
    }

    @Test(
        "a standby's promise binds for the TTL from when it was made and never shrinks; it excludes an automatic promotion"
    )
    func promiseBinds() {
        var promise = FailsafePromise()
        #expect(!promise.binds(at: at(0)))
        let answer1 = promise.promise(ttl: .seconds(5), now: at(1))
        #expect(answer1)
        #expect(promise.binds(at: at(5.999)) && !promise.binds(at: at(6)))
        let answer2 = promise.promise(ttl: .seconds(1), now: at(2))
        #expect(answer2)
        #expect(promise.until == at(6), "a shorter promise shortened an earlier one")
        let answer3 = promise.beginPromotion(at: at(5.9))
        #expect(!answer3)
        #expect(!promise.promoting)
        let answer4 = promise.beginPromotion(at: at(6))
        #expect(answer4)
        // Promoting: nothing more is promised.
        let answer5 = promise.promise(ttl: .seconds(5), now: at(7))
        #expect(!answer5)
        #expect(!promise.binds(at: at(7)))
        var manual = FailsafePromise()
        let answer6 = manual.promise(ttl: .seconds(5), now: at(0))
        #expect(answer6)
        manual.beginManualPromotion()
        let answer7 = manual.promise(ttl: .seconds(5), now: at(1))
        #expect(!answer7)
        manual.promotionFailed()
        let answer8 = manual.promise(ttl: .seconds(5), now: at(2))
        #expect(answer8 && manual.binds(at: at(6.9)))
        #expect(!FailsafePromise().binds(at: at(0)))
        var zero = FailsafePromise()
        let answer9 = zero.promise(ttl: .zero, now: at(0))
        #expect(!answer9)
    }

    @Test("a won key the shell declines is fenced and resigned at once; declining as a follower does nothing")
    func declined() {
        var leadership = leading()
        #expect(leadership.on(.declined) == [.fence(epoch: 7), .resign(lease: 42)])
        #expect(leadership.state == .fenced(epoch: 7))
        var follower = LeaseElection(margin: margin)
        #expect(follower.on(.declined).isEmpty)
    }
}
