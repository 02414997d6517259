//! `keygate audit verify` streams: the real binary verifies a log several times larger than
//! the address space it is given (`prlimit --as`), plain and zstd-compressed, so no file is
//! ever read whole into memory.

use std::io::{BufWriter, Write};
use std::path::Path;
use std::process::Command;

use keygate::policy::decision_log::chain::{GENESIS, seal};

use crate::support::process::BIN;

/// Address space the verifier runs in.
const LIMIT: u64 = 64 * 1024 * 1024;
/// Lines of about 420 bytes: a log of about 200 MB.
const LINES: u64 = 480_000;

/// Writes a sealed chain of `LINES` lines to `path`; its last hash.
fn write_log(path: &Path) -> String {
    let mut out = BufWriter::new(std::fs::File::create(path).unwrap());
    let pad = "x".repeat(300);
    let mut prev = GENESIS.to_owned();
    for seq in 1..=LINES {
        let body = format!("{{\"seq\":{seq},\"pad\":\"{pad}\",\"prev_hash\":\"{prev}\"}}");
        let (line, hash) = seal(&prev, &body);
        writeln!(out, "{line}").unwrap();
        prev = hash;
    }
    out.flush().unwrap();
    prev
}

/// `keygate audit verify path` with its address space limited to `LIMIT`: (success, output).
fn verify_limited(path: &Path) -> (bool, String) {
    let out = Command::new("prlimit")
        .arg(format!("--as={LIMIT}"))
        .arg(BIN)
        .args(["audit", "verify"])
        .arg(path)
        .output()
        .expect("prlimit (util-linux) must be installed");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[test]
fn verify_streams_a_log_larger_than_its_address_space_plain_and_compressed() {
    let dir = tempfile::tempdir().unwrap();
    let plain = dir.path().join("d.log");
    let last = write_log(&plain);
    let size = std::fs::metadata(&plain).unwrap().len();
    assert!(
        size > 3 * LIMIT,
        "the log ({size} bytes) must dwarf the limit"
    );
    let want = format!("OK: {LINES} lines in 1 files");

    let (ok, out) = verify_limited(&plain);
    assert!(ok && out.contains(&want) && out.contains(&last), "{out}");

    let zst = dir.path().join("d.log.1.zst");
    let mut encoder =
        zstd::stream::write::Encoder::new(std::fs::File::create(&zst).unwrap(), 1).unwrap();
    std::io::copy(&mut std::fs::File::open(&plain).unwrap(), &mut encoder).unwrap();
    encoder.finish().unwrap();
    std::fs::remove_file(&plain).unwrap();
    let (ok, out) = verify_limited(&zst);
    assert!(ok && out.contains(&want) && out.contains(&last), "{out}");

    // A break deep in the big file is still named by file and line.
    let text = std::fs::File::open(&zst).unwrap();
    let mut lines = std::io::BufRead::lines(std::io::BufReader::new(
        zstd::stream::read::Decoder::new(text).unwrap(),
    ));
    let edited = dir.path().join("e.log");
    let mut out = BufWriter::new(std::fs::File::create(&edited).unwrap());
    let mut number = 0u64;
    while let Some(line) = lines.next().transpose().unwrap() {
        number += 1;
        let line = if number == LINES - 7 {
            line.replacen("xxx", "xyx", 1)
        } else {
            line
        };
        writeln!(out, "{line}").unwrap();
    }
    out.flush().unwrap();
    drop(out);
    let (ok, out) = verify_limited(&edited);
    let at = format!("e.log:{}: hash does not match", LINES - 7);
    assert!(!ok && out.contains(&at), "{out}");
}
