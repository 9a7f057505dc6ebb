import Foundation
import Testing

@testable import Mesh

/// Backup retention, pure: the UTC calendar it computes itself, backup names, and
/// grandfather-father-son (7 daily, 4 weekly, 12 monthly) over injected dates.
@Suite("Backup retention (pure)")
struct BackupRetentionTests {
    typealias Backup = BackupRetention.Backup

    /// A backup taken at this UTC time, named as the agent names it.
    static func backup(_ year: Int, _ month: Int, _ day: Int, _ hour: Int = 2, _ minute: Int = 0) -> Backup {
        let stamp = UTCTimestamp(year: year, month: month, day: day, hour: hour, minute: minute)!
        return Backup(name: BackupName.fileName(for: stamp), takenAt: stamp)
    }

    /// The UTC days (`2025-03-12`) of `backups`, oldest first.
    static func days(_ backups: [Backup]) -> [String] {
        backups.map { $0.takenAt.date.description }.sorted()
    }

    // MARK: Calendar

    @Test("days since the epoch: known dates, leap days, weekdays")
    func knownDates() {
        #expect(CivilDate(daysSinceEpoch: 0) == CivilDate(year: 1970, month: 1, day: 1))
        #expect(CivilDate(year: 1970, month: 1, day: 1)!.isoWeekday == 4)  // a Thursday
        #expect(CivilDate(year: 2000, month: 3, day: 1)!.daysSinceEpoch == 11_017)
        #expect(CivilDate(year: 2024, month: 2, day: 29)!.daysSinceEpoch == 19_782)
        #expect(CivilDate(year: 1969, month: 12, day: 31)!.daysSinceEpoch == -1)
        #expect(CivilDate(year: 2000, month: 2, day: 29) != nil)
        #expect(CivilDate(year: 1900, month: 2, day: 29) == nil)
        #expect(CivilDate(year: 2025, month: 2, day: 29) == nil)
        #expect(CivilDate(year: 2025, month: 13, day: 1) == nil)
        #expect(CivilDate(year: 2025, month: 3, day: 12)!.isoWeekday == 3)  // a Wednesday
        #expect(UTCTimestamp(year: 2025, month: 3, day: 12, hour: 10, minute: 45)!.secondsSinceEpoch == 1_741_776_300)
        #expect(UTCTimestamp(secondsSinceEpoch: -1).iso8601 == "1969-12-31T23:59:59Z")
    }

    @Test("ISO weeks at year boundaries: week 1 may start in December, week 53 end in January")
    func isoWeekBoundaries() {
        #expect(CivilDate(year: 2024, month: 12, day: 30)!.isoWeek == (2025, 1))
        #expect(CivilDate(year: 2025, month: 1, day: 5)!.isoWeek == (2025, 1))
        #expect(CivilDate(year: 2024, month: 12, day: 29)!.isoWeek == (2024, 52))
        #expect(CivilDate(year: 2021, month: 1, day: 3)!.isoWeek == (2020, 53))
        #expect(CivilDate(year: 2026, month: 12, day: 31)!.isoWeek == (2026, 53))
        #expect(CivilDate(year: 2027, month: 1, day: 1)!.isoWeek == (2026, 53))
    }

    @Test("the calendar agrees with Foundation's ISO 8601 calendar on every day from 1900 to 2200")
    func agreesWithFoundation() throws {
        var calendar = Calendar(identifier: .iso8601)
        calendar.timeZone = try #require(TimeZone(identifier: "UTC"))
        let start = CivilDate(year: 1900, month: 1, day: 1)!.daysSinceEpoch,
            end = CivilDate(year: 2200, month: 12, day: 31)!.daysSinceEpoch
        var mismatches: [String] = []
        for days in stride(from: start, through: end, by: 1) {
            let date = CivilDate(daysSinceEpoch: days)
            let parts = calendar.dateComponents(
                [.year, .month, .day, .weekOfYear, .yearForWeekOfYear, .weekday],
                from: Date(timeIntervalSince1970: Double(days) * 86_400))
            let week = date.isoWeek
            // Foundation: Sunday 1 ... Saturday 7; ISO: Monday 1 ... Sunday 7.
            let isoWeekday = (parts.weekday! + 5) % 7 + 1
            if (date.year, date.month, date.day) != (parts.year!, parts.month!, parts.day!)
                || week.year != parts.yearForWeekOfYear!
                || week.week != parts.weekOfYear! || date.isoWeekday != isoWeekday || date.daysSinceEpoch != days
            {
                mismatches.append("\(days): \(date) week \(week.year)-\(week.week)")
            }
            if mismatches.count > 5 { break }
        }
        #expect(mismatches.isEmpty, "\(mismatches)")
    }

    // MARK: Names

    @Test("names carry the UTC time to the second and parse back; anything else is not a backup")
    func names() {
        let stamp = UTCTimestamp(year: 2025, month: 3, day: 12, hour: 10, minute: 45, second: 7)!
        #expect(BackupName.fileName(for: stamp) == "aurora-20250312T104507Z.dump")
        #expect(BackupName.timestamp(of: "aurora-20250312T104507Z.dump") == stamp)
        #expect(stamp.iso8601 == "2025-03-12T10:45:07Z")
        for name in [
            "aurora-20250230T000000Z.dump", "aurora-20250312T244500Z.dump", "aurora-20250312T104507Z.dump.sha256",
            ".aurora-20250312T104507Z.dump.partial", "aurora-2025-03-12.dump", "../aurora-20250312T104507Z.dump",
            "aurora-20250312T104507Z.dump/..", "aurora-+0250312T104507Z.dump", "aurora-20250312t104507z.dump", "",
        ] {
            #expect(BackupName.timestamp(of: name) == nil, "\(name)")
        }
    }

    // MARK: Retention

    @Test("one backup a day for 400 days: 7 daily, plus the extra weekly and monthly ones, and nothing else")
    func fourHundredDays() {
        let newest = CivilDate(year: 2025, month: 3, day: 12)!.daysSinceEpoch  // a Wednesday
        let backups = (0..<400).map { back -> Backup in
            let date = CivilDate(daysSinceEpoch: newest - back)
            return Self.backup(date.year, date.month, date.day)
        }
        let plan = BackupRetention.plan(backups)
        #expect(
            Self.days(plan.keep) == [
                // monthly: the last backup of each of the 11 months before March 2025
                "2024-04-30", "2024-05-31", "2024-06-30", "2024-07-31", "2024-08-31", "2024-09-30", "2024-10-31",
                "2024-11-30",
                // + weekly: the Sundays of two earlier weeks
                "2024-12-31", "2025-01-31", "2025-02-23", "2025-02-28", "2025-03-02",
                // daily
                "2025-03-06", "2025-03-07", "2025-03-08", "2025-03-09", "2025-03-10", "2025-03-11", "2025-03-12",
            ])
        #expect(plan.keep.count == 20 && plan.delete.count == 380)
        #expect(plan.keep.first?.name == "aurora-20250312T020000Z.dump")  // newest first
        #expect(plan.reasons["aurora-20250312T020000Z.dump"] == [.newest, .daily, .weekly, .monthly])
        #expect(plan.reasons["aurora-20250309T020000Z.dump"] == [.daily, .weekly])
        #expect(plan.reasons["aurora-20250223T020000Z.dump"] == [.weekly])
        #expect(plan.reasons["aurora-20250228T020000Z.dump"] == [.monthly])

        // Applying the plan again changes nothing.
        #expect(BackupRetention.plan(plan.keep).delete.isEmpty)
    }

    @Test("several backups a day: the newest of each day is kept")
    func severalPerDay() {
        let backups = (10...12).flatMap { day in [0, 6, 12, 18].map { hour in Self.backup(2025, 3, day, hour, 30) } }
        let plan = BackupRetention.plan(backups.shuffled())
        #expect(
            plan.keep.map(\.name) == [
                "aurora-20250312T183000Z.dump", "aurora-20250311T183000Z.dump", "aurora-20250310T183000Z.dump",
            ])
        #expect(plan.delete.count == 9)
        #expect(plan.delete.map(\.name) == plan.delete.map(\.name).sorted(by: >), "deletions are listed newest first")
    }

    @Test("days, weeks and months are counted among those with backups, not back from today")
    func periodsWithBackups() {
        // Ten backups a month apart: the daily rule keeps the seven most recent days that have a
        // backup, however far back they are.
        let backups = (1...10).map { month in Self.backup(2024, month, 15) }
        let plan = BackupRetention.plan(backups, policy: RetentionPolicy(daily: 7, weekly: 0, monthly: 0))
        #expect(Self.days(plan.keep) == (4...10).map { "2024-\($0 < 10 ? "0" : "")\($0)-15" })
        let monthly = BackupRetention.plan(backups)
        #expect(monthly.delete.isEmpty, "12 monthly keep all ten")
    }

    @Test("ISO week boundaries: Sunday night and Monday morning are different weeks")
    func weekBoundaries() {
        let backups = [
            Self.backup(2025, 3, 3, 10), Self.backup(2025, 3, 9, 23, 59), Self.backup(2025, 3, 10, 0, 1),
            Self.backup(2025, 3, 12),
        ]
        let plan = BackupRetention.plan(backups, policy: RetentionPolicy(daily: 0, weekly: 2, monthly: 0))
        #expect(Self.days(plan.keep) == ["2025-03-09", "2025-03-12"])
        #expect(Self.days(plan.delete) == ["2025-03-03", "2025-03-10"])
    }

    @Test("the year boundary: an ISO week that spans New Year is one week; December and January are two months")
    func yearBoundary() {
        let backups = [
            Self.backup(2024, 12, 29), Self.backup(2024, 12, 30), Self.backup(2024, 12, 31), Self.backup(2025, 1, 1),
        ]
        let weekly = BackupRetention.plan(backups, policy: RetentionPolicy(daily: 0, weekly: 2, monthly: 0))
        #expect(Self.days(weekly.keep) == ["2024-12-29", "2025-01-01"])
        let monthly = BackupRetention.plan(backups, policy: RetentionPolicy(daily: 0, weekly: 0, monthly: 2))
        #expect(Self.days(monthly.keep) == ["2024-12-31", "2025-01-01"])
        let daily = BackupRetention.plan(backups, policy: RetentionPolicy(daily: 2, weekly: 0, monthly: 0))
        #expect(Self.days(daily.keep) == ["2024-12-31", "2025-01-01"])
    }

    @Test("the newest backup survives any policy; no backups, no plan")
    func newestAlwaysKept() {
        let backups = [Self.backup(2025, 3, 1), Self.backup(2025, 3, 2)]
        let plan = BackupRetention.plan(backups, policy: RetentionPolicy(daily: 0, weekly: 0, monthly: 0))
        #expect(plan.keep.map(\.name) == ["aurora-20250302T020000Z.dump"])
        #expect(plan.reasons["aurora-20250302T020000Z.dump"] == [.newest])
        #expect(BackupRetention.plan([]) == BackupRetention.Plan(keep: [], delete: [], reasons: [:]))
    }
}
