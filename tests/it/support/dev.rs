//! `keygate serve --dev` as a process: its banner read (endpoint, URI prefix, access key id,
//! decision log), its stderr kept, stopped with SIGTERM.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// A running dev server.
pub struct DevServer {
    pub port: u16,
    /// The URI path prefix (without `/kms/xks/v1`).
    pub prefix: String,
    pub access_key_id: String,
    /// The banner's decision-log line.
    pub decision_log: String,
    /// The data dir, as given (relative to `cwd` when relative).
    pub data_dir: PathBuf,
    pub cwd: PathBuf,
    pub stderr_path: PathBuf,
    child: Child,
}

impl DevServer {
    /// `keygate serve --dev --listen 127.0.0.1:0 --data-dir DATA ARGS...` run in `cwd`; returns
    /// once the banner is printed.
    pub fn start(cwd: &Path, data_dir: &Path, args: &[&str]) -> DevServer {
        Self::start_with_env(cwd, data_dir, args, &[])
    }

    /// `start` with `envs` added to keygate's environment.
    pub fn start_with_env(
        cwd: &Path,
        data_dir: &Path,
        args: &[&str],
        envs: &[(&str, &str)],
    ) -> DevServer {
        let stderr_path = cwd.join(format!("keygate-{}.err", std::process::id()));
        let mut child = Command::new(env!("CARGO_BIN_EXE_keygate"))
            .current_dir(cwd)
            .args(["serve", "--dev", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(data_dir)
            .args(args)
            .env("RUST_LOG", "info")
            .envs(envs.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&stderr_path).unwrap())
            .spawn()
            .unwrap();
        let out = BufReader::new(child.stdout.take().unwrap());
        let field =
            |line: &str, name: &str| line.trim().strip_prefix(name).map(|v| v.trim().to_owned());
        let (mut port, mut prefix, mut ak, mut log) = (None, None, None, None);
        for line in out.lines().map_while(Result::ok) {
            if let Some(e) = field(&line, "endpoint:") {
                port = e.rsplit(':').next().and_then(|p| p.parse().ok());
            } else if let Some(p) = field(&line, "uri path:") {
                prefix = Some(p.trim_end_matches("/kms/xks/v1").to_owned());
            } else if let Some(a) = field(&line, "access key id:") {
                ak = Some(a);
            } else if let Some(l) = field(&line, "decision log:") {
                log = Some(l);
            }
            if port.is_some() && prefix.is_some() && ak.is_some() && log.is_some() {
                break;
            }
        }
        let (Some(port), Some(prefix), Some(access_key_id), Some(decision_log)) =
            (port, prefix, ak, log)
        else {
            let _ = child.kill();
            panic!(
                "no dev banner; stderr: {}",
                std::fs::read_to_string(&stderr_path).unwrap_or_default()
            );
        };
        DevServer {
            port,
            prefix,
            access_key_id,
            decision_log,
            data_dir: data_dir.to_owned(),
            cwd: cwd.to_owned(),
            stderr_path,
            child,
        }
    }

    /// A file in the data dir, as an absolute path.
    pub fn data(&self, name: &str) -> PathBuf {
        self.cwd.join(&self.data_dir).join(name)
    }

    /// The flags that point `keygate load` (or `conformance`) at this server under `prefix`,
    /// trusting the dev CA; the secret goes in KEYGATE_SECRET.
    pub fn client_flags(&self, prefix: &str) -> Vec<String> {
        [
            "--url",
            &format!("https://127.0.0.1:{}", self.port),
            "--prefix",
            prefix,
            "--access-key-id",
            &self.access_key_id,
            "--cacert",
            self.data("tls/ca.pem").to_str().unwrap(),
        ]
        .map(str::to_owned)
        .to_vec()
    }

    pub fn secret(&self) -> String {
        std::fs::read_to_string(self.data("keystore.secret"))
            .unwrap()
            .trim()
            .to_owned()
    }

    /// SIGTERM, then the exit status (bounded: a server that does not stop fails the test).
    pub fn stop(mut self) -> ExitStatus {
        let st = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(st.success());
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "keygate did not exit after SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for DevServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
