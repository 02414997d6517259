//! What a watched file looked like: modification time, size and identity (device and inode,
//! so a file replaced by rename is noticed even with the same time and size). The one change
//! detector behind every reload.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

/// One file's stamp.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileStamp {
    modified: Option<SystemTime>,
    len: u64,
    identity: (u64, u64),
}

impl FileStamp {
    /// The file's stamp now; `None` when it cannot be read.
    pub fn of(path: &Path) -> Option<FileStamp> {
        let m = std::fs::metadata(path).ok()?;
        Some(FileStamp {
            modified: m.modified().ok(),
            len: m.len(),
            identity: (m.dev(), m.ino()),
        })
    }
}

/// What a set of files looks like: the files named, or a directory's files with one
/// extension. Two looks compare equal when nothing was added, removed or changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stamps(Vec<(PathBuf, Option<FileStamp>)>);

/// The files one reload depends on.
#[derive(Debug, Clone)]
pub enum Watched {
    /// These files.
    Files(Vec<PathBuf>),
    /// Every `*.{ext}` file in the directory.
    Dir { dir: PathBuf, ext: &'static str },
}

impl Watched {
    /// Their stamps now.
    pub fn stamps(&self) -> Stamps {
        let mut files: Vec<(PathBuf, Option<FileStamp>)> = match self {
            Watched::Files(paths) => paths
                .iter()
                .map(|p| (p.clone(), FileStamp::of(p)))
                .collect(),
            Watched::Dir { dir, ext } => std::fs::read_dir(dir)
                .into_iter()
                .flatten()
                .flatten()
                .map(|e| e.path())
                .filter(|p| p.extension().and_then(|x| x.to_str()) == Some(*ext))
                .map(|p| {
                    let stamp = FileStamp::of(&p);
                    (p, stamp)
                })
                .collect(),
        };
        files.sort_by(|a, b| a.0.cmp(&b.0));
        Stamps(files)
    }
}

/// A [`Watched`] set and how it looked last.
#[derive(Debug)]
pub struct Watch {
    what: Watched,
    seen: Stamps,
}

impl Watch {
    /// Starts watching `what` as it is now.
    pub fn new(what: Watched) -> Watch {
        let seen = what.stamps();
        Watch { what, seen }
    }

    /// Whether anything changed since the last call (or since `new`/`mark`).
    pub fn changed(&mut self) -> bool {
        let now = self.what.stamps();
        if now == self.seen {
            return false;
        }
        self.seen = now;
        true
    }

    /// Takes the files as they are now as seen (after a reload done for another reason).
    pub fn mark(&mut self) {
        self.seen = self.what.stamps();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_change_added_or_removed_file_is_noticed_once() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a.rego");
        std::fs::write(&a, "x").unwrap();
        let mut files = Watch::new(Watched::Files(vec![a.clone()]));
        let mut rego = Watch::new(Watched::Dir {
            dir: dir.path().to_owned(),
            ext: "rego",
        });
        assert!(!files.changed() && !rego.changed());
        std::fs::write(&a, "xy").unwrap();
        assert!(files.changed() && rego.changed());
        assert!(!files.changed() && !rego.changed());
        std::fs::write(dir.path().join("b.rego"), "y").unwrap();
        std::fs::write(dir.path().join("notes.txt"), "y").unwrap();
        assert!(!files.changed());
        assert!(rego.changed());
        // Replaced by rename with the same size: another inode.
        let b = dir.path().join("a.new");
        std::fs::write(&b, "zz").unwrap();
        std::fs::rename(&b, &a).unwrap();
        assert!(files.changed());
        std::fs::remove_file(&a).unwrap();
        assert!(files.changed() && rego.changed());
    }
}
