//! # rate-limit
//!
//! A sipfence plugin that limits the requests each source address may send
//! in a window, answers the first excess request of a window with `503` and
//! drops the rest, and can ban a source that stays over the limit.
//!
//! ## Layout
//! - [`policy`]: the rule, in plain Rust over the host's counters and a lazy
//!   request view; no WIT types.
//! - `component` (wasm only): the thin glue to the WIT world `plugin` of
//!   `wit/sipfence.wit`. It imports `counter` (grant `counter`), `clock`
//!   and `log`.
//!
//! See `docs/PLUGINS.md`.

pub mod policy;

#[cfg(target_family = "wasm")]
// For the generated bindings; the glue itself has no unsafe code.
#[allow(unsafe_code, clippy::too_many_arguments)]
mod component {
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
    use std::sync::OnceLock;

    use crate::policy::{self, Policy, Shared};

    wit_bindgen::generate!({ path: "../../wit", world: "plugin" });

    use sipfence::plugin::types::{Ban, IpAddress, Rejection};
    use sipfence::plugin::{clock, counter, log};

    /// This instance's settings, from `init`. Config, not state: the counts
    /// live behind the host's `counter`.
    static POLICY: OnceLock<Policy> = OnceLock::new();

    fn policy() -> &'static Policy {
        // The host calls `init` before any hook; a call before is a host bug
        // and traps.
        POLICY.get().expect("init is called before any hook")
    }

    struct RateLimit;

    impl Guest for RateLimit {
        fn hooks() -> Hooks {
            Hooks::ON_REQUEST
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
                policy::Verdict::Ban(ban) => Verdict::Ban(Ban {
                    duration_ms: ban.duration_ms,
                    reason: ban.reason,
                }),
            }
        }

        fn on_event(_event: Event) -> Reaction {
            // Not in `hooks`: the host never calls it.
            Reaction::None
        }

        fn route(_call: CallInfo) -> RouteDecision {
            // Not in `hooks`: the host never calls it.
            RouteDecision::NoOpinion
        }
    }

    export!(RateLimit);

    /// The request's basics, which came with the call: all it reads.
    struct View<'a>(&'a RequestBasics);

    impl policy::RequestView for View<'_> {
        fn source_ip(&self) -> IpAddr {
            match self.0.source_ip {
                IpAddress::Ipv4(n) => IpAddr::V4(Ipv4Addr::from(n)),
                IpAddress::Ipv6((high, low)) => {
                    IpAddr::V6(Ipv6Addr::from(u128::from(high) << 64 | u128::from(low)))
                }
            }
        }
    }

    /// The host's imports as the policy's shared state.
    struct Host;

    impl Shared for Host {
        fn add(&self, key: &str, by: u32, window_ms: u64) -> u64 {
            counter::add(key, by, window_ms)
        }
        fn add_source(
            &self,
            ip: IpAddr,
            ipv6_prefix_len: u8,
            tag: u8,
            by: u32,
            window_ms: u64,
        ) -> u64 {
            let ip = match ip {
                IpAddr::V4(v4) => IpAddress::Ipv4(u32::from(v4)),
                IpAddr::V6(v6) => {
                    let bits = u128::from(v6);
                    IpAddress::Ipv6(((bits >> 64) as u64, bits as u64))
                }
            };
            counter::add_source(ip, ipv6_prefix_len, tag, by, window_ms)
        }
        fn get(&self, key: &str, window_ms: u64) -> u64 {
            counter::get(key, window_ms)
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
