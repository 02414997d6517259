//! The decision log's files as one log: the live file `FILE`, rotated files `FILE.<n>` (higher
//! is newer) and their compressed forms `FILE.<n>.zst` / `FILE.<n>.gz`. Names, listing in chain
//! order, and reading any of them as the text the writer wrote (a compressed file reads as its
//! uncompressed bytes, which is what the chain and the digests hash). A file keeps its chain
//! name (`FILE.<n>`, what the next file's `prev_file` says) when it is compressed.

use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

/// How a rotated file is compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Codec {
    /// Zstandard (`.zst`), level 3.
    Zstd,
    /// gzip (`.gz`), level 6.
    Gzip,
}

impl Codec {
    /// The file name suffix, with its dot.
    pub fn suffix(self) -> &'static str {
        match self {
            Codec::Zstd => ".zst",
            Codec::Gzip => ".gz",
        }
    }

    /// As named in the config: `zstd` or `gzip`.
    pub fn as_str(self) -> &'static str {
        match self {
            Codec::Zstd => "zstd",
            Codec::Gzip => "gzip",
        }
    }

    fn of_name(name: &str) -> Option<(&str, Codec)> {
        [Codec::Zstd, Codec::Gzip]
            .into_iter()
            .find_map(|c| Some((name.strip_suffix(c.suffix())?, c)))
    }
}

/// One file of the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Segment {
    /// Its rotation number (`None`: the live file).
    pub n: Option<u64>,
    pub path: PathBuf,
    /// `None`: plain text.
    pub codec: Option<Codec>,
}

impl Segment {
    /// The name the chain knows it by (`FILE.<n>`): its file name without a compression suffix.
    pub fn chain_name(&self) -> String {
        chain_name(&self.path.display().to_string())
    }

    /// Its size on disk.
    pub fn bytes(&self) -> u64 {
        std::fs::metadata(&self.path).map_or(0, |m| m.len())
    }
}

/// The last path component without a compression suffix: the name `prev_file` records.
pub fn chain_name(path: &str) -> String {
    let name = super::chain::file_name(path);
    match Codec::of_name(&name) {
        Some((plain, _)) if rotation_number(plain).is_some() => plain.to_owned(),
        _ => name,
    }
}

/// `n` of a `BASE.<n>` name.
fn rotation_number(name: &str) -> Option<u64> {
    let (_, n) = name.rsplit_once('.')?;
    n.bytes().all(|b| b.is_ascii_digit()).then_some(())?;
    n.parse().ok()
}

/// `(n, codec)` when `name` is a rotated file of the log whose file name is `base`.
fn parse(name: &str, base: &str) -> Option<(u64, Option<Codec>)> {
    let rest = name.strip_prefix(base)?.strip_prefix('.')?;
    let (digits, codec) = match Codec::of_name(rest) {
        Some((d, c)) => (d, Some(c)),
        None => (rest, None),
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some((digits.parse().ok()?, codec))
}

fn dir_of(path: &Path) -> &Path {
    match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    }
}

/// Rotated files of the log at `path`, plain and compressed, oldest first. Where both forms of
/// one file exist (a compression stopped between its rename and the removal of the plain
/// file), the plain one: it is the original.
pub fn rotated(path: &Path) -> Vec<Segment> {
    let Some(base) = path.file_name().map(|b| b.to_string_lossy().into_owned()) else {
        return Vec::new();
    };
    let mut found: Vec<Segment> = std::fs::read_dir(dir_of(path))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let name = entry.file_name().to_string_lossy().into_owned();
            let (n, codec) = parse(&name, &base)?;
            Some(Segment {
                n: Some(n),
                path: entry.path(),
                codec,
            })
        })
        .collect();
    // Plain (`None`) sorts before compressed for the same number; keep the first of each.
    found.sort_by_key(|s| (s.n, s.codec.map(Codec::suffix)));
    found.dedup_by_key(|s| s.n);
    found
}

/// Every file of the log at `path` in chain order: rotated files, then the live file.
pub fn all(path: &Path) -> Vec<Segment> {
    let mut files = rotated(path);
    if path.exists() {
        files.push(Segment {
            n: None,
            path: path.to_owned(),
            codec: None,
        });
    }
    files
}

/// `FILE.<n>` with `n` one above the highest existing rotation, plain or compressed.
pub(crate) fn next_rotation(path: &Path) -> PathBuf {
    let next = rotated(path).last().and_then(|s| s.n).map_or(1, |n| n + 1);
    let mut name = path.as_os_str().to_owned();
    name.push(format!(".{next}"));
    PathBuf::from(name)
}

/// A reader of the file's text (decompressed by its suffix).
pub fn reader(path: &Path) -> std::io::Result<Box<dyn BufRead>> {
    let file = File::open(path)?;
    let name = path.display().to_string();
    Ok(match Codec::of_name(&name).map(|(_, c)| c) {
        None => Box::new(BufReader::with_capacity(1 << 16, file)),
        Some(Codec::Zstd) => Box::new(BufReader::with_capacity(
            1 << 16,
            zstd::stream::read::Decoder::new(file)?,
        )),
        Some(Codec::Gzip) => Box::new(BufReader::with_capacity(
            1 << 16,
            flate2::read::MultiGzDecoder::new(BufReader::new(file)),
        )),
    })
}

/// Longest line a reader of the log accepts (the bound the uploader's cursor has too): a longer
/// one is not a decision-log line, and reading it whole would take memory without bound.
pub const MAX_LINE: usize = 16 * 1024 * 1024;

/// Why the next line could not be read.
#[derive(Debug)]
pub enum LineError {
    Io(std::io::Error),
    /// The line runs on past this many bytes without a newline.
    TooLong(usize),
}

/// A file's lines, one at a time, each at most [`MAX_LINE`] bytes: memory stays one line
/// whatever the file's size.
#[derive(Debug)]
pub struct Lines<R> {
    reader: R,
    line: Vec<u8>,
    max: usize,
}

impl<R: BufRead> Lines<R> {
    pub fn new(reader: R) -> Self {
        Self::with_max(reader, MAX_LINE)
    }

    pub fn with_max(reader: R, max: usize) -> Self {
        Self {
            reader,
            line: Vec::new(),
            max,
        }
    }

    /// The next line with its newline (none on an incomplete last line); `None` at the end.
    pub fn next_line(&mut self) -> Result<Option<&[u8]>, LineError> {
        self.line.clear();
        let limit = u64::try_from(self.max)
            .unwrap_or(u64::MAX)
            .saturating_add(1);
        let read = (&mut self.reader)
            .take(limit)
            .read_until(b'\n', &mut self.line)
            .map_err(LineError::Io)?;
        if read == 0 {
            return Ok(None);
        }
        if self.line.len() > self.max && self.line.last() != Some(&b'\n') {
            return Err(LineError::TooLong(self.max));
        }
        Ok(Some(&self.line))
    }
}

/// The whole text of a log file, plain or compressed.
pub fn read_text(path: &Path) -> std::io::Result<String> {
    let mut text = String::new();
    reader(path)?.read_to_string(&mut text)?;
    Ok(text)
}

/// The last line of a log file, plain (read from its end) or compressed (read through one
/// line at a time, each at most [`MAX_LINE`] bytes).
pub fn last_line(path: &Path) -> std::io::Result<Option<String>> {
    if Codec::of_name(&path.display().to_string()).is_none() {
        let file = File::open(path)?;
        let size = file.metadata()?.len();
        return super::files::last_line(&file, size);
    }
    let mut lines = Lines::new(reader(path)?);
    let mut last: Option<Vec<u8>> = None;
    while let Some(line) = lines.next_line().map_err(LineError::into_io)? {
        let held = last.get_or_insert_with(Vec::new);
        held.clear();
        held.extend_from_slice(line);
    }
    last.as_deref().map(line_text).transpose()
}

/// The first line of a log file (at most [`MAX_LINE`] bytes).
pub fn first_line(path: &Path) -> std::io::Result<Option<String>> {
    Lines::new(reader(path)?)
        .next_line()
        .map_err(LineError::into_io)?
        .map(line_text)
        .transpose()
}

/// A line without its newline, as text.
fn line_text(line: &[u8]) -> std::io::Result<String> {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    String::from_utf8(line.to_vec()).map_err(|_| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "a decision-log line is not UTF-8",
        )
    })
}

impl LineError {
    fn into_io(self) -> std::io::Error {
        match self {
            LineError::Io(e) => e,
            LineError::TooLong(max) => std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("a line runs on past {max} bytes: not a decision-log line"),
            ),
        }
    }
}

/// Puts `paths` in chain order when they are all files of one log (`FILE.<n>[.zst|.gz]` by
/// number, then `FILE`); other lists are left as given. Returns whether they were sorted.
pub fn chain_order(paths: &mut [PathBuf]) -> bool {
    let names: Vec<String> = paths
        .iter()
        .map(|p| super::chain::file_name(&p.display().to_string()))
        .collect();
    let Some(base) = names
        .iter()
        .find(|n| names.iter().all(|m| *m == **n || parse(m, n).is_some()))
        .cloned()
        .or_else(|| common_base(&names))
    else {
        return false;
    };
    let key = |p: &PathBuf| {
        let name = super::chain::file_name(&p.display().to_string());
        parse(&name, &base).map_or(u64::MAX, |(n, _)| n)
    };
    paths.sort_by_key(key);
    true
}

/// The base all names are rotated files of (no live file among them).
fn common_base(names: &[String]) -> Option<String> {
    let first = names.first()?;
    let stem = Codec::of_name(first).map_or(first.as_str(), |(s, _)| s);
    let (base, _) = stem.rsplit_once('.')?;
    names
        .iter()
        .all(|n| parse(n, base).is_some())
        .then(|| base.to_owned())
}

/// The files of the one log in `dir`, in chain order (temporary files, upload state and other
/// logs' files are not part of it). An error when the directory holds no log or several.
pub fn in_dir(dir: &Path) -> Result<Vec<PathBuf>, String> {
    let entries = std::fs::read_dir(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let mut names: Vec<String> = entries
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    // Each file's log: its name without `.<n>` and a compression suffix.
    let mut bases: Vec<String> = names
        .iter()
        .filter(|n| !n.ends_with(".tmp") && !n.ends_with(".upload-state"))
        .map(|n| {
            let stem = Codec::of_name(n).map_or(n.as_str(), |(s, _)| s);
            match rotation_number(stem) {
                Some(_) => stem.rsplit_once('.').map_or(stem, |(b, _)| b).to_owned(),
                None => n.clone(),
            }
        })
        .collect();
    bases.sort();
    bases.dedup();
    let bases: Vec<&str> = bases.iter().map(String::as_str).collect();
    match bases.as_slice() {
        [base] => Ok(all(&dir.join(base)).into_iter().map(|s| s.path).collect()),
        [] => Err(format!("{}: holds no decision log", dir.display())),
        many => Err(format!(
            "{}: holds several logs ({}); give one as a glob, e.g. {}/{}*",
            dir.display(),
            many.join(", "),
            dir.display(),
            many.first().copied().unwrap_or_default()
        )),
    }
}

/// The files matching a glob (`*` and `?` in the last path component), in chain order.
pub fn glob(pattern: &Path) -> Result<Vec<PathBuf>, String> {
    let dir = dir_of(pattern);
    let wanted = super::chain::file_name(&pattern.display().to_string());
    let entries = std::fs::read_dir(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let mut found: Vec<PathBuf> = entries
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
        .filter(|e| {
            matches(
                wanted.as_bytes(),
                e.file_name().to_string_lossy().as_bytes(),
            )
        })
        .filter(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            !name.ends_with(".tmp") && !name.ends_with(".upload-state")
        })
        .map(|e| e.path())
        .collect();
    if found.is_empty() {
        return Err(format!("{}: no file matches", pattern.display()));
    }
    found.sort();
    chain_order(&mut found);
    Ok(found)
}

/// Whether `name` matches `pattern` (`*`: any run of bytes, `?`: one byte).
fn matches(pattern: &[u8], name: &[u8]) -> bool {
    match (pattern.split_first(), name.split_first()) {
        (None, None) => true,
        (Some((b'*', rest)), _) => {
            matches(rest, name) || name.split_first().is_some_and(|(_, n)| matches(pattern, n))
        }
        (Some((b'?', rest)), Some((_, n))) => matches(rest, n),
        (Some((p, rest)), Some((c, n))) if p == c => matches(rest, n),
        _ => false,
    }
}

/// Whether a path given on the command line is a glob.
pub fn is_glob(path: &Path) -> bool {
    let s = path.display().to_string();
    s.contains('*') || s.contains('?')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse_and_sort_in_chain_order() {
        assert_eq!(parse("d.log.3.zst", "d.log"), Some((3, Some(Codec::Zstd))));
        assert_eq!(parse("d.log.12", "d.log"), Some((12, None)));
        assert_eq!(parse("d.log.3.zst.tmp", "d.log"), None);
        assert_eq!(parse("d.log.upload-state", "d.log"), None);
        assert_eq!(chain_name("/x/d.log.3.gz"), "d.log.3");
        assert_eq!(chain_name("/x/d.log"), "d.log");
        let mut given: Vec<PathBuf> = ["d.log", "d.log.10.zst", "d.log.2", "d.log.1.gz"]
            .iter()
            .map(PathBuf::from)
            .collect();
        assert!(chain_order(&mut given));
        let names: Vec<String> = given.iter().map(|p| p.display().to_string()).collect();
        assert_eq!(names, ["d.log.1.gz", "d.log.2", "d.log.10.zst", "d.log"]);
    }

    #[test]
    fn globs_match_names() {
        assert!(matches(b"d.log*", b"d.log.3.zst"));
        assert!(matches(b"d.log.?", b"d.log.3"));
        assert!(!matches(b"d.log.?", b"d.log.31"));
        assert!(!matches(b"e*", b"d.log"));
    }

    #[test]
    fn a_directory_lists_one_log_and_skips_temporaries() {
        let dir = tempfile::tempdir().unwrap();
        for name in [
            "d.log",
            "d.log.1.zst",
            "d.log.2",
            "d.log.3.gz.tmp",
            "d.log.upload-state",
        ] {
            std::fs::write(dir.path().join(name), "").unwrap();
        }
        let files = in_dir(dir.path()).unwrap();
        let names: Vec<String> = files
            .iter()
            .map(|p| super::super::chain::file_name(&p.display().to_string()))
            .collect();
        assert_eq!(names, ["d.log.1.zst", "d.log.2", "d.log"]);
        // Stopped after a rotation's rename: no live file, still one log.
        std::fs::remove_file(dir.path().join("d.log")).unwrap();
        assert_eq!(in_dir(dir.path()).unwrap().len(), 2);
        std::fs::write(dir.path().join("e.log"), "").unwrap();
        std::fs::write(dir.path().join("e.log.1"), "").unwrap();
        assert!(in_dir(dir.path()).unwrap_err().contains("several logs"));
    }

    #[test]
    fn first_and_last_lines_of_compressed_files_are_bounded() {
        use std::io::Write;
        let dir = tempfile::tempdir().unwrap();
        let good = dir.path().join("d.log.1.zst");
        let mut z = zstd::Encoder::new(File::create(&good).unwrap(), 3).unwrap();
        z.write_all(b"{\"seq\":1}\n{\"seq\":2}\n{\"seq\":3}\n")
            .unwrap();
        z.finish().unwrap();
        assert_eq!(first_line(&good).unwrap().as_deref(), Some("{\"seq\":1}"));
        assert_eq!(last_line(&good).unwrap().as_deref(), Some("{\"seq\":3}"));

        // One line past the cap, without a newline: refused, not read into memory whole.
        let long = dir.path().join("d.log.2.zst");
        let mut z = zstd::Encoder::new(File::create(&long).unwrap(), 1).unwrap();
        let chunk = vec![b'a'; 1 << 20];
        for _ in 0..(MAX_LINE >> 20) + 1 {
            z.write_all(&chunk).unwrap();
        }
        z.finish().unwrap();
        for got in [first_line(&long), last_line(&long)] {
            let e = got.unwrap_err();
            assert_eq!(e.kind(), std::io::ErrorKind::InvalidData);
            assert!(e.to_string().contains("past 16777216 bytes"), "{e}");
        }
    }

    #[test]
    fn the_plain_form_wins_over_a_finished_compression_of_it() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("d.log");
        for name in ["d.log.1", "d.log.1.zst", "d.log.2.gz"] {
            std::fs::write(dir.path().join(name), "").unwrap();
        }
        let got = rotated(&log);
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].codec, None);
        assert_eq!(next_rotation(&log), dir.path().join("d.log.3"));
    }
}
