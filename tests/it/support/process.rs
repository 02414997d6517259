//! The real `keygate` binary as a child process: `KeygateProcess` runs `keygate serve` on a
//! config in a temp dir (software keys, or a fresh SoftHSMv2 token), reads the listen address
//! from its log, and collects its stdout and stderr (drained continuously, so a chatty server
//! never blocks on a full pipe); `keygate` and `run_bounded` run other commands.

use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::softhsm::Token;
use super::{PATIENCE, fixtures, wait_until};

pub const BIN: &str = env!("CARGO_BIN_EXE_keygate");

/// The log filter a server gets unless a test says otherwise: quiet, but with the
/// `keygate listening` line the address is read from.
pub const QUIET: &str = "warn,keygate::serve=info";

/// Runs `keygate args` to completion.
pub fn keygate(args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

/// What a command that was given a time limit did.
#[derive(Debug)]
pub struct Finished {
    /// The exit code; `None` when it had to be killed at the limit (or died of a signal).
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

/// Runs `keygate args` with `envs` for at most `limit`, then kills it.
pub fn run_bounded(args: &[&str], envs: &[(&str, &str)], limit: Duration) -> Finished {
    let mut child = Command::new(BIN)
        .args(args)
        .envs(envs.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = drain(child.stdout.take().unwrap());
    let stderr = drain(child.stderr.take().unwrap());
    let started = Instant::now();
    let code = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status.code();
        }
        if started.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let text = |(buf, reader): (Arc<Mutex<Vec<u8>>>, JoinHandle<()>)| {
        let _ = reader.join();
        String::from_utf8_lossy(&buf.lock().unwrap()).into_owned()
    };
    Finished {
        code,
        stdout: text(stdout),
        stderr: text(stderr),
    }
}

/// Reads `from` to its end into a buffer, on a thread of its own.
fn drain(mut from: impl Read + Send + 'static) -> (Arc<Mutex<Vec<u8>>>, JoinHandle<()>) {
    let into = Arc::new(Mutex::new(Vec::new()));
    let sink = into.clone();
    let reader = std::thread::spawn(move || {
        let mut buf = [0u8; 8192];
        while let Ok(n) = from.read(&mut buf) {
            if n == 0 {
                break;
            }
            sink.lock().unwrap().extend_from_slice(&buf[..n]);
        }
    });
    (into, reader)
}

/// A running `keygate serve`.
pub struct KeygateProcess {
    pub addr: SocketAddr,
    pub config_path: PathBuf,
    /// The server's directory (config, keys or token); removed when the process is dropped.
    pub dir: tempfile::TempDir,
    /// The SoftHSMv2 token it serves from, for `on_softhsm` servers.
    pub token: Option<Token>,
    /// The OpenBao server it serves from, for `on_openbao` servers (stopped after keygate).
    pub bao: Option<super::bao::Bao>,
    /// keygate's OpenBao token, for `on_openbao` servers.
    pub bao_token: Option<String>,
    child: Child,
    stdout: Arc<Mutex<Vec<u8>>>,
    stderr: Arc<Mutex<Vec<u8>>>,
    readers: Vec<JoinHandle<()>>,
}

/// How a stopped server ended and what it printed.
#[derive(Debug)]
pub struct Stopped {
    pub status: ExitStatus,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

impl KeygateProcess {
    /// `keygate serve` on `config_text` and the fixture's software keys, logging per
    /// `rust_log`.
    pub fn start(config_text: &str, rust_log: &str) -> KeygateProcess {
        let (dir, config_path) = fixtures::server_dir(config_text);
        Self::serve(dir, &config_path, rust_log, &[])
    }

    /// `keygate serve` on a fresh SoftHSMv2 token holding the fixture's keys (made with
    /// softhsm2-util and `keygate keys`): `config_text` with its software backend swapped
    /// for the token.
    pub fn on_softhsm(config_text: &str, rust_log: &str) -> KeygateProcess {
        let dir = tempfile::tempdir().unwrap();
        let token = Token::init(dir.path());
        let config_path = token.write_config(config_text);
        token.create_test_keys(&config_path);
        let conf = token.conf.clone();
        let mut server = Self::serve(dir, &config_path, rust_log, &[("SOFTHSM2_CONF", &conf)]);
        server.token = Some(token);
        server
    }

    /// `keygate serve` on a fresh `bao server -dev` holding the fixture's keys (set up by the
    /// harness, see `support::bao`): `config_text` with its software backend swapped for the
    /// server; `extra` lines go into `[backend.openbao]`.
    pub fn on_openbao(config_text: &str, extra: &str, rust_log: &str) -> KeygateProcess {
        let bao = super::bao::Bao::start();
        let token = bao.fixture("1h");
        let dir = tempfile::tempdir().unwrap();
        let config_path = bao.write_config(dir.path(), &token, config_text, extra);
        let mut server = Self::serve(dir, &config_path, rust_log, &[]);
        server.bao = Some(bao);
        server.bao_token = Some(token);
        server
    }

    /// The OpenBao server of an `on_openbao` server.
    pub fn bao(&self) -> &super::bao::Bao {
        self.bao.as_ref().expect("an on_openbao server")
    }

    /// `keygate serve --config config_path` with `envs`; `dir` lives as long as the process.
    /// Returns once it logs its listen address.
    pub fn serve(
        dir: tempfile::TempDir,
        config_path: &Path,
        rust_log: &str,
        envs: &[(&str, &Path)],
    ) -> KeygateProcess {
        let mut child = Command::new(BIN)
            .args(["serve", "--config"])
            .arg(config_path)
            .env("RUST_LOG", rust_log)
            .envs(envs.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let (stdout, out_reader) = drain(child.stdout.take().unwrap());
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let err_pipe = child.stderr.take().unwrap();
        let sink = stderr.clone();
        let err_reader = std::thread::spawn(move || {
            let mut reader = BufReader::new(err_pipe);
            let mut line = Vec::new();
            while reader.read_until(b'\n', &mut line).is_ok_and(|n| n > 0) {
                let text = String::from_utf8_lossy(&line);
                if text.contains("keygate listening")
                    && let Some(addr) = listen_addr(&text)
                {
                    let _ = tx.send(addr);
                }
                sink.lock().unwrap().extend_from_slice(&line);
                line.clear();
            }
        });
        let addr = match rx.recv_timeout(PATIENCE) {
            Ok(a) => a,
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "keygate did not start: {}",
                    String::from_utf8_lossy(&stderr.lock().unwrap())
                );
            }
        };
        KeygateProcess {
            addr,
            config_path: config_path.to_owned(),
            dir,
            token: None,
            bao: None,
            bao_token: None,
            child,
            stdout,
            stderr,
            readers: vec![out_reader, err_reader],
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends `signal` (`-HUP`, `-TERM`...) with kill(1).
    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([signal, &self.pid().to_string()])
            .status()
            .expect("kill(1) is needed");
        assert!(status.success(), "kill {signal} failed");
    }

    /// Whether the process is still running.
    pub fn running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    /// Everything written to stderr so far (the JSON log).
    pub fn log(&self) -> String {
        String::from_utf8_lossy(&self.stderr.lock().unwrap()).into_owned()
    }

    /// Waits for a log line containing `needle`; returns it.
    pub fn wait_for_log(&self, needle: &str) -> String {
        self.wait_for_log_after(0, needle).0
    }

    /// Waits for a log line containing `needle` that starts at or after byte `mark` of the
    /// log; returns it and the offset just past it (a mark for the next wait).
    pub fn wait_for_log_after(&self, mark: usize, needle: &str) -> (String, usize) {
        let find = || {
            let log = self.log();
            let mut end = mark;
            for line in log.get(mark..)?.split_inclusive('\n') {
                end += line.len();
                if line.contains(needle) {
                    return Some((line.trim_end().to_owned(), end));
                }
            }
            None
        };
        wait_until(PATIENCE, format!("a log line with {needle:?}"), || {
            find().is_some()
        });
        find().unwrap()
    }

    /// The admin listener's address, from its log line (the config must have `[admin]`).
    pub fn admin_addr(&self) -> SocketAddr {
        let line = self.wait_for_log("admin listener on plain HTTP");
        listen_addr(&line).expect("the admin log line names its address")
    }

    /// Resident memory of the process in KiB (VmRSS).
    pub fn rss_kib(&self) -> u64 {
        status_kib(self.pid(), "VmRSS:")
    }

    /// Peak resident memory of the process in KiB (VmHWM).
    pub fn peak_rss_kib(&self) -> u64 {
        status_kib(self.pid(), "VmHWM:")
    }

    /// SIGTERM, and waits for the exit (killing it after `PATIENCE`) and for the last of
    /// its output.
    pub fn stop(mut self) -> Stopped {
        self.signal("-TERM");
        let child = &mut self.child;
        let mut status = None;
        let started = Instant::now();
        while status.is_none() && started.elapsed() < PATIENCE {
            status = child.try_wait().unwrap();
            std::thread::sleep(Duration::from_millis(20));
        }
        let status = match status {
            Some(s) => s,
            None => {
                let _ = child.kill();
                child.wait().unwrap()
            }
        };
        // The pipes reach their end with the process; the readers then finish.
        for reader in self.readers.drain(..) {
            let _ = reader.join();
        }
        Stopped {
            status,
            stdout: self.stdout.lock().unwrap().clone(),
            stderr: self.stderr.lock().unwrap().clone(),
        }
    }
}

impl Drop for KeygateProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn listen_addr(line: &str) -> Option<SocketAddr> {
    let v: serde_json::Value = serde_json::from_str(line.trim()).ok()?;
    v["addr"].as_str()?.parse().ok()
}

fn status_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with(field)).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// `GET path` on plain HTTP/1.1 (the admin listener); the response body.
pub fn http_get(addr: SocketAddr, path: &str) -> String {
    use std::io::{Read, Write};
    let mut c = std::net::TcpStream::connect(addr).unwrap();
    c.set_read_timeout(Some(PATIENCE)).unwrap();
    write!(
        c,
        "GET {path} HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut text = String::new();
    c.read_to_string(&mut text).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    body.to_owned()
}
