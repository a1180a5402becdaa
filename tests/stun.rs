//! STUN through the real binary, with real clients from outside the
//! project: Debian's `stun` (RFC 3489, IPv4 over UDP), the bench kit's
//! `stunload.py` (RFC 5389 with FINGERPRINT, IPv4 and IPv6 over UDP; it
//! checks every XOR-MAPPED-ADDRESS against its own socket's address) and
//! `aiostun` from PyPI (RFC 5389 over TCP, IPv4 and IPv6), against the SIP
//! port and the standalone listener. Then what must get no answer:
//! malformed STUN and banned sources. A missing tool fails the test.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

/// The bench kit's STUN load generator (it refuses non-loopback targets).
const STUNLOAD: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../shared/bench/stun/stunload.py"
);

const USERS: &str = r#"
[[extension]]
number = "100"
password = "pw100"
"#;

/// Fails at once, saying what to install, when `tool` is not on PATH.
fn require(tool: &str, install: &str) {
    let found = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()))
        .unwrap_or(false);
    assert!(found, "`{tool}` not found on PATH: {install}");
}

/// What a tool printed; it is killed and the test fails after `limit`.
fn run_tool(mut command: Command, limit: Duration) -> (bool, String) {
    let what = format!("{command:?}");
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {what}: {e}"));
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    let out = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = out.read_to_string(&mut s);
        s
    });
    let err = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    });
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "{what} killed after {limit:?}:\n{}\n{}",
                out.join().unwrap(),
                err.join().unwrap()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let text = format!("{}{}", out.join().unwrap(), err.join().unwrap());
    eprintln!("$ {what}\n{text}");
    (status.success(), text)
}

/// Debian's `stun` client from `source` (bound with -i) against `server`;
/// returns the (local, mapped) addresses of its first test, or None when it
/// got no answer.
fn debian_stun(source: &str, server: SocketAddr) -> (String, Option<String>) {
    require("stun", "apt-get install stun-client");
    let mut command = Command::new("stun");
    command.arg(server.to_string()).args(["-v", "-i", source]);
    let (_, text) = run_tool(command, Duration::from_secs(30));
    // "Opened port 41000 with fd 3": the first socket, used by test I.
    let port = text
        .lines()
        .find_map(|l| l.strip_prefix("Opened port "))
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("no local port in:\n{text}"));
    let mapped = text
        .lines()
        .find_map(|l| l.strip_prefix("MappedAddress = "))
        .map(str::to_owned);
    (format!("{source}:{port}"), mapped)
}

/// One `stunload.py` run: a few RFC 5389 requests with FINGERPRINT from
/// `source`; its KEY=VALUE summary.
fn stunload(source: &str, server: SocketAddr) -> std::collections::HashMap<String, String> {
    assert!(
        Path::new(STUNLOAD).is_file(),
        "{STUNLOAD} is missing: these tests need the bench kit's shared/ folder \
         beside the repository"
    );
    require("python3", "apt-get install python3");
    let mut command = Command::new("python3");
    command
        .arg(STUNLOAD)
        .arg(server.ip().to_string())
        .arg(server.port().to_string())
        .args([
            "--rate", "100", "--secs", "0.1", "--socks", "2", "--max", "10",
        ])
        .args(["--drain", "2", "--fingerprint", "--quiet", "--src", source]);
    let (ok, text) = run_tool(command, Duration::from_secs(30));
    assert!(ok, "stunload.py failed:\n{text}");
    text.split_whitespace()
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

/// Every request answered, every XOR-MAPPED-ADDRESS equal to the sending
/// socket's own address and port, every FINGERPRINT right.
fn assert_stunload_clean(summary: &std::collections::HashMap<String, String>, source: &str) {
    let n = |k: &str| -> u64 {
        summary
            .get(k)
            .unwrap_or_else(|| panic!("no {k} in {summary:?}"))
            .parse()
            .unwrap()
    };
    assert_eq!(n("sent"), 10, "{summary:?}");
    assert_eq!(n("ok"), n("sent"), "{summary:?}");
    for k in ["bad_xma", "no_xma", "bad_fp", "err_resp", "lost"] {
        assert_eq!(n(k), 0, "{k}: {summary:?}");
    }
    let example = &summary["xma_example"];
    let ip = example
        .rsplit_once(':')
        .map(|(ip, _)| ip.trim_matches(['[', ']']))
        .unwrap();
    assert_eq!(ip, source, "{summary:?}");
}

/// `aiostun` (PyPI) over TCP from `source`: two Binding requests on one
/// connection; returns the local address and the two mapped addresses.
fn aiostun_tcp(source: &str, server: SocketAddr) -> String {
    require("python3", "apt-get install python3");
    let script = r#"
import asyncio, sys
try:
    import aiostun
except ImportError:
    sys.exit("aiostun is missing: python3 -m pip install aiostun==0.6.1")
host, port, src = sys.argv[1], int(sys.argv[2]), sys.argv[3]
family = aiostun.IP6 if ":" in host else aiostun.IP4
async def main():
    async with aiostun.Client(host=host, port=port, family=family, proto=aiostun.TCP,
                              local_addr=src, local_port=0, timeout=5) as client:
        local = client.get_local_addr()
        first = await client.get_mapped_address()
        second = await client.get_mapped_address()
        print("local", local[0], local[1])
        for m in (first, second):
            print("mapped", m.get("ip"), m.get("port"))
asyncio.run(main())
"#;
    let mut command = Command::new("python3");
    command
        .args(["-c", script])
        .arg(server.ip().to_string())
        .arg(server.port().to_string())
        .arg(source);
    let (ok, text) = run_tool(command, Duration::from_secs(30));
    assert!(ok, "aiostun failed:\n{text}");
    text
}

/// A Binding request with the magic cookie and transaction id `txid`.
fn binding(txid: u8) -> Vec<u8> {
    let mut m = vec![0x00, 0x01, 0x00, 0x00, 0x21, 0x12, 0xA4, 0x42];
    m.extend_from_slice(&[txid; 12]);
    m
}

/// A UDP socket on `ip:0` talking to `server`.
fn udp(ip: &str) -> UdpSocket {
    let socket = UdpSocket::bind(format!("{ip}:0")).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_millis(400)))
        .unwrap();
    socket
}

/// Sends `bytes` and returns the answer, if one comes.
fn exchange(socket: &UdpSocket, server: SocketAddr, bytes: &[u8]) -> Option<Vec<u8>> {
    socket.send_to(bytes, server).unwrap();
    let mut buf = [0u8; 2048];
    match socket.recv_from(&mut buf) {
        Ok((n, from)) => {
            assert_eq!(from, server);
            Some(buf[..n].to_vec())
        }
        Err(_) => None,
    }
}

/// The XOR-MAPPED-ADDRESS of a Binding success response (IPv4 and IPv6),
/// decoded here independently of the gateway's code.
fn xor_mapped(answer: &[u8]) -> SocketAddr {
    assert_eq!(&answer[..2], &[0x01, 0x01], "a Binding success response");
    let mut at = 20;
    while at + 4 <= answer.len() {
        let kind = u16::from_be_bytes([answer[at], answer[at + 1]]);
        let len = usize::from(u16::from_be_bytes([answer[at + 2], answer[at + 3]]));
        let value = &answer[at + 4..at + 4 + len];
        if kind == 0x0020 {
            let port = u16::from_be_bytes([value[2], value[3]]) ^ 0x2112;
            let key: Vec<u8> = answer[4..20].to_vec();
            let ip: Vec<u8> = value[4..].iter().zip(&key).map(|(a, k)| a ^ k).collect();
            let ip = match value[1] {
                1 => std::net::IpAddr::from(<[u8; 4]>::try_from(&ip[..]).unwrap()),
                _ => std::net::IpAddr::from(<[u8; 16]>::try_from(&ip[..]).unwrap()),
            };
            return SocketAddr::new(ip, port);
        }
        at += 4 + ((len + 3) & !3);
    }
    panic!("no XOR-MAPPED-ADDRESS in {answer:?}");
}

#[test]
fn debian_stun_client_learns_its_address_on_the_sip_port_and_the_stun_port() {
    let gw = Gateway::start_with_stun("");
    let (sip, stun) = (gw.addrs[0], gw.stun_addrs[0]);
    assert!(sip.is_ipv4() && stun.is_ipv4());
    for (server, source) in [(sip, "127.0.0.21"), (stun, "127.0.0.22")] {
        let (local, mapped) = debian_stun(source, server);
        assert_eq!(
            mapped.as_deref(),
            Some(local.as_str()),
            "MAPPED-ADDRESS is the client's own address ({server})"
        );
    }
    let stats = gw.stats();
    assert!(stats["stun_requests"].as_u64().unwrap() >= 2, "{stats}");
    assert_eq!(stats["stun_dropped"], 0, "{stats}");
    // Its change-IP/port tests get 420: one address per listener.
    assert!(stats["stun_errors"].as_u64().unwrap() >= 1, "{stats}");
}

#[test]
fn stunload_checks_every_mapped_address_over_ipv4_and_ipv6_on_both_ports() {
    let gw = Gateway::start_with_stun("");
    for (server, source) in [
        (gw.addrs[0], "127.0.0.23"),
        (gw.addrs[1], "::1"),
        (gw.stun_addrs[0], "127.0.0.24"),
        (gw.stun_addrs[1], "::1"),
    ] {
        let summary = stunload(source, server);
        assert_stunload_clean(&summary, source);
    }
    assert_eq!(gw.stat("stun_requests"), 40);
    assert_eq!(gw.stat("stun_dropped"), 0);
}

#[test]
fn aiostun_over_tcp_gets_its_address_over_ipv4_and_ipv6() {
    let gw = Gateway::start_with_stun("");
    for (server, source) in [(gw.stun_addrs[0], "127.0.0.25"), (gw.stun_addrs[1], "::1")] {
        let text = aiostun_tcp(source, server);
        let local = text
            .lines()
            .find_map(|l| l.strip_prefix("local "))
            .unwrap_or_else(|| panic!("{text}"));
        let mapped: Vec<&str> = text
            .lines()
            .filter_map(|l| l.strip_prefix("mapped "))
            .collect();
        assert_eq!(mapped, vec![local, local], "{server}: {text}");
        assert!(local.starts_with(source), "{text}");
    }
    assert_eq!(gw.stat("stun_requests"), 4);
    assert_eq!(gw.stat("tcp_connections_accepted"), 2);
}

#[test]
fn malformed_stun_gets_no_answer_and_is_counted() {
    let gw = Gateway::start_with_stun("");
    let mut malformed: Vec<Vec<u8>> = Vec::new();
    // Cookie, but the length says 8 more bytes than there are.
    let mut long = binding(1);
    long[3] = 8;
    malformed.push(long);
    // Cut short inside the header.
    malformed.push(binding(2)[..12].to_vec());
    // A FINGERPRINT that does not match.
    let mut fp = binding(3);
    fp[3] = 8;
    fp.extend_from_slice(&[0x80, 0x28, 0x00, 0x04, 1, 2, 3, 4]);
    malformed.push(fp);
    // A Binding indication and a Binding response: nothing to answer.
    let mut indication = binding(4);
    indication[1] = 0x11;
    malformed.push(indication);
    let mut response = binding(5);
    response[0] = 0x01;
    response[1] = 0x01;
    malformed.push(response);
    // An attribute running past the end of the message.
    let mut attr = binding(6);
    attr[3] = 4;
    attr.extend_from_slice(&[0x80, 0x22, 0x00, 0x40]);
    malformed.push(attr);

    let socket = udp("127.0.0.26");
    for server in [gw.addrs[0], gw.stun_addrs[0]] {
        for bytes in &malformed {
            assert_eq!(
                exchange(&socket, server, bytes),
                None,
                "no answer to {bytes:?} on {server}"
            );
        }
        // A good request is still answered, with the right address.
        let answer = exchange(&socket, server, &binding(7)).expect("an answer");
        assert_eq!(xor_mapped(&answer), socket.local_addr().unwrap());
    }
    // Anything that is not STUN, on the STUN port, is malformed STUN.
    assert_eq!(
        exchange(&socket, gw.stun_addrs[0], b"OPTIONS sip:x SIP/2.0\r\n\r\n"),
        None
    );
    // On TCP, a frame that is not STUN closes the connection unanswered.
    let mut tcp = tcp_connect("127.0.0.26", gw.stun_addrs[0]);
    tcp.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut buf = [0u8; 64];
    assert_eq!(tcp.read(&mut buf).unwrap_or(0), 0);

    let stats = gw.stats();
    let expected = 2 * malformed.len() as u64 + 2;
    assert_eq!(stats["stun_dropped"], expected, "{stats}");
    assert_eq!(stats["stun_requests"], expected + 2, "{stats}");
    // STUN on the SIP port never reaches the SIP parser; SIP still works.
    assert_eq!(stats["dropped_unparseable"], 0, "{stats}");
    let phone = Phone::new("127.0.0.26", gw.addr());
    let ok = phone.request(&options(phone.local(), "UDP", "phone", 1));
    assert_eq!(ok.code(), Some(200));
}

#[test]
fn a_banned_source_gets_no_stun_answer() {
    let gw = Gateway::start_with_stun(&format!("{FAIL_TO_BAN}{USERS}"));
    let banned = "127.0.0.27";
    let guesser = Phone::new(banned, gw.addr());
    for attempt in 1..=4 {
        let answer = wrong_password(&guesser, "100").expect("answered before the threshold");
        assert_eq!(answer.code(), Some(401), "attempt {attempt}");
    }
    assert!(wrong_password(&guesser, "100").is_none(), "banned now");
    assert!(gw.cli(&["bans", "list"]).contains(banned));
    let dropped_before = gw.stat("dropped_banned");

    let socket = udp(banned);
    for server in [gw.addrs[0], gw.stun_addrs[0]] {
        assert_eq!(exchange(&socket, server, &binding(1)), None, "{server}");
    }
    // Nor over TCP: the connection is closed unread.
    let mut tcp = tcp_connect(banned, gw.stun_addrs[0]);
    let _ = tcp.write_all(&binding(2));
    let mut buf = [0u8; 64];
    assert_eq!(tcp.read(&mut buf).unwrap_or(0), 0);
    // Nor to a real client.
    let (_, mapped) = debian_stun(banned, gw.stun_addrs[0]);
    assert_eq!(mapped, None);

    // Another address is served as usual.
    let other = udp("127.0.0.28");
    for server in [gw.addrs[0], gw.stun_addrs[0]] {
        let answer = exchange(&other, server, &binding(3)).expect("answered");
        assert_eq!(xor_mapped(&answer), other.local_addr().unwrap());
    }
    assert!(gw.stat("dropped_banned") >= dropped_before + 4);
    assert_eq!(
        gw.stat("stun_requests"),
        2,
        "banned requests never reach STUN"
    );
}

#[test]
fn tcp_connections_per_source_are_limited_like_sip() {
    let gw = Gateway::start_with_stun("[tcp]\nmax_connections_per_source = 2\n");
    let server = gw.stun_addrs[0];
    let mut open: Vec<TcpStream> = (0..2).map(|_| tcp_connect("127.0.0.29", server)).collect();
    // The third from the same address is closed at once.
    let mut third = tcp_connect("127.0.0.29", server);
    let mut buf = [0u8; 64];
    assert_eq!(third.read(&mut buf).unwrap_or(0), 0);
    // The first two still work, and so does another address.
    for stream in &mut open {
        stream.write_all(&binding(9)).unwrap();
        let n = stream.read(&mut buf).unwrap();
        assert_eq!(xor_mapped(&buf[..n]), stream.local_addr().unwrap());
    }
    let mut other = tcp_connect("127.0.0.30", server);
    other.write_all(&binding(10)).unwrap();
    let n = other.read(&mut buf).unwrap();
    assert_eq!(xor_mapped(&buf[..n]), other.local_addr().unwrap());
    assert_eq!(gw.stat("tcp_connections_refused"), 1);
}
