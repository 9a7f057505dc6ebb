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
}
