import AuroraAPI

/// Who may do what with GPU jobs (docs/API.md, "Authorization"). Callers are named as the
/// coordinator records them: `operator` for the mesh admin token, `node:NAME` for a node's
/// signature (also when a node forwards its local operator's call).
///
/// - the mesh admin sees, waits on and cancels every job;
/// - anyone else only the jobs it submitted; another's job answers 404, as if it did not exist;
/// - idempotency keys are scoped to the submitter;
/// - exec jobs are taken only from the mesh admin: a node's signature never runs a command
///   on another machine.
enum JobAccess {
    /// The mesh admin's caller name.
    static let admin = "operator"

    static func seesAll(_ caller: String) -> Bool { caller == admin }

    /// The mesh admin; the submitter; and an API token of a company for its company's API tokens' jobs.
    static func mayRead(_ job: Job, _ caller: String) -> Bool {
        if seesAll(caller) || job.submittedBy == caller { return true }
        guard let company = company(of: caller), let submitter = job.submittedBy else { return false }
        return self.company(of: submitter) == company
    }

    /// `COMPANY` of `api:ID@COMPANY`.
    static func company(of caller: String) -> String? {
        guard caller.hasPrefix("api:"), let at = caller.firstIndex(of: "@") else { return nil }
        return String(caller[caller.index(after: at)...])
    }

    /// Callers whose jobs `caller` may list (nil: everyone's).
    static func listFilter(_ caller: String) -> (exact: String, companySuffix: String?)? {
        if seesAll(caller) { return nil }
        return (caller, company(of: caller).map { "@" + $0 })
    }

    static func mayRunExec(_ caller: String) -> Bool { caller == admin }
}
