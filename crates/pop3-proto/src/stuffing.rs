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
        for i in memchr_iter(b'\n', input) {
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
        for lf in memchr::memchr_iter(b'\n', chunk) {
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
        /// no line limit) sends, for any bytes and chunking.
        #[test]
        fn whole_message_fast_path_matches_line_by_line(
            msg in proptest::collection::vec(
                prop::sample::select(vec![b'a', b'.', b'\r', b'\n', b'\n', 0xC3]), 0..400),
            chunk in 1usize..50)
        {
            prop_assert_eq!(encode_chunks(DotStuffer::retr(), &msg, chunk),
                encode_chunks(DotStuffer::top(u64::MAX), &msg, chunk));
        }
    }
}
