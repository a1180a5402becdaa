//! A real SMTP server for the mail tests: the kit's aiosmtpd sink
//! (`tests/smtp_sink.py`, needs `pip install aiosmtpd`), one per test, on a
//! port of 127.0.0.1, saving each mail as `NNNN-<time>.eml` in its folder.

use std::io::Read;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The sink as a child process; killed when dropped.
pub struct SmtpSink {
    child: Child,
    dir: PathBuf,
}

impl SmtpSink {
    /// Starts the sink on 127.0.0.1:`port`, saving mail in `dir`, and waits
    /// until it accepts connections. A missing `aiosmtpd` fails the test
    /// (the sink exits saying so).
    pub fn start(port: u16, dir: &Path) -> SmtpSink {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/smtp_sink.py");
        let mut child = Command::new("python3")
            .arg(script)
            .args(["--host", "127.0.0.1", "--port", &port.to_string()])
            .arg("--dir")
            .arg(dir)
            // A backstop should the test die without dropping the guard.
            .args(["--max-secs", "300"])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("python3 runs");
        let deadline = Instant::now() + Duration::from_secs(15);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Some(status) = child.try_wait().unwrap() {
                let mut err = String::new();
                child.stderr.take().unwrap().read_to_string(&mut err).ok();
                panic!("the SMTP sink exited ({status}): {err} (pip install aiosmtpd)");
            }
            assert!(
                Instant::now() < deadline,
                "the SMTP sink never listened on {port}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        SmtpSink {
            child,
            dir: dir.to_owned(),
        }
    }

    /// The saved mail files, in arrival order (the sink writes each under
    /// a dot name first, then renames it).
    pub fn mail_files(&self) -> Vec<PathBuf> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(&self.dir)
            .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect())
            .unwrap_or_default();
        files.retain(|p| {
            p.extension().is_some_and(|e| e == "eml")
                && !p.file_name().unwrap().to_string_lossy().starts_with('.')
        });
        files.sort();
        files
    }

    /// The saved mails' text, in arrival order.
    pub fn messages(&self) -> Vec<String> {
        self.mail_files()
            .iter()
            .map(|p| std::fs::read_to_string(p).unwrap())
            .collect()
    }

    /// Waits until `n` mails have arrived; their files.
    pub fn wait_mails(&self, n: usize, within: Duration) -> Vec<PathBuf> {
        let deadline = Instant::now() + within;
        loop {
            let files = self.mail_files();
            if files.len() >= n {
                return files;
            }
            assert!(
                Instant::now() < deadline,
                "{n} mail(s) expected at the SMTP sink within {within:?}, {} came",
                files.len()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for SmtpSink {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A TCP port of 127.0.0.1 that nothing listens on (bound and released).
pub fn free_tcp_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}
