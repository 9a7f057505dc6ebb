import Foundation
import HTTPTypes
import Hummingbird
import Mesh
import NIOCore
import Secrets

extension ConsoleAssets {
    /// One file as served: its bytes, type and entity tag (the start of its SHA-256).
    struct Asset: Sendable {
        let bytes: ByteBuffer
        let contentType: String
        let etag: String
    }

    /// Every file of ``files``, ready to send; built once.
    static let served: [String: Asset] = Dictionary(
        uniqueKeysWithValues: files.map { name, text in
            let bytes = Array(text.utf8)
            return (
                name,
                Asset(
                    bytes: ByteBuffer(bytes: bytes), contentType: contentType(of: name),
                    etag: "\"" + Hex.encode(Array(Crypto.sha256(bytes).prefix(12))) + "\"")
            )
        })

    /// What the console's responses allow the browser: scripts, styles, images and calls from
    /// this agent only; no inline script or style, no plugins, no framing.
    static let securityPolicy =
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
        + "base-uri 'none'; form-action 'self'; frame-ancestors 'none'"

    /// The answer for file `name`: 200 with the file, 304 when `If-None-Match` names its tag, 404
    /// `not_found` for a name the console does not have.
    static func response(for name: String, request: Request) throws(Refusal) -> Response {
        guard let asset = served[name] else {
            throw Refusal(
                .notFound, code: "not_found",
                message: "the console has no file '\(InputRules.printable(String(name.prefix(64))))'")
        }
        var headers: HTTPFields = [
            .contentType: asset.contentType, .eTag: asset.etag, .cacheControl: "no-cache",
            .contentSecurityPolicy: securityPolicy, .xContentTypeOptions: "nosniff",
            .init("Referrer-Policy")!: "no-referrer", .init("X-Frame-Options")!: "DENY",
        ]
        if let match = request.headers[.ifNoneMatch],
            match.split(separator: ",").contains(where: {
                $0.trimmingCharacters(in: .whitespaces) == asset.etag
            })
        {
            headers[.contentType] = nil
            return Response(status: .notModified, headers: headers)
        }
        return Response(status: .ok, headers: headers, body: .init(byteBuffer: asset.bytes))
    }

    static func contentType(of name: String) -> String {
        if name.hasSuffix(".html") { return "text/html; charset=utf-8" }
        if name.hasSuffix(".js") { return "text/javascript; charset=utf-8" }
        if name.hasSuffix(".css") { return "text/css; charset=utf-8" }
        if name.hasSuffix(".svg") { return "image/svg+xml" }
        return "application/octet-stream"
    }
}
