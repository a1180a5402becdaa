//! # number-analysis
//!
//! A sipfence plugin with the `route` hook: it decides where a new call goes
//! from the called number's longest matching prefix (then the caller's),
//! rewriting the number sent on: an extension, a ring group, a SIP trunk,
//! voicemail, or a rejection. No rule matching: no opinion (the gateway's
//! built-in lookup of the dialled number).
//!
//! ## Layout
//! - [`rules`]: the rule sets and their matching, in plain Rust; no WIT.
//! - `component` (wasm only): the thin glue to the WIT world `plugin`. It
//!   imports only `log` (no grants needed).
//!
//! See `docs/PLUGINS.md`.

pub mod rules;

#[cfg(target_family = "wasm")]
// For the generated bindings; the glue itself has no unsafe code.
#[allow(unsafe_code, clippy::too_many_arguments)]
mod component {
    use std::sync::OnceLock;

    use crate::rules::{self, Rules};

    wit_bindgen::generate!({ path: "../../wit", world: "plugin" });

    use sipfence::plugin::log;
    use sipfence::plugin::types::{Rejection, TrunkRoute};

    /// This instance's rules, from `init` (config, not state).
    static RULES: OnceLock<Rules> = OnceLock::new();

    struct NumberAnalysis;

    impl Guest for NumberAnalysis {
        fn hooks() -> Hooks {
            Hooks::ROUTE
        }

        fn init(config: String) -> Result<(), String> {
            let parsed = Rules::from_json(&config).map_err(|e| e.to_string())?;
            RULES
                .set(parsed)
                .map_err(|_| "init was called twice".to_owned())
        }

        fn on_request(_basics: RequestBasics) -> Verdict {
            // Not in `hooks`: the host never calls it.
            Verdict::Continue
        }

        fn on_event(_event: Event) -> Reaction {
            // Not in `hooks`: the host never calls it.
            Reaction::None
        }

        fn route(call: CallInfo) -> RouteDecision {
            // The host calls `init` before any hook.
            let rules = RULES.get().expect("init is called before any hook");
            let decision = rules.route(&call.tenant, &call.caller, &call.called);
            if decision != rules::Decision::NoOpinion {
                log::log(
                    log::Level::Debug,
                    &format!("{} -> {decision:?}", call.called),
                );
            }
            match decision {
                rules::Decision::NoOpinion => RouteDecision::NoOpinion,
                rules::Decision::Extension(n) => RouteDecision::Extension(n),
                rules::Decision::RingGroup(n) => RouteDecision::RingGroup(n),
                rules::Decision::Trunk {
                    id,
                    number,
                    allow_from_trunk,
                } => RouteDecision::Trunk(TrunkRoute {
                    id,
                    number,
                    allow_from_trunk,
                }),
                rules::Decision::Voicemail(n) => RouteDecision::Voicemail(n),
                rules::Decision::Reject { code, reason } => {
                    RouteDecision::Reject(Rejection { code, reason })
                }
            }
        }
    }

    export!(NumberAnalysis);
}
