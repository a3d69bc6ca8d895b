//! A minimal POP3 client made for measuring servers: plain or TLS streams, commands,
//! sign-in; the receive side is [`crate::readbuf`]. Every network operation has a
//! timeout.

use std::fmt;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use base64::Engine as _;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt as _, ReadBuf as IoBuf};
use tokio::net::TcpStream;
use tokio::time::timeout;
use tokio_rustls::client::TlsStream;

pub use crate::readbuf::ReadBuf;
use crate::tls::Tls;

/// Why an operation failed; [`Pop3Error::key`] groups failures for the error tables.
#[derive(Debug)]
pub enum Pop3Error {
    /// The server answered `-ERR ...` (the line, without CRLF).
    Err(String),
    Io(io::Error),
    Timeout(&'static str),
    Closed,
    Protocol(String),
}

impl Pop3Error {
    /// A short, stable label for counting errors by kind.
    pub fn key(&self) -> String {
        let mut s = self.to_string();
        if s.len() > 80 {
            let mut cut = 80;
            while !s.is_char_boundary(cut) {
                cut -= 1;
            }
            s.truncate(cut);
        }
        s
    }
}

impl fmt::Display for Pop3Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Pop3Error::Err(line) => f.write_str(line),
            Pop3Error::Io(e) => write!(f, "io: {e}"),
            Pop3Error::Timeout(what) => write!(f, "timeout: {what}"),
            Pop3Error::Closed => f.write_str("connection closed by server"),
            Pop3Error::Protocol(what) => write!(f, "protocol: {what}"),
        }
    }
}

impl std::error::Error for Pop3Error {}

impl From<io::Error> for Pop3Error {
    fn from(e: io::Error) -> Self {
        Pop3Error::Io(e)
    }
}

pub type Result<T> = std::result::Result<T, Pop3Error>;

/// Plain TCP or TLS over TCP.
pub enum Stream {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut IoBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// How to sign in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum AuthKind {
    /// USER then PASS.
    User,
    /// AUTH PLAIN with an initial response (RFC 5034).
    Plain,
}

/// How to reach the server.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Mode {
    /// Implicit TLS on --tls-port.
    Tls,
    /// STLS on --port.
    Starttls,
    /// No TLS on --port.
    Plain,
}

impl Mode {
    pub fn name(self) -> &'static str {
        match self {
            Mode::Tls => "tls",
            Mode::Starttls => "starttls",
            Mode::Plain => "plain",
        }
    }
}

/// What a TLS session negotiated, for the result lines.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsInfo {
    /// `TLSv1_3`, `TLSv1_2`, as rustls prints [`rustls::ProtocolVersion`].
    pub version: String,
    /// The IANA name as rustls prints [`rustls::CipherSuite`], e.g.
    /// `TLS13_AES_256_GCM_SHA384`.
    pub suite: String,
}

impl TlsInfo {
    /// Reads both from a connection after its handshake (`?` before).
    pub fn of(conn: &rustls::CommonState) -> Self {
        TlsInfo {
            version: conn
                .protocol_version()
                .map_or_else(|| "?".into(), |v| format!("{v:?}")),
            suite: conn
                .negotiated_cipher_suite()
                .map_or_else(|| "?".into(), |s| format!("{:?}", s.suite())),
        }
    }

    /// `tls_version` and `tls_suite` into a result line (null without TLS).
    pub fn put(info: Option<&TlsInfo>, m: &mut serde_json::Map<String, serde_json::Value>) {
        m.insert(
            "tls_version".into(),
            info.map_or(serde_json::Value::Null, |i| i.version.clone().into()),
        );
        m.insert(
            "tls_suite".into(),
            info.map_or(serde_json::Value::Null, |i| i.suite.clone().into()),
        );
    }

    /// ` tls=TLSv1_3/TLS13_AES_256_GCM_SHA384` for a console line ('' without TLS).
    pub fn line(info: Option<&TlsInfo>) -> String {
        info.map_or_else(String::new, |i| format!(" tls={}/{}", i.version, i.suite))
    }
}

/// Where and how to connect.
#[derive(Clone)]
pub struct Target {
    pub host: String,
    pub port: u16,
    pub tls_port: u16,
    pub tls: Tls,
    pub op_timeout: Duration,
    /// Source addresses, taken in turn (empty: the system's choice).
    pub sources: std::sync::Arc<Sources>,
}

/// Source addresses connections are bound to in turn: `--sources N` gives
/// 127.x.y.1 for N different /24s (x from 20, y from 0), so a server's per-address and
/// per-network caps see many clients.
#[derive(Default)]
pub struct Sources {
    addrs: Vec<std::net::IpAddr>,
    next: std::sync::atomic::AtomicUsize,
}

impl Sources {
    pub fn loopback(n: u32) -> Self {
        let addrs = (0..n)
            .map(|i| std::net::IpAddr::from([127, 20 + (i / 250) as u8, (i % 250) as u8, 1]))
            .collect();
        Sources {
            addrs,
            next: Default::default(),
        }
    }

    fn take(&self) -> Option<std::net::IpAddr> {
        if self.addrs.is_empty() {
            return None;
        }
        let i = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Some(self.addrs[i % self.addrs.len()])
    }
}

/// An open POP3 session.
pub struct Pop3 {
    pub stream: Stream,
    pub rb: ReadBuf,
    op_timeout: Duration,
}

impl Pop3 {
    /// Connects, reads the greeting and, in STLS mode, upgrades to TLS. `chunk` sizes
    /// the receive buffer (large for RETR, small for thousands of idle sessions).
    pub async fn connect(t: &Target, mode: Mode, chunk: usize) -> Result<Pop3> {
        let port = if mode == Mode::Tls {
            t.tls_port
        } else {
            t.port
        };
        let tcp = match t.sources.take() {
            None => timeout(t.op_timeout, TcpStream::connect((t.host.as_str(), port)))
                .await
                .map_err(|_| Pop3Error::Timeout("connect"))??,
            Some(source) => {
                let addr = tokio::net::lookup_host((t.host.as_str(), port))
                    .await?
                    .find(|a| a.is_ipv4() == source.is_ipv4())
                    .ok_or_else(|| {
                        Pop3Error::Protocol(format!("{} has no address for {source}", t.host))
                    })?;
                let socket = if source.is_ipv4() {
                    tokio::net::TcpSocket::new_v4()?
                } else {
                    tokio::net::TcpSocket::new_v6()?
                };
                socket.bind(std::net::SocketAddr::new(source, 0))?;
                timeout(t.op_timeout, socket.connect(addr))
                    .await
                    .map_err(|_| Pop3Error::Timeout("connect"))??
            }
        };
        tcp.set_nodelay(true)?;
        let mut rb = ReadBuf::new(chunk, t.op_timeout);
        let stream = match mode {
            Mode::Plain => Stream::Plain(tcp),
            Mode::Tls => Stream::Tls(Box::new(handshake(t, tcp).await?)),
            Mode::Starttls => {
                let mut tcp = tcp;
                rb.status(&mut tcp).await?;
                write_line(&mut tcp, b"STLS", t.op_timeout).await?;
                rb.status(&mut tcp).await?;
                if rb.unread() != 0 {
                    // Bytes after +OK would be injected into the TLS session (CVE-2011-0411 style).
                    return Err(Pop3Error::Protocol("data after STLS +OK".into()));
                }
                Stream::Tls(Box::new(handshake(t, tcp).await?))
            }
        };
        let mut c = Pop3 {
            stream,
            rb,
            op_timeout: t.op_timeout,
        };
        if mode != Mode::Starttls {
            c.status().await?;
        }
        Ok(c)
    }

    /// The negotiated TLS protocol version and cipher suite, as rustls names them
    /// (`TLSv1_3`, `TLS13_AES_256_GCM_SHA384`); `None` without TLS.
    pub fn tls_info(&self) -> Option<TlsInfo> {
        match &self.stream {
            Stream::Plain(_) => None,
            Stream::Tls(s) => Some(TlsInfo::of(s.get_ref().1)),
        }
    }

    /// Sends one command line (CRLF added) and flushes.
    pub async fn send(&mut self, line: &str) -> Result<()> {
        write_line(&mut self.stream, line.as_bytes(), self.op_timeout).await
    }

    pub async fn status(&mut self) -> Result<Vec<u8>> {
        self.rb.status(&mut self.stream).await
    }

    pub async fn cmd(&mut self, line: &str) -> Result<Vec<u8>> {
        self.send(line).await?;
        self.status().await
    }

    /// A command with a multi-line answer; `each` sees every body line.
    pub async fn multi(&mut self, line: &str, each: impl FnMut(&[u8])) -> Result<usize> {
        self.cmd(line).await?;
        self.rb.lines(&mut self.stream, each).await
    }

    /// Signs in with USER/PASS or AUTH PLAIN.
    pub async fn login(&mut self, auth: AuthKind, user: &str, password: &str) -> Result<()> {
        match auth {
            AuthKind::User => {
                self.cmd(&format!("USER {user}")).await?;
                self.cmd(&format!("PASS {password}")).await?;
            }
            AuthKind::Plain => {
                self.cmd(&format!("AUTH PLAIN {}", plain_token(user, password)))
                    .await?;
            }
        }
        Ok(())
    }

    /// QUIT, wait for its answer, then drop the connection without a TLS close_notify
    /// (client teardown is not what is measured).
    pub async fn quit(mut self) -> Result<()> {
        self.cmd("QUIT").await.map(|_| ())
    }
}

/// The SASL PLAIN initial response for `user` / `password`, base64-encoded.
pub fn plain_token(user: &str, password: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(format!("\0{user}\0{password}"))
}

async fn handshake(t: &Target, tcp: TcpStream) -> Result<TlsStream<TcpStream>> {
    timeout(
        t.op_timeout,
        t.tls.connector.connect(t.tls.server_name.clone(), tcp),
    )
    .await
    .map_err(|_| Pop3Error::Timeout("TLS handshake"))?
    .map_err(|e| Pop3Error::Io(io::Error::other(format!("TLS: {e}"))))
}

async fn write_line<W: AsyncWrite + Unpin>(w: &mut W, line: &[u8], t: Duration) -> Result<()> {
    let mut buf = Vec::with_capacity(line.len() + 2);
    buf.extend_from_slice(line);
    buf.extend_from_slice(b"\r\n");
    write_flush(w, &buf, t).await
}

pub async fn write_flush<W: AsyncWrite + Unpin>(
    w: &mut W,
    bytes: &[u8],
    t: Duration,
) -> Result<()> {
    timeout(t, async {
        w.write_all(bytes).await?;
        w.flush().await
    })
    .await
    .map_err(|_| Pop3Error::Timeout("write"))??;
    Ok(())
}
