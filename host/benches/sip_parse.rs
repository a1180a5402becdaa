//! The SIP parser and serializer on a typical REGISTER (criterion).
//!
//! Run: `cargo bench -p sipfence --bench sip_parse`

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
use sipfence::auth::Credentials;
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

fn benches(c: &mut Criterion) {
    c.bench_function("register/parse", |b| {
        b.iter(|| Message::parse(black_box(REGISTER)).is_ok())
    });
    let msg = Message::parse(REGISTER).expect("valid REGISTER");
    c.bench_function("register/check_request+contacts", |b| {
        b.iter(|| {
            let m = black_box(&msg);
            (
                m.check_request().is_ok(),
                m.contacts().map(|c| c.len()).unwrap_or(0),
            )
        })
    });
    c.bench_function("register/to_bytes", |b| {
        b.iter(|| black_box(&msg).to_bytes().len())
    });
    c.bench_function("register/response_200+to_bytes", |b| {
        b.iter(|| {
            black_box(&msg)
                .response(200, "OK", Some("abc"))
                .to_bytes()
                .len()
        })
    });
    // A SIPp-style answer to an MD5 challenge (the nonce is one of ours).
    let authorization = "Digest username=\"1234\",realm=\"127.0.0.1\",\
        cnonce=\"6b8b4567\",nc=00000001,qop=auth,uri=\"sip:127.0.0.1:5060\",\
        nonce=\"AAABmsGwyD2X2mKvGzj9jWzlUq0yQ8C4Fh2ZT6b9Sx0\",\
        response=\"bdd2ebf8f8c1c7b1c9c8dc3a26a1a5e9\",algorithm=MD5";
    c.bench_function("register/credentials", |b| {
        b.iter(|| Credentials::parse(black_box(authorization)).is_ok())
    });
    c.bench_function("register/frame", |b| {
        b.iter(|| frame(black_box(REGISTER), 65536))
    });
}

criterion_group!(sip_parse, benches);
criterion_main!(sip_parse);
