//! Phones behind NAT: keep-alive OPTIONS pings go to the address a REGISTER
//! came from (never to the Contact), keep the binding while answered, and
//! remove it when the phone stops answering. (Calls to such phones: calls.rs.)

mod common;

use std::time::Duration;

use common::*;

const CONFIG: &str = r#"
[auth]
algorithms = ["MD5"]

[nat]
ping_interval_ms = 300
ping_failures = 2

[[extension]]
number = "101"
password = "pw101"

[[extension]]
number = "102"
password = "pw102"
"#;

#[test]
fn phones_behind_nat_are_pinged_at_their_source_and_dropped_when_silent() {
    const NATTED_IP: &str = "127.0.0.201";
    const PRIVATE: &str = "127.0.0.202:5999";
    const DIRECT_IP: &str = "127.0.0.203";
    let gw = Gateway::start("127.0.0.1", CONFIG);
    // Listens where the Contact points, to prove no ping goes there.
    let private = std::net::UdpSocket::bind(PRIVATE).unwrap();
    private
        .set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();

    let natted = Phone::new(NATTED_IP, gw.addr());
    let mut reg = Register::new("127.0.0.1", "101", &format!("sip:101@{PRIVATE}"));
    assert_eq!(
        register_with_auth(&natted, &mut reg, "pw101", "MD5").code(),
        Some(200)
    );
    let direct = Phone::new(DIRECT_IP, gw.addr());
    let mut reg = Register::new("127.0.0.1", "102", &format!("sip:102@{}", direct.local()));
    assert_eq!(
        register_with_auth(&direct, &mut reg, "pw102", "MD5").code(),
        Some(200)
    );

    // Answered pings keep the binding.
    for _ in 0..3 {
        let ping = natted
            .recv_within(Duration::from_secs(2))
            .expect("an OPTIONS ping at the phone's source address");
        assert_eq!(ping.method().map(|m| m.as_str()), Some("OPTIONS"));
        assert_eq!(
            ping.request_uri().unwrap().to_string(),
            format!("sip:101@{PRIVATE}"),
            "the ping is addressed to the Contact, but sent to the source"
        );
        let answer = ping.response(200, "OK", Some("phone"));
        natted.send_raw(&answer.to_bytes());
    }
    assert_eq!(gw.registrations().len(), 2);
    let mut buf = [0u8; 2048];
    assert!(
        private.recv_from(&mut buf).is_err(),
        "nothing may go to the Contact"
    );
    assert!(
        direct.recv_within(Duration::from_millis(100)).is_none(),
        "a phone not behind NAT is not pinged"
    );

    // Silence: two unanswered pings and the binding goes.
    wait_until(
        Duration::from_secs(5),
        "the silent phone's binding removed",
        || gw.registrations().iter().all(|r| r["extension"] != "101"),
    );
    let left = gw.registrations();
    assert_eq!(left.len(), 1, "{left:?}");
    assert_eq!(left[0]["extension"], "102");
    assert!(gw.stat("keepalive_removed") >= 1);
    assert!(gw.stat("keepalive_pings") >= 5);
}
