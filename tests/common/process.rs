//! The real `keygate` binary as a child process: a temp dir with a config and key file,
//! `keygate serve --config`, the listen address read from its log, and its stdout and
//! stderr collected (drained continuously, so a chatty server never blocks on a full pipe).

use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A running keygate process.
pub struct KeygateProcess {
    pub child: Child,
    pub addr: SocketAddr,
    pub dir: tempfile::TempDir,
    pub stdout: Arc<Mutex<Vec<u8>>>,
    pub stderr: Arc<Mutex<Vec<u8>>>,
}

/// A temp dir holding `keygate.toml` (from `config`) and the test key file.
pub fn prepare(config: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    super::create_software_keys(&dir.path().join("keys.json"));
    let path = dir.path().join("keygate.toml");
    std::fs::write(&path, config).unwrap();
    (dir, path)
}

fn drain(mut from: impl Read + Send + 'static, into: Arc<Mutex<Vec<u8>>>) {
    std::thread::spawn(move || {
        let mut buf = [0u8; 8192];
        while let Ok(n) = from.read(&mut buf) {
            if n == 0 {
                break;
            }
            into.lock().unwrap().extend_from_slice(&buf[..n]);
        }
    });
}

/// Runs `keygate` with `args` to completion: (exit code, stdout, stderr).
pub fn run_to_end(args: &[&str], envs: &[(&str, &str)]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_keygate"))
        .args(args)
        .envs(envs.iter().copied())
        .stdin(Stdio::null())
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

impl KeygateProcess {
    /// Starts `keygate serve --config` in `dir` with `RUST_LOG=rust_log`; waits until it
    /// logs its listen address.
    pub fn start(dir: tempfile::TempDir, config: &Path, rust_log: &str) -> KeygateProcess {
        Self::start_with_env(dir, config, rust_log, &[])
    }

    /// As `start`, with extra environment variables.
    pub fn start_with_env(
        dir: tempfile::TempDir,
        config: &Path,
        rust_log: &str,
        envs: &[(&str, &Path)],
    ) -> KeygateProcess {
        let mut child = Command::new(env!("CARGO_BIN_EXE_keygate"))
            .args(["serve", "--config"])
            .arg(config)
            .env("RUST_LOG", rust_log)
            .envs(envs.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = Arc::new(Mutex::new(Vec::new()));
        let stderr = Arc::new(Mutex::new(Vec::new()));
        drain(child.stdout.take().unwrap(), stdout.clone());
        let (tx, rx) = std::sync::mpsc::channel();
        let err_pipe = child.stderr.take().unwrap();
        let sink = stderr.clone();
        std::thread::spawn(move || {
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
        let addr = match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(a) => a,
            Err(_) => {
                let _ = child.kill();
                panic!(
                    "keygate did not start: {}",
                    String::from_utf8_lossy(&stderr.lock().unwrap())
                );
            }
        };
        KeygateProcess {
            child,
            addr,
            dir,
            stdout,
            stderr,
        }
    }

    /// Resident memory of the process in KiB (VmRSS).
    pub fn rss_kib(&self) -> u64 {
        status_kib(self.child.id(), "VmRSS:")
    }

    /// Peak resident memory of the process in KiB (VmHWM).
    pub fn peak_rss_kib(&self) -> u64 {
        status_kib(self.child.id(), "VmHWM:")
    }

    /// Waits up to `limit` for `needle` in stderr.
    pub fn wait_for_log(&self, needle: &str, limit: Duration) -> bool {
        let start = Instant::now();
        while start.elapsed() < limit {
            if String::from_utf8_lossy(&self.stderr.lock().unwrap()).contains(needle) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    }

    /// Stops the process with SIGTERM (via `kill`) and waits for it.
    pub fn stop(mut self) -> (Vec<u8>, Vec<u8>) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(20) {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        std::thread::sleep(Duration::from_millis(200));
        let out = self.stdout.lock().unwrap().clone();
        let err = self.stderr.lock().unwrap().clone();
        (out, err)
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
