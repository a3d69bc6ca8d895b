//! Message sizes as POP3 counts them (RFC 1939 sections 5 and 11).
//!
//! POP3 sends a message as CRLF-terminated lines. The size reported by STAT and LIST is
//! the length of the message with every line ending as CRLF: a bare LF counts as CRLF
//! (two octets), an existing CRLF counts once, a lone CR counts as itself. It is counted
//! before byte-stuffing and without the terminating `.` line. A file whose last line has
//! no line ending is sent with a CRLF added before the terminator; those two octets are
//! part of the termination, not of the message, and are not counted.

use std::io::{self, Read};

/// Chunk size for counting: bounded memory whatever the message size.
pub(crate) const CHUNK: usize = 64 * 1024;

/// Counts the POP3 size of everything `reader` yields, reading `buf.len()` bytes at a time.
pub(crate) fn crlf_size(reader: &mut impl Read, buf: &mut [u8]) -> io::Result<u64> {
    let mut size = 0u64;
    // Whether the last byte of the previous chunk was '\r', so a "\r" "\n" pair split
    // over two chunks is counted once.
    let mut prev_cr = false;
    loop {
        let n = match reader.read(buf) {
            Ok(0) => return Ok(size),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        let chunk = &buf[..n];
        size += n as u64;
        for lf in memchr::memchr_iter(b'\n', chunk) {
            let after_cr = if lf == 0 {
                prev_cr
            } else {
                chunk[lf - 1] == b'\r'
            };
            if !after_cr {
                size += 1;
            }
        }
        prev_cr = chunk[n - 1] == b'\r';
    }
}

/// The POP3 size of a message held in memory.
pub(crate) fn crlf_size_of(message: &[u8]) -> u64 {
    let mut buf = [0u8; 1024];
    // Reading from a slice cannot fail.
    crlf_size(&mut &message[..], &mut buf).unwrap_or(message.len() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn size_with_chunk(data: &[u8], chunk: usize) -> u64 {
        let mut buf = vec![0u8; chunk];
        crlf_size(&mut &data[..], &mut buf).expect("reading a slice")
    }

    #[test]
    fn line_endings() {
        assert_eq!(crlf_size_of(b""), 0);
        assert_eq!(crlf_size_of(b"a\nb\n"), 6);
        assert_eq!(crlf_size_of(b"a\r\nb\r\n"), 6);
        assert_eq!(crlf_size_of(b"a\r\nb\nc\r\n"), 9);
        // No final newline: the CRLF the encoder adds is not counted.
        assert_eq!(crlf_size_of(b"a\nlast"), 7);
        // A lone CR is sent as it is.
        assert_eq!(crlf_size_of(b"a\rb\n"), 5);
        assert_eq!(crlf_size_of(b"\n\n"), 4);
    }

    #[test]
    fn cr_at_chunk_boundary_counts_once() {
        let data = b"ab\r\ncd\r\nef\n\n\r\r\n";
        let expected = crlf_size_of(data);
        assert_eq!(expected, data.len() as u64 + 2);
        for chunk in 1..=data.len() {
            assert_eq!(size_with_chunk(data, chunk), expected, "chunk {chunk}");
        }
        // "\r" ends chunk one, "\n" starts chunk two.
        assert_eq!(size_with_chunk(b"x\r\ny", 2), 4);
        assert_eq!(size_with_chunk(b"x\n\ny", 2), 6);
    }
}
