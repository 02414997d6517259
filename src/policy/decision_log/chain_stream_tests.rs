//! The verifier reading a file as a stream: one bounded line at a time, every byte shown to
//! the tap.

use super::*;

fn chain(n: u64) -> Vec<String> {
    let mut prev = GENESIS.to_owned();
    (1..=n)
        .map(|seq| {
            let body = format!("{{\"seq\":{seq},\"prev_hash\":\"{prev}\"}}");
            let (line, hash) = seal(&prev, &body);
            prev = hash;
            line
        })
        .collect()
}

#[test]
fn an_endless_line_is_an_error_after_the_bound_not_an_allocation() {
    let lines = chain(1);
    let first = format!("{}\n", lines[0]);
    // Never ends: a verifier that read lines without a bound would not return.
    let endless = std::io::Read::chain(first.as_bytes(), std::io::repeat(b'x'));
    let mut v = Verifier::default();
    let err = v
        .verify_reader("log", std::io::BufReader::new(endless), &mut ())
        .unwrap_err();
    assert_eq!((err.file.as_str(), err.line), ("log", 2));
    assert!(err.reason.contains("longer than 16777216 bytes"), "{err}");
}

#[test]
fn lines_stream_with_their_bytes_and_the_file_span() {
    struct Seen(Vec<u8>);
    impl Tap for Seen {
        fn line(&mut self, _: u64, bytes: &[u8]) {
            self.0.extend_from_slice(bytes);
        }
    }
    let text: String = chain(3).iter().map(|l| format!("{l}\r\n")).collect();
    let mut seen = Seen(Vec::new());
    let mut v = Verifier::default();
    let span = v.verify_reader("log", text.as_bytes(), &mut seen).unwrap();
    assert_eq!((span.first_seq, span.lines), (Some(1), 3));
    assert_eq!(seen.0, text.as_bytes());
    let bad = [0xffu8, b'\n'];
    let err = Verifier::default()
        .verify_reader("log", &bad[..], &mut ())
        .unwrap_err();
    assert_eq!(err.line, 1);
}
