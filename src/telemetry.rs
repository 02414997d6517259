//! Logging: structured lines on stderr, JSON by default, filtered by `RUST_LOG` (default
//! `info`). Request lines carry kmsRequestId, operation, key store, key and access key id.
//! Lines are written by a background thread so a request never waits on a write(2); the
//! queue blocks rather than drops when full, so no line is lost.

use tracing_appender::non_blocking::{NonBlocking, NonBlockingBuilder, WorkerGuard};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::MakeWriter;

/// The log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Json,
    Text,
}

/// Installs the process's log subscriber. Keep the guard until exit: dropping it flushes
/// the lines still queued. Calling it twice is harmless (the second call logs nowhere new).
pub fn init(format: LogFormat) -> WorkerGuard {
    let (writer, guard) = NonBlockingBuilder::default()
        .lossy(false)
        .thread_name("keygate-log")
        .finish(std::io::stderr());
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(Escaping(writer));
    let _ = match format {
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .try_init(),
        LogFormat::Text => builder.with_ansi(false).try_init(),
    };
    guard
}

/// Every log line with U+2028 and U+2029 escaped (see
/// [`escape_line_separators`](crate::sanitize::escape_line_separators)): a logged string
/// (a request id, a path, a peer's message) cannot split a line for readers that break on
/// Unicode line separators.
#[derive(Debug, Clone)]
struct Escaping(NonBlocking);

impl std::io::Write for Escaping {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .write_all(&crate::sanitize::escape_line_separators(buf))?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.0.flush()
    }
}

impl<'a> MakeWriter<'a> for Escaping {
    type Writer = Escaping;

    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}
