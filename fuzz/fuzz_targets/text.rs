//! Workerman Text (String and bytes lines) in arbitrary chunks.
#![no_main]

use libfuzzer_sys::fuzz_target;
use lubdub_fuzz::{feed_both, split_input};
use lubdub_protocol::{Codec, Decoded, ProtocolError, Session};
use lubdub_text::{Text, TextBytes};

fuzz_target!(|data: &[u8]| {
    let Some((&m, rest)) = data.split_first() else {
        return;
    };
    let max = match m {
        0 => usize::MAX,
        255 => lubdub_text::DEFAULT_MAX_LENGTH,
        m => usize::from(m),
    };
    let (cuts, stream) = split_input(rest);

    let bytes = TextBytes::with_max_length(max);
    let fed = feed_both(&bytes, stream, &cuts);
    let mut pos = 0;
    for (line, consumed) in &fed.msgs {
        assert!(*consumed <= max, "line of {consumed} bytes over max {max}");
        assert!(!line.contains(&b'\n'));
        // The consumed bytes are the line, then every `\r` Workerman's
        // rtrim($buffer, "\r\n") strips, then the `\n`.
        let raw = &stream[pos..pos + consumed];
        assert!(raw.starts_with(line));
        let (terminator, tail) = raw[line.len()..].split_last().expect("a terminator");
        assert_eq!(*terminator, b'\n');
        assert!(tail.iter().all(|&b| b == b'\r'), "{raw:02X?}");
        assert_ne!(line.last(), Some(&b'\r'), "a trailing \\r was kept");
        pos += consumed;
        // So every decoded line survives a round trip.
        let mut again = Vec::new();
        if bytes.encode(line, &mut again).is_ok() {
            assert_eq!(
                Session::new(bytes.clone()).decode(&again).unwrap(),
                Decoded::Message {
                    msg: line.clone(),
                    consumed: again.len()
                }
            );
        }
    }

    let text = Text::with_max_length(max);
    let fed_text = feed_both(&text, stream, &cuts);
    // Text yields the same lines as TextBytes while they are UTF-8.
    for ((s, c1), (b, c2)) in fed_text.msgs.iter().zip(&fed.msgs) {
        assert_eq!(s.as_bytes(), &b[..]);
        assert_eq!(c1, c2);
    }
    assert!(fed_text.msgs.len() <= fed.msgs.len());
    if fed_text.msgs.len() < fed.msgs.len() {
        // It stopped at the first line that is not UTF-8, and says where
        // in that line the invalid bytes start.
        let (bad, _) = &fed.msgs[fed_text.msgs.len()];
        let valid_up_to = std::str::from_utf8(bad)
            .expect_err("Text stopped at a UTF-8 line")
            .valid_up_to();
        match &fed_text.error {
            Some(ProtocolError::InvalidData { expected, offset }) => {
                assert_eq!(*expected, "UTF-8");
                assert_eq!(*offset, valid_up_to);
            }
            other => panic!("Text stopped early with {other:?}"),
        }
    }
});
