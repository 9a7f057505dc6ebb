import AuroraAPI
import Foundation
import Logging
import Secrets

/// The node's keys, generated with libsodium on first start and reused on every later start:
/// the WireGuard key pair, the Ed25519 key that signs its requests, and the X25519 key that
/// secrets are sealed to. Files live in `DATA/keys/`, every one 0600.
public struct NodeIdentity: Sendable {
    /// The WireGuard interface's private key (`wireguard.key`); its public half goes to peers.
    public let wireguard: WireGuardPrivateKey
    /// Signs every request to the lead (``RequestSigner``) and, on the lead, the views it serves.
    public let signing: SigningKey
    /// The X25519 key the lead seals this node's secrets to; only this node can open them.
    public let box: BoxKey

    /// The public half, as the API shows it.
    public var publicIdentity: AgentStatus.Identity {
        AgentStatus.Identity(
            wireguardPublicKey: wireguard.publicKey.base64, signPublicKey: signing.publicKey.base64,
            boxPublicKey: box.publicKey.base64)
    }

    /// Loads the keys in `directory`, creating any that are missing. A key file that exists but
    /// does not parse is an error: it is never silently replaced.
    public static func loadOrCreate(in directory: String, logger: Logger) throws(AgentError) -> NodeIdentity {
        try DataDirectory.createDirectory(directory, mode: 0o700, what: "key directory")
        chmod(directory, 0o700)
        let wireguard = try key(
            directory, "wireguard", logger: logger, parse: WireGuardPrivateKey.init(base64:),
            generate: WireGuardPrivateKey.generate, encode: { $0.base64() }, publicKey: { $0.publicKey })
        let signing = try key(
            directory, "sign", logger: logger, parse: SigningKey.init(base64Seed:),
            generate: SigningKey.generate, encode: { $0.base64Seed() }, publicKey: { $0.publicKey })
        let box = try key(
            directory, "box", logger: logger, parse: BoxKey.init(base64:),
            generate: BoxKey.generate, encode: { $0.base64() }, publicKey: { $0.publicKey })
        return NodeIdentity(wireguard: wireguard, signing: signing, box: box)
    }

    /// Loads `DIR/NAME.key` (tightening it to 0600 if needed) or generates it, and keeps
    /// `DIR/NAME.pub` in step with the private key, rewriting it when it differs.
    private static func key<Key>(
        _ directory: String, _ name: String, logger: Logger,
        parse: (String) throws(SecretsError) -> Key, generate: () -> Key, encode: (Key) -> String,
        publicKey: (Key) -> PublicKey
    ) throws(AgentError) -> Key {
        let privatePath = "\(directory)/\(name).key"
        let publicPath = "\(directory)/\(name).pub"
        if let text = try SecureFile.read(privatePath) {
            if let mode = SecureFile.mode(privatePath), mode & 0o077 != 0 {
                chmod(privatePath, 0o600)
                logger.warning(
                    "key file was readable by others; tightened to 0600", metadata: ["nodeagent.file": "\(privatePath)"]
                )
            }
            let key: Key
            do {
                key = try parse(text)
            } catch {
                throw AgentError(
                    .identity,
                    "\(privatePath) is not a valid key (\(error.message)); restore it from a backup or remove it to make a new identity"
                )
            }
            let derived = publicKey(key).base64
            if (try? SecureFile.read(publicPath))?.trimmingCharacters(in: .whitespacesAndNewlines) != derived {
                try SecureFile.write(derived + "\n", to: publicPath)
            }
            return key
        }
        let key = generate()
        try SecureFile.write(encode(key) + "\n", to: privatePath)
        try SecureFile.write(publicKey(key).base64 + "\n", to: publicPath)
        logger.info(
            "generated key", metadata: ["nodeagent.key": "\(name)", "nodeagent.public_key": "\(publicKey(key).base64)"])
        return key
    }
}

/// The operator token: created on first start, written once in clear to `DATA/admin.token`
/// (0600) for the operator, and kept only as a SHA-256 hash by the agent.
public struct AdminToken: Sendable {
    /// SHA-256 of the token; the clear token is never kept in memory after first start.
    private let hash: [UInt8]
    /// On the lead, the scoped API tokens: one with role `admin` is accepted wherever this token is.
    var scoped: APITokens?
    /// The web console's sessions: a session id (`aurses_…`) stands for the token it signed in with.
    let sessions = ConsoleSessions()

    /// Loads the hash, or creates the token on first start.
    public static func loadOrCreate(dataDir: String, keysDir: String, logger: Logger) throws(AgentError) -> AdminToken {
        let hashPath = keysDir + "/admin.token.sha256"
        if let hex = try SecureFile.read(hashPath) {
            guard let hash = Hex.decode(hex.trimmingCharacters(in: .whitespacesAndNewlines)), hash.count == 32 else {
                throw AgentError(
                    .identity, "\(hashPath) is not a SHA-256 hash; remove it to issue a new operator token")
            }
            return AdminToken(hash: hash)
        }
        let token = "aur_" + Hex.encode(Crypto.randomBytes(32))
        let hash = Crypto.sha256(Array(token.utf8))
        try SecureFile.write(Hex.encode(hash) + "\n", to: hashPath)
        try SecureFile.write(token + "\n", to: dataDir + "/" + Defaults.adminTokenFile)
        logger.info("created operator token", metadata: ["nodeagent.file": "\(dataDir)/\(Defaults.adminTokenFile)"])
        return AdminToken(hash: hash)
    }

    /// The hex SHA-256 of the token: a lead records it in the store, so the mesh admin token
    /// keeps working on a promoted standby.
    var hashHex: String { Hex.encode(hash) }

    /// Whether `presented` is the token (constant time), or an API token with role `admin`.
    public func accepts(_ presented: String) -> Bool {
        role(of: presented)?.role == .admin
    }

    /// What a presented bearer token may do: `admin` for this token, the role of a valid API
    /// token, nil for anything else.
    ///
    /// A console session's id answers for the token it signed in with, checked again now: a
    /// revoked or expired token ends its sessions.
    func role(of presented: String) -> (role: APIRole, caller: String)? {
        if presented.hasPrefix(ConsoleWire.sessionPrefix) {
            guard let session = sessions.session(presented) else { return nil }
            return role(ofCredential: session.credential)
        }
        guard presented.utf8.count <= 256 else { return nil }
        return role(ofCredential: Crypto.sha256(Array(presented.utf8)))
    }

    /// What the token whose SHA-256 is `credential` may do (``role(of:)`` without the token).
    func role(ofCredential credential: [UInt8]) -> (role: APIRole, caller: String)? {
        if Crypto.constantTimeEquals(credential, hash) { return (.admin, JobAccess.admin) }
        guard let grant = scoped?.grant(hash: Hex.encode(credential)) else { return nil }
        return (grant.role, grant.caller)
    }

    /// Signs in to the console with `presented`: a new session, with the token's role and caller;
    /// nil for a token this agent does not take, and for a session id (a session does not open
    /// another).
    func openSession(with presented: String, now: Date = Date()) -> (
        id: String, session: ConsoleSessions.Session, role: APIRole, caller: String
    )? {
        guard !presented.hasPrefix(ConsoleWire.sessionPrefix), presented.utf8.count <= 256 else { return nil }
        let credential = Crypto.sha256(Array(presented.utf8))
        guard let (role, caller) = role(ofCredential: credential) else { return nil }
        let (id, session) = sessions.open(credential: credential, now: now)
        return (id, session, role, caller)
    }
}

/// Lower-case hexadecimal.
enum Hex {
    /// Two lower-case digits per byte.
    static func encode(_ bytes: [UInt8]) -> String {
        let digits = Array("0123456789abcdef".utf8)
        var out = [UInt8]()
        out.reserveCapacity(bytes.count * 2)
        for byte in bytes {
            out.append(digits[Int(byte >> 4)])
            out.append(digits[Int(byte & 0x0f)])
        }
        return String(decoding: out, as: UTF8.self)
    }

    /// Accepts either case; nil for an odd length or a character that is not a hex digit.
    static func decode(_ text: String) -> [UInt8]? {
        let chars = Array(text.utf8)
        guard chars.count % 2 == 0 else { return nil }
        func value(_ c: UInt8) -> UInt8? {
            switch c {
            case UInt8(ascii: "0")...UInt8(ascii: "9"): c - UInt8(ascii: "0")
            case UInt8(ascii: "a")...UInt8(ascii: "f"): c - UInt8(ascii: "a") + 10
            case UInt8(ascii: "A")...UInt8(ascii: "F"): c - UInt8(ascii: "A") + 10
            default: nil
            }
        }
        var out = [UInt8]()
        out.reserveCapacity(chars.count / 2)
        var index = 0
        while index < chars.count {
            guard let high = value(chars[index]), let low = value(chars[index + 1]) else { return nil }
            out.append(high << 4 | low)
            index += 2
        }
        return out
    }
}

/// The lead's secrets master key: `DATA/keys/secrets.master` (0600), created on first start,
/// or derived from a passphrase (`secrets.passphrase_file`) with Argon2id and a salt kept in
/// `DATA/keys/secrets.salt`. A check value sealed under the key finds a wrong passphrase at
/// start, before anything is written with it. Losing the key (or the passphrase) loses every
/// stored secret.
enum SecretsMasterKey {
    /// Loads (or first makes) the key for ``Agent/run`` on the lead. Throws ``AgentError`` with
    /// code `identity` when the passphrase file is unreadable or under 12 characters, the key file
    /// is damaged, or the key does not open `secrets.check` (a wrong passphrase or key file).
    static func loadOrCreate(in directory: String, passphraseFile: String?, logger: Logger) throws(AgentError)
        -> MasterKey
    {
        let key: MasterKey
        if let passphraseFile {
            guard let text = try? String(contentsOfFile: passphraseFile, encoding: .utf8) else {
                throw AgentError(.identity, "cannot read the secrets passphrase file \(passphraseFile)")
            }
            var bytes = Array(text.trimmingCharacters(in: .newlines).utf8)
            guard bytes.count >= 12 else {
                throw AgentError(.identity, "the secrets passphrase in \(passphraseFile) is shorter than 12 characters")
            }
            let passphrase = SecureBytes(copying: bytes)
            SecureBytes.zero(&bytes)
            let saltPath = directory + "/secrets.salt"
            let salt: [UInt8]
            if let saved = try SecureFile.read(saltPath),
                let decoded = Data(base64Encoded: saved.trimmingCharacters(in: .whitespacesAndNewlines))
            {
                salt = [UInt8](decoded)
            } else {
                salt = MasterKey.newSalt()
                try SecureFile.write(Data(salt).base64EncodedString() + "\n", to: saltPath)
            }
            do { key = try MasterKey(passphrase: passphrase, salt: salt, opsLimit: 3, memLimit: 64 << 20) } catch {
                throw AgentError(.identity, "cannot derive the secrets master key: \(error.message)")
            }
        } else {
            let path = directory + "/secrets.master"
            if let text = try SecureFile.read(path) {
                do { key = try MasterKey(base64: text.trimmingCharacters(in: .whitespacesAndNewlines)) } catch {
                    throw AgentError(
                        .identity,
                        "\(path) does not hold a secrets master key (\(error.message)); restore it from a backup")
                }
            } else {
                key = MasterKey.generate()
                try SecureFile.write(key.base64() + "\n", to: path)
                logger.info("created the secrets master key", metadata: ["nodeagent.file": "\(path)"])
            }
        }
        try check(key, directory: directory, passphrase: passphraseFile != nil)
        return key
    }

    /// Seals a known value under the key the first time; later starts must open it.
    private static func check(_ key: MasterKey, directory: String, passphrase: Bool) throws(AgentError) {
        let path = directory + "/secrets.check"
        let row = SecretRow(scope: "check", scopeID: "", service: "aurora", keyName: "master", version: 1)
        if let text = try SecureFile.read(path),
            let data = Data(base64Encoded: text.trimmingCharacters(in: .whitespacesAndNewlines))
        {
            let bytes = [UInt8](data)
            let nonceLength = 24, wrapLength = 32 + 16
            guard bytes.count > 2 * nonceLength + wrapLength else {
                throw AgentError(.identity, "\(path) is damaged; remove it to start over")
            }
            let sealed = SealedValue(
                ciphertext: Array(bytes[(2 * nonceLength + wrapLength)...]), nonce: Array(bytes[0..<nonceLength]),
                wrappedKey: Array(bytes[(2 * nonceLength)..<(2 * nonceLength + wrapLength)]),
                wrapNonce: Array(bytes[nonceLength..<(2 * nonceLength)]), kekVersion: 1)
            do { _ = try Envelope.open(sealed, for: row, master: key) } catch {
                throw AgentError(
                    .identity,
                    passphrase
                        ? "the secrets passphrase does not match the one this lead's secrets were stored with"
                        : "DATA/keys/secrets.master does not match the key this lead's secrets were stored with")
            }
            return
        }
        let sealed = Envelope.seal(
            SecureBytes(copying: Array("aurora-master-check".utf8)), for: row, master: key, kekVersion: 1)
        try SecureFile.write(
            Data(sealed.nonce + sealed.wrapNonce + sealed.wrappedKey + sealed.ciphertext).base64EncodedString() + "\n",
            to: path)
    }
}
