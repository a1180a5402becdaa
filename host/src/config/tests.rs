//! Config tests: the shipped files parse, and every kind of error names the
//! file, the line and the key with the exact text below.

use std::net::SocketAddr;
use std::path::PathBuf;

use super::*;

/// The error message for `text`, named `x.toml`.
fn error(text: &str) -> String {
    match Config::parse(text, "x.toml") {
        Ok(_) => panic!("accepted:\n{text}"),
        Err(e) => e.to_string(),
    }
}

fn parse(text: &str) -> Config {
    Config::parse(text, "x.toml").unwrap_or_else(|e| panic!("{e}"))
}

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

// ---------------------------------------------------------------------------
// The shipped files

#[test]
fn embedded_default_parses_with_expected_values() {
    let c = Config::embedded_default();
    assert_eq!(c.origin, "<embedded default>");
    assert_eq!(
        c.server.listen,
        vec![addr("127.0.0.1:5060"), addr("[::1]:5060")]
    );
    assert_eq!(c.server.user_agent, "sipfence");
    assert_eq!(c.server.realm, "sipfence");
    assert!(c.server.aliases.is_empty());
    assert_eq!(c.server.control_socket, PathBuf::from("sipfence.sock"));
    assert_eq!(c.server.workers, 0);
    assert_eq!(c.server.max_message_bytes, 65535);
    assert_eq!(c.server.udp_recv_buffer_bytes, 4 * 1024 * 1024);
    assert_eq!(c.tcp.max_connections, 4096);
    assert_eq!(c.tcp.max_connections_per_source, 32);
    assert_eq!(c.tcp.idle_timeout_ms, 300_000);
    assert_eq!(
        c.stun.listen,
        vec![addr("127.0.0.1:3478"), addr("[::1]:3478")]
    );
    assert_eq!(
        (
            c.transaction.t1_ms,
            c.transaction.t2_ms,
            c.transaction.t4_ms,
            c.transaction.timer_j_ms
        ),
        (500, 4000, 5000, 5000)
    );
    assert_eq!(c.registrar.min_expires_s, 60);
    assert_eq!(c.registrar.max_expires_s, 3600);
    assert_eq!(c.registrar.default_expires_s, 3600);
    assert_eq!(c.registrar.max_contacts, 3);
    assert_eq!(c.auth.nonce_lifetime_ms, 300_000);
    assert_eq!(
        c.auth.algorithms,
        vec![AuthAlgorithm::Sha256, AuthAlgorithm::Md5]
    );
    assert_eq!(c.storage.database, PathBuf::from("sipfence.db"));
    assert_eq!(c.storage.synchronous, Synchronous::Normal);
    assert_eq!(c.storage.commit_batch_max, 512);
    assert_eq!(c.storage.commit_group, 16);
    assert_eq!(c.storage.commit_delay_us, 4_000);
    assert_eq!(c.storage.purge_interval_ms, 10_000);
    assert_eq!(c.log.format, LogFormat::Text);

    assert_eq!(c.tenants.len(), 1);
    let t = &c.tenants[0];
    assert_eq!(t.domain, None);
    assert_eq!(t.realm, "sipfence");
    let numbers: Vec<_> = t.extensions.iter().map(|e| e.number.as_str()).collect();
    assert_eq!(numbers, ["100", "101"]);
    assert!(t.extensions.iter().all(|e| e.password.is_none()));
}

/// The embedded file writes out every default; an empty file gets the same
/// values from the code. The two must not drift apart.
#[test]
fn embedded_default_matches_code_defaults() {
    let file = Config::embedded_default();
    let empty = parse("");
    assert_eq!(file.server, Server::default());
    assert_eq!(file.server, empty.server);
    assert_eq!(file.tcp, Tcp::default());
    assert_eq!(file.stun, Stun::default());
    assert_eq!(empty.stun, Stun::default());
    assert_eq!(file.transaction, Transaction::default());
    assert_eq!(file.registrar, Registrar::default());
    assert_eq!(file.auth, Auth::default());
    assert_eq!(file.storage, Storage::default());
    assert_eq!(file.log, Log::default());
    assert_eq!(file.bans, Bans::default());
    assert_eq!(empty.bans, Bans::default());
    assert_eq!(file.api, Api::default());
    assert_eq!(empty.api, Api::default());
}

#[test]
fn api_section() {
    let c =
        parse("[api]\nenabled = false\nlisten = \"127.0.0.1:0\"\ntoken = \"0123456789abcdef\"\n");
    assert!(!c.api.enabled);
    assert_eq!(c.api.listen, addr("127.0.0.1:0"));
    assert_eq!(c.api.token.as_deref(), Some("0123456789abcdef"));
    assert_eq!(
        error("[api]\nlisten = \"localhost\"\n"),
        "x.toml:2: api.listen: invalid socket address \"localhost\""
    );
    assert_eq!(
        error("[api]\n\ntoken = \"short\"\n"),
        "x.toml:3: api.token: must be at least 16 characters long"
    );
    assert_eq!(
        error("[api]\ntoken = \"has a space in it ...\"\n"),
        "x.toml:2: api.token: must be printable ASCII without spaces"
    );
}

/// Fail-to-ban is on by default, with no configuration of its own; so is
/// voicemail-mail (which sends nothing until [mail] names a server).
#[test]
fn embedded_default_runs_fail_to_ban() {
    let c = Config::embedded_default();
    assert_eq!(
        c.plugins,
        [
            PluginSpec {
                name: "fail-to-ban".into(),
                source: PluginSource::Builtin("fail-to-ban".into()),
                on_error: OnError::FailClosed,
                grants: vec![Grant::Counter, Grant::Kv],
                memory_limit_bytes: 16 * 1024 * 1024,
                timeout_ms: 10,
                enabled: true,
                config: serde_json::json!({}),
            },
            PluginSpec {
                name: "voicemail-mail".into(),
                source: PluginSource::Builtin("voicemail-mail".into()),
                on_error: OnError::FailOpen,
                grants: vec![Grant::Mail],
                memory_limit_bytes: 16 * 1024 * 1024,
                timeout_ms: 1000,
                enabled: true,
                config: serde_json::json!({}),
            }
        ]
    );
    assert_eq!(c.mail.smtp_host, None, "mail is off by default");
    // A file without [[plugin]] entries runs no plugin.
    assert!(parse("").plugins.is_empty());
}

#[test]
fn multi_tenant_example_parses() {
    let text = include_str!("../../../config/examples/multi-tenant.toml");
    let c = Config::parse(text, "config/examples/multi-tenant.toml").unwrap();
    assert!(c.server.listen.iter().all(|a| a.ip().is_loopback()));
    assert_eq!(c.tenants.len(), 2);
    assert_eq!(c.default_tenant(), None);
    for (tenant, domain) in c.tenants.iter().zip(["a.example", "b.example"]) {
        assert_eq!(tenant.domain.as_deref(), Some(domain));
        assert_eq!(tenant.realm, domain);
        let numbers: Vec<_> = tenant
            .extensions
            .iter()
            .map(|e| e.number.as_str())
            .collect();
        assert_eq!(numbers, ["100", "101"]);
        assert!(tenant.extensions.iter().all(|e| e.password.is_some()));
    }
    assert_eq!(c.tenants[0].aliases, ["sip.a.example"]);
    assert_eq!(
        c.tenants[0].extension("100").unwrap().password.as_deref(),
        Some("secret-a-100")
    );
    assert_eq!(c.tenants[1].extension("101").unwrap().max_contacts, Some(1));
}

#[test]
fn load_names_the_file() {
    let path = std::env::temp_dir().join(format!("sipfence-config-{}.toml", std::process::id()));
    std::fs::write(&path, "[server]\nlisten = []\n").unwrap();
    let e = Config::load(&path).unwrap_err().to_string();
    std::fs::remove_file(&path).unwrap();
    assert_eq!(
        e,
        format!("{}:2: server.listen: must not be empty", path.display())
    );

    let missing = PathBuf::from("/nonexistent/sipfence.toml");
    let e = Config::load(&missing).unwrap_err().to_string();
    assert!(
        e.starts_with("/nonexistent/sipfence.toml: cannot read the configuration: "),
        "{e}"
    );
}

// ---------------------------------------------------------------------------
// Shapes

#[test]
fn empty_file_has_a_default_tenant_without_extensions() {
    let c = parse("");
    assert_eq!(c.tenants.len(), 1);
    assert_eq!(c.tenants[0].domain, None);
    assert!(c.tenants[0].extensions.is_empty());
}

#[test]
fn default_tenant_comes_first_and_names_are_lowercased() {
    let c = parse(
        r#"
[server]
realm = "office"
aliases = ["PBX.lan"]

[[tenant]]
domain = "A.Example"
aliases = ["SIP.a.example"]

[[extension]]
number = "100"
password = "pw"
display_name = "Front desk"
max_contacts = 5
"#,
    );
    assert_eq!(c.server.aliases, ["pbx.lan"]);
    assert_eq!(c.tenants.len(), 2);
    let default = &c.tenants[0];
    assert_eq!(default.domain, None);
    assert_eq!(default.realm, "office");
    assert_eq!(default.aliases, ["pbx.lan"]);
    assert_eq!(
        default.extensions,
        [Extension {
            number: "100".into(),
            password: Some("pw".into()),
            display_name: Some("Front desk".into()),
            max_contacts: Some(5),
            ring_time_ms: None,
            no_answer: None,
            busy: None,
            unavailable: None,
            email: None,
            greeting: None,
            address: None,
            transport: None,
        }]
    );
    let named = &c.tenants[1];
    assert_eq!(named.domain.as_deref(), Some("a.example"));
    assert_eq!(named.realm, "a.example");
    assert_eq!(named.aliases, ["sip.a.example"]);
}

#[test]
fn non_default_values() {
    let c = parse(
        r#"
[server]
listen = ["0.0.0.0:5070", "[::]:5070", "127.0.0.1:0", "127.0.0.1:0"]
[transaction]
t1_ms = 10
t2_ms = 10
t4_ms = 20
[auth]
algorithms = ["MD5"]
[storage]
synchronous = "full"
[log]
format = "json"
"#,
    );
    assert_eq!(c.server.listen.len(), 4);
    assert_eq!(c.transaction.t1_ms, 10);
    assert_eq!(c.auth.algorithms, [AuthAlgorithm::Md5]);
    assert_eq!(c.storage.synchronous, Synchronous::Full);
    assert_eq!(c.log.format, LogFormat::Json);
}

// ---------------------------------------------------------------------------
// tenant_for_host

const TENANTS: &str = r#"
[server]
aliases = ["pbx.lan"]

[[extension]]
number = "100"

[[tenant]]
domain = "a.example"
aliases = ["sip.a.example"]

[[tenant]]
domain = "b.example"
"#;

fn served_by(c: &Config, host: &str) -> Option<Option<String>> {
    c.tenant_for_host(host).map(|t| t.domain.clone())
}

#[test]
fn tenant_for_host_routes_by_domain_alias_and_literal() {
    let c = parse(TENANTS);
    let a = Some(Some("a.example".to_owned()));
    let b = Some(Some("b.example".to_owned()));
    let default = Some(None);
    assert_eq!(served_by(&c, "a.example"), a);
    assert_eq!(served_by(&c, "sip.a.example"), a);
    assert_eq!(served_by(&c, "b.example"), b);
    assert_eq!(served_by(&c, "192.0.2.7"), default);
    assert_eq!(served_by(&c, "::1"), default);
    assert_eq!(served_by(&c, "[::1]"), default);
    assert_eq!(served_by(&c, "[2001:db8::1]"), default);
    assert_eq!(served_by(&c, "localhost"), default);
    assert_eq!(served_by(&c, "pbx.lan"), default);
    assert_eq!(served_by(&c, "c.example"), None);
    assert_eq!(served_by(&c, "[192.0.2.7]"), None);
    assert_eq!(served_by(&c, "example"), None);
}

#[test]
fn tenant_for_a_parsed_host_agrees_with_its_text() {
    for text in [TENANTS, "", "[[tenant]]\ndomain = \"a.example\"\n"] {
        let c = parse(text);
        for host in [
            "a.example",
            "sip.a.example",
            "c.example",
            "localhost",
            "pbx.lan",
            "192.0.2.7",
            "[::1]",
            "[2001:db8::1]",
        ] {
            let parsed = crate::sip::Host::parse(host).unwrap();
            assert_eq!(
                c.tenant_for(&parsed).map(|t| t.domain.clone()),
                served_by(&c, host.trim_matches(['[', ']'])),
                "{host} with {text:?}"
            );
        }
    }
}

#[test]
fn tenant_for_host_without_default_tenant() {
    let c = parse(
        r#"
[[tenant]]
domain = "a.example"
"#,
    );
    assert_eq!(c.tenants.len(), 1);
    assert_eq!(
        served_by(&c, "a.example"),
        Some(Some("a.example".to_owned()))
    );
    assert_eq!(served_by(&c, "127.0.0.1"), None);
    assert_eq!(served_by(&c, "[::1]"), None);
    assert_eq!(served_by(&c, "localhost"), None);
}

// ---------------------------------------------------------------------------
// Errors, one kind each: exact text

#[test]
fn syntax_error_names_the_line() {
    let text = "[server]\nworkers = 1\nuser_agent = \"x\nlisten = []\n";
    assert_eq!(error(text), "x.toml:3: invalid TOML: invalid basic string");
}

#[test]
fn unknown_key_at_top_level() {
    let text = "[server]\nworkers = 1\n\n[sever]\nworkers = 2\n";
    assert_eq!(
        error(text),
        "x.toml:4: sever: unknown key (expected one of: server, tcp, stun, transaction, \
         registrar, auth, storage, log, calls, nat, api, voicemail, mail, extension, ring_group, trunk, tenant, bans, plugin)"
    );
}

#[test]
fn unknown_key_nested() {
    let text = "[server]\nworkers = 1\nlisen = [\"127.0.0.1:5060\"]\n";
    assert_eq!(
        error(text),
        "x.toml:3: server.lisen: unknown key (expected one of: listen, user_agent, \
         realm, aliases, control_socket, workers, max_message_bytes, udp_recv_buffer_bytes)"
    );
    let text = "[[tenant]]\ndomain = \"a.example\"\n[[tenant.extension]]\nnumber = \"1\"\npasword = \"x\"\n";
    assert_eq!(
        error(text),
        "x.toml:5: tenant[0].extension[0].pasword: unknown key (expected one of: \
         number, password, display_name, max_contacts, ring_time_ms, no_answer, busy, unavailable, \
         email, greeting, address, transport)"
    );
}

#[test]
fn unknown_key_in_inline_table() {
    let text = "\nserver = { workers = 1, lisen = [] }\n";
    assert!(
        error(text).starts_with("x.toml:2: server.lisen: unknown key (expected one of: listen,"),
        "{}",
        error(text)
    );
}

#[test]
fn duplicate_key_is_a_syntax_error() {
    let text = "[server]\nworkers = 1\nworkers = 2\n";
    assert_eq!(
        error(text),
        "x.toml:3: invalid TOML: duplicate key `workers` in table `server`"
    );
}

#[test]
fn missing_key() {
    let text = "[[tenant]]\naliases = [\"a.example\"]\n";
    assert_eq!(
        error(text),
        "x.toml:1: tenant[0].domain: missing required key"
    );
    let text = "[[extension]]\nnumber = \"1\"\n\n[[extension]]\npassword = \"x\"\n";
    assert_eq!(
        error(text),
        "x.toml:4: extension[1].number: missing required key"
    );
}

#[test]
fn wrong_type() {
    let text = "[tcp]\nmax_connections = \"many\"\n";
    assert_eq!(
        error(text),
        "x.toml:2: tcp.max_connections: wrong type: expected a non-negative integer, \
         found string \"many\""
    );
    let text = "server = 5\n";
    assert_eq!(
        error(text),
        "x.toml:1: server: wrong type: expected a table, found integer `5`"
    );
    let text = "[server]\nworkers = 1979-05-27T07:32:00Z\n";
    assert_eq!(
        error(text),
        "x.toml:2: server.workers: wrong type: expected a non-negative integer, \
         found date-time `1979-05-27T07:32:00Z`"
    );
    let text = "[log]\nformat = 5\n";
    assert_eq!(
        error(text),
        "x.toml:2: log.format: wrong type: expected a string, found integer `5`"
    );
    let text = "[server]\nlisten = \"127.0.0.1:5060\"\n";
    assert_eq!(
        error(text),
        "x.toml:2: server.listen: wrong type: expected an array, found string \"127.0.0.1:5060\""
    );
}

#[test]
fn invalid_value() {
    let text = "[registrar]\nmax_expires_s = -1\n";
    assert_eq!(
        error(text),
        "x.toml:2: registrar.max_expires_s: invalid value: expected an integer from 0 \
         to 4294967295, found integer `-1`"
    );
}

#[test]
fn bad_listen_address() {
    let text = "[server]\nlisten = [\n  \"127.0.0.1:5060\",\n  \"127.0.0.1:99999\",\n]\n";
    assert_eq!(
        error(text),
        "x.toml:4: server.listen[1]: invalid socket address \"127.0.0.1:99999\""
    );
}

#[test]
fn duplicate_listen_address() {
    let text = "[server]\nlisten = [\"[::1]:5060\", \"[::1]:5060\"]\n";
    assert_eq!(
        error(text),
        "x.toml:2: server.listen[1]: duplicate listen address \"[::1]:5060\""
    );
}

#[test]
fn empty_listen() {
    assert_eq!(
        error("[server]\nlisten = []\n"),
        "x.toml:2: server.listen: must not be empty"
    );
}

#[test]
fn stun_listen_may_be_empty_and_is_checked_like_server_listen() {
    assert!(parse("[stun]\nlisten = []\n").stun.listen.is_empty());
    let c = parse("[stun]\nlisten = [\"127.0.0.1:0\", \"127.0.0.1:0\", \"[::1]:3479\"]\n");
    assert_eq!(c.stun.listen.len(), 3);
    assert_eq!(
        error("[stun]\nlisten = [\n  \"127.0.0.1:3478\",\n  \"localhost:3478\",\n]\n"),
        "x.toml:4: stun.listen[1]: invalid socket address \"localhost:3478\""
    );
    assert_eq!(
        error("[stun]\nlisten = [\"[::1]:3478\", \"[::1]:3478\"]\n"),
        "x.toml:2: stun.listen[1]: duplicate listen address \"[::1]:3478\""
    );
    assert_eq!(
        error("[stun]\nport = 3478\n"),
        "x.toml:2: stun.port: unknown key (expected one of: listen)"
    );
}

#[test]
fn duplicate_extension() {
    let text = r#"
[[tenant]]
domain = "a.example"
[[tenant.extension]]
number = "100"
[[tenant.extension]]
number = "101"
[[tenant.extension]]
number = "100"
"#;
    assert_eq!(
        error(text),
        "x.toml:9: tenant[0].extension[2].number: duplicate extension \"100\" in tenant \"a.example\""
    );
    let text = "[[extension]]\nnumber = \"7\"\n[[extension]]\nnumber = \"7\"\n";
    assert_eq!(
        error(text),
        "x.toml:4: extension[1].number: duplicate extension \"7\" in the default tenant"
    );
}

#[test]
fn same_number_in_two_tenants_is_fine() {
    let c = parse(
        r#"
[[extension]]
number = "100"
[[tenant]]
domain = "a.example"
[[tenant.extension]]
number = "100"
"#,
    );
    assert_eq!(c.tenants.len(), 2);
}

#[test]
fn duplicate_domain() {
    let text = r#"
[[tenant]]
domain = "a.example"

[[tenant]]
domain = "A.EXAMPLE"
"#;
    assert_eq!(
        error(text),
        "x.toml:6: tenant[1].domain: host name \"a.example\" is already used by tenant[0].domain"
    );
}

#[test]
fn alias_collides_with_other_tenant() {
    let text = r#"
[[tenant]]
domain = "a.example"
aliases = ["sip.a.example"]

[[tenant]]
domain = "b.example"
aliases = ["sip.b.example", "sip.a.example"]
"#;
    assert_eq!(
        error(text),
        "x.toml:8: tenant[1].aliases[1]: host name \"sip.a.example\" is already used by \
         tenant[0].aliases[0]"
    );
    let text = "[server]\naliases = [\"a.example\"]\n[[tenant]]\ndomain = \"a.example\"\n";
    assert_eq!(
        error(text),
        "x.toml:4: tenant[0].domain: host name \"a.example\" is already used by server.aliases[0]"
    );
}

#[test]
fn invalid_domain() {
    let text = "[[tenant]]\ndomain = \"a..example\"\n";
    assert_eq!(
        error(text),
        "x.toml:2: tenant[0].domain: invalid host name \"a..example\" \
         (dot-separated labels of letters, digits and '-')"
    );
    let text = "[[tenant]]\ndomain = \"192.0.2.1\"\n";
    assert_eq!(
        error(text),
        "x.toml:2: tenant[0].domain: \"192.0.2.1\" is an IP literal, not a host name \
         (requests for IP literals go to the default tenant)"
    );
}

#[test]
fn invalid_number_chars() {
    let text = "[[extension]]\nnumber = \"100\"\n\n[[extension]]\nnumber = \"1 01\"\n";
    assert_eq!(
        error(text),
        "x.toml:5: extension[1].number: invalid extension number \"1 01\" \
         (1-32 characters of A-Z a-z 0-9 . _ -)"
    );
    let text = format!("[[extension]]\nnumber = \"{}\"\n", "1".repeat(33));
    assert!(error(&text).starts_with("x.toml:2: extension[0].number: invalid extension number"));
    parse(&format!(
        "[[extension]]\nnumber = \"{}\"\n",
        "a._-Z9".repeat(5)
    ));
}

#[test]
fn min_expires_greater_than_default() {
    let text = "[registrar]\nmin_expires_s = 7200\n";
    assert_eq!(
        error(text),
        "x.toml:2: registrar.min_expires_s: 7200 is greater than \
         registrar.default_expires_s (3600)"
    );
    // Only the larger side is set: that is the one to point at.
    let text = "[registrar]\n\ndefault_expires_s = 30\n";
    assert_eq!(
        error(text),
        "x.toml:3: registrar.default_expires_s: 30 is less than registrar.min_expires_s (60)"
    );
    let text = "[registrar]\ndefault_expires_s = 7200\n";
    assert_eq!(
        error(text),
        "x.toml:2: registrar.default_expires_s: 7200 is greater than \
         registrar.max_expires_s (3600)"
    );
}

#[test]
fn t1_greater_than_t2() {
    let text = "[transaction]\nt1_ms = 5000\nt2_ms = 4000\n";
    assert_eq!(
        error(text),
        "x.toml:2: transaction.t1_ms: 5000 is greater than transaction.t2_ms (4000)"
    );
}

#[test]
fn value_too_small() {
    let text = "[server]\nmax_message_bytes = 1000\n";
    assert_eq!(
        error(text),
        "x.toml:2: server.max_message_bytes: 1000 is too small (minimum 1500)"
    );
    let text = "[[extension]]\nnumber = \"1\"\nmax_contacts = 0\n";
    assert_eq!(
        error(text),
        "x.toml:3: extension[0].max_contacts: 0 is too small (minimum 1)"
    );
}

#[test]
fn empty_algorithms() {
    assert_eq!(
        error("[auth]\nalgorithms = []\n"),
        "x.toml:2: auth.algorithms: must not be empty"
    );
}

#[test]
fn duplicate_algorithm() {
    assert_eq!(
        error("[auth]\nalgorithms = [\"MD5\", \"SHA-256\", \"MD5\"]\n"),
        "x.toml:2: auth.algorithms[2]: duplicate algorithm \"MD5\""
    );
}

#[test]
fn unknown_algorithm() {
    assert_eq!(
        error("[auth]\nalgorithms = [\"SHA-256\",\n  \"SHA-512\"]\n"),
        "x.toml:3: auth.algorithms[1]: unknown value \"SHA-512\" (expected one of: MD5, SHA-256)"
    );
    assert_eq!(
        error("[log]\nformat = \"xml\"\n"),
        "x.toml:2: log.format: unknown value \"xml\" (expected one of: text, json)"
    );
}

#[test]
fn empty_password() {
    let text = "[[extension]]\nnumber = \"100\"\npassword = \"\"\n";
    assert_eq!(
        error(text),
        "x.toml:3: extension[0].password: empty password (use no key to get a generated one)"
    );
}

#[test]
fn header_text_without_control_characters() {
    assert_eq!(
        error("[server]\nuser_agent = \"x\\r\\nVia: evil\"\n"),
        "x.toml:2: server.user_agent: must not contain control characters"
    );
    assert_eq!(
        error("[server]\nrealm = \"a\\\"b\"\n"),
        "x.toml:2: server.realm: must not contain '\"' or '\\'"
    );
}

#[test]
fn key_paths_quote_unusual_keys() {
    assert_eq!(
        error("[server]\n\"a.b\" = 1\n")
            .split(" (expected")
            .next()
            .unwrap(),
        "x.toml:2: server.\"a.b\": unknown key"
    );
}

/// Tests of other modules shrink timers and limits; those values must pass.
#[test]
fn small_values_for_fast_tests_are_accepted() {
    let c = parse(
        r#"
[tcp]
max_connections = 2
idle_timeout_ms = 50
[transaction]
t1_ms = 1
t2_ms = 4
t4_ms = 0
[registrar]
min_expires_s = 0
default_expires_s = 1
max_expires_s = 2
max_contacts = 1
[auth]
nonce_lifetime_ms = 20
[storage]
commit_batch_max = 1
commit_group = 1
purge_interval_ms = 5
"#,
    );
    assert_eq!(c.tcp.max_connections_per_source, 32);
    assert_eq!(c.transaction.t4_ms, 0);
    assert_eq!(c.registrar.min_expires_s, 0);
}

// ---------------------------------------------------------------------------
// [bans] and [[plugin]]

#[test]
fn bans_section() {
    let c = parse(
        r#"
[bans]
ipv6_prefix_len = 48
never_ban = ["192.0.2.0/24", "2001:db8::1", " 10.1.2.3/8 "]
default_duration_ms = 1000
"#,
    );
    assert_eq!(c.bans.ipv6_prefix_len, 48);
    let nets: Vec<String> = c.bans.never_ban.iter().map(|n| n.to_string()).collect();
    assert_eq!(nets, ["192.0.2.0/24", "2001:db8::1/128", "10.0.0.0/8"]);
    assert_eq!(c.bans.default_duration_ms, 1000);
}

#[test]
fn bans_errors() {
    assert_eq!(
        error("[bans]\nipv6_prefix_len = 0\n"),
        "x.toml:2: bans.ipv6_prefix_len: 0 is too small (minimum 1)"
    );
    assert_eq!(
        error("[bans]\nipv6_prefix_len = 129\n"),
        "x.toml:2: bans.ipv6_prefix_len: 129 is too large (maximum 128)"
    );
    assert_eq!(
        error("[bans]\nnever_ban = [\"192.0.2.0/24\",\n  \"192.0.2.0/33\"]\n"),
        "x.toml:3: bans.never_ban[1]: invalid network \"192.0.2.0/33\" (an address or a CIDR \
         network such as 192.0.2.0/24 or 2001:db8::/32)"
    );
    assert_eq!(
        error("[bans]\ndefault_duration_ms = 0\n"),
        "x.toml:2: bans.default_duration_ms: 0 is too small (minimum 1)"
    );
    assert_eq!(
        error("[bans]\nnever = []\n"),
        "x.toml:2: bans.never: unknown key (expected one of: ipv6_prefix_len, never_ban, \
         default_duration_ms, kernel_drop_after)"
    );
    assert_eq!(
        error("[bans]\nkernel_drop_after = -1\n"),
        "x.toml:2: bans.kernel_drop_after: invalid value: expected a non-negative integer, found integer `-1`"
    );
}

const TWO_PLUGINS: &str = r#"
[[plugin]]
name = "fail-to-ban"
path = "builtin:fail-to-ban"

[[plugin]]
name = "number-analysis"
path = "plugins/number_analysis.wasm"
on_error = "fail-open"
grants = ["kv"]
memory_limit_bytes = 1048576
timeout_ms = 5
enabled = false
[plugin.config]
threshold = 5
prefixes = ["1", "2"]
rates = { a = 1.5, b = true }
since = 1979-05-27T07:32:00Z
"#;

#[test]
fn plugins_in_order_with_defaults_and_their_config_as_json() {
    let c = parse(TWO_PLUGINS);
    assert_eq!(c.plugins.len(), 2);
    let f2b = &c.plugins[0];
    assert_eq!(f2b.name, "fail-to-ban");
    assert_eq!(f2b.source, PluginSource::Builtin("fail-to-ban".into()));
    assert_eq!(f2b.on_error, OnError::FailClosed);
    assert!(f2b.grants.is_empty());
    assert_eq!(f2b.memory_limit_bytes, 16 * 1024 * 1024);
    assert_eq!(f2b.timeout_ms, 10);
    assert!(f2b.enabled);
    assert_eq!(f2b.config, serde_json::json!({}));
    let numbers = &c.plugins[1];
    assert_eq!(
        numbers.source,
        PluginSource::File(PathBuf::from("plugins/number_analysis.wasm"))
    );
    assert_eq!(numbers.on_error, OnError::FailOpen);
    assert_eq!(numbers.grants, [Grant::Kv]);
    assert_eq!(numbers.memory_limit_bytes, 1048576);
    assert_eq!(numbers.timeout_ms, 5);
    assert!(!numbers.enabled);
    assert_eq!(
        numbers.config,
        serde_json::json!({
            "threshold": 5,
            "prefixes": ["1", "2"],
            "rates": {"a": 1.5, "b": true},
            "since": "1979-05-27T07:32:00Z",
        })
    );
}

#[test]
fn plugin_config_may_hold_arrays_of_tables() {
    let c = parse(
        "[[plugin]]\nname = \"ip-auth\"\npath = \"builtin:ip-auth\"\n\
         [[plugin.config.device]]\nextension = \"150\"\nsource = \"127.0.0.3\"\n\
         [[plugin.config.device]]\ntenant = \"a.example\"\nextension = \"150\"\nport = 5060\n\
         [[plugin.config.trunk]]\nid = \"1\"\nsource = \"127.0.2.1\"\n\
         [[plugin]]\nname = \"p2\"\npath = \"builtin:fail-to-ban\"\n",
    );
    assert_eq!(
        c.plugins[0].config,
        serde_json::json!({
            "device": [
                {"extension": "150", "source": "127.0.0.3"},
                {"tenant": "a.example", "extension": "150", "port": 5060},
            ],
            "trunk": [{"id": "1", "source": "127.0.2.1"}],
        })
    );
    assert_eq!(c.plugins[1].config, serde_json::json!({}));
}

#[test]
fn plugin_paths_are_relative_to_the_config_file() {
    let dir = std::env::temp_dir().join(format!("sipfence-config-plugins-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("gw.toml");
    std::fs::write(
        &path,
        "[[plugin]]\nname = \"a\"\npath = \"p/a.wasm\"\n\
         [[plugin]]\nname = \"b\"\npath = \"/abs/b.wasm\"\n",
    )
    .unwrap();
    let c = Config::load(&path).unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
    assert_eq!(
        c.plugins[0].source,
        PluginSource::File(dir.join("p/a.wasm"))
    );
    assert_eq!(
        c.plugins[1].source,
        PluginSource::File(PathBuf::from("/abs/b.wasm"))
    );
}

#[test]
fn plugin_errors() {
    let one =
        |extra: &str| format!("[[plugin]]\nname = \"p\"\npath = \"builtin:fail-to-ban\"\n{extra}");
    assert_eq!(
        error(&one("grants = [\"counter\",\n  \"email\"]\n")),
        "x.toml:5: plugin[0].grants[1]: unknown value \"email\" (expected one of: counter, kv, mail)"
    );
    assert_eq!(
        error(&one("grants = [\"kv\", \"kv\"]\n")),
        "x.toml:4: plugin[0].grants[1]: duplicate grant \"kv\""
    );
    assert_eq!(
        error(&one("on_error = \"ignore\"\n")),
        "x.toml:4: plugin[0].on_error: unknown value \"ignore\" (expected one of: fail-open, \
         fail-closed)"
    );
    assert_eq!(
        error(&one("memory_limit_bytes = 1024\n")),
        "x.toml:4: plugin[0].memory_limit_bytes: 1024 is too small (minimum 65536)"
    );
    assert_eq!(
        error(&one("timeout_ms = 0\n")),
        "x.toml:4: plugin[0].timeout_ms: 0 is too small (minimum 1)"
    );
    assert_eq!(
        error(&one("config = 5\n")),
        "x.toml:4: plugin[0].config: wrong type: expected a table, found integer `5`"
    );
    assert_eq!(
        error(&one("grant = []\n")),
        "x.toml:4: plugin[0].grant: unknown key (expected one of: name, path, on_error, grants, \
         memory_limit_bytes, timeout_ms, enabled, config)"
    );
    assert_eq!(
        error("[[plugin]]\npath = \"x.wasm\"\n"),
        "x.toml:1: plugin[0].name: missing required key"
    );
    assert_eq!(
        error("[[plugin]]\nname = \"p\"\npath = \"\"\n"),
        "x.toml:3: plugin[0].path: must not be empty"
    );
    assert_eq!(
        error("[[plugin]]\nname = \"p\"\npath = \"builtin:fail-to-bam\"\n"),
        "x.toml:3: plugin[0].path: unknown built-in plugin \"fail-to-bam\" (built-ins: fail-to-ban, ip-auth, number-analysis, rate-limit, voicemail-mail)"
    );
    assert_eq!(
        error("[[plugin]]\nname = \"a b\"\npath = \"x.wasm\"\n"),
        "x.toml:2: plugin[0].name: invalid plugin name \"a b\" (1-64 characters of A-Z a-z 0-9 . _ -)"
    );
}

#[test]
fn duplicate_plugin_names() {
    let text = r#"
[[plugin]]
name = "f2b"
path = "builtin:fail-to-ban"

[[plugin]]
name = "other"
path = "other.wasm"

[[plugin]]
name = "f2b"
path = "f2b.wasm"
enabled = false
"#;
    assert_eq!(
        error(text),
        "x.toml:11: plugin[2].name: duplicate plugin name \"f2b\" (first used by plugin[0].name)"
    );
}

#[test]
fn ring_groups_and_call_timers() {
    let c = Config::parse(
        r#"
[calls]
ring_time_ms = 2000
[[extension]]
number = "100"
ring_time_ms = 500
no_answer = "600"
[[extension]]
number = "101"
[[ring_group]]
number = "600"
strategy = "hunt"
members = ["101", "100"]
member_timeout_ms = 300
"#,
        "x.toml",
    )
    .unwrap();
    assert_eq!(c.calls.ring_time_ms, 2000);
    let tenant = &c.tenants[0];
    assert_eq!(tenant.extension("100").unwrap().ring_time_ms, Some(500));
    let group = tenant.ring_group("600").unwrap();
    assert_eq!(group.strategy, crate::config::Strategy::Hunt);
    assert_eq!(group.members, ["101", "100"]);
    assert_eq!(group.member_timeout_ms, 300);
}

#[test]
fn ring_group_errors_name_the_key() {
    let cases = [
        (
            "[[extension]]\nnumber = \"100\"\n[[ring_group]]\nnumber = \"600\"\nstrategy = \"ring-all\"\nmembers = [\"100\", \"102\"]\n",
            "x.toml:6: ring_group[0].members[1]: \"102\" is not an extension of the default tenant",
        ),
        (
            "[[extension]]\nnumber = \"100\"\n[[ring_group]]\nnumber = \"100\"\nstrategy = \"ring-all\"\nmembers = [\"100\"]\n",
            "ring_group[0].number",
        ),
        (
            "[[extension]]\nnumber = \"100\"\nno_answer = \"999\"\n",
            "x.toml:3: extension[0].no_answer: \"999\" is neither an extension nor a ring group of the default tenant",
        ),
        ("[calls]\nring_time_ms = 0\n", "calls.ring_time_ms"),
        (
            "[[extension]]\nnumber = \"100\"\n[[ring_group]]\nnumber = \"600\"\nstrategy = \"round-robin\"\nmembers = [\"100\"]\n",
            "ring_group[0].strategy",
        ),
    ];
    for (text, expected) in cases {
        let error = Config::parse(text, "x.toml").unwrap_err().to_string();
        assert!(
            error.contains(expected),
            "{error:?} should contain {expected:?}"
        );
    }
}

#[test]
fn ring_groups_example_parses() {
    let text = include_str!("../../../config/examples/ring-groups.toml");
    let c = Config::parse(text, "config/examples/ring-groups.toml").unwrap();
    let tenant = &c.tenants[0];
    assert_eq!(tenant.ring_groups.len(), 2);
    assert_eq!(
        tenant.extension("100").unwrap().no_answer.as_deref(),
        Some("600")
    );
}

#[test]
fn trunk_credentials_go_together() {
    let ok = Config::parse(
        "[[trunk]]\nid = \"1\"\naddress = \"127.0.2.1:5060\"\nusername = \"office1\"\npassword = \"s\"\n",
        "x.toml",
    )
    .unwrap();
    let credentials = ok.tenants[0].trunks[0].credentials.as_ref().unwrap();
    assert_eq!(credentials.username, "office1");
    assert!(
        !format!("{credentials:?}").contains("\"s\""),
        "the password is not printed"
    );
    let error = Config::parse(
        "[[trunk]]\nid = \"1\"\naddress = \"127.0.2.1:5060\"\nusername = \"office1\"\n",
        "x.toml",
    )
    .unwrap_err()
    .to_string();
    assert_eq!(
        error,
        "x.toml:1: trunk[0].password: username and password go together, both non-empty"
    );
}

#[test]
fn api_tls_files_go_together() {
    let c = Config::parse(
        "[api]\ntls_cert = \"c.pem\"\ntls_key = \"k.pem\"\n",
        "x.toml",
    )
    .unwrap();
    let tls = c.api.tls.unwrap();
    assert_eq!(tls.cert, std::path::PathBuf::from("c.pem"));
    let error = Config::parse("[api]\ntls_cert = \"c.pem\"\n", "x.toml")
        .unwrap_err()
        .to_string();
    assert_eq!(
        error,
        "x.toml:1: api.tls_key: tls_cert and tls_key go together"
    );
}

#[test]
fn voicemail_targets_and_mail_settings() {
    let c = Config::parse(
        "[mail]\nsmtp_host = \"127.0.0.1\"\nsmtp_port = 2525\nsecurity = \"none\"\n\
         retry_initial_ms = 5\nretry_max_ms = 50\n\
         [voicemail]\nmax_length_ms = 3000\n\
         [[extension]]\nnumber = \"100\"\nno_answer = \"voicemail\"\nbusy = \"voicemail\"\n\
         unavailable = \"101\"\nemail = \"alice@example.com\"\n\
         [[extension]]\nnumber = \"101\"\n",
        "x.toml",
    )
    .unwrap();
    assert_eq!(c.mail.smtp_host.as_deref(), Some("127.0.0.1"));
    assert_eq!(c.mail.security, crate::config::MailSecurity::None);
    assert_eq!(c.voicemail.max_length_ms, 3000);
    assert_eq!(c.voicemail.rtp_port_min, 20_000);
    let ext = c.tenants[0].extension("100").unwrap();
    assert_eq!(ext.busy.as_deref(), Some("voicemail"));
    assert_eq!(ext.unavailable.as_deref(), Some("101"));
    assert_eq!(ext.email.as_deref(), Some("alice@example.com"));

    let error = |text: &str| Config::parse(text, "x.toml").unwrap_err().to_string();
    assert_eq!(
        error("[[extension]]\nnumber = \"100\"\nbusy = \"999\"\n"),
        "x.toml:3: extension[0].busy: \"999\" is neither an extension nor a ring group of the default tenant"
    );
    assert_eq!(
        error("[[extension]]\nnumber = \"100\"\nemail = \"alice\"\n"),
        "x.toml:3: extension[0].email: \"alice\" is not an e-mail address"
    );
    assert_eq!(
        error("[mail]\nusername = \"u\"\n"),
        "x.toml:1: mail.password: username and password go together"
    );
    assert_eq!(
        error("[mail]\nretry_initial_ms = 100\nretry_max_ms = 10\n"),
        "x.toml:3: mail.retry_max_ms: 10 is too small (minimum 100)"
    );
    assert_eq!(
        error("[voicemail]\nrtp_port_min = 30000\nrtp_port_max = 30000\n"),
        "x.toml:3: voicemail.rtp_port_max: 30000 is too small (minimum 30001)"
    );
}
