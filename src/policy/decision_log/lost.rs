//! Lost lines and the evidence of their loss. In fail-open mode a line that cannot be written
//! (the queue to the writer is full, or the file stayed unwritable until the writer's queue
//! overflowed) is dropped and counted. Dropped lines were never sealed, so the chain alone
//! cannot show them: once the writer can write again it seals a `lines_lost` line, before any
//! further decision line, with how many were lost, when, and why:
//!
//! ```text
//! {"event":"lines_lost","seq":120,"timestamp":"...","labels":{"id":"...","version":"..."},
//!  "reason":"queue_full","count":17,"first_lost_at":"...","last_lost_at":"...",
//!  "prev_file":null,"prev_hash":"<hex>","hash":"<hex>"}
//! ```
//!
//! One line per reason per episode; the counts of every `lines_lost` line add up to
//! `keygate_decision_log_lines_lost_total`, except for lines lost at shutdown while the file
//! could not be written (nothing can be written then) or offered after the log closed.

use std::time::SystemTime;

use serde::Serialize;

use super::line::Position;
use super::timestamp;

/// What the `event` member of a lines-lost line says.
pub const EVENT: &str = "lines_lost";

/// Why lines were lost.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LossReason {
    /// The queue to the writer was full when the line was offered.
    QueueFull,
    /// The file could not be written for so long that the writer's queue overflowed (or it
    /// was closing).
    Unwritable,
}

impl LossReason {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            LossReason::QueueFull => "queue_full",
            LossReason::Unwritable => "unwritable",
        }
    }
}

/// Lines lost for one reason, not yet recorded in the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Span {
    pub reason: LossReason,
    pub count: u64,
    pub first: SystemTime,
    pub last: SystemTime,
}

/// Losses not yet recorded, by reason (at most one span each).
#[derive(Debug, Default)]
pub(crate) struct Losses {
    spans: Vec<Span>,
}

impl Losses {
    /// Adds `count` lines lost at `at` for `reason`.
    pub(crate) fn add(&mut self, reason: LossReason, count: u64, at: SystemTime) {
        self.merge(Span {
            reason,
            count,
            first: at,
            last: at,
        });
    }

    /// Adds a span (merged into the one of its reason).
    pub(crate) fn merge(&mut self, span: Span) {
        if span.count == 0 {
            return;
        }
        match self.spans.iter_mut().find(|s| s.reason == span.reason) {
            Some(s) => {
                s.count += span.count;
                s.first = s.first.min(span.first);
                s.last = s.last.max(span.last);
            }
            None => self.spans.push(span),
        }
    }

    pub(crate) fn take(&mut self) -> Vec<Span> {
        std::mem::take(&mut self.spans)
    }

    pub(crate) fn spans(&self) -> &[Span] {
        &self.spans
    }

    /// Drops the first `n` spans (they were written).
    pub(crate) fn written(&mut self, n: usize) {
        self.spans.drain(..n.min(self.spans.len()));
    }
}

#[derive(Serialize)]
struct Members {
    reason: &'static str,
    count: u64,
    first_lost_at: String,
    last_lost_at: String,
}

/// The lines-lost line's body (JSON object without the hash member), written at `now`.
pub(crate) fn body(span: &Span, instance_id: &str, at: &Position<'_>, now: SystemTime) -> String {
    let members = Members {
        reason: span.reason.as_str(),
        count: span.count,
        first_lost_at: timestamp(span.first),
        last_lost_at: timestamp(span.last),
    };
    super::evidence::body(EVENT, members, instance_id, at, now)
}

/// How many lines a lines-lost line records, when `line` (parsed) is one.
pub fn count_in(line: &serde_json::Value) -> Option<u64> {
    if line.get("event")?.as_str()? != EVENT {
        return None;
    }
    line.get("count")?.as_u64()
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn spans_merge_by_reason_and_keep_the_time_span() {
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000);
        let mut losses = Losses::default();
        losses.add(LossReason::QueueFull, 2, t0 + Duration::from_secs(5));
        losses.add(LossReason::Unwritable, 1, t0);
        losses.add(LossReason::QueueFull, 3, t0);
        losses.add(LossReason::QueueFull, 0, t0 + Duration::from_secs(99));
        let spans = losses.take();
        assert_eq!(spans.len(), 2);
        assert_eq!(
            spans[0],
            Span {
                reason: LossReason::QueueFull,
                count: 5,
                first: t0,
                last: t0 + Duration::from_secs(5),
            }
        );
        assert_eq!(
            (spans[1].reason, spans[1].count),
            (LossReason::Unwritable, 1)
        );
        assert!(losses.take().is_empty());
    }

    #[test]
    fn the_body_names_count_span_and_reason() {
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000);
        let span = Span {
            reason: LossReason::Unwritable,
            count: 7,
            first: t0,
            last: t0 + Duration::from_secs(2),
        };
        let at = Position {
            seq: 12,
            prev_hash: "ab",
            prev_file: None,
        };
        let body: serde_json::Value =
            serde_json::from_str(&body(&span, "kg-1", &at, t0 + Duration::from_secs(3))).unwrap();
        assert_eq!(body["event"], EVENT);
        assert_eq!(body["reason"], "unwritable");
        assert_eq!(body["count"], 7);
        assert_eq!(body["seq"], 12);
        assert_eq!(body["first_lost_at"], "1970-01-01T00:16:40Z");
        assert_eq!(body["last_lost_at"], "1970-01-01T00:16:42Z");
        assert_eq!(count_in(&body), Some(7));
        assert_eq!(count_in(&serde_json::json!({"seq": 1, "count": 3})), None);
    }
}
