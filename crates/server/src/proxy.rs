//! The PROXY protocol (HAProxy's proxy-protocol.txt, versions 1 and 2): a load
//! balancer in TCP mode tells the server the client's real address in a header sent
//! before anything else on the connection, so before the TLS ClientHello on the
//! implicit-TLS port.
//!
//! Written here rather than taken from a crate: the parser is ~150 lines, sans-IO, and
//! must never read past the header (the bytes after it belong to TLS or POP3), which
//! is what [`next`] is shaped around: it says exactly how many more bytes the header
//! needs, so the caller reads no further. Only listeners' trusted proxies may send a
//! header ([`crate::config::Proxy`]); they must send one.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt as _};

/// The v2 signature: `\r\n\r\n\0\r\nQUIT\n`.
pub const V2_SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";
const V1_PREFIX: &[u8] = b"PROXY ";
/// The longest v1 line, CRLF included (the specification's 107 bytes).
const V1_MAX: usize = 107;
/// The shortest header of either version ("PROXY UNKNOWN\r\n"); reading this many
/// bytes first never reads past a header.
const MIN_HEADER: usize = 15;
/// The largest v2 header accepted (addresses plus TLVs); HAProxy sends far less.
const V2_MAX: usize = 16 + 1024;

/// What the header says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProxyHeader {
    /// The client's address and port; `None` for a connection the proxy made itself
    /// (v2 LOCAL, a health check) or of an unknown family (v1 UNKNOWN): the
    /// connection's own address stands.
    pub source: Option<SocketAddr>,
    /// The address the client connected to, when given.
    pub destination: Option<SocketAddr>,
}

/// Why a header was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ProxyError {
    /// The bytes are not a PROXY header of either version.
    #[error("not a PROXY protocol header")]
    NotProxy,
    /// A header that breaks the specification.
    #[error("malformed PROXY header: {0}")]
    Malformed(&'static str),
    /// Longer than allowed.
    #[error("PROXY header too long")]
    TooLong,
}

/// The next step of reading a header whose first bytes are `buf`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Read exactly this many more bytes (never more: the header may end there).
    More(usize),
    /// The header is complete: all of `buf`.
    Done(ProxyHeader),
}

/// Looks at the bytes read so far and says what comes next. Never panics, whatever
/// `buf` holds; never asks for a byte past the end of the header.
pub fn next(buf: &[u8]) -> Result<Step, ProxyError> {
    let is_v2 = buf[..buf.len().min(12)] == V2_SIGNATURE[..buf.len().min(12)];
    let is_v1 =
        buf[..buf.len().min(V1_PREFIX.len())] == V1_PREFIX[..buf.len().min(V1_PREFIX.len())];
    if !is_v1 && !is_v2 {
        return Err(ProxyError::NotProxy);
    }
    if buf.len() < MIN_HEADER {
        return Ok(Step::More(MIN_HEADER - buf.len()));
    }
    if is_v2 {
        if buf.len() < 16 {
            return Ok(Step::More(16 - buf.len()));
        }
        let total = 16 + usize::from(u16::from_be_bytes([buf[14], buf[15]]));
        if total > V2_MAX {
            return Err(ProxyError::TooLong);
        }
        if buf.len() < total {
            return Ok(Step::More(total - buf.len()));
        }
        if buf.len() > total {
            return Err(ProxyError::Malformed("bytes past the v2 header"));
        }
        return parse_v2(buf).map(Step::Done);
    }
    if let Some(cr) = buf.iter().position(|&b| b == b'\r') {
        if cr + 1 == buf.len() {
            return Ok(Step::More(1));
        }
        if cr + 2 != buf.len() || buf[cr + 1] != b'\n' {
            return Err(ProxyError::Malformed("v1 line not ended by CRLF"));
        }
        return parse_v1(&buf[..cr]).map(Step::Done);
    }
    if buf.len() >= V1_MAX {
        return Err(ProxyError::TooLong);
    }
    Ok(Step::More(1))
}

fn parse_v1(line: &[u8]) -> Result<ProxyHeader, ProxyError> {
    let bad = ProxyError::Malformed;
    let line = std::str::from_utf8(line).map_err(|_| bad("v1 line is not ASCII"))?;
    let mut parts = line.split(' ');
    let (Some("PROXY"), Some(family)) = (parts.next(), parts.next()) else {
        return Err(bad("v1 line"));
    };
    if family == "UNKNOWN" {
        // Whatever follows is to be ignored (specification, 2.1).
        return Ok(ProxyHeader {
            source: None,
            destination: None,
        });
    }
    let fields: Vec<&str> = parts.collect();
    let [src, dst, sport, dport] = fields[..] else {
        return Err(bad("v1 needs four fields after the family"));
    };
    let ip = |s: &str| -> Result<IpAddr, ProxyError> {
        match family {
            "TCP4" => s
                .parse::<Ipv4Addr>()
                .map(IpAddr::V4)
                .map_err(|_| bad("v1 TCP4 address")),
            "TCP6" => s
                .parse::<Ipv6Addr>()
                .map(IpAddr::V6)
                .map_err(|_| bad("v1 TCP6 address")),
            _ => Err(bad("v1 family")),
        }
    };
    let port = |s: &str| -> Result<u16, ProxyError> {
        // Decimal without leading zeros or signs.
        if s.is_empty()
            || (s.len() > 1 && s.starts_with('0'))
            || !s.bytes().all(|b| b.is_ascii_digit())
        {
            return Err(bad("v1 port"));
        }
        s.parse().map_err(|_| bad("v1 port"))
    };
    Ok(ProxyHeader {
        source: Some(SocketAddr::new(ip(src)?, port(sport)?)),
        destination: Some(SocketAddr::new(ip(dst)?, port(dport)?)),
    })
}

fn parse_v2(buf: &[u8]) -> Result<ProxyHeader, ProxyError> {
    let bad = ProxyError::Malformed;
    let (version, command) = (buf[12] >> 4, buf[12] & 0x0f);
    if version != 2 {
        return Err(bad("v2 version"));
    }
    let body = &buf[16..];
    let local = ProxyHeader {
        source: None,
        destination: None,
    };
    match command {
        0 => return Ok(local), // LOCAL: the proxy's own connection (health checks).
        1 => {}
        _ => return Err(bad("v2 command")),
    }
    let (family, transport) = (buf[13] >> 4, buf[13] & 0x0f);
    if transport != 1 && !(family == 0 && transport == 0) {
        // Only STREAM (TCP) makes sense in front of POP3.
        return Err(bad("v2 transport is not TCP"));
    }
    match family {
        0 => Ok(local), // UNSPEC: keep the connection's address.
        1 => {
            let a = body.get(..12).ok_or(bad("v2 IPv4 addresses truncated"))?;
            let ip = |i: usize| IpAddr::V4(Ipv4Addr::new(a[i], a[i + 1], a[i + 2], a[i + 3]));
            let port = |i: usize| u16::from_be_bytes([a[i], a[i + 1]]);
            Ok(ProxyHeader {
                source: Some(SocketAddr::new(ip(0), port(8))),
                destination: Some(SocketAddr::new(ip(4), port(10))),
            })
        }
        2 => {
            let a = body.get(..36).ok_or(bad("v2 IPv6 addresses truncated"))?;
            let ip = |i: usize| {
                let mut o = [0u8; 16];
                o.copy_from_slice(&a[i..i + 16]);
                IpAddr::V6(Ipv6Addr::from(o))
            };
            let port = |i: usize| u16::from_be_bytes([a[i], a[i + 1]]);
            Ok(ProxyHeader {
                source: Some(SocketAddr::new(ip(0), port(32))),
                destination: Some(SocketAddr::new(ip(16), port(34))),
            })
        }
        3 => Err(bad("v2 UNIX addresses are not accepted on TCP listeners")),
        _ => Err(bad("v2 address family")),
    }
}

/// Why reading a header from a connection failed.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// Not a valid header.
    #[error(transparent)]
    Header(#[from] ProxyError),
    /// The proxy sent no complete header in time.
    #[error("no PROXY header within {0:?}")]
    Timeout(Duration),
    /// The connection closed or failed first.
    #[error("connection closed before the PROXY header ended: {0}")]
    Io(#[from] std::io::Error),
}

/// Reads one header from `stream` within `timeout`, and not one byte more.
pub async fn read_header<S: AsyncRead + Unpin>(
    stream: &mut S,
    timeout: Duration,
) -> Result<ProxyHeader, ReadError> {
    let read = async {
        let mut buf = Vec::with_capacity(64);
        loop {
            match next(&buf)? {
                Step::Done(header) => return Ok(header),
                Step::More(n) => {
                    let start = buf.len();
                    buf.resize(start + n, 0);
                    stream.read_exact(&mut buf[start..]).await?;
                }
            }
        }
    };
    tokio::time::timeout(timeout, read)
        .await
        .map_err(|_| ReadError::Timeout(timeout))?
}

/// A v1 header line for `source` → `destination` (tests and tools).
pub fn encode_v1(source: SocketAddr, destination: SocketAddr) -> Vec<u8> {
    let family = if source.is_ipv4() { "TCP4" } else { "TCP6" };
    format!(
        "PROXY {family} {} {} {} {}\r\n",
        source.ip(),
        destination.ip(),
        source.port(),
        destination.port()
    )
    .into_bytes()
}

/// A v2 PROXY header for `source` → `destination` (same family), with `tlv` bytes
/// appended (tests and tools).
pub fn encode_v2(source: SocketAddr, destination: SocketAddr, tlv: &[u8]) -> Vec<u8> {
    let mut out = V2_SIGNATURE.to_vec();
    out.push(0x21);
    let mut body = Vec::new();
    match (source.ip(), destination.ip()) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            out.push(0x11);
            body.extend_from_slice(&s.octets());
            body.extend_from_slice(&d.octets());
        }
        (s, d) => {
            out.push(0x21);
            let v6 = |ip: IpAddr| match ip {
                IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
                IpAddr::V6(v6) => v6.octets(),
            };
            body.extend_from_slice(&v6(s));
            body.extend_from_slice(&v6(d));
        }
    }
    body.extend_from_slice(&source.port().to_be_bytes());
    body.extend_from_slice(&destination.port().to_be_bytes());
    body.extend_from_slice(tlv);
    let len = u16::try_from(body.len()).unwrap_or(u16::MAX);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(&body);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn parse_all(bytes: &[u8]) -> Result<ProxyHeader, ProxyError> {
        // Feeds the bytes the way read_header reads them, checking it never asks for
        // more than is left.
        let mut have = 0;
        loop {
            match next(&bytes[..have])? {
                Step::Done(h) => {
                    assert_eq!(have, bytes.len(), "header ended early");
                    return Ok(h);
                }
                Step::More(n) => {
                    assert!(n > 0);
                    if have + n > bytes.len() {
                        return Err(ProxyError::Malformed("truncated"));
                    }
                    have += n;
                }
            }
        }
    }

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn v1_examples() {
        let h = parse_all(b"PROXY TCP4 192.0.2.7 203.0.113.1 56324 995\r\n").unwrap();
        assert_eq!(h.source, Some(addr("192.0.2.7:56324")));
        assert_eq!(h.destination, Some(addr("203.0.113.1:995")));
        let h = parse_all(b"PROXY TCP6 2001:db8::1 2001:db8::2 1 110\r\n").unwrap();
        assert_eq!(h.source, Some(addr("[2001:db8::1]:1")));
        let h = parse_all(b"PROXY UNKNOWN\r\n").unwrap();
        assert_eq!(h.source, None);
        let h = parse_all(b"PROXY UNKNOWN ffff:f...f:ffff 1 2\r\n").unwrap();
        assert_eq!(h.source, None);
    }

    #[test]
    fn v1_refusals() {
        for bad in [
            &b"PROXY TCP4 192.0.2.7 203.0.113.1 56324\r\n"[..],
            b"PROXY TCP4 192.0.2.7 203.0.113.1 056324 995\r\n",
            b"PROXY TCP4 192.0.2.7 203.0.113.1 65536 995\r\n",
            b"PROXY TCP4 2001:db8::1 203.0.113.1 1 995\r\n",
            b"PROXY TCP6 192.0.2.7 2001:db8::1 1 995\r\n",
            b"PROXY UDP4 192.0.2.7 203.0.113.1 1 995\r\n",
            b"PROXY TCP4 192.0.2.7  203.0.113.1 1 995\r\n",
            b"PROXY TCP4 192.0.2.7 203.0.113.1 1 995\rX\n",
            b"PROXY TCP4 192.0.2.7 203.0.113.1 1 995\n\r\n",
        ] {
            assert!(parse_all(bad).is_err(), "{}", String::from_utf8_lossy(bad));
        }
        let long = format!("PROXY TCP4 {}\r\n", "1".repeat(120));
        assert_eq!(parse_all(long.as_bytes()), Err(ProxyError::TooLong));
        assert_eq!(next(b"USER alice\r\n"), Err(ProxyError::NotProxy));
        // A TLS ClientHello is not a header.
        assert_eq!(next(&[0x16, 0x03, 0x01, 0x02]), Err(ProxyError::NotProxy));
    }

    #[test]
    fn v2_examples() {
        let h = parse_all(&encode_v2(
            addr("127.0.0.5:4000"),
            addr("127.0.0.1:995"),
            &[],
        ))
        .unwrap();
        assert_eq!(h.source, Some(addr("127.0.0.5:4000")));
        assert_eq!(h.destination, Some(addr("127.0.0.1:995")));
        // TLVs (here a made-up one) are skipped.
        let h = parse_all(&encode_v2(
            addr("[2001:db8::5]:1"),
            addr("[2001:db8::1]:110"),
            &[0xE0, 0, 2, 1, 2],
        ))
        .unwrap();
        assert_eq!(h.source, Some(addr("[2001:db8::5]:1")));
        // LOCAL (health checks): no address.
        let mut local = V2_SIGNATURE.to_vec();
        local.extend_from_slice(&[0x20, 0x00, 0, 0]);
        assert_eq!(parse_all(&local).unwrap().source, None);
    }

    #[test]
    fn v2_refusals() {
        let good = encode_v2(addr("127.0.0.5:4000"), addr("127.0.0.1:995"), &[]);
        let mut v1 = good.clone();
        v1[12] = 0x11; // version 1 in a v2 header
        assert!(parse_all(&v1).is_err());
        let mut cmd = good.clone();
        cmd[12] = 0x22;
        assert!(parse_all(&cmd).is_err());
        let mut udp = good.clone();
        udp[13] = 0x12;
        assert!(parse_all(&udp).is_err());
        let mut short = good.clone();
        short[15] = 4; // declares 4 bytes of addresses for TCP4
        short.truncate(20);
        assert!(parse_all(&short).is_err());
        let mut huge = V2_SIGNATURE.to_vec();
        huge.extend_from_slice(&[0x21, 0x11, 0xff, 0xff]);
        assert_eq!(next(&huge), Err(ProxyError::TooLong));
    }

    #[tokio::test]
    async fn reads_exactly_the_header_and_times_out() {
        let header = encode_v2(addr("127.0.0.9:1234"), addr("127.0.0.1:995"), &[]);
        let mut bytes = header.clone();
        bytes.extend_from_slice(b"\x16\x03\x01 the ClientHello");
        let mut reader = &bytes[..];
        let h = read_header(&mut reader, Duration::from_secs(1))
            .await
            .unwrap();
        assert_eq!(h.source, Some(addr("127.0.0.9:1234")));
        assert_eq!(
            reader, b"\x16\x03\x01 the ClientHello",
            "nothing past it read"
        );

        let v1 = b"PROXY TCP4 127.0.0.9 127.0.0.1 1234 110\r\nCAPA\r\n";
        let mut reader = &v1[..];
        read_header(&mut reader, Duration::from_secs(1))
            .await
            .unwrap();
        assert_eq!(reader, b"CAPA\r\n");

        // A proxy that stalls halfway.
        let (mut client, mut server) = tokio::io::duplex(64);
        tokio::io::AsyncWriteExt::write_all(&mut client, b"PROXY TCP4 127.0.0.9")
            .await
            .unwrap();
        let err = read_header(&mut server, Duration::from_millis(100))
            .await
            .unwrap_err();
        assert!(matches!(err, ReadError::Timeout(_)), "{err:?}");
        // One that hangs up.
        drop(client);
        let err = read_header(&mut server, Duration::from_secs(1))
            .await
            .unwrap_err();
        assert!(matches!(err, ReadError::Io(_)), "{err:?}");
    }

    fn any_addr_pair() -> impl Strategy<Value = (SocketAddr, SocketAddr)> {
        prop_oneof![
            (
                any::<[u8; 4]>(),
                any::<u16>(),
                any::<[u8; 4]>(),
                any::<u16>()
            )
                .prop_map(|(a, p, b, q)| (
                    SocketAddr::new(IpAddr::from(a), p),
                    SocketAddr::new(IpAddr::from(b), q)
                )),
            (
                any::<[u8; 16]>(),
                any::<u16>(),
                any::<[u8; 16]>(),
                any::<u16>()
            )
                .prop_map(|(a, p, b, q)| (
                    SocketAddr::new(IpAddr::from(a), p),
                    SocketAddr::new(IpAddr::from(b), q)
                )),
        ]
    }

    proptest! {
        #[test]
        fn round_trips((src, dst) in any_addr_pair(), tlv in proptest::collection::vec(any::<u8>(), 0..64)) {
            let h = parse_all(&encode_v1(src, dst)).unwrap();
            prop_assert_eq!(h.source, Some(src));
            prop_assert_eq!(h.destination, Some(dst));
            let h = parse_all(&encode_v2(src, dst, &tlv)).unwrap();
            prop_assert_eq!(h.source, Some(src));
            prop_assert_eq!(h.destination, Some(dst));
        }

        /// Every proper prefix of a header asks for more, never for past its end.
        #[test]
        fn truncated_headers_ask_for_more((src, dst) in any_addr_pair(), v2 in any::<bool>()) {
            let bytes = if v2 { encode_v2(src, dst, &[]) } else { encode_v1(src, dst) };
            for cut in 0..bytes.len() {
                match next(&bytes[..cut]) {
                    Ok(Step::More(n)) => prop_assert!(cut + n <= bytes.len()),
                    other => prop_assert!(false, "prefix {} of {:?}: {:?}", cut, bytes, other),
                }
            }
        }

        /// Garbage never panics and never reads unboundedly.
        #[test]
        fn garbage_is_refused_without_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = parse_all(&bytes);
            let mut v2 = V2_SIGNATURE.to_vec();
            v2.extend_from_slice(&bytes);
            let _ = parse_all(&v2);
            let mut v1 = b"PROXY ".to_vec();
            v1.extend_from_slice(&bytes);
            if let Ok(Step::More(n)) = next(&v1) {
                prop_assert!(n <= V2_MAX);
            }
            let _ = parse_all(&v1);
        }
    }
}
