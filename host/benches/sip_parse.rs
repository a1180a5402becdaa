//! Timing of the SIP parser and serializer on a typical REGISTER (stable Rust, no bench crates).
//!
//! Run: `cargo test --release -p sipfence --bench sip_parse -- --nocapture`
//! (a plain `#[test]` in the default harness, so no nightly or bench crate is
//! needed; `cargo bench` would list it as ignored).

use std::hint::black_box;
use std::time::Instant;

use sipfence::sip::{frame, Message};

const REGISTER: &[u8] = b"REGISTER sip:registrar.example.com SIP/2.0\r\n\
Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK776asdhds;rport\r\n\
Max-Forwards: 70\r\n\
From: \"Bob\" <sip:bob@example.com>;tag=a73kszlfl\r\n\
To: \"Bob\" <sip:bob@example.com>\r\n\
Call-ID: 1j9FpLxk3uxtm8tn@192.0.2.10\r\n\
CSeq: 1826 REGISTER\r\n\
Contact: <sip:bob@192.0.2.10:5060;transport=udp;ob>;expires=3600;+sip.instance=\"<urn:uuid:00000000-0000-1000-8000-000A95A0E128>\";reg-id=1\r\n\
Allow: INVITE, ACK, CANCEL, BYE, OPTIONS, MESSAGE, NOTIFY\r\n\
Supported: path, outbound, gruu\r\n\
User-Agent: ExamplePhone/1.2.3\r\n\
Expires: 3600\r\n\
Content-Length: 0\r\n\
\r\n";

/// Runs `f` `iters` times after a warm-up and returns nanoseconds per call.
fn time<F: FnMut()>(iters: u32, mut f: F) -> f64 {
    for _ in 0..iters / 10 {
        f();
    }
    let start = Instant::now();
    for _ in 0..iters {
        f();
    }
    start.elapsed().as_nanos() as f64 / f64::from(iters)
}

#[test]
fn bench_register() {
    let iters = 200_000;
    let parse = time(iters, || {
        black_box(Message::parse(black_box(REGISTER)).is_ok());
    });
    let msg = Message::parse(REGISTER).expect("valid REGISTER");
    let checks = time(iters, || {
        let m = black_box(&msg);
        black_box(m.check_request().is_ok());
        black_box(m.contacts().map(|c| c.len()).unwrap_or(0));
    });
    let serialize = time(iters, || {
        black_box(black_box(&msg).to_bytes().len());
    });
    let respond = time(iters, || {
        black_box(
            black_box(&msg)
                .response(200, "OK", Some("abc"))
                .to_bytes()
                .len(),
        );
    });
    let framing = time(iters, || {
        black_box(frame(black_box(REGISTER), 65536));
    });
    println!("REGISTER ({} bytes), ns per call:", REGISTER.len());
    println!("  Message::parse            {parse:8.0}");
    println!("  check_request + contacts  {checks:8.0}");
    println!("  to_bytes                  {serialize:8.0}");
    println!("  response(200) + to_bytes  {respond:8.0}");
    println!("  frame                     {framing:8.0}");
}
