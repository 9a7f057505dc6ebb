import Foundation

/// JSON coding as the API speaks it: snake_case keys spelled out in `CodingKeys`, sorted keys
/// so output is stable for people and diffs.
public enum APICoding {
    /// An encoder for API bodies.
    public static func encoder(pretty: Bool = false) -> JSONEncoder {
        let encoder = JSONEncoder()
        encoder.outputFormatting =
            pretty ? [.sortedKeys, .prettyPrinted, .withoutEscapingSlashes] : [.sortedKeys, .withoutEscapingSlashes]
        return encoder
    }

    /// A decoder for API bodies.
    public static func decoder() -> JSONDecoder {
        JSONDecoder()
    }
}
