//! Built-in plugins: wasm components embedded in the binary, named in the
//! config as `path = "builtin:NAME"`.
//!
//! `host/build.rs` holds the list of built-ins and embeds each one whose
//! component `cargo xtask run|test` has built
//! (`plugins/target/wasm32-wasip2/release/NAME.wasm`, `-` as `_`). A build
//! without them still works; loading such a plugin fails with a message
//! saying how to get it.

use std::borrow::Cow;

use super::{PluginError, PluginSource, PluginSpec};

include!(concat!(env!("OUT_DIR"), "/builtins.rs"));

/// The names of all built-in plugins, embedded or not.
pub fn names() -> impl Iterator<Item = &'static str> {
    BUILTINS.iter().map(|(name, _)| *name)
}

/// The embedded component of built-in `name`: None if there is no such
/// built-in, Some(None) if this build does not embed it.
pub fn component(name: &str) -> Option<Option<&'static [u8]>> {
    BUILTINS
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, bytes)| *bytes)
}

/// The component bytes of `spec`: embedded, or read from its file.
pub(super) fn bytes_of(spec: &PluginSpec) -> Result<Cow<'static, [u8]>, PluginError> {
    match &spec.source {
        PluginSource::Builtin(builtin) => match component(builtin) {
            Some(Some(bytes)) => Ok(Cow::Borrowed(bytes)),
            Some(None) => Err(PluginError::BuiltinMissing {
                plugin: spec.name.clone(),
            }),
            None => Err(PluginError::UnknownBuiltin {
                plugin: spec.name.clone(),
                builtin: builtin.clone(),
                known: names().collect::<Vec<_>>().join(", "),
            }),
        },
        PluginSource::File(path) => {
            std::fs::read(path)
                .map(Cow::Owned)
                .map_err(|source| PluginError::Read {
                    plugin: spec.name.clone(),
                    path: path.clone(),
                    source,
                })
        }
    }
}

/// The built-in plugins as the gateway loads them: from the example
/// configs, through the real runtime. Skipped for a built-in this build does
/// not embed (`cargo xtask test` builds them first).
#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};
    use std::sync::Arc;

    use super::*;
    use crate::config::Config;
    use crate::plugins::{
        AuthAttempt, Chain, Event, PluginEngine, RequestInfo, RequestView, SharedState, Verdict,
    };
    use crate::transport::Transport;

    fn embedded(name: &str) -> bool {
        component(name).flatten().is_some()
    }

    fn configs() -> Vec<PathBuf> {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config");
        let mut files = vec![root.join("sipfence.toml")];
        for entry in std::fs::read_dir(root.join("examples")).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "toml") {
                files.push(path);
            }
        }
        files.sort();
        files
    }

    /// The plugins of config `file`, loaded. Fails when one is not
    /// embedded: the plugins were not built (`cargo xtask test` builds
    /// them first).
    fn chain_of(file: &str) -> Chain {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../config")
            .join(file);
        let config = Config::load(&path).unwrap_or_else(|e| panic!("{e}"));
        for plugin in &config.plugins {
            if let PluginSource::Builtin(name) = &plugin.source {
                assert!(
                    embedded(name),
                    "built-in plugin {name} is not embedded: build the plugins first \
                     (cargo xtask test does)"
                );
            }
        }
        let mut specs = config.plugins;
        for spec in &mut specs {
            // Wall-clock deadlines: a busy test machine must not time out.
            spec.timeout_ms = 2000;
        }
        let engine = PluginEngine::new().unwrap();
        Chain::load(&specs, &engine, Arc::new(SharedState::default()))
            .unwrap_or_else(|e| panic!("{file}: {e}"))
    }

    /// Every config the repo ships validates, and its plugins load: their
    /// `init` accepts their `[plugin.config]` and their grants cover their
    /// imports (`check-config` checks the first, not the rest).
    #[test]
    fn every_shipped_config_loads_with_its_plugins() {
        let files = configs();
        assert!(files.len() >= 4, "{files:?}");
        for file in files {
            let config = Config::load(&file).unwrap_or_else(|e| panic!("{e}"));
            let name = file.file_name().unwrap().to_str().unwrap();
            let prefix = if name == "sipfence.toml" {
                ""
            } else {
                "examples/"
            };
            if config.plugins.is_empty() {
                continue;
            }
            let chain = chain_of(&format!("{prefix}{name}"));
            let names: Vec<&str> = chain.names().collect();
            let expected: Vec<&str> = config.plugins.iter().map(|p| p.name.as_str()).collect();
            assert_eq!(names, expected, "{name}");
        }
    }

    #[test]
    fn every_builtin_is_listed() {
        let names: Vec<&str> = names().collect();
        assert_eq!(
            names,
            [
                "fail-to-ban",
                "ip-auth",
                "number-analysis",
                "rate-limit",
                "voicemail-mail"
            ]
        );
    }

    /// A bad entry stops the plugin loading, named by position and key, and
    /// each plugin loads with exactly the grants its docs give it.
    #[test]
    fn config_errors_and_grants_of_the_new_plugins() {
        if !embedded("ip-auth") || !embedded("rate-limit") {
            return;
        }
        let text = |extra: &str| {
            format!(
                "[[plugin]]\nname = \"ip-auth\"\npath = \"builtin:ip-auth\"\n\
                 [[plugin.config.device]]\nextension = \"150\"\nsource = \"127.0.0.3\"\n\
                 [[plugin.config.device]]\nextension = \"151\"\nsource = \"127.0.0.4\"\n\
                 {extra}\n\
                 [[plugin]]\nname = \"rate-limit\"\npath = \"builtin:rate-limit\"\n\
                 grants = [\"counter\"]\n"
            )
        };
        let engine = PluginEngine::new().unwrap();
        let load = |text: &str| {
            let config = Config::parse(text, "x.toml").unwrap_or_else(|e| panic!("{e}"));
            Chain::load(&config.plugins, &engine, Arc::new(SharedState::default()))
        };
        let chain = load(&text("")).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(chain.on_request_names().count(), 2);
        let bad = "[[plugin.config.device]]\nextension = \"152\"\nsource = \"10.0.0/33\"";
        assert_eq!(
            load(&text(bad)).err().unwrap().to_string(),
            "plugin \"ip-auth\": init failed: device[2].source: invalid address or CIDR \"10.0.0/33\""
        );
        let without_grant = text("").replace("grants = [\"counter\"]\n", "");
        assert_eq!(
            load(&without_grant).err().unwrap().to_string(),
            "plugin \"rate-limit\": imports sipfence:plugin/counter@0.6.0 but is not granted \
             \"counter\" (add it to grants)"
        );
    }

    /// voicemail-mail imports `mail`: without the grant it does not load;
    /// a template naming an unknown fact stops it, naming the key.
    #[test]
    fn voicemail_mail_needs_its_grant_and_names_a_bad_template() {
        if !embedded("voicemail-mail") {
            return;
        }
        let engine = PluginEngine::new().unwrap();
        let load = |extra: &str| {
            let text =
                format!("[[plugin]]\nname = \"vm\"\npath = \"builtin:voicemail-mail\"\n{extra}");
            let config = Config::parse(&text, "x.toml").unwrap_or_else(|e| panic!("{e}"));
            Chain::load(&config.plugins, &engine, Arc::new(SharedState::default()))
        };
        let chain = load("grants = [\"mail\"]\n").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(chain.on_request_names().count(), 0, "an event plugin only");
        assert_eq!(
            load("").err().unwrap().to_string(),
            "plugin \"vm\": imports sipfence:plugin/mail@0.6.0 but is not granted \"mail\" \
             (add it to grants)"
        );
        let bad = load("grants = [\"mail\"]\n[plugin.config]\nsubject = \"{calller}\"\n");
        assert!(
            bad.as_ref()
                .err()
                .is_some_and(|e| e.to_string().starts_with(
                    "plugin \"vm\": init failed: subject: {calller} is not one of caller,"
                )),
            "{:?}",
            bad.err().map(|e| e.to_string())
        );
    }

    fn view(text: &str, source: &str, transport: Transport, tenant: &str) -> RequestView {
        let message = crate::sip::Message::parse(text.as_bytes()).unwrap();
        RequestView::new(
            message,
            RequestInfo {
                tenant: tenant.into(),
                source: source.parse().unwrap(),
                transport,
                source_verified: transport == Transport::Tcp,
                auth_user: None,
            },
        )
    }

    fn invite(from: &str) -> String {
        format!(
            "INVITE sip:100@127.0.0.1 SIP/2.0\r\n\
             Via: SIP/2.0/UDP 127.0.0.3:5060;branch=z9hG4bK-door\r\n\
             Max-Forwards: 70\r\n\
             From: <sip:{from}@127.0.0.1>;tag=1\r\n\
             To: <sip:100@127.0.0.1>\r\n\
             Call-ID: door-1\r\n\
             CSeq: 1 INVITE\r\n\
             Content-Length: 0\r\n\r\n"
        )
    }

    #[test]
    fn ip_auth_trusts_the_example_devices() {
        let chain = chain_of("examples/ip-auth.toml");
        let door = view(&invite("150"), "127.0.0.3:5060", Transport::Udp, "");
        let (verdict, plugin) = chain.on_request(&door);
        assert_eq!(
            verdict,
            Verdict::Trust {
                tenant: String::new(),
                extension: "150".into()
            }
        );
        assert_eq!(plugin.as_deref(), Some("ip-auth"));
        // Another extension from the door's address, the door's extension
        // from elsewhere, the alarm panel over UDP: the digest way.
        for (from, source, transport) in [
            ("100", "127.0.0.3:5060", Transport::Udp),
            ("150", "127.0.0.4:5060", Transport::Udp),
            ("151", "127.0.0.9:5060", Transport::Udp),
            ("151", "127.0.2.1:5060", Transport::Tcp),
        ] {
            let v = view(&invite(from), source, transport, "");
            assert_eq!(chain.on_request(&v).0, Verdict::Continue, "{from} {source}");
        }
        let panel = view(&invite("151"), "127.0.0.9:5060", Transport::Tcp, "");
        assert!(matches!(chain.on_request(&panel).0, Verdict::Trust { .. }));
        let a = view(&invite("150"), "[::1]:5070", Transport::Udp, "a.example");
        assert_eq!(
            chain.on_request(&a).0,
            Verdict::Trust {
                tenant: "a.example".into(),
                extension: "150".into()
            }
        );
        let stats = chain.stats();
        assert!(
            stats.iter().all(|s| s.traps == 0 && s.bad_answers == 0),
            "{stats:?}"
        );
    }

    fn register(user_agent: &str) -> String {
        format!(
            "REGISTER sip:127.0.0.1 SIP/2.0\r\n\
             Via: SIP/2.0/UDP 127.0.0.3:5060;branch=z9hG4bK-reg\r\n\
             Max-Forwards: 70\r\n\
             From: <sip:100@127.0.0.1>;tag=1\r\n\
             To: <sip:100@127.0.0.1>\r\n\
             Call-ID: reg-1\r\n\
             CSeq: 1 REGISTER\r\n\
             User-Agent: {user_agent}\r\n\
             Content-Length: 0\r\n\r\n"
        )
    }

    /// The shipped fail-to-ban promises `continue` for a phone's
    /// User-Agent, never for a scanner's.
    #[test]
    fn fail_to_ban_promises_continue_for_phones_not_scanners() {
        let chain = chain_of("sipfence.toml");
        let phone = "Yealink SIP-T46S 66.86.0.15";
        let request = view(&register(phone), "127.0.0.3:5060", Transport::Udp, "");
        assert_eq!(chain.on_request(&request).0, Verdict::Continue);
        assert!(chain.promised_continue(Some(phone)));
        assert_eq!(chain.on_request(&request).0, Verdict::Continue);
        let scanner = view(
            &register("friendly-scanner"),
            "127.0.0.3:5060",
            Transport::Udp,
            "",
        );
        assert_eq!(chain.on_request(&scanner).0, Verdict::Drop);
        assert!(!chain.promised_continue(Some("friendly-scanner")));
        let stats = &chain.stats()[0];
        assert_eq!(
            (stats.name.as_str(), stats.calls, stats.reused),
            ("fail-to-ban", 2, 2)
        );
    }

    /// The shipped fail-to-ban asks not to hear of a phone's repeated
    /// successes while it would skip their renewals anyway (1/16 of its
    /// office window: 225 s by default).
    #[test]
    fn fail_to_ban_does_not_hear_repeated_successes() {
        let chain = chain_of("sipfence.toml");
        let success = || {
            Event::AuthSucceeded(AuthAttempt {
                source: "127.0.0.3:5060".parse().unwrap(),
                transport: Transport::Udp,
                tenant: String::new(),
                user: "100".into(),
                user_agent: Some("Yealink SIP-T46S".into()),
            })
        };
        let ip = "127.0.0.3".parse().unwrap();
        assert!(chain.hears_success(ip, "", "100"));
        assert!(chain.on_event(&success()).is_empty());
        assert!(!chain.hears_success(ip, "", "100"));
        assert!(chain.on_event(&success()).is_empty());
        assert!(chain.hears_success(ip, "", "101"), "another extension");
        let stats = &chain.stats()[0];
        assert_eq!((stats.calls, stats.reused), (1, 2));
    }

    #[test]
    fn rate_limit_answers_one_503_then_drops() {
        let chain = chain_of("examples/rate-limit.toml");
        let request = view(&invite("100"), "127.0.0.20:5060", Transport::Udp, "");
        let started = std::time::Instant::now();
        for i in 0..200 {
            assert_eq!(
                chain.on_request(&request).0,
                Verdict::Continue,
                "request {i}"
            );
        }
        if started.elapsed().as_millis() > 500 {
            // The example's window is 1 s of real time: a machine this busy
            // cannot tell where the window ends.
            return;
        }
        assert_eq!(
            chain.on_request(&request),
            (
                Verdict::Reject {
                    code: 503,
                    reason: "Rate limit exceeded".into()
                },
                Some("rate-limit".into())
            )
        );
        assert_eq!(chain.on_request(&request).0, Verdict::Drop);
        // Another source is not affected.
        let other = view(&invite("100"), "127.0.0.21:5060", Transport::Udp, "");
        assert_eq!(chain.on_request(&other).0, Verdict::Continue);
    }
}
