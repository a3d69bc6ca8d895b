//! Interop with an independent SCRAM client: rsasl's, driven by hand over POP3 AUTH
//! (RFC 5034) against the real `poplar` binary. Checks SCRAM-SHA-256-PLUS with the
//! RFC 9266 `tls-exporter` channel binding on TLS 1.3 (implicit TLS and STLS), that a
//! wrong binding is refused, plain SCRAM-SHA-256 (flags `n` and `y`), and that TLS 1.2
//! never offers -PLUS. SCRAM-SHA-256-PLUS is opt-in (`sasl.mechanisms`); the server here
//! lists it as an administrator who turns it on would.

use std::io::{BufRead, BufReader as StdBufReader, Write as _};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, mpsc};
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use rsasl::callback::{Context, Request, SessionCallback, SessionData};
use rsasl::mechanisms::scram::{SCRAM_SHA256, SCRAM_SHA256_PLUS};
use rsasl::prelude::*;
use rsasl::property::{AuthId, OverrideCBType, Password};
use rsasl::validate::NoValidation;
use rustls::ProtocolVersion;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::time::timeout;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

const TIMEOUT: Duration = Duration::from_secs(10);
const USER: &str = "alice";
const PASSWORD: &str = "alice-Secret-1";
const TLS13: &[&rustls::SupportedProtocolVersion] = &[&rustls::version::TLS13];
const TLS12: &[&rustls::SupportedProtocolVersion] = &[&rustls::version::TLS12];

/// The mechanisms the rsasl client may choose from.
static MECHANISMS: &[Mechanism] = &[SCRAM_SHA256_PLUS, SCRAM_SHA256];

// ---------------------------------------------------------------------------------------
// The server process
// ---------------------------------------------------------------------------------------

/// A running `poplar serve`; killed (and reaped) on drop, also when a test panics.
struct Server {
    child: Option<Child>,
    dir: tempfile::TempDir,
    pop3s: u16,
    pop3: u16,
}

impl Server {
    fn start() -> Server {
        let bin = env!("CARGO_BIN_EXE_poplar");
        let dir = tempfile::tempdir().expect("tempdir");
        let data = dir.path().join("data");
        let cfg = dir.path().join("poplar.toml");
        std::fs::write(
            &cfg,
            format!(
                "data_dir = '{}'\n\
                 [listen]\n\
                 pop3 = [\"127.0.0.1:0\"]\n\
                 pop3s = [\"127.0.0.1:0\"]\n\
                 [metrics]\n\
                 listen = \"127.0.0.1:0\"\n\
                 [web]\n\
                 listen = \"127.0.0.1:0\"\n\
                 [auth]\n\
                 failure_delay_ms = 0\n\
                 argon2_memory_kib = 1024\n\
                 argon2_iterations = 1\n\
                 [sasl]\n\
                 mechanisms = [\"SCRAM-SHA-256-PLUS\", \"SCRAM-SHA-256\", \"PLAIN\", \"LOGIN\"]\n\
                 scram_iterations = 4096\n",
                data.display()
            ),
        )
        .expect("write config");

        let mut add = Command::new(bin)
            .arg("--config")
            .arg(&cfg)
            .args(["user", "add", USER, "--password-stdin", "--allow-weak"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn poplar user add");
        add.stdin
            .take()
            .expect("stdin")
            .write_all(format!("{PASSWORD}\n").as_bytes())
            .expect("write password");
        let out = add.wait_with_output().expect("poplar user add");
        assert!(
            out.status.success(),
            "poplar user add failed: {:?}\nstdout: {}\nstderr: {}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );

        let log = std::fs::File::create(dir.path().join("server.log")).expect("log file");
        let mut child = Command::new(bin)
            .arg("--config")
            .arg(&cfg)
            .arg("serve")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .expect("spawn poplar serve");
        let stdout = child.stdout.take().expect("stdout");
        let mut server = Server {
            child: Some(child),
            dir,
            pop3s: 0,
            pop3: 0,
        };

        // A thread drains stdout for the server's whole life, so the pipe never fills.
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in StdBufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        loop {
            let line = rx
                .recv_timeout(TIMEOUT)
                .unwrap_or_else(|e| panic!("no `ready` from poplar serve: {e}"));
            if line == "ready" {
                break;
            }
            let port = |addr: &str| addr.parse::<SocketAddr>().expect("listen address").port();
            if let Some(addr) = line.strip_prefix("listening pop3s ") {
                server.pop3s = port(addr);
            } else if let Some(addr) = line.strip_prefix("listening pop3 ") {
                server.pop3 = port(addr);
            }
        }
        assert!(server.pop3s != 0 && server.pop3 != 0, "ports not announced");
        server
    }

    fn cert(&self) -> PathBuf {
        self.dir.path().join("data/tls/cert.pem")
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if std::thread::panicking()
            && let Ok(log) = std::fs::read_to_string(self.dir.path().join("server.log"))
        {
            eprintln!("--- poplar server log ---\n{log}--- end of server log ---");
        }
    }
}

// ---------------------------------------------------------------------------------------
// A line-based POP3 client over rustls
// ---------------------------------------------------------------------------------------

fn client_config(
    server: &Server,
    versions: &[&'static rustls::SupportedProtocolVersion],
) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(server.cert()).expect("read cert.pem") {
        roots.add(cert.expect("parse cert.pem")).expect("add root");
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_protocol_versions(versions)
    .expect("protocol versions")
    .with_root_certificates(roots)
    .with_no_client_auth();
    Arc::new(config)
}

async fn handshake(
    tcp: TcpStream,
    server: &Server,
    versions: &[&'static rustls::SupportedProtocolVersion],
) -> TlsStream<TcpStream> {
    let connector = TlsConnector::from(client_config(server, versions));
    let name = ServerName::try_from("localhost").expect("server name");
    timeout(TIMEOUT, connector.connect(name, tcp))
        .await
        .expect("TLS handshake timed out")
        .expect("TLS handshake")
}

async fn tcp(port: u16) -> TcpStream {
    timeout(TIMEOUT, TcpStream::connect(("127.0.0.1", port)))
        .await
        .expect("connect timed out")
        .expect("connect")
}

/// Reads one line before TLS (STLS), with the same timeout.
async fn read_plain(plain: &mut BufReader<TcpStream>, transcript: &mut Vec<String>) -> String {
    let mut buf = Vec::new();
    let n = timeout(TIMEOUT, plain.read_until(b'\n', &mut buf))
        .await
        .expect("read timed out")
        .expect("read");
    assert!(n > 0, "connection closed");
    let line = String::from_utf8(buf).expect("utf-8 line");
    let line = line.trim_end_matches(['\r', '\n']).to_owned();
    transcript.push(format!("S: {line}"));
    line
}

struct Pop3 {
    io: BufReader<TlsStream<TcpStream>>,
    transcript: Vec<String>,
}

impl Pop3 {
    /// POP3 over implicit TLS (the pop3s listener); reads the greeting.
    async fn implicit_tls(
        server: &Server,
        versions: &[&'static rustls::SupportedProtocolVersion],
    ) -> Pop3 {
        let tls = handshake(tcp(server.pop3s).await, server, versions).await;
        let mut pop = Pop3 {
            io: BufReader::new(tls),
            transcript: Vec::new(),
        };
        let greeting = pop.line().await;
        assert!(greeting.starts_with("+OK"), "greeting: {greeting:?}");
        pop
    }

    /// POP3 on the plain listener, upgraded with STLS.
    async fn stls(server: &Server, versions: &[&'static rustls::SupportedProtocolVersion]) -> Pop3 {
        let mut plain = BufReader::new(tcp(server.pop3).await);
        let mut transcript = Vec::new();
        let greeting = read_plain(&mut plain, &mut transcript).await;
        assert!(greeting.starts_with("+OK"), "greeting: {greeting:?}");
        plain
            .get_mut()
            .write_all(b"STLS\r\n")
            .await
            .expect("send STLS");
        transcript.push("C: STLS".to_owned());
        let reply = read_plain(&mut plain, &mut transcript).await;
        assert!(reply.starts_with("+OK"), "STLS: {reply:?}");
        assert!(plain.buffer().is_empty(), "bytes after the STLS reply");
        let tls = handshake(plain.into_inner(), server, versions).await;
        transcript.push("-- TLS handshake --".to_owned());
        Pop3 {
            io: BufReader::new(tls),
            transcript,
        }
    }

    fn tls(&self) -> &rustls::ClientConnection {
        self.io.get_ref().get_ref().1
    }

    /// RFC 9266 `tls-exporter` channel-binding data, as the client sees it.
    fn exporter(&self) -> Vec<u8> {
        self.tls()
            .export_keying_material([0u8; 32], b"EXPORTER-Channel-Binding", None)
            .expect("export keying material")
            .to_vec()
    }

    fn note(&mut self, note: String) {
        self.transcript.push(format!("   {note}"));
    }

    fn dump(&self) -> String {
        self.transcript.join("\n")
    }

    async fn send(&mut self, line: &str) {
        let mut bytes = line.as_bytes().to_vec();
        bytes.extend_from_slice(b"\r\n");
        timeout(TIMEOUT, async {
            self.io.write_all(&bytes).await?;
            self.io.flush().await
        })
        .await
        .expect("write timed out")
        .expect("write");
        self.transcript.push(format!("C: {line}"));
    }

    async fn line(&mut self) -> String {
        let mut buf = Vec::new();
        let n = timeout(TIMEOUT, self.io.read_until(b'\n', &mut buf))
            .await
            .unwrap_or_else(|_| panic!("read timed out\n{}", self.dump()))
            .expect("read");
        assert!(n > 0, "connection closed by the server\n{}", self.dump());
        let line = String::from_utf8(buf).expect("utf-8 line");
        let line = line.trim_end_matches(['\r', '\n']).to_owned();
        self.transcript.push(format!("S: {line}"));
        line
    }

    async fn cmd(&mut self, line: &str) -> String {
        self.send(line).await;
        self.line().await
    }

    /// CAPA; returns the capability lines.
    async fn capa(&mut self) -> Vec<String> {
        let first = self.cmd("CAPA").await;
        assert!(first.starts_with("+OK"), "CAPA: {first:?}\n{}", self.dump());
        let mut lines = Vec::new();
        loop {
            let line = self.line().await;
            if line == "." {
                return lines;
            }
            lines.push(line);
        }
    }

    async fn sasl_line(&mut self) -> String {
        let capa = self.capa().await;
        capa.into_iter()
            .find(|l| l.starts_with("SASL "))
            .unwrap_or_else(|| panic!("no SASL capability\n{}", self.dump()))
    }

    async fn expect_stat_empty_and_quit(&mut self) {
        let stat = self.cmd("STAT").await;
        assert_eq!(stat, "+OK 0 0", "\n{}", self.dump());
        let quit = self.cmd("QUIT").await;
        assert!(quit.starts_with("+OK"), "QUIT: {quit:?}\n{}", self.dump());
        // Shown with --nocapture.
        eprintln!("{}", self.dump());
    }

    async fn expect_not_signed_in(&mut self) {
        let stat = self.cmd("STAT").await;
        assert!(
            stat.starts_with("-ERR"),
            "STAT answered before sign-in: {stat:?}\n{}",
            self.dump()
        );
    }
}

// ---------------------------------------------------------------------------------------
// The rsasl client
// ---------------------------------------------------------------------------------------

struct Creds {
    password: &'static str,
    channel_binding: bool,
    /// Forces a channel-binding type (rsasl's `OverrideCBType`); `None` lets rsasl choose.
    cb_type: Option<&'static str>,
}

impl SessionCallback for Creds {
    fn callback(
        &self,
        _session_data: &SessionData,
        _context: &Context,
        request: &mut Request,
    ) -> Result<(), SessionError> {
        if let Some(cb_type) = self.cb_type {
            request.satisfy::<OverrideCBType>(cb_type)?;
        }
        request
            .satisfy::<AuthId>(USER)?
            .satisfy::<Password>(self.password.as_bytes())?;
        Ok(())
    }

    fn enable_channel_binding(&self) -> bool {
        self.channel_binding
    }
}

/// Hands rsasl the channel-binding data, whatever type it asks for (the gs2 header it
/// sends shows which one it chose).
struct Binding(Option<Vec<u8>>);

impl ChannelBindingCallback for Binding {
    fn get_cb_data(&self, _cbname: &str) -> Option<&[u8]> {
        self.0.as_deref()
    }
}

fn sasl_session(
    offered: &str,
    creds: Creds,
    binding: Option<Vec<u8>>,
) -> Session<NoValidation, Binding> {
    let offered: Vec<&Mechname> = offered
        .split_whitespace()
        .filter(|m| *m != "SASL")
        .map(|m| Mechname::parse(m.as_bytes()).expect("mechanism name"))
        .collect();
    let config = SASLConfig::builder()
        .with_registry(Registry::with_mechanisms(MECHANISMS))
        .with_callback(creds)
        .expect("rsasl config");
    SASLClient::with_cb(config, Binding(binding))
        .start_suggested(&offered)
        .expect("rsasl start")
}

#[derive(Debug)]
enum Outcome {
    SignedIn,
    /// The server answered `-ERR` to the message sent in this step.
    Refused {
        after: &'static str,
        line: String,
    },
    /// rsasl rejected the server's message (after which we cancelled with `*`).
    #[allow(dead_code, reason = "read through Debug in failure messages")]
    ClientRejected(String),
}

struct Exchange {
    mechanism: String,
    gs2_header: String,
    outcome: Outcome,
}

/// `+ data` (or a bare `+`) → the data; anything else → `None`.
fn continuation(line: &str) -> Option<&str> {
    if line == "+" {
        Some("")
    } else {
        line.strip_prefix("+ ")
    }
}

/// Runs one AUTH exchange, RFC 5034 style, with the rsasl session doing the SCRAM side.
async fn authenticate(pop: &mut Pop3, mut session: Session<NoValidation, Binding>) -> Exchange {
    let mechanism = session.get_mechname().as_str().to_owned();
    let mut exchange = Exchange {
        mechanism: mechanism.clone(),
        gs2_header: String::new(),
        outcome: Outcome::SignedIn,
    };
    let refused = |after, line| Outcome::Refused { after, line };

    let reply = pop.cmd(&format!("AUTH {mechanism}")).await;
    let Some(challenge) = continuation(&reply) else {
        exchange.outcome = refused("AUTH", reply);
        return exchange;
    };
    assert!(
        challenge.is_empty(),
        "AUTH without initial response must get an empty challenge: {reply:?}"
    );

    let mut out = Vec::new();
    let state = session.step(None, &mut out).expect("rsasl client-first");
    assert_eq!(state, State::Running);
    let client_first = String::from_utf8(out).expect("client-first is text");
    exchange.gs2_header = client_first
        .splitn(3, ',')
        .take(2)
        .collect::<Vec<_>>()
        .join(",")
        + ",";
    pop.note(format!("[client-first] {client_first}"));
    pop.send(&STANDARD.encode(&client_first)).await;

    let reply = pop.line().await;
    let Some(server_first) = continuation(&reply) else {
        exchange.outcome = refused("client-first", reply);
        return exchange;
    };
    let server_first = STANDARD.decode(server_first).expect("server-first base64");
    pop.note(format!(
        "[server-first] {}",
        String::from_utf8_lossy(&server_first)
    ));
    let mut out = Vec::new();
    if let Err(e) = session.step(Some(&server_first), &mut out) {
        exchange.outcome = Outcome::ClientRejected(format!("server-first: {e}"));
        pop.cmd("*").await;
        return exchange;
    }
    let client_final = String::from_utf8(out).expect("client-final is text");
    pop.note(format!("[client-final] {client_final}"));
    pop.send(&STANDARD.encode(&client_final)).await;

    let reply = pop.line().await;
    let Some(server_final) = continuation(&reply) else {
        exchange.outcome = refused("client-final", reply);
        return exchange;
    };
    let server_final = STANDARD.decode(server_final).expect("server-final base64");
    pop.note(format!(
        "[server-final] {}",
        String::from_utf8_lossy(&server_final)
    ));
    match session.step(Some(&server_final), &mut Vec::new()) {
        Ok(State::Finished(MessageSent::No)) => {}
        Ok(other) => panic!("rsasl not finished after server-final: {other:?}"),
        Err(e) => {
            exchange.outcome = Outcome::ClientRejected(format!("server-final: {e}"));
            pop.cmd("*").await;
            return exchange;
        }
    }
    let reply = pop.cmd("").await;
    if !reply.starts_with("+OK") {
        exchange.outcome = refused("empty response", reply);
    }
    exchange
}

fn assert_auth_refused(pop: &Pop3, ex: &Exchange, step: &str) {
    match &ex.outcome {
        Outcome::Refused { after, line } => {
            assert_eq!(*after, step, "refused at another step\n{}", pop.dump());
            assert!(
                line.starts_with("-ERR [AUTH]"),
                "refusal without [AUTH]: {line:?}\n{}",
                pop.dump()
            );
        }
        other => panic!(
            "expected a refusal after {step}, got {other:?}\n{}",
            pop.dump()
        ),
    }
}

fn assert_signed_in(pop: &Pop3, ex: &Exchange) {
    assert!(
        matches!(ex.outcome, Outcome::SignedIn),
        "expected sign-in, got {:?}\n{}",
        ex.outcome,
        pop.dump()
    );
}

const CREDS_PLUS: Creds = Creds {
    password: PASSWORD,
    channel_binding: true,
    cb_type: None,
};

// ---------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------

/// A full SCRAM-SHA-256-PLUS sign-in with the connection's real exporter data.
async fn plus_signs_in(mut pop: Pop3) {
    assert_eq!(pop.tls().protocol_version(), Some(ProtocolVersion::TLSv1_3));

    let sasl = pop.sasl_line().await;
    assert_eq!(sasl, "SASL SCRAM-SHA-256-PLUS SCRAM-SHA-256 PLAIN LOGIN");

    let exporter = pop.exporter();
    let ex = authenticate(&mut pop, sasl_session(&sasl, CREDS_PLUS, Some(exporter))).await;
    assert_eq!(ex.mechanism, "SCRAM-SHA-256-PLUS");
    assert_eq!(ex.gs2_header, "p=tls-exporter,,", "\n{}", pop.dump());
    assert_signed_in(&pop, &ex);
    pop.expect_stat_empty_and_quit().await;
}

#[tokio::test]
async fn scram_sha256_plus_with_tls_exporter_signs_in() {
    let server = Server::start();
    plus_signs_in(Pop3::implicit_tls(&server, TLS13).await).await;
}

#[tokio::test]
async fn scram_sha256_plus_after_stls_signs_in() {
    let server = Server::start();
    plus_signs_in(Pop3::stls(&server, TLS13).await).await;
}

#[tokio::test]
async fn scram_sha256_plus_with_wrong_binding_fails() {
    let server = Server::start();
    let mut pop = Pop3::implicit_tls(&server, TLS13).await;
    let sasl = pop.sasl_line().await;

    // The right type with altered data: refused once the proof (and c=) arrives.
    let mut wrong = pop.exporter();
    wrong[0] ^= 0x01;
    let ex = authenticate(&mut pop, sasl_session(&sasl, CREDS_PLUS, Some(wrong))).await;
    assert_eq!(ex.gs2_header, "p=tls-exporter,,");
    assert_auth_refused(&pop, &ex, "client-final");
    pop.expect_not_signed_in().await;
    // A relayed exchange is an attack signal: the audit log names it.
    let audit = server.dir.path().join("data").join("audit.log");
    let mut logged = false;
    for _ in 0..100 {
        let text = std::fs::read_to_string(&audit).unwrap_or_default();
        if text.lines().any(|l| {
            l.contains("\"reason\":\"channel_binding_mismatch\"")
                && l.contains("\"mechanism\":\"SCRAM-SHA-256-PLUS\"")
                && l.contains("\"result\":\"failure\"")
        }) {
            logged = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(logged, "no channel_binding_mismatch line in the audit log");

    // A channel-binding type Poplar does not support.
    let unique = Creds {
        cb_type: Some("tls-unique"),
        ..CREDS_PLUS
    };
    let exporter = pop.exporter();
    let ex = authenticate(&mut pop, sasl_session(&sasl, unique, Some(exporter))).await;
    assert_eq!(ex.gs2_header, "p=tls-unique,,");
    assert!(
        matches!(&ex.outcome, Outcome::Refused { line, .. } if line.starts_with("-ERR")),
        "tls-unique accepted: {:?}\n{}",
        ex.outcome,
        pop.dump()
    );
    pop.expect_not_signed_in().await;

    // The session lives on: CAPA still works, and a correct attempt signs in.
    assert_eq!(pop.sasl_line().await, sasl);
    let exporter = pop.exporter();
    let ex = authenticate(&mut pop, sasl_session(&sasl, CREDS_PLUS, Some(exporter))).await;
    assert_signed_in(&pop, &ex);
    pop.expect_stat_empty_and_quit().await;
}

#[tokio::test]
async fn scram_sha256_without_plus_signs_in() {
    let server = Server::start();
    let mut pop = Pop3::implicit_tls(&server, TLS13).await;
    assert_eq!(pop.tls().protocol_version(), Some(ProtocolVersion::TLSv1_3));
    let sasl = pop.sasl_line().await;

    // A wrong password: refused after the proof.
    let wrong = Creds {
        password: "alice-Secret-2",
        channel_binding: false,
        cb_type: None,
    };
    let ex = authenticate(&mut pop, sasl_session(&sasl, wrong, None)).await;
    assert_eq!(ex.mechanism, "SCRAM-SHA-256");
    assert_eq!(ex.gs2_header, "n,,");
    assert_auth_refused(&pop, &ex, "client-final");
    pop.expect_not_signed_in().await;

    // Flag `y` ("I could bind, but you can't") while -PLUS is offered means -PLUS was
    // stripped on the way: RFC 5802 section 6 says the server must fail it.
    let exporter = pop.exporter();
    let ex = authenticate(
        &mut pop,
        sasl_session("SCRAM-SHA-256", CREDS_PLUS, Some(exporter)),
    )
    .await;
    assert_eq!(ex.mechanism, "SCRAM-SHA-256");
    assert_eq!(ex.gs2_header, "y,,");
    assert!(
        matches!(&ex.outcome, Outcome::Refused { line, .. } if line.starts_with("-ERR")),
        "downgrade flag y accepted: {:?}\n{}",
        ex.outcome,
        pop.dump()
    );
    pop.expect_not_signed_in().await;

    // No channel binding (flag `n`) with the right password: signed in.
    let right = Creds {
        password: PASSWORD,
        channel_binding: false,
        cb_type: None,
    };
    let ex = authenticate(&mut pop, sasl_session(&sasl, right, None)).await;
    assert_eq!(ex.mechanism, "SCRAM-SHA-256");
    assert_eq!(ex.gs2_header, "n,,");
    assert_signed_in(&pop, &ex);
    pop.expect_stat_empty_and_quit().await;
}

#[tokio::test]
async fn tls12_does_not_offer_plus() {
    let server = Server::start();
    let mut pop = Pop3::implicit_tls(&server, TLS12).await;
    assert_eq!(pop.tls().protocol_version(), Some(ProtocolVersion::TLSv1_2));

    let sasl = pop.sasl_line().await;
    assert!(!sasl.contains("-PLUS"), "TLS 1.2 offers -PLUS: {sasl:?}");
    assert!(
        sasl.split_whitespace().any(|m| m == "SCRAM-SHA-256"),
        "no SCRAM-SHA-256: {sasl:?}"
    );

    let reply = pop.cmd("AUTH SCRAM-SHA-256-PLUS").await;
    assert!(
        reply.starts_with("-ERR"),
        "AUTH -PLUS over TLS 1.2: {reply:?}"
    );
    pop.expect_not_signed_in().await;

    // A client that could bind sees no -PLUS and sends `y`: correct here, so it signs in.
    let ex = authenticate(&mut pop, sasl_session(&sasl, CREDS_PLUS, None)).await;
    assert_eq!(ex.mechanism, "SCRAM-SHA-256");
    assert_eq!(ex.gs2_header, "y,,");
    assert_signed_in(&pop, &ex);
    pop.expect_stat_empty_and_quit().await;
}
