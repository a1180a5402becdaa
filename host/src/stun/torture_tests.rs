//! The responder against good, odd and broken messages: named cases, the
//! RFC 5769 test vector, then every prefix and thousands of random
//! mutations, which must never panic and never produce a broken answer.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use stun_rs::attributes::stun::{
    ErrorCode, Fingerprint, MappedAddress, Software, UnknownAttributes, XorMappedAddress,
};
use stun_rs::{DecoderContextBuilder, MessageClass, MessageDecoderBuilder, StunMessage};

use super::header::MAGIC_COOKIE;
use super::*;

const TXID: [u8; 12] = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12];

fn v4() -> SocketAddr {
    "192.0.2.1:32853".parse().unwrap()
}

fn v6() -> SocketAddr {
    "[2001:db8:1234:5678:11:2233:4455:6677]:32853"
        .parse()
        .unwrap()
}

fn responder() -> Responder {
    Responder::new("sipfence test", Arc::new(Stats::default()))
}

/// FINGERPRINT's value for `message`, whose length field already counts it.
fn crc(message: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in message {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc ^ 0x5354_554e
}

/// A request of `message_type` with the magic cookie and `attributes`
/// (type, value), optionally with a FINGERPRINT last.
fn request(message_type: u16, attributes: &[(u16, &[u8])], fingerprint: bool) -> Vec<u8> {
    let mut m = message_type.to_be_bytes().to_vec();
    m.extend_from_slice(&[0, 0]);
    m.extend_from_slice(&MAGIC_COOKIE);
    m.extend_from_slice(&TXID);
    for (kind, value) in attributes {
        m.extend_from_slice(&kind.to_be_bytes());
        m.extend_from_slice(&(value.len() as u16).to_be_bytes());
        m.extend_from_slice(value);
        m.extend(std::iter::repeat_n(0, (4 - value.len() % 4) % 4));
    }
    if fingerprint {
        let length = (m.len() - 20 + 8) as u16;
        m[2..4].copy_from_slice(&length.to_be_bytes());
        let value = crc(&m);
        m.extend_from_slice(&[0x80, 0x28, 0, 4]);
        m.extend_from_slice(&value.to_be_bytes());
    } else {
        let length = (m.len() - 20) as u16;
        m[2..4].copy_from_slice(&length.to_be_bytes());
    }
    m
}

fn binding(fingerprint: bool) -> Vec<u8> {
    request(0x0001, &[], fingerprint)
}

/// An RFC 3489 Binding request: no cookie, CHANGE-REQUEST without flags.
fn classic() -> Vec<u8> {
    let mut m = vec![0x00, 0x01, 0x00, 0x08];
    m.extend_from_slice(&[0x42; 16]);
    m.extend_from_slice(&[0x00, 0x03, 0x00, 0x04, 0, 0, 0, 0]);
    m
}

/// Decodes an answer with FINGERPRINT validation on.
fn decode(answer: &Answer) -> StunMessage {
    let decoder = MessageDecoderBuilder::default()
        .with_context(DecoderContextBuilder::default().with_validation().build())
        .build();
    let (message, size) = decoder
        .decode(answer.as_bytes())
        .unwrap_or_else(|e| panic!("answer does not decode: {e:?}"));
    assert_eq!(size, answer.as_bytes().len());
    message
}

fn xor_mapped(message: &StunMessage) -> SocketAddr {
    *message
        .get::<XorMappedAddress>()
        .expect("XOR-MAPPED-ADDRESS")
        .as_xor_mapped_address()
        .unwrap()
        .socket_address()
}

fn software(message: &StunMessage) -> String {
    let s: &Software = message
        .get::<Software>()
        .expect("SOFTWARE")
        .as_software()
        .unwrap();
    let text: &str = s.as_ref();
    text.to_owned()
}

fn unknown_listed(message: &StunMessage) -> Vec<u16> {
    let attr: &UnknownAttributes = message
        .get::<UnknownAttributes>()
        .expect("UNKNOWN-ATTRIBUTES")
        .as_unknown_attributes()
        .unwrap();
    attr.iter().copied().collect()
}

fn error_code(message: &StunMessage) -> u16 {
    let attr: &ErrorCode = message
        .get::<ErrorCode>()
        .expect("ERROR-CODE")
        .as_error_code()
        .unwrap();
    attr.error_code().error_code()
}

#[test]
fn binding_request_gets_xor_mapped_address_and_software() {
    let r = responder();
    for peer in [v4(), v6()] {
        let answer = r.respond(&binding(false), peer).unwrap();
        assert!(!answer.error);
        let m = decode(&answer);
        assert_eq!(m.class(), MessageClass::SuccessResponse);
        assert_eq!(m.transaction_id().as_bytes(), &TXID);
        assert_eq!(xor_mapped(&m), peer);
        assert_eq!(software(&m), "sipfence test");
        assert!(m.get::<Fingerprint>().is_none(), "no FINGERPRINT unasked");
        // XOR-MAPPED-ADDRESS only: MAPPED-ADDRESS is for RFC 3489 clients.
        assert!(m.get::<MappedAddress>().is_none());
    }
}

#[test]
fn fingerprint_in_the_request_puts_a_valid_one_in_the_answer() {
    let answer = responder().respond(&binding(true), v4()).unwrap();
    let m = decode(&answer);
    assert!(m.get::<Fingerprint>().is_some());
    let bytes = answer.as_bytes();
    let before = bytes.len() - 8;
    assert_eq!(&bytes[before..before + 4], &[0x80, 0x28, 0, 4]);
    assert_eq!(
        u32::from_be_bytes(bytes[before + 4..].try_into().unwrap()),
        crc(&bytes[..before])
    );
}

#[test]
fn a_wrong_or_misplaced_fingerprint_is_dropped() {
    let r = responder();
    let mut wrong = binding(true);
    *wrong.last_mut().unwrap() ^= 1;
    assert_eq!(r.respond(&wrong, v4()).err(), Some(Dropped::BadFingerprint));
    // FINGERPRINT must be last; SOFTWARE after it is not allowed.
    let mut m = binding(true);
    m.extend_from_slice(&[0x80, 0x22, 0, 4, b'a', b'b', b'c', b'd']);
    let length = (m.len() - 20) as u16;
    m[2..4].copy_from_slice(&length.to_be_bytes());
    assert_eq!(r.respond(&m, v4()).err(), Some(Dropped::BadFingerprint));
}

/// RFC 5769 section 2.1: a real request with SOFTWARE, PRIORITY,
/// ICE-CONTROLLED, USERNAME, MESSAGE-INTEGRITY and FINGERPRINT. PRIORITY
/// (0x0024) is ICE's, comprehension-required, and not served here: 420.
#[test]
fn rfc5769_sample_request() {
    let hex = "000100582112a442b7e7a701bc34d686fa87dfae802200105354554e20746573\
               7420636c69656e74002400046e0001ff80290008932ff9b151263b3600060009\
               6576746a3a68367659202020000800149aeaa70cbfd8cb56781ef2b5b2d3f249\
               c1b571a280280004e57a3bcf";
    let bytes = (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
        .collect::<Vec<u8>>();
    let answer = responder().respond(&bytes, v4()).unwrap();
    assert!(answer.error);
    let m = decode(&answer);
    assert_eq!(m.class(), MessageClass::ErrorResponse);
    assert_eq!(error_code(&m), 420);
    assert_eq!(unknown_listed(&m), vec![0x0024]);
    assert!(m.get::<Fingerprint>().is_some(), "the request had one");
    assert_eq!(
        m.transaction_id().as_bytes(),
        &[0xb7, 0xe7, 0xa7, 0x01, 0xbc, 0x34, 0xd6, 0x86, 0xfa, 0x87, 0xdf, 0xae]
    );
}

#[test]
fn unknown_comprehension_required_attributes_get_420_optional_ones_are_ignored() {
    let r = responder();
    let optional = request(0x0001, &[(0xC001, b"whatever")], false);
    assert!(!r.respond(&optional, v4()).unwrap().error);

    let required = request(
        0x0001,
        &[
            (0x7F01, b"x"),
            (0xC001, b""),
            (0x7F01, b"y"),
            (0x0027, &[0, 9, 0, 0]),
        ],
        true,
    );
    let answer = r.respond(&required, v4()).unwrap();
    assert!(answer.error);
    let m = decode(&answer);
    assert_eq!(error_code(&m), 420);
    assert_eq!(unknown_listed(&m), vec![0x7F01, 0x0027]);
    assert_eq!(software(&m), "sipfence test");
}

#[test]
fn change_request_without_flags_is_fine_with_flags_gets_420() {
    let r = responder();
    let none = request(0x0001, &[(0x0003, &[0, 0, 0, 0])], false);
    assert!(!r.respond(&none, v4()).unwrap().error);
    for flags in [2u8, 4, 6] {
        let change = request(0x0001, &[(0x0003, &[0, 0, 0, flags])], false);
        let m = decode(&r.respond(&change, v4()).unwrap());
        assert_eq!(unknown_listed(&m), vec![0x0003], "flags {flags}");
    }
}

#[test]
fn classic_request_gets_mapped_address_and_its_own_transaction_id() {
    let answer = responder().respond(&classic(), v4()).unwrap();
    let a = answer.as_bytes();
    assert_eq!(&a[..2], &[0x01, 0x01]);
    assert_eq!(&a[4..20], &[0x42; 16], "the 128-bit transaction id echoed");
    // MAPPED-ADDRESS 192.0.2.1:32853, in the clear.
    assert_eq!(&a[20..32], &[0, 1, 0, 8, 0, 1, 0x80, 0x55, 192, 0, 2, 1]);
    // Then SOFTWARE ("sipfence test", padded to 16), and nothing else: no
    // XOR-MAPPED-ADDRESS for RFC 3489 clients.
    assert_eq!(&a[32..36], &[0x80, 0x22, 0, 13]);
    assert_eq!(&a[36..49], b"sipfence test");
    assert_eq!(a.len(), 52);
}

#[test]
fn not_a_binding_request_is_dropped() {
    let r = responder();
    // Binding indication, success and error responses, Allocate (TURN).
    for message_type in [0x0011u16, 0x0101, 0x0111, 0x0003] {
        assert_eq!(
            r.respond(&request(message_type, &[], false), v4()).err(),
            Some(Dropped::NotBindingRequest),
            "{message_type:#06x}"
        );
    }
    let mut classic_response = classic();
    classic_response[1] = 0x01;
    classic_response[0] = 0x01;
    assert_eq!(
        r.respond(&classic_response, v4()).err(),
        Some(Dropped::NotBindingRequest)
    );
}

#[test]
fn malformed_attributes_are_dropped() {
    let r = responder();
    // SOFTWARE that is not UTF-8.
    let bad_text = request(0x0001, &[(0x8022, &[0xff, 0xfe, 0xfd])], false);
    assert!(matches!(
        r.respond(&bad_text, v4()),
        Err(Dropped::Malformed(_))
    ));
    // An attribute longer than the message.
    let mut long = request(0x0001, &[(0x8022, b"abcd")], false);
    long[23] = 40;
    assert!(matches!(r.respond(&long, v4()), Err(Dropped::Malformed(_))));
}

#[test]
fn answer_counts_requests_drops_and_errors() {
    let stats = Arc::new(Stats::default());
    let r = Responder::new("x", stats.clone());
    assert!(r.answer(&binding(false), v4()).is_some());
    assert!(r.answer(&binding(false)[..19], v4()).is_none());
    assert!(r
        .answer(&request(0x0001, &[(0x7F01, b"")], false), v4())
        .is_some());
    let get = |c: &std::sync::atomic::AtomicU64| c.load(Ordering::Relaxed);
    assert_eq!(get(&stats.stun_requests), 3);
    assert_eq!(get(&stats.stun_dropped), 1);
    assert_eq!(get(&stats.stun_errors), 1);
}

/// xorshift64: deterministic, so a failure reproduces.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// Any input: no panic, and any answer is a well-formed STUN message for
/// the same transaction.
fn exercise(r: &Responder, bytes: &[u8]) {
    for peer in [v4(), v6()] {
        let Ok(answer) = r.respond(bytes, peer) else {
            continue;
        };
        let a = answer.as_bytes();
        let header = header::Header::parse(a).expect("answer has a good header");
        assert!(matches!(header.message_type, 0x0101 | 0x0111));
        assert_eq!(&a[4..20], &bytes[4..20], "same transaction");
        if !header.classic {
            let m = decode(&answer);
            if !answer.error {
                assert_eq!(xor_mapped(&m), peer);
            }
        }
    }
}

#[test]
fn robustness_prefixes_and_mutations() {
    let r = responder();
    let seeds = [
        binding(false),
        binding(true),
        classic(),
        request(
            0x0001,
            &[
                (0x0006, b"user:name"),
                (0x8022, b"client 1.0"),
                (0x0003, &[0, 0, 0, 0]),
                (0x7F01, b"z"),
            ],
            true,
        ),
    ];
    for seed in &seeds {
        for cut in 0..=seed.len() {
            exercise(&r, &seed[..cut]);
        }
    }
    let mut rng = XorShift(0x9E37_79B9_7F4A_7C15);
    let interesting = [
        0x00u8, 0x01, 0x03, 0x04, 0x08, 0x11, 0x20, 0x21, 0x28, 0x80, 0xff,
    ];
    for i in 0..20_000 {
        let mut m = seeds[i % seeds.len()].clone();
        let edits = 1 + (rng.next() % 6) as usize;
        for _ in 0..edits {
            if m.is_empty() {
                break;
            }
            let pos = (rng.next() % m.len() as u64) as usize;
            match rng.next() % 5 {
                0 => m[pos] = rng.next() as u8,
                1 => m[pos] = interesting[(rng.next() % interesting.len() as u64) as usize],
                2 => {
                    m.remove(pos);
                }
                3 => m.insert(pos, rng.next() as u8),
                // Keep the length field true, so mutations reach the attributes.
                _ => {
                    if m.len() >= 4 {
                        let length = (m.len().saturating_sub(20) & !3) as u16;
                        m[2..4].copy_from_slice(&length.to_be_bytes());
                        m.truncate(20 + usize::from(length));
                    }
                }
            }
        }
        exercise(&r, &m);
    }
}
