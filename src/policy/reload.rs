//! Hot reload of a policy directory: a cheap change detector (names, sizes and mtimes of the
//! `*.rego` files) and a reload that swaps the set in only when it compiles and its tests pass.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use super::{PolicyEngine, PolicyError, PolicySet};

/// Remembers what a policy directory looked like, to notice changes by polling.
#[derive(Debug)]
pub struct DirWatch {
    dir: PathBuf,
    seen: Vec<(String, u64, Option<SystemTime>)>,
}

impl DirWatch {
    /// Start watching `dir` as it is now.
    pub fn new(dir: &Path) -> Self {
        Self {
            dir: dir.to_owned(),
            seen: fingerprint(dir),
        }
    }

    /// Whether any `*.rego` file was added, removed or modified since the last call.
    pub fn changed(&mut self) -> bool {
        let now = fingerprint(&self.dir);
        if now == self.seen {
            return false;
        }
        self.seen = now;
        true
    }
}

fn fingerprint(dir: &Path) -> Vec<(String, u64, Option<SystemTime>)> {
    let mut seen: Vec<_> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.path().extension().and_then(|x| x.to_str()) == Some("rego"))
        .filter_map(|e| {
            let meta = e.metadata().ok()?;
            let name = e.file_name().to_string_lossy().into_owned();
            Some((name, meta.len(), meta.modified().ok()))
        })
        .collect();
    seen.sort();
    seen
}

/// Load `dir` and, if it compiles and its tests pass, put it in force. On error the set in force
/// stays and the error is returned (and logged). Returns the revision in force afterwards.
pub fn reload_dir(engine: &PolicyEngine, dir: &Path) -> Result<String, PolicyError> {
    match PolicySet::from_dir(dir) {
        Ok(set) if set.revision() == engine.revision() => Ok(engine.revision()),
        Ok(set) => {
            let revision = set.revision().to_owned();
            engine.reload(set);
            tracing::info!(dir = %dir.display(), %revision, "policy reloaded");
            Ok(revision)
        }
        Err(err) => {
            tracing::error!(dir = %dir.display(), error = %err, kept = %engine.revision(),
                "policy refused; the previous policy stays in force");
            Err(err)
        }
    }
}
