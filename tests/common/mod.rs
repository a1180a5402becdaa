//! Test harness: runs the real `sipfence` binary on loopback ports chosen by
//! the kernel, and speaks SIP to it over real sockets.
//!
//! Each gateway gets its own temporary directory (database, control socket).
//! Its log lines are kept and printed if the test fails, so a red test shows
//! what the gateway said.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use md5::{Digest, Md5};
use sha2::Sha256;
use sipfence::sip::Message;

pub const BIN: &str = env!("CARGO_BIN_EXE_sipfence");

/// A fresh temporary directory, removed when dropped.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        let dir = std::env::temp_dir().join(format!(
            "sipfence-{tag}-{}-{:x}",
            std::process::id(),
            rand::random::<u32>()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A running gateway process.
pub struct Gateway {
    pub dir: Arc<TempDir>,
    pub config_path: PathBuf,
    child: Option<Child>,
    pub log: Arc<Mutex<Vec<String>>>,
    /// UDP and TCP listen addresses, in config order (both on the same port).
    pub addrs: Vec<SocketAddr>,
    /// The standalone STUN listener's addresses (UDP and TCP), in config order.
    pub stun_addrs: Vec<SocketAddr>,
}

/// The `[server]`, `[stun]`, `[storage]` and `[log]` lines every test config
/// needs. `listen` holds addresses with port 0 (or fixed ports for
/// restarts). No standalone STUN listener: see [`base_config_with_stun`].
pub fn base_config(dir: &Path, listen: &[String], server_extra: &str) -> String {
    base_config_with_stun(dir, listen, &[], server_extra)
}

/// [`base_config`] with a standalone STUN listener on `stun_listen`.
pub fn base_config_with_stun(
    dir: &Path,
    listen: &[String],
    stun_listen: &[String],
    server_extra: &str,
) -> String {
    let list = |addrs: &[String]| {
        addrs
            .iter()
            .map(|a| format!("{a:?}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    format!(
        "[server]\nlisten = [{}]\ncontrol_socket = {:?}\n{server_extra}\n\n[stun]\nlisten = [{}]\n\n[storage]\ndatabase = {:?}\n\n[log]\nformat = \"json\"\n",
        list(listen),
        dir.join("control.sock").display().to_string(),
        list(stun_listen),
        dir.join("sipfence.db").display().to_string(),
    )
}

impl Gateway {
    /// Starts a gateway listening on `ip:0`, with `extra` appended to the base config.
    pub fn start(ip: &str, extra: &str) -> Gateway {
        Gateway::start_full(ip, "", extra)
    }

    /// Like [`Gateway::start`], with extra lines for the `[server]` table.
    pub fn start_full(ip: &str, server_extra: &str, extra: &str) -> Gateway {
        let dir = Arc::new(TempDir::new("gw"));
        let listen = vec![format!("{ip}:0")];
        let text = format!("{}\n{extra}", base_config(&dir.0, &listen, server_extra));
        Gateway::start_with(dir, &text)
    }

    /// Starts a gateway whose SIP ports and standalone STUN listener are on
    /// 127.0.0.1:0 and [::1]:0, with `extra` appended to the base config.
    pub fn start_with_stun(extra: &str) -> Gateway {
        let dir = Arc::new(TempDir::new("gw"));
        let both = vec!["127.0.0.1:0".to_owned(), "[::1]:0".to_owned()];
        let text = format!(
            "{}\n{extra}",
            base_config_with_stun(&dir.0, &both, &both, "")
        );
        Gateway::start_with(dir, &text)
    }

    /// Starts a gateway in `dir` (where a test may have put plugin files).
    pub fn start_in(dir: Arc<TempDir>, ip: &str, server_extra: &str, extra: &str) -> Gateway {
        let listen = vec![format!("{ip}:0")];
        let text = format!("{}\n{extra}", base_config(&dir.0, &listen, server_extra));
        Gateway::start_with(dir, &text)
    }

    /// Starts a gateway with a complete config text in `dir`.
    pub fn start_with(dir: Arc<TempDir>, config_text: &str) -> Gateway {
        let config_path = dir.0.join("sipfence.toml");
        std::fs::write(&config_path, config_text).unwrap();
        let mut gw = Gateway {
            dir,
            config_path,
            child: None,
            log: Arc::new(Mutex::new(Vec::new())),
            addrs: Vec::new(),
            stun_addrs: Vec::new(),
        };
        gw.spawn();
        gw
    }

    fn spawn(&mut self) {
        let mut child = Command::new(BIN)
            .args(["run", "--config"])
            .arg(&self.config_path)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start sipfence");
        let stderr = child.stderr.take().unwrap();
        type Addrs = (Vec<SocketAddr>, Vec<SocketAddr>);
        let (tx, rx) = std::sync::mpsc::channel::<Result<Addrs, String>>();
        let log = self.log.clone();
        std::thread::spawn(move || {
            let mut addrs = Vec::new();
            let mut stun_addrs = Vec::new();
            let mut sent = false;
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if !sent {
                    if let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) {
                        match v["message"].as_str() {
                            Some("listening") => {
                                if let Some(a) = v["udp"].as_str() {
                                    addrs.push(a.parse().unwrap());
                                }
                            }
                            Some("stun listening") => {
                                if let Some(a) = v["udp"].as_str() {
                                    stun_addrs.push(a.parse().unwrap());
                                }
                            }
                            Some("ready") => {
                                let _ = tx.send(Ok((addrs.clone(), stun_addrs.clone())));
                                sent = true;
                            }
                            _ => {}
                        }
                    }
                }
                log.lock().unwrap().push(line);
            }
            if !sent {
                let _ = tx.send(Err("gateway exited before it was ready".into()));
            }
        });
        match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(Ok((addrs, stun_addrs))) => {
                self.addrs = addrs;
                self.stun_addrs = stun_addrs;
            }
            other => {
                let _ = child.kill();
                panic!(
                    "gateway did not start: {other:?}\n{}",
                    self.log.lock().unwrap().join("\n")
                );
            }
        }
        self.child = Some(child);
    }

    pub fn addr(&self) -> SocketAddr {
        self.addrs[0]
    }

    /// Sends SIGHUP (reload the plugin chain) and waits for the reload's log line.
    pub fn reload(&self) {
        let pid = self.child.as_ref().expect("running").id();
        let before = self.log_count("plugin chain reloaded");
        let status = Command::new("kill")
            .args(["-HUP", &pid.to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        wait_until(Duration::from_secs(10), "the chain reload", || {
            self.log_count("plugin chain reloaded") > before
        });
    }

    /// How many log lines contain `text`.
    pub fn log_count(&self, text: &str) -> usize {
        self.log
            .lock()
            .unwrap()
            .iter()
            .filter(|l| l.contains(text))
            .count()
    }

    /// SIGKILL: no shutdown work at all, as a crash.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().unwrap();
            child.wait().unwrap();
        }
    }

    /// Starts the same config again on the same addresses.
    pub fn restart_same_ports(&mut self) {
        let listen: Vec<String> = self.addrs.iter().map(|a| a.to_string()).collect();
        let text = std::fs::read_to_string(&self.config_path).unwrap();
        let start = text.find("listen = [").unwrap();
        let end = start + text[start..].find(']').unwrap() + 1;
        let listen = listen
            .iter()
            .map(|a| format!("{a:?}"))
            .collect::<Vec<_>>()
            .join(", ");
        let text = format!("{}listen = [{listen}]{}", &text[..start], &text[end..]);
        std::fs::write(&self.config_path, text).unwrap();
        self.spawn();
    }

    /// Runs `sipfence ARGS --config <this config>` and returns its stdout.
    pub fn cli(&self, args: &[&str]) -> String {
        let out = Command::new(BIN)
            .args(args)
            .arg("--config")
            .arg(&self.config_path)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "sipfence {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// The gateway's counters, through its control socket.
    pub fn stats(&self) -> serde_json::Value {
        serde_json::from_str(&self.cli(&["stats"])).unwrap()
    }

    pub fn stat(&self, name: &str) -> u64 {
        self.stats()[name]
            .as_u64()
            .unwrap_or_else(|| panic!("no counter {name}"))
    }

    /// The registrations as JSON rows.
    pub fn registrations(&self) -> Vec<serde_json::Value> {
        let text = self.cli(&["registrations", "list", "--json"]);
        serde_json::from_str(&text).unwrap()
    }

    pub fn log_text(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if std::thread::panicking() {
            eprintln!("---- gateway log ----\n{}\n---- end ----", self.log_text());
        }
    }
}

/// A UDP SIP peer bound to `ip:0`.
pub struct Phone {
    pub sock: UdpSocket,
    pub server: SocketAddr,
}

impl Phone {
    pub fn new(ip: &str, server: SocketAddr) -> Phone {
        let sock = UdpSocket::bind(format!("{ip}:0")).unwrap();
        sock.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
        Phone { sock, server }
    }

    pub fn local(&self) -> SocketAddr {
        self.sock.local_addr().unwrap()
    }

    pub fn send_raw(&self, bytes: &[u8]) {
        self.sock.send_to(bytes, self.server).unwrap();
    }

    /// The next message from the gateway, or None after `timeout`.
    pub fn recv_within(&self, timeout: Duration) -> Option<Message> {
        self.sock.set_read_timeout(Some(timeout)).unwrap();
        let mut buf = vec![0u8; 65535];
        match self.sock.recv_from(&mut buf) {
            Ok((n, _)) => Some(Message::parse(&buf[..n]).expect("gateway sent unparseable SIP")),
            Err(_) => None,
        }
    }

    pub fn recv(&self) -> Message {
        self.recv_within(Duration::from_secs(3))
            .expect("no answer from the gateway")
    }

    /// Sends a request and returns the final response (skipping provisionals).
    pub fn request(&self, text: &str) -> Message {
        self.send_raw(text.as_bytes());
        loop {
            let m = self.recv();
            if m.code().unwrap_or(0) >= 200 {
                return m;
            }
        }
    }

    /// A fresh transaction branch (RFC 3261 8.1.1.7 magic cookie first).
    pub fn next_branch(&self) -> String {
        format!("z9hG4bK{:x}", rand::random::<u64>())
    }
}

/// A REGISTER request's text.
pub struct Register<'a> {
    pub domain: &'a str,
    pub user: &'a str,
    pub contacts: Vec<String>,
    pub expires: Option<u32>,
    pub call_id: String,
    pub cseq: u32,
    pub authorization: Option<String>,
    pub extra: Vec<String>,
}

impl<'a> Register<'a> {
    pub fn new(domain: &'a str, user: &'a str, contact: &str) -> Register<'a> {
        Register {
            domain,
            user,
            contacts: vec![format!("<{contact}>")],
            expires: Some(600),
            call_id: format!("reg-{:x}@test", rand::random::<u64>()),
            cseq: 1,
            authorization: None,
            extra: Vec::new(),
        }
    }

    pub fn text(&self, phone: &Phone) -> String {
        let local = phone.local();
        let branch = phone.next_branch();
        let mut s = format!(
            "REGISTER sip:{domain} SIP/2.0\r\n\
             Via: SIP/2.0/UDP {local};branch={branch};rport\r\n\
             Max-Forwards: 70\r\n\
             From: <sip:{user}@{domain}>;tag=f{cseq}\r\n\
             To: <sip:{user}@{domain}>\r\n\
             Call-ID: {call_id}\r\n\
             CSeq: {cseq} REGISTER\r\n\
             User-Agent: sipfence-test\r\n",
            domain = self.domain,
            user = self.user,
            cseq = self.cseq,
            call_id = self.call_id,
        );
        for c in &self.contacts {
            s.push_str(&format!("Contact: {c}\r\n"));
        }
        if let Some(e) = self.expires {
            s.push_str(&format!("Expires: {e}\r\n"));
        }
        if let Some(a) = &self.authorization {
            s.push_str(&format!("Authorization: {a}\r\n"));
        }
        for e in &self.extra {
            s.push_str(e);
            s.push_str("\r\n");
        }
        s.push_str("Content-Length: 0\r\n\r\n");
        s
    }
}

/// A parsed digest challenge.
#[derive(Clone, Debug)]
pub struct Challenge {
    pub realm: String,
    pub nonce: String,
    pub algorithm: String,
    pub stale: bool,
}

/// Every challenge of a 401/407, in order.
pub fn challenges(response: &Message) -> Vec<Challenge> {
    let name = if response.code() == Some(407) {
        "Proxy-Authenticate"
    } else {
        "WWW-Authenticate"
    };
    response
        .headers
        .get_all(name)
        .map(|h| Challenge {
            realm: param(h, "realm").unwrap(),
            nonce: param(h, "nonce").unwrap(),
            algorithm: param(h, "algorithm").unwrap_or_else(|| "MD5".into()),
            stale: param(h, "stale").is_some_and(|s| s.eq_ignore_ascii_case("true")),
        })
        .collect()
}

fn param(header: &str, name: &str) -> Option<String> {
    let start = header.find(&format!("{name}="))? + name.len() + 1;
    let rest = &header[start..];
    if let Some(stripped) = rest.strip_prefix('"') {
        Some(stripped[..stripped.find('"')?].to_owned())
    } else {
        Some(rest.split([',', ' ']).next()?.to_owned())
    }
}

fn hash(algorithm: &str, data: &str) -> String {
    if algorithm.eq_ignore_ascii_case("SHA-256") {
        hex::encode(Sha256::digest(data.as_bytes()))
    } else {
        hex::encode(Md5::digest(data.as_bytes()))
    }
}

/// An Authorization value for `challenge`, computed here independently of the
/// gateway's own digest code (RFC 7616 3.4.1, qop=auth).
pub fn authorization(
    challenge: &Challenge,
    user: &str,
    password: &str,
    method: &str,
    uri: &str,
    nc: u32,
) -> String {
    let cnonce = format!("{:08x}", rand::random::<u32>());
    let alg = &challenge.algorithm;
    let ha1 = hash(alg, &format!("{user}:{}:{password}", challenge.realm));
    let ha2 = hash(alg, &format!("{method}:{uri}"));
    let response = hash(
        alg,
        &format!("{ha1}:{}:{nc:08x}:{cnonce}:auth:{ha2}", challenge.nonce),
    );
    format!(
        "Digest username=\"{user}\", realm=\"{}\", nonce=\"{}\", uri=\"{uri}\", \
         response=\"{response}\", algorithm={alg}, qop=auth, nc={nc:08x}, cnonce=\"{cnonce}\"",
        challenge.realm, challenge.nonce
    )
}

/// Registers `user` with digest auth; returns the final response.
pub fn register_with_auth(
    phone: &Phone,
    reg: &mut Register,
    password: &str,
    algorithm: &str,
) -> Message {
    let first = phone.request(&reg.text(phone));
    assert_eq!(first.code(), Some(401), "expected a challenge: {first:?}");
    let ch = challenges(&first)
        .into_iter()
        .find(|c| c.algorithm.eq_ignore_ascii_case(algorithm))
        .expect("challenge for the algorithm");
    reg.cseq += 1;
    reg.authorization = Some(authorization(
        &ch,
        reg.user,
        password,
        "REGISTER",
        &format!("sip:{}", reg.domain),
        1,
    ));
    phone.request(&reg.text(phone))
}

/// Waits until `f` is true or panics after `within`.
pub fn wait_until(within: Duration, what: &str, mut f: impl FnMut() -> bool) {
    let end = Instant::now() + within;
    while Instant::now() < end {
        if f() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("timed out waiting for {what}");
}

/// Connects a TCP peer to the gateway.
pub fn tcp_connect(from_ip: &str, to: SocketAddr) -> TcpStream {
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(to),
        socket2::Type::STREAM,
        None,
    )
    .unwrap();
    let from: SocketAddr = format!("{from_ip}:0").parse().unwrap();
    socket.bind(&from.into()).unwrap();
    socket.connect(&to.into()).unwrap();
    let stream: TcpStream = socket.into();
    stream
        .set_read_timeout(Some(Duration::from_secs(3)))
        .unwrap();
    stream
}

/// The `[[plugin]]` entry of the built-in fail-to-ban plugin, as the
/// embedded default config has it.
pub const FAIL_TO_BAN: &str = r#"
[[plugin]]
name = "fail-to-ban"
path = "builtin:fail-to-ban"
grants = ["counter", "kv"]
"#;

/// Compiles a WAT component into `dir/name.wasm`; returns the path.
pub fn write_plugin(dir: &Path, name: &str, wat: &str) -> PathBuf {
    let wasm = wat::parse_str(wat).unwrap_or_else(|e| panic!("{e}\n{wat}"));
    let path = dir.join(format!("{name}.wasm"));
    std::fs::write(&path, wasm).unwrap();
    path
}

/// One REGISTER answered with a wrong password: the final response, or None
/// when the gateway stayed silent.
pub fn wrong_password(phone: &Phone, user: &str) -> Option<Message> {
    let mut reg = Register::new("127.0.0.1", user, &format!("sip:{user}@{}", phone.local()));
    phone.send_raw(reg.text(phone).as_bytes());
    let first = phone.recv_within(Duration::from_millis(500))?;
    assert_eq!(first.code(), Some(401), "{first:?}");
    let ch = challenges(&first).remove(0);
    reg.cseq += 1;
    reg.authorization = Some(authorization(
        &ch,
        user,
        "guess",
        "REGISTER",
        "sip:127.0.0.1",
        1,
    ));
    phone.send_raw(reg.text(phone).as_bytes());
    phone.recv_within(Duration::from_millis(500))
}

/// An OPTIONS request's text with a User-Agent and CSeq number.
pub fn options(local: SocketAddr, transport: &str, user_agent: &str, cseq: u32) -> String {
    format!(
        "OPTIONS sip:127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/{transport} {local};branch=z9hG4bK{:x}\r\n\
         Max-Forwards: 70\r\nFrom: <sip:probe@127.0.0.1>;tag=9\r\nTo: <sip:127.0.0.1>\r\n\
         Call-ID: {:x}@test\r\nCSeq: {cseq} OPTIONS\r\nUser-Agent: {user_agent}\r\nContent-Length: 0\r\n\r\n",
        rand::random::<u64>(),
        rand::random::<u64>()
    )
}

/// A UDP port free on `ip` right now, for a peer tool's own socket (`-p`,
/// `-cp`, `-P`), so parallel runs never share one.
pub fn free_udp_port(ip: &str) -> u16 {
    std::net::UdpSocket::bind(format!("{ip}:0"))
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}
