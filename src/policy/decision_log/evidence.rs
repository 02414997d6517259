//! The frame of the lines the log writes about itself (`retention`, `lines_lost`): the event's
//! name, its place in the chain and who wrote it, then the event's own members, then the link
//! to the line before. Decision lines have OPA's shape instead (`line.rs`).

use std::time::SystemTime;

use serde::Serialize;

use super::line::Position;
use super::timestamp;

#[derive(Serialize)]
struct Frame<'a, M: Serialize> {
    event: &'static str,
    seq: u64,
    timestamp: String,
    labels: Labels<'a>,
    #[serde(flatten)]
    members: M,
    prev_file: Option<&'a str>,
    prev_hash: &'a str,
}

#[derive(Serialize)]
struct Labels<'a> {
    id: &'a str,
    version: &'static str,
}

/// An evidence line's body (a JSON object without the hash member) for `event` at `at`,
/// written at `now` by instance `instance_id`, with the event's `members` between the labels
/// and the chain link.
pub(crate) fn body<M: Serialize>(
    event: &'static str,
    members: M,
    instance_id: &str,
    at: &Position<'_>,
    now: SystemTime,
) -> String {
    let frame = Frame {
        event,
        seq: at.seq,
        timestamp: timestamp(now),
        labels: Labels {
            id: instance_id,
            version: env!("CARGO_PKG_VERSION"),
        },
        members,
        prev_file: at.prev_file,
        prev_hash: at.prev_hash,
    };
    // The members are plain structs and strings, which always serialize; should one ever
    // not, the line still holds its event and its place in the chain.
    serde_json::to_string(&frame).unwrap_or_else(|_| {
        format!(
            "{{\"event\":\"{event}\",\"seq\":{},\"prev_hash\":\"{}\"}}",
            at.seq, at.prev_hash
        )
    })
}
