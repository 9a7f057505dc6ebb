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

    static func mayRead(_ job: Job, _ caller: String) -> Bool { seesAll(caller) || job.submittedBy == caller }

    static func mayRunExec(_ caller: String) -> Bool { caller == admin }
}
