//! What the plugin chain costs per message: the whole host path of
//! `Chain::on_request` (pool, sandbox, resource table, the guest, its host
//! calls) for a realistic REGISTER with credentials.
//!
//! Run: `cargo bench -p sipfence --bench chain`
//!
//! The plugins are the release components of the plugins' workspace, built
//! by `cargo xtask plugins` (or `cargo build --release --target wasm32-wasip2
//! --manifest-path plugins/Cargo.toml`); `SIPFENCE_BENCH_PLUGINS=DIR` takes
//! them from another folder (e.g. to compare with an older build).
//!
//! Measured, each calling `on-request` on every iteration:
//! - `chain/empty`: no plugin (the floor of `Chain::on_request`);
//! - `floor/call-that-reads-nothing`: one Rust plugin that returns
//!   `continue` without reading anything or calling the host (ip-auth
//!   without devices): what any plugin call costs;
//! - `plugin/NAME`: each security plugin of the default chain alone, on the
//!   path an ordinary request takes (fail-to-ban: no scanner User-Agent, no
//!   extension lock, so after the first call it is answered from its
//!   `continue-for-user-agent` promise, as in the gateway; ip-auth: devices
//!   configured, none matching; rate-limit: under its limit);
//! - `plugin/fail-to-ban-asked`: fail-to-ban on User-Agents it has not
//!   promised for yet (1,024 of them in turn, more than the host keeps):
//!   the call, and the promise recorded after it;
//! - `chain/fail-to-ban+ip-auth+rate-limit`: the three in one chain; after it
//!   the runtime's own per-plugin call timers are printed, which split the
//!   chain's cost by plugin;
//! - `attack/fail-to-ban-scanner-udp`: fail-to-ban on a REGISTER announcing a
//!   scanner over UDP (counted, dropped, every third banned): the expensive
//!   path, for comparison.
//!
//! Every iteration gets a fresh `RequestView` of the same parsed message, as
//! every real request does, so the From/To parse a plugin triggers is paid
//! each time (the view is built and dropped outside the timing).

use std::hint::black_box;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use serde_json::json;
use sipfence::config::{Grant, OnError, PluginSource, PluginSpec};
use sipfence::plugins::{Chain, PluginEngine, RequestInfo, RequestView, SharedState, Verdict};
use sipfence::sip::Message;
use sipfence::transport::Transport;

// The gateway's allocator (host/src/main.rs): getters and host calls allocate.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// A phone refreshing its registration: the second REGISTER, answering the
/// gateway's challenge.
const REGISTER: &str = "REGISTER sip:127.0.0.1 SIP/2.0\r\n\
Via: SIP/2.0/UDP 198.51.100.23:5060;branch=z9hG4bK-524287-1---a1b2c3d4e5f6;rport\r\n\
Max-Forwards: 70\r\n\
Contact: <sip:100@198.51.100.23:5060;transport=udp>;+sip.instance=\"<urn:uuid:00000000-0000-1000-8000-0015657a2b3c>\";reg-id=1\r\n\
To: <sip:100@127.0.0.1>\r\n\
From: <sip:100@127.0.0.1>;tag=3a9f2c1b\r\n\
Call-ID: 5f1c2e8a-77d4-4b2e-9a51-0c3f6e2d1a90\r\n\
CSeq: 2 REGISTER\r\n\
Expires: 3600\r\n\
Allow: INVITE, ACK, CANCEL, BYE, NOTIFY, REFER, MESSAGE, OPTIONS, INFO, SUBSCRIBE\r\n\
Supported: replaces, path, outbound, gruu\r\n\
User-Agent: Yealink SIP-T46U 108.86.0.20\r\n\
Authorization: Digest username=\"100\", realm=\"sipfence\", nonce=\"Zk3xYQAAAAB1c2VyMTAwQDE5OC41MS4xMDAuMjM\", uri=\"sip:127.0.0.1\", response=\"6629fae49393a05397450978507c4ef1\", algorithm=SHA-256, cnonce=\"0a4f113b\", qop=auth, nc=00000001\r\n\
Content-Length: 0\r\n\r\n";

/// The plugins of the default chain, by component file name.
const PLUGINS: &[(&str, &str)] = &[
    ("fail-to-ban", "fail_to_ban.wasm"),
    ("ip-auth", "ip_auth.wasm"),
    ("rate-limit", "rate_limit.wasm"),
];

const BUILD: &str =
    "cargo build --release --target wasm32-wasip2 --manifest-path plugins/Cargo.toml (or cargo xtask plugins)";

fn plugin_dir() -> PathBuf {
    match std::env::var_os("SIPFENCE_BENCH_PLUGINS") {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir),
        _ => PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../plugins/target/wasm32-wasip2/release"),
    }
}

/// The spec of plugin `name` with the config of this bench.
fn spec(name: &str) -> PluginSpec {
    let file = PLUGINS
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, f)| plugin_dir().join(f))
        .expect("a plugin of this bench");
    assert!(
        file.is_file(),
        "{} is missing: build the plugins first with {BUILD}",
        file.display()
    );
    let (grants, config) = match name {
        // The defaults, as the default config runs it.
        "fail-to-ban" => (vec![Grant::Counter, Grant::Kv], json!({})),
        // Devices on other addresses than the phone's: the usual case.
        "ip-auth" => (
            vec![],
            json!({ "device": [
                { "extension": "150", "source": "127.0.0.3" },
                { "extension": "151", "source": "127.0.0.8/29", "transport": "udp" },
                { "tenant": "a.example", "extension": "150", "source": "::1", "port": 5060 },
                { "extension": "152", "source": "10.20.0.0/16" },
            ] }),
        ),
        // The default window with a limit never reached: every iteration
        // takes the counting path of an ordinary request.
        "rate-limit" => (
            vec![Grant::Counter],
            json!({ "requests": 2_000_000_000u32 }),
        ),
        _ => unreachable!(),
    };
    PluginSpec {
        name: name.to_owned(),
        source: PluginSource::File(file),
        on_error: OnError::FailOpen,
        grants,
        memory_limit_bytes: 16 * 1024 * 1024,
        timeout_ms: 1000,
        enabled: true,
        config,
    }
}

/// A chain of `names`, each checked to implement `on-request`.
fn chain(engine: &PluginEngine, names: &[&str]) -> Chain {
    let specs: Vec<PluginSpec> = names.iter().map(|n| spec(n)).collect();
    let chain = Chain::load(&specs, engine, Arc::new(SharedState::default()))
        .unwrap_or_else(|e| panic!("{e}"));
    let called: Vec<&str> = chain.on_request_names().collect();
    assert_eq!(called, names, "every plugin must implement on-request");
    chain
}

fn message(user_agent: &str) -> Arc<Message> {
    let text = REGISTER.replace("Yealink SIP-T46U 108.86.0.20", user_agent);
    Arc::new(Message::parse(text.as_bytes()).expect("a valid REGISTER"))
}

fn info(source_verified: bool) -> RequestInfo {
    RequestInfo {
        tenant: String::new(),
        source: "198.51.100.23:5060".parse().unwrap(),
        transport: Transport::Udp,
        source_verified,
        auth_user: Some("100".into()),
    }
}

/// Benchmarks `chain.on_request` on fresh views of `message`, after checking
/// that it answers `expected`.
fn bench_chain(
    c: &mut Criterion,
    id: &str,
    chain: &Chain,
    message: &Arc<Message>,
    info: &RequestInfo,
    expected: Option<&Verdict>,
) {
    let view = || RequestView::new(message.clone(), info.clone());
    if let Some(expected) = expected {
        assert_eq!(&chain.on_request(&view()).0, expected, "{id}");
    }
    c.bench_function(id, |b| {
        b.iter_batched(
            view,
            |view| {
                black_box(chain.on_request(black_box(&view)));
                view // dropped outside the timing
            },
            // Small batches: the views stay in cache, as a view the gateway
            // has just built is.
            BatchSize::NumIterations(64),
        )
    });
}

fn benches(c: &mut Criterion) {
    let engine = PluginEngine::new().expect("engine");
    let clean = message("Yealink SIP-T46U 108.86.0.20");
    let phone = info(true);
    let go_on = Some(&Verdict::Continue);

    bench_chain(c, "chain/empty", &Chain::empty(), &clean, &phone, go_on);
    // The floor of one plugin call: ip-auth without devices returns
    // `continue` without reading the request or calling the host.
    let mut idle = spec("ip-auth");
    idle.config = json!({ "device": [] });
    let idle = Chain::load(&[idle], &engine, Arc::new(SharedState::default()))
        .unwrap_or_else(|e| panic!("{e}"));
    bench_chain(
        c,
        "floor/call-that-reads-nothing",
        &idle,
        &clean,
        &phone,
        go_on,
    );
    // The same floor with a guest written in WebAssembly text (no Rust
    // runtime in it): what the host path alone costs.
    let wat = sipfence::plugins::testing::TestPlugin::returns(&Verdict::Continue);
    let dir = std::env::temp_dir().join(format!("sipfence-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let file = dir.join("continue.wasm");
    let wasm = wat::parse_str(wat.wat()).expect("the test plugin is valid WAT");
    std::fs::write(&file, wasm).expect("write the WAT plugin");
    let wat_spec = PluginSpec {
        name: "wat-continue".into(),
        source: PluginSource::File(file),
        grants: vec![],
        config: json!({}),
        ..spec("ip-auth")
    };
    let wat_chain = Chain::load(&[wat_spec], &engine, Arc::new(SharedState::default()))
        .unwrap_or_else(|e| panic!("{e}"));
    bench_chain(c, "floor/wat-continue", &wat_chain, &clean, &phone, go_on);
    let _ = std::fs::remove_dir_all(&dir);
    for (name, _) in PLUGINS {
        let chain = chain(&engine, &[name]);
        bench_chain(c, &format!("plugin/{name}"), &chain, &clean, &phone, go_on);
    }

    // A call every time: each User-Agent comes back only after 1,024
    // others, and the host keeps promises for 256.
    let asked: Vec<Arc<Message>> = (0..1024)
        .map(|n| message(&format!("Yealink SIP-T46U 108.86.0.{n}")))
        .collect();
    let f2b = chain(&engine, &["fail-to-ban"]);
    let mut next = 0;
    c.bench_function("plugin/fail-to-ban-asked", |b| {
        b.iter_batched(
            || {
                next = (next + 1) % asked.len();
                RequestView::new(asked[next].clone(), phone.clone())
            },
            |view| {
                black_box(f2b.on_request(black_box(&view)));
                view
            },
            BatchSize::NumIterations(64),
        )
    });
    let s = &f2b.stats()[0];
    assert!(
        s.calls > s.reused,
        "asked, not answered from promises: {s:?}"
    );

    let names: Vec<&str> = PLUGINS.iter().map(|(n, _)| *n).collect();
    let all = chain(&engine, &names);
    let before = all.stats();
    bench_chain(
        c,
        &format!("chain/{}", names.join("+")),
        &all,
        &clean,
        &phone,
        go_on,
    );
    println!("per plugin in the chain (the runtime's call timers, including its own timing):");
    for (after, before) in all.stats().iter().zip(&before) {
        let calls = after.calls - before.calls;
        let ns = after.total_call_ns - before.total_call_ns;
        println!(
            "  {:<12} {:>7.0} ns per call over {calls} calls",
            after.name,
            ns as f64 / calls.max(1) as f64
        );
    }

    let scanner = message("friendly-scanner");
    let f2b = chain(&engine, &["fail-to-ban"]);
    bench_chain(
        c,
        "attack/fail-to-ban-scanner-udp",
        &f2b,
        &scanner,
        &info(false),
        None,
    );
}

criterion_group! {
    name = chain_benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    targets = benches
}
criterion_main!(chain_benches);
