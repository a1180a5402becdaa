//! Management operations, one function each: the control socket
//! (`sipfence NOUN VERB`, see [`crate::control`]) and the HTTP API (see
//! [`crate::api`]) both call these, so a ban added or a binding removed
//! means the same thing whichever way it came.
//!
//! Every change validates all of its input before it touches anything (a
//! refused change writes nothing), is committed to the store before it is
//! reported done, and is logged with who made it ([`Actor`]).
//!
//! Provisioning (extensions, ring groups) lives in the config file: these
//! are read-only here. Trunks do not exist yet.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::cdr::{Cdr, CdrFilter};
use crate::guard::{BanOutcome, BanRow};
use crate::mail::{MailError, MailSummary};
use crate::plugins::PluginStats;
use crate::registrar::location::Aor;
use crate::run::{reload_chain, Plugins};
use crate::server::{now_ms, tenant_key, Core};
use crate::stats::Stats;
use crate::store::{StoredVoicemail, Write};

/// Longest ban an operator can make: ten years.
pub const MAX_BAN_MS: u64 = 10 * 365 * 24 * 3_600_000;

/// Longest ban reason, in characters.
pub const MAX_REASON_CHARS: usize = 200;

/// Who asked for a change, for the log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Actor {
    /// A local user on the control socket (`sipfence bans unban ...`).
    ControlSocket,
    /// An HTTP API client: which token (a short hash of it, never the token)
    /// and from where.
    Api { token_id: String, peer: SocketAddr },
}

impl fmt::Display for Actor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Actor::ControlSocket => f.write_str("control socket"),
            Actor::Api { token_id, peer } => write!(f, "api token {token_id} from {peer}"),
        }
    }
}

/// Why an operation was refused or failed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ManageError {
    /// Input that cannot be used: which field, and what is wrong with it.
    #[error("{field}: {problem}")]
    BadInput { field: String, problem: String },
    /// The thing to change or remove does not exist.
    #[error("{0}")]
    NotFound(String),
    /// Well-formed, but refused by policy (e.g. banning an exempt address).
    #[error("{field}: {problem}")]
    Refused { field: String, problem: String },
    /// The gateway failed (the database); nothing the client can fix.
    #[error("{0}")]
    Internal(String),
}

impl ManageError {
    pub fn bad(field: &str, problem: impl Into<String>) -> ManageError {
        ManageError::BadInput {
            field: field.to_owned(),
            problem: problem.into(),
        }
    }

    /// The field the error is about, if any.
    pub fn field(&self) -> Option<&str> {
        match self {
            ManageError::BadInput { field, .. } | ManageError::Refused { field, .. } => Some(field),
            _ => None,
        }
    }
}

// ---------------------------------------------------------------------------
// Bans

/// Every current ban with its evidence, soonest to end first.
pub fn list_bans(core: &Core) -> Vec<BanRow> {
    core.guard.list(now_ms())
}

/// A ban an operator asks for.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewBan {
    /// IPv4 or IPv6 address (an IPv6 address bans its whole prefix,
    /// `bans.ipv6_prefix_len`, /64 by default).
    #[schema(value_type = IpAddress, example = "192.0.2.7")]
    pub address: String,
    /// How long, in milliseconds (1 to ten years); default
    /// `bans.default_duration_ms`. An existing longer ban is kept.
    #[serde(default, deserialize_with = "whole_number")]
    #[schema(minimum = 1, maximum = 315_360_000_000_u64)]
    pub duration_ms: Option<u64>,
    /// Why, for the evidence (up to 200 characters, no control characters);
    /// default "banned by an operator".
    #[serde(default)]
    #[schema(max_length = 200, pattern = r"^[^\u0000-\u001F\u007F-\u009F]*$")]
    pub reason: Option<String>,
}

/// An optional whole number, also written as a float without fraction
/// (`5.0`: JSON Schema counts it as an integer, so clients may send it).
fn whole_number<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    use serde::de::Error;
    match Option::<serde_json::Number>::deserialize(d)? {
        None => Ok(None),
        Some(n) => match (n.as_u64(), n.as_f64()) {
            (Some(v), _) => Ok(Some(v)),
            (None, Some(f)) if f >= 0.0 && f.fract() == 0.0 && f <= u64::MAX as f64 => {
                Ok(Some(f as u64))
            }
            _ => Err(D::Error::custom(format!(
                "expected a whole number of milliseconds, found {n}"
            ))),
        },
    }
}

/// How an address is described in the OpenAPI document: an IPv4 or an IPv6
/// address (the API also takes `[v6]` and a ban's `v6/64` as listed).
pub struct IpAddress;

impl utoipa::PartialSchema for IpAddress {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{
            KnownFormat, ObjectBuilder, OneOfBuilder, SchemaFormat, Type,
        };
        let string = |format| {
            ObjectBuilder::new()
                .schema_type(Type::String)
                .format(Some(SchemaFormat::KnownFormat(format)))
        };
        OneOfBuilder::new()
            .item(string(KnownFormat::Ipv4))
            .item(string(KnownFormat::Ipv6))
            .description(Some("An IPv4 or IPv6 address"))
            .into()
    }
}

impl ToSchema for IpAddress {}

/// Bans an address; the ban as listed afterwards.
pub async fn add_ban(core: &Core, ban: NewBan, actor: &Actor) -> Result<BanRow, ManageError> {
    let ip = crate::guard::parse_address(&ban.address)
        .ok_or_else(|| ManageError::bad("address", "not an IPv4 or IPv6 address"))?;
    let duration_ms = ban
        .duration_ms
        .unwrap_or(core.config.bans.default_duration_ms);
    if !(1..=MAX_BAN_MS).contains(&duration_ms) {
        return Err(ManageError::bad(
            "duration_ms",
            format!("must be from 1 to {MAX_BAN_MS} (ten years)"),
        ));
    }
    let reason = ban
        .reason
        .unwrap_or_else(|| "banned by an operator".to_owned());
    if reason.chars().count() > MAX_REASON_CHARS {
        return Err(ManageError::bad(
            "reason",
            format!("longer than {MAX_REASON_CHARS} characters"),
        ));
    }
    if reason.chars().any(char::is_control) {
        return Err(ManageError::bad("reason", "contains control characters"));
    }
    let now = now_ms();
    let key = core.guard.describe(core.guard.key(ip));
    match core.guard.ban(ip, duration_ms, "operator", &reason, now) {
        BanOutcome::Exempt => Err(ManageError::Refused {
            field: "address".into(),
            problem: format!("{key} is exempt from bans (bans.never_ban, or trusted by a plugin)"),
        }),
        BanOutcome::Banned(write) => {
            Stats::inc(&core.stats.bans_added);
            tracing::warn!(address = %key, duration_ms, reason = %reason, by = %actor, "banned by an operator");
            // The row from the write itself: a short ban may be over already.
            let row = match write.as_ref() {
                Write::UpsertBan(b) => BanRow {
                    address: b.address.clone(),
                    by: b.by.clone(),
                    reason: b.reason.clone(),
                    created_ms: b.created_ms,
                    until_ms: b.until_ms,
                    dropped: 0,
                    in_kernel: false,
                },
                other => return Err(ManageError::Internal(format!("unexpected {other:?}"))),
            };
            core.store
                .write(vec![*write])
                .await
                .map_err(|e| ManageError::Internal(e.to_string()))?;
            Ok(row)
        }
    }
}

/// Lifts the ban covering `address`; the ban key that was lifted.
pub async fn unban(core: &Core, address: &str, actor: &Actor) -> Result<String, ManageError> {
    let ip = crate::guard::parse_address(address)
        .ok_or_else(|| ManageError::bad("address", "not an IPv4 or IPv6 address"))?;
    let key = core.guard.describe(core.guard.key(ip));
    let write = core
        .guard
        .unban(ip)
        .ok_or_else(|| ManageError::NotFound(format!("{key} is not banned")))?;
    tracing::warn!(address = %key, by = %actor, "unbanned");
    core.store
        .write(vec![write])
        .await
        .map_err(|e| ManageError::Internal(e.to_string()))?;
    Ok(key)
}

// ---------------------------------------------------------------------------
// Registrations

/// One registration (binding), as listed.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, ToSchema)]
pub struct RegistrationRow {
    /// The tenant's domain, "" for the default tenant.
    pub tenant: String,
    pub extension: String,
    /// What identifies the binding within the extension (`+sip.instance`
    /// with reg-id, else the contact URI): the `{key}` that removes it.
    #[serde(default)]
    pub key: String,
    pub contact: String,
    /// Where the REGISTER came from ("ip:port").
    pub source: String,
    /// "UDP" or "TCP".
    pub transport: String,
    /// Seconds until the binding expires.
    pub expires_in_s: u64,
    pub user_agent: Option<String>,
}

/// Which registrations to list: every condition given must hold.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RegistrationFilter {
    /// Tenant domain; "" for the default tenant.
    pub tenant: Option<String>,
    pub extension: Option<String>,
}

/// The current registrations that `filter` selects.
pub fn registrations(core: &Core, filter: &RegistrationFilter) -> Vec<RegistrationRow> {
    let now = now_ms();
    core.registrar
        .location
        .all(now)
        .into_iter()
        .filter(|(aor, _)| {
            filter.tenant.as_deref().is_none_or(|t| aor.tenant == t)
                && filter
                    .extension
                    .as_deref()
                    .is_none_or(|e| aor.extension == e)
        })
        .map(|(aor, b)| RegistrationRow {
            key: b.key().to_owned(),
            tenant: aor.tenant,
            extension: aor.extension,
            contact: b.contact.to_string(),
            source: b.source.to_string(),
            transport: b.transport.as_str().to_owned(),
            expires_in_s: b.expires_at_ms.saturating_sub(now).div_ceil(1000),
            user_agent: b.user_agent.as_deref().map(str::to_owned),
        })
        .collect()
}

/// Removes one binding, through the registrar: from memory and, committed,
/// from the database. The phone's next REGISTER creates it again.
pub async fn remove_binding(
    core: &Core,
    tenant: &str,
    extension: &str,
    key: &str,
    actor: &Actor,
) -> Result<(), ManageError> {
    let aor = Aor {
        tenant: tenant.to_owned(),
        extension: extension.to_owned(),
    };
    let write = core.registrar.remove(&aor, key, now_ms()).ok_or_else(|| {
        ManageError::NotFound(format!(
            "no binding {key:?} of extension {extension:?} in tenant {tenant:?}"
        ))
    })?;
    tracing::warn!(tenant, extension, key, by = %actor, "binding removed");
    core.store
        .write(vec![write])
        .await
        .map_err(|e| ManageError::Internal(e.to_string()))
}

// ---------------------------------------------------------------------------
// Provisioning (read-only: it lives in the config file)

/// One extension of the config (its password is never shown).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, ToSchema)]
pub struct ExtensionRow {
    /// The tenant's domain, "" for the default tenant.
    pub tenant: String,
    pub number: String,
    pub display_name: Option<String>,
    /// Whether the password is in the config; false: generated on first
    /// start and shown once in the log.
    pub password_configured: bool,
    /// Contacts it may register (its own or `registrar.max_contacts`).
    pub max_contacts: usize,
    /// How long it rings (its own or `calls.ring_time_ms`).
    pub ring_time_ms: u64,
    /// Where an unanswered call goes; none: 480.
    pub no_answer: Option<String>,
    /// Current bindings (registered devices).
    pub registered: usize,
}

/// Every extension of every tenant, in config order.
pub fn extensions(core: &Core) -> Vec<ExtensionRow> {
    let config = &core.config;
    let now = now_ms();
    let mut rows = Vec::new();
    for tenant in &config.tenants {
        let key = tenant_key(tenant);
        for ext in &tenant.extensions {
            let aor = Aor {
                tenant: key.to_owned(),
                extension: ext.number.clone(),
            };
            rows.push(ExtensionRow {
                tenant: key.to_owned(),
                number: ext.number.clone(),
                display_name: ext.display_name.clone(),
                password_configured: ext.password.is_some(),
                max_contacts: ext.max_contacts.unwrap_or(config.registrar.max_contacts),
                ring_time_ms: ext.ring_time_ms.unwrap_or(config.calls.ring_time_ms),
                no_answer: ext.no_answer.clone(),
                registered: core.registrar.location.lookup(&aor, now).len(),
            });
        }
    }
    rows
}

/// One ring group of the config.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, ToSchema)]
pub struct RingGroupRow {
    /// The tenant's domain, "" for the default tenant.
    pub tenant: String,
    pub number: String,
    /// "ring-all" or "hunt".
    pub strategy: String,
    /// Extension numbers, in hunt order.
    pub members: Vec<String>,
    /// Hunt: how long each member rings.
    pub member_timeout_ms: u64,
    /// How long the group rings (its own or `calls.ring_time_ms`).
    pub ring_time_ms: u64,
}

/// One SIP trunk of the config.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, ToSchema)]
pub struct TrunkRow {
    /// The tenant's domain, "" for the default tenant.
    pub tenant: String,
    /// Named by number-analysis rules and in CDRs ("trunk:1").
    pub id: String,
    pub description: Option<String>,
    /// Where calls to the trunk go, "IP:port" (UDP).
    pub address: String,
    /// Sources whose requests are this trunk's traffic ("IP", "IP:port" or a network).
    pub trusted_from: Vec<String>,
}

/// Every trunk of every tenant, in config order.
pub fn trunks(core: &Core) -> Vec<TrunkRow> {
    let mut rows = Vec::new();
    for tenant in &core.config.tenants {
        for trunk in &tenant.trunks {
            rows.push(TrunkRow {
                tenant: tenant_key(tenant).to_owned(),
                id: trunk.id.clone(),
                description: trunk.description.clone(),
                address: trunk.address.to_string(),
                trusted_from: trunk
                    .trusted_from
                    .iter()
                    .map(|s| match s.port {
                        Some(port) => format!("{}:{port}", s.net.addr()),
                        None => s.net.to_string(),
                    })
                    .collect(),
            });
        }
    }
    rows
}

/// Every ring group of every tenant, in config order.
pub fn ring_groups(core: &Core) -> Vec<RingGroupRow> {
    let config = &core.config;
    let mut rows = Vec::new();
    for tenant in &config.tenants {
        for group in &tenant.ring_groups {
            rows.push(RingGroupRow {
                tenant: tenant_key(tenant).to_owned(),
                number: group.number.clone(),
                strategy: match group.strategy {
                    crate::config::Strategy::RingAll => "ring-all",
                    crate::config::Strategy::Hunt => "hunt",
                }
                .to_owned(),
                members: group.members.clone(),
                member_timeout_ms: group.member_timeout_ms,
                ring_time_ms: group.ring_time_ms.unwrap_or(config.calls.ring_time_ms),
            });
        }
    }
    rows
}

// ---------------------------------------------------------------------------
// Call detail records

/// The call detail records `filter` selects, newest first, read on a
/// blocking thread with a read-only connection (the writer is not held up).
/// An empty time range selects nothing.
pub async fn cdrs(core: &Core, filter: CdrFilter) -> Result<Vec<Cdr>, ManageError> {
    let store = core.store.clone();
    blocking(move || {
        let conn = store.reader()?;
        crate::store::load_cdrs(&conn, &filter)
    })
    .await
}

// ---------------------------------------------------------------------------
// Voicemail and mail

/// Recorded messages, newest first: a mailbox's (of `tenant`, "" for the
/// default one) or every one; at most `limit`.
pub async fn voicemails(
    core: &Core,
    tenant: String,
    mailbox: Option<String>,
    limit: usize,
) -> Result<Vec<StoredVoicemail>, ManageError> {
    let store = core.store.clone();
    blocking(move || {
        let conn = store.reader()?;
        crate::store::load_voicemails(&conn, &tenant, mailbox.as_deref(), limit)
    })
    .await
}

/// One message and its WAV file's bytes.
pub async fn voicemail_audio(
    core: &Core,
    id: u64,
) -> Result<(StoredVoicemail, Vec<u8>), ManageError> {
    let store = core.store.clone();
    let message = blocking(move || {
        let conn = store.reader()?;
        crate::store::voicemail(&conn, id)
    })
    .await?
    .ok_or_else(|| ManageError::NotFound(format!("no voicemail {id}")))?;
    let bytes = tokio::fs::read(&message.file)
        .await
        .map_err(|e| ManageError::Internal(format!("{}: {e}", message.file)))?;
    Ok((message, bytes))
}

/// The mail queue, newest first.
pub async fn mail_queue(core: &Core, limit: usize) -> Result<Vec<MailSummary>, ManageError> {
    let queue = core.mailer.queue().clone();
    blocking(move || queue.list(limit)).await
}

/// Tries mail `id` again now (a failed one, or a queued one before its time).
pub async fn retry_mail(core: &Core, id: i64, actor: &Actor) -> Result<(), ManageError> {
    let queue = core.mailer.queue().clone();
    let done = tokio::task::spawn_blocking(move || queue.retry_now(id))
        .await
        .map_err(|e| ManageError::Internal(e.to_string()))?;
    match done {
        Ok(()) => {
            core.mailer.notify();
            tracing::warn!(mail = id, by = %actor, "mail retry requested");
            Ok(())
        }
        Err(MailError::NotFound(_)) => Err(ManageError::NotFound(format!("no mail {id}"))),
        Err(MailError::AlreadySent(_)) => Err(ManageError::Refused {
            field: "id".into(),
            problem: format!("mail {id} was sent already"),
        }),
        Err(e) => Err(ManageError::Internal(e.to_string())),
    }
}

/// Runs a database read off the async threads; its failure is ours.
async fn blocking<T: Send + 'static, E: fmt::Display + Send + 'static>(
    f: impl FnOnce() -> Result<T, E> + Send + 'static,
) -> Result<T, ManageError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ManageError::Internal(e.to_string()))?
        .map_err(|e| ManageError::Internal(e.to_string()))
}

// ---------------------------------------------------------------------------
// Plugins and counters

/// The plugins of the chain in order, with counters, latency and health.
pub fn plugins(core: &Core) -> Vec<PluginStats> {
    core.chain.read().unwrap().stats()
}

/// Reloads the chain from the config file; the names of the new chain. On
/// failure the old chain stays.
pub async fn reload_plugins(
    core: &Arc<Core>,
    plugins: &Arc<Plugins>,
    actor: &Actor,
) -> Result<Vec<String>, ManageError> {
    tracing::info!(by = %actor, "plugin chain reload requested");
    reload_chain(core, plugins)
        .await
        .map_err(ManageError::Internal)
}

/// Every gateway counter by name.
pub fn stats(core: &Core) -> BTreeMap<&'static str, u64> {
    let mut counters: BTreeMap<&'static str, u64> = core.stats.snapshot().into_iter().collect();
    // Gauges beside the counters: calls ringing and calls up now.
    let (ringing, up) = core.proxy.counts();
    counters.insert("calls_in_setup", ringing as u64);
    counters.insert("calls_up", up as u64);
    counters
}
