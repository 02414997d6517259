//! One upload's body: a gzip-compressed JSON array of events, as OPA's collectors take it,
//! no larger than `upload_size_limit_bytes` compressed. Each element is a line's exact bytes,
//! one per line of the array (`[\n` line `,\n` line ... `\n]`), so a receiver recovers the
//! lines byte for byte, and `keygate audit verify` checks its copy, by splitting the
//! decompressed body on newlines. As OPA does, the number of events per body adapts to the
//! compression ratio seen; an event too large for the limit on its own is dropped (counted).

use std::collections::VecDeque;
use std::io::Write as _;

use flate2::Compression;
use flate2::write::GzEncoder;

use super::cursor::Line;

/// The next body to send.
#[derive(Debug)]
pub(super) enum Chunk {
    /// The first `count` buffered lines, gzip'd.
    Body { count: usize, gzip: Vec<u8> },
    /// The first buffered line alone is over the limit.
    TooLarge,
}

/// Packs buffered lines into bodies under the limit.
#[derive(Debug)]
pub(super) struct Batcher {
    limit: usize,
    /// Uncompressed bytes per compressed byte seen so far (started low, as OPA does).
    ratio: f64,
}

impl Batcher {
    pub fn new(limit: usize) -> Self {
        Self { limit, ratio: 2.0 }
    }

    /// The body for the front of `lines` (which must not be empty).
    pub fn next(&mut self, lines: &VecDeque<Line>) -> Chunk {
        let mut target = (self.limit as f64 * self.ratio) as usize;
        loop {
            let count = fitting(lines, target);
            let gzip = body(lines.iter().take(count));
            if gzip.len() <= self.limit {
                let plain: usize = lines.iter().take(count).map(|l| l.text.len() + 2).sum();
                let seen = plain as f64 / gzip.len().max(1) as f64;
                // Aim a little under the limit next time; never trust one body too much.
                self.ratio = (seen * 0.9).clamp(1.0, 64.0);
                return Chunk::Body { count, gzip };
            }
            if count <= 1 {
                return Chunk::TooLarge;
            }
            let plain: usize = lines.iter().take(count).map(|l| l.text.len() + 2).sum();
            let shrunk = (plain as f64 * self.limit as f64 / gzip.len() as f64 * 0.9) as usize;
            let fewer = fitting(lines, shrunk).min(count - 1);
            target = lines.iter().take(fewer).map(|l| l.text.len() + 2).sum();
            self.ratio = (self.ratio * 0.8).max(1.0);
        }
    }
}

/// How many front lines fit in `target` uncompressed bytes (at least one).
fn fitting(lines: &VecDeque<Line>, target: usize) -> usize {
    let mut size = 3;
    let mut count = 0;
    for line in lines {
        size += line.text.len() + 2;
        if size > target && count > 0 {
            break;
        }
        count += 1;
    }
    count.max(1).min(lines.len())
}

/// `[\n` + lines joined by `,\n` + `\n]`, gzip'd.
pub(super) fn body<'a>(lines: impl Iterator<Item = &'a Line>) -> Vec<u8> {
    // Level 1: on a busy proxy the CPU matters more than the last 15% of size.
    let mut gz = GzEncoder::new(Vec::new(), Compression::fast());
    // Writing to a Vec cannot fail.
    let _ = gz.write_all(b"[\n");
    for (i, line) in lines.enumerate() {
        if i > 0 {
            let _ = gz.write_all(b",\n");
        }
        let _ = gz.write_all(&line.text);
    }
    let _ = gz.write_all(b"\n]");
    gz.finish().unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::super::cursor::Position;
    use super::*;
    use std::io::Read as _;

    fn line(n: u64, size: usize) -> Line {
        // Letters from a small generator: about as compressible as real events' ids.
        let mut x = n.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
        let pad: String = (0..size)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                char::from(b'a' + (x % 26) as u8)
            })
            .collect();
        Line {
            text: format!("{{\"seq\":{n},\"pad\":\"{pad}\"}}").into_bytes(),
            seq: n,
            end: Position {
                file: "d.log".into(),
                offset: 0,
                seq: n,
            },
        }
    }

    fn unzip(gzip: &[u8]) -> String {
        let mut text = String::new();
        flate2::read::GzDecoder::new(gzip)
            .read_to_string(&mut text)
            .unwrap();
        text
    }

    #[test]
    fn bodies_stay_under_the_limit_and_carry_exact_lines() {
        let lines: VecDeque<Line> = (1..=400).map(|n| line(n, 300)).collect();
        let mut b = Batcher::new(4096);
        let mut rest = lines.clone();
        let mut seen = Vec::new();
        while !rest.is_empty() {
            let Chunk::Body { count, gzip } = b.next(&rest) else {
                panic!("a 300-byte line fits in 4 KiB");
            };
            assert!(gzip.len() <= 4096, "{}", gzip.len());
            let text = unzip(&gzip);
            let array: Vec<serde_json::Value> = serde_json::from_str(&text).unwrap();
            assert_eq!(array.len(), count);
            let recovered: Vec<&str> = text
                .lines()
                .skip(1)
                .map(|l| l.trim_end_matches(','))
                .filter(|l| *l != "]")
                .collect();
            for (got, want) in recovered.iter().zip(rest.iter()) {
                assert_eq!(got.as_bytes(), want.text.as_slice());
            }
            seen.extend(rest.drain(..count).map(|l| l.seq));
        }
        assert_eq!(seen, (1..=400).collect::<Vec<_>>());
    }

    #[test]
    fn a_line_over_the_limit_alone_is_too_large() {
        let lines: VecDeque<Line> = [line(1, 20_000)].into_iter().collect();
        assert!(matches!(Batcher::new(1024).next(&lines), Chunk::TooLarge));
    }
}
