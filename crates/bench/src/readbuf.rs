//! The receive side of a connection: one buffer, lines found with `memchr`, multi-line
//! bodies counted in place (see [`crate::body`]), every read under a timeout.

use std::time::Duration;

use memchr::memmem;
use tokio::io::{AsyncRead, AsyncReadExt as _};
use tokio::time::timeout;

use crate::body::{BodyScan, Step};
use crate::conn::{Pop3Error, Result};

/// Longest line accepted from a server (status lines and listing lines are short).
const MAX_LINE: usize = 64 * 1024;

/// The connection's receive buffer: `buf[start..end]` is unread.
pub struct ReadBuf {
    buf: Vec<u8>,
    start: usize,
    end: usize,
    /// Minimum free space offered to each read.
    chunk: usize,
    op_timeout: Duration,
}

impl ReadBuf {
    pub fn new(chunk: usize, op_timeout: Duration) -> Self {
        ReadBuf {
            buf: vec![0; chunk * 2],
            start: 0,
            end: 0,
            chunk,
            op_timeout,
        }
    }

    /// Bytes received and not consumed yet.
    pub fn unread(&self) -> usize {
        self.end - self.start
    }

    /// Reads more bytes, keeping `buf[start..end]`.
    async fn fill<R: AsyncRead + Unpin>(&mut self, r: &mut R) -> Result<()> {
        if self.buf.len() - self.end < self.chunk {
            if self.start > 0 {
                self.buf.copy_within(self.start..self.end, 0);
                self.end -= self.start;
                self.start = 0;
            }
            if self.buf.len() - self.end < self.chunk {
                self.buf.resize(self.end + self.chunk, 0);
            }
        }
        let n = timeout(self.op_timeout, r.read(&mut self.buf[self.end..]))
            .await
            .map_err(|_| Pop3Error::Timeout("read"))??;
        if n == 0 {
            return Err(Pop3Error::Closed);
        }
        self.end += n;
        Ok(())
    }

    /// One line without its CRLF. A bare LF also ends a line.
    pub async fn read_line<R: AsyncRead + Unpin>(&mut self, r: &mut R) -> Result<Vec<u8>> {
        let mut searched = 0;
        loop {
            let pending = &self.buf[self.start + searched..self.end];
            if let Some(i) = memchr::memchr(b'\n', pending) {
                let nl = self.start + searched + i;
                let body_end = if nl > self.start && self.buf[nl - 1] == b'\r' {
                    nl - 1
                } else {
                    nl
                };
                let line = self.buf[self.start..body_end].to_vec();
                self.start = nl + 1;
                return Ok(line);
            }
            searched = self.end - self.start;
            if searched > MAX_LINE {
                return Err(Pop3Error::Protocol(format!("line longer than {MAX_LINE}")));
            }
            self.fill(r).await?;
        }
    }

    /// A status line: `Ok(line)` for `+OK`, [`Pop3Error::Err`] for `-ERR`.
    pub async fn status<R: AsyncRead + Unpin>(&mut self, r: &mut R) -> Result<Vec<u8>> {
        let line = self.read_line(r).await?;
        if line.starts_with(b"+OK") {
            Ok(line)
        } else if line.starts_with(b"-ERR") {
            Err(Pop3Error::Err(String::from_utf8_lossy(&line).into_owned()))
        } else {
            Err(Pop3Error::Protocol(format!(
                "unexpected status line {:?}",
                String::from_utf8_lossy(&line[..line.len().min(60)])
            )))
        }
    }

    /// Counts a multi-line body right after its `+OK` line was read with
    /// [`ReadBuf::status`]; the body is not copied.
    pub async fn count_body<R: AsyncRead + Unpin>(
        &mut self,
        r: &mut R,
        finder: &memmem::Finder<'_>,
    ) -> Result<BodyScan> {
        // The scan starts on the status line's CRLF, still in the buffer.
        if self.start < 2 || &self.buf[self.start - 2..self.start] != b"\r\n" {
            return Err(Pop3Error::Protocol("status line not ended by CRLF".into()));
        }
        self.start -= 2;
        let mut scan = BodyScan::new();
        loop {
            match scan.scan(finder, &self.buf[self.start..self.end]) {
                Step::Done { next } => {
                    self.start += next;
                    return Ok(scan);
                }
                Step::NeedMore { keep_from } => {
                    self.start += keep_from;
                    self.fill(r).await?;
                }
            }
        }
    }

    /// Calls `each` with every line of a multi-line body (un-stuffed, without CRLF);
    /// returns the number of lines.
    pub async fn lines<R: AsyncRead + Unpin>(
        &mut self,
        r: &mut R,
        mut each: impl FnMut(&[u8]),
    ) -> Result<usize> {
        let mut n = 0;
        loop {
            let line = self.read_line(r).await?;
            match line.as_slice() {
                b"." => return Ok(n),
                [b'.', rest @ ..] => each(rest),
                other => each(other),
            }
            n += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io;
    use std::pin::Pin;
    use std::task::{Context, Poll};

    use tokio::io::ReadBuf as IoBuf;

    use super::*;

    /// A reader that hands out at most `step` bytes per read, like a slow socket.
    struct Trickle<'a> {
        data: &'a [u8],
        step: usize,
    }

    impl AsyncRead for Trickle<'_> {
        fn poll_read(
            mut self: Pin<&mut Self>,
            _cx: &mut Context<'_>,
            buf: &mut IoBuf<'_>,
        ) -> Poll<io::Result<()>> {
            let n = self.step.min(self.data.len()).min(buf.remaining());
            buf.put_slice(&self.data[..n]);
            self.data = &self.data[n..];
            Poll::Ready(Ok(()))
        }
    }

    #[tokio::test]
    async fn status_lines_and_bodies_survive_any_read_size() {
        let wire: &[u8] = b"+OK 2 messages\r\n1 8\r\n2 0\r\n.\r\n\
            +OK 8 octets\r\n..a\r\nbc\r\n.\r\n\
            +OK\r\n.\r\n\
            -ERR [IN-USE] busy\r\n";
        let finder = crate::body::finder();
        for step in [1, 2, 3, 5, 64] {
            for chunk in [1, 4, 4096] {
                let mut r = Trickle { data: wire, step };
                let mut rb = ReadBuf::new(chunk, Duration::from_secs(5));
                rb.status(&mut r).await.expect("LIST status");
                let mut lines = Vec::new();
                let n = rb
                    .lines(&mut r, |l| lines.push(l.to_vec()))
                    .await
                    .expect("LIST body");
                assert_eq!(n, 2);
                assert_eq!(lines, vec![b"1 8".to_vec(), b"2 0".to_vec()]);
                rb.status(&mut r).await.expect("RETR 1 status");
                let s = rb.count_body(&mut r, &finder).await.expect("RETR 1 body");
                assert_eq!((s.octets(), s.stuffed), (8, 1), "step {step} chunk {chunk}");
                rb.status(&mut r).await.expect("RETR 2 status");
                let s = rb.count_body(&mut r, &finder).await.expect("RETR 2 body");
                assert_eq!(s.octets(), 0);
                match rb.status(&mut r).await {
                    Err(Pop3Error::Err(line)) => assert_eq!(line, "-ERR [IN-USE] busy"),
                    other => panic!("expected -ERR, got {other:?}"),
                }
                assert!(matches!(rb.read_line(&mut r).await, Err(Pop3Error::Closed)));
            }
        }
    }
}
