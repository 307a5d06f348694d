//! [`MessageBuf`]: a message being reassembled from frames (or inflated),
//! in segments of at most [`SEGMENT`] bytes.
//!
//! A message that arrives over many reads is never moved: one contiguous
//! buffer would be reallocated as it grows, each move leaving the old
//! buffer to the allocator, which keeps it resident (glibc does, for reuse)
//! and fragmented. Measured with 1,000 peers each sending most of a 10 MiB
//! message against a 256 MiB budget, that garbage took the server to 480
//! MiB of RSS with the budget satisfied. In segments, a message grows by
//! allocations of one size that other connections reuse when it is freed;
//! only the last segment grows (by doubling, up to [`SEGMENT`]), so a small
//! message costs what it did in one `Vec`. The segments are joined once,
//! when the message is whole ([`MessageBuf::into_vec`]).
//!
//! Text is checked as UTF-8 as it arrives (invalid bytes fail at once), and
//! a segment is sealed on a code point boundary, so no code point spans two.

use lubdub_protocol::ProtocolError;

use crate::frame::apply_mask;
use crate::utf8::{invalid_utf8, Utf8Validator};

/// The size of a sealed segment (the last one grows up to it).
pub(crate) const SEGMENT: usize = 64 * 1024;

/// A message being reassembled. See the [module docs](self).
#[derive(Debug, Default)]
pub(crate) struct MessageBuf {
    /// Full segments, in order.
    sealed: Vec<Vec<u8>>,
    /// Bytes in `sealed`.
    sealed_len: usize,
    /// The last segment.
    tail: Vec<u8>,
    /// Text: how far `tail` is known to be valid UTF-8.
    utf8: Option<Utf8Validator>,
}

impl MessageBuf {
    /// An empty message; `text` messages are checked as UTF-8. `first`
    /// bytes are reserved (what has arrived of the first frame).
    pub(crate) fn new(text: bool, first: usize) -> Self {
        MessageBuf {
            sealed: Vec::new(),
            sealed_len: 0,
            tail: Vec::with_capacity(first.min(SEGMENT)),
            utf8: text.then(Utf8Validator::default),
        }
    }

    /// The bytes of the message so far.
    pub(crate) fn len(&self) -> usize {
        self.sealed_len + self.tail.len()
    }

    /// The bytes it holds: the sealed segments and the last one's
    /// capacity (which never goes past the `end` given to
    /// [`append`](Self::append)).
    pub(crate) fn held(&self) -> usize {
        self.sealed_len + self.tail.capacity()
    }

    /// Appends `bytes` XORed with `mask` (a key and the phase of
    /// `bytes[0]`), if given. The last segment grows by doubling, but not
    /// past `end` bytes of message (the most it may hold), nor past
    /// [`SEGMENT`]; text is checked as it arrives.
    pub(crate) fn append(
        &mut self,
        mut bytes: &[u8],
        mask: Option<([u8; 4], usize)>,
        end: usize,
    ) -> Result<(), ProtocolError> {
        let mut phase = mask.map_or(0, |(_, p)| p);
        while !bytes.is_empty() {
            if self.tail.len() == SEGMENT {
                self.seal()?;
            }
            let room = SEGMENT - self.tail.len();
            let take = bytes.len().min(room);
            if self.tail.len() + take > self.tail.capacity() {
                let most = SEGMENT.min(end.saturating_sub(self.sealed_len));
                let target = (self.tail.capacity() * 2)
                    .max(1024)
                    .min(most)
                    .max(self.tail.len() + take);
                self.tail.reserve_exact(target - self.tail.len());
            }
            let start = self.tail.len();
            self.tail.extend_from_slice(&bytes[..take]);
            if let Some((key, _)) = mask {
                apply_mask(&mut self.tail[start..], key, phase);
                phase = (phase + take) % 4;
            }
            bytes = &bytes[take..];
            self.check_utf8(false)?;
        }
        Ok(())
    }

    /// The message is whole: a truncated code point at its end fails too.
    pub(crate) fn finish_utf8(&mut self) -> Result<(), ProtocolError> {
        self.check_utf8(true)
    }

    /// The last `n` bytes (at most [`SEGMENT`] - 3), oldest first, as at
    /// most two slices.
    pub(crate) fn last(&self, n: usize) -> (&[u8], &[u8]) {
        let n = n.min(self.len());
        let from_tail = n.min(self.tail.len());
        let newer = &self.tail[self.tail.len() - from_tail..];
        let older = match self.sealed.last() {
            Some(seg) if n > from_tail => {
                let k = (n - from_tail).min(seg.len());
                &seg[seg.len() - k..]
            }
            _ => &[],
        };
        (older, newer)
    }

    /// The whole message in one buffer (the last segment itself if there
    /// is only one).
    pub(crate) fn into_vec(self) -> Vec<u8> {
        if self.sealed.is_empty() {
            return self.tail;
        }
        let mut out = Vec::with_capacity(self.len());
        for seg in &self.sealed {
            out.extend_from_slice(seg);
        }
        out.extend_from_slice(&self.tail);
        out
    }

    /// Checks what `tail` holds that was not checked yet (text only).
    fn check_utf8(&mut self, complete: bool) -> Result<(), ProtocolError> {
        let Some(v) = self.utf8.as_mut() else {
            return Ok(());
        };
        let base = self.sealed_len;
        v.feed(&self.tail, complete).map_err(|e| match e {
            ProtocolError::InvalidData { offset, .. } => invalid_utf8(base + offset),
            other => other,
        })
    }

    /// Moves the full last segment to `sealed`, keeping an incomplete code
    /// point at its end (text) for the next one.
    fn seal(&mut self) -> Result<(), ProtocolError> {
        let keep = match self.utf8.as_mut() {
            Some(v) => {
                let valid = v.valid_up_to();
                self.tail.len() - valid
            }
            None => 0,
        };
        let mut next = Vec::with_capacity(1024);
        next.extend_from_slice(&self.tail[self.tail.len() - keep..]);
        self.tail.truncate(self.tail.len() - keep);
        let full = std::mem::replace(&mut self.tail, next);
        self.sealed_len += full.len();
        self.sealed.push(full);
        if let Some(v) = self.utf8.as_mut() {
            *v = Utf8Validator::default();
        }
        self.check_utf8(false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_large_message_is_sealed_in_segments_and_joined_whole() {
        let data: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        let mut m = MessageBuf::new(false, 10);
        for piece in data.chunks(7000) {
            m.append(piece, None, usize::MAX).unwrap();
            assert!(m.tail.capacity() <= SEGMENT);
            assert!(m.sealed.iter().all(|s| s.len() == SEGMENT));
        }
        assert_eq!(m.len(), data.len());
        assert_eq!(m.sealed.len(), 300_000 / SEGMENT);
        let (older, newer) = m.last(40_000);
        assert_eq!([older, newer].concat(), &data[data.len() - 40_000..]);
        assert_eq!(m.into_vec(), data);
    }

    #[test]
    fn a_small_message_grows_within_its_end_and_is_not_copied() {
        let mut m = MessageBuf::new(false, 0);
        m.append(&[1; 3000], None, 5000).unwrap();
        m.append(&[2; 2000], None, 5000).unwrap();
        assert_eq!(m.tail.capacity(), 5000, "never past the message's end");
        let ptr = m.tail.as_ptr();
        let v = m.into_vec();
        assert_eq!((v.len(), v.as_ptr()), (5000, ptr));
    }

    #[test]
    fn masked_pieces_unmask_at_their_phase_across_segments() {
        let key = [1, 2, 3, 4];
        let plain: Vec<u8> = (0..200_000u32).map(|i| (i % 253) as u8).collect();
        let masked: Vec<u8> = plain
            .iter()
            .enumerate()
            .map(|(i, b)| b ^ key[i % 4])
            .collect();
        let mut m = MessageBuf::new(false, 0);
        let mut at = 0;
        for piece in masked.chunks(9_999) {
            m.append(piece, Some((key, at % 4)), usize::MAX).unwrap();
            at += piece.len();
        }
        assert_eq!(m.into_vec(), plain);
    }

    #[test]
    fn text_is_sealed_on_code_point_boundaries_and_checked_as_it_arrives() {
        let text = "ü€𝄞".repeat(30_000);
        for step in [1000, 4097, 65_535] {
            let mut m = MessageBuf::new(true, 0);
            for piece in text.as_bytes().chunks(step) {
                m.append(piece, None, usize::MAX).unwrap();
            }
            m.finish_utf8().unwrap();
            for seg in &m.sealed {
                assert!(std::str::from_utf8(seg).is_ok());
            }
            assert_eq!(m.into_vec(), text.as_bytes());
        }
        let mut m = MessageBuf::new(true, 0);
        m.append(&[b'a'; 70_000], None, usize::MAX).unwrap();
        let err = m.append(b"\xff", None, usize::MAX).unwrap_err();
        assert!(matches!(
            err,
            ProtocolError::InvalidData { offset: 70_000, .. }
        ));
        let mut m = MessageBuf::new(true, 0);
        m.append("a€".as_bytes().split_at(3).0, None, usize::MAX)
            .unwrap();
        assert!(
            m.finish_utf8().is_err(),
            "a truncated code point at the end"
        );
    }
}
