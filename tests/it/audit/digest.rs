//! Signed digests written by the real binary (a key made by `openssl genpkey`), checked by
//! `keygate audit verify --digests --public-key`, by plain `openssl` with the commands
//! docs/audit.md gives, and against each attack: an edited line, a deleted middle line, a tail
//! cut off and resealed, a missing digest, a digest signed by another key.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::support::process::{BIN, QUIET, keygate};
use crate::support::*;

/// `openssl args` in `dir`; it must succeed.
pub fn openssl(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl must be installed");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// An Ed25519 key pair made by openssl in `dir`: `digest-key.pem` (0600), `digest-pub.pem`.
pub fn openssl_key(dir: &Path) {
    openssl(
        dir,
        &["genpkey", "-algorithm", "ed25519", "-out", "digest-key.pem"],
    );
    use std::os::unix::fs::PermissionsExt;
    let key = dir.join("digest-key.pem");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    openssl(
        dir,
        &[
            "pkey",
            "-in",
            "digest-key.pem",
            "-pubout",
            "-out",
            "digest-pub.pem",
        ],
    );
}

const DIGEST_CONFIG: &str = "\n[decision_log]\npath = \"decisions.log\"\n\
    [decision_log.digest]\ndir = \"digests\"\nkey_file = \"digest-key.pem\"\ninterval_secs = 1\n";

/// The digest files of `dir/digests`, oldest first.
pub fn digests(dir: &Path) -> Vec<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir.join("digests"))
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    found.retain(|p| p.extension().is_some_and(|e| e == "json"));
    found.sort();
    found
}

/// `keygate audit verify` of `files` in `dir` against its digests: (success, output).
pub fn verify(dir: &Path, files: &[&str], public: &str) -> (bool, String) {
    let mut args = vec!["audit", "verify"];
    args.extend_from_slice(files);
    args.extend_from_slice(&["--digests", "digests", "--public-key", public]);
    let out = Command::new(BIN)
        .args(&args)
        .current_dir(dir)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

/// The shell commands docs/audit.md gives to check one digest with openssl (the block after
/// the `openssl-verify` marker), without its first line (which names example files).
fn documented_openssl_check() -> String {
    let doc = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/audit.md"))
        .unwrap();
    let after = doc
        .split("<!-- openssl-verify -->")
        .nth(1)
        .expect("the marker");
    let block = after
        .split("```sh\n")
        .nth(1)
        .unwrap()
        .split("```")
        .next()
        .unwrap();
    block.lines().skip(1).collect::<Vec<_>>().join("\n")
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap().flatten() {
        let target = to.join(entry.file_name());
        if entry.path().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

/// A copy of the audited files (log, digests, public key) to attack.
fn evidence(from: &Path) -> tempfile::TempDir {
    let copy = tempfile::tempdir().unwrap();
    std::fs::copy(
        from.join("decisions.log"),
        copy.path().join("decisions.log"),
    )
    .unwrap();
    std::fs::copy(
        from.join("digest-pub.pem"),
        copy.path().join("digest-pub.pem"),
    )
    .unwrap();
    copy_dir(&from.join("digests"), &copy.path().join("digests"));
    copy
}

fn log_lines(dir: &Path) -> Vec<String> {
    std::fs::read_to_string(dir.join("decisions.log"))
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect()
}

fn write_lines(dir: &Path, lines: &[String]) {
    let text: String = lines.iter().map(|l| format!("{l}\n")).collect();
    std::fs::write(dir.join("decisions.log"), text).unwrap();
}

/// Re-chains `lines[from..]` (renumbered from the line before), as whoever can write the log
/// but holds no key can.
fn reseal(lines: &mut [String], from: usize) {
    let last = |l: &str| -> (String, u64) {
        let v: serde_json::Value = serde_json::from_str(l).unwrap();
        (
            v["hash"].as_str().unwrap().to_owned(),
            v["seq"].as_u64().unwrap(),
        )
    };
    let (mut prev, mut seq) = last(&lines[from - 1]);
    for line in &mut lines[from..] {
        let mut v: serde_json::Value = serde_json::from_str(line).unwrap();
        let o = v.as_object_mut().unwrap();
        seq += 1;
        o.remove("hash");
        o.insert("seq".into(), seq.into());
        o.insert("prev_hash".into(), prev.clone().into());
        let body = v.to_string();
        let hash = {
            use sha2::Digest as _;
            let mut h = sha2::Sha256::new();
            h.update(prev.as_bytes());
            h.update(b"\n");
            h.update(body.as_bytes());
            hex::encode(h.finalize())
        };
        *line = format!("{},\"hash\":\"{hash}\"}}", body.strip_suffix('}').unwrap());
        prev = hash;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_real_servers_digests_verify_and_every_attack_is_named() {
    let (dir, config_path) = fixtures::server_dir(&config(DIGEST_CONFIG));
    openssl_key(dir.path());
    let root = dir.path().to_owned();
    let mut server = KeygateProcess::serve(dir, &config_path, QUIET, &[]);
    let mut client = Client::connect(server.addr).await;
    for _ in 0..6 {
        client
            .post(&path("encrypt", "foo"), &encrypt_body(b"x", None, false))
            .await
            .expect_ok();
    }
    // Heartbeats: digests keep coming while nothing happens.
    wait_until(PATIENCE, "three digests", || digests(&root).len() >= 3);
    // The files outlive the process (its directory would go with it).
    let _kept = std::mem::replace(&mut server.dir, tempfile::tempdir().unwrap());
    let stopped = server.stop();
    assert!(stopped.status.success());
    let all = digests(&root);
    let newest = std::fs::read_to_string(all.last().unwrap()).unwrap();
    assert!(newest.contains("\"reason\":\"shutdown\"") && newest.contains("\"last_seq\":6"));

    let (ok, out) = verify(&root, &["decisions.log"], "digest-pub.pem");
    assert!(ok, "{out}");
    assert!(
        out.starts_with("OK: 6 lines") && out.contains("digests from digest 1"),
        "{out}"
    );

    // Plain openssl, with the commands the docs give, on one digest.
    let check = documented_openssl_check();
    let out = Command::new("sh")
        .args(["-e", "-c", &check])
        .env("DIGEST", all.last().unwrap())
        .env("PUBLIC", root.join("digest-pub.pem"))
        .current_dir(tempfile::tempdir().unwrap().path())
        .output()
        .unwrap();
    let said =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && said.contains("Signature Verified Successfully"),
        "{said}"
    );
    let fingerprint = said
        .lines()
        .find(|l| l.contains("sha256:"))
        .unwrap_or_default()
        .to_owned();
    assert!(newest.contains(fingerprint.trim()), "{said}");

    // An edited line.
    let e = evidence(&root);
    let mut lines = log_lines(e.path());
    lines[2] = lines[2].replace("\"Encrypt\"", "\"Decrypt\"");
    write_lines(e.path(), &lines);
    let (ok, out) = verify(e.path(), &["decisions.log"], "digest-pub.pem");
    assert!(
        !ok && out.contains("decisions.log:3:") && out.contains("edited"),
        "{out}"
    );

    // A deleted middle line.
    let e = evidence(&root);
    let mut lines = log_lines(e.path());
    lines.remove(3);
    write_lines(e.path(), &lines);
    let (ok, out) = verify(e.path(), &["decisions.log"], "digest-pub.pem");
    assert!(
        !ok && out.contains("decisions.log:4:") && out.contains("deleted"),
        "{out}"
    );

    // The tail cut off and resealed: a valid chain, but not the one the digests signed.
    let e = evidence(&root);
    let mut lines = log_lines(e.path());
    lines.truncate(5);
    lines[4] = lines[4].replace("\"Encrypt\"", "\"Decrypt\"");
    reseal(&mut lines, 4);
    write_lines(e.path(), &lines);
    assert!(
        keygate(&[
            "audit",
            "verify",
            e.path().join("decisions.log").to_str().unwrap()
        ])
        .status
        .success()
    );
    let (ok, out) = verify(e.path(), &["decisions.log"], "digest-pub.pem");
    assert!(
        !ok && out.contains("decisions.log:5:") && out.contains("recorded"),
        "{out}"
    );
    assert!(out.contains("digest digest-0000"), "{out}");

    // A missing digest.
    let e = evidence(&root);
    let gone = digests(e.path())[1].clone();
    std::fs::remove_file(&gone).unwrap();
    let (ok, out) = verify(e.path(), &["decisions.log"], "digest-pub.pem");
    assert!(!ok && out.contains("digest 2 is missing"), "{out}");

    // A digest replaced by one signed by another key (whoever holds the files, not the key).
    let e = evidence(&root);
    let target = digests(e.path())[1].clone();
    let text = std::fs::read_to_string(&target).unwrap();
    let (mut forged, _, _) = keygate::policy::decision_log::digest::open(&text).unwrap();
    let (_, theirs) = keygate::signing::Ed25519FileKey::generate().unwrap();
    use keygate::signing::DigestSigner;
    forged.key_fingerprint = theirs.public_key().fingerprint();
    forged.reason = keygate::policy::decision_log::digest::Reason::Interval;
    let body = forged.body();
    let signature = b64(&theirs.sign(body.as_bytes()).unwrap());
    std::fs::write(
        &target,
        keygate::policy::decision_log::digest::seal(&body, &signature),
    )
    .unwrap();
    let (ok, out) = verify(e.path(), &["decisions.log"], "digest-pub.pem");
    let name = target.file_name().unwrap().to_str().unwrap();
    assert!(
        !ok && out.contains("signed by another key") && out.contains(name),
        "{out}"
    );
}

#[test]
fn keygen_makes_a_key_openssl_reads_and_refuses_to_overwrite() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("k.pem");
    let public = dir.path().join("k.pub.pem");
    let out = keygate(&[
        "audit",
        "keygen",
        "--out",
        key.to_str().unwrap(),
        "--public-out",
        public.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&key).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let derived = openssl(dir.path(), &["pkey", "-in", "k.pem", "-pubout"]);
    assert_eq!(derived, std::fs::read_to_string(&public).unwrap());
    assert_eq!(String::from_utf8_lossy(&out.stdout), derived);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("ed25519 public key, fingerprint sha256:")
    );
    let again = keygate(&["audit", "keygen", "--out", key.to_str().unwrap()]);
    assert!(
        !again.status.success(),
        "an existing key must never be overwritten"
    );
}

#[test]
fn a_key_file_readable_by_others_is_a_config_error() {
    let (dir, config_path) = fixtures::server_dir(&config(DIGEST_CONFIG));
    openssl_key(dir.path());
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(
        dir.path().join("digest-key.pem"),
        std::fs::Permissions::from_mode(0o644),
    )
    .unwrap();
    let out = keygate(&["config", "check", config_path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&out.stderr).contains("chmod 600"));
}
