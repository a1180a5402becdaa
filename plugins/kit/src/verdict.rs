//! The verdict of a security plugin's policy, without WIT types: what
//! fail-to-ban and rate-limit decide. The glue of each plugin maps it to the
//! WIT `verdict` (ip-auth, which only trusts, has its own).

/// A ban of the request's (or event's) source address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ban {
    pub duration_ms: u64,
    /// The evidence, kept with the ban.
    pub reason: String,
}

/// What a policy decides about a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Continue,
    /// `Continue`, promised for every request with the same User-Agent
    /// while the plugin's `kv` store is unchanged (WIT
    /// `continue-for-user-agent`): the host answers those itself, without a
    /// call. Only for a decision that read nothing but the User-Agent, the
    /// config and `kv`.
    ContinueForUserAgent,
    Reject {
        code: u16,
        reason: String,
    },
    /// No answer at all.
    Drop,
    Ban(Ban),
}
