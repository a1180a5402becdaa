//! Parsing and validation.
//!
//! Two passes over the text:
//! 1. into a [`Node`] tree that only records where every key and array
//!    element is (a TOML syntax error surfaces here, with its line);
//! 2. through `serde_path_to_error` into the raw file structs (deny unknown
//!    keys, defaults), so deserialization errors carry the key path, and the
//!    toml error span gives the line.
//!
//! Semantic checks afterwards build the key path themselves and ask the
//! [`Node`] tree for its line, which keeps the public structs free of spans.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

use ipnet::IpNet;
use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;

use super::{
    is_ip_literal, Api, Auth, Bans, Calls, Config, ConfigError, Credentials, Extension, Grant,
    Location, Log, Mail, Nat, OnError, PeerTransport, PluginSource, PluginSpec, Registrar,
    RingGroup, Server, Storage, Stun, Tcp, Tenant, TlsFiles, Transaction, Trunk, TrustedSource,
    Voicemail, VOICEMAIL_TARGET,
};

// ---------------------------------------------------------------------------
// Key paths

#[derive(Clone, Debug, PartialEq, Eq)]
enum Seg {
    Key(String),
    Index(usize),
}

/// A dotted key path such as `tenant[0].extension[2].number`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(super) struct KeyPath(Vec<Seg>);

impl KeyPath {
    fn of(keys: &[&str]) -> Self {
        KeyPath(keys.iter().map(|k| Seg::Key((*k).to_owned())).collect())
    }

    fn key(&self, key: &str) -> Self {
        let mut p = self.clone();
        p.0.push(Seg::Key(key.to_owned()));
        p
    }

    fn index(&self, index: usize) -> Self {
        let mut p = self.clone();
        p.0.push(Seg::Index(index));
        p
    }

    fn from_serde(path: &serde_path_to_error::Path) -> Self {
        use serde_path_to_error::Segment;
        KeyPath(
            path.iter()
                .filter_map(|s| match s {
                    Segment::Seq { index } => Some(Seg::Index(*index)),
                    Segment::Map { key } | Segment::Enum { variant: key } => {
                        Some(Seg::Key(key.clone()))
                    }
                    _ => None,
                })
                .collect(),
        )
    }
}

impl fmt::Display for KeyPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, seg) in self.0.iter().enumerate() {
            match seg {
                Seg::Index(index) => write!(f, "[{index}]")?,
                Seg::Key(key) => {
                    if i > 0 {
                        f.write_str(".")?;
                    }
                    let bare = !key.is_empty()
                        && key
                            .bytes()
                            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
                    if bare {
                        f.write_str(key)?;
                    } else {
                        write!(f, "{key:?}")?;
                    }
                }
            }
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------
// Where every key is

/// The document's shape with the byte span of every value.
#[derive(Debug)]
enum Node {
    Table(BTreeMap<String, At>),
    Array(Vec<At>),
    /// A scalar, described the way serde describes what it found
    /// (`integer `5``, `string "x"`), for messages.
    Leaf(String),
}

impl<'de> Deserialize<'de> for Node {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(NodeVisitor)
    }
}

struct NodeVisitor;

/// The key under which the toml deserializer hands out a datetime.
const TOML_DATETIME_KEY: &str = "$__toml_private_datetime";

impl<'de> Visitor<'de> for NodeVisitor {
    type Value = Node;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any TOML value")
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Node, E> {
        Ok(Node::Leaf(format!("boolean `{v}`")))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Node, E> {
        Ok(Node::Leaf(format!("integer `{v}`")))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Node, E> {
        Ok(Node::Leaf(format!("integer `{v}`")))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Node, E> {
        Ok(Node::Leaf(format!("floating point `{v}`")))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Node, E> {
        Ok(Node::Leaf(format!("string {v:?}")))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Node, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element::<At>()? {
            items.push(item);
        }
        Ok(Node::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Node, A::Error> {
        let mut entries = BTreeMap::new();
        while let Some(key) = map.next_key::<String>()? {
            if key == TOML_DATETIME_KEY {
                let datetime = map.next_value::<String>()?;
                return Ok(Node::Leaf(format!("date-time `{datetime}`")));
            }
            let value = map.next_value::<At>()?;
            entries.insert(key, value);
        }
        Ok(Node::Table(entries))
    }
}

/// A value of the document and where it starts. toml tells the start of
/// every value written, but not of a table only implied by a header (`config`
/// in `[[plugin.config.device]]`): such a value has none, and a message
/// about it points at its nearest ancestor that has one.
#[derive(Debug)]
struct At {
    start: Option<usize>,
    node: Node,
}

/// toml's private protocol for handing out spans (the one `toml::Spanned`
/// speaks), spoken here with a fallback for values it cannot span.
const SPANNED: &str = "$__serde_spanned_private_Spanned";
const SPANNED_START: &str = "$__serde_spanned_private_start";
const SPANNED_END: &str = "$__serde_spanned_private_end";
const SPANNED_VALUE: &str = "$__serde_spanned_private_value";

impl<'de> Deserialize<'de> for At {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_struct(
            SPANNED,
            &[SPANNED_START, SPANNED_END, SPANNED_VALUE],
            AtVisitor,
        )
    }
}

struct AtVisitor;

impl AtVisitor {
    fn unspanned<E>(node: Result<Node, E>) -> Result<At, E> {
        node.map(|node| At { start: None, node })
    }
}

impl<'de> Visitor<'de> for AtVisitor {
    type Value = At;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any TOML value")
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<At, E> {
        Self::unspanned(NodeVisitor.visit_bool(v))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<At, E> {
        Self::unspanned(NodeVisitor.visit_i64(v))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<At, E> {
        Self::unspanned(NodeVisitor.visit_u64(v))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<At, E> {
        Self::unspanned(NodeVisitor.visit_f64(v))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<At, E> {
        Self::unspanned(NodeVisitor.visit_str(v))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<At, A::Error> {
        Self::unspanned(NodeVisitor.visit_seq(seq))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<At, A::Error> {
        let Some(first) = map.next_key::<String>()? else {
            return Ok(At {
                start: None,
                node: Node::Table(BTreeMap::new()),
            });
        };
        if [SPANNED_START, SPANNED_END, SPANNED_VALUE].contains(&first.as_str()) {
            // A spanned value.
            let (mut start, mut node) = (None, None);
            let mut key = Some(first);
            while let Some(k) = key {
                match k.as_str() {
                    SPANNED_START => start = Some(map.next_value::<usize>()?),
                    SPANNED_VALUE => node = Some(map.next_value::<Node>()?),
                    _ => {
                        map.next_value::<de::IgnoredAny>()?;
                    }
                }
                key = map.next_key::<String>()?;
            }
            let node = node.ok_or_else(|| de::Error::missing_field(SPANNED_VALUE))?;
            return Ok(At { start, node });
        }
        if first == TOML_DATETIME_KEY {
            let datetime = map.next_value::<String>()?;
            return Self::unspanned(Ok(Node::Leaf(format!("date-time `{datetime}`"))));
        }
        // A table without a span: `first` is its first key.
        let mut entries = BTreeMap::new();
        entries.insert(first, map.next_value::<At>()?);
        while let Some(key) = map.next_key::<String>()? {
            let value = map.next_value::<At>()?;
            entries.insert(key, value);
        }
        Self::unspanned(Ok(Node::Table(entries)))
    }
}

impl Node {
    /// The spanned values along `path`, as far as the document has them.
    fn walk<'n>(&'n self, path: &KeyPath) -> Vec<&'n At> {
        let mut node = self;
        let mut found = Vec::new();
        for seg in &path.0 {
            let next = match (node, seg) {
                (Node::Table(entries), Seg::Key(key)) => entries.get(key),
                (Node::Array(items), Seg::Index(index)) => items.get(*index),
                _ => None,
            };
            match next {
                Some(spanned) => {
                    found.push(spanned);
                    node = &spanned.node;
                }
                None => break,
            }
        }
        found
    }

    /// The start of the value at `path`, or of its nearest ancestor present
    /// in the document; None if not even the first key is there.
    fn locate(&self, path: &KeyPath) -> Option<usize> {
        self.walk(path).iter().rev().find_map(|at| at.start)
    }

    /// The value at exactly `path`, if the document sets it.
    fn get(&self, path: &KeyPath) -> Option<&Node> {
        let found = self.walk(path);
        if found.len() == path.0.len() {
            found.last().map(|at| &at.node)
        } else {
            None
        }
    }

    /// Whether the document sets exactly this key.
    fn contains(&self, path: &KeyPath) -> bool {
        path.0.is_empty() || self.get(path).is_some()
    }

    /// How serde would describe the value at `path` (for messages).
    fn describe(&self, path: &KeyPath) -> Option<String> {
        match self.get(path)? {
            Node::Table(_) => Some("a table".to_owned()),
            Node::Array(_) => Some("an array".to_owned()),
            Node::Leaf(description) => Some(description.clone()),
        }
    }
}

fn line_of(text: &str, offset: usize) -> usize {
    let end = offset.min(text.len());
    text.as_bytes()[..end]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

// ---------------------------------------------------------------------------
// The file as written

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    #[serde(default)]
    server: RawServer,
    #[serde(default)]
    tcp: Tcp,
    #[serde(default)]
    stun: RawStun,
    #[serde(default)]
    transaction: Transaction,
    #[serde(default)]
    registrar: Registrar,
    #[serde(default)]
    auth: Auth,
    #[serde(default)]
    storage: Storage,
    #[serde(default)]
    log: Log,
    #[serde(default)]
    calls: Calls,
    #[serde(default)]
    nat: Nat,
    #[serde(default)]
    api: RawApi,
    #[serde(default)]
    voicemail: Voicemail,
    #[serde(default)]
    mail: Mail,
    /// The default tenant's extensions.
    #[serde(default)]
    extension: Vec<Extension>,
    #[serde(default)]
    ring_group: Vec<RingGroup>,
    /// The default tenant's trunks.
    #[serde(default)]
    trunk: Vec<RawTrunk>,
    #[serde(default)]
    tenant: Vec<RawTenant>,
    #[serde(default)]
    bans: RawBans,
    /// The plugin chain, in order.
    #[serde(default)]
    plugin: Vec<RawPlugin>,
}

/// `[bans]` with the prefix length wide and the networks still strings, so
/// that bad ones get their own messages.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawBans {
    ipv6_prefix_len: u64,
    never_ban: Vec<String>,
    default_duration_ms: u64,
    kernel_drop_after: u64,
}

impl Default for RawBans {
    fn default() -> Self {
        let d = Bans::default();
        RawBans {
            ipv6_prefix_len: u64::from(d.ipv6_prefix_len),
            never_ban: Vec::new(),
            default_duration_ms: d.default_duration_ms,
            kernel_drop_after: d.kernel_drop_after,
        }
    }
}

/// `[api]` with the listen address still a string.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawApi {
    enabled: bool,
    listen: String,
    token: Option<String>,
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
}

impl Default for RawApi {
    fn default() -> Self {
        let d = Api::default();
        RawApi {
            enabled: d.enabled,
            listen: d.listen.to_string(),
            token: d.token,
            tls_cert: None,
            tls_key: None,
        }
    }
}

/// `[[plugin]]` as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPlugin {
    name: String,
    path: String,
    #[serde(default)]
    on_error: OnError,
    #[serde(default)]
    grants: Vec<Grant>,
    #[serde(default = "default_memory_limit_bytes")]
    memory_limit_bytes: u64,
    #[serde(default = "default_plugin_timeout_ms")]
    timeout_ms: u64,
    #[serde(default = "enabled_by_default")]
    enabled: bool,
    /// Only checked to be a table here: its contents come from
    /// [`plugin_configs`] (a `toml::Table` inside this struct cannot be
    /// deserialized through serde_path_to_error once it holds an array of
    /// tables, such as `[[plugin.config.device]]`).
    #[serde(default)]
    config: Option<AnyTable>,
}

/// Any TOML table, contents ignored.
struct AnyTable;

impl<'de> Deserialize<'de> for AnyTable {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct TableVisitor;
        impl<'de> Visitor<'de> for TableVisitor {
            type Value = AnyTable;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                // serde's word, turned into "a table" for messages.
                f.write_str("a map")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<AnyTable, A::Error> {
                while map
                    .next_entry::<de::IgnoredAny, de::IgnoredAny>()?
                    .is_some()
                {}
                Ok(AnyTable)
            }
        }
        deserializer.deserialize_map(TableVisitor)
    }
}

/// The `[plugin.config]` tables of `text` (a document that parsed), by the
/// plugin's position; a plugin without one has none.
fn plugin_configs(text: &str) -> Vec<Option<toml::Table>> {
    let Ok(doc) = toml::from_str::<toml::Table>(text) else {
        return Vec::new();
    };
    let Some(toml::Value::Array(plugins)) = doc.get("plugin") else {
        return Vec::new();
    };
    plugins
        .iter()
        .map(|p| match p.get("config") {
            Some(toml::Value::Table(table)) => Some(table.clone()),
            _ => None,
        })
        .collect()
}

/// 16 MiB: a Rust plugin needs a little over 1 MiB.
fn default_memory_limit_bytes() -> u64 {
    16 * 1024 * 1024
}

fn default_plugin_timeout_ms() -> u64 {
    10
}

fn enabled_by_default() -> bool {
    true
}

/// `[server]` with the listen addresses still strings, so that a bad one is
/// reported by the validation with its own message.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawServer {
    listen: Vec<String>,
    user_agent: String,
    realm: String,
    aliases: Vec<String>,
    control_socket: PathBuf,
    workers: usize,
    max_message_bytes: usize,
    udp_recv_buffer_bytes: usize,
}

impl Default for RawServer {
    fn default() -> Self {
        let d = Server::default();
        RawServer {
            listen: d.listen.iter().map(|a| a.to_string()).collect(),
            user_agent: d.user_agent,
            realm: d.realm,
            aliases: d.aliases,
            control_socket: d.control_socket,
            workers: d.workers,
            max_message_bytes: d.max_message_bytes,
            udp_recv_buffer_bytes: d.udp_recv_buffer_bytes,
        }
    }
}

/// `[stun]` with the listen addresses still strings, as for `[server]`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawStun {
    listen: Vec<String>,
}

impl Default for RawStun {
    fn default() -> Self {
        RawStun {
            listen: Stun::default()
                .listen
                .iter()
                .map(|a| a.to_string())
                .collect(),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTenant {
    domain: String,
    #[serde(default)]
    aliases: Vec<String>,
    #[serde(default)]
    extension: Vec<Extension>,
    #[serde(default)]
    ring_group: Vec<RingGroup>,
    #[serde(default)]
    trunk: Vec<RawTrunk>,
}

/// `[[trunk]]` as written: addresses still strings, for their own messages.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTrunk {
    id: String,
    description: Option<String>,
    address: String,
    #[serde(default)]
    transport: PeerTransport,
    #[serde(default)]
    trusted_from: Vec<String>,
    username: Option<String>,
    password: Option<String>,
}

// ---------------------------------------------------------------------------
// Parsing

pub(super) fn parse(text: &str, origin: &str) -> Result<Config, ConfigError> {
    let doc: Node = toml::from_str(text).map_err(|e| ConfigError::Syntax {
        at: Location {
            origin: origin.to_owned(),
            line: e.span().map(|s| line_of(text, s.start)),
        },
        message: one_line(e.message()),
    })?;
    let ctx = Ctx { text, origin, doc };
    let raw: RawFile = serde_path_to_error::deserialize(toml::Deserializer::new(text))
        .map_err(|e| ctx.deserialize_error(e))?;
    ctx.validate(raw)
}

/// toml messages may span lines ("invalid table header\nexpected `.`, `]`").
fn one_line(message: &str) -> String {
    message
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(", ")
}

/// The `quoted` names in a serde message: "expected one of `a`, `b`" -> a, b.
fn backticked(s: &str) -> Vec<&str> {
    s.split('`').skip(1).step_by(2).collect()
}

/// serde's name of the expected type, in TOML words.
fn describe_expected(expected: &str) -> String {
    match expected {
        "u8" | "u16" | "u64" | "u128" | "usize" => "a non-negative integer".to_owned(),
        "u32" => "an integer from 0 to 4294967295".to_owned(),
        "i8" | "i16" | "i32" | "i64" | "i128" | "isize" => "an integer".to_owned(),
        "a sequence" => "an array".to_owned(),
        "a map" => "a table".to_owned(),
        "path string" | "a borrowed path" => "a string".to_owned(),
        e if e.starts_with("struct ") => "a table".to_owned(),
        e if e.starts_with("enum ") => "a string".to_owned(),
        e => e.to_owned(),
    }
}

/// serde's name of what it found, in TOML words.
fn describe_found(found: &str) -> String {
    match found {
        "map" => "a table".to_owned(),
        "sequence" => "an array".to_owned(),
        f => f.to_owned(),
    }
}

struct Ctx<'a> {
    text: &'a str,
    origin: &'a str,
    doc: Node,
}

impl Ctx<'_> {
    fn at(&self, path: &KeyPath) -> Location {
        Location {
            origin: self.origin.to_owned(),
            line: self.doc.locate(path).map(|o| line_of(self.text, o)),
        }
    }

    fn at_offset(&self, offset: Option<usize>, path: &KeyPath) -> Location {
        match offset {
            Some(offset) => Location {
                origin: self.origin.to_owned(),
                line: Some(line_of(self.text, offset)),
            },
            None => self.at(path),
        }
    }

    /// Turns a deserialization error into the matching [`ConfigError`].
    fn deserialize_error(&self, e: serde_path_to_error::Error<toml::de::Error>) -> ConfigError {
        let path = KeyPath::from_serde(e.path());
        let inner = e.inner();
        let offset = inner.span().map(|s| s.start);
        let message = one_line(inner.message());
        let key = path.to_string();

        if message.starts_with("unknown field `") {
            let rest = message.split_once("`, ").map_or("", |(_, rest)| rest);
            return ConfigError::UnknownKey {
                at: self.at_offset(offset, &path),
                key,
                expected: backticked(rest).join(", "),
            };
        }
        if let Some(rest) = message.strip_prefix("missing field `") {
            let field = rest.split('`').next().unwrap_or_default();
            let path = path.key(field);
            return ConfigError::MissingKey {
                at: self.at_offset(offset, &path),
                key: path.to_string(),
            };
        }
        if let Some(rest) = message.strip_prefix("unknown variant `") {
            let (value, expected) = rest.split_once("`, ").unwrap_or((rest, ""));
            return ConfigError::UnknownValue {
                at: self.at_offset(offset, &path),
                key,
                value: value.to_owned(),
                expected: backticked(expected).join(", "),
            };
        }
        for (prefix, wrong_type) in [("invalid type: ", true), ("invalid value: ", false)] {
            if let Some((found, expected)) = message
                .strip_prefix(prefix)
                .and_then(|rest| rest.rsplit_once(", expected "))
            {
                let mut found = describe_found(found);
                // A date-time reaches serde as a table.
                if found == "a table" {
                    if let Some(actual) = self.doc.describe(&path) {
                        found = actual;
                    }
                }
                let (at, expected) = (self.at_offset(offset, &path), describe_expected(expected));
                return if wrong_type {
                    ConfigError::WrongType {
                        at,
                        key,
                        expected,
                        found,
                    }
                } else {
                    ConfigError::InvalidValue {
                        at,
                        key,
                        expected,
                        found,
                    }
                };
            }
        }
        // toml's own words for a non-string where a named value (enum) belongs.
        if message == "wanted string or table" {
            if let Some(found) = self.doc.describe(&path) {
                return ConfigError::WrongType {
                    at: self.at_offset(offset, &path),
                    key,
                    expected: "a string".to_owned(),
                    found,
                };
            }
        }
        ConfigError::Invalid {
            at: self.at_offset(offset, &path),
            key,
            message,
        }
    }

    // -----------------------------------------------------------------------
    // Validation

    fn validate(&self, raw: RawFile) -> Result<Config, ConfigError> {
        let mut hosts = Hosts::default();
        let server = self.server(raw.server, &mut hosts)?;
        self.tcp(&raw.tcp)?;
        // Empty is allowed: no standalone STUN listener.
        let stun = Stun {
            listen: self.listen_addresses(&KeyPath::of(&["stun", "listen"]), &raw.stun.listen)?,
        };
        self.transaction(&raw.transaction)?;
        self.registrar(&raw.registrar)?;
        self.auth(&raw.auth)?;
        self.storage(&raw.storage)?;
        self.calls(&raw.calls)?;
        self.voicemail(&raw.voicemail)?;
        self.mail(&raw.mail)?;
        self.at_least(
            &KeyPath::of(&["nat"]).key("ping_failures"),
            u64::from(raw.nat.ping_failures),
            1,
        )?;

        let mut tenants = Vec::new();
        if !raw.extension.is_empty() || raw.tenant.is_empty() {
            let default = Tenant {
                domain: None,
                realm: server.realm.clone(),
                aliases: server.aliases.clone(),
                extensions: raw.extension,
                ring_groups: raw.ring_group,
                trunks: self.trunks(&KeyPath::default(), raw.trunk)?,
            };
            self.extensions(&KeyPath::default(), &default)?;
            self.ring_groups(&KeyPath::default(), &default)?;
            tenants.push(default);
        } else if !raw.trunk.is_empty() {
            let path = KeyPath::of(&["trunk"]);
            return Err(ConfigError::Invalid {
                at: self.at(&path),
                key: path.to_string(),
                message: "top-level trunks belong to the default tenant, which has no \
                          extensions here: put them in [[tenant.trunk]]"
                    .to_owned(),
            });
        }
        for (i, raw_tenant) in raw.tenant.into_iter().enumerate() {
            let base = KeyPath::of(&["tenant"]).index(i);
            let domain = self.host_name(&base.key("domain"), &raw_tenant.domain, &mut hosts)?;
            let mut aliases = Vec::with_capacity(raw_tenant.aliases.len());
            for (j, alias) in raw_tenant.aliases.iter().enumerate() {
                aliases.push(self.host_name(&base.key("aliases").index(j), alias, &mut hosts)?);
            }
            let tenant = Tenant {
                realm: domain.clone(),
                domain: Some(domain),
                aliases,
                extensions: raw_tenant.extension,
                ring_groups: raw_tenant.ring_group,
                trunks: self.trunks(&base, raw_tenant.trunk)?,
            };
            self.extensions(&base, &tenant)?;
            self.ring_groups(&base, &tenant)?;
            tenants.push(tenant);
        }

        let bans = self.bans(raw.bans)?;
        let api = self.api(raw.api)?;
        let plugins = self.plugins(raw.plugin)?;

        Ok(Config {
            server,
            tcp: raw.tcp,
            stun,
            transaction: raw.transaction,
            registrar: raw.registrar,
            auth: raw.auth,
            storage: raw.storage,
            log: raw.log,
            calls: raw.calls,
            nat: raw.nat,
            api,
            voicemail: raw.voicemail,
            mail: raw.mail,
            tenants,
            bans,
            plugins,
            origin: self.origin.to_owned(),
        })
    }

    fn server(&self, raw: RawServer, hosts: &mut Hosts) -> Result<Server, ConfigError> {
        let base = KeyPath::of(&["server"]);
        let listen_path = base.key("listen");
        if raw.listen.is_empty() {
            return Err(self.empty(&listen_path));
        }
        let listen = self.listen_addresses(&listen_path, &raw.listen)?;

        self.header_text(&base.key("user_agent"), &raw.user_agent)?;
        self.header_text(&base.key("realm"), &raw.realm)?;
        if raw.realm.contains(['"', '\\']) {
            let path = base.key("realm");
            return Err(ConfigError::InvalidText {
                at: self.at(&path),
                key: path.to_string(),
                reason: "must not contain '\"' or '\\'",
            });
        }

        let mut aliases = Vec::with_capacity(raw.aliases.len());
        for (i, alias) in raw.aliases.iter().enumerate() {
            aliases.push(self.host_name(&base.key("aliases").index(i), alias, hosts)?);
        }

        self.non_empty_path(&base.key("control_socket"), &raw.control_socket)?;
        self.at_least(
            &base.key("max_message_bytes"),
            raw.max_message_bytes as u64,
            1500,
        )?;

        Ok(Server {
            listen,
            user_agent: raw.user_agent,
            realm: raw.realm,
            aliases,
            control_socket: raw.control_socket,
            workers: raw.workers,
            max_message_bytes: raw.max_message_bytes,
            udp_recv_buffer_bytes: raw.udp_recv_buffer_bytes,
        })
    }

    fn api(&self, raw: RawApi) -> Result<Api, ConfigError> {
        let base = KeyPath::of(&["api"]);
        let path = base.key("listen");
        let listen = raw
            .listen
            .trim()
            .parse()
            .map_err(|_| ConfigError::InvalidListenAddress {
                at: self.at(&path),
                key: path.to_string(),
                value: raw.listen.clone(),
            })?;
        if let Some(token) = &raw.token {
            let path = base.key("token");
            let reason = if token.len() < 16 {
                Some("must be at least 16 characters long")
            } else if !token.bytes().all(|b| b.is_ascii_graphic()) {
                Some("must be printable ASCII without spaces")
            } else {
                None
            };
            if let Some(reason) = reason {
                return Err(ConfigError::InvalidText {
                    at: self.at(&path),
                    key: path.to_string(),
                    reason,
                });
            }
        }
        let tls = match (raw.tls_cert, raw.tls_key) {
            (None, None) => None,
            (Some(cert), Some(key)) => {
                self.non_empty_path(&base.key("tls_cert"), &cert)?;
                self.non_empty_path(&base.key("tls_key"), &key)?;
                Some(TlsFiles { cert, key })
            }
            (cert, _) => {
                let path = base.key(if cert.is_some() {
                    "tls_key"
                } else {
                    "tls_cert"
                });
                return Err(ConfigError::Invalid {
                    at: self.at(&path),
                    key: path.to_string(),
                    message: "tls_cert and tls_key go together".to_owned(),
                });
            }
        };
        Ok(Api {
            enabled: raw.enabled,
            listen,
            token: raw.token,
            tls,
        })
    }

    /// A list of `IP:port` socket addresses without duplicates (port 0,
    /// "any free port", may repeat: it binds a new port each time).
    fn listen_addresses(
        &self,
        path: &KeyPath,
        values: &[String],
    ) -> Result<Vec<SocketAddr>, ConfigError> {
        let mut listen: Vec<SocketAddr> = Vec::with_capacity(values.len());
        for (i, value) in values.iter().enumerate() {
            let path = path.index(i);
            let addr: SocketAddr =
                value
                    .trim()
                    .parse()
                    .map_err(|_| ConfigError::InvalidListenAddress {
                        at: self.at(&path),
                        key: path.to_string(),
                        value: value.clone(),
                    })?;
            if addr.port() != 0 && listen.contains(&addr) {
                return Err(ConfigError::DuplicateListenAddress {
                    at: self.at(&path),
                    key: path.to_string(),
                    addr,
                });
            }
            listen.push(addr);
        }
        Ok(listen)
    }

    fn tcp(&self, tcp: &Tcp) -> Result<(), ConfigError> {
        let base = KeyPath::of(&["tcp"]);
        self.at_least(&base.key("max_connections"), tcp.max_connections as u64, 1)?;
        self.at_least(
            &base.key("max_connections_per_source"),
            tcp.max_connections_per_source as u64,
            1,
        )?;
        self.at_least(&base.key("idle_timeout_ms"), tcp.idle_timeout_ms, 1)
    }

    fn transaction(&self, t: &Transaction) -> Result<(), ConfigError> {
        let base = KeyPath::of(&["transaction"]);
        // T1 = 0 would retransmit in a busy loop; t2 >= t1 follows. T4 = 0
        // is allowed (Timer K = 0, as for reliable transports).
        self.at_least(&base.key("t1_ms"), t.t1_ms, 1)?;
        self.ordered((&base.key("t1_ms"), t.t1_ms), (&base.key("t2_ms"), t.t2_ms))
    }

    fn registrar(&self, r: &Registrar) -> Result<(), ConfigError> {
        let base = KeyPath::of(&["registrar"]);
        let min = (&base.key("min_expires_s"), u64::from(r.min_expires_s));
        let default = (
            &base.key("default_expires_s"),
            u64::from(r.default_expires_s),
        );
        let max = (&base.key("max_expires_s"), u64::from(r.max_expires_s));
        self.ordered(min, default)?;
        self.ordered(default, max)?;
        self.at_least(&base.key("max_contacts"), r.max_contacts as u64, 1)
    }

    fn auth(&self, auth: &Auth) -> Result<(), ConfigError> {
        let base = KeyPath::of(&["auth"]);
        self.at_least(&base.key("nonce_lifetime_ms"), auth.nonce_lifetime_ms, 1)?;
        let path = base.key("algorithms");
        if auth.algorithms.is_empty() {
            return Err(self.empty(&path));
        }
        for (i, algorithm) in auth.algorithms.iter().enumerate() {
            if auth.algorithms[..i].contains(algorithm) {
                let path = path.index(i);
                return Err(ConfigError::DuplicateAlgorithm {
                    at: self.at(&path),
                    key: path.to_string(),
                    algorithm: algorithm.as_str(),
                });
            }
        }
        Ok(())
    }

    fn storage(&self, s: &Storage) -> Result<(), ConfigError> {
        let base = KeyPath::of(&["storage"]);
        self.non_empty_path(&base.key("database"), &s.database)?;
        self.at_least(&base.key("commit_batch_max"), s.commit_batch_max as u64, 1)?;
        self.at_least(&base.key("commit_group"), s.commit_group as u64, 1)?;
        self.at_least(&base.key("purge_interval_ms"), s.purge_interval_ms, 1)
    }

    fn bans(&self, raw: RawBans) -> Result<Bans, ConfigError> {
        let base = KeyPath::of(&["bans"]);
        let prefix_path = base.key("ipv6_prefix_len");
        self.at_least(&prefix_path, raw.ipv6_prefix_len, 1)?;
        self.at_most(&prefix_path, raw.ipv6_prefix_len, 128)?;
        let mut never_ban = Vec::with_capacity(raw.never_ban.len());
        for (i, value) in raw.never_ban.iter().enumerate() {
            let text = value.trim();
            let net = text
                .parse::<IpNet>()
                .or_else(|_| text.parse::<IpAddr>().map(IpNet::from))
                .map_err(|_| {
                    let path = base.key("never_ban").index(i);
                    ConfigError::InvalidNetwork {
                        at: self.at(&path),
                        key: path.to_string(),
                        value: value.clone(),
                    }
                })?;
            never_ban.push(net.trunc());
        }
        self.at_least(&base.key("default_duration_ms"), raw.default_duration_ms, 1)?;
        Ok(Bans {
            ipv6_prefix_len: raw.ipv6_prefix_len as u8,
            never_ban,
            default_duration_ms: raw.default_duration_ms,
            kernel_drop_after: raw.kernel_drop_after,
        })
    }

    fn plugins(&self, raw: Vec<RawPlugin>) -> Result<Vec<PluginSpec>, ConfigError> {
        let list = KeyPath::of(&["plugin"]);
        let mut plugins: Vec<PluginSpec> = Vec::with_capacity(raw.len());
        let mut configs = plugin_configs(self.text);
        for (i, p) in raw.into_iter().enumerate() {
            let at = list.index(i);
            let name_path = at.key("name");
            if !valid_plugin_name(&p.name) {
                return Err(ConfigError::InvalidPluginName {
                    at: self.at(&name_path),
                    key: name_path.to_string(),
                    name: p.name,
                });
            }
            if let Some(first) = plugins.iter().position(|q| q.name == p.name) {
                return Err(ConfigError::DuplicatePlugin {
                    at: self.at(&name_path),
                    key: name_path.to_string(),
                    name: p.name,
                    first: list.index(first).key("name").to_string(),
                });
            }
            let source = self.plugin_source(&at.key("path"), &p.path)?;
            for (j, grant) in p.grants.iter().enumerate() {
                if p.grants[..j].contains(grant) {
                    let path = at.key("grants").index(j);
                    return Err(ConfigError::DuplicateGrant {
                        at: self.at(&path),
                        key: path.to_string(),
                        grant: grant.as_str(),
                    });
                }
            }
            self.at_least(&at.key("memory_limit_bytes"), p.memory_limit_bytes, 65536)?;
            self.at_least(&at.key("timeout_ms"), p.timeout_ms, 1)?;
            let table = match p.config {
                Some(AnyTable) => configs.get_mut(i).and_then(Option::take),
                None => None,
            };
            let config = match table {
                Some(table) => toml_to_json(&toml::Value::Table(table)),
                None => serde_json::Value::Object(serde_json::Map::new()),
            };
            plugins.push(PluginSpec {
                name: p.name,
                source,
                on_error: p.on_error,
                grants: p.grants,
                memory_limit_bytes: p.memory_limit_bytes,
                timeout_ms: p.timeout_ms,
                enabled: p.enabled,
                config,
            });
        }
        Ok(plugins)
    }

    /// `builtin:NAME` (a built-in this gateway knows) or a file path.
    fn plugin_source(&self, path: &KeyPath, value: &str) -> Result<PluginSource, ConfigError> {
        if value.trim().is_empty() {
            return Err(self.empty(path));
        }
        let Some(name) = value.strip_prefix("builtin:") else {
            return Ok(PluginSource::File(PathBuf::from(value)));
        };
        if crate::plugins::builtin::component(name).is_none() {
            return Err(ConfigError::UnknownBuiltin {
                at: self.at(path),
                key: path.to_string(),
                name: name.to_owned(),
                known: crate::plugins::builtin::names()
                    .collect::<Vec<_>>()
                    .join(", "),
            });
        }
        Ok(PluginSource::Builtin(name.to_owned()))
    }

    /// The extensions of one tenant; `base` is the tenant's path (empty for
    /// the default tenant, whose extensions are top-level).
    fn extensions(&self, base: &KeyPath, tenant: &Tenant) -> Result<(), ConfigError> {
        let list = base.key("extension");
        // A set, not a scan of the earlier entries: a config with 100,000
        // extensions took 27 s to load with the quadratic check.
        let mut numbers = std::collections::HashSet::with_capacity(tenant.extensions.len());
        for (i, ext) in tenant.extensions.iter().enumerate() {
            let at = list.index(i);
            let number_path = at.key("number");
            if !valid_number(&ext.number) {
                return Err(ConfigError::InvalidExtensionNumber {
                    at: self.at(&number_path),
                    key: number_path.to_string(),
                    number: ext.number.clone(),
                });
            }
            if !numbers.insert(ext.number.as_str()) {
                return Err(ConfigError::DuplicateExtension {
                    at: self.at(&number_path),
                    key: number_path.to_string(),
                    number: ext.number.clone(),
                    tenant: tenant.describe(),
                });
            }
            if ext.password.as_deref() == Some("") {
                let path = at.key("password");
                return Err(ConfigError::EmptyPassword {
                    at: self.at(&path),
                    key: path.to_string(),
                });
            }
            if let Some(name) = &ext.display_name {
                if name.chars().any(char::is_control) {
                    let path = at.key("display_name");
                    return Err(ConfigError::InvalidText {
                        at: self.at(&path),
                        key: path.to_string(),
                        reason: "must not contain control characters",
                    });
                }
            }
            if let Some(max) = ext.max_contacts {
                self.at_least(&at.key("max_contacts"), max as u64, 1)?;
            }
            if let Some(ms) = ext.ring_time_ms {
                self.at_least(&at.key("ring_time_ms"), ms, 1)?;
            }
            for (key, target) in [
                ("no_answer", &ext.no_answer),
                ("busy", &ext.busy),
                ("unavailable", &ext.unavailable),
            ] {
                match target.as_deref() {
                    None | Some(VOICEMAIL_TARGET) => {}
                    Some(number) => self.callable(&at.key(key), number, tenant)?,
                }
            }
            if let Some(email) = &ext.email {
                self.email_address(&at.key("email"), email)?;
            }
            if ext.transport == Some(PeerTransport::Tcp) {
                return Err(self.udp_only(&at.key("transport")));
            }
            if ext.transport.is_some() && ext.address.is_none() {
                let path = at.key("transport");
                return Err(ConfigError::Invalid {
                    at: self.at(&path),
                    key: path.to_string(),
                    message: "only meaningful with an address".to_owned(),
                });
            }
        }
        Ok(())
    }

    fn udp_only(&self, path: &KeyPath) -> ConfigError {
        ConfigError::Invalid {
            at: self.at(path),
            key: path.to_string(),
            message: "\"tcp\" is not supported: the gateway opens no TCP connections, \
                      so configured peers are reached over \"udp\""
                .to_owned(),
        }
    }

    /// The trunks of one tenant; `base` is the tenant's path.
    fn trunks(&self, base: &KeyPath, raw: Vec<RawTrunk>) -> Result<Vec<Trunk>, ConfigError> {
        let list = base.key("trunk");
        let mut trunks: Vec<Trunk> = Vec::with_capacity(raw.len());
        for (i, t) in raw.into_iter().enumerate() {
            let at = list.index(i);
            let id_path = at.key("id");
            let invalid = |path: &KeyPath, message: String| ConfigError::Invalid {
                at: self.at(path),
                key: path.to_string(),
                message,
            };
            if !valid_number(&t.id) {
                return Err(invalid(
                    &id_path,
                    format!(
                        "invalid trunk id \"{}\" (1-32 characters of A-Z a-z 0-9 . _ -)",
                        t.id
                    ),
                ));
            }
            if trunks.iter().any(|other| other.id == t.id) {
                return Err(invalid(
                    &id_path,
                    format!("trunk id \"{}\" used twice", t.id),
                ));
            }
            if let Some(d) = &t.description {
                if d.chars().any(char::is_control) {
                    let path = at.key("description");
                    return Err(ConfigError::InvalidText {
                        at: self.at(&path),
                        key: path.to_string(),
                        reason: "must not contain control characters",
                    });
                }
            }
            let address_path = at.key("address");
            let address: SocketAddr = t.address.trim().parse().map_err(|_| {
                invalid(
                    &address_path,
                    format!(
                        "\"{}\" is not an IP address with a port (e.g. \"192.0.2.7:5060\"); \
                         host names are not resolved",
                        t.address
                    ),
                )
            })?;
            if address.port() == 0 || address.ip().is_unspecified() {
                return Err(invalid(
                    &address_path,
                    format!("\"{}\" cannot be sent to", t.address),
                ));
            }
            if t.transport == PeerTransport::Tcp {
                return Err(self.udp_only(&at.key("transport")));
            }
            let mut trusted_from = Vec::with_capacity(t.trusted_from.len());
            for (j, value) in t.trusted_from.iter().enumerate() {
                let path = at.key("trusted_from").index(j);
                let source = trusted_source(value).ok_or_else(|| {
                    invalid(
                        &path,
                        format!("\"{value}\" is not an IP address, IP:port or CIDR network"),
                    )
                })?;
                trusted_from.push(source);
            }
            let credentials = match (t.username, t.password) {
                (None, None) => None,
                (Some(username), Some(password))
                    if !username.is_empty() && !password.is_empty() =>
                {
                    for (key, value) in [("username", &username), ("password", &password)] {
                        if value.chars().any(|c| c.is_control() || c == '"') {
                            let path = at.key(key);
                            return Err(ConfigError::InvalidText {
                                at: self.at(&path),
                                key: path.to_string(),
                                reason: "must not contain control characters or quotes",
                            });
                        }
                    }
                    Some(Credentials { username, password })
                }
                (username, _) => {
                    let path = at.key(if username.is_some() {
                        "password"
                    } else {
                        "username"
                    });
                    return Err(invalid(
                        &path,
                        "username and password go together, both non-empty".to_owned(),
                    ));
                }
            };
            trunks.push(Trunk {
                id: t.id,
                description: t.description,
                address,
                trusted_from,
                credentials,
            });
        }
        Ok(trunks)
    }

    fn calls(&self, calls: &Calls) -> Result<(), ConfigError> {
        let base = KeyPath::of(&["calls"]);
        self.at_least(&base.key("ring_time_ms"), calls.ring_time_ms, 1)?;
        self.at_least(&base.key("max_duration_ms"), calls.max_duration_ms, 1)
    }

    fn voicemail(&self, vm: &Voicemail) -> Result<(), ConfigError> {
        let base = KeyPath::of(&["voicemail"]);
        self.at_least(&base.key("rtp_port_min"), u64::from(vm.rtp_port_min), 1024)?;
        self.at_least(
            &base.key("rtp_port_max"),
            u64::from(vm.rtp_port_max),
            u64::from(vm.rtp_port_min) + 1,
        )?;
        self.at_least(&base.key("max_length_ms"), vm.max_length_ms, 1)?;
        self.at_least(&base.key("silence_timeout_ms"), vm.silence_timeout_ms, 1)?;
        if vm.dir.as_os_str().is_empty() {
            return Err(self.empty(&base.key("dir")));
        }
        Ok(())
    }

    fn mail(&self, mail: &Mail) -> Result<(), ConfigError> {
        let base = KeyPath::of(&["mail"]);
        let invalid = |key: &str, message: &str| {
            let path = base.key(key);
            ConfigError::Invalid {
                at: self.at(&path),
                key: path.to_string(),
                message: message.to_owned(),
            }
        };
        if let Some(host) = &mail.smtp_host {
            if host.trim().is_empty() || host.contains(char::is_whitespace) {
                return Err(invalid("smtp_host", "must be a host name or IP address"));
            }
        }
        if mail.smtp_port == Some(0) {
            return Err(invalid("smtp_port", "must be 1-65535"));
        }
        if mail.username.is_some() != mail.password.is_some() {
            let key = if mail.username.is_some() {
                "password"
            } else {
                "username"
            };
            return Err(invalid(key, "username and password go together"));
        }
        self.email_address(&base.key("from"), &mail.from)?;
        self.at_least(&base.key("retry_initial_ms"), mail.retry_initial_ms, 1)?;
        self.at_least(
            &base.key("retry_max_ms"),
            mail.retry_max_ms,
            mail.retry_initial_ms,
        )?;
        self.at_least(&base.key("timeout_ms"), mail.timeout_ms, 1)?;
        self.at_least(
            &base.key("permanent_failure_attempts"),
            u64::from(mail.permanent_failure_attempts),
            1,
        )
    }

    /// Good enough to catch a typo here; the mail queue checks fully.
    fn email_address(&self, path: &KeyPath, address: &str) -> Result<(), ConfigError> {
        let plausible = address.split_once('@').is_some_and(|(local, domain)| {
            !local.is_empty() && !domain.is_empty() && !domain.contains('@')
        }) && !address.contains(|c: char| c.is_whitespace() || c.is_control());
        if plausible {
            return Ok(());
        }
        Err(ConfigError::Invalid {
            at: self.at(path),
            key: path.to_string(),
            message: format!("\"{address}\" is not an e-mail address"),
        })
    }

    /// A number calls can be sent to: an extension or ring group of `tenant`.
    fn callable(&self, path: &KeyPath, number: &str, tenant: &Tenant) -> Result<(), ConfigError> {
        if tenant.extension(number).is_some() || tenant.ring_group(number).is_some() {
            return Ok(());
        }
        Err(ConfigError::Invalid {
            at: self.at(path),
            key: path.to_string(),
            message: format!(
                "\"{number}\" is neither an extension nor a ring group of {}",
                tenant.describe()
            ),
        })
    }

    fn ring_groups(&self, base: &KeyPath, tenant: &Tenant) -> Result<(), ConfigError> {
        let list = base.key("ring_group");
        for (i, group) in tenant.ring_groups.iter().enumerate() {
            let at = list.index(i);
            let number_path = at.key("number");
            if !valid_number(&group.number) {
                return Err(ConfigError::InvalidExtensionNumber {
                    at: self.at(&number_path),
                    key: number_path.to_string(),
                    number: group.number.clone(),
                });
            }
            let taken = tenant.extension(&group.number).is_some()
                || tenant.ring_groups[..i]
                    .iter()
                    .any(|g| g.number == group.number);
            if taken {
                return Err(ConfigError::DuplicateExtension {
                    at: self.at(&number_path),
                    key: number_path.to_string(),
                    number: group.number.clone(),
                    tenant: tenant.describe(),
                });
            }
            if group.members.is_empty() {
                return Err(self.empty(&at.key("members")));
            }
            for (j, member) in group.members.iter().enumerate() {
                let path = at.key("members").index(j);
                if tenant.extension(member).is_none() {
                    return Err(ConfigError::Invalid {
                        at: self.at(&path),
                        key: path.to_string(),
                        message: format!(
                            "\"{member}\" is not an extension of {}",
                            tenant.describe()
                        ),
                    });
                }
            }
            self.at_least(&at.key("member_timeout_ms"), group.member_timeout_ms, 1)?;
            if let Some(ms) = group.ring_time_ms {
                self.at_least(&at.key("ring_time_ms"), ms, 1)?;
            }
        }
        Ok(())
    }

    /// A tenant domain or alias (or server alias): a valid host name, not an
    /// IP literal, not used before. Returns it lowercased.
    fn host_name(
        &self,
        path: &KeyPath,
        value: &str,
        hosts: &mut Hosts,
    ) -> Result<String, ConfigError> {
        if is_ip_literal(value) {
            return Err(ConfigError::IpLiteralHost {
                at: self.at(path),
                key: path.to_string(),
                host: value.to_owned(),
            });
        }
        if !valid_host_name(value) {
            return Err(ConfigError::InvalidHostName {
                at: self.at(path),
                key: path.to_string(),
                host: value.to_owned(),
            });
        }
        let host = value.to_ascii_lowercase();
        if let Some(first) = hosts.0.get(&host) {
            return Err(ConfigError::DuplicateHost {
                at: self.at(path),
                key: path.to_string(),
                host,
                first: first.to_string(),
            });
        }
        hosts.0.insert(host.clone(), path.clone());
        Ok(host)
    }

    /// Text that ends up in a SIP header: non-empty, no control characters.
    fn header_text(&self, path: &KeyPath, value: &str) -> Result<(), ConfigError> {
        if value.trim().is_empty() {
            return Err(self.empty(path));
        }
        if value.chars().any(char::is_control) {
            return Err(ConfigError::InvalidText {
                at: self.at(path),
                key: path.to_string(),
                reason: "must not contain control characters",
            });
        }
        Ok(())
    }

    fn non_empty_path(&self, path: &KeyPath, value: &std::path::Path) -> Result<(), ConfigError> {
        if value.as_os_str().is_empty() {
            return Err(self.empty(path));
        }
        Ok(())
    }

    fn empty(&self, path: &KeyPath) -> ConfigError {
        ConfigError::Empty {
            at: self.at(path),
            key: path.to_string(),
        }
    }

    fn at_least(&self, path: &KeyPath, value: u64, min: u64) -> Result<(), ConfigError> {
        if value < min {
            return Err(ConfigError::TooSmall {
                at: self.at(path),
                key: path.to_string(),
                value,
                min,
            });
        }
        Ok(())
    }

    fn at_most(&self, path: &KeyPath, value: u64, max: u64) -> Result<(), ConfigError> {
        if value > max {
            return Err(ConfigError::TooLarge {
                at: self.at(path),
                key: path.to_string(),
                value,
                max,
            });
        }
        Ok(())
    }

    /// `low <= high`. The error points at `low` unless only `high` is set in
    /// the file (then `high` is the value the user got wrong).
    fn ordered(&self, low: (&KeyPath, u64), high: (&KeyPath, u64)) -> Result<(), ConfigError> {
        if low.1 <= high.1 {
            return Ok(());
        }
        let ((path, value), (other, other_value), relation) =
            if self.doc.contains(low.0) || !self.doc.contains(high.0) {
                (low, high, "greater than")
            } else {
                (high, low, "less than")
            };
        Err(ConfigError::OutOfOrder {
            at: self.at(path),
            key: path.to_string(),
            value,
            relation,
            other: other.to_string(),
            other_value,
        })
    }
}

/// Host names in use (tenant domains and aliases, server aliases), with the
/// key that claimed each first.
#[derive(Default)]
struct Hosts(HashMap<String, KeyPath>);

/// "IP", "IP:port", "[IPv6]:port" or "NET/LEN".
fn trusted_source(value: &str) -> Option<TrustedSource> {
    let text = value.trim();
    if let Ok(addr) = text.parse::<SocketAddr>() {
        return Some(TrustedSource {
            net: IpNet::from(addr.ip().to_canonical()),
            port: Some(addr.port()),
        });
    }
    let net = text
        .parse::<IpNet>()
        .or_else(|_| {
            text.parse::<IpAddr>()
                .map(|ip| IpNet::from(ip.to_canonical()))
        })
        .ok()?;
    Some(TrustedSource {
        net: net.trunc(),
        port: None,
    })
}

/// 1-32 characters of `[A-Za-z0-9._-]`.
fn valid_number(number: &str) -> bool {
    (1..=32).contains(&number.len())
        && number
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// 1-64 characters of `[A-Za-z0-9._-]`.
fn valid_plugin_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// A plugin's config table as the JSON its `init` receives. Date-times
/// become their TOML text; a NaN or infinite float becomes null.
fn toml_to_json(value: &toml::Value) -> serde_json::Value {
    use serde_json::Value as J;
    match value {
        toml::Value::String(s) => J::String(s.clone()),
        toml::Value::Integer(i) => J::from(*i),
        toml::Value::Float(f) => serde_json::Number::from_f64(*f).map_or(J::Null, J::Number),
        toml::Value::Boolean(b) => J::Bool(*b),
        toml::Value::Datetime(d) => J::String(d.to_string()),
        toml::Value::Array(items) => J::Array(items.iter().map(toml_to_json).collect()),
        toml::Value::Table(table) => J::Object(
            table
                .iter()
                .map(|(k, v)| (k.clone(), toml_to_json(v)))
                .collect(),
        ),
    }
}

/// RFC 3261 `hostname`: dot-separated labels of letters, digits and '-',
/// not starting or ending with '-'; at most 253 characters.
fn valid_host_name(host: &str) -> bool {
    !host.is_empty()
        && host.len() <= 253
        && host.split('.').all(|label| {
            (1..=63).contains(&label.len())
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}
