//! The host side of the plugin world's imports: the `request` getters,
//! `log`, `clock`, `counter` and `kv`, implemented on [`HostState`], the data
//! of every plugin store.
//!
//! Which of these a plugin's linker gets is decided in
//! [`super::capabilities`]; here every function just does its job. Host
//! functions return `Err` (a trap) only for host bugs.

use std::sync::Arc;

use super::bindings::sipfence::plugin::{clock, counter, kv, log, mail, request, types};
use super::conversions;
use super::state::PluginState;
use super::RequestView;

/// Longest log message kept from a plugin.
const MAX_LOG_BYTES: usize = 2048;

/// The data of one plugin store.
pub(super) struct HostState {
    /// The plugin's name, for its log lines.
    pub plugin: Arc<str>,
    /// The request of the `on-request` call in progress, read by the
    /// `request` getters; None between calls, so a pooled instance keeps no
    /// message alive.
    pub request: Option<RequestView>,
    /// Memory and table caps.
    pub limiter: Limiter,
    /// The plugin's counters and values (reachable only when granted).
    pub state: Arc<PluginState>,
    /// The mail queue (reachable only when granted `mail`).
    pub mail: Option<Arc<dyn super::MailService>>,
}

impl HostState {
    pub fn new(plugin: Arc<str>, memory_limit: usize, state: Arc<PluginState>) -> HostState {
        HostState {
            plugin,
            request: None,
            limiter: Limiter {
                memory_limit,
                memory_exceeded: false,
            },
            state,
            mail: None,
        }
    }

    /// `read` of the request in progress; the type's default without one.
    fn read<T: Default>(&self, read: impl FnOnce(&RequestView) -> T) -> T {
        self.request.as_ref().map(read).unwrap_or_default()
    }
}

/// The per-store resource caps. Unlike `wasmtime::StoreLimits` it records
/// that the memory cap was hit, so a memory bomb is reported as such and not
/// as an anonymous trap.
pub(super) struct Limiter {
    /// Largest linear memory, in bytes.
    pub memory_limit: usize,
    /// Set when a memory grew past the limit (reset before each call).
    pub memory_exceeded: bool,
}

/// Elements per table: generous for function tables, small enough that a
/// `table.grow` bomb stays harmless.
const TABLE_ELEMENTS_LIMIT: usize = 100_000;

/// The error a memory bomb traps with.
#[derive(Debug, thiserror::Error)]
#[error("memory limit exceeded: wanted {desired} bytes, the limit is {limit}")]
pub(super) struct MemoryLimitExceeded {
    pub desired: usize,
    pub limit: usize,
}

impl wasmtime::ResourceLimiter for Limiter {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.memory_limit {
            self.memory_exceeded = true;
            // A trap rather than memory.grow returning -1: a guest would
            // abort anyway, and this way the log says what happened.
            return Err(wasmtime::Error::new(MemoryLimitExceeded {
                desired,
                limit: self.memory_limit,
            }));
        }
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= TABLE_ELEMENTS_LIMIT)
    }

    fn instances(&self) -> usize {
        // A component is a handful of core instances.
        64
    }

    fn tables(&self) -> usize {
        64
    }

    fn memories(&self) -> usize {
        16
    }
}

// ---------------------------------------------------------------------------
// request: the request of the on-request call in progress

impl types::Host for HostState {}

impl request::Host for HostState {
    fn method(&mut self) -> wasmtime::Result<String> {
        Ok(self.read(|r| r.method().to_owned()))
    }

    fn request_uri(&mut self) -> wasmtime::Result<String> {
        Ok(self.read(|r| {
            r.message()
                .request_uri()
                .map(ToString::to_string)
                .unwrap_or_default()
        }))
    }

    fn from_user(&mut self) -> wasmtime::Result<Option<String>> {
        Ok(self.read(|r| r.from().and_then(|f| f.uri.user.clone())))
    }

    fn from_uri(&mut self) -> wasmtime::Result<String> {
        Ok(self.read(|r| r.from().map(|f| f.uri.to_string()).unwrap_or_default()))
    }

    fn to_user(&mut self) -> wasmtime::Result<Option<String>> {
        Ok(self.read(|r| r.to().and_then(|t| t.uri.user.clone())))
    }

    fn to_uri(&mut self) -> wasmtime::Result<String> {
        Ok(self.read(|r| r.to().map(|t| t.uri.to_string()).unwrap_or_default()))
    }

    fn contact(&mut self) -> wasmtime::Result<Option<String>> {
        Ok(self.read(|r| r.contact().map(str::to_owned)))
    }

    fn call_id(&mut self) -> wasmtime::Result<String> {
        Ok(self.read(|r| r.message().call_id().unwrap_or_default().to_owned()))
    }

    fn cseq(&mut self) -> wasmtime::Result<u32> {
        Ok(self.read(|r| r.message().cseq().map_or(0, |c| c.seq)))
    }

    fn user_agent(&mut self) -> wasmtime::Result<Option<String>> {
        Ok(self.read(conversions::user_agent))
    }

    fn tenant(&mut self) -> wasmtime::Result<String> {
        Ok(self.read(|r| r.info().tenant.clone()))
    }

    fn source(&mut self) -> wasmtime::Result<types::Address> {
        Ok(match &self.request {
            Some(r) => conversions::address(r.info().source),
            None => types::Address {
                ip: String::new(),
                port: 0,
            },
        })
    }

    fn auth_user(&mut self) -> wasmtime::Result<Option<String>> {
        Ok(self.read(|r| r.info().auth_user.clone()))
    }

    fn header(&mut self, name: String) -> wasmtime::Result<Option<String>> {
        Ok(self.read(|r| r.message().headers.get(&name).map(str::to_owned)))
    }

    fn headers(&mut self) -> wasmtime::Result<Vec<(String, String)>> {
        Ok(self.read(|r| {
            r.message()
                .headers
                .iter()
                .map(|(n, v)| (n.to_owned(), v.to_owned()))
                .collect()
        }))
    }
}

// ---------------------------------------------------------------------------
// log and clock: always granted

impl log::Host for HostState {
    fn log(&mut self, level: log::Level, message: String) -> wasmtime::Result<()> {
        let message = log_text(message);
        let plugin = &*self.plugin;
        match level {
            log::Level::Trace => tracing::trace!(plugin, "{message}"),
            log::Level::Debug => tracing::debug!(plugin, "{message}"),
            log::Level::Info => tracing::info!(plugin, "{message}"),
            log::Level::Warn => tracing::warn!(plugin, "{message}"),
            log::Level::Error => tracing::error!(plugin, "{message}"),
        }
        Ok(())
    }
}

/// A plugin's log text: at most [`MAX_LOG_BYTES`], one line.
fn log_text(mut message: String) -> String {
    if message.len() > MAX_LOG_BYTES {
        let mut cut = MAX_LOG_BYTES;
        while !message.is_char_boundary(cut) {
            cut -= 1;
        }
        message.truncate(cut);
        message.push('…');
    }
    if message.contains(['\r', '\n']) {
        message = message.replace(['\r', '\n'], " ");
    }
    message
}

impl clock::Host for HostState {
    fn now_ms(&mut self) -> wasmtime::Result<u64> {
        Ok(crate::server::now_ms())
    }
}

// ---------------------------------------------------------------------------
// counter and kv: granted per plugin

impl counter::Host for HostState {
    fn add(&mut self, key: String, by: u32, window_ms: u64) -> wasmtime::Result<u64> {
        let now = self.state.now();
        Ok(self.state.counter_add(&key, by, window_ms, now))
    }

    fn get(&mut self, key: String, window_ms: u64) -> wasmtime::Result<u64> {
        let now = self.state.now();
        Ok(self.state.counter_get(&key, window_ms, now))
    }

    fn add_source(
        &mut self,
        ip: types::IpAddress,
        ipv6_prefix_len: u8,
        tag: u8,
        by: u32,
        window_ms: u64,
    ) -> wasmtime::Result<u64> {
        let key = super::state::source_key(conversions::ip_from_wit(&ip), ipv6_prefix_len, tag);
        let now = self.state.now();
        Ok(self.state.counter_add_source(key, by, window_ms, now))
    }

    fn add_distinct(
        &mut self,
        key: String,
        member: String,
        window_ms: u64,
    ) -> wasmtime::Result<u64> {
        let now = self.state.now();
        Ok(self
            .state
            .counter_add_distinct(&key, &member, window_ms, now))
    }

    fn reset(&mut self, key: String) -> wasmtime::Result<()> {
        self.state.counter_reset(&key);
        Ok(())
    }
}

impl kv::Host for HostState {
    fn get(&mut self, key: String) -> wasmtime::Result<Option<String>> {
        Ok(self.state.kv_get_now(&key))
    }

    fn set(&mut self, key: String, value: String, ttl_ms: u64) -> wasmtime::Result<()> {
        let now = self.state.now();
        let len = value.len();
        if !self.state.kv_set(&key, value, ttl_ms, now) {
            tracing::warn!(
                plugin = &*self.plugin,
                bytes = len,
                "kv value too large, not stored"
            );
        }
        Ok(())
    }

    fn delete(&mut self, key: String) -> wasmtime::Result<()> {
        self.state.kv_delete(&key);
        Ok(())
    }
}

impl mail::Host for HostState {
    fn send(&mut self, message: mail::Message) -> wasmtime::Result<Result<String, String>> {
        let Some(service) = &self.mail else {
            return Ok(Err("this gateway has no mail queue".to_owned()));
        };
        Ok(service.send(
            &self.plugin,
            super::PluginMail {
                to: message.to,
                from: message.from,
                subject: message.subject,
                body: message.body,
                voicemail: message.voicemail,
            },
        ))
    }
}
