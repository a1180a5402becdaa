//! The plugin runtime: WebAssembly component plugins, loaded with wasmtime
//! and run sandboxed, decide about requests before the registrar sees them.
//!
//! ## Tour
//! - The contract is `wit/sipfence.wit` (package `sipfence:plugin@0.6.0`).
//!   [`bindings`] is the only `bindgen!` call site; [`conversions`] turns its
//!   types into the plain Rust types of this module ([`Verdict`], [`Event`],
//!   [`Reaction`], [`RequestView`]), so WIT types never reach the gateway.
//! - [`PluginEngine`] (in `runtime`): one wasmtime engine per process, with
//!   epoch interruption (a thread ticks the epoch while a call runs).
//! - [`Chain`] (in `chain`): the configured plugins in order, loaded from
//!   [`PluginSpec`]s. Immutable once loaded and shared as `Arc<Chain>`; a
//!   config reload builds a new one. [`Chain::on_request`] runs the plugins
//!   with an `on-request` hook until one returns something other than
//!   [`Verdict::Continue`]; [`Chain::on_event`] tells every plugin that asked for
//!   that kind of event ([`EventKind`]) what happened and collects their
//!   reactions; [`Chain::hears`] says whether any did, so the gateway
//!   builds no event nobody hears;
//!   [`Chain::route`] asks the plugins with a `route` hook where a new call
//!   goes, until one has an opinion ([`RouteDecision`]).
//! - Sandbox, per call: a memory cap, an epoch deadline, no WASI (every WASI
//!   import a guest's standard library pulls in traps when called). A trap,
//!   timeout or out-of-memory is logged and counted, the instance is thrown
//!   away (a trapped instance cannot be entered again), and the plugin's
//!   [`OnError`] policy decides the call. A plugin that keeps failing is
//!   restarted with exponential backoff; meanwhile its policy answers every
//!   call, so making a fail-closed plugin trap never switches it off.
//! - Instances are pooled per plugin (in `pool`): each calling thread keeps
//!   the one it used in its own slot, the rest wait in a shared list; a call
//!   creates one when there is none (45–90 µs plus the plugin's `init`) — a
//!   call itself is ~0.2 µs (docs/PERFORMANCE.md).
//! - Capabilities (in `capabilities`): `log`, `clock` and the request getters
//!   always; `counter` and `kv` only with `grants = ["counter"]` / `["kv"]`.
//!   A plugin importing what it was not granted does not load.
//! - [`SharedState`] (in `state`): the host side of `counter` and `kv`, kept
//!   per plugin name, shared by every instance and every reloaded chain.
//! - Built-in plugins (`path = "builtin:NAME"`) are wasm components embedded
//!   in the binary by `host/build.rs` (see [`builtin`]).

mod bindings;
pub mod builtin;
mod capabilities;
mod chain;
mod conversions;
mod imports;
mod pool;
mod promises;
mod repeats;
mod runtime;
pub mod state;

/// Tiny WAT plugins for tests, here and in the end-to-end tests of `tests/`.
pub mod testing;
#[cfg(test)]
mod tests;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use crate::cdr::Cdr;
use crate::sip::{Message, NameAddr};
use crate::transport::Transport;

pub use crate::config::{Grant, OnError, PluginSource, PluginSpec};
pub use chain::{Chain, PluginHealth, PluginStats};
pub use runtime::{EngineOptions, PluginEngine, RestartPolicy};
pub use state::{PluginState, SharedState, StateLimits};

/// What a plugin decided about a request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// No objection: the next plugin decides, then the gateway goes on.
    Continue,
    /// Answer with this SIP status (400–699; the reason is one line).
    Reject { code: u16, reason: String },
    /// Drop silently: no answer at all.
    Drop,
    /// Ban the request's source address, and drop the request.
    Ban { duration: Duration, reason: String },
    /// A device trusted by its address: no REGISTER, no digest needed. The
    /// gateway must check that the extension exists in that tenant.
    Trust { tenant: String, extension: String },
}

/// Something that happened after the chain let a request through.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    AuthFailed {
        attempt: AuthAttempt,
        failure: AuthFailure,
    },
    AuthSucceeded(AuthAttempt),
    Registered(Registration),
    Unregistered(Registration),
    /// The router accepted a call.
    CallStarted(CallStarted),
    /// A call ended: its record as stored, and where the caller's INVITE
    /// came from (the CDR keeps that only as text).
    CallEnded {
        cdr: Cdr,
        source: SocketAddr,
        transport: Transport,
    },
    /// The gateway recorded a voicemail message; the source is the caller's.
    VoicemailRecorded {
        voicemail: Voicemail,
        source: SocketAddr,
    },
}

/// The kinds of event a plugin asks for in its `hooks` (one flag each): a
/// plugin's `on-event` hears only those.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    /// `auth-failed`, `auth-succeeded`.
    Auth,
    /// `registered`, `unregistered`.
    Registration,
    /// `call-started`, `call-ended`.
    Call,
    /// `voicemail-recorded`.
    Voicemail,
}

impl EventKind {
    pub const ALL: [EventKind; 4] = [
        EventKind::Auth,
        EventKind::Registration,
        EventKind::Call,
        EventKind::Voicemail,
    ];

    /// Its position in [`EventKind::ALL`].
    pub(crate) fn index(self) -> usize {
        self as usize
    }
}

impl Event {
    pub fn kind(&self) -> EventKind {
        match self {
            Event::AuthFailed { .. } | Event::AuthSucceeded(_) => EventKind::Auth,
            Event::Registered(_) | Event::Unregistered(_) => EventKind::Registration,
            Event::CallStarted(_) | Event::CallEnded { .. } => EventKind::Call,
            Event::VoicemailRecorded { .. } => EventKind::Voicemail,
        }
    }

    /// The address the event is about (a [`Reaction::Ban`] bans it): for a
    /// call, the caller's.
    pub fn source(&self) -> SocketAddr {
        match self {
            Event::AuthFailed { attempt, .. } | Event::AuthSucceeded(attempt) => attempt.source,
            Event::Registered(r) | Event::Unregistered(r) => r.source,
            Event::CallStarted(c) => c.source,
            Event::CallEnded { source, .. } | Event::VoicemailRecorded { source, .. } => *source,
        }
    }
}

/// A recorded voicemail message, as plugins hear of it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Voicemail {
    /// The row id: a plugin names it to attach the recording to a mail.
    pub id: u64,
    /// "" for the default tenant.
    pub tenant: String,
    /// The extension whose mailbox it is.
    pub mailbox: String,
    /// The mailbox owner's address, if configured.
    pub email: Option<String>,
    pub caller: String,
    pub caller_name: Option<String>,
    pub call_id: String,
    pub received_ms: u64,
    pub duration_ms: u64,
    /// The WAV file's name, without its folder.
    pub file_name: String,
}

/// A mail a plugin asks the host to send (`mail.send`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PluginMail {
    pub to: Vec<String>,
    /// None: the gateway's configured sender.
    pub from: Option<String>,
    pub subject: String,
    pub body: String,
    /// Attach this voicemail's recording.
    pub voicemail: Option<u64>,
}

/// Where `mail.send` hands mail: the gateway's SMTP queue. Ok is the
/// mail's Message-ID; Err says why it was refused. Called on the plugin's
/// thread, which is never a request thread (events run off the hot path).
pub trait MailService: Send + Sync {
    fn send(&self, plugin: &str, mail: PluginMail) -> Result<String, String>;
}

/// A call the router accepted: an authenticated initial INVITE for an
/// extension or ring group of its tenant.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CallStarted {
    pub call_id: String,
    /// "" for the default tenant.
    pub tenant: String,
    /// The calling extension.
    pub caller: String,
    /// The number dialled.
    pub callee: String,
    /// Where the caller's INVITE came from.
    pub source: SocketAddr,
    pub transport: Transport,
    pub user_agent: Option<String>,
    /// What the number was routed to ("extension:200", "ring-group:500").
    pub route: String,
}

/// Who tried to authenticate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuthAttempt {
    pub source: SocketAddr,
    pub transport: Transport,
    /// "" for the default tenant.
    pub tenant: String,
    /// The digest username.
    pub user: String,
    pub user_agent: Option<String>,
}

/// How a digest authentication failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AuthFailure {
    /// A fresh nonce of ours, the right user, the wrong password.
    WrongPassword,
    /// A fresh nonce of ours, a user that does not exist.
    UnknownUser,
    /// The digest username is not the extension the request is for.
    UserMismatch,
    /// The digest realm is not the tenant's.
    RealmMismatch,
}

/// A registration binding that was added, refreshed or removed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Registration {
    pub source: SocketAddr,
    /// "" for the default tenant.
    pub tenant: String,
    pub extension: String,
    pub contact: String,
}

/// What a plugin asks for in answer to an event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reaction {
    None,
    /// Ban the event's source address ([`Event::source`]).
    Ban {
        duration: Duration,
        reason: String,
    },
}

/// A new call, as the `route` hook sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CallInfo {
    /// "" for the default tenant.
    pub tenant: String,
    /// The calling extension, or for a trunk call the From user.
    pub caller: String,
    /// The number dialled.
    pub called: String,
    pub source: SocketAddr,
    pub transport: Transport,
    /// The trunk the call came in from, if it did.
    pub from_trunk: Option<String>,
}

/// Where a plugin sends a new call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RouteDecision {
    /// The next plugin decides; none: the built-in lookup.
    NoOpinion,
    Extension(String),
    RingGroup(String),
    Trunk {
        id: String,
        /// The number sent to the peer.
        number: String,
        /// A call from a trunk may leave through this one.
        allow_from_trunk: bool,
    },
    Voicemail(String),
    Reject {
        code: u16,
        reason: String,
    },
}

/// What the gateway knows about a request besides the message itself.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestInfo {
    /// The tenant domain the request is for; "" for the default tenant.
    pub tenant: String,
    /// Where it came from (as seen on the wire).
    pub source: SocketAddr,
    pub transport: Transport,
    /// The source address is proven: TCP, or a digest nonce the gateway
    /// issued to this very address. A UDP source alone can be spoofed.
    pub source_verified: bool,
    /// The digest username of the (Proxy-)Authorization header, if any.
    pub auth_user: Option<String>,
}

/// What the host hands the chain for one request: the parsed message and
/// what the gateway knows about it. Cheap to clone (one `Arc`): each plugin
/// call puts a clone in the store's resource table for the duration of the
/// call. The getters behind the WIT `request` resource are computed from the
/// message on demand; From and To are parsed at most once per request.
#[derive(Clone, Debug)]
pub struct RequestView(Arc<ViewInner>);

#[derive(Debug)]
struct ViewInner {
    message: Arc<Message>,
    info: RequestInfo,
    /// Parsed on first use, shared by every plugin of the chain.
    from: OnceLock<Option<NameAddr>>,
    to: OnceLock<Option<NameAddr>>,
}

impl RequestView {
    pub fn new(message: impl Into<Arc<Message>>, info: RequestInfo) -> RequestView {
        RequestView(Arc::new(ViewInner {
            message: message.into(),
            info,
            from: OnceLock::new(),
            to: OnceLock::new(),
        }))
    }

    pub fn message(&self) -> &Message {
        &self.0.message
    }

    pub fn info(&self) -> &RequestInfo {
        &self.0.info
    }

    /// The From header, parsed (None when missing or malformed).
    pub fn from(&self) -> Option<&NameAddr> {
        self.0
            .from
            .get_or_init(|| self.0.message.from().ok())
            .as_ref()
    }

    /// The To header, parsed (None when missing or malformed).
    pub fn to(&self) -> Option<&NameAddr> {
        self.0.to.get_or_init(|| self.0.message.to().ok()).as_ref()
    }

    /// The method, e.g. "REGISTER" ("" for a response, which never gets here).
    pub fn method(&self) -> &str {
        self.0.message.method().map_or("", |m| m.as_str())
    }

    /// The first value of the first Contact line, as written.
    pub fn contact(&self) -> Option<&str> {
        let line = self.0.message.headers.get("Contact")?;
        crate::sip::split_list(line).into_iter().next()
    }
}

/// Why a plugin could not be loaded. Every variant names the plugin.
#[derive(Debug, thiserror::Error)]
pub enum PluginError {
    /// The plugin's `.wasm` file could not be read.
    #[error("plugin \"{plugin}\": cannot read {}: {source}", .path.display())]
    Read {
        plugin: String,
        path: PathBuf,
        source: std::io::Error,
    },

    /// `builtin:NAME` names a built-in plugin this binary was built without.
    #[error("plugin \"{plugin}\": built-in plugin not in this build (run cargo xtask run/test, which builds plugins first)")]
    BuiltinMissing { plugin: String },

    /// `builtin:NAME` names no built-in plugin at all.
    #[error("plugin \"{plugin}\": no built-in plugin \"{builtin}\" (built-ins: {known})")]
    UnknownBuiltin {
        plugin: String,
        builtin: String,
        known: String,
    },

    /// The bytes are not a WebAssembly component (a core module, or not wasm).
    #[error("plugin \"{plugin}\": not a WebAssembly component ({what})")]
    NotAComponent { plugin: String, what: &'static str },

    /// wasmtime refused to compile the component.
    #[error("plugin \"{plugin}\": cannot compile: {message}")]
    Compile { plugin: String, message: String },

    /// The component imports a capability its config does not grant.
    #[error(
        "plugin \"{plugin}\": imports {import} but is not granted \"{grant}\" (add it to grants)"
    )]
    NotGranted {
        plugin: String,
        import: String,
        grant: &'static str,
    },

    /// The component imports an interface the gateway does not provide.
    #[error("plugin \"{plugin}\": imports {import}, which sipfence does not provide (it provides sipfence:plugin@0.6.0; WASI imports are linked as traps)")]
    UnknownImport { plugin: String, import: String },

    /// The component does not fit the `plugin` world (exports missing or of
    /// the wrong type, imports of the wrong type).
    #[error("plugin \"{plugin}\": does not implement the sipfence plugin world: {message}")]
    Link { plugin: String, message: String },

    /// Creating the first instance or its `init` failed (the plugin's own
    /// error text, or the trap).
    #[error("plugin \"{plugin}\": init failed: {message}")]
    Init { plugin: String, message: String },

    /// Calling `hooks` failed.
    #[error("plugin \"{plugin}\": hooks failed: {message}")]
    Hooks { plugin: String, message: String },

    /// Two plugins of one chain with the same name (the config refuses this
    /// already; a chain built by code is checked too).
    #[error("plugin \"{plugin}\": listed twice")]
    Duplicate { plugin: String },

    /// The wasmtime engine could not be set up.
    #[error("plugin engine: {message}")]
    Engine { message: String },
}
