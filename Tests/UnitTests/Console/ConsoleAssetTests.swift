import Foundation
import Testing

@testable import NodeAgent

/// The console built into the binary is the files of console/ (run console/embed after a change).
@Suite("Console assets")
struct ConsoleAssetTests {
    static let folder = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent().deletingLastPathComponent().appendingPathComponent("console")

    @Test("the built-in console is console/ (every file, byte for byte)")
    func embedded() throws {
        let names = try FileManager.default.contentsOfDirectory(atPath: Self.folder.path).filter {
            [".html", ".js", ".css", ".svg"].contains(where: $0.hasSuffix)
        }.sorted()
        #expect(names == ConsoleAssets.files.keys.sorted(), "run console/embed")
        for name in names {
            let text = try String(contentsOf: Self.folder.appendingPathComponent(name), encoding: .utf8)
            #expect(ConsoleAssets.files[name] == text, "\(name) differs from the built-in copy: run console/embed")
        }
    }

    @Test("the page loads only its own files: no inline script or style, no other host")
    func selfContained() throws {
        let page = try #require(ConsoleAssets.files["index.html"])
        #expect(!page.contains("<script>") && !page.contains("style=") && page.firstMatch(of: /\son[a-z]+=/) == nil)
        for asset in ["/ui/assets/app.js", "/ui/assets/app.css", "/ui/assets/icon.svg"] {
            #expect(page.contains(asset))
        }
        for (name, text) in ConsoleAssets.files {
            let named = text.replacingOccurrences(of: "http://www.w3.org/2000/svg", with: "")  // SVG's namespace
            #expect(!named.contains("http://"), "\(name) names another host")
            #expect(!text.contains("https://"), "\(name) names another host")
            #expect(!text.contains("innerHTML") && !text.contains("eval("), "\(name) builds markup from text")
        }
    }

    /// Every event type the API declares (`EventType`'s constants in Sources/AuroraAPI).
    static func declaredEventTypes() throws -> Set<String> {
        let folder = folder.deletingLastPathComponent().appendingPathComponent("Sources/AuroraAPI")
        let block = try Regex(#"(?:enum|extension) EventType \{(.*?)\n\}"#).dotMatchesNewlines()
        let constant = try Regex(#"static let \w+ = "([a-z_]+\.[a-z_]+)""#)
        var types: Set<String> = []
        let files = FileManager.default.enumerator(atPath: folder.path)?.compactMap { $0 as? String } ?? []
        for file in files where file.hasSuffix(".swift") {
            let text = try String(contentsOf: folder.appendingPathComponent(file), encoding: .utf8)
            for match in text.matches(of: block) {
                let body = String(text[match.range])
                for found in body.matches(of: constant) {
                    if let type = found.output[1].substring { types.insert(String(type)) }
                }
            }
        }
        return types
    }

    @Test("the console listens for every event type the API declares (an EventSource hears only the names it asks for)")
    func everyEventType() throws {
        let declared = try Self.declaredEventTypes()
        #expect(declared.count >= 25 && declared.contains("job.queued") && declared.contains("secret.changed"))
        let script = try #require(ConsoleAssets.files["app.js"])
        let list = try #require(script.firstMatch(of: /const EVENT_TYPES = \[([^\]]*)\]/)).output.1
        let listened = Set(list.matches(of: /'([a-z_]+\.[a-z_]+)'/).map { String($0.output.1) })
        #expect(declared.subtracting(listened).sorted() == [], "add these to EVENT_TYPES in console/app.js")
        #expect(listened.subtracting(declared).sorted() == [], "EVENT_TYPES names types the API does not have")
    }
}
