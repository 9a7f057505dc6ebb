import Testing

@testable import Mesh

@Suite("Input rules, checked numbers and rate limits (pure)")
struct InputRulesTests {
    @Test("lag limits out of range are refused, never trap")
    func lagLimitRanges() {
        for text in [
            "1e20b", "99999999999999999999GB", "1e300s", "18446744073709551616", "nan", "inf", "-1s", "1e19",
            "18446744073709551615gb", "0x1p70b", String(repeating: "9", count: 40), "5\u{0}xyzs", "5 s",
        ] {
            #expect(LagLimit(text) == nil, "\(text)")
        }
        #expect(LagLimit("1152921504606846976") == .bytes(1 << 60))
        #expect(LagLimit("1024gb") == .bytes(1 << 40))
        #expect(LagLimit("315360000s") == .seconds(315_360_000))
    }

    @Test("identifiers refuse every control character; free text keeps tab and newline")
    func text() throws {
        for bad in ["a\u{0}b", "a\nb", "\u{1B}[31mred", "a\u{7F}", "a\u{85}", "a\u{202E}b", "x\u{2028}"] {
            #expect(throws: MeshError.self) { try InputRules.identifier(bad, field: "f") }
        }
        try InputRules.identifier("gpu-1 ünïcode ok", field: "f")
        #expect(throws: MeshError.self) { try InputRules.identifier(String(repeating: "a", count: 254), field: "f") }
        try InputRules.freeText("line 1\n\tline 2\r\n", field: "f", maxBytes: 100)
        let refused = #expect(throws: MeshError.self) {
            try InputRules.freeText("a\u{0}b", field: "prompt", maxBytes: 100)
        }
        #expect(refused?.message == "prompt contains a control character (U+0000)")
        #expect(InputRules.printable("\u{1B}[2Jgone") == "\\u{001B}[2Jgone")
        #expect(InputRules.sanitizedFreeText("ok\n\u{1B}[31m") == "ok\n\\u{001B}[31m")
    }

    @Test("labels: bounded count, key characters, values without controls")
    func labels() throws {
        try InputRules.labels(["zone": "office", "k8s.io/role": "gpu"], field: "labels")
        #expect(throws: MeshError.self) { try InputRules.labels(["": "x"], field: "labels") }
        #expect(throws: MeshError.self) { try InputRules.labels(["a b": "x"], field: "labels") }
        #expect(throws: MeshError.self) { try InputRules.labels(["zone": "a\nb"], field: "labels") }
        let many = Dictionary(uniqueKeysWithValues: (0..<65).map { ("k\($0)", "v") })
        #expect(throws: MeshError.self) { try InputRules.labels(many, field: "labels") }
    }

    @Test("hosts: names, IPv4 and IPv6 only; an endpoint with a newline is no HOST:PORT")
    func hosts() throws {
        #expect(
            InputRules.host("gpu-1.example.com") && InputRules.host("10.0.0.1") && InputRules.host("::1")
                && InputRules.host("fe80::1"))
        for bad in ["a\nb", "a b", "-a", "a..b", "[::1]", "a/b", ""] { #expect(!InputRules.host(bad), "\(bad)") }
        #expect(throws: MeshError.self) { try HostPort(parsing: "1.2.3.4:51820\nPostUp = id") }
        #expect(throws: MeshError.self) { try HostPort(parsing: "1.2.3.4:+80") }
        #expect(throws: MeshError.self) { try HostPort(parsing: "1.2.3.4:0051820") }
    }

    @Test("JSON scan finds escaped and raw control characters, and nothing else")
    func jsonScan() {
        func scan(_ text: String) -> UInt32? { InputRules.controlCharacter(inJSON: Array(text.utf8))?.value }
        #expect(scan(#"{"a":"b\u0000c"}"#) == 0)
        #expect(scan(#"{"a":"\u001b[31m"}"#) == 0x1B)
        #expect(scan(#"{"a":"\b"}"#) == 8)
        #expect(scan("{\"a\":\"\u{7F}\"}") == 0x7F)
        #expect(scan("{\"a\":\"\u{85}\"}") == 0x85)
        #expect(scan("{\"a\":\"\u{2028}\"}") == 0x2028)
        #expect(scan("{\"a\":\"\u{202E}\"}") == 0x202E)
        #expect(scan(#"{"a":"line\nnext\ttab\r", "b": "\\u0000 is text", "c": "é“quotes”"}"#) == nil)
        #expect(scan(#"{"a":"\u00e9\u2014"}"#) == nil)
    }

    @Test("checked numbers: no conversion traps")
    func numbers() {
        #expect(
            CheckedNumber.uint64(1e20) == nil && CheckedNumber.uint64(-1) == nil && CheckedNumber.uint64(.nan) == nil)
        #expect(CheckedNumber.uint64(18_446_744_073_709_549_568) == 18_446_744_073_709_549_568)
        #expect(
            CheckedNumber.int64(9.3e18) == nil && CheckedNumber.int64(-9.3e18) == nil
                && CheckedNumber.int64(.infinity) == nil)
        #expect(CheckedNumber.clamped(1e300, to: 0...10) == 10 && CheckedNumber.clamped(.nan, to: 0...10) == 0)
        #expect(CheckedNumber.milliseconds(seconds: 1.5, maxSeconds: 60) == 1500)
        #expect(CheckedNumber.milliseconds(seconds: 61, maxSeconds: 60) == nil)
    }

    @Test("token buckets: burst, refill, retry-after, bounded memory")
    func rateLimiter() {
        var limiter = RateLimiter(.init(ratePerSecond: 2, burst: 3), maxKeys: 4)
        for _ in 0..<3 { #expect(limiter.take("a", now: 0) == .allowed) }
        #expect(limiter.take("a", now: 0) == .limited(retryAfterMilliseconds: 500))
        #expect(limiter.take("b", now: 0) == .allowed)  // another key has its own bucket
        #expect(limiter.take("a", now: 499) == .limited(retryAfterMilliseconds: 1))
        #expect(limiter.take("a", now: 500) == .allowed)
        #expect(limiter.peek("a", now: 500) == .limited(retryAfterMilliseconds: 500))
        // A bucket that filled up again is forgotten; the key count never passes the bound.
        #expect(limiter.take("a", now: 10_000) == .allowed)
        for index in 0..<100 { _ = limiter.take("k\(index)", now: 20_000) }
        #expect(limiter.tracked <= 4)
    }
}
