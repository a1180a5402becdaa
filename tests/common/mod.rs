//! Test harness: runs the real `sipfence` binary on loopback ports chosen by
//! the kernel, and speaks SIP to it over real sockets.
//!
//! Each gateway gets its own temporary directory (database, control socket).
//! Its log lines are kept and printed if the test fails, so a red test shows
//! what the gateway said.
#![allow(dead_code)]

pub mod smtp;

use std::collections::HashMap;
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
    /// The thread that copies the gateway's stderr into `log`.
    log_reader: Option<std::thread::JoinHandle<()>>,
    /// UDP and TCP listen addresses, in config order (both on the same port).
    pub addrs: Vec<SocketAddr>,
    /// The HTTP API's address (from its "api listening" log line).
    pub api_addr: Option<SocketAddr>,
    /// The API token, as generated and logged on the first start.
    pub api_token: Option<String>,
    /// The standalone STUN listener's addresses (UDP and TCP), in config order.
    pub stun_addrs: Vec<SocketAddr>,
}

/// What the log says before "ready".
#[derive(Debug, Default, Clone)]
struct Started {
    addrs: Vec<SocketAddr>,
    api_addr: Option<SocketAddr>,
    api_token: Option<String>,
    stun_addrs: Vec<SocketAddr>,
}

/// The `[server]`, `[stun]`, `[storage]`, `[log]` and `[api]` lines every
/// test config needs. `listen` holds addresses with port 0 (or fixed ports
/// for restarts); the API listens on a free loopback port with a generated
/// token (the text ends inside `[api]`, so a test may add keys to it). No
/// standalone STUN listener: see [`base_config_with_stun`].
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
        "[server]\nlisten = [{}]\ncontrol_socket = {:?}\n{server_extra}\n\n[stun]\nlisten = [{}]\n\n[storage]\ndatabase = {:?}\n\n[log]\nformat = \"json\"\n\n[api]\nlisten = \"127.0.0.1:0\"\n",
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
            log_reader: None,
            addrs: Vec::new(),
            api_addr: None,
            api_token: None,
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
        let (tx, rx) = std::sync::mpsc::channel::<Result<Started, String>>();
        let log = self.log.clone();
        self.log_reader = Some(std::thread::spawn(move || {
            let mut started = Started::default();
            let mut sent = false;
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if !sent {
                    if let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) {
                        match v["message"].as_str() {
                            Some("listening") => {
                                if let Some(a) = v["udp"].as_str() {
                                    started.addrs.push(a.parse().unwrap());
                                }
                            }
                            Some("api listening") => {
                                started.api_addr = v["addr"].as_str().map(|a| a.parse().unwrap());
                            }
                            Some(m) if m.starts_with("generated an API token") => {
                                started.api_token = v["token"].as_str().map(str::to_owned);
                            }
                            Some("stun listening") => {
                                if let Some(a) = v["udp"].as_str() {
                                    started.stun_addrs.push(a.parse().unwrap());
                                }
                            }
                            Some("ready") => {
                                let _ = tx.send(Ok(started.clone()));
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
        }));
        match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(Ok(started)) => {
                self.addrs = started.addrs;
                self.api_addr = started.api_addr;
                self.stun_addrs = started.stun_addrs;
                if started.api_token.is_some() {
                    self.api_token = started.api_token;
                }
            }
            other => {
                let _ = child.kill();
                // Not inside the lock: a panic holding it would poison it,
                // and Drop's log_text would then panic during the unwinding.
                let log = self.log_text();
                panic!("gateway did not start: {other:?}\n{log}");
            }
        }
        self.child = Some(child);
    }

    pub fn addr(&self) -> SocketAddr {
        self.addrs[0]
    }

    /// A field of the running gateway's `/proc/PID/status`, e.g. "THP_enabled".
    pub fn proc_status(&self, field: &str) -> Option<String> {
        let pid = self.child.as_ref().expect("running").id();
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        status.lines().find_map(|line| {
            let (name, value) = line.split_once(':')?;
            (name == field).then(|| value.trim().to_owned())
        })
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

    /// Waits (up to 10 s) until at least `at_least` log lines contain
    /// `text`. The log is copied from the gateway's stderr by a thread of
    /// its own, so a line can trail the answer that followed its event.
    pub fn wait_log(&self, text: &str, at_least: usize) {
        let what = format!("{at_least} log lines with {text:?}");
        wait_until(Duration::from_secs(10), &what, || {
            self.log_count(text) >= at_least
        });
    }

    /// After the process exited: waits (up to 5 s) for the log reader to
    /// reach the end of stderr, so the log holds every line the gateway wrote.
    fn drain_log(&mut self) {
        let Some(reader) = self.log_reader.take() else {
            return;
        };
        let end = Instant::now() + Duration::from_secs(5);
        while !reader.is_finished() && Instant::now() < end {
            std::thread::sleep(Duration::from_millis(10));
        }
        if reader.is_finished() {
            let _ = reader.join();
        }
    }

    /// How many log lines contain `text` (so far: see `wait_log`).
    pub fn log_count(&self, text: &str) -> usize {
        self.log
            .lock()
            .unwrap()
            .iter()
            .filter(|l| l.contains(text))
            .count()
    }

    /// SIGTERM, as an operator stopping the service; waits (up to 20 s)
    /// for the process to exit and asserts it exited cleanly.
    pub fn terminate(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let status = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .expect("kill runs");
        assert!(status.success());
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                self.drain_log();
                assert!(status.success(), "the gateway exited with {status}");
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the gateway did not stop on SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILL: no shutdown work at all, as a crash.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().unwrap();
            child.wait().unwrap();
        }
        self.drain_log();
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

    /// The call detail records of `sipfence cdr list --csv`, one map per
    /// row from column name (the CSV header row) to value, so a test does
    /// not depend on the column order.
    pub fn cdrs(&self) -> Vec<HashMap<String, String>> {
        let text = self.cli(&["cdr", "list", "--csv"]);
        let mut rows = parse_csv(&text).into_iter();
        let Some(header) = rows.next() else {
            return Vec::new();
        };
        rows.filter(|r| !(r.len() == 1 && r[0].is_empty()))
            .map(|r| {
                assert_eq!(r.len(), header.len(), "CSV row {r:?} for header {header:?}");
                header.iter().cloned().zip(r).collect()
            })
            .collect()
    }

    /// Waits (5 s at most) until there are `n` call detail records, which
    /// may be stored a little after the call ended, and returns them.
    pub fn wait_cdrs(&self, n: usize) -> Vec<HashMap<String, String>> {
        let mut rows = Vec::new();
        let end = Instant::now() + Duration::from_secs(5);
        while Instant::now() < end {
            rows = self.cdrs();
            if rows.len() >= n {
                return rows;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!(
            "expected {n} call detail record(s), have {}: {rows:#?}",
            rows.len()
        );
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

/// Splits CSV text (RFC 4180: commas, fields in double quotes may hold
/// commas, line breaks and doubled quotes) into rows of fields.
pub fn parse_csv(text: &str) -> Vec<Vec<String>> {
    let mut rows = Vec::new();
    let mut row = Vec::new();
    let mut field = String::new();
    let mut quoted = false;
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '"' if quoted && chars.peek() == Some(&'"') => {
                chars.next();
                field.push('"');
            }
            '"' => quoted = !quoted,
            ',' if !quoted => row.push(std::mem::take(&mut field)),
            '\r' if !quoted => {}
            '\n' if !quoted => {
                row.push(std::mem::take(&mut field));
                rows.push(std::mem::take(&mut row));
            }
            c => field.push(c),
        }
    }
    if !field.is_empty() || !row.is_empty() {
        row.push(field);
        rows.push(row);
    }
    rows
}

/// Registers extension `user` (digest MD5, so the config must offer it) from
/// a fresh UDP socket on `ip`, with a Contact of that same address, and
/// returns the port. The socket is closed on return, so a SIPp callee can
/// take the address over (`Sipp::new(.., ip, port)`): the gateway sends
/// the extension's calls there.
pub fn register_device(gw: &Gateway, user: &str, password: &str, ip: &str) -> u16 {
    let phone = Phone::new(ip, gw.addr());
    let contact = format!("sip:{user}@{}", phone.local());
    let mut reg = Register::new("127.0.0.1", user, &contact);
    let ok = register_with_auth(&phone, &mut reg, password, "MD5");
    assert_eq!(ok.code(), Some(200), "register {user} from {ip}: {ok:?}");
    phone.local().port()
}

/// Like [`register_device`], but the Contact names `contact` (`host:port`)
/// instead of the phone's own address, as a phone behind NAT writes its
/// private address. The gateway must ring the phone at its source address.
pub fn register_behind_nat(
    gw: &Gateway,
    user: &str,
    password: &str,
    ip: &str,
    contact: &str,
) -> u16 {
    let phone = Phone::new(ip, gw.addr());
    let mut reg = Register::new("127.0.0.1", user, &format!("sip:{user}@{contact}"));
    let ok = register_with_auth(&phone, &mut reg, password, "MD5");
    assert_eq!(ok.code(), Some(200), "register {user} from {ip}: {ok:?}");
    phone.local().port()
}

/// Whether a UDP socket is bound to IPv4 `ip:port` (from /proc/net/udp:
/// looking does not take the port, unlike a test bind).
pub fn udp_bound(ip: &str, port: u16) -> bool {
    let ip: std::net::Ipv4Addr = ip.parse().unwrap();
    let local = format!("{:08X}:{port:04X}", u32::from_ne_bytes(ip.octets()));
    std::fs::read_to_string("/proc/net/udp")
        .unwrap()
        .lines()
        .skip(1)
        .any(|l| l.split_whitespace().nth(1) == Some(local.as_str()))
}

/// Reads the next SIP message from a stream (Content-Length framing);
/// `buf` keeps what followed it.
pub fn read_stream_message(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Message {
    use std::io::Read;
    let mut chunk = [0u8; 4096];
    loop {
        if let sipfence::sip::framing::Frame::Message(len) =
            sipfence::sip::framing::frame(buf, 65535)
        {
            let message = Message::parse(&buf[..len]).unwrap();
            buf.drain(..len);
            return message;
        }
        let n = stream.read(&mut chunk).expect("read from gateway");
        assert!(n > 0, "connection closed");
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// A scenario file in tests/sipp/.
pub fn sipp_scenario(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/sipp")
        .join(name)
}

/// A SIPp (Debian `sip-tester`) instance to start: one scenario from
/// tests/sipp/, bound to its own loopback address (`-i`, `-mi`,
/// `-bind_local`, so every address in Via, Contact and SDP is that one) and
/// port. It runs one call (`-m 1`) and quits on its own after
/// [`Sipp::timeout`] (20 s by default) as failed (`-timeout_error`). Each
/// instance writes its logs (messages, errors, `<log>` actions, statistics,
/// screen) in a folder of its own, which [`SippOutcome::report`] shows when
/// a test fails. Build it, [`Sipp::spawn`] it (and for a callee wait until
/// it is [`SippRun::listening`]), then [`wait_all`] and
/// [`assert_sipp_success`]; [`SippOutcome::received`] and
/// [`SippOutcome::sent`] give the messages for further assertions.
///
/// A missing `sipp` fails the test: it never skips quietly.
pub struct Sipp {
    scenario: String,
    ip: String,
    port: u16,
    remote: Option<SocketAddr>,
    timeout: Duration,
    args: Vec<String>,
    /// Files written to its working directory first (audio for rtp_stream).
    files: Vec<(String, Vec<u8>)>,
}

impl Sipp {
    /// `scenario` (a file name in tests/sipp/) played from `ip:port`.
    pub fn new(scenario: &str, ip: &str, port: u16) -> Sipp {
        Sipp {
            scenario: scenario.to_owned(),
            ip: ip.to_owned(),
            port,
            remote: None,
            timeout: Duration::from_secs(20),
            args: Vec::new(),
            files: Vec::new(),
        }
    }

    /// A client (caller) scenario from `ip` on a free port, sending to `remote`.
    pub fn client(scenario: &str, ip: &str, remote: SocketAddr) -> Sipp {
        let mut sipp = Sipp::new(scenario, ip, free_udp_port(ip));
        sipp.remote = Some(remote);
        sipp
    }

    /// Extra command-line arguments.
    pub fn args<I, S>(mut self, args: I) -> Sipp
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    /// `-key NAME VALUE`: the scenario's `[NAME]` keyword.
    pub fn key(self, name: &str, value: &str) -> Sipp {
        self.args(["-key", name, value])
    }

    /// `-set NAME VALUE`: the scenario's global variable `$NAME`.
    pub fn set(self, name: &str, value: &str) -> Sipp {
        self.args(["-set", name, value])
    }

    /// `-d MS`: the length of the scenario's `<pause/>` elements.
    pub fn pause_ms(self, ms: u64) -> Sipp {
        self.args(["-d".to_owned(), ms.to_string()])
    }

    /// A call from extension `caller` (digest user and password, and the
    /// From user: the `[caller]` keyword) to `callee` (`-s`, `[service]`)
    /// at domain 127.0.0.1 (`[domain]`, the default tenant). The digest
    /// uri is the Request-URI (`-auth_uri`; SIPp's default would be the
    /// gateway's address).
    pub fn call(self, caller: &str, password: &str, callee: &str) -> Sipp {
        self.args(["-s", callee, "-au", caller, "-ap", password])
            .args(["-auth_uri".to_owned(), format!("{callee}@127.0.0.1")])
            .key("caller", caller)
            .key("domain", "127.0.0.1")
    }

    /// A file in SIPp's working directory (e.g. the audio of `rtp_stream`).
    pub fn file(mut self, name: &str, bytes: Vec<u8>) -> Sipp {
        self.files.push((name.to_owned(), bytes));
        self
    }

    /// How long it may run before it is stopped as failed (default 20 s).
    pub fn timeout(mut self, timeout: Duration) -> Sipp {
        self.timeout = timeout;
        self
    }

    /// The command line, for failure messages and reports.
    pub fn command_line(&self) -> String {
        let mut parts = vec!["sipp".to_owned()];
        if let Some(remote) = self.remote {
            parts.push(remote.to_string());
        }
        parts.extend(self.base_args().into_iter().chain(self.args.clone()));
        parts.join(" ")
    }

    fn base_args(&self) -> Vec<String> {
        let secs = self.timeout.as_secs().max(1);
        [
            "-sf",
            &sipp_scenario(&self.scenario).display().to_string(),
            "-i",
            &self.ip,
            "-mi",
            &self.ip,
            "-bind_local",
            "-p",
            &self.port.to_string(),
            "-m",
            "1",
            "-nostdin",
            "-timeout",
            &format!("{secs}s"),
            "-timeout_error",
            // logs, in the instance's own folder (its working directory)
            "-trace_msg",
            "-message_file",
            "messages.log",
            "-trace_err",
            "-error_file",
            "errors.log",
            "-trace_logs",
            "-log_file",
            "actions.log",
            "-trace_stat",
            "-stf",
            "stat.csv",
            "-trace_screen",
            "-screen_file",
            "screen.log",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    }

    /// Starts SIPp in the background, with its logs in a new folder under `dir`.
    pub fn spawn(self, dir: &Path) -> SippRun {
        let label = format!(
            "{}@{}:{}",
            self.scenario.trim_end_matches(".xml"),
            self.ip,
            self.port
        );
        let workdir = dir.join(format!("sipp-{}", label.replace([':', '@'], "-")));
        std::fs::create_dir_all(&workdir).unwrap();
        for (name, bytes) in &self.files {
            std::fs::write(workdir.join(name), bytes).unwrap();
        }
        let stdout = std::fs::File::create(workdir.join("stdout.txt")).unwrap();
        let stderr = std::fs::File::create(workdir.join("stderr.txt")).unwrap();
        let mut cmd = Command::new("sipp");
        cmd.current_dir(&workdir);
        if let Some(remote) = self.remote {
            cmd.arg(remote.to_string());
        }
        cmd.args(self.base_args())
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr);
        let command_line = self.command_line();
        let child = cmd
            .spawn()
            .expect("`sipp` is needed: apt-get install sip-tester");
        SippRun {
            label,
            command_line,
            ip: self.ip,
            port: self.port,
            workdir,
            child: Some(child),
            started: Instant::now(),
            deadline: Instant::now() + self.timeout + Duration::from_secs(5),
        }
    }

    /// [`Sipp::spawn`] and [`SippRun::wait`].
    pub fn run(self, dir: &Path) -> SippOutcome {
        self.spawn(dir).wait()
    }
}

/// A SIPp instance running in the background; killed if dropped unwaited.
pub struct SippRun {
    pub label: String,
    pub command_line: String,
    ip: String,
    port: u16,
    workdir: PathBuf,
    child: Option<Child>,
    started: Instant,
    deadline: Instant,
}

impl SippRun {
    /// Waits until SIPp has bound its SIP port, so a call sent there now
    /// reaches it (a server scenario must listen before the caller starts).
    pub fn listening(self) -> SippRun {
        let end = Instant::now() + Duration::from_secs(10);
        while !udp_bound(&self.ip, self.port) {
            assert!(
                Instant::now() < end,
                "SIPp never bound its port\n{}",
                self.outcome_now(None).report()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        self
    }

    /// Waits for SIPp to exit; past its timeout (plus a grace of 5 s) it is
    /// killed and the outcome has no exit code.
    pub fn wait(self) -> SippOutcome {
        let deadline = self.deadline;
        self.wait_until(deadline)
    }

    /// Like [`SippRun::wait`], but gives up (kills it) at `deadline` already.
    pub fn wait_until(mut self, deadline: Instant) -> SippOutcome {
        let mut child = self.child.take().expect("waited once");
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break Some(status);
            }
            if Instant::now() >= deadline.min(self.deadline) {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        self.outcome_now(status.and_then(|s| s.code()))
    }

    fn outcome_now(&self, code: Option<i32>) -> SippOutcome {
        SippOutcome {
            label: self.label.clone(),
            command_line: self.command_line.clone(),
            code,
            elapsed: self.started.elapsed(),
            workdir: self.workdir.clone(),
        }
    }
}

impl Drop for SippRun {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// How a SIPp instance ended, with its logs.
pub struct SippOutcome {
    pub label: String,
    pub command_line: String,
    /// The exit code: 0 = every call succeeded, 1 = a call failed, 255 =
    /// quit on its global timeout (`-timeout_error`), 97/99 = stopped or
    /// no call at all; None = it did not end in time and was killed.
    pub code: Option<i32>,
    /// From spawn to exit.
    pub elapsed: Duration,
    pub workdir: PathBuf,
}

impl SippOutcome {
    pub fn success(&self) -> bool {
        self.code == Some(0)
    }

    /// One of its log files (empty if it wrote none).
    pub fn file(&self, name: &str) -> String {
        std::fs::read_to_string(self.workdir.join(name)).unwrap_or_default()
    }

    /// The SIP messages it received, in order, from its message log
    /// (each as its text, CRLFs included).
    pub fn received(&self) -> Vec<String> {
        self.timed("received").into_iter().map(|(_, m)| m).collect()
    }

    /// The SIP messages it sent (retransmissions included), in order.
    pub fn sent(&self) -> Vec<String> {
        self.timed("sent").into_iter().map(|(_, m)| m).collect()
    }

    /// The messages received, each with the seconds since midnight (local
    /// time, microseconds) at which SIPp logged it: comparable between the
    /// SIPp instances of one test.
    pub fn received_at(&self) -> Vec<(f64, String)> {
        self.timed("received")
    }

    /// Entries of the message log whose heading has `direction`
    /// ("received" or "sent").
    fn timed(&self, direction: &str) -> Vec<(f64, String)> {
        const SEPARATOR: &str = "-----------------------------------------------";
        let log = self.file("messages.log");
        log.split(SEPARATOR)
            .filter_map(|entry| {
                // " 2026-11-26 08:12:58.453448\nUDP message received [668] bytes :\n\nINVITE ..."
                let mut lines = entry.splitn(3, '\n');
                let stamp = lines.next()?.trim();
                let what = lines.next()?;
                let mut message = lines.next()?.trim_start_matches(['\r', '\n']).to_owned();
                if !what.contains(direction) {
                    return None;
                }
                while message.ends_with('\n') && !message.ends_with("\r\n") {
                    message.pop();
                }
                let clock = stamp.rsplit(' ').next()?;
                let seconds = clock.split(':').try_fold(0.0, |acc, part| {
                    part.parse::<f64>().ok().map(|v| acc * 60.0 + v)
                })?;
                Some((seconds, message))
            })
            .collect()
    }

    /// A counter from the last row of its `-trace_stat` CSV, e.g.
    /// "SuccessfulCall(C)" or "FailedCall(C)".
    pub fn stat(&self, column: &str) -> u64 {
        let csv = self.file("stat.csv");
        let mut lines = csv.lines().filter(|l| !l.trim().is_empty());
        let header: Vec<&str> = lines.next().expect("stat header").split(';').collect();
        let last: Vec<&str> = lines.next_back().expect("stat row").split(';').collect();
        let i = header
            .iter()
            .position(|h| *h == column)
            .unwrap_or_else(|| panic!("no column {column} in {header:?}"));
        last[i].trim().parse().unwrap()
    }

    /// Everything needed to see why it failed: command, exit code, errors,
    /// `<log>` lines, the end of the screen and the message log.
    pub fn report(&self) -> String {
        let tail = |text: String, lines: usize| {
            let all: Vec<&str> = text.lines().collect();
            all[all.len().saturating_sub(lines)..].join("\n")
        };
        format!(
            "==== SIPp {} (exit code {:?}, after {:?})\n$ {}\n-- errors:\n{}\n-- log actions:\n{}\n\
             -- stderr:\n{}\n-- screen:\n{}\n-- messages:\n{}\n",
            self.label,
            self.code,
            self.elapsed,
            self.command_line,
            tail(self.file("errors.log"), 40),
            tail(self.file("actions.log"), 40),
            tail(self.file("stderr.txt"), 20),
            tail(self.file("screen.log"), 30),
            tail(self.file("messages.log"), 300),
        )
    }
}

/// Waits for every run in order, the first one (usually the caller) with
/// its own timeout; once one has failed, the others get 2 s more at most,
/// so a failing test ends soon. Returns the outcomes in the same order.
pub fn wait_all(runs: Vec<SippRun>) -> Vec<SippOutcome> {
    let mut outcomes: Vec<SippOutcome> = Vec::new();
    for run in runs {
        let outcome = if outcomes.iter().all(SippOutcome::success) {
            run.wait()
        } else {
            run.wait_until(Instant::now() + Duration::from_secs(2))
        };
        outcomes.push(outcome);
    }
    outcomes
}

/// Panics, with the report of each failed one, unless every SIPp succeeded
/// (exit code 0).
pub fn assert_sipp_success(outcomes: &[SippOutcome]) {
    let failed: Vec<String> = outcomes
        .iter()
        .filter(|o| !o.success())
        .map(SippOutcome::report)
        .collect();
    if !failed.is_empty() {
        let summary: Vec<String> = outcomes
            .iter()
            .map(|o| format!("{}: {:?}", o.label, o.code))
            .collect();
        panic!(
            "SIPp failed ({})\n{}",
            summary.join(", "),
            failed.join("\n")
        );
    }
}
