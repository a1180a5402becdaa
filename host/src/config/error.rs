//! Configuration errors. Every variant names where the problem is: the file
//! (or `<embedded default>`), the line when it is known, and the dotted key
//! path (`tenant[0].extension[2].number`).

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;

/// Where a problem is: the configuration's origin and, when known, the line
/// (1-based). Displays as `origin:line` or just `origin`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Location {
    pub origin: String,
    pub line: Option<usize>,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(line) => write!(f, "{}:{}", self.origin, line),
            None => f.write_str(&self.origin),
        }
    }
}

/// Why a configuration was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{}: cannot read the configuration: {source}", .path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },

    /// The text is not valid TOML.
    #[error("{at}: invalid TOML: {message}")]
    Syntax { at: Location, message: String },

    /// A key that no section knows (typo or misplaced key).
    #[error("{at}: {key}: unknown key (expected one of: {expected})")]
    UnknownKey {
        at: Location,
        key: String,
        /// The keys allowed in that table, comma-separated.
        expected: String,
    },

    /// A required key is absent (e.g. `domain` of a `[[tenant]]`).
    #[error("{at}: {key}: missing required key")]
    MissingKey { at: Location, key: String },

    /// A value of the wrong TOML type (a string where an integer belongs, ...).
    #[error("{at}: {key}: wrong type: expected {expected}, found {found}")]
    WrongType {
        at: Location,
        key: String,
        expected: String,
        found: String,
    },

    /// A value of the right type outside what the key's type can hold
    /// (a negative count, a number too large).
    #[error("{at}: {key}: invalid value: expected {expected}, found {found}")]
    InvalidValue {
        at: Location,
        key: String,
        expected: String,
        found: String,
    },

    /// A string that is not one of the key's named values (`log.format = "xml"`).
    #[error("{at}: {key}: unknown value \"{value}\" (expected one of: {expected})")]
    UnknownValue {
        at: Location,
        key: String,
        value: String,
        /// The allowed values, comma-separated.
        expected: String,
    },

    /// Any other problem the TOML deserializer reported for a key.
    #[error("{at}: {key}: {message}")]
    Invalid {
        at: Location,
        key: String,
        message: String,
    },

    /// A `server.listen` or `stun.listen` entry that is not an `IP:port` socket address.
    #[error("{at}: {key}: invalid socket address \"{value}\"")]
    InvalidListenAddress {
        at: Location,
        key: String,
        value: String,
    },

    /// The same `server.listen` (or `stun.listen`) address twice.
    #[error("{at}: {key}: duplicate listen address \"{addr}\"")]
    DuplicateListenAddress {
        at: Location,
        key: String,
        addr: SocketAddr,
    },

    /// A list or string that must not be empty (`server.listen`,
    /// `auth.algorithms`, `server.realm`, paths).
    #[error("{at}: {key}: must not be empty")]
    Empty { at: Location, key: String },

    /// A text value with characters it must not contain (control characters
    /// would break the SIP header it ends up in).
    #[error("{at}: {key}: {reason}")]
    InvalidText {
        at: Location,
        key: String,
        reason: &'static str,
    },

    /// A number below the key's minimum.
    #[error("{at}: {key}: {value} is too small (minimum {min})")]
    TooSmall {
        at: Location,
        key: String,
        value: u64,
        min: u64,
    },

    /// A number above the key's maximum.
    #[error("{at}: {key}: {value} is too large (maximum {max})")]
    TooLarge {
        at: Location,
        key: String,
        value: u64,
        max: u64,
    },

    /// A `bans.never_ban` entry that is neither an address nor a CIDR network.
    #[error("{at}: {key}: invalid network \"{value}\" (an address or a CIDR network such as 192.0.2.0/24 or 2001:db8::/32)")]
    InvalidNetwork {
        at: Location,
        key: String,
        value: String,
    },

    /// A plugin name outside 1-64 characters of `[A-Za-z0-9._-]`.
    #[error("{at}: {key}: invalid plugin name \"{name}\" (1-64 characters of A-Z a-z 0-9 . _ -)")]
    InvalidPluginName {
        at: Location,
        key: String,
        name: String,
    },

    /// Two `[[plugin]]` entries with the same name.
    #[error("{at}: {key}: duplicate plugin name \"{name}\" (first used by {first})")]
    DuplicatePlugin {
        at: Location,
        key: String,
        name: String,
        /// The key path of the first use.
        first: String,
    },

    /// `path = "builtin:NAME"` with a NAME no built-in plugin has.
    #[error("{at}: {key}: unknown built-in plugin \"{name}\" (built-ins: {known})")]
    UnknownBuiltin {
        at: Location,
        key: String,
        name: String,
        /// The built-in names, comma-separated.
        known: String,
    },

    /// The same capability twice in a plugin's `grants`.
    #[error("{at}: {key}: duplicate grant \"{grant}\"")]
    DuplicateGrant {
        at: Location,
        key: String,
        grant: &'static str,
    },

    /// Two keys whose values must be ordered are not
    /// (`registrar.min_expires_s` > `registrar.default_expires_s`, `t1_ms` > `t2_ms`).
    #[error("{at}: {key}: {value} is {relation} {other} ({other_value})")]
    OutOfOrder {
        at: Location,
        key: String,
        value: u64,
        /// "greater than" or "less than".
        relation: &'static str,
        other: String,
        other_value: u64,
    },

    /// The same digest algorithm twice in `auth.algorithms`.
    #[error("{at}: {key}: duplicate algorithm \"{algorithm}\"")]
    DuplicateAlgorithm {
        at: Location,
        key: String,
        algorithm: &'static str,
    },

    /// A tenant domain or alias that is not a valid host name.
    #[error("{at}: {key}: invalid host name \"{host}\" (dot-separated labels of letters, digits and '-')")]
    InvalidHostName {
        at: Location,
        key: String,
        host: String,
    },

    /// An IP literal where a host name belongs (IP literals are always served
    /// by the default tenant).
    #[error("{at}: {key}: \"{host}\" is an IP literal, not a host name (requests for IP literals go to the default tenant)")]
    IpLiteralHost {
        at: Location,
        key: String,
        host: String,
    },

    /// A host name (tenant domain, tenant alias or server alias) used twice.
    #[error("{at}: {key}: host name \"{host}\" is already used by {first}")]
    DuplicateHost {
        at: Location,
        key: String,
        host: String,
        /// The key path of the first use.
        first: String,
    },

    /// An extension number outside 1-32 characters of `[A-Za-z0-9._-]`.
    #[error(
        "{at}: {key}: invalid extension number \"{number}\" (1-32 characters of A-Z a-z 0-9 . _ -)"
    )]
    InvalidExtensionNumber {
        at: Location,
        key: String,
        number: String,
    },

    /// The same extension number twice in one tenant.
    #[error("{at}: {key}: duplicate extension \"{number}\" in {tenant}")]
    DuplicateExtension {
        at: Location,
        key: String,
        number: String,
        /// `tenant "a.example"` or `the default tenant`.
        tenant: String,
    },

    /// `password = ""`: leave the key out to have one generated.
    #[error("{at}: {key}: empty password (use no key to get a generated one)")]
    EmptyPassword { at: Location, key: String },
}
