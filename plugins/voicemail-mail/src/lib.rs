//! # voicemail-mail
//!
//! A sipfence plugin that asks only for `voicemail-events`: for each
//! `voicemail-recorded` event it composes a mail to the mailbox owner (`[[extension]] email`)
//! from the templates of its config and hands it to the host's `mail`
//! capability with the recording attached. The host stores the mail in its
//! SQLite queue before `send` returns and delivers it in the background, so
//! nothing here waits on SMTP and a slow or absent server loses nothing.
//!
//! ## Layout
//! - [`compose`]: the config, the templates and the mail they make, in
//!   plain Rust; no WIT.
//! - `component` (wasm only): the thin glue to the WIT world `plugin`. It
//!   imports `log` and `mail` (config: `grants = ["mail"]`).
//!
//! See `docs/PLUGINS.md`.

pub mod compose;

#[cfg(target_family = "wasm")]
// For the generated bindings; the glue itself has no unsafe code.
#[allow(unsafe_code, clippy::too_many_arguments)]
mod component {
    use std::sync::OnceLock;

    use crate::compose::{Facts, Settings};

    wit_bindgen::generate!({ path: "../../wit", world: "plugin" });

    use sipfence::plugin::{log, mail};

    /// This instance's settings, from `init`.
    static SETTINGS: OnceLock<Settings> = OnceLock::new();

    struct VoicemailMail;

    impl Guest for VoicemailMail {
        fn hooks() -> Hooks {
            Hooks::VOICEMAIL_EVENTS
        }

        fn init(config: String) -> Result<(), String> {
            let parsed = Settings::from_json(&config).map_err(|e| e.to_string())?;
            SETTINGS
                .set(parsed)
                .map_err(|_| "init was called twice".to_owned())
        }

        fn on_request(_basics: RequestBasics) -> Verdict {
            // Not in `hooks`: the host never calls it.
            Verdict::Continue
        }

        fn on_event(event: Event) -> Reaction {
            let Event::VoicemailRecorded(v) = event else {
                return Reaction::None;
            };
            // The host calls `init` before any hook.
            let settings = SETTINGS.get().expect("init is called before any hook");
            let facts = Facts {
                tenant: &v.tenant,
                mailbox: &v.mailbox,
                email: v.email.as_deref(),
                caller: &v.caller,
                caller_name: v.caller_name.as_deref(),
                received_ms: v.received_ms,
                duration_ms: v.duration_ms,
                file_name: &v.file_name,
            };
            let Some(composed) = settings.compose(&facts) else {
                log::log(
                    log::Level::Info,
                    &format!(
                        "voicemail {} for mailbox {}: no e-mail address, nothing sent",
                        v.id, v.mailbox
                    ),
                );
                return Reaction::None;
            };
            let message = mail::Message {
                to: composed.to,
                from: composed.from,
                subject: composed.subject,
                body: composed.body,
                voicemail: settings.attach.then_some(v.id),
            };
            match mail::send(&message) {
                Ok(id) => log::log(
                    log::Level::Info,
                    &format!("voicemail {} queued for mailing as {id}", v.id),
                ),
                Err(why) => log::log(
                    log::Level::Warn,
                    &format!("voicemail {} not queued for mailing: {why}", v.id),
                ),
            }
            Reaction::None
        }

        fn route(_call: CallInfo) -> RouteDecision {
            // Not in `hooks`: the host never calls it.
            RouteDecision::NoOpinion
        }
    }

    export!(VoicemailMail);
}
