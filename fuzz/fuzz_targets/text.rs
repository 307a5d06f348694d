//! Workerman Text (String and bytes lines) in arbitrary chunks.
#![no_main]

use libfuzzer_sys::fuzz_target;
use lubdub_frame::{Decoded, Protocol};
use lubdub_fuzz::{feed_both, split_input};
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
        // The consumed bytes are the line plus its terminator.
        let raw = &stream[pos..pos + consumed];
        assert!(raw.starts_with(line));
        assert_eq!(raw.last(), Some(&b'\n'));
        assert!(consumed - line.len() <= 2);
        pos += consumed;
        if line.last() != Some(&b'\r') {
            let mut again = Vec::new();
            if bytes.encode(line, &mut again).is_ok() {
                assert_eq!(
                    bytes.clone().decode(&again).unwrap(),
                    Decoded::Message {
                        msg: line.clone(),
                        consumed: again.len()
                    }
                );
            }
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
        assert_eq!(fed_text.error_kind(), Some("InvalidUtf8"));
    }
});
