//! Per-connection deadlines hyper does not give: a request head must arrive within the header
//! timeout once its first byte is seen (slow-loris), and an idle keep-alive connection lives
//! for the idle timeout (longer than an NLB's 350 s). Requests being processed are not timed
//! here; the router bounds body reads itself.

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stage {
    /// Between requests: the idle deadline applies.
    Idle,
    /// Bytes of a request head have arrived: the header deadline applies.
    Head,
    /// A request is being served.
    Busy,
}

/// The stage of a connection, shared between its IO and its request handler.
#[derive(Clone, Debug)]
pub struct Phase(Arc<Mutex<(Stage, Instant)>>);

impl Phase {
    fn new() -> Self {
        Phase(Arc::new(Mutex::new((Stage::Idle, Instant::now()))))
    }

    fn set(&self, stage: Stage) {
        if let Ok(mut s) = self.0.lock() {
            *s = (stage, Instant::now());
        }
    }

    fn get(&self) -> (Stage, Instant) {
        self.0
            .lock()
            .map(|s| *s)
            .unwrap_or((Stage::Busy, Instant::now()))
    }

    /// Called when a request's head has been parsed and handling starts.
    pub fn begin_request(&self) {
        self.set(Stage::Busy);
    }

    /// Called when the response has been produced.
    pub fn end_request(&self) {
        self.set(Stage::Idle);
    }
}

/// An IO stream that fails reads with `TimedOut` when the connection's deadline passes.
#[derive(Debug)]
pub struct TimedIo<I> {
    io: I,
    phase: Phase,
    header_timeout: Duration,
    idle_timeout: Duration,
    sleep: Pin<Box<Sleep>>,
}

impl<I> TimedIo<I> {
    pub fn new(io: I, header_timeout: Duration, idle_timeout: Duration) -> (Self, Phase) {
        let phase = Phase::new();
        let sleep = Box::pin(tokio::time::sleep(idle_timeout));
        (
            TimedIo {
                io,
                phase: phase.clone(),
                header_timeout,
                idle_timeout,
                sleep,
            },
            phase,
        )
    }

    fn deadline(&self) -> Option<(Instant, &'static str)> {
        match self.phase.get() {
            (Stage::Idle, since) => Some((since + self.idle_timeout, "idle timeout")),
            (Stage::Head, since) => Some((
                since + self.header_timeout,
                "request head not received in time",
            )),
            (Stage::Busy, _) => None,
        }
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for TimedIo<I> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        match Pin::new(&mut this.io).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if buf.filled().len() > before && this.phase.get().0 == Stage::Idle {
                    this.phase.set(Stage::Head);
                }
                return Poll::Ready(Ok(()));
            }
            Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
            Poll::Pending => {}
        }
        if let Some((deadline, why)) = this.deadline() {
            if this.sleep.deadline() != deadline {
                this.sleep.as_mut().reset(deadline);
            }
            if this.sleep.as_mut().poll(cx).is_ready() {
                return Poll::Ready(Err(io::Error::new(io::ErrorKind::TimedOut, why)));
            }
        }
        Poll::Pending
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for TimedIo<I> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}
