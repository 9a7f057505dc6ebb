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
    /// The mesh admin's caller name: the lead's operator token, and an API token with role
    /// `admin`, are both recorded as it.
    static let admin = "operator"

    /// Whether `caller` is the mesh admin, who sees, waits on and cancels every job, whoever
    /// submitted it, and lists everyone's.
    static func seesAll(_ caller: String) -> Bool { caller == admin }

    /// The mesh admin; the submitter; and an API token of a company for its company's API tokens' jobs.
    ///
    /// A node's signature (`node:NAME`) and an API token without a company read only their own; a
    /// job with no recorded submitter only the mesh admin. The job coordinator answers a `false`
    /// as 404, never 403, so a job's existence does not leak.
    static func mayRead(_ job: Job, _ caller: String) -> Bool {
        if seesAll(caller) || job.submittedBy == caller { return true }
        guard let company = company(of: caller), let submitter = job.submittedBy else { return false }
        return self.company(of: submitter) == company
    }

    /// `COMPANY` of `api:ID@COMPANY`.
    ///
    /// nil for an API token without a company, for `operator` and for `node:NAME`.
    static func company(of caller: String) -> String? {
        guard caller.hasPrefix("api:"), let at = caller.firstIndex(of: "@") else { return nil }
        return String(caller[caller.index(after: at)...])
    }

    /// Callers whose jobs `caller` may list (nil: everyone's).
    ///
    /// `exact` is the caller itself; `companySuffix` (`@COMPANY`), when set, also admits every
    /// `api:` submitter whose name ends in it: ``mayRead(_:_:)`` in a form the store can query.
    static func listFilter(_ caller: String) -> (exact: String, companySuffix: String?)? {
        if seesAll(caller) { return nil }
        return (caller, company(of: caller).map { "@" + $0 })
    }

    /// Whether `caller` may submit an `exec` job (a command run on a worker): only the mesh admin.
    /// Anyone else gets 403 `exec_not_allowed` from the job coordinator, a node forwarding its own
    /// operator's call included; workers check `submitted_by` again before running one.
    static func mayRunExec(_ caller: String) -> Bool { caller == admin }
}
