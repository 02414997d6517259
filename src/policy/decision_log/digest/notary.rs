//! The notary thread: turns the writer's [`Job`]s into signed digest files, chained by
//! signature to the newest digest in the directory (across restarts), each written
//! atomically (a temporary file, fsync, rename, fsync of the directory). Signing may block on
//! an HSM; only this thread waits for it. A digest that cannot be signed or written is counted
//! and logged, and its content goes into the next digest.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, SyncSender};
use std::time::UNIX_EPOCH;

use super::feed::Job;
use super::{Digest, DigestConfig, FORMAT, FileEntry, b64, unb64};
use crate::policy::decision_log::progress::DigestStats;
use crate::policy::decision_log::timestamp;

/// Jobs that may wait for the notary; more are folded into the next.
const QUEUE: usize = 16;

/// The newest digest: what the next one chains to.
#[derive(Debug, Clone)]
struct Link {
    seq: u64,
    name: String,
    signature: String,
    end: String,
}

/// The digest thread's state.
#[derive(Debug)]
pub(crate) struct Notary {
    config: DigestConfig,
    log_name: String,
    instance_id: String,
    stats: Arc<DigestStats>,
    link: Option<Link>,
    /// A job that failed, folded into the next.
    carry: Option<Job>,
}

impl Notary {
    /// Reads the newest digest of the directory (creating it) and starts the thread; the
    /// writer feeds it through the returned sender and stops it by dropping the sender.
    pub fn start(
        config: DigestConfig,
        log_name: String,
        instance_id: String,
        stats: Arc<DigestStats>,
    ) -> Result<(SyncSender<Job>, std::thread::JoinHandle<()>), String> {
        create_dir(&config.dir)?;
        let link = newest(&config)?;
        stats
            .interval_secs
            .store(config.interval.as_secs(), Ordering::Relaxed);
        let notary = Self {
            config,
            log_name,
            instance_id,
            stats,
            link,
            carry: None,
        };
        let (sender, receiver) = std::sync::mpsc::sync_channel(QUEUE);
        let thread = std::thread::Builder::new()
            .name("decision-log-digest".into())
            .spawn(move || notary.run(&receiver))
            .map_err(|e| format!("cannot start the digest thread: {e}"))?;
        Ok((sender, thread))
    }

    fn run(mut self, receiver: &Receiver<Job>) {
        for job in receiver {
            let job = match self.carry.take() {
                Some(earlier) => fold(earlier, job),
                None => job,
            };
            if let Err(e) = self.write(&job) {
                self.stats.failed.fetch_add(1, Ordering::Relaxed);
                tracing::error!(error = %e, dir = %self.config.dir.display(), reason = ?job.reason, "decision log digest not written; its content goes into the next digest");
                self.carry = Some(job);
            }
        }
    }

    fn write(&mut self, job: &Job) -> Result<(), String> {
        let signer = &self.config.signer;
        let public = signer.public_key();
        let seq = self.link.as_ref().map_or(1, |l| l.seq + 1);
        let digest = Digest {
            format: FORMAT.to_owned(),
            digest_seq: seq,
            reason: job.reason,
            start: self
                .link
                .as_ref()
                .map_or_else(|| timestamp(job.at), |l| l.end.clone()),
            end: timestamp(job.at),
            interval_secs: self.config.interval.as_secs(),
            log: self.log_name.clone(),
            instance_id: self.instance_id.clone(),
            files: job.files.clone(),
            first_seq: job.first_added.as_ref().map(|f| f.0),
            first_hash: job.first_added.as_ref().map(|f| f.1.clone()),
            last_seq: job.head.0,
            last_hash: job.head.1.clone(),
            previous_digest: self.link.as_ref().map(|l| l.name.clone()),
            previous_signature: self.link.as_ref().map(|l| l.signature.clone()),
            algorithm: public.algorithm().as_str().to_owned(),
            key_fingerprint: public.fingerprint(),
        };
        let body = digest.body();
        let signature = b64(&signer.sign(body.as_bytes()).map_err(|e| e.to_string())?);
        let name = super::file_name(seq, job.at);
        write_atomically(&self.config.dir, &name, &super::seal(&body, &signature))?;
        self.link = Some(Link {
            seq,
            name,
            signature,
            end: digest.end,
        });
        self.stats.digested_seq.store(job.head.0, Ordering::Release);
        self.stats.written.fetch_add(1, Ordering::Relaxed);
        let unix = job.at.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        self.stats.last_unix.store(unix, Ordering::Relaxed);
        Ok(())
    }
}

/// A failed job and the next one as one: the earlier files (unless the next one lists the
/// same file again), the earlier first line, the later head and reason.
fn fold(earlier: Job, later: Job) -> Job {
    let mut files: Vec<FileEntry> = earlier
        .files
        .into_iter()
        .filter(|f| later.files.iter().all(|g| g.first_seq != f.first_seq))
        .collect();
    files.extend(later.files);
    Job {
        first_added: earlier.first_added.or(later.first_added),
        files,
        ..later
    }
}

/// The newest digest in the directory, which the next one chains to. A newest digest that
/// cannot be read, or that the configured key did not sign as it reads now, stops the start:
/// chaining to it would hide that it was damaged.
fn newest(config: &DigestConfig) -> Result<Option<Link>, String> {
    let listed = super::list(&config.dir)
        .map_err(|e| format!("cannot list digests in {}: {e}", config.dir.display()))?;
    let Some((seq, path)) = listed.last() else {
        return Ok(None);
    };
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let bad = |why: String| {
        format!(
            "the newest digest {} {why}; move it aside (keep it for the audit) to start a new \
             digest chain",
            path.display()
        )
    };
    let (digest, body, signature) = super::open(&text).map_err(bad)?;
    if digest.digest_seq != *seq {
        return Err(bad(format!("says it is digest {}", digest.digest_seq)));
    }
    let public = config.signer.public_key();
    if digest.key_fingerprint == public.fingerprint() {
        let verified = unb64(&signature).is_some_and(|s| public.verify(body.as_bytes(), &s));
        if !verified {
            return Err(bad("does not verify with the configured key".into()));
        }
    } else {
        tracing::info!(previous = %digest.key_fingerprint, now = %public.fingerprint(), "the digest key changed; the digest chain continues with the new key");
    }
    Ok(Some(Link {
        seq: digest.digest_seq,
        name: file_name_of(path),
        signature,
        end: digest.end,
    }))
}

fn file_name_of(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

fn create_dir(dir: &Path) -> Result<(), String> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| format!("cannot create the digest directory {}: {e}", dir.display()))
}

/// Writes `text` to `dir/name` so that the file is either absent or complete (mode 0600).
fn write_atomically(dir: &Path, name: &str, text: &str) -> Result<(), String> {
    use std::os::unix::fs::OpenOptionsExt;
    let target = dir.join(name);
    let tmp: PathBuf = dir.join(format!(".{name}.tmp"));
    let io = |e: std::io::Error| format!("{}: {e}", target.display());
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(io)?;
    file.write_all(text.as_bytes()).map_err(io)?;
    file.sync_all().map_err(io)?;
    drop(file);
    std::fs::rename(&tmp, &target).map_err(io)?;
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io)?;
    Ok(())
}
