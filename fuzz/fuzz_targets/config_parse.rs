//! The config parser (operator input): any text is a checked config or a list of problems;
//! nothing panics, and a refused config never echoes an inline secret.
#![no_main]

use std::path::Path;

use keygate::config::Config;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    // secret_file paths resolve against a directory that does not exist, so the fuzzer
    // cannot make the parser read arbitrary files.
    match Config::parse(text, Path::new("/nonexistent-keygate-fuzz/keygate.toml")) {
        Ok(c) => {
            assert!(!c.keystores.is_empty());
            assert!(c.limits.max_body >= c.limits.max_plaintext);
            let _ = format!("{c:?}");
        }
        Err(e) => assert!(!e.problems.is_empty()),
    }
});
