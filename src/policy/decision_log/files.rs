//! The decision log's files on disk: opening the live file (mode 0600), naming and listing
//! rotated files (`FILE.1`, `FILE.2`, ...; higher is newer), resuming the chain from the last
//! line, and reading first and last lines. Shared by the writer, the uploader and `settled`.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Instant, SystemTime};

use super::chain::{self, GENESIS};

/// Most bytes read from the end of a file to find its last line.
const TAIL_BYTES: u64 = 1 << 20;

/// Opens (creating it with mode 0600: it holds request metadata) the log file for appending.
pub(crate) fn open_file(path: &Path) -> std::io::Result<(File, (u64, u64))> {
    use std::os::unix::fs::OpenOptionsExt;
    let file = OpenOptions::new()
        .create(true)
        .append(true)
        .read(true)
        .mode(0o600)
        .open(path)?;
    let meta = file.metadata()?;
    Ok((file, (meta.dev(), meta.ino())))
}

/// Existing plain rotated files of `path`, oldest first (compressed ones: see `segments`).
pub(crate) fn rotations(path: &Path) -> Vec<(u64, PathBuf)> {
    let (Some(dir), Some(base)) = (path.parent(), path.file_name()) else {
        return Vec::new();
    };
    let dir = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    let prefix = format!("{}.", base.to_string_lossy());
    let mut found: Vec<(u64, PathBuf)> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let name = entry.file_name().to_string_lossy().into_owned();
            let n = name.strip_prefix(&prefix)?.parse::<u64>().ok()?;
            Some((n, entry.path()))
        })
        .collect();
    found.sort();
    found
}

/// Continue the chain: (seq, last hash, size, prev_file) from the file's last line, or from the
/// newest rotated file when the file is empty. A trailing partial line is cut off.
pub(crate) fn resume(
    path: &Path,
    file: &File,
) -> Result<(u64, String, u64, Option<String>), String> {
    let size = cut_partial_tail(file).map_err(|e| e.to_string())?;
    if let Some(last) = last_line(file, size).map_err(|e| e.to_string())? {
        let link = chain::open_line(&last)
            .map_err(|e| format!("its last line is not a keygate decision-log line: {e}"))?;
        return Ok((link.seq, link.hash, size, None));
    }
    // The newest rotated file with a line, plain or already compressed (a stop right after a
    // rotation); an empty one (a stop between a rotation and the first line after it) is
    // passed over.
    for previous in super::segments::rotated(path).iter().rev() {
        let shown = previous.path.display();
        let last =
            super::segments::last_line(&previous.path).map_err(|e| format!("{shown}: {e}"))?;
        if let Some(last) = last {
            let link = chain::open_line(&last).map_err(|e| format!("{shown}: {e}"))?;
            return Ok((link.seq, link.hash, 0, Some(previous.chain_name())));
        }
    }
    Ok((0, GENESIS.to_owned(), 0, None))
}

/// When the live file at `path` (`size` bytes) was started, for its rotation by age: the
/// `timestamp` of its first line, so `rotate_interval_secs` counts from the first line across
/// restarts (a file's mtime is its last write, and Linux offers no reliable birth time). Now
/// for an empty file, or one whose first line has no readable timestamp; a first line from the
/// future (a clock set back) counts as written now.
pub(crate) fn opened_at(path: &Path, size: u64) -> Instant {
    let now = Instant::now();
    if size == 0 {
        return now;
    }
    let Some(started) = first_line_time(path) else {
        return now;
    };
    let age = SystemTime::now()
        .duration_since(started)
        .unwrap_or_default();
    now.checked_sub(age).unwrap_or(now)
}

/// The `timestamp` of the first line of `path` (read up to [`TAIL_BYTES`]).
fn first_line_time(path: &Path) -> Option<SystemTime> {
    use std::io::BufRead;
    let file = File::open(path).ok()?;
    let mut line = String::new();
    std::io::BufReader::new(file.take(TAIL_BYTES))
        .read_line(&mut line)
        .ok()?;
    let value: serde_json::Value = serde_json::from_str(line.trim_end()).ok()?;
    crate::policy::parse_rfc3339(value.get("timestamp")?.as_str()?)
}

/// Cut anything after the last newline (a line whose write was interrupted); return the size.
fn cut_partial_tail(file: &File) -> std::io::Result<u64> {
    let size = file.metadata()?.len();
    let tail = read_tail(file, size)?;
    let keep = match tail.iter().rposition(|b| *b == b'\n') {
        Some(at) => size - (tail.len() - at - 1) as u64,
        None if (tail.len() as u64) < size => size,
        None => 0,
    };
    if keep != size {
        tracing::warn!(
            cut = size - keep,
            "decision log ended with a partial line; cut it off"
        );
        file.set_len(keep)?;
    }
    Ok(keep)
}

pub(crate) fn last_line(file: &File, size: u64) -> std::io::Result<Option<String>> {
    let tail = read_tail(file, size)?;
    let text = String::from_utf8_lossy(&tail);
    Ok(text.lines().last().map(str::to_owned))
}

fn read_tail(file: &File, size: u64) -> std::io::Result<Vec<u8>> {
    let len = size.min(TAIL_BYTES);
    let mut reader = file;
    reader.seek(SeekFrom::Start(size - len))?;
    let mut buf = Vec::with_capacity(usize::try_from(len).unwrap_or(0));
    reader.take(len).read_to_end(&mut buf)?;
    Ok(buf)
}
