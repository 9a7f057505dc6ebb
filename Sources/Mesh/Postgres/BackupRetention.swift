// Backups of the mesh database: which to keep (grandfather-father-son), and the calendar
// arithmetic it needs. Pure: no clock, no files, no Foundation; dates come from the backups'
// own names, so tests inject any history they like.

// MARK: - Calendar (proleptic Gregorian, UTC)

/// A calendar day in UTC.
///
/// Converted to and from days since 1970-01-01 with Howard Hinnant's `days_from_civil` and
/// `civil_from_days` algorithms, exact for every day this code will ever see.
public struct CivilDate: Sendable, Hashable, Comparable, CustomStringConvertible {
    public let year: Int
    /// 1-12.
    public let month: Int
    /// 1-31.
    public let day: Int

    /// A date, or nil when the day does not exist (2025-02-29, month 13).
    public init?(year: Int, month: Int, day: Int) {
        guard (1...12).contains(month), day >= 1, day <= CivilDate.daysIn(month: month, year: year) else { return nil }
        self.year = year
        self.month = month
        self.day = day
    }

    /// The day `days` after 1970-01-01 (negative: before it).
    public init(daysSinceEpoch days: Int) {
        let z = days + 719_468
        let era = (z >= 0 ? z : z - 146_096) / 146_097
        let dayOfEra = z - era * 146_097  // 0...146096
        let yearOfEra = (dayOfEra - dayOfEra / 1460 + dayOfEra / 36_524 - dayOfEra / 146_096) / 365  // 0...399
        let dayOfYear = dayOfEra - (365 * yearOfEra + yearOfEra / 4 - yearOfEra / 100)  // 0...365, from March 1
        let shiftedMonth = (5 * dayOfYear + 2) / 153  // 0...11, March = 0
        self.day = dayOfYear - (153 * shiftedMonth + 2) / 5 + 1
        self.month = shiftedMonth < 10 ? shiftedMonth + 3 : shiftedMonth - 9
        self.year = yearOfEra + era * 400 + (month <= 2 ? 1 : 0)
    }

    /// Days since 1970-01-01.
    public var daysSinceEpoch: Int {
        let y = month <= 2 ? year - 1 : year
        let era = (y >= 0 ? y : y - 399) / 400
        let yearOfEra = y - era * 400
        let dayOfYear = (153 * (month > 2 ? month - 3 : month + 9) + 2) / 5 + day - 1
        let dayOfEra = yearOfEra * 365 + yearOfEra / 4 - yearOfEra / 100 + dayOfYear
        return era * 146_097 + dayOfEra - 719_468
    }

    /// ISO weekday: Monday 1 ... Sunday 7 (1970-01-01 was a Thursday).
    public var isoWeekday: Int { CivilDate.isoWeekday(daysSinceEpoch: daysSinceEpoch) }

    /// The ISO 8601 week: its year (which may differ from `year` near New Year) and number 1-53.
    /// The week belongs to the year that holds its Thursday.
    public var isoWeek: (year: Int, week: Int) {
        let days = daysSinceEpoch
        let thursday = days - (CivilDate.isoWeekday(daysSinceEpoch: days) - 1) + 3
        let year = CivilDate(daysSinceEpoch: thursday).year
        let januaryFirst = CivilDate(year: year, month: 1, day: 1)!.daysSinceEpoch
        return (year, (thursday - januaryFirst) / 7 + 1)
    }

    /// `2025-03-12`.
    public var description: String { "\(CivilDate.pad(year, 4))-\(CivilDate.pad(month, 2))-\(CivilDate.pad(day, 2))" }

    public static func < (lhs: CivilDate, rhs: CivilDate) -> Bool {
        (lhs.year, lhs.month, lhs.day) < (rhs.year, rhs.month, rhs.day)
    }

    static func isoWeekday(daysSinceEpoch days: Int) -> Int {
        ((days % 7 + 7) % 7 + 3) % 7 + 1
    }

    static func isLeap(_ year: Int) -> Bool { year % 4 == 0 && (year % 100 != 0 || year % 400 == 0) }

    static func daysIn(month: Int, year: Int) -> Int {
        switch month {
        case 2: isLeap(year) ? 29 : 28
        case 4, 6, 9, 11: 30
        default: 31
        }
    }

    static func pad(_ value: Int, _ width: Int) -> String {
        let digits = String(value)
        return String(repeating: "0", count: max(0, width - digits.count)) + digits
    }
}

/// An instant in UTC to the second: what a backup's file name records.
public struct UTCTimestamp: Sendable, Hashable, Comparable, CustomStringConvertible {
    /// Seconds since 1970-01-01T00:00:00Z.
    public let secondsSinceEpoch: Int64

    public init(secondsSinceEpoch: Int64) {
        self.secondsSinceEpoch = secondsSinceEpoch
    }

    /// A timestamp from calendar fields, or nil when one is out of range.
    public init?(year: Int, month: Int, day: Int, hour: Int = 0, minute: Int = 0, second: Int = 0) {
        guard let date = CivilDate(year: year, month: month, day: day), (0...23).contains(hour),
            (0...59).contains(minute),
            (0...59).contains(second)
        else { return nil }
        self.secondsSinceEpoch = Int64(date.daysSinceEpoch) * 86_400 + Int64(hour * 3600 + minute * 60 + second)
    }

    /// `20250312T104500Z` (ISO 8601 basic format), or nil when `text` is not exactly that.
    public init?(compact text: String) {
        let bytes = Array(text.utf8)
        guard bytes.count == 16, bytes[8] == UInt8(ascii: "T"), bytes[15] == UInt8(ascii: "Z") else { return nil }
        func number(_ range: Range<Int>) -> Int? {
            var value = 0
            for byte in bytes[range] {
                guard (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(byte) else { return nil }
                value = value * 10 + Int(byte - UInt8(ascii: "0"))
            }
            return value
        }
        guard let year = number(0..<4), let month = number(4..<6), let day = number(6..<8), let hour = number(9..<11),
            let minute = number(11..<13), let second = number(13..<15)
        else { return nil }
        self.init(year: year, month: month, day: day, hour: hour, minute: minute, second: second)
    }

    /// The UTC day.
    public var date: CivilDate { CivilDate(daysSinceEpoch: daysSinceEpoch) }

    /// Whole days since the epoch (floored, so instants before 1970 land on the right day).
    public var daysSinceEpoch: Int {
        Int(secondsSinceEpoch >= 0 ? secondsSinceEpoch / 86_400 : (secondsSinceEpoch - 86_399) / 86_400)
    }

    /// Seconds since midnight UTC.
    var secondOfDay: Int { Int(secondsSinceEpoch - Int64(daysSinceEpoch) * 86_400) }

    /// `20250312T104500Z`.
    public var compact: String {
        let date = self.date, second = secondOfDay
        return "\(CivilDate.pad(date.year, 4))\(CivilDate.pad(date.month, 2))\(CivilDate.pad(date.day, 2))T"
            + "\(CivilDate.pad(second / 3600, 2))\(CivilDate.pad(second / 60 % 60, 2))\(CivilDate.pad(second % 60, 2))Z"
    }

    /// `2025-03-12T10:45:00Z`.
    public var iso8601: String {
        let second = secondOfDay
        return
            "\(date)T\(CivilDate.pad(second / 3600, 2)):\(CivilDate.pad(second / 60 % 60, 2)):\(CivilDate.pad(second % 60, 2))Z"
    }

    public var description: String { iso8601 }

    public static func < (lhs: UTCTimestamp, rhs: UTCTimestamp) -> Bool {
        lhs.secondsSinceEpoch < rhs.secondsSinceEpoch
    }
}

// MARK: - Backup names

/// How a backup of the mesh database is named: `aurora-YYYYMMDDTHHMMSSZ.dump` (UTC), so the name
/// alone says when it was taken and names sort by age.
public enum BackupName {
    public static let prefix = "aurora-"
    public static let suffix = ".dump"

    /// The file name of a backup taken at `timestamp`.
    public static func fileName(for timestamp: UTCTimestamp) -> String {
        prefix + timestamp.compact + suffix
    }

    /// When the backup named `fileName` was taken, or nil when the name is not a backup's.
    public static func timestamp(of fileName: String) -> UTCTimestamp? {
        guard fileName.hasPrefix(prefix), fileName.hasSuffix(suffix) else { return nil }
        let middle = fileName.dropFirst(prefix.count).dropLast(suffix.count)
        guard let timestamp = UTCTimestamp(compact: String(middle)), fileName == self.fileName(for: timestamp) else {
            return nil
        }
        return timestamp
    }
}

// MARK: - Retention

/// How many backups survive: the newest of each of the `daily` most recent days that have
/// a backup, of each of the `weekly` most recent ISO weeks, and of each of the `monthly` most
/// recent months.
public struct RetentionPolicy: Sendable, Equatable {
    public var daily: Int
    public var weekly: Int
    public var monthly: Int

    public init(daily: Int, weekly: Int, monthly: Int) {
        self.daily = max(0, daily)
        self.weekly = max(0, weekly)
        self.monthly = max(0, monthly)
    }

    /// 7 daily, 4 weekly, 12 monthly.
    public static let standard = RetentionPolicy(daily: 7, weekly: 4, monthly: 12)
}

/// Grandfather-father-son retention over a set of backups.
///
/// Periods are counted among those that have backups, not back from today: a lead that was
/// off for a month still keeps its last seven days of backups. The newest backup is always
/// kept, whatever the policy.
public enum BackupRetention {
    /// One backup: its file name and when it was taken.
    public struct Backup: Sendable, Hashable {
        public let name: String
        public let takenAt: UTCTimestamp

        public init(name: String, takenAt: UTCTimestamp) {
            self.name = name
            self.takenAt = takenAt
        }

        /// Newer first; the name breaks a tie so the order is total.
        static func newerFirst(_ a: Backup, _ b: Backup) -> Bool {
            a.takenAt != b.takenAt ? a.takenAt > b.takenAt : a.name > b.name
        }
    }

    /// Why a backup survives.
    public enum Reason: String, Sendable, Hashable, CaseIterable {
        /// The newest of all.
        case newest
        /// The newest of one of the most recent days.
        case daily
        /// The newest of one of the most recent ISO weeks.
        case weekly
        /// The newest of one of the most recent months.
        case monthly
    }

    /// What retention decided: both lists newest first.
    public struct Plan: Sendable, Equatable {
        public var keep: [Backup]
        public var delete: [Backup]
        /// Every kept backup's name and why it is kept.
        public var reasons: [String: Set<Reason>]
    }

    /// Which of `backups` to keep and which to delete under `policy`.
    public static func plan(_ backups: [Backup], policy: RetentionPolicy = .standard) -> Plan {
        let ordered = backups.sorted(by: Backup.newerFirst)
        var reasons: [String: Set<Reason>] = [:]
        if let newest = ordered.first { reasons[newest.name, default: []].insert(.newest) }

        /// Walks newest first: the first backup of each new period is that period's newest,
        /// until `count` periods have one.
        func keepNewest(per period: (UTCTimestamp) -> Int, count: Int, as reason: Reason) {
            var seen = Set<Int>()
            for backup in ordered where seen.count < count {
                if seen.insert(period(backup.takenAt)).inserted { reasons[backup.name, default: []].insert(reason) }
            }
        }
        keepNewest(per: { $0.daysSinceEpoch }, count: policy.daily, as: .daily)
        keepNewest(
            per: { timestamp in  // the Monday that starts the ISO week
                let days = timestamp.daysSinceEpoch
                return days - (CivilDate.isoWeekday(daysSinceEpoch: days) - 1)
            }, count: policy.weekly, as: .weekly)
        keepNewest(
            per: { timestamp in
                let date = timestamp.date
                return date.year * 12 + date.month - 1
            }, count: policy.monthly, as: .monthly)

        var plan = Plan(keep: [], delete: [], reasons: reasons)
        for backup in ordered {
            if reasons[backup.name] != nil { plan.keep.append(backup) } else { plan.delete.append(backup) }
        }
        return plan
    }
}
