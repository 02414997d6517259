//! Hot reload of a policy directory: the set is swapped in only when it compiles and its tests
//! pass. When to reload is the reload supervisor's business (`crate::reload`).

use std::path::Path;

use super::{PolicyEngine, PolicyError, PolicySet};

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
