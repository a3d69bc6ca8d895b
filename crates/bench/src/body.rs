//! Streaming scanner for a multi-line POP3 response body (RFC 1939 §3): finds the
//! terminating `CRLF.CRLF` and counts dot-stuffed lines without copying the body.
//!
//! Only the three bytes `CRLF.` matter, and they occur once per line that starts with a
//! dot, so one `memmem` search per such line covers the whole body: no per-byte loop.
//! The scan starts on the CRLF that ends the `+OK` status line, so a first line that
//! starts with a dot and an empty body are found by the same search.

use memchr::memmem;

/// What the caller must do next.
#[derive(Debug, PartialEq, Eq)]
pub enum Step {
    /// Keep `buf[keep_from..]`, append more bytes and call [`BodyScan::scan`] again with
    /// the slice starting at `keep_from`.
    NeedMore { keep_from: usize },
    /// The body ended; the response's last byte is `buf[next - 1]`.
    Done { next: usize },
}

/// Counts for one body. `wire_octets` are the body's bytes as sent, dot-stuffing
/// included, terminator excluded (the CRLF of the last line is part of the body).
#[derive(Debug, Default)]
pub struct BodyScan {
    /// Offset of the current slice's first byte from the scan start.
    base: u64,
    pub wire_octets: u64,
    /// Lines that started with a stuffed dot (`..`); one octet each comes off on unstuffing.
    pub stuffed: u64,
    /// Lines that started with a single dot but were not the terminator: the server
    /// forgot to dot-stuff.
    pub unstuffed_dot_lines: u64,
}

impl BodyScan {
    pub fn new() -> Self {
        Self::default()
    }

    /// The body's length after un-stuffing (what LIST promises for RETR).
    pub fn octets(&self) -> u64 {
        self.wire_octets - self.stuffed
    }

    /// Scans `buf`, which must start with the CRLF that ends the status line on the first
    /// call and at the `keep_from` position returned last time afterwards.
    pub fn scan(&mut self, finder: &memmem::Finder<'_>, buf: &[u8]) -> Step {
        let mut cur = 0;
        loop {
            let Some(i) = finder.find(&buf[cur..]) else {
                // Keep two bytes: they may be the CRLF of a `CRLF.` split across reads.
                let keep_from = buf.len().saturating_sub(2).max(cur);
                return self.need_more(keep_from);
            };
            let p = cur + i;
            let Some(&c) = buf.get(p + 3) else {
                return self.need_more(p);
            };
            match c {
                b'.' => {
                    self.stuffed += 1;
                    cur = p + 3;
                }
                b'\r' => match buf.get(p + 4) {
                    None => return self.need_more(p),
                    Some(b'\n') => {
                        // `p + 2` ends the last line; the scan began two bytes before
                        // the body, so the body's wire length is `base + p`.
                        self.wire_octets = self.base + p as u64;
                        return Step::Done { next: p + 5 };
                    }
                    Some(_) => {
                        self.unstuffed_dot_lines += 1;
                        cur = p + 3;
                    }
                },
                _ => {
                    self.unstuffed_dot_lines += 1;
                    cur = p + 3;
                }
            }
        }
    }

    fn need_more(&mut self, keep_from: usize) -> Step {
        self.base += keep_from as u64;
        Step::NeedMore { keep_from }
    }
}

/// The finder for `CRLF.`; build once per connection.
pub fn finder() -> memmem::Finder<'static> {
    memmem::Finder::new(b"\r\n.")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `wire` (starting with the status line's CRLF) in chunks of `chunk` bytes.
    fn scan_chunked(wire: &[u8], chunk: usize) -> (BodyScan, usize) {
        let f = finder();
        let mut s = BodyScan::new();
        let mut buf: Vec<u8> = Vec::new();
        let mut fed = 0;
        let mut consumed = 0;
        loop {
            match s.scan(&f, &buf) {
                Step::Done { next } => return (s, consumed + next),
                Step::NeedMore { keep_from } => {
                    buf.drain(..keep_from);
                    consumed += keep_from;
                    assert!(fed < wire.len(), "ran out of input");
                    let n = chunk.min(wire.len() - fed);
                    buf.extend_from_slice(&wire[fed..fed + n]);
                    fed += n;
                }
            }
        }
    }

    fn stuff(body: &[u8]) -> Vec<u8> {
        let mut out = b"\r\n".to_vec();
        for line in body.split_inclusive(|&b| b == b'\n') {
            if line.starts_with(b".") {
                out.push(b'.');
            }
            out.extend_from_slice(line);
        }
        out.extend_from_slice(b".\r\n");
        out
    }

    #[test]
    fn every_chunking_gives_the_same_counts() {
        let bodies: [&[u8]; 6] = [
            b"",
            b"a\r\n",
            b".\r\n",
            b"..x\r\n.\r\nb\r\n",
            b"Subject: x\r\n\r\n.hidden\r\nline\r\n..\r\n.\r\n",
            b"\r\n\r\n.\r\n",
        ];
        for body in bodies {
            let mut wire = stuff(body);
            wire.extend_from_slice(b"+OK next");
            let end = wire.len() - 8;
            for chunk in 1..=wire.len() {
                let (s, next) = scan_chunked(&wire, chunk);
                assert_eq!(s.octets(), body.len() as u64, "body {body:?} chunk {chunk}");
                assert_eq!(next, end, "body {body:?} chunk {chunk}");
                assert_eq!(s.unstuffed_dot_lines, 0);
            }
        }
    }

    #[test]
    fn counts_lines_the_server_forgot_to_stuff() {
        let wire = b"\r\n.a\r\nb\r\n.\rc\r\n.\r\n";
        let (s, next) = scan_chunked(wire, 3);
        assert_eq!(s.unstuffed_dot_lines, 2);
        assert_eq!(next, wire.len());
        assert_eq!(s.wire_octets, 12);
    }
}
