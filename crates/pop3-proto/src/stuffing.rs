//! Streaming message encoder for RETR and TOP (RFC 1939 section 3, "byte-stuffing").
//!
//! Maildir files end lines with LF or CRLF; POP3 sends CRLF lines, a line starting
//! with `.` gets one more `.` in front, and `.CRLF` ends the response. The encoder
//! works on chunks of any size, so a message of any length passes through in bounded
//! memory. For TOP it sends the headers, the blank line, then at most `n` body lines.
//!
//! Octet counts: bare LF becomes CRLF and existing CRLF stays, and a bare CR is sent as
//! it is. When the file does not end with a line ending the encoder completes the last
//! line with CRLF, since every line of a POP3 response ends with one. [`OctetCounter`]
//! counts exactly these octets, so STAT and LIST agree with what RETR sends.

use memchr::{memchr, memchr_iter};
use wide::u8x16;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Part {
    /// RETR: everything.
    Whole,
    /// TOP, still in the header section.
    Headers { body_lines: u64 },
    /// TOP, in the body with this many lines still to send.
    Body { remaining: u64 },
    /// TOP has sent all it should.
    Done,
}

/// The streaming encoder. Feed it chunks with [`DotStuffer::encode`], then call
/// [`DotStuffer::finish`].
#[derive(Debug, Clone)]
pub struct DotStuffer {
    part: Part,
    /// Bytes of the current line sent so far (a trailing CR included).
    line_len: u64,
    /// The last byte sent was a CR.
    prev_cr: bool,
}

impl DotStuffer {
    /// An encoder for RETR.
    pub fn retr() -> Self {
        Self::with_part(Part::Whole)
    }

    /// An encoder for `TOP msg n`.
    pub fn top(body_lines: u64) -> Self {
        Self::with_part(Part::Headers { body_lines })
    }

    fn with_part(part: Part) -> Self {
        Self {
            part,
            line_len: 0,
            prev_cr: false,
        }
    }

    /// True once TOP has sent all its lines: the caller may stop reading the file.
    pub fn is_done(&self) -> bool {
        self.part == Part::Done
    }

    /// Encodes one chunk of the message, appending to `out`.
    pub fn encode(&mut self, mut input: &[u8], out: &mut Vec<u8>) {
        if self.part == Part::Whole {
            self.encode_whole(input, out);
            return;
        }
        out.reserve(input.len() + input.len() / 32 + 8);
        while !input.is_empty() && self.part != Part::Done {
            if self.line_len == 0 && input[0] == b'.' {
                out.push(b'.');
            }
            match memchr(b'\n', input) {
                Some(i) => {
                    let content = &input[..i];
                    out.extend_from_slice(content);
                    let ends_with_cr = match content.last() {
                        Some(&b) => b == b'\r',
                        None => self.prev_cr,
                    };
                    if !ends_with_cr {
                        out.push(b'\r');
                    }
                    out.push(b'\n');
                    let total = self.line_len + content.len() as u64;
                    let empty = total == 0 || (total == 1 && ends_with_cr);
                    self.end_line(empty);
                    input = &input[i + 1..];
                }
                None => {
                    out.extend_from_slice(input);
                    self.line_len += input.len() as u64;
                    self.prev_cr = input[input.len() - 1] == b'\r';
                    input = &[];
                }
            }
        }
    }

    /// RETR: every line, so no line needs to be told apart; one pass finds the line
    /// ends (the common case, and the one whole messages take).
    fn encode_whole(&mut self, input: &[u8], out: &mut Vec<u8>) {
        let Some(&last) = input.last() else {
            return;
        };
        out.reserve(input.len() + input.len() / 32 + 8);
        if self.line_len == 0 && input[0] == b'.' {
            out.push(b'.');
        }
        let mut start = 0;
        for i in LineEnds::new(input) {
            let ends_with_cr = match i {
                0 => self.prev_cr,
                _ => input[i - 1] == b'\r',
            };
            out.extend_from_slice(&input[start..i]);
            if !ends_with_cr {
                out.push(b'\r');
            }
            out.push(b'\n');
            start = i + 1;
            if input.get(start) == Some(&b'.') {
                out.push(b'.');
            }
        }
        let rest = &input[start..];
        out.extend_from_slice(rest);
        if start > 0 {
            self.line_len = 0;
        }
        self.line_len += rest.len() as u64;
        self.prev_cr = if rest.is_empty() {
            false
        } else {
            last == b'\r'
        };
    }

    fn end_line(&mut self, empty: bool) {
        self.line_len = 0;
        self.prev_cr = false;
        self.part = match self.part {
            Part::Headers { body_lines } if empty => {
                if body_lines == 0 {
                    Part::Done
                } else {
                    Part::Body {
                        remaining: body_lines,
                    }
                }
            }
            Part::Body { remaining } if remaining <= 1 => Part::Done,
            Part::Body { remaining } => Part::Body {
                remaining: remaining - 1,
            },
            other => other,
        };
    }

    /// Ends the response: completes an unterminated last line and appends `.CRLF`.
    pub fn finish(self, out: &mut Vec<u8>) {
        if self.line_len > 0 && self.part != Part::Done {
            if !self.prev_cr {
                out.push(b'\r');
            }
            out.push(b'\n');
        }
        out.extend_from_slice(b".\r\n");
    }
}

/// The positions of every LF in a chunk, in order. 32 bytes at a time are compared at
/// once (SSE2 on x86-64, NEON on aarch64, through `wide`) and the newlines read off the
/// bit mask; the tail shorter than 32 bytes goes through memchr. On message text (lines
/// of ~80 bytes) this is about a quarter cheaper per megabyte than restarting memchr
/// after every line, which is most of RETR's encoding time (`examples/stuffbench.rs`).
struct LineEnds<'a> {
    blocks: std::slice::ChunksExact<'a, u8>,
    /// Offset of the block `mask` belongs to.
    base: usize,
    /// The LFs of that block not yet returned, one bit each.
    mask: u32,
    /// Once the blocks are done: the tail's offset and the memchr search over it.
    tail: Option<(usize, memchr::Memchr<'a>)>,
}

/// Bytes compared at once by [`LineEnds`].
const BLOCK: usize = 32;

impl<'a> LineEnds<'a> {
    fn new(input: &'a [u8]) -> Self {
        Self {
            blocks: input.chunks_exact(BLOCK),
            // The first block moves it to 0.
            base: 0usize.wrapping_sub(BLOCK),
            mask: 0,
            tail: None,
        }
    }

    /// One bit per LF in a block of [`BLOCK`] bytes.
    #[inline(always)]
    fn lf_mask(block: &[u8]) -> u32 {
        let lf = u8x16::splat(b'\n');
        let (lo, hi) = block.split_at(BLOCK / 2);
        let lo = u8x16::from(<[u8; 16]>::try_from(lo).expect("16 bytes"));
        let hi = u8x16::from(<[u8; 16]>::try_from(hi).expect("16 bytes"));
        (lo.cmp_eq(lf).move_mask() as u32 & 0xffff) | ((hi.cmp_eq(lf).move_mask() as u32) << 16)
    }
}

impl Iterator for LineEnds<'_> {
    type Item = usize;

    #[inline]
    fn next(&mut self) -> Option<usize> {
        loop {
            if self.mask != 0 {
                let i = self.base + self.mask.trailing_zeros() as usize;
                self.mask &= self.mask - 1;
                return Some(i);
            }
            if let Some((offset, search)) = &mut self.tail {
                return search.next().map(|i| *offset + i);
            }
            self.base = self.base.wrapping_add(BLOCK);
            match self.blocks.next() {
                Some(block) => self.mask = Self::lf_mask(block),
                None => {
                    let rest = self.blocks.remainder();
                    self.tail = Some((self.base, memchr_iter(b'\n', rest)));
                }
            }
        }
    }
}

/// Counts a message's POP3 size chunk by chunk: the octets RETR sends before
/// byte-stuffing and the terminating `.` line, which are the file's bytes with bare LF
/// made CRLF, plus the line end [`DotStuffer::finish`] adds to an unterminated last line.
#[derive(Debug, Clone, Default)]
pub struct OctetCounter {
    size: u64,
    last: Option<u8>,
}

impl OctetCounter {
    /// Counts one chunk.
    pub fn update(&mut self, chunk: &[u8]) {
        self.size += chunk.len() as u64;
        for lf in LineEnds::new(chunk) {
            let after_cr = match lf {
                0 => self.last == Some(b'\r'),
                i => chunk[i - 1] == b'\r',
            };
            if !after_cr {
                self.size += 1;
            }
        }
        if let Some(&b) = chunk.last() {
            self.last = Some(b);
        }
    }

    /// The size of everything counted.
    pub fn finish(&self) -> u64 {
        match self.last {
            None | Some(b'\n') => self.size,
            // A trailing bare CR becomes the start of the added CRLF.
            Some(b'\r') => self.size + 1,
            Some(_) => self.size + 2,
        }
    }
}

/// The POP3 octet count of a message held in memory.
pub fn crlf_size(message: &[u8]) -> u64 {
    let mut counter = OctetCounter::default();
    counter.update(message);
    counter.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn encode_chunks(mut s: DotStuffer, msg: &[u8], chunk: usize) -> Vec<u8> {
        let mut out = Vec::new();
        for c in msg.chunks(chunk.max(1)) {
            s.encode(c, &mut out);
        }
        s.finish(&mut out);
        out
    }

    /// What a client does: strip the terminator and undo the stuffing.
    fn unstuff(wire: &[u8]) -> Vec<u8> {
        assert!(wire.ends_with(b".\r\n"), "no terminator");
        let body = &wire[..wire.len() - 3];
        let mut out = Vec::new();
        for line in body.split_inclusive(|&b| b == b'\n') {
            assert!(line.ends_with(b"\r\n"), "line not CRLF: {line:?}");
            assert_ne!(line, b".\r\n", "unstuffed terminator inside");
            out.extend_from_slice(line.strip_prefix(b".").unwrap_or(line));
        }
        out
    }

    fn to_crlf(msg: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut prev = 0;
        for &b in msg {
            if b == b'\n' && prev != b'\r' {
                out.push(b'\r');
            }
            out.push(b);
            prev = b;
        }
        out
    }

    #[test]
    fn stuffs_leading_dots_and_converts_bare_lf() {
        let out = encode_chunks(DotStuffer::retr(), b"A: b\n\n.\n..x\r\nend", 3);
        assert_eq!(out, b"A: b\r\n\r\n..\r\n...x\r\nend\r\n.\r\n");
    }

    #[test]
    fn empty_message_is_just_the_terminator() {
        assert_eq!(encode_chunks(DotStuffer::retr(), b"", 4), b".\r\n");
    }

    #[test]
    fn top_sends_headers_blank_line_and_n_body_lines() {
        let msg = b"Subject: x\r\nFrom: y\r\n\r\nl1\r\nl2\r\n.l3\r\n";
        assert_eq!(
            encode_chunks(DotStuffer::top(0), msg, 5),
            b"Subject: x\r\nFrom: y\r\n\r\n.\r\n"
        );
        assert_eq!(
            encode_chunks(DotStuffer::top(1), msg, 1),
            b"Subject: x\r\nFrom: y\r\n\r\nl1\r\n.\r\n"
        );
        assert_eq!(
            encode_chunks(DotStuffer::top(10), msg, 7),
            b"Subject: x\r\nFrom: y\r\n\r\nl1\r\nl2\r\n..l3\r\n.\r\n"
        );
    }

    #[test]
    fn top_blank_line_split_across_chunks() {
        let msg = b"H: 1\r\n\r\nbody\r\n";
        for chunk in 1..msg.len() {
            assert_eq!(
                encode_chunks(DotStuffer::top(0), msg, chunk),
                b"H: 1\r\n\r\n.\r\n",
                "chunk {chunk}"
            );
        }
    }

    #[test]
    fn top_without_body_sends_whole_headers() {
        assert_eq!(
            encode_chunks(DotStuffer::top(3), b"H: 1\nH: 2", 2),
            b"H: 1\r\nH: 2\r\n.\r\n"
        );
    }

    proptest! {
        /// Property: the block-wise newline search finds exactly what memchr finds,
        /// wherever the LFs fall relative to the blocks (first and last byte of a
        /// block, several in one, none, in the tail).
        #[test]
        fn line_ends_are_memchrs(msg in proptest::collection::vec(
            prop::sample::select(vec![b'a', b'\n', 0xff, 0x8a, b'\r']), 0..300))
        {
            let found: Vec<usize> = LineEnds::new(&msg).collect();
            let expected: Vec<usize> = memchr_iter(b'\n', &msg).collect();
            prop_assert_eq!(found, expected);
        }

        /// Property: for any bytes and any chunking, un-stuffing what we send gives the
        /// message with CRLF line ends (plus CRLF if it lacked a final line end), and
        /// the count of those bytes is `crlf_size`.
        #[test]
        fn round_trip(msg in proptest::collection::vec(
            prop::sample::select(vec![b'a', b'.', b'\r', b'\n', 0xC3, b' ']), 0..400),
            chunk in 1usize..50)
        {
            let wire = encode_chunks(DotStuffer::retr(), &msg, chunk);
            let mut expected = to_crlf(&msg);
            if !expected.is_empty() && !expected.ends_with(b"\r\n") {
                // A trailing bare CR becomes the start of the added CRLF.
                if expected.ends_with(b"\r") { expected.push(b'\n'); } else { expected.extend_from_slice(b"\r\n"); }
            }
            prop_assert_eq!(crlf_size(&msg), expected.len() as u64);
            let mut counter = OctetCounter::default();
            for c in msg.chunks(chunk) { counter.update(c); }
            prop_assert_eq!(counter.finish(), expected.len() as u64);
            prop_assert_eq!(unstuff(&wire), expected);
        }

        #[test]
        fn chunking_never_changes_output(msg in proptest::collection::vec(any::<u8>(), 0..300),
            chunk in 1usize..40, n in 0u64..5)
        {
            prop_assert_eq!(encode_chunks(DotStuffer::retr(), &msg, chunk),
                encode_chunks(DotStuffer::retr(), &msg, msg.len().max(1)));
            prop_assert_eq!(encode_chunks(DotStuffer::top(n), &msg, chunk),
                encode_chunks(DotStuffer::top(n), &msg, msg.len().max(1)));
        }

        /// Property: RETR's one-pass encoder sends what the line-by-line one (TOP with
        /// no line limit) sends, for any bytes and chunking (chunks below, at and above
        /// the 32-byte blocks its newline search compares at once).
        #[test]
        fn whole_message_fast_path_matches_line_by_line(
            msg in proptest::collection::vec(
                prop::sample::select(vec![b'a', b'.', b'\r', b'\n', b'\n', 0xC3]), 0..1200),
            chunk in 1usize..300)
        {
            prop_assert_eq!(encode_chunks(DotStuffer::retr(), &msg, chunk),
                encode_chunks(DotStuffer::top(u64::MAX), &msg, chunk));
        }
    }
}
