//! `tls-ceiling`: the loopback TLS ceiling of one large RETR on this machine, for this
//! client.
//!
//! A minimal sender runs in this process on its own OS thread (not on the client's
//! tokio runtime): a TCP listener on 127.0.0.1, rustls with the aws-lc-rs provider and
//! Poplar's TLS settings (TLS 1.3 and 1.2, Poplar's nine suites in Poplar's order, ALPN
//! `pop3`, a fresh self-signed ECDSA P-256 certificate like the one Poplar makes). For
//! each connection it sends a greeting, reads one command, answers it with one message
//! of `--size` octets that was CRLF-converted and dot-stuffed in memory before any
//! timing (populate.py's `big` message: text lines of 76 characters, every 50th one
//! starting with a dot), in `--write-bytes` plaintext writes, then reads QUIT and
//! answers it. It does no file I/O and no work per byte but the TLS encryption: what
//! no POP3 server can beat on the same TLS stack.
//!
//! The client is exactly the `retr` scenario's code path: [`Pop3::connect`] with the
//! same TLS client configuration (the common TLS flags) and the same 256 KiB reads,
//! `RETR 1` through [`retr::sequential`] (`ReadBuf::count_body`, which finds the
//! terminator and counts the un-stuffed octets), timed the same way. The octets must
//! equal the message's size, as a LIST size would say.
//!
//! Both ends share this machine's cores over loopback, as a server and `poplar-bench`
//! do in `retr`; so the median MB/s here is the physical limit of `retr` against any
//! server on this machine.
//!
//! Sender design (measured on the 2-core benchmark machine, 50 MB, 25-30 runs each,
//! median per run): what matters is rustls' buffer limit, not blocking vs. async. With
//! rustls' default limit of 64 KiB of queued TLS bytes, every write syscall carries at
//! most four records and the sender spends ~0.46-0.50 ms of CPU per MB (blocking
//! `StreamOwned` 1,758 MB/s, tokio-rustls 1,734-1,849 MB/s). With the limit at the
//! 256 KiB write size (16 records per `writev`) it spends ~0.33 ms/MB and reaches
//! 2,059 MB/s blocking, 2,075 MB/s tokio-rustls on a current-thread runtime: equal
//! within the noise. 256 KiB writes beat 64 KiB, 512 KiB and 1 MiB ones (1,735, 1,830,
//! 1,730 MB/s). tokio-rustls without any limit is much slower (1,318 MB/s): its
//! `poll_write` keeps encrypting into an ever larger queue while the socket is full.
//! The default is the blocking `StreamOwned` over a std `TcpStream` (`--sender
//! blocking`): as fast, and no runtime; `--sender tokio` and `--tls-buffer-limit 65536`
//! reproduce the others.

use std::io::{self, Read, Write};
use std::net::TcpListener;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::Context as _;
use rustls::crypto::aws_lc_rs;
use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::{ServerConfig, ServerConnection, StreamOwned};
use serde_json::{Map, Value, json};

use super::retr::{self, Tally};
use super::{BIG_CHUNK, Meter};
use crate::Env;
use crate::conn::{Mode, Pop3, Target, TlsInfo};
use crate::procstat;
use crate::report::round;

#[derive(clap::Args)]
pub struct Args {
    /// Runs, one connection each, reported with their median and best.
    #[arg(long, default_value_t = 3)]
    repeat: u32,
    /// Message size with LF line endings, as populate.py counts it (its `big`
    /// message: 50,000,000); on the wire it grows by one CR per line.
    #[arg(long, default_value_t = 50_000_000)]
    size: usize,
    /// Plaintext bytes per write of the sender.
    #[arg(long, default_value_t = 256 * 1024)]
    write_bytes: usize,
    /// Most TLS bytes the sender's rustls connection queues before they are written
    /// (`set_buffer_limit`); default: room for one write as sent, so one write is one
    /// `writev` of all its records: --write-bytes, or twice that when --from-file
    /// stuffs each read (CRLF makes it a few per cent longer, twice at most), as
    /// Poplar's `TLS_SEND_BUFFER` does. 65536 is rustls' default (what a server that
    /// does not set it runs with).
    #[arg(long)]
    tls_buffer_limit: Option<usize>,
    /// How the sender does its I/O.
    #[arg(long, value_enum, default_value_t = SenderKind::Blocking)]
    sender: SenderKind,
    /// Send this Maildir message file instead of a message built in memory, doing only
    /// what RFC 1939 makes any server do with it: read it (from the page cache; it is
    /// read once before timing) in --write-bytes chunks, turn LF into CRLF and
    /// dot-stuff, on the one sender thread (blocking sender only). The ceiling for that
    /// message when it is stored with bare LF line ends, as Maildir files usually are.
    #[arg(long)]
    from_file: Option<std::path::PathBuf>,
    /// With --from-file: first write the message in its POP3 wire form (CRLF,
    /// dot-stuffed) to a temporary file, then send that file as it is, with no
    /// conversion: page cache + TLS only, the least work any server could do with a
    /// stored message (one that stored messages ready to send).
    #[arg(long, requires = "from_file")]
    wire_form: bool,
}

/// The sender's I/O.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum SenderKind {
    /// rustls `StreamOwned` over a blocking std `TcpStream`.
    Blocking,
    /// tokio-rustls on a current-thread tokio runtime.
    Tokio,
}

impl SenderKind {
    fn name(self) -> &'static str {
        match self {
            SenderKind::Blocking => "blocking",
            SenderKind::Tokio => "tokio",
        }
    }
}

/// The message in wire form in a temporary file, removed when dropped.
struct WireFile {
    path: std::path::PathBuf,
}

impl WireFile {
    fn create(wire: &[u8]) -> io::Result<Self> {
        let path = std::env::temp_dir().join(format!(
            "poplar-bench-wire-{}-{}.eml",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos())
        ));
        std::fs::write(&path, wire)?;
        Ok(WireFile { path })
    }
}

impl Drop for WireFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Passes over the stored message when timing its parts.
const PART_PASSES: usize = 5;

/// The stored-message sender's work apart from TLS, each timed alone on this thread:
/// reading the file from the page cache in `write_bytes` reads, and the CRLF conversion
/// with dot-stuffing of the same chunks. Rates in MB/s of the file's octets.
struct StoredParts {
    page_cache_read_mb_s: f64,
    stuffing_mb_s: f64,
}

impl StoredParts {
    fn measure(path: &std::path::Path, bytes: &[u8], chunk: usize) -> io::Result<Self> {
        let mb = bytes.len() as f64 / 1e6;
        let mut buf = vec![0u8; chunk.max(1)];
        let mut read_best = f64::MAX;
        for _ in 0..PART_PASSES {
            let mut file = std::fs::File::open(path)?;
            let t = std::time::Instant::now();
            while file.read(&mut buf)? > 0 {}
            read_best = read_best.min(t.elapsed().as_secs_f64());
        }
        let mut out = Vec::with_capacity(chunk * 2 + 64);
        let mut stuff_best = f64::MAX;
        for _ in 0..PART_PASSES {
            let mut stuffer = pop3_proto::DotStuffer::retr();
            let t = std::time::Instant::now();
            for piece in bytes.chunks(chunk.max(1)) {
                out.clear();
                stuffer.encode(piece, &mut out);
            }
            stuffer.finish(&mut out);
            stuff_best = stuff_best.min(t.elapsed().as_secs_f64());
        }
        Ok(StoredParts {
            page_cache_read_mb_s: mb / read_best.max(1e-9),
            stuffing_mb_s: mb / stuff_best.max(1e-9),
        })
    }
}

const GREETING: &[u8] = b"+OK tls-ceiling sender ready\r\n";
const BYE: &[u8] = b"+OK bye\r\n";
/// Longest command line the sender accepts.
const MAX_LINE: usize = 1024;

pub async fn run(env: &Env, a: Args) -> anyhow::Result<bool> {
    if a.write_bytes == 0 || a.tls_buffer_limit == Some(0) {
        anyhow::bail!("--write-bytes and --tls-buffer-limit must be at least 1");
    }
    let stuffs_each_read = a.from_file.is_some() && !a.wire_form;
    let buffer_limit = a
        .tls_buffer_limit
        .unwrap_or(a.write_bytes * if stuffs_each_read { 2 } else { 1 });
    // Everything the sender sends is built before any timing.
    let mut parts = None;
    let mut wire_file = None;
    let (response, octets) = match &a.from_file {
        None => retr_response(&message(a.size)),
        Some(path) => {
            if a.sender != SenderKind::Blocking {
                anyhow::bail!("--from-file needs --sender blocking");
            }
            // Read once: its pages are then in the cache, and LIST's size is known.
            let bytes =
                std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
            let octets = pop3_proto::crlf_size(&bytes);
            if a.wire_form {
                let mut wire = Vec::with_capacity(bytes.len() + bytes.len() / 16);
                let mut stuffer = pop3_proto::DotStuffer::retr();
                stuffer.encode(&bytes, &mut wire);
                stuffer.finish(&mut wire);
                // The sender adds the terminator itself, after the file.
                wire.truncate(wire.len() - b".\r\n".len());
                let tmp = WireFile::create(&wire)?;
                wire_file = Some(tmp);
            } else {
                parts = Some(StoredParts::measure(path, &bytes, a.write_bytes)?);
            }
            (format!("+OK {octets} octets\r\n").into_bytes(), octets)
        }
    };
    let send_file = match &wire_file {
        Some(w) => Some(w.path.clone()),
        None => a.from_file.clone(),
    };
    let wire_total = response.len();
    let runs = a.repeat.max(1);
    let sender = Sender::start(
        a.sender,
        Job {
            config: server_config()?,
            response: Arc::new(response),
            write_bytes: a.write_bytes,
            buffer_limit,
            conns: runs,
            io_timeout: env.target.op_timeout,
            from_file: send_file,
            verbatim: a.wire_form,
        },
    )?;
    let target = Target {
        host: "127.0.0.1".into(),
        port: sender.port,
        tls_port: sender.port,
        tls: env.target.tls.clone(),
        op_timeout: env.target.op_timeout,
        sources: Default::default(),
    };
    let list = [(1u32, octets)];
    let mut ok = true;
    let mut rates = Vec::new();
    let mut per_run = Vec::new();
    let mut tls = None;
    for run_no in 1..=runs {
        let mut c = Pop3::connect(&target, Mode::Tls, BIG_CHUNK).await?;
        tls = c.tls_info();
        let sender0 = sender.cpu();
        let meter = Meter::start(None);
        let t: Tally = retr::sequential(&mut c, &list).await?;
        let m = meter.stop();
        let sender_cpu_s = sender0.zip(sender.cpu()).map(|(a, b)| b - a);
        c.quit().await?;

        let el = m.seconds.max(1e-9);
        let mb_s = t.octets as f64 / el / 1e6;
        rates.push(mb_s);
        // The process's CPU includes the sender thread's: the client's is the rest.
        let client_cpu_s = (m.client_cpu_s - sender_cpu_s.unwrap_or(0.0)).max(0.0);
        let client_ms_per_mb = 1e3 * client_cpu_s / (t.octets as f64 / 1e6).max(1e-9);
        let mut r = Map::new();
        r.insert("run".into(), json!(run_no));
        r.insert("seconds".into(), round(m.seconds, 4));
        r.insert("MB_per_s".into(), round(mb_s, 1));
        r.insert("client_cpu_pct".into(), round(100.0 * client_cpu_s / el, 1));
        r.insert(
            "sender_cpu_pct".into(),
            sender_cpu_s.map_or(Value::Null, |s| round(100.0 * s / el, 1)),
        );
        r.insert("client_cpu_ms_per_MB".into(), round(client_ms_per_mb, 3));
        r.insert("octets".into(), json!(t.octets));
        r.insert("size_mismatches".into(), json!(t.mismatches));
        per_run.push(Value::Object(r));
        println!(
            "TLS ceiling run {run_no}: {:.1} MB in {:.3}s = {mb_s:.1} MB/s, size mismatches={}, \
             errors={} client_cpu={:.1}% sender_cpu={}{} ({client_ms_per_mb:.2} ms client CPU/MB)",
            t.octets as f64 / 1e6,
            m.seconds,
            t.mismatches,
            t.errors.total(),
            100.0 * client_cpu_s / el,
            sender_cpu_s.map_or_else(|| "?".into(), |s| format!("{:.1}%", 100.0 * s / el)),
            TlsInfo::line(tls.as_ref()),
        );
        ok &= t.print_problems("octets sent") && t.messages == 1;
    }
    sender.join()?;

    let mut sorted = rates.clone();
    sorted.sort_by(f64::total_cmp);
    // The same median as `retr` prints: the upper one for an even count.
    let median = sorted[sorted.len() / 2];
    let best = sorted[sorted.len() - 1];
    println!(
        "TLS ceiling over {} runs ({} sender, {} KiB writes, TLS buffer limit {} KiB, {} \
         message of {octets} octets): median {median:.1} MB/s, best {best:.1} MB/s{}",
        rates.len(),
        a.sender.name(),
        a.write_bytes / 1024,
        buffer_limit / 1024,
        if a.wire_form {
            "stored in wire form (read only)"
        } else if a.from_file.is_some() {
            "stored (read + CRLF + dot-stuffing)"
        } else {
            "in-memory"
        },
        TlsInfo::line(tls.as_ref()),
    );
    if let Some(p) = &parts {
        println!(
            "  its parts on one core, best of {PART_PASSES}: page cache read {:.0} MB/s, \
             CRLF + dot-stuffing {:.0} MB/s (of the stored octets)",
            p.page_cache_read_mb_s, p.stuffing_mb_s
        );
    }
    let mut res = Map::new();
    res.insert("bench".into(), json!("tls_ceiling"));
    if let Some(p) = &parts {
        res.insert(
            "page_cache_read_MBps".into(),
            round(p.page_cache_read_mb_s, 0),
        );
        res.insert("stuffing_MBps".into(), round(p.stuffing_mb_s, 0));
    }
    res.insert("MB_per_s".into(), round(median, 1));
    res.insert("best_MB_per_s".into(), round(best, 1));
    res.insert("runs".into(), Value::Array(per_run));
    res.insert("repeat".into(), json!(runs));
    res.insert("octets".into(), json!(octets));
    res.insert("wire_bytes".into(), json!(wire_total));
    res.insert("message_size_lf".into(), json!(a.size));
    res.insert("sender".into(), json!(a.sender.name()));
    res.insert(
        "source".into(),
        json!(if a.wire_form {
            "wire-file"
        } else if a.from_file.is_some() {
            "file"
        } else {
            "memory"
        }),
    );
    res.insert("write_bytes".into(), json!(a.write_bytes));
    res.insert("tls_buffer_limit".into(), json!(buffer_limit));
    res.insert("read_chunk".into(), json!(BIG_CHUNK));
    res.insert("ok".into(), json!(ok));
    TlsInfo::put(tls.as_ref(), &mut res);
    env.report.emit(res)?;
    Ok(ok)
}

// ------------------------------------------------------------------ the message

/// populate.py's message of exactly `size` bytes (LF line endings): its header, then
/// lines of 76 characters taken from a 64 KiB pool of random letters, digits, `+`, `/`
/// and spaces, every 50th line starting with a dot. The pool comes from a different
/// generator than Python's, so the text differs; the shape is the same.
fn message(size: usize) -> Vec<u8> {
    const LINE: usize = 76;
    const POOL: usize = 65536;
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/ ";
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15 ^ 13;
    let pool: Vec<u8> = (0..POOL)
        .map(|_| {
            // xorshift64*: deterministic, good enough for filler text.
            x ^= x >> 12;
            x ^= x << 25;
            x ^= x >> 27;
            let r = x.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 32;
            ALPHABET[(r % ALPHABET.len() as u64) as usize]
        })
        .collect();
    let header = format!(
        "Return-Path: <sender13@bench.test>\n\
         From: Bench Sender <sender13@bench.test>\n\
         To: big@bench.test\n\
         Subject: bench message 0 seed 13 size {size}\n\
         Date: Tue, 14 Nov 2023 22:13:20 +0000\n\
         Message-ID: <13.0@bench.test>\n\
         MIME-Version: 1.0\n\
         Content-Type: text/plain; charset=us-ascii\n\n"
    );
    let mut out = Vec::with_capacity(size.max(header.len() + 1));
    out.extend_from_slice(header.as_bytes());
    let mut remaining = size.saturating_sub(out.len()).max(1);
    let mut off = (13 * 104_729) % (POOL - LINE);
    let mut n = 0usize;
    // Bounded: every line takes at least one byte of `remaining`.
    while remaining > 0 {
        let take = LINE.min(remaining - 1);
        let start = out.len();
        out.extend_from_slice(&pool[off..off + take]);
        if n % 50 == 49 && take > 0 {
            out[start] = b'.';
        }
        out.push(b'\n');
        remaining -= take + 1;
        off = (off + 131) % (POOL - LINE);
        n += 1;
    }
    out
}

/// The whole answer to RETR as a server sends it: `+OK` line, the message with CRLF
/// line endings and dot-stuffed, the terminator. Also the message's octets after
/// un-stuffing (CRLF included, terminator excluded), what LIST would say.
fn retr_response(msg: &[u8]) -> (Vec<u8>, u64) {
    let lines = msg.split_inclusive(|&b| b == b'\n').count();
    let ends_with_lf = msg.last() == Some(&b'\n');
    // Every line ends with CRLF on the wire, the last one too.
    let octets = (msg.len() + lines + usize::from(!ends_with_lf)) as u64;
    let status = format!("+OK {octets} octets\r\n");
    let mut out = Vec::with_capacity(status.len() + octets as usize + lines / 50 + 8);
    out.extend_from_slice(status.as_bytes());
    for line in msg.split_inclusive(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\n").unwrap_or(line);
        if line.first() == Some(&b'.') {
            out.push(b'.');
        }
        out.extend_from_slice(line);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b".\r\n");
    (out, octets)
}

// ------------------------------------------------------------------ the sender

/// The sender's rustls configuration, built as Poplar builds its own (`tls::load`):
/// aws-lc-rs with its default suites and key exchange groups (Poplar's
/// `tls::cipher_suites` is that same list, in that order), TLS 1.3 and
/// 1.2, no client certificates, ALPN `pop3`, rustls' defaults otherwise; the
/// certificate is a fresh self-signed ECDSA P-256 one, as Poplar makes on first start.
fn server_config() -> anyhow::Result<Arc<ServerConfig>> {
    let provider = aws_lc_rs::default_provider();
    let generated =
        rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()])
            .context("generating the sender's self-signed certificate")?;
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(
        generated.signing_key.serialize_der(),
    ));
    let mut config = ServerConfig::builder_with_provider(Arc::new(provider))
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .context("TLS protocol versions")?
        .with_no_client_auth()
        .with_single_cert(vec![generated.cert.der().clone()], key)
        .context("the sender's certificate")?;
    config.alpn_protocols = vec![b"pop3".to_vec()];
    Ok(Arc::new(config))
}

/// The running sender thread.
struct Sender {
    port: u16,
    tid: Option<u32>,
    handle: JoinHandle<Result<(), String>>,
}

impl Sender {
    /// Binds 127.0.0.1:0 and starts the thread, which serves `conns` connections one
    /// after the other and ends.
    fn start(kind: SenderKind, job: Job) -> anyhow::Result<Sender> {
        let listener = TcpListener::bind("127.0.0.1:0").context("binding 127.0.0.1:0")?;
        let port = listener.local_addr()?.port();
        let (tx, rx) = std::sync::mpsc::channel();
        let handle = std::thread::Builder::new()
            .name("tls-ceiling-sender".into())
            .spawn(move || {
                let _ = tx.send(procstat::current_tid());
                let r = match kind {
                    SenderKind::Blocking => job.serve_blocking(listener),
                    SenderKind::Tokio => job.serve_tokio(listener),
                };
                r.map_err(|e| {
                    let e = format!("tls-ceiling sender: {e}");
                    eprintln!("{e}");
                    e
                })
            })
            .context("starting the sender thread")?;
        let tid = rx.recv_timeout(Duration::from_secs(10)).ok().flatten();
        Ok(Sender { port, tid, handle })
    }

    /// CPU seconds the sender thread used so far.
    fn cpu(&self) -> Option<f64> {
        procstat::thread_cpu(self.tid?)
    }

    fn join(self) -> anyhow::Result<()> {
        match self.handle.join() {
            Ok(r) => r.map_err(anyhow::Error::msg),
            Err(_) => anyhow::bail!("the sender thread panicked"),
        }
    }
}

/// What the sender thread serves.
struct Job {
    config: Arc<ServerConfig>,
    response: Arc<Vec<u8>>,
    write_bytes: usize,
    buffer_limit: usize,
    conns: u32,
    io_timeout: Duration,
    /// With `--from-file`: `response` is only the status line; the body is this file.
    from_file: Option<std::path::PathBuf>,
    /// The file is already in wire form: sent as it is, then the terminator.
    verbatim: bool,
}

impl Job {
    fn serve_blocking(self, listener: TcpListener) -> io::Result<()> {
        for _ in 0..self.conns {
            let (tcp, _) = listener.accept()?;
            tcp.set_nodelay(true)?;
            tcp.set_read_timeout(Some(self.io_timeout))?;
            tcp.set_write_timeout(Some(self.io_timeout))?;
            let mut conn = ServerConnection::new(self.config.clone()).map_err(io::Error::other)?;
            conn.set_buffer_limit(Some(self.buffer_limit));
            let mut s = StreamOwned::new(conn, tcp);
            let mut lines = LineBuf::default();
            s.write_all(GREETING)?;
            s.flush()?;
            lines.read_blocking(&mut s)?;
            match &self.from_file {
                None => {
                    for chunk in self.response.chunks(self.write_bytes) {
                        s.write_all(chunk)?;
                    }
                }
                Some(path) => {
                    // What any server must do with a stored message: read it, CRLF
                    // line ends, dot-stuffing; one write per --write-bytes of input.
                    let mut file = std::fs::File::open(path)?;
                    let mut chunk = vec![0u8; self.write_bytes];
                    let mut out = Vec::with_capacity(self.write_bytes * 2 + 64);
                    out.extend_from_slice(&self.response);
                    let mut stuffer = pop3_proto::DotStuffer::retr();
                    loop {
                        let n = file.read(&mut chunk)?;
                        if n == 0 {
                            break;
                        }
                        if self.verbatim {
                            if !out.is_empty() {
                                s.write_all(&out)?;
                                out.clear();
                            }
                            s.write_all(&chunk[..n])?;
                            continue;
                        }
                        stuffer.encode(&chunk[..n], &mut out);
                        s.write_all(&out)?;
                        out.clear();
                    }
                    if self.verbatim {
                        out.extend_from_slice(b".\r\n");
                    } else {
                        stuffer.finish(&mut out);
                    }
                    s.write_all(&out)?;
                }
            }
            s.flush()?;
            lines.read_blocking(&mut s)?;
            // The client may close as soon as it has read BYE: what follows may fail.
            s.write_all(BYE)?;
            s.conn.send_close_notify();
            let _ = s.flush();
        }
        Ok(())
    }

    fn serve_tokio(self, listener: TcpListener) -> io::Result<()> {
        use tokio::io::AsyncWriteExt as _;
        listener.set_nonblocking(true)?;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        rt.block_on(async {
            let listener = tokio::net::TcpListener::from_std(listener)?;
            let acceptor = tokio_rustls::TlsAcceptor::from(self.config.clone());
            let t = self.io_timeout;
            for _ in 0..self.conns {
                let (tcp, _) = listener.accept().await?;
                tcp.set_nodelay(true)?;
                let conn = async {
                    let mut s = acceptor.accept(tcp).await?;
                    s.get_mut().1.set_buffer_limit(Some(self.buffer_limit));
                    let mut lines = LineBuf::default();
                    s.write_all(GREETING).await?;
                    s.flush().await?;
                    lines.read_async(&mut s).await?;
                    for chunk in self.response.chunks(self.write_bytes) {
                        s.write_all(chunk).await?;
                    }
                    s.flush().await?;
                    lines.read_async(&mut s).await?;
                    s.write_all(BYE).await?;
                    // The client may close as soon as it has read BYE.
                    let _ = s.shutdown().await;
                    Ok::<_, io::Error>(())
                };
                tokio::time::timeout(t * 4, conn).await.map_err(|_| {
                    io::Error::new(io::ErrorKind::TimedOut, "connection timed out")
                })??;
            }
            Ok(())
        })
    }
}

/// The sender's command lines: one line at a time, whatever it says.
#[derive(Default)]
struct LineBuf {
    buf: Vec<u8>,
}

impl LineBuf {
    /// Removes and returns the first complete line, if any.
    fn take(&mut self) -> io::Result<Option<Vec<u8>>> {
        if let Some(i) = memchr::memchr(b'\n', &self.buf) {
            return Ok(Some(self.buf.drain(..=i).collect()));
        }
        if self.buf.len() > MAX_LINE {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "command line too long",
            ));
        }
        Ok(None)
    }

    fn read_blocking<R: Read>(&mut self, r: &mut R) -> io::Result<Vec<u8>> {
        let mut chunk = [0u8; 256];
        loop {
            if let Some(line) = self.take()? {
                return Ok(line);
            }
            let n = r.read(&mut chunk)?;
            if n == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    async fn read_async<R: tokio::io::AsyncRead + Unpin>(
        &mut self,
        r: &mut R,
    ) -> io::Result<Vec<u8>> {
        use tokio::io::AsyncReadExt as _;
        let mut chunk = [0u8; 256];
        loop {
            if let Some(line) = self.take()? {
                return Ok(line);
            }
            let n = r.read(&mut chunk).await?;
            if n == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::body::{self, BodyScan, Step};

    #[test]
    fn the_message_has_populate_py_shape_and_its_answer_scans_to_its_size() {
        for size in [500, 4096, 123_457] {
            let msg = message(size);
            assert_eq!(msg.len(), size);
            assert_eq!(msg.last(), Some(&b'\n'));
            let body_lines: Vec<&[u8]> = msg.split(|&b| b == b'\n').collect();
            assert!(body_lines.iter().all(|l| l.len() <= 76 + 10));
            let dotted = body_lines
                .iter()
                .filter(|l| l.first() == Some(&b'.'))
                .count();
            assert!(size < 4096 || dotted > 0, "size {size}: no dot lines");

            let (wire, octets) = retr_response(&msg);
            assert_eq!(
                octets as usize,
                size + msg.iter().filter(|&&b| b == b'\n').count()
            );
            let status_end = memchr::memmem::find(&wire, b"\r\n").unwrap();
            assert_eq!(
                &wire[..status_end],
                format!("+OK {octets} octets").as_bytes()
            );
            // The scan the client does, from the status line's CRLF.
            let mut s = BodyScan::new();
            match s.scan(&body::finder(), &wire[status_end..]) {
                Step::Done { next } => assert_eq!(status_end + next, wire.len()),
                other => panic!("size {size}: {other:?}"),
            }
            assert_eq!(s.octets(), octets, "size {size}");
            assert_eq!(s.stuffed as usize, dotted, "size {size}");
            assert_eq!(s.unstuffed_dot_lines, 0);
        }
    }

    #[test]
    fn the_big_message_is_as_large_on_the_wire_as_populate_py_big() {
        // populate.py's `big`: 50,000,000 bytes on disk, 50,649,357 octets in LIST
        // (one CR per line); the header here differs from its by a few bytes.
        let (_, octets) = retr_response(&message(50_000_000));
        assert!(octets.abs_diff(50_649_357) < 16, "{octets}");
    }

    #[test]
    fn the_sender_and_the_retr_client_agree() {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let msg = message(300_000);
        let stored =
            std::env::temp_dir().join(format!("poplar-ceiling-{}.eml", std::process::id()));
        std::fs::write(&stored, &msg).unwrap();
        let mut wire_form = Vec::new();
        let mut stuffer = pop3_proto::DotStuffer::retr();
        stuffer.encode(&msg, &mut wire_form);
        stuffer.finish(&mut wire_form);
        wire_form.truncate(wire_form.len() - 3);
        let wire_file = WireFile::create(&wire_form).unwrap();
        for (kind, from_file, verbatim) in [
            (SenderKind::Blocking, None, false),
            (SenderKind::Tokio, None, false),
            (SenderKind::Blocking, Some(stored.clone()), false),
            (SenderKind::Blocking, Some(wire_file.path.clone()), true),
        ] {
            let (mut wire, octets) = retr_response(&msg);
            if from_file.is_some() {
                // The file's body is stuffed by the sender itself: only the status line.
                assert_eq!(pop3_proto::crlf_size(&msg), octets);
                wire = format!("+OK {octets} octets\r\n").into_bytes();
            }
            let sender = Sender::start(
                kind,
                Job {
                    config: server_config().unwrap(),
                    response: Arc::new(wire),
                    write_bytes: 7_000,
                    buffer_limit: 7_000,
                    conns: 2,
                    io_timeout: Duration::from_secs(20),
                    from_file,
                    verbatim,
                },
            )
            .unwrap();
            assert!(sender.cpu().is_some(), "the sender thread's CPU");
            let tls = crate::tls::Tls::new(&crate::tls::TlsOptions {
                cafile: None,
                sni: "localhost".into(),
                tls_max: None,
                classical_kx: false,
                resume: false,
            })
            .unwrap();
            let target = Target {
                host: "127.0.0.1".into(),
                port: sender.port,
                tls_port: sender.port,
                tls,
                op_timeout: Duration::from_secs(20),
                sources: Default::default(),
            };
            rt.block_on(async {
                for _ in 0..2 {
                    let mut c = Pop3::connect(&target, Mode::Tls, 4096).await.unwrap();
                    let info = c.tls_info().unwrap();
                    assert_eq!(info.version, "TLSv1_3");
                    assert_eq!(info.suite, "TLS13_AES_256_GCM_SHA384");
                    let t = retr::sequential(&mut c, &[(1, octets)]).await.unwrap();
                    assert_eq!((t.messages, t.mismatches), (1, 0), "{kind:?}");
                    assert_eq!(t.octets, octets);
                    c.quit().await.unwrap();
                }
            });
            sender.join().unwrap();
        }
        let _ = std::fs::remove_file(&stored);
        let gone = wire_file.path.clone();
        drop(wire_file);
        assert!(!gone.exists(), "the wire-form file is removed");
    }
}
