//! A real Prometheus server (Debian's `prometheus` package) for the monitoring tests: started
//! on loopback with short scrape and evaluation intervals, scraping given targets, loading
//! keygate's rule files, and asked through its HTTP API. Also `promtool`. A missing binary
//! fails the test with the way to install it, never skips it.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use serde_json::Value;

use super::{PATIENCE, wait_until};

/// The repository's `deploy/` directory.
pub fn deploy_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy")
}

/// Runs a Prometheus tool (`promtool`, `prometheus`) with `args` in `cwd`.
pub fn tool(name: &str, args: &[&str], cwd: &Path) -> Output {
    match Command::new(name).args(args).current_dir(cwd).output() {
        Ok(out) => out,
        Err(e) => panic!(
            "cannot run {name} ({e}): install Debian's prometheus package, which ships \
             prometheus and promtool (scripts/test.sh does: apt-get install prometheus)"
        ),
    }
}

/// A Prometheus server of this test; killed when dropped.
pub struct Prometheus {
    pub addr: SocketAddr,
    child: Child,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Prometheus {
    /// Starts Prometheus scraping `targets` (job `keygate`, label `namespace="e2e"`) every
    /// second and evaluating the rule files matching `rule_glob` every second. Returns once
    /// it is ready.
    pub fn start(targets: &[SocketAddr], rule_glob: &Path) -> Prometheus {
        let dir = tempfile::tempdir().unwrap();
        let targets: Vec<String> = targets.iter().map(|t| format!("\"{t}\"")).collect();
        let config = format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n\
             rule_files:\n  - {:?}\n\
             scrape_configs:\n  - job_name: keygate\n    static_configs:\n      - targets: [{}]\n        labels:\n          namespace: e2e\n",
            rule_glob.display().to_string(),
            targets.join(", ")
        );
        let config_path = dir.path().join("prometheus.yml");
        std::fs::write(&config_path, config).unwrap();
        let check = tool(
            "promtool",
            &["check", "config", config_path.to_str().unwrap()],
            dir.path(),
        );
        assert!(check.status.success(), "{}", describe(&check));
        // A free port can be taken by someone else before Prometheus binds it: try again.
        let log = dir.path().join("prometheus.log");
        for _ in 0..3 {
            let addr = free_port();
            let mut child = Command::new("prometheus")
                .arg(format!("--config.file={}", config_path.display()))
                .arg(format!(
                    "--storage.tsdb.path={}",
                    dir.path().join("data").display()
                ))
                .arg(format!("--web.listen-address={addr}"))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(&log).unwrap())
                .spawn()
                .unwrap_or_else(|e| {
                    panic!(
                        "cannot start prometheus ({e}): install Debian's prometheus package \
                         (scripts/test.sh does: apt-get install prometheus)"
                    )
                });
            if ready(&mut child, addr) {
                return Prometheus {
                    addr,
                    child,
                    log,
                    _dir: dir,
                };
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        panic!(
            "prometheus did not start three times in a row:\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
    }

    /// Prometheus's own log so far (for failure messages).
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// `GET /api/v1/query?query=...` now: the JSON answer, whatever its status.
    pub fn query(&self, promql: &str) -> Value {
        let path = format!("/api/v1/query?query={}", url_encode(promql));
        let (_, body) = get(self.addr, &path).expect("prometheus answers");
        serde_json::from_str(&body).unwrap_or_else(|_| panic!("not JSON: {body}"))
    }

    /// `GET /api/v1/rules`: every rule group loaded, with each rule's health and last error.
    pub fn rules(&self) -> Value {
        let (status, body) = get(self.addr, "/api/v1/rules").expect("prometheus answers");
        assert_eq!(status, 200, "{body}");
        serde_json::from_str(&body).unwrap()
    }

    /// `GET /api/v1/targets`: the scrape targets and their health.
    pub fn targets(&self) -> Value {
        let (status, body) = get(self.addr, "/api/v1/targets").expect("prometheus answers");
        assert_eq!(status, 200, "{body}");
        serde_json::from_str(&body).unwrap()
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Whether a query answer succeeded with at least one sample holding a number (not NaN).
pub fn has_data(answer: &Value) -> bool {
    let result = &answer["data"]["result"];
    let finite = |v: &Value| {
        v.get(1)
            .and_then(Value::as_str)
            .and_then(|s| s.parse::<f64>().ok())
            .is_some_and(f64::is_finite)
    };
    answer["status"] == "success"
        && match answer["data"]["resultType"].as_str() {
            Some("vector") => result
                .as_array()
                .is_some_and(|r| r.iter().any(|s| finite(&s["value"]))),
            Some("scalar") => finite(result),
            _ => false,
        }
}

/// What a tool printed, for a failure message.
pub fn describe(out: &Output) -> String {
    format!(
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Waits until `/-/ready` answers 200; `false` if the process exited first.
fn ready(child: &mut Child, addr: SocketAddr) -> bool {
    let mut exited = false;
    wait_until(PATIENCE, "prometheus ready", || {
        exited = child.try_wait().unwrap().is_some();
        exited || get(addr, "/-/ready").is_some_and(|(status, _)| status == 200)
    });
    !exited
}

fn free_port() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap()
}

/// One HTTP/1.0 GET (so the answer is never chunked): (status, body), `None` when nothing
/// answers.
fn get(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    let mut c = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    c.set_read_timeout(Some(PATIENCE)).ok()?;
    write!(c, "GET {path} HTTP/1.0\r\nHost: prometheus\r\n\r\n").ok()?;
    let mut raw = Vec::new();
    c.read_to_end(&mut raw).ok()?;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text.split_once("\r\n\r\n")?;
    let status = head.split(' ').nth(1)?.parse().ok()?;
    Some((status, body.to_owned()))
}

/// Percent-encodes everything but RFC 3986's unreserved characters.
fn url_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}
