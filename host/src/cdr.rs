//! Call detail records: one row per call. (Placeholder type; storage comes
//! with the CDR store.)

/// How a call ended, as a CDR records it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Disposition {
    Answered,
    NoAnswer,
    Busy,
    Failed,
    Cancelled,
}

/// One call, one row.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Cdr {
    pub call_id: String,
    pub tenant: String,
    pub caller: String,
    pub caller_source: String,
    pub caller_user_agent: Option<String>,
    pub callee: String,
    pub route: String,
    pub answered_by: Option<String>,
    pub start_ms: u64,
    pub answer_ms: Option<u64>,
    pub end_ms: u64,
    pub duration_ms: u64,
    pub disposition: Disposition,
    pub status: u16,
}
