//! # fail-to-ban
//!
//! A sipfence plugin that bans addresses which fail SIP authentication too
//! often, scan for extensions, guess slowly or announce a scanner, and locks
//! an extension that is being guessed from many addresses.
//!
//! ## Layout
//! - [`policy`]: every rule, in plain Rust over two small traits (the host's
//!   shared state and a lazy request view); no WIT types.
//! - [`scan`]: the case-insensitive User-Agent search, without allocating.
//! - [`renewals`]: which kv marks this instance wrote lately, so repeated
//!   successes do not rewrite them.
//! - [`memory`]: an in-memory host state with a settable clock, for tests.
//! - `component` (wasm only): the thin glue. It implements the WIT world
//!   `plugin` of `wit/sipfence.wit` with `wit-bindgen`, converts WIT types to
//!   the policy's and back, and maps the policy's `Shared` to the host's
//!   `counter`, `kv`, `clock` and `log` imports.
//!
//! Native `cargo test` builds only the policy; `cargo build --target
//! wasm32-wasip2` builds the component. See `docs/PLUGINS.md`.

pub mod memory;
pub mod policy;
pub mod renewals;
pub mod scan;

#[cfg(target_family = "wasm")]
// For the generated bindings; the glue itself has no unsafe code.
#[allow(unsafe_code, clippy::too_many_arguments)]
mod component {
    use std::net::{Ipv4Addr, Ipv6Addr};
    use std::sync::OnceLock;

    use crate::policy::{self, Policy, Shared};

    wit_bindgen::generate!({ path: "../../wit", world: "plugin" });

    use sipfence::plugin::types::{AuthAttempt, AuthFailure, Ban, IpAddress, Rejection};
    use sipfence::plugin::{clock, counter, kv, log, request};

    /// This instance's settings, from `init`. Config, not state: every
    /// count lives behind the host's `counter` and `kv`.
    static POLICY: OnceLock<Policy> = OnceLock::new();

    fn policy() -> &'static Policy {
        // The host calls `init` before any hook; a call before is a host bug
        // and traps.
        POLICY.get().expect("init is called before any hook")
    }

    struct FailToBan;

    impl Guest for FailToBan {
        fn hooks() -> Hooks {
            // The User-Agent comes with every call: scanner signatures read it.
            Hooks::ON_REQUEST | Hooks::AUTH_EVENTS | Hooks::USER_AGENT
        }

        fn init(config: String) -> Result<(), String> {
            let policy = Policy::from_json(&config).map_err(|e| e.to_string())?;
            POLICY
                .set(policy)
                .map_err(|_| "init was called twice".to_owned())
        }

        fn on_request(basics: RequestBasics) -> Verdict {
            match policy().on_request(&Host, &View(&basics)) {
                policy::Verdict::Continue => Verdict::Continue,
                policy::Verdict::ContinueForUserAgent => Verdict::ContinueForUserAgent,
                policy::Verdict::Reject { code, reason } => {
                    Verdict::Reject(Rejection { code, reason })
                }
                policy::Verdict::Drop => Verdict::Drop,
                policy::Verdict::Ban(ban) => Verdict::Ban(to_wit(ban)),
            }
        }

        fn on_event(event: Event) -> Reaction {
            let policy = policy();
            let reaction = match event {
                Event::AuthFailed(failed) => {
                    let failure = match failed.failure {
                        AuthFailure::WrongPassword => policy::Failure::WrongPassword,
                        AuthFailure::UnknownUser => policy::Failure::UnknownUser,
                        AuthFailure::UserMismatch => policy::Failure::UserMismatch,
                        AuthFailure::RealmMismatch => policy::Failure::RealmMismatch,
                    };
                    policy.on_auth_failed(&Host, &attempt(&failed.attempt), failure)
                }
                Event::AuthSucceeded(ok) => policy.on_auth_succeeded(&Host, &attempt(&ok)),
                Event::Registered(_)
                | Event::Unregistered(_)
                | Event::CallStarted(_)
                | Event::CallEnded(_)
                | Event::VoicemailRecorded(_) => policy::Reaction::None,
            };
            match reaction {
                policy::Reaction::None => Reaction::None,
                policy::Reaction::Ban(ban) => Reaction::Ban(to_wit(ban)),
                policy::Reaction::NoneForRepeats(ms) => Reaction::NoneForRepeats(ms),
            }
        }

        fn route(_call: CallInfo) -> RouteDecision {
            // Not in `hooks`: the host never calls it.
            RouteDecision::NoOpinion
        }
    }

    export!(FailToBan);

    fn attempt(a: &AuthAttempt) -> policy::Attempt<'_> {
        policy::Attempt {
            ip: &a.source.ip,
            tenant: &a.tenant,
            user: &a.user,
        }
    }

    fn to_wit(ban: policy::Ban) -> Ban {
        Ban {
            duration_ms: ban.duration_ms,
            reason: ban.reason,
        }
    }

    /// The request: its basics came with the call; the rest is read from
    /// the host's `request` interface, one getter at a time.
    struct View<'a>(&'a RequestBasics);

    impl policy::RequestView for View<'_> {
        fn method(&self) -> String {
            request::method()
        }
        fn user_agent(&self) -> Option<&str> {
            self.0.user_agent.as_deref()
        }
        fn source_ip(&self) -> String {
            // Numbers across the boundary; the text is made here.
            match self.0.source_ip {
                IpAddress::Ipv4(n) => Ipv4Addr::from(n).to_string(),
                IpAddress::Ipv6((high, low)) => {
                    Ipv6Addr::from(u128::from(high) << 64 | u128::from(low)).to_string()
                }
            }
        }
        fn source_verified(&self) -> bool {
            self.0.source_verified
        }
        fn tenant(&self) -> String {
            request::tenant()
        }
        fn auth_user(&self) -> Option<String> {
            request::auth_user()
        }
        fn kv_generation(&self) -> Option<u64> {
            Some(self.0.kv_generation)
        }
    }

    /// The host's imports as the policy's shared state.
    struct Host;

    impl Shared for Host {
        fn add(&self, key: &str, by: u32, window_ms: u64) -> u64 {
            counter::add(key, by, window_ms)
        }
        fn get(&self, key: &str, window_ms: u64) -> u64 {
            counter::get(key, window_ms)
        }
        fn add_distinct(&self, key: &str, member: &str, window_ms: u64) -> u64 {
            counter::add_distinct(key, member, window_ms)
        }
        fn reset(&self, key: &str) {
            counter::reset(key)
        }
        fn kv_get(&self, key: &str) -> Option<String> {
            kv::get(key)
        }
        fn kv_set(&self, key: &str, value: &str, ttl_ms: u64) {
            kv::set(key, value, ttl_ms)
        }
        fn kv_delete(&self, key: &str) {
            kv::delete(key)
        }
        fn now_ms(&self) -> u64 {
            clock::now_ms()
        }
        fn log(&self, level: policy::Level, message: &str) {
            let level = match level {
                policy::Level::Trace => log::Level::Trace,
                policy::Level::Debug => log::Level::Debug,
                policy::Level::Info => log::Level::Info,
                policy::Level::Warn => log::Level::Warn,
                policy::Level::Error => log::Level::Error,
            };
            log::log(level, message)
        }
    }
}
