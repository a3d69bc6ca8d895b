//! Line framing with size caps, applied before any grammar parsing.
//!
//! RFC 1939 section 3 ends every command with CRLF; RFC 2449 section 4 limits command
//! lines to 255 octets. We accept a bare LF too (some clients send one) and let the
//! operator choose the caps: one for ordinary commands and a larger one for `AUTH` lines
//! carrying an initial response and for SASL continuation lines (RFC 5034 section 4),
//! since OAuth bearer tokens run to several kilobytes.

use memchr::memchr;

/// What the framer yields.
#[derive(Debug, PartialEq, Eq)]
pub enum Frame {
    /// One line without its CRLF or LF.
    Line(Vec<u8>),
    /// A line went over its cap. The rest of it, up to its line end, is discarded
    /// without being buffered.
    TooLong,
}

/// Splits a byte stream into lines, never buffering more than one capped line.
#[derive(Debug)]
pub struct LineFramer {
    buf: Vec<u8>,
    /// Offset of the first unconsumed byte in `buf`.
    start: usize,
    command_limit: usize,
    auth_limit: usize,
    /// Inside an over-long line: drop bytes until the next LF.
    discarding: bool,
}

impl LineFramer {
    /// `command_limit` and `auth_limit` count the line with its CRLF.
    pub fn new(command_limit: usize, auth_limit: usize) -> Self {
        Self {
            buf: Vec::with_capacity(1024),
            start: 0,
            command_limit: command_limit.max(8),
            auth_limit: auth_limit.max(command_limit).max(8),
            discarding: false,
        }
    }

    /// Appends bytes read from the connection.
    pub fn push(&mut self, data: &[u8]) {
        if self.start > 0 && self.start == self.buf.len() {
            self.buf.clear();
            self.start = 0;
        }
        self.buf.extend_from_slice(data);
    }

    /// Whether unconsumed bytes remain (a partial line or more lines).
    pub fn has_buffered(&self) -> bool {
        self.start < self.buf.len()
    }

    /// Drops everything buffered. Used when TLS starts: bytes a client pipelined after
    /// STLS arrived in plaintext and must never be read as commands (RFC 2595 section 4,
    /// the STARTTLS command-injection class of bug).
    pub fn clear(&mut self) {
        self.buf.clear();
        self.start = 0;
        self.discarding = false;
    }

    /// The next complete line, if any. `sasl_response` selects the larger cap for a SASL
    /// continuation line.
    pub fn next_frame(&mut self, sasl_response: bool) -> Option<Frame> {
        loop {
            let pending = &self.buf[self.start..];
            if pending.is_empty() {
                return None;
            }
            let newline = memchr(b'\n', pending);
            if self.discarding {
                match newline {
                    Some(i) => {
                        self.start += i + 1;
                        self.discarding = false;
                        continue;
                    }
                    None => {
                        self.buf.clear();
                        self.start = 0;
                        return None;
                    }
                }
            }
            let limit = if sasl_response || starts_with_auth(pending) {
                self.auth_limit
            } else {
                self.command_limit
            };
            return match newline {
                Some(i) if i < limit => {
                    let mut line = &pending[..i];
                    if let Some(stripped) = line.strip_suffix(b"\r") {
                        line = stripped;
                    }
                    let line = line.to_vec();
                    self.start += i + 1;
                    self.compact();
                    Some(Frame::Line(line))
                }
                Some(i) => {
                    self.start += i + 1;
                    self.compact();
                    Some(Frame::TooLong)
                }
                None if pending.len() >= limit => {
                    self.buf.clear();
                    self.start = 0;
                    self.discarding = true;
                    Some(Frame::TooLong)
                }
                None => None,
            };
        }
    }

    fn compact(&mut self) {
        if self.start == self.buf.len() {
            self.buf.clear();
            self.start = 0;
            // After a long AUTH line, give the memory back while the session idles.
            if self.buf.capacity() > 16 * 1024 {
                self.buf.shrink_to(1024);
            }
        } else if self.start > 64 * 1024 {
            self.buf.drain(..self.start);
            self.start = 0;
        }
    }
}

/// Lines that carry a credential get the larger cap: `AUTH` with an initial response,
/// and `PASS`, whose passphrase may run to 64 characters and more (NIST SP 800-63B asks
/// that long passphrases be allowed; in UTF-8 that outgrows 255 octets).
fn starts_with_auth(line: &[u8]) -> bool {
    line.len() >= 5
        && (line[..4].eq_ignore_ascii_case(b"AUTH") || line[..4].eq_ignore_ascii_case(b"PASS"))
        && line[4] == b' '
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(f: &mut LineFramer) -> Vec<Frame> {
        std::iter::from_fn(|| f.next_frame(false)).collect()
    }

    #[test]
    fn splits_crlf_and_lf_lines_across_pushes() {
        let mut f = LineFramer::new(64, 256);
        f.push(b"USER a\r\nST");
        assert_eq!(lines(&mut f), vec![Frame::Line(b"USER a".to_vec())]);
        f.push(b"AT\nNOOP\r");
        assert_eq!(lines(&mut f), vec![Frame::Line(b"STAT".to_vec())]);
        f.push(b"\n");
        assert_eq!(lines(&mut f), vec![Frame::Line(b"NOOP".to_vec())]);
        assert!(!f.has_buffered());
    }

    #[test]
    fn over_long_line_is_reported_once_and_skipped() {
        let mut f = LineFramer::new(16, 64);
        f.push(&[b'x'; 40]);
        assert_eq!(f.next_frame(false), Some(Frame::TooLong));
        assert_eq!(f.next_frame(false), None);
        f.push(&[b'y'; 1000]);
        assert_eq!(f.next_frame(false), None);
        f.push(b"zz\r\nNOOP\r\n");
        assert_eq!(lines(&mut f), vec![Frame::Line(b"NOOP".to_vec())]);
    }

    #[test]
    fn complete_over_long_line_in_one_push() {
        let mut f = LineFramer::new(16, 64);
        f.push(b"NOOP xxxxxxxxxxxxxxxxxxxxxxxx\r\nSTAT\r\n");
        assert_eq!(
            lines(&mut f),
            vec![Frame::TooLong, Frame::Line(b"STAT".to_vec())]
        );
    }

    #[test]
    fn auth_lines_and_sasl_responses_get_the_larger_cap() {
        let mut f = LineFramer::new(16, 64);
        let auth = format!("auth PLAIN {}\r\n", "A".repeat(40));
        f.push(auth.as_bytes());
        assert!(matches!(f.next_frame(false), Some(Frame::Line(_))));
        f.push(format!("{}\r\n", "B".repeat(40)).as_bytes());
        assert!(matches!(f.next_frame(true), Some(Frame::Line(_))));
        f.push(format!("{}\r\n", "B".repeat(40)).as_bytes());
        assert_eq!(f.next_frame(false), Some(Frame::TooLong));
    }

    #[test]
    fn clear_drops_pipelined_bytes() {
        let mut f = LineFramer::new(64, 64);
        f.push(b"STLS\r\nCAPA\r\n");
        assert_eq!(f.next_frame(false), Some(Frame::Line(b"STLS".to_vec())));
        f.clear();
        assert_eq!(f.next_frame(false), None);
    }
}
