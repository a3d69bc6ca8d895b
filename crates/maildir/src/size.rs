//! Message sizes as POP3 counts them (RFC 1939 sections 5 and 11).
//!
//! The counting rule belongs to the protocol core ([`pop3_proto::OctetCounter`], which
//! matches what its encoder sends); this module feeds it a file in bounded chunks.

use std::io::{self, Read};

/// Chunk size for counting: bounded memory whatever the message size.
pub(crate) const CHUNK: usize = 64 * 1024;

/// Counts the POP3 size of everything `reader` yields, reading `buf.len()` bytes at a time.
pub(crate) fn crlf_size(reader: &mut impl Read, buf: &mut [u8]) -> io::Result<u64> {
    let mut counter = pop3_proto::OctetCounter::default();
    loop {
        match reader.read(buf) {
            Ok(0) => return Ok(counter.finish()),
            Ok(n) => counter.update(&buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pop3_proto::crlf_size as crlf_size_of;

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
        // No final newline: the CRLF the encoder adds is counted.
        assert_eq!(crlf_size_of(b"a\nlast"), 9);
        assert_eq!(crlf_size_of(b"a\nlast\r"), 9);
        // A lone CR is sent as it is.
        assert_eq!(crlf_size_of(b"a\rb\n"), 5);
        assert_eq!(crlf_size_of(b"\n\n"), 4);
    }

    #[test]
    fn cr_at_chunk_boundary_counts_once() {
        let data = b"ab\r\ncd\r\nef\n\n\r\r\n";
        let expected = crlf_size_of(data);
        assert_eq!(expected, data.len() as u64 + 2);
        assert_eq!(size_with_chunk(b"x\r", 1), 3);
        for chunk in 1..=data.len() {
            assert_eq!(size_with_chunk(data, chunk), expected, "chunk {chunk}");
        }
        // "\r" ends chunk one, "\n" starts chunk two.
        assert_eq!(size_with_chunk(b"x\r\ny", 2), 6);
        assert_eq!(size_with_chunk(b"x\n\ny", 2), 8);
    }
}
