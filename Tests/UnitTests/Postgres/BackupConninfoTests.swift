import Foundation
import Testing

@testable import NodeAgent

/// How backups hand the store's connection string to pg_dump and pg_restore: taken apart,
/// pointed at another database, the password moved out (it travels in PGPASSWORD, never on a
/// command line).
@Suite("Backup connection strings (pure)")
struct BackupConninfoTests {
    @Test("a URL with a password, several hosts and query parameters becomes keywords without the password")
    func url() throws {
        let conninfo = try Conninfo(
            parsing: "postgres://mesh:p%40ss%3Aw%2Frd@db1.example:5433,[::1]/aurora?sslmode=require&connect_timeout=3")
        #expect(conninfo.password == "p@ss:w/rd")
        #expect(conninfo.value("user") == "mesh")
        #expect(conninfo.value("host") == "db1.example,::1")
        #expect(conninfo.value("port") == "5433,")
        #expect(conninfo.value("dbname") == "aurora")
        #expect(conninfo.value("sslmode") == "require")
        let forTool = conninfo.setting("dbname", "restored").removing("password").keywordString
        #expect(
            forTool
                == "user='mesh' host='db1.example,::1' port='5433,' sslmode='require' connect_timeout='3' dbname='restored'"
        )
        #expect(!forTool.contains("p@ss"))
    }

    @Test("keyword strings: quoting, escapes, spaces around '='; written back so libpq reads the same values")
    func keywords() throws {
        let spaced = try Conninfo(parsing: "  port = 5432   dbname=aurora ")
        #expect(spaced.parameters == [.init(key: "port", value: "5432"), .init(key: "dbname", value: "aurora")])
        // An unquoted value ends at a space, as in libpq: what follows is not a keyword.
        #expect(throws: AgentError.self) { try Conninfo(parsing: "host=/tmp/data dir/postgres dbname=aurora") }
        let quoted = try Conninfo(parsing: #"host='/tmp/data dir/postgres' password='it\'s a \\ secret' dbname=aurora"#)
        #expect(quoted.value("host") == "/tmp/data dir/postgres")
        #expect(quoted.password == #"it's a \ secret"#)
        let again = try Conninfo(parsing: quoted.keywordString)
        #expect(again == quoted)
        #expect(quoted.removing("password").keywordString == "host='/tmp/data dir/postgres' dbname='aurora'")
    }

    @Test("the managed cluster's string and plain URLs without a password")
    func managedAndPlain() throws {
        let managed = try Conninfo(parsing: "host=/var/lib/aurora/postgres port=5432 dbname=aurora user=aurora")
        #expect(managed.password == nil)
        #expect(
            managed.setting("dbname", "copy").keywordString
                == "host='/var/lib/aurora/postgres' port='5432' user='aurora' dbname='copy'")
        let plain = try Conninfo(parsing: "postgresql://aurora@127.0.0.1:5432/postgres")
        #expect(plain.parameters.map(\.key) == ["user", "host", "port", "dbname"])
        #expect(try Conninfo(parsing: "postgres:///aurora?host=/run/postgresql").value("host") == "/run/postgresql")
    }

    @Test("malformed strings are refused without echoing them")
    func malformed() {
        for text in ["just-a-s3cr3t-word", "host='s3cr3t", "postgres://h/db?s3cr3t", "password=x host='s3cr3t"] {
            #expect(throws: AgentError.self) { try Conninfo(parsing: text) }
            do {
                _ = try Conninfo(parsing: text)
            } catch {
                #expect(!error.message.contains("s3cr3t"), "\(error.message)")
            }
        }
    }

    @Test("restore targets: letters, digits and _, at most 63, not starting with a digit")
    func databaseNames() {
        for good in ["restored", "aurora_2025_03_12", "_x", String(repeating: "a", count: 63), "Mixed_Case1"] {
            #expect(BackupArchive.isDatabaseName(good), "\(good)")
        }
        for bad in [
            "", "1restored", "has-dash", "has space", "quo\"te", "dröp", String(repeating: "a", count: 64), "a;DROP",
        ] {
            #expect(!BackupArchive.isDatabaseName(bad), "\(bad)")
        }
    }

    @Test("pg_dump's verbose lines name the table it begins")
    func tableLines() {
        #expect(BackupArchive.tableBegun(#"pg_dump: dumping contents of table "public.jobs""#) == "public.jobs")
        #expect(BackupArchive.tableBegun("pg_dump: reading indexes") == nil)
    }
}
