//! A real small filesystem for the disk-pressure tests: a size-limited tmpfs the test mounts
//! (`mount -t tmpfs -o size=...`; the tests run as root, here and in CI) and unmounts when it
//! is dropped, also when the test fails. Mounting refused: the test fails and says why; it
//! never skips. Filler files take its space, to a given number of free bytes or to the last.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

const CHUNK: usize = 64 * 1024;

/// A mounted tmpfs of a given size in a temp dir.
pub struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    /// Mounts a tmpfs of `bytes` (mode 0700) on a fresh temp dir.
    pub fn mount(bytes: u64) -> Tmpfs {
        let dir = tempfile::tempdir().unwrap();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o"])
            .arg(format!("size={bytes},mode=0700"))
            .arg("tmpfs")
            .arg(dir.path())
            .output()
            .unwrap_or_else(|e| panic!("the disk-pressure tests need mount(8): {e}"));
        assert!(
            out.status.success(),
            "the disk-pressure tests mount a {bytes}-byte tmpfs on {} and need root \
             (CAP_SYS_ADMIN) for it; mount said: {}",
            dir.path().display(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
        Tmpfs { dir }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Bytes free to an unprivileged writer.
    pub fn free(&self) -> u64 {
        let s = rustix::fs::statvfs(self.path()).unwrap();
        s.f_bavail * s.f_frsize
    }

    /// Writes the filler file `name` until at most `leave` bytes are free (page-sized steps:
    /// a little less may be left).
    pub fn fill_to(&self, name: &str, leave: u64) -> PathBuf {
        let path = self.path().join(name);
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .unwrap();
        let zeros = vec![0u8; CHUNK];
        loop {
            let free = self.free();
            if free <= leave {
                break;
            }
            let n = usize::try_from(free - leave).unwrap_or(CHUNK).min(CHUNK);
            file.write_all(&zeros[..n]).unwrap();
        }
        path
    }

    /// Writes the filler file `name` until the filesystem refuses a write (ENOSPC): no block
    /// is left.
    pub fn fill_up(&self, name: &str) -> PathBuf {
        let path = self.path().join(name);
        let mut file = std::fs::File::create(&path).unwrap();
        let zeros = vec![0u8; 4096];
        loop {
            match file.write(&zeros) {
                Ok(n) if n > 0 => {}
                Ok(_) => break,
                Err(e) => {
                    assert_eq!(e.raw_os_error(), Some(28), "ENOSPC expected, got {e}");
                    break;
                }
            }
        }
        assert_eq!(self.free(), 0, "the filesystem is full");
        path
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let unmounted = Command::new("umount")
            .arg(self.dir.path())
            .status()
            .is_ok_and(|s| s.success());
        if !unmounted {
            // Still busy (a process failed to stop): detach it now, freed once unused.
            let _ = Command::new("umount")
                .arg("-l")
                .arg(self.dir.path())
                .status();
        }
    }
}
