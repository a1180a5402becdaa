//! `sipfence cdr list` and the `cdrs.list` control command against the real
//! binary and a database the real gateway created (and so migrated).
//!
//! No call path writes CDRs yet, so the records are put into the gateway's
//! database with plain SQL after it has stopped, exactly as the schema
//! defines the `cdrs` table; everything after that is the real reader, CLI
//! and control socket. (The proxy's tests assert the CDRs of real calls.)

mod common;

use std::io::{BufRead, BufReader, Write as _};
use std::os::unix::net::UnixStream;
use std::process::Command;

use common::*;
use rusqlite::{params, Connection};
use sipfence::cdr::{Cdr, Disposition};

const USERS: &str = r#"
[[extension]]
number = "101"
password = "pw101"

[[tenant]]
domain = "a.example"
[[tenant.extension]]
number = "100"
password = "secret-a"
"#;

const HOUR: u64 = 3_600_000;

fn record(call_id: &str, caller: &str, callee: &str, start_ms: u64) -> Cdr {
    Cdr {
        call_id: call_id.into(),
        tenant: String::new(),
        caller: caller.into(),
        caller_source: "127.0.0.1:5062/UDP".into(),
        caller_user_agent: Some("Zoiper 5.6.1".into()),
        callee: callee.into(),
        route: format!("extension:{callee}"),
        answered_by: None,
        start_ms,
        answer_ms: None,
        end_ms: start_ms + 1_200,
        duration_ms: 0,
        disposition: Disposition::Failed,
        status: 500,
    }
}

/// Six calls on 2025-03-14/15 (A..F, oldest first) and two of the last hours.
fn records(now: u64) -> Vec<Cdr> {
    // A: 2025-03-14T23:59:59.500Z, answered after 2 s, 62.5 s of talk.
    let mut a = record("a@host", "101", "102", 1_741_996_799_500);
    a.answered_by = Some("sip:102@127.0.0.1:5070".into());
    a.answer_ms = Some(a.start_ms + 2_000);
    a.end_ms = a.start_ms + 64_500;
    a.duration_ms = 62_500;
    a.disposition = Disposition::Answered;
    a.status = 200;
    // B: 2025-03-15T08:00:00Z, not answered; a User-Agent CSV must quote.
    let mut b = record("b@host", "102", "101", 1_742_025_600_000);
    b.caller_source = "127.0.0.2:5080/TCP".into();
    b.caller_user_agent = Some("Evil \"UA\", v1\r\nline2".into());
    b.end_ms = b.start_ms + 30_000;
    b.disposition = Disposition::NoAnswer;
    b.status = 480;
    // C: 2025-03-15T09:15:00.250Z, tenant a.example, a ring group, 1:01:01;
    // a User-Agent a spreadsheet would run as a formula.
    let mut c = record("c@host", "100", "600", 1_742_030_100_250);
    c.tenant = "a.example".into();
    c.caller_user_agent = Some("=HYPERLINK(\"http://evil\")".into());
    c.route = "ring-group:600".into();
    c.answered_by = Some("sip:601@127.0.0.3:5090".into());
    c.answer_ms = Some(c.start_ms + 5_000);
    c.duration_ms = 3_661_000;
    c.end_ms = c.start_ms + 5_000 + 3_661_000;
    c.disposition = Disposition::Answered;
    c.status = 200;
    // D: 2025-03-15T10:00:00Z, a number nobody serves.
    let mut d = record("d@host", "103", "999", 1_742_032_800_000);
    d.caller_user_agent = None;
    d.route = "none".into();
    d.end_ms = d.start_ms + 100;
    d.status = 404;
    // E: 2025-03-15T11:00:00Z, busy.
    let mut e = record("e@host", "101", "104", 1_742_036_400_000);
    e.disposition = Disposition::Busy;
    e.status = 486;
    // F: 2025-03-15T12:00:00Z, cancelled by the caller.
    let mut f = record("f@host", "104", "101", 1_742_040_000_000);
    f.end_ms = f.start_ms + 8_000;
    f.disposition = Disposition::Cancelled;
    f.status = 487;
    // Recent: an hour ago (answered) and three hours ago (cancelled).
    let mut r1 = record("recent-1", "101", "102", now - HOUR);
    r1.answer_ms = Some(now - HOUR + 1_000);
    r1.end_ms = now - HOUR + 11_000;
    r1.duration_ms = 10_000;
    r1.disposition = Disposition::Answered;
    r1.status = 200;
    let mut r3 = record("recent-3", "102", "101", now - 3 * HOUR);
    r3.disposition = Disposition::Cancelled;
    r3.status = 487;
    vec![a, b, c, d, e, f, r1, r3]
}

/// Inserts `cdrs` with plain SQL, column by column as the schema has them.
fn insert(db: &std::path::Path, cdrs: &[Cdr]) {
    let conn = Connection::open(db).unwrap();
    let version: i64 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap();
    assert_eq!(
        version,
        sipfence::store::SCHEMA_VERSION,
        "migrated on start"
    );
    for c in cdrs {
        conn.execute(
            "INSERT INTO cdrs (call_id, tenant, caller, caller_source, caller_user_agent, \
             callee, route, answered_by, start_ms, answer_ms, end_ms, duration_ms, \
             disposition, status) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)",
            params![
                c.call_id,
                c.tenant,
                c.caller,
                c.caller_source,
                c.caller_user_agent,
                c.callee,
                c.route,
                c.answered_by,
                c.start_ms as i64,
                c.answer_ms.map(|t| t as i64),
                c.end_ms as i64,
                c.duration_ms as i64,
                c.disposition.as_str(),
                c.status,
            ],
        )
        .unwrap();
    }
}

/// `sipfence cdr list ARGS --json`: the call ids, in the order listed.
fn ids(gw: &Gateway, args: &[&str]) -> Vec<String> {
    listed(gw, args).into_iter().map(|c| c.call_id).collect()
}

fn listed(gw: &Gateway, args: &[&str]) -> Vec<Cdr> {
    let mut all = vec!["cdr", "list", "--json"];
    all.extend_from_slice(args);
    serde_json::from_str(&gw.cli(&all)).unwrap()
}

/// `sipfence ARGS --config ...` must fail; returns what it said.
fn cli_fails(gw: &Gateway, args: &[&str]) -> String {
    let out = Command::new(BIN)
        .args(args)
        .arg("--config")
        .arg(&gw.config_path)
        .output()
        .unwrap();
    assert!(!out.status.success(), "sipfence {args:?} must fail");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// One request on the control socket, the answer as JSON.
fn control(gw: &Gateway, request: serde_json::Value) -> serde_json::Value {
    let mut stream = UnixStream::connect(gw.dir.0.join("control.sock")).unwrap();
    writeln!(stream, "{request}").unwrap();
    let mut line = String::new();
    BufReader::new(stream).read_line(&mut line).unwrap();
    serde_json::from_str(&line).unwrap()
}

const TABLE_A_TO_F: &str = "\
START (UTC)          CALLER                   CALLEE                   DISPOSITION STATUS  DURATION  ROUTE
2025-03-15 12:00:00  104                      101                      cancelled      487   0:00:00  extension:101
2025-03-15 11:00:00  101                      104                      busy           486   0:00:00  extension:104
2025-03-15 10:00:00  103                      999                      failed         404   0:00:00  none
2025-03-15 09:15:00  100@a.example            600@a.example            answered       200   1:01:01  ring-group:600
2025-03-15 08:00:00  102                      101                      no-answer      480   0:00:00  extension:101
2025-03-14 23:59:59  101                      102                      answered       200   0:01:02  extension:102
6 call(s)
";

const CSV_A_TO_C: &str = "\
start,answer,end,duration_s,tenant,caller,callee,disposition,status,route,answered_by,\
caller_source,caller_user_agent,call_id,start_ms,answer_ms,end_ms,duration_ms\r\n\
2025-03-15T09:15:00.250Z,2025-03-15T09:15:05.250Z,2025-03-15T10:16:06.250Z,3661.000,a.example,\
100,600,answered,200,ring-group:600,sip:601@127.0.0.3:5090,127.0.0.1:5062/UDP,\
\"'=HYPERLINK(\"\"http://evil\"\")\",c@host,1742030100250,1742030105250,1742033766250,3661000\r\n\
2025-03-15T08:00:00.000Z,,2025-03-15T08:00:30.000Z,0.000,,102,101,no-answer,480,extension:101,,\
127.0.0.2:5080/TCP,\"Evil \"\"UA\"\", v1\r\nline2\",b@host,1742025600000,,1742025630000,0\r\n\
2025-03-14T23:59:59.500Z,2025-03-15T00:00:01.500Z,2025-03-15T00:01:04.000Z,62.500,,101,102,\
answered,200,extension:102,sip:102@127.0.0.1:5070,127.0.0.1:5062/UDP,Zoiper 5.6.1,a@host,\
1741996799500,1741996801500,1741996864000,62500\r\n";

#[test]
fn cdr_list_filters_pages_and_exports_csv() {
    let mut gw = Gateway::start("127.0.0.1", USERS);
    // A fresh gateway: no calls, through the CLI and the control socket.
    assert_eq!(ids(&gw, &[]), Vec::<String>::new());
    assert_eq!(
        control(&gw, serde_json::json!({"command": "cdrs.list"})),
        serde_json::json!({"ok": true, "result": []})
    );

    gw.kill9();
    let now = sipfence::now_ms();
    let all = records(now);
    insert(&gw.dir.0.join("sipfence.db"), &all);
    let by_id = |id: &str| all.iter().find(|c| c.call_id == id).unwrap().clone();

    // Every field comes back, newest first.
    let listed_all = listed(&gw, &[]);
    let order = [
        "recent-1", "recent-3", "f@host", "e@host", "d@host", "c@host", "b@host", "a@host",
    ];
    assert_eq!(
        listed_all,
        order.iter().map(|id| by_id(id)).collect::<Vec<_>>()
    );

    // The table, with an upper bound given as a date (midnight UTC, exclusive).
    assert_eq!(
        gw.cli(&["cdr", "list", "--until", "2025-03-16"]),
        TABLE_A_TO_F
    );

    // Extension: caller or callee.
    assert_eq!(
        ids(&gw, &["--extension", "101", "--until", "2025-03-16"]),
        ["f@host", "e@host", "b@host", "a@host"]
    );
    assert_eq!(ids(&gw, &["--extension", "999"]), ["d@host"]);
    assert_eq!(ids(&gw, &["--extension", "10"]), Vec::<String>::new());
    // Disposition.
    assert_eq!(ids(&gw, &["--disposition", "no-answer"]), ["b@host"]);
    assert_eq!(
        ids(&gw, &["--disposition", "cancelled"]),
        ["recent-3", "f@host"]
    );
    assert_eq!(
        ids(&gw, &["--disposition", "answered", "--extension", "102"]),
        ["recent-1", "a@host"]
    );
    // RFC 3339 bounds: since inclusive, until exclusive, offsets honoured.
    assert_eq!(
        ids(
            &gw,
            &[
                "--since",
                "2025-03-15T09:15:00.250Z",
                "--until",
                "2025-03-15T11:00:00Z"
            ]
        ),
        ["d@host", "c@host"]
    );
    assert_eq!(
        ids(
            &gw,
            &[
                "--since",
                "2025-03-15T10:15:00.250+01:00",
                "--until",
                "2025-03-15T12:00:00+01:00"
            ]
        ),
        ["d@host", "c@host"]
    );
    // Ages.
    assert_eq!(ids(&gw, &["--since", "2h"]), ["recent-1"]);
    assert_eq!(ids(&gw, &["--since", "240m"]), ["recent-1", "recent-3"]);
    assert_eq!(ids(&gw, &["--since", "7d", "--until", "2h"]), ["recent-3"]);
    // Tenant.
    assert_eq!(ids(&gw, &["--tenant", "a.example"]), ["c@host"]);
    assert_eq!(ids(&gw, &["--tenant", ""]).len(), 7);
    assert_eq!(ids(&gw, &["--tenant", "b.example"]), Vec::<String>::new());
    // Paging.
    assert_eq!(
        ids(
            &gw,
            &["--until", "2025-03-16", "--limit", "2", "--offset", "1"]
        ),
        ["e@host", "d@host"]
    );
    assert_eq!(
        ids(&gw, &["--limit", "3", "--offset", "6"]),
        ["b@host", "a@host"]
    );
    assert_eq!(ids(&gw, &["--limit", "0"]).len(), 8);
    let table = gw.cli(&["cdr", "list", "--limit", "1", "--offset", "2"]);
    assert!(
        table.ends_with(
            "1 call(s)\n(limit of 1 reached: --offset 3 for the next ones, --limit 0 for all)\n"
        ),
        "{table}"
    );
    assert!(
        table.contains("  104                      101    "),
        "{table}"
    );

    // CSV: exact, RFC 4180 quoting, formulas defused.
    assert_eq!(
        gw.cli(&["cdr", "list", "--csv", "--until", "2025-03-15T10:00:00Z"]),
        CSV_A_TO_C
    );
    // CSV lists every match unless limited.
    let csv = gw.cli(&["cdr", "list", "--csv"]);
    assert_eq!(
        csv.matches("@host,").count() + csv.matches(",recent-").count(),
        8
    );
    let csv = gw.cli(&["cdr", "list", "--csv", "--limit", "1"]);
    assert_eq!(csv.lines().count(), 2, "{csv}");

    // Bad arguments are refused, naming the argument.
    let err = cli_fails(&gw, &["cdr", "list", "--since", "yesterday"]);
    assert!(
        err.contains("'--since <WHEN>'") && err.contains("not a time; expected RFC 3339"),
        "{err}"
    );
    let err = cli_fails(&gw, &["cdr", "list", "--until", "2025-02-29"]);
    assert!(
        err.contains("'--until <WHEN>'") && err.contains("day 29 does not exist in 2025-02"),
        "{err}"
    );
    let err = cli_fails(&gw, &["cdr", "list", "--disposition", "rang"]);
    assert!(
        err.contains("'--disposition <D>'") && err.contains("unknown disposition \"rang\""),
        "{err}"
    );
    let err = cli_fails(&gw, &["cdr", "list", "--limit", "lots"]);
    assert!(err.contains("'--limit <N>'"), "{err}");
    let err = cli_fails(
        &gw,
        &[
            "cdr",
            "list",
            "--since",
            "2025-03-16",
            "--until",
            "2025-03-15",
        ],
    );
    assert!(
        err.contains("--since") && err.contains("before --until"),
        "{err}"
    );
    let err = cli_fails(&gw, &["cdr", "list", "--csv", "--json"]);
    assert!(err.contains("--csv") && err.contains("--json"), "{err}");

    // Running again (the database written by hand, now a WAL writer's):
    // the CLI reads the same alongside it, and the control socket agrees.
    gw.restart_same_ports();
    assert_eq!(listed(&gw, &[]), listed_all);
    assert_eq!(
        gw.cli(&["cdr", "list", "--until", "2025-03-16"]),
        TABLE_A_TO_F
    );
    let answer = control(
        &gw,
        serde_json::json!({
            "command": "cdrs.list",
            "params": {"extension": "101", "until_ms": 1_742_083_200_000_u64, "limit": 3}
        }),
    );
    assert_eq!(answer["ok"], true, "{answer}");
    let rows: Vec<Cdr> = serde_json::from_value(answer["result"].clone()).unwrap();
    assert_eq!(rows, [by_id("f@host"), by_id("e@host"), by_id("b@host")]);
    let answer = control(
        &gw,
        serde_json::json!({"command": "cdrs.list", "params": {"disposition": "no-answer"}}),
    );
    assert_eq!(answer["result"][0]["call_id"], "b@host", "{answer}");
    assert_eq!(answer["result"][0]["disposition"], "no-answer", "{answer}");
    assert_eq!(answer["result"][0]["answer_ms"], serde_json::Value::Null);
    let answer = control(
        &gw,
        serde_json::json!({"command": "cdrs.list", "params": {"extention": "101"}}),
    );
    assert_eq!(answer["ok"], false, "{answer}");
    assert!(
        answer["error"]
            .as_str()
            .unwrap()
            .starts_with("cdrs.list: bad filter: unknown field `extention`"),
        "{answer}"
    );
}
