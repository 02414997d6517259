//! Running one test in a process of its own, inside this one test binary. Some tests must
//! own process-wide state: SoftHSMv2 reads SOFTHSM2_CONF once, at C_Initialize, and a module
//! initialised in a process stays so; a SIGHUP reaches every reload watcher of the process.
//! Such a test, started by the harness as usual (the parent), runs this binary again with an
//! exact filter for itself, its environment and a marker naming it (the child), and passes
//! when the child's run of it passed. In the child, where the marker names the running test,
//! the test's body runs.
//!
//! The running test's name is the name of its thread: libtest runs each test on a thread
//! named after it (the name a failure reports, `thread 'tls::reload::x' panicked`).

use std::ffi::OsStr;
use std::process::Command;

const MARKER: &str = "KEYGATE_IT_OWN_PROCESS";

/// The running test's full name, as libtest lists it (`module::test`).
pub fn current_test() -> String {
    let thread = std::thread::current();
    let name = thread.name().unwrap_or("");
    assert!(
        !name.is_empty() && name != "main",
        "not on a libtest test thread: {name:?}"
    );
    name.to_owned()
}

/// Whether this process is the child made for the running test.
pub fn is_child() -> bool {
    std::env::var_os(MARKER).is_some_and(|m| m == current_test().as_str())
}

/// In the parent: runs the running test in a child process with `envs` and fails unless
/// that test ran there and passed.
pub fn rerun(envs: &[(&str, &OsStr)]) {
    let name = current_test();
    let out = Command::new(std::env::current_exe().unwrap())
        .args([name.as_str(), "--exact", "--test-threads=1"])
        .env(MARKER, &name)
        .envs(envs.iter().copied())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    // With --exact, "1 passed" can only be this test.
    assert!(
        out.status.success() && stdout.contains("test result: ok. 1 passed"),
        "{name} in its own process ({}):\n{stdout}\n{stderr}",
        out.status
    );
}

/// Runs `body` in a process of its own (see the module comment).
pub fn run(body: impl FnOnce()) {
    if is_child() {
        body();
    } else {
        rerun(&[]);
    }
}
