//! The HTTP management API through the real binary, over a real loopback
//! socket: every endpoint, the bearer token, malformed input, a ban's life,
//! the OpenAPI document, and schemathesis against that document.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use common::*;
use serde_json::{json, Value};

const CONFIG: &str = r#"
[bans]
never_ban = ["198.51.100.0/24"]

[[plugin]]
name = "fail-to-ban"
path = "builtin:fail-to-ban"
grants = ["counter", "kv"]

[[extension]]
number = "100"
password = "pw100"
display_name = "Reception"

[[extension]]
number = "101"
password = "pw101"

[[ring_group]]
number = "600"
strategy = "hunt"
members = ["100", "101"]

[[trunk]]
id = "1"
description = "office 2"
address = "127.0.2.1:5060"
trusted_from = ["127.0.2.1:5060", "127.0.2.0/24"]
"#;

/// An answer of the API.
#[derive(Debug)]
struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", self.body))
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The `field` of an error answer, checking its shape.
    fn error_field(&self) -> String {
        let v = self.json();
        assert!(v["error"].is_string(), "no error text: {v}");
        v["field"].as_str().unwrap_or("").to_owned()
    }
}

/// A minimal HTTP/1.1 client: one request per connection.
fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&str>,
) -> Answer {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut request = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    if let Some(token) = token {
        request.push_str(&format!("Authorization: Bearer {token}\r\n"));
    }
    let body = body.unwrap_or("");
    if !body.is_empty() || method == "POST" {
        request.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n",
            body.len()
        ));
    }
    request.push_str("\r\n");
    request.push_str(body);
    stream.write_all(request.as_bytes()).unwrap();
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).unwrap();
    let text = String::from_utf8(raw).unwrap();
    let (head, rest) = text.split_once("\r\n\r\n").expect("a complete answer");
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_owned(), v.trim().to_owned()))
        .collect();
    let chunked = headers
        .iter()
        .any(|(n, v)| n.eq_ignore_ascii_case("transfer-encoding") && v.contains("chunked"));
    let body = if chunked {
        dechunk(rest)
    } else {
        rest.to_owned()
    };
    Answer {
        status,
        headers,
        body,
    }
}

fn dechunk(mut rest: &str) -> String {
    let mut out = String::new();
    loop {
        let (size, after) = rest.split_once("\r\n").unwrap();
        let size = usize::from_str_radix(size.trim(), 16).unwrap();
        if size == 0 {
            return out;
        }
        out.push_str(&after[..size]);
        rest = &after[size + 2..];
    }
}

struct Api {
    gw: Gateway,
    addr: SocketAddr,
    token: String,
}

impl Api {
    fn start() -> Api {
        let gw = Gateway::start("127.0.0.1", CONFIG);
        let addr = gw.api_addr.expect("the API listens");
        let token = gw.api_token.clone().expect("a generated token in the log");
        Api { gw, addr, token }
    }

    fn get(&self, path: &str) -> Answer {
        http(self.addr, "GET", path, Some(&self.token), None)
    }

    fn post(&self, path: &str, body: &str) -> Answer {
        http(self.addr, "POST", path, Some(&self.token), Some(body))
    }

    fn delete(&self, path: &str) -> Answer {
        http(self.addr, "DELETE", path, Some(&self.token), None)
    }
}

/// The operations that need the token: (method, path).
const PROTECTED: &[(&str, &str)] = &[
    ("GET", "/version"),
    ("GET", "/stats"),
    ("GET", "/history"),
    ("GET", "/metrics"),
    ("GET", "/bans"),
    ("POST", "/bans"),
    ("DELETE", "/bans/192.0.2.1"),
    ("GET", "/registrations"),
    ("DELETE", "/registrations/-/100/x"),
    ("GET", "/extensions"),
    ("GET", "/ring-groups"),
    ("GET", "/trunks"),
    ("GET", "/cdrs"),
    ("GET", "/cdrs.csv"),
    ("GET", "/voicemails"),
    ("GET", "/voicemails/1/audio"),
    ("GET", "/mail"),
    ("POST", "/mail/1/retry"),
    ("GET", "/plugins"),
    ("POST", "/plugins/reload"),
];

#[test]
fn every_operation_but_health_and_the_document_needs_the_token() {
    let api = Api::start();
    for (method, path) in PROTECTED {
        let body = (*method == "POST").then_some(r#"{"address": "192.0.2.1"}"#);
        let none = http(api.addr, method, path, None, body);
        assert_eq!(none.status, 401, "{method} {path} without a token");
        assert_eq!(none.error_field(), "Authorization");
        assert!(none
            .header("www-authenticate")
            .unwrap()
            .starts_with("Bearer"));
        let wrong = http(api.addr, method, path, Some("not-the-token-at-all"), body);
        assert_eq!(wrong.status, 401, "{method} {path} with a wrong token");
    }
    // Refused requests changed nothing.
    assert_eq!(api.get("/bans").json(), json!([]));
    wait_until(Duration::from_secs(5), "the refusals' log lines", || {
        api.gw.log_count("API request refused") >= PROTECTED.len() * 2
    });

    for path in ["/health", "/openapi.json", "/"] {
        let open = http(api.addr, "GET", path, None, None);
        assert_eq!(open.status, 200, "{path} is open");
    }
    assert_eq!(
        http(api.addr, "GET", "/health", None, None).json()["status"],
        "ok"
    );
    // An unknown path is a JSON 404 (with or without the token).
    let missing = api.get("/nope");
    assert_eq!(missing.status, 404);
    assert!(missing.json()["error"].is_string());
}

#[test]
fn the_token_is_generated_once_and_survives_a_restart() {
    let mut api = Api::start();
    assert_eq!(api.gw.log_count("generated an API token"), 1);
    let token = api.token.clone();
    api.gw.kill9();
    api.gw.restart_same_ports();
    let addr = api.gw.api_addr.unwrap();
    assert_eq!(api.gw.log_count("generated an API token"), 1, "not again");
    assert_eq!(
        http(addr, "GET", "/version", Some(&token), None).status,
        200
    );
}

#[test]
fn gateway_endpoints() {
    let api = Api::start();
    let version = api.get("/version");
    assert_eq!(version.status, 200);
    assert_eq!(version.json()["name"], "sipfence");
    assert_eq!(version.json()["version"], env!("CARGO_PKG_VERSION"));

    let health = http(api.addr, "GET", "/health", None, None).json();
    assert_eq!(health["bans"], 0);
    assert_eq!(health["calls_up"], 0);

    let stats = api.get("/stats").json();
    assert!(stats["udp_packets_in"].is_u64(), "{stats}");

    let history = api.get("/history").json();
    assert!(!history.as_array().unwrap().is_empty());
    assert!(history[0]["dropped_banned"].is_u64());

    register_device(&api.gw, "100", "pw100", "127.0.0.1");
    let metrics = api.get("/metrics");
    assert_eq!(metrics.status, 200);
    assert!(metrics
        .header("content-type")
        .unwrap()
        .starts_with("text/plain"));
    let text = &metrics.body;
    for line in [
        "# TYPE sipfence_dropped_banned_total counter",
        "sipfence_registers_total 1",
        "sipfence_requests_total{method=\"REGISTER\"} 2",
        "sipfence_responses_total{class=\"2xx\"} 1",
        "sipfence_responses_total{class=\"4xx\"} 1",
        "sipfence_messages_out_total{transport=\"udp\"} 2",
        "sipfence_messages_out_total{transport=\"tcp\"} 0",
        "sipfence_auth_failed_total 0",
        "sipfence_bans_active 0",
        "sipfence_registrations 1",
        "sipfence_calls{state=\"up\"} 0",
        "sipfence_plugin_calls_total{plugin=\"fail-to-ban\"}",
        // The authenticated retry had the same User-Agent as the challenged
        // REGISTER: answered from fail-to-ban's promise, not called.
        "sipfence_plugin_reused_total{plugin=\"fail-to-ban\"} 1",
        "sipfence_plugin_failures_total{plugin=\"fail-to-ban\",kind=\"trap\"} 0",
        "sipfence_plugin_healthy{plugin=\"fail-to-ban\"} 1",
        "sipfence_plugin_call_duration_seconds_bucket{plugin=\"fail-to-ban\",le=\"+Inf\"}",
        "sipfence_plugin_call_duration_seconds_count{plugin=\"fail-to-ban\"}",
    ] {
        assert!(text.contains(line), "{line:?} missing from\n{text}");
    }
}

#[test]
fn provisioning_is_listed_read_only() {
    let api = Api::start();
    register_device(&api.gw, "101", "pw101", "127.0.0.1");
    let extensions = api.get("/extensions").json();
    assert_eq!(extensions.as_array().unwrap().len(), 2);
    assert_eq!(extensions[0]["number"], "100");
    assert_eq!(extensions[0]["display_name"], "Reception");
    assert_eq!(extensions[0]["password_configured"], true);
    assert_eq!(extensions[0]["registered"], 0);
    assert_eq!(extensions[1]["registered"], 1);
    assert!(
        !api.get("/extensions").body.contains("pw10"),
        "no passwords"
    );

    let groups = api.get("/ring-groups").json();
    assert_eq!(groups[0]["number"], "600");
    assert_eq!(groups[0]["strategy"], "hunt");
    assert_eq!(groups[0]["members"], json!(["100", "101"]));

    let trunks = api.get("/trunks").json();
    assert_eq!(trunks.as_array().unwrap().len(), 1, "{trunks}");
    assert_eq!(trunks[0]["id"], "1");
    assert_eq!(trunks[0]["address"], "127.0.2.1:5060");
    assert_eq!(
        trunks[0]["trusted_from"],
        json!(["127.0.2.1:5060", "127.0.2.0/24"])
    );

    assert_eq!(api.post("/extensions", "{}").status, 405, "read-only");
}

#[test]
fn registrations_are_listed_filtered_and_removed_through_the_registrar() {
    let api = Api::start();
    register_device(&api.gw, "100", "pw100", "127.0.0.1");
    register_device(&api.gw, "101", "pw101", "127.0.0.1");
    let all = api.get("/registrations").json();
    assert_eq!(all.as_array().unwrap().len(), 2, "{all}");
    let only = api.get("/registrations?extension=101").json();
    assert_eq!(only.as_array().unwrap().len(), 1);
    assert_eq!(only[0]["extension"], "101");
    assert_eq!(
        api.get("/registrations?tenant=other.example").json(),
        json!([])
    );
    assert_eq!(
        api.get("/registrations?tenant=")
            .json()
            .as_array()
            .unwrap()
            .len(),
        2
    );

    let bad = api.get("/registrations?extention=101");
    assert_eq!(bad.status, 400);
    assert_eq!(bad.error_field(), "extention");

    let key = only[0]["key"].as_str().unwrap().to_owned();
    let path = format!("/registrations/-/101/{}", percent_encode(&key));
    let removed = api.delete(&path);
    assert_eq!(removed.status, 200, "{removed:?}");
    assert_eq!(removed.json()["removed"], key.as_str());
    assert_eq!(api.delete(&path).status, 404, "gone");
    // Memory and the database agree: the API, the CLI (running gateway) and
    // the database after a crash all say it is gone.
    assert_eq!(api.get("/registrations?extension=101").json(), json!([]));
    assert_eq!(api.gw.registrations().len(), 1);
    wait_until(Duration::from_secs(5), "the removal's log line", || {
        api.gw.log_count("binding removed") == 1
    });
    let mut gw = api.gw;
    gw.kill9();
    let offline = gw.registrations();
    assert_eq!(offline.len(), 1, "{offline:?}");
    assert_eq!(offline[0]["extension"], "100");
}

fn percent_encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[test]
fn a_ban_is_added_listed_and_removed() {
    let api = Api::start();
    let added = api.post(
        "/bans",
        r#"{"address": "192.0.2.7", "duration_ms": 600000, "reason": "seen scanning"}"#,
    );
    assert_eq!(added.status, 201, "{added:?}");
    let row = added.json();
    assert_eq!(row["address"], "192.0.2.7");
    assert_eq!(row["by"], "operator");
    assert_eq!(row["reason"], "seen scanning");
    let length = row["until_ms"].as_u64().unwrap() - row["created_ms"].as_u64().unwrap();
    assert_eq!(length, 600_000);

    let bans = api.get("/bans").json();
    assert_eq!(bans.as_array().unwrap().len(), 1);
    assert_eq!(bans[0]["address"], "192.0.2.7");
    assert_eq!(bans[0]["dropped"], 0);
    // The control socket sees the same ban.
    assert!(api.gw.cli(&["bans", "list"]).contains("192.0.2.7"));
    // Who did it is logged.
    wait_until(Duration::from_secs(5), "the ban's log line", || {
        api.gw.log_count("banned by an operator") == 1
    });
    let log = api.gw.log_text();
    let line = log
        .lines()
        .find(|l| l.contains("banned by an operator"))
        .expect("logged");
    assert!(
        line.contains("api token") && line.contains("127.0.0.1"),
        "{line}"
    );

    // An IPv6 address bans its /64.
    let v6 = api.post("/bans", r#"{"address": "2001:db8:1:2::5"}"#);
    assert_eq!(v6.status, 201);
    assert_eq!(v6.json()["address"], "2001:db8:1:2::/64");
    assert_eq!(api.delete("/bans/2001:db8:1:2::9").status, 200);

    let removed = api.delete("/bans/192.0.2.7");
    assert_eq!(removed.status, 200, "{removed:?}");
    assert_eq!(removed.json()["removed"], "192.0.2.7");
    assert_eq!(api.get("/bans").json(), json!([]));
    assert_eq!(api.delete("/bans/192.0.2.7").status, 404);
    assert!(!api.gw.cli(&["bans", "list"]).contains("192.0.2.7"));
    wait_until(Duration::from_secs(5), "the unban's log line", || {
        api.gw.log_count("unbanned") >= 1
    });
}

#[test]
fn bad_input_is_refused_naming_the_field_and_writes_nothing() {
    let api = Api::start();
    for (body, field) in [
        ("{", "body"),
        ("[]", "body"),
        ("{}", "address"),
        (r#"{"address": 5}"#, "address"),
        (r#"{"address": "not-an-ip"}"#, "address"),
        (
            r#"{"address": "192.0.2.9", "duration_ms": -5}"#,
            "duration_ms",
        ),
        (
            r#"{"address": "192.0.2.9", "duration_ms": 0}"#,
            "duration_ms",
        ),
        (
            r#"{"address": "192.0.2.9", "duration_ms": "1h"}"#,
            "duration_ms",
        ),
        (
            r#"{"address": "192.0.2.9", "reason": "a\u0007b"}"#,
            "reason",
        ),
        (r#"{"address": "192.0.2.9", "reasn": "typo"}"#, "reasn"),
        (r#"{"address": "192.0.2.9"} trailing"#, "body"),
    ] {
        let answer = api.post("/bans", body);
        assert_eq!(answer.status, 400, "{body}: {answer:?}");
        assert_eq!(answer.error_field(), field, "{body}");
    }
    let long = format!(
        r#"{{"address": "192.0.2.9", "reason": "{}"}}"#,
        "x".repeat(201)
    );
    assert_eq!(api.post("/bans", &long).error_field(), "reason");
    // Exempt by bans.never_ban: refused, 409.
    let exempt = api.post("/bans", r#"{"address": "198.51.100.4"}"#);
    assert_eq!(exempt.status, 409);
    assert_eq!(exempt.error_field(), "address");
    // Nothing was written, in memory or in the database.
    assert_eq!(api.get("/bans").json(), json!([]));
    assert_eq!(api.gw.stat("bans_added"), 0);

    let bad_unban = api.delete("/bans/nonsense");
    assert_eq!(bad_unban.status, 400);
    assert_eq!(bad_unban.error_field(), "address");

    for (query, field) in [
        ("limit=abc", "limit"),
        ("limit=-1", "limit"),
        ("limit=10001", "limit"),
        ("offset=x", "offset"),
        ("disposition=maybe", "disposition"),
        ("since=yesterday", "since"),
        ("since=", "since"),
        ("offset=9223372036854775808", "offset"),
        ("bogus=1", "bogus"),
    ] {
        for path in ["/cdrs", "/cdrs.csv"] {
            let answer = api.get(&format!("{path}?{query}"));
            assert_eq!(answer.status, 400, "{path}?{query}: {answer:?}");
            assert_eq!(answer.error_field(), field, "{path}?{query}");
        }
    }
}

#[test]
fn cdrs_and_plugins() {
    let api = Api::start();
    assert_eq!(api.get("/cdrs").json(), json!([]));
    let filtered = api.get("/cdrs?since=1h&until=2099-01-01&extension=100&disposition=no-answer&tenant=&limit=5&offset=0");
    assert_eq!(filtered.status, 200, "{filtered:?}");
    // An empty range is no error: it selects nothing.
    assert_eq!(api.get("/cdrs?since=2h&until=3h").json(), json!([]));
    let csv = api.get("/cdrs.csv");
    assert_eq!(csv.status, 200);
    assert!(csv.header("content-type").unwrap().starts_with("text/csv"));
    assert!(csv.body.starts_with("start,answer,end,"), "{}", csv.body);

    let plugins = api.get("/plugins").json();
    assert_eq!(plugins[0]["name"], "fail-to-ban");
    assert_eq!(plugins[0]["health"]["state"], "healthy");
    assert!(plugins[0]["latency_counts"].is_array());
    let reloaded = api.post("/plugins/reload", "");
    assert_eq!(reloaded.status, 200, "{reloaded:?}");
    assert_eq!(reloaded.json()["plugins"], json!(["fail-to-ban"]));
    wait_until(Duration::from_secs(5), "the reload's log line", || {
        api.gw.log_count("plugin chain reloaded") >= 1
    });
}

/// Voicemail and mail are listed (here: empty), unknown ids are 404, bad
/// parameters 400 naming them; the metrics carry the mail queue. (The
/// lists with content are checked in tests/voicemail.rs.)
#[test]
fn voicemails_and_the_mail_queue() {
    let api = Api::start();
    assert_eq!(api.get("/voicemails").json(), json!([]));
    assert_eq!(
        api.get("/voicemails?mailbox=100&tenant=&limit=0").json(),
        json!([])
    );
    assert_eq!(api.get("/mail?limit=5").json(), json!([]));
    assert_eq!(api.get("/voicemails/7/audio").status, 404);
    assert_eq!(api.post("/mail/7/retry", "").status, 404);
    let bad = api.get("/voicemails/x/audio");
    assert_eq!((bad.status, bad.error_field()), (400, "id".to_owned()));
    let bad = api.get("/mail?limit=10001");
    assert_eq!((bad.status, bad.error_field()), (400, "limit".to_owned()));
    let bad = api.get("/voicemails?box=1");
    assert_eq!(bad.status, 400, "{bad:?}");
    let metrics = api.get("/metrics").body;
    for line in [
        "sipfence_mail_queue_depth 0",
        "sipfence_mail_sent_total 0",
        "sipfence_voicemail_recordings 0",
        "sipfence_voicemail_recorded_total 0",
    ] {
        assert!(metrics.lines().any(|l| l == line), "{line} missing");
    }
}

/// Every path and operation the router serves is in the generated document,
/// with its error answers described.
#[test]
fn the_openapi_document_describes_every_operation() {
    let api = Api::start();
    let doc = http(api.addr, "GET", "/openapi.json", None, None).json();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    let paths = doc["paths"].as_object().unwrap();
    for (method, path) in PROTECTED {
        let template = match *path {
            "/bans/192.0.2.1" => "/bans/{address}",
            "/registrations/-/100/x" => "/registrations/{tenant}/{extension}/{key}",
            "/voicemails/1/audio" => "/voicemails/{id}/audio",
            "/mail/1/retry" => "/mail/{id}/retry",
            p => p,
        };
        let op = &paths
            .get(template)
            .unwrap_or_else(|| panic!("{template} missing"))[method.to_ascii_lowercase()];
        assert!(op.is_object(), "{method} {template} missing");
        assert!(
            op["responses"]["401"].is_object(),
            "{method} {template}: 401 described"
        );
    }
    for path in ["/health", "/openapi.json"] {
        assert!(paths.contains_key(path));
    }
    assert_eq!(
        paths.len(),
        PROTECTED.len() - 1 + 2,
        "no undescribed extras"
    );
    assert!(doc["paths"]["/bans"]["post"]["responses"]["400"].is_object());
    assert!(doc["paths"]["/bans"]["post"]["responses"]["409"].is_object());
    assert!(doc["components"]["schemas"]["ErrorBody"].is_object());
    assert_eq!(
        doc["components"]["securitySchemes"]["bearer"]["scheme"],
        "bearer"
    );
}

/// schemathesis (PyPI) fuzzes every operation of the running binary from its
/// own `/openapi.json`, with every check: server errors, answers that do not
/// match the document, schema-valid input refused, invalid input accepted,
/// auth that is not enforced. A missing `st` fails the test.
#[test]
fn schemathesis_finds_nothing() {
    let api = Api::start();
    let url = format!("http://{}/openapi.json", api.addr);
    let out = std::process::Command::new("st")
        .args([
            "run",
            &url,
            "--checks",
            "all",
            "--max-examples",
            "50",
            // One worker: CPython 3.11's ast.parse is not thread-safe in
            // hypothesis' lambda descriptions ("AST constructor recursion
            // depth mismatch", seen with two workers).
            "--workers",
            "1",
        ])
        .arg("--header")
        .arg(format!("Authorization: Bearer {}", api.token))
        .env("NO_COLOR", "1")
        .env("SCHEMATHESIS_TELEMETRY", "false")
        .current_dir(&api.gw.dir.0)
        .output()
        .expect("`st` (schemathesis) is needed: pip install schemathesis");
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "schemathesis failed:\n{report}");
    assert!(
        // The protected operations and /health (the document is not tested).
        report.contains(&format!("Tested: {}", PROTECTED.len() + 1)),
        "every operation tested:\n{report}"
    );
}

/// With `tls_cert`/`tls_key` the API speaks HTTPS only: curl, trusting
/// nothing but the test's self-signed certificate, gets its answers; plain
/// HTTP on the same port gets none.
#[test]
fn the_api_speaks_https_when_given_a_certificate() {
    let dir = std::sync::Arc::new(TempDir::new("api-tls"));
    let certified =
        rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
            .unwrap();
    let cert_path = dir.0.join("cert.pem");
    std::fs::write(&cert_path, certified.cert.pem()).unwrap();
    std::fs::write(dir.0.join("key.pem"), certified.key_pair.serialize_pem()).unwrap();
    // base_config ends inside [api]: the TLS keys join that table.
    let mut text = base_config(&dir.0, &["127.0.0.1:0".to_owned()], "");
    text.push_str("tls_cert = \"cert.pem\"\ntls_key = \"key.pem\"\n");
    let gw = Gateway::start_with(dir.clone(), &text);
    let addr = gw.api_addr.expect("api listening");
    assert_eq!(gw.log_count("\"scheme\":\"https\""), 1, "{}", gw.log_text());
    let curl = |args: &[&str]| {
        let out = std::process::Command::new("curl")
            .args(["-sS", "--max-time", "5"])
            .args(args)
            .output()
            .expect("curl is needed: apt-get install curl");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    };
    let cacert = cert_path.display().to_string();
    let (ok, body) = curl(&["--cacert", &cacert, &format!("https://{addr}/health")]);
    assert!(ok, "https /health: {body}");
    assert!(body.contains("\"ok\""), "{body}");
    let token = gw.api_token.clone().expect("generated token");
    let (ok, body) = curl(&[
        "--cacert",
        &cacert,
        "-H",
        &format!("Authorization: Bearer {token}"),
        &format!("https://{addr}/version"),
    ]);
    assert!(ok && body.contains("version"), "{body}");
    // Without trusting the certificate the handshake fails; plain HTTP gets nothing.
    assert!(!curl(&[&format!("https://{addr}/health")]).0);
    assert!(!curl(&[&format!("http://{addr}/health")]).0);
}
