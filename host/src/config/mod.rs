//! The configuration: one TOML file configures everything.
//!
//! The built-in default is `config/sipfence.toml` (embedded, see
//! [`Config::embedded_default`]); it doubles as the reference of every key.
//! Every table refuses unknown keys and every optional key has a default.
//! Timers are milliseconds (`*_ms`), SIP Expires values seconds (`*_s`).
//!
//! Errors ([`ConfigError`]) name the file, the line and the dotted key path:
//! `config/x.toml:12: server.listen[1]: invalid socket address "127.0.0.1:99999"`.
//!
//! Tenants: top-level `[[extension]]` entries belong to the *default tenant*
//! (single-domain setups), which serves requests addressed to IP literals,
//! `localhost` and `server.aliases`. `[[tenant]]` entries are named tenants
//! with their own domain, aliases and `[[tenant.extension]]` entries.

mod error;
mod parse;
#[cfg(test)]
mod tests;

use std::fmt;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};

use ipnet::IpNet;
use serde::Deserialize;

pub use error::{ConfigError, Location};

/// The text of the embedded default configuration.
pub const EMBEDDED_DEFAULT_TOML: &str = include_str!("../../../config/sipfence.toml");

/// The origin shown in messages about the embedded default.
pub const EMBEDDED_ORIGIN: &str = "<embedded default>";

/// The whole configuration, validated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    pub server: Server,
    pub tcp: Tcp,
    pub stun: Stun,
    pub transaction: Transaction,
    pub registrar: Registrar,
    pub auth: Auth,
    pub storage: Storage,
    pub log: Log,
    pub calls: Calls,
    pub nat: Nat,
    pub api: Api,
    pub voicemail: Voicemail,
    pub mail: Mail,
    /// Normalised: the default tenant (if any) first, then [[tenant]] entries.
    pub tenants: Vec<Tenant>,
    pub bans: Bans,
    /// `[[plugin]]` entries in chain order, disabled ones included (they are
    /// validated too). No entry: no plugins.
    pub plugins: Vec<PluginSpec>,
    /// Where it came from, for messages ("<embedded default>" for the built-in one).
    pub origin: String,
}

/// `[server]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Server {
    /// `listen`: each address serves UDP and TCP. Non-empty, no duplicates
    /// (port 0, "any free port", may repeat).
    pub listen: Vec<SocketAddr>,
    /// The Server/User-Agent header value.
    pub user_agent: String,
    /// Digest realm of the default tenant.
    pub realm: String,
    /// Extra host names (lowercased) the default tenant answers for, besides
    /// IP literals and "localhost".
    pub aliases: Vec<String>,
    /// Unix socket of the control interface.
    pub control_socket: PathBuf,
    /// Threads receiving and handling SIP per UDP address, 0 = one per two CPUs.
    pub workers: usize,
    /// Largest SIP message accepted (at least 1500).
    pub max_message_bytes: usize,
    /// SO_RCVBUF wish for the UDP sockets.
    pub udp_recv_buffer_bytes: usize,
}

impl Default for Server {
    fn default() -> Self {
        Server {
            listen: vec![
                SocketAddr::from(([127, 0, 0, 1], 5060)),
                SocketAddr::from((Ipv6Addr::LOCALHOST, 5060)),
            ],
            user_agent: "sipfence".to_owned(),
            realm: "sipfence".to_owned(),
            aliases: Vec::new(),
            control_socket: PathBuf::from("sipfence.sock"),
            workers: 0,
            max_message_bytes: 65535,
            udp_recv_buffer_bytes: 4 * 1024 * 1024,
        }
    }
}

/// `[api]`: the HTTP management API (see `crate::api`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Api {
    /// Whether the API (and `/metrics` and the web view) is served at all.
    pub enabled: bool,
    /// Address of the HTTP listener; loopback by default (port 0: any free
    /// port, logged as `api listening`).
    pub listen: SocketAddr,
    /// The bearer token; None: generated on first start, stored in the
    /// database and shown once in the log.
    pub token: Option<String>,
    /// Serve HTTPS with this certificate chain and key (PEM files); None: HTTP.
    pub tls: Option<TlsFiles>,
}

/// A certificate chain and its private key, PEM files (relative paths are
/// relative to the config file's folder).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl Default for Api {
    fn default() -> Self {
        Api {
            enabled: true,
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            token: None,
            tls: None,
        }
    }
}

/// `[tcp]`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Tcp {
    /// Open TCP connections in total (at least 1).
    pub max_connections: usize,
    /// Open TCP connections per source IP address (at least 1; the total
    /// limit applies as well).
    pub max_connections_per_source: usize,
    /// A connection without traffic for this long is closed (at least 1).
    pub idle_timeout_ms: u64,
}

impl Default for Tcp {
    fn default() -> Self {
        Tcp {
            max_connections: 4096,
            max_connections_per_source: 32,
            idle_timeout_ms: 300_000,
        }
    }
}

/// `[stun]`: the standalone STUN listener. STUN on the SIP UDP port needs
/// no configuration: it is always answered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stun {
    /// `listen`: each address serves UDP and TCP; empty turns the listener
    /// off. No duplicates (port 0 may repeat).
    pub listen: Vec<SocketAddr>,
}

impl Default for Stun {
    fn default() -> Self {
        Stun {
            listen: vec![
                SocketAddr::from(([127, 0, 0, 1], 3478)),
                SocketAddr::from((Ipv6Addr::LOCALHOST, 3478)),
            ],
        }
    }
}

/// `[transaction]`: RFC 3261 17.1.1.1 timers. `1 <= t1_ms <= t2_ms`; `t4_ms`
/// may be 0.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Transaction {
    /// RTT estimate.
    pub t1_ms: u64,
    /// Maximum retransmit interval for non-INVITE requests and INVITE responses.
    pub t2_ms: u64,
    /// Maximum duration a message remains in the network.
    pub t4_ms: u64,
    /// How long a finished non-INVITE server transaction over UDP keeps its
    /// answer for retransmissions (Timer J). RFC 3261 says 64*T1 (32 s);
    /// like Kamailio's wait timer we default to 5 s: a client stops
    /// retransmitting once an answer reaches it, and a late copy is simply
    /// handled again (a REGISTER gets a fresh challenge). At 32 s a busy
    /// registrar holds six times more finished transactions in memory.
    pub timer_j_ms: u64,
}

impl Default for Transaction {
    fn default() -> Self {
        Transaction {
            t1_ms: 500,
            t2_ms: 4000,
            t4_ms: 5000,
            timer_j_ms: 5000,
        }
    }
}

/// `[registrar]`: `min_expires_s <= default_expires_s <= max_expires_s`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Registrar {
    /// Shorter requested expirations get 423 Interval Too Brief.
    pub min_expires_s: u32,
    /// Longer requested expirations are shortened to this.
    pub max_expires_s: u32,
    /// Used when the REGISTER carries no expiration.
    pub default_expires_s: u32,
    /// Contacts per extension unless the extension overrides (at least 1).
    pub max_contacts: usize,
}

impl Default for Registrar {
    fn default() -> Self {
        Registrar {
            min_expires_s: 60,
            max_expires_s: 3600,
            default_expires_s: 3600,
            max_contacts: 3,
        }
    }
}

/// `[auth]`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Auth {
    /// How long a nonce is accepted (at least 1).
    pub nonce_lifetime_ms: u64,
    /// Digest algorithms in offer order; non-empty, no duplicates.
    pub algorithms: Vec<AuthAlgorithm>,
}

impl Default for Auth {
    fn default() -> Self {
        Auth {
            nonce_lifetime_ms: 300_000,
            algorithms: vec![AuthAlgorithm::Sha256, AuthAlgorithm::Md5],
        }
    }
}

/// A digest algorithm (RFC 8760); TOML strings "MD5" / "SHA-256".
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Deserialize)]
pub enum AuthAlgorithm {
    #[serde(rename = "MD5")]
    Md5,
    #[serde(rename = "SHA-256")]
    Sha256,
}

impl AuthAlgorithm {
    /// The token as written in the config and in the `algorithm=` parameter.
    pub fn as_str(self) -> &'static str {
        match self {
            AuthAlgorithm::Md5 => "MD5",
            AuthAlgorithm::Sha256 => "SHA-256",
        }
    }
}

/// `[storage]`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Storage {
    /// The SQLite database file.
    pub database: PathBuf,
    /// SQLite `PRAGMA synchronous`.
    pub synchronous: Synchronous,
    /// Most writes per commit (at least 1).
    pub commit_batch_max: usize,
    /// Writes that end the commit delay early (at least 1): under load a
    /// commit leaves as soon as this many wait, so the 200 OKs it releases
    /// do not leave in one large burst.
    pub commit_group: usize,
    /// How long the writer waits for more writes to join a commit once the
    /// first has arrived, in microseconds (0: commit at once). Trades a little
    /// latency for far fewer commits under load, like PostgreSQL's commit_delay.
    pub commit_delay_us: u64,
    /// How often expired registrations are purged (at least 1).
    pub purge_interval_ms: u64,
}

impl Default for Storage {
    fn default() -> Self {
        Storage {
            database: PathBuf::from("sipfence.db"),
            synchronous: Synchronous::Normal,
            commit_batch_max: 512,
            commit_group: 16,
            commit_delay_us: 4_000,
            purge_interval_ms: 10_000,
        }
    }
}

/// SQLite `PRAGMA synchronous`: "normal" or "full".
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Synchronous {
    #[default]
    Normal,
    Full,
}

/// `[log]`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Log {
    pub format: LogFormat,
}

/// Log output: "text" or "json".
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// `[bans]`: the ban list that plugins' ban verdicts and reactions fill.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Bans {
    /// IPv6 sources are banned by this prefix (1-128): one host usually
    /// owns a whole /64.
    pub ipv6_prefix_len: u8,
    /// Networks never banned, whatever a plugin says. Empty by default:
    /// loopback is not exempt, so tests can exercise bans.
    pub never_ban: Vec<IpNet>,
    /// Duration of a ban that does not say (at least 1).
    pub default_duration_ms: u64,
    /// A banned source still sending after this many dropped packets is
    /// dropped by the kernel from then on (a socket filter), before the
    /// gateway reads its packets; 0 keeps every drop in the gateway.
    pub kernel_drop_after: u64,
}

impl Default for Bans {
    fn default() -> Self {
        Bans {
            ipv6_prefix_len: 64,
            never_ban: Vec::new(),
            default_duration_ms: 3_600_000,
            kernel_drop_after: 100,
        }
    }
}

/// `[[plugin]]`: one plugin of the chain.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PluginSpec {
    /// Unique in the config; 1-64 characters of `[A-Za-z0-9._-]`. Names the
    /// plugin in logs, errors and stats, and keys its counters (which
    /// survive reloads under the same name).
    pub name: String,
    /// `path`: `builtin:NAME` or a `.wasm` component file.
    pub source: PluginSource,
    /// What a failed call (trap, deadline, memory cap) counts as.
    pub on_error: OnError,
    /// Capabilities beyond `log` and `clock`; no duplicates.
    pub grants: Vec<Grant>,
    /// Linear memory cap per instance (at least 65536, one wasm page).
    pub memory_limit_bytes: u64,
    /// Deadline of one call (at least 1).
    pub timeout_ms: u64,
    /// A disabled plugin is validated but not loaded.
    pub enabled: bool,
    /// `[plugin.config]`, the plugin's own table, as JSON (`{}` when absent):
    /// passed to its `init`.
    pub config: serde_json::Value,
}

/// Where a plugin's component comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PluginSource {
    /// `builtin:NAME`: embedded in the binary.
    Builtin(String),
    /// A component file. [`Config::load`] makes a relative path relative to
    /// the config file's folder; [`Config::parse`] leaves it as written.
    File(PathBuf),
}

impl fmt::Display for PluginSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PluginSource::Builtin(name) => write!(f, "builtin:{name}"),
            PluginSource::File(path) => write!(f, "{}", path.display()),
        }
    }
}

/// A plugin's failure policy: "fail-open" or "fail-closed".
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum OnError {
    /// A failed call counts as `continue` (no objection).
    FailOpen,
    /// A failed call counts as `drop` (security plugins: an attacker who
    /// makes the plugin fail gains nothing).
    #[default]
    FailClosed,
}

impl OnError {
    pub fn as_str(self) -> &'static str {
        match self {
            OnError::FailOpen => "fail-open",
            OnError::FailClosed => "fail-closed",
        }
    }
}

/// A capability beyond `log` and `clock`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Grant {
    /// `sipfence:plugin/counter`: shared windowed counters.
    Counter,
    /// `sipfence:plugin/kv`: a shared key-value store with expiry.
    Kv,
    /// `sipfence:plugin/mail`: e-mail through the gateway's SMTP queue.
    Mail,
}

impl Grant {
    /// The name written in `grants`.
    pub fn as_str(self) -> &'static str {
        match self {
            Grant::Counter => "counter",
            Grant::Kv => "kv",
            Grant::Mail => "mail",
        }
    }
}

/// A tenant: a domain with its own extensions and digest realm.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tenant {
    /// None for the default tenant (the single-domain setup: top-level [[extension]] entries, no domain needed). It serves requests whose host is an IP literal, "localhost", or one of server.aliases.
    pub domain: Option<String>,
    /// Digest realm: the domain for named tenants, server.realm for the default tenant.
    pub realm: String,
    /// Lowercased extra host names; for the default tenant a copy of server.aliases.
    pub aliases: Vec<String>,
    pub extensions: Vec<Extension>,
    pub ring_groups: Vec<RingGroup>,
    /// `[[trunk]]` (default tenant) / `[[tenant.trunk]]`.
    pub trunks: Vec<Trunk>,
}

impl Tenant {
    /// The trunk with this id.
    pub fn trunk(&self, id: &str) -> Option<&Trunk> {
        self.trunks.iter().find(|t| t.id == id)
    }

    /// The first trunk whose `trusted_from` covers `source`: a request from
    /// there is that trunk's traffic.
    pub fn trunk_trusting(&self, source: SocketAddr) -> Option<&Trunk> {
        self.trunks
            .iter()
            .find(|t| t.trusted_from.iter().any(|s| s.matches(source)))
    }

    /// The ring group with this number.
    pub fn ring_group(&self, number: &str) -> Option<&RingGroup> {
        self.ring_groups.iter().find(|g| g.number == number)
    }

    /// The extension with this number (numbers are case-sensitive, like SIP user parts).
    pub fn extension(&self, number: &str) -> Option<&Extension> {
        self.extensions.iter().find(|e| e.number == number)
    }

    /// For messages: `tenant "a.example"` or `the default tenant`.
    pub fn describe(&self) -> String {
        match &self.domain {
            Some(domain) => format!("tenant \"{domain}\""),
            None => "the default tenant".to_owned(),
        }
    }
}

/// `[[extension]]` / `[[tenant.extension]]`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Extension {
    /// The extension "number": 1-32 chars of [A-Za-z0-9._-]; unique within a tenant.
    pub number: String,
    /// None -> the server generates a random one on first start, stores it and shows it once.
    pub password: Option<String>,
    pub display_name: Option<String>,
    /// Overrides registrar.max_contacts, >= 1.
    pub max_contacts: Option<usize>,
    /// Overrides calls.ring_time_ms, >= 1.
    pub ring_time_ms: Option<u64>,
    /// Where an unanswered call goes when the ring time is up: a number
    /// (extension or ring group of the same tenant) or "voicemail" (this
    /// extension's mailbox); None: 480.
    pub no_answer: Option<String>,
    /// Where a call goes when every device is busy (486/600): a number or
    /// "voicemail"; None: the caller hears busy.
    pub busy: Option<String>,
    /// Where a call goes when no device is registered: a number or
    /// "voicemail"; None: 480.
    pub unavailable: Option<String>,
    /// The mailbox owner's e-mail address, for the voicemail-mail plugin.
    pub email: Option<String>,
    /// This mailbox's greeting: a WAV file (8 kHz mono, 16-bit PCM or
    /// G.711); relative to the config file's folder. None: `[voicemail]
    /// greeting`, else the built-in one.
    pub greeting: Option<PathBuf>,
    /// A fixed address ("IP:port") the extension is always reachable at,
    /// without REGISTER: a static binding, for devices trusted by address
    /// (the ip-auth plugin) that never register.
    pub address: Option<SocketAddr>,
    /// How `address` is reached; only "udp" (the gateway opens no TCP
    /// connections).
    pub transport: Option<PeerTransport>,
}

/// How the gateway reaches a configured peer (a trunk, a static address):
/// "udp" or "tcp" in the file; only UDP is accepted for now.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PeerTransport {
    #[default]
    Udp,
    Tcp,
}

/// `[[trunk]]` / `[[tenant.trunk]]`: another SIP server (another office's
/// gateway, a carrier). Calls routed to it are sent to `address`; requests
/// from a `trusted_from` source are its traffic: no digest, routed by
/// number analysis.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Trunk {
    /// Unique within the tenant; 1-32 chars of [A-Za-z0-9._-]. Named by
    /// number-analysis rules and in CDRs ("trunk:1").
    pub id: String,
    pub description: Option<String>,
    /// Where calls to the trunk go (over UDP).
    pub address: SocketAddr,
    /// Sources whose requests are this trunk's traffic.
    pub trusted_from: Vec<TrustedSource>,
    /// Digest credentials the gateway answers the peer's 401/407 with.
    pub credentials: Option<Credentials>,
}

/// A user name and password the gateway authenticates itself with.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub username: String,
    pub password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Credentials {{ username: {:?}, password: <hidden> }}",
            self.username
        )
    }
}

/// One entry of `trusted_from`: "IP", "IP:port" or a CIDR network.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TrustedSource {
    pub net: IpNet,
    /// Only from this source port.
    pub port: Option<u16>,
}

impl TrustedSource {
    pub fn matches(&self, source: SocketAddr) -> bool {
        self.net.contains(&source.ip().to_canonical())
            && self.port.is_none_or(|p| p == source.port())
    }
}

/// `[calls]`: call routing timers.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Calls {
    /// How long an extension rings before the call ends with 480 (or goes
    /// to the extension's no_answer number).
    pub ring_time_ms: u64,
    /// A call whose BYE never comes is closed (BYE sent to both ends) after this.
    pub max_duration_ms: u64,
}

impl Default for Calls {
    fn default() -> Self {
        Calls {
            ring_time_ms: 30_000,
            max_duration_ms: 4 * 3_600_000,
        }
    }
}

/// The word that names a mailbox in `no_answer`, `busy` and `unavailable`.
pub const VOICEMAIL_TARGET: &str = "voicemail";

/// `[voicemail]`: the gateway answers unanswered calls itself and records
/// a message (see `crate::voicemail`).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Voicemail {
    /// Where recordings are stored (created when missing).
    pub dir: PathBuf,
    /// RTP ports, even ones from this range, one per recording.
    pub rtp_port_min: u16,
    pub rtp_port_max: u16,
    /// A message is cut at this length.
    pub max_length_ms: u64,
    /// A recording ends after this long without sound (or without packets).
    pub silence_timeout_ms: u64,
    /// Shorter recordings are discarded.
    pub min_length_ms: u64,
    /// Greeting of every mailbox without its own; None: the built-in one.
    pub greeting: Option<PathBuf>,
}

impl Default for Voicemail {
    fn default() -> Self {
        Voicemail {
            dir: PathBuf::from("voicemail"),
            rtp_port_min: 20_000,
            rtp_port_max: 20_999,
            max_length_ms: 120_000,
            silence_timeout_ms: 10_000,
            min_length_ms: 1_000,
            greeting: None,
        }
    }
}

/// How the SMTP connection is secured.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MailSecurity {
    /// Plain SMTP (port 25): only for a relay on a trusted network.
    None,
    /// SMTP upgraded with STARTTLS (port 587).
    #[default]
    Starttls,
    /// Implicit TLS (port 465).
    Tls,
}

/// `[mail]`: the system-wide SMTP server that plugins' mail goes through.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Mail {
    /// None: mail is queued but not sent until a server is set.
    pub smtp_host: Option<String>,
    /// None: 25, 587 or 465 by `security`.
    pub smtp_port: Option<u16>,
    pub security: MailSecurity,
    /// Login (both or neither).
    pub username: Option<String>,
    pub password: Option<String>,
    /// The sender of mails that name none.
    pub from: String,
    /// The name given in EHLO; None: this host's name.
    pub hello_name: Option<String>,
    /// The first retry after a failure; each next one waits twice as long.
    pub retry_initial_ms: u64,
    /// The longest wait between two attempts.
    pub retry_max_ms: u64,
    /// One SMTP session's time limit.
    pub timeout_ms: u64,
    /// Permanent (5xx) refusals before a mail is marked failed (it is kept).
    pub permanent_failure_attempts: u32,
}

impl Default for Mail {
    fn default() -> Self {
        Mail {
            smtp_host: None,
            smtp_port: None,
            security: MailSecurity::Starttls,
            username: None,
            password: None,
            from: "voicemail@localhost".to_owned(),
            hello_name: None,
            retry_initial_ms: 30_000,
            retry_max_ms: 3_600_000,
            timeout_ms: 30_000,
            permanent_failure_attempts: 5,
        }
    }
}

/// `[nat]`: phones behind NAT.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Nat {
    /// OPTIONS to a phone behind NAT that has sent nothing for this long
    /// (0: no pings).
    pub ping_interval_ms: u64,
    /// Pings left unanswered in a row before the binding is removed (>= 1).
    pub ping_failures: u32,
}

impl Default for Nat {
    fn default() -> Self {
        Nat {
            ping_interval_ms: 0,
            ping_failures: 3,
        }
    }
}

/// How a ring group rings its members.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Strategy {
    /// Every member at once; the first to answer gets the call.
    RingAll,
    /// One member after the other, each for member_timeout_ms.
    Hunt,
}

/// `[[ring_group]]` / `[[tenant.ring_group]]`: one number that rings several extensions.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RingGroup {
    /// Same rules as an extension number; must not be one.
    pub number: String,
    pub strategy: Strategy,
    /// Extension numbers of the same tenant, in hunt order.
    pub members: Vec<String>,
    /// Hunt: how long each member rings before the next one.
    #[serde(default = "default_member_timeout_ms")]
    pub member_timeout_ms: u64,
    /// Overrides calls.ring_time_ms for the whole group.
    pub ring_time_ms: Option<u64>,
}

fn default_member_timeout_ms() -> u64 {
    15_000
}

impl Config {
    /// The embedded default (include_str! of config/sipfence.toml); must always parse (unit test).
    pub fn embedded_default() -> Config {
        match Config::parse(EMBEDDED_DEFAULT_TOML, EMBEDDED_ORIGIN) {
            Ok(config) => config,
            Err(e) => panic!("the embedded default configuration is invalid: {e}"),
        }
    }

    /// Reads and parses a configuration file; messages name it as given.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let mut config = Config::parse(&text, &path.display().to_string())?;
        let folder = path.parent().unwrap_or(Path::new(""));
        if let Some(tls) = &mut config.api.tls {
            for file in [&mut tls.cert, &mut tls.key] {
                if file.is_relative() {
                    *file = folder.join(&*file);
                }
            }
        }
        let greetings = config
            .tenants
            .iter_mut()
            .flat_map(|t| t.extensions.iter_mut())
            .filter_map(|e| e.greeting.as_mut())
            .chain(config.voicemail.greeting.as_mut());
        for file in greetings {
            if file.is_relative() {
                *file = folder.join(&*file);
            }
        }
        for plugin in &mut config.plugins {
            if let PluginSource::File(file) = &mut plugin.source {
                if file.is_relative() {
                    *file = folder.join(&*file);
                }
            }
        }
        Ok(config)
    }

    /// Parses and validates configuration text; `origin` names it in messages.
    pub fn parse(text: &str, origin: &str) -> Result<Config, ConfigError> {
        parse::parse(text, origin)
    }

    /// The default tenant, if there is one.
    pub fn default_tenant(&self) -> Option<&Tenant> {
        self.tenants.iter().find(|t| t.domain.is_none())
    }

    /// The tenant that serves a request for `host` (already lowercased by the SIP parser): a named tenant whose domain or alias equals it; else the default tenant if host is an IP literal (v4 or v6, with or without brackets), "localhost", or in server.aliases; else None.
    pub fn tenant_for_host(&self, host: &str) -> Option<&Tenant> {
        let named = self.tenants.iter().find(|t| match &t.domain {
            Some(domain) => {
                domain.eq_ignore_ascii_case(host)
                    || t.aliases.iter().any(|a| a.eq_ignore_ascii_case(host))
            }
            None => false,
        });
        if named.is_some() {
            return named;
        }
        if is_ip_literal(host)
            || host.eq_ignore_ascii_case("localhost")
            || self
                .server
                .aliases
                .iter()
                .any(|a| a.eq_ignore_ascii_case(host))
        {
            return self.default_tenant();
        }
        None
    }

    /// [`Config::tenant_for_host`] for a parsed host, without writing an
    /// address out: domains and aliases are never IP literals (the config
    /// refuses them), so an address is always the default tenant's.
    pub fn tenant_for(&self, host: &crate::sip::Host) -> Option<&Tenant> {
        match host {
            crate::sip::Host::Domain(domain) => self.tenant_for_host(domain),
            crate::sip::Host::Ip(_) => self.default_tenant(),
        }
    }
}

/// An IPv4 or IPv6 address, the latter with or without brackets.
pub(crate) fn is_ip_literal(host: &str) -> bool {
    if let Some(inner) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        return inner.parse::<Ipv6Addr>().is_ok();
    }
    host.parse::<IpAddr>().is_ok()
}
