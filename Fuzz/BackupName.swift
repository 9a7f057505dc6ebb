// Fuzz target `backup-name`: file names in the backup directory (`aurora-20250312T104500Z.dump`),
// which decide what retention keeps and deletes.
//
// Invariants: parsing never traps; a name is a backup's only when it is exactly the name
// written for its timestamp; the timestamp's calendar fields are in range.

import Mesh

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzBackupName(_ start: UnsafeRawPointer, _ count: Int) -> CInt {
    let input = text(start, count)
    if let stamp = UTCTimestamp(compact: input) {
        expect(stamp.compact == input, "'\(input)' parsed to \(stamp), which prints as '\(stamp.compact)'")
        let date = stamp.date
        expect((1...12).contains(date.month) && (1...31).contains(date.day), "'\(input)' parsed to the day \(date)")
        expect(
            (1...53).contains(stamp.date.isoWeek.week) && (1...7).contains(date.isoWeekday),
            "'\(input)': week or weekday out of range")
    }
    if let stamp = BackupName.timestamp(of: input) {
        expect(BackupName.fileName(for: stamp) == input, "'\(input)' was taken for the backup of \(stamp)")
    }
    return 0
}
