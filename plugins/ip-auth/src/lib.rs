//! # ip-auth
//!
//! A sipfence plugin that trusts embedded SIP devices (door phones, alarm
//! panels) by their address: they can neither REGISTER nor answer a digest
//! challenge, so requests from a configured address that claim the
//! configured extension get the verdict `trust`.
//!
//! ## Layout
//! - [`policy`]: the entries and the matching, in plain Rust over a lazy
//!   request view and the log; no WIT types.
//! - `component` (wasm only): the thin glue to the WIT world `plugin` of
//!   `wit/sipfence.wit`. It imports only `log` (no grants needed).
//!
//! See `docs/PLUGINS.md`.

pub mod policy;

#[cfg(target_family = "wasm")]
// For the generated bindings; the glue itself has no unsafe code.
#[allow(unsafe_code, clippy::too_many_arguments)]
mod component {
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
    use std::sync::OnceLock;

    use crate::policy::{self, Policy};

    wit_bindgen::generate!({ path: "../../wit", world: "plugin" });

    use sipfence::plugin::types::{IpAddress, Transport, Trust};
    use sipfence::plugin::{log, request};

    /// This instance's entries, from `init` (config, not state).
    static POLICY: OnceLock<Policy> = OnceLock::new();

    fn policy() -> &'static Policy {
        // The host calls `init` before any hook; a call before is a host bug
        // and traps.
        POLICY.get().expect("init is called before any hook")
    }

    struct IpAuth;

    impl Guest for IpAuth {
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
                policy::Verdict::Trust { tenant, extension } => {
                    Verdict::Trust(Trust { tenant, extension })
                }
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

    export!(IpAuth);

    /// The request: its basics came with the call; the rest is read from
    /// the host's `request` interface, one getter at a time.
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
        fn source_port(&self) -> u16 {
            self.0.source_port
        }
        fn transport(&self) -> policy::Transport {
            match self.0.transport {
                Transport::Udp => policy::Transport::Udp,
                Transport::Tcp => policy::Transport::Tcp,
            }
        }
        fn method(&self) -> String {
            request::method()
        }
        fn from_user(&self) -> Option<String> {
            request::from_user()
        }
        fn to_user(&self) -> Option<String> {
            request::to_user()
        }
        fn tenant(&self) -> String {
            request::tenant()
        }
    }

    /// The host's log.
    struct Host;

    impl policy::Log for Host {
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
