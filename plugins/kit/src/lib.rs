//! # plugin-kit
//!
//! What the sipfence plugins share, in plain Rust: no WIT, no wasm, so each
//! plugin's policy stays testable natively and each component stays its own
//! `wit_bindgen::generate!`.
//!
//! - [`config`]: a plugin's config table (JSON from the gateway's TOML) into
//!   a serde struct, with errors that name the key (`device[2].source: …`).
//! - [`net`]: addresses and networks: the key a source is counted by (IPv6
//!   by its prefix, as the gateway bans) and CIDR matching.
//! - [`text`]: client text made safe for keys, logs and reasons; durations
//!   for people.
//! - [`verdict`]: what a security policy decides (continue, reject, drop,
//!   ban), shared by fail-to-ban and rate-limit.
//!
//! Nothing here allocates randomness or uses a `HashMap`: a plugin's std
//! gets no WASI (randomness included), so a `RandomState` would trap.

pub mod config;
pub mod net;
pub mod text;
pub mod verdict;

/// A log line's level (the host's `log.level`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    Trace,
    Debug,
    Info,
    Warn,
    Error,
}
