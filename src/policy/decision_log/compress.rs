//! Compressing one rotated file so that a stop at any moment leaves the log whole: the
//! compressed copy is written to `FILE.<n>.<ext>.tmp` (mode 0600), synced, renamed to
//! `FILE.<n>.<ext>`, the directory synced, and only then is the plain file removed. A stop
//! before the rename leaves a temporary file (removed by [`remove_temporaries`]); a stop after
//! it leaves both forms, and the plain one is read and compressed again.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use super::segments::{self, Codec};

/// zstd level: the library's default (ratio close to gzip -9 at several times gzip -6's speed).
const ZSTD_LEVEL: i32 = 3;
/// gzip level: zlib's default.
const GZIP_LEVEL: u32 = 6;
const CHUNK: usize = 1 << 16;

/// How a compression ended early.
#[derive(Debug, thiserror::Error)]
pub enum CompressError {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// keygate is stopping; the temporary file was removed.
    #[error("stopped")]
    Stopped,
}

/// Compresses the rotated file `plain` with `codec`; returns the compressed file's path. Stops
/// (and removes the temporary file) when `stop` is set.
pub fn compress(plain: &Path, codec: Codec, stop: &AtomicBool) -> Result<PathBuf, CompressError> {
    let mut target = plain.as_os_str().to_owned();
    target.push(codec.suffix());
    let target = PathBuf::from(target);
    let mut tmp = target.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let outcome = write_compressed(plain, &tmp, codec, stop);
    if outcome.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    outcome?;
    std::fs::rename(&tmp, &target)?;
    sync_dir(plain)?;
    std::fs::remove_file(plain)?;
    sync_dir(plain)?;
    Ok(target)
}

fn write_compressed(
    plain: &Path,
    tmp: &Path,
    codec: Codec,
    stop: &AtomicBool,
) -> Result<(), CompressError> {
    let mut input = File::open(plain)?;
    let last_write = input.metadata()?.modified()?;
    let out = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(tmp)?;
    let file = match codec {
        Codec::Zstd => {
            let mut enc = zstd::stream::write::Encoder::new(out, ZSTD_LEVEL)?;
            pump(&mut input, &mut enc, stop)?;
            enc.finish()?
        }
        Codec::Gzip => {
            let mut enc = flate2::write::GzEncoder::new(out, flate2::Compression::new(GZIP_LEVEL));
            pump(&mut input, &mut enc, stop)?;
            enc.finish()?
        }
    };
    // Retention's age is the file's last write, not the time it was compressed.
    file.set_modified(last_write)?;
    file.sync_all()?;
    Ok(())
}

fn pump(input: &mut File, out: &mut dyn Write, stop: &AtomicBool) -> Result<(), CompressError> {
    let mut buf = vec![0u8; CHUNK];
    loop {
        if stop.load(Ordering::Acquire) {
            return Err(CompressError::Stopped);
        }
        let n = input.read(&mut buf)?;
        let Some(chunk) = buf.get(..n).filter(|c| !c.is_empty()) else {
            return Ok(());
        };
        out.write_all(chunk)?;
    }
}

/// Compresses `bytes` in memory (for measurements and tests).
pub fn compress_bytes(bytes: &[u8], codec: Codec) -> std::io::Result<Vec<u8>> {
    match codec {
        Codec::Zstd => zstd::stream::encode_all(bytes, ZSTD_LEVEL),
        Codec::Gzip => {
            let mut enc =
                flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(GZIP_LEVEL));
            enc.write_all(bytes)?;
            enc.finish()
        }
    }
}

/// Syncs the directory holding `path`, so a rename or removal in it survives a crash.
fn sync_dir(path: &Path) -> std::io::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    File::open(dir)?.sync_all()
}

/// Removes temporary files a stopped compression left beside the log at `path`
/// (`FILE.<n>.zst.tmp`, `FILE.<n>.gz.tmp`). Returns how many.
pub fn remove_temporaries(path: &Path) -> usize {
    let (Some(dir), Some(base)) = (path.parent(), path.file_name()) else {
        return 0;
    };
    let dir = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    let base = base.to_string_lossy().into_owned();
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            name.strip_suffix(".tmp")
                .is_some_and(|n| n.starts_with(&base) && segments::chain_name(n) != n)
        })
        .filter(|e| std::fs::remove_file(e.path()).is_ok())
        .count()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;
    use std::time::SystemTime;

    #[test]
    fn compressed_files_read_back_as_the_plain_bytes_with_mode_0600() {
        let dir = tempfile::tempdir().unwrap();
        let text: String = (0..2000).map(|i| format!("{{\"seq\":{i}}}\n")).collect();
        for codec in [Codec::Zstd, Codec::Gzip] {
            let plain = dir.path().join("d.log.1");
            std::fs::write(&plain, &text).unwrap();
            let written = SystemTime::now() - std::time::Duration::from_secs(3600);
            File::options()
                .write(true)
                .open(&plain)
                .unwrap()
                .set_modified(written)
                .unwrap();
            let done = compress(&plain, codec, &AtomicBool::new(false)).unwrap();
            assert!(!plain.exists(), "the plain file is removed");
            assert_eq!(segments::read_text(&done).unwrap(), text);
            let mode = std::fs::metadata(&done).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600);
            let age = std::fs::metadata(&done).unwrap().modified().unwrap();
            assert!(age <= written, "keeps the plain file's last write");
            assert_eq!(
                segments::last_line(&done).unwrap().as_deref(),
                Some("{\"seq\":1999}")
            );
            std::fs::remove_file(done).unwrap();
        }
    }

    #[test]
    fn a_stopped_compression_leaves_the_plain_file_and_no_temporary() {
        let dir = tempfile::tempdir().unwrap();
        let plain = dir.path().join("d.log.1");
        std::fs::write(&plain, "{}\n").unwrap();
        let err = compress(&plain, Codec::Zstd, &AtomicBool::new(true)).unwrap_err();
        assert!(matches!(err, CompressError::Stopped));
        assert!(plain.exists());
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
        std::fs::write(dir.path().join("d.log.1.zst.tmp"), "half").unwrap();
        std::fs::write(dir.path().join("other.tmp"), "not ours").unwrap();
        assert_eq!(remove_temporaries(&dir.path().join("d.log")), 1);
        assert!(dir.path().join("other.tmp").exists());
    }
}
