//! The connection driver: reads bytes, frames them, feeds the session, performs the
//! actions it returns and writes responses in batches (RFC 2449 PIPELINING: all the
//! answers to one packet of commands leave in as few writes as possible).

mod lease;
mod maildrop;
mod signin;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use auth::Authenticator;
use maildir::{Maildir, MaildropGuard, MessageEntry};
use pop3_proto::{
    Action, Capabilities, CommandKind, Frame, LineFramer, Session, SessionConfig, TlsInfo,
};
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

use crate::admission::{Admission, Ticket};
use crate::audit::{AuditLog, Record};
use crate::config::Config;
use crate::metrics::{HandshakeFailure, Metrics, SessionGauge};
use crate::{Dir, ListenerKind};

/// Responses are flushed when this much is waiting, and messages are read in chunks
/// of this size, so a session's buffers stay bounded whatever the message size.
const CHUNK: usize = 64 * 1024;
/// Bytes read from the client at a time.
const READ_BUFFER: usize = 4 * 1024;
/// Output buffer capacity kept while a session waits for its next command: more is
/// given back (a response's buffer costs one allocation; thousands of idle sessions
/// holding 4 KiB each cost 4 KiB a session).
const IDLE_OUT_CAPACITY: usize = 512;
/// How much encrypted output rustls may queue before a write waits for the socket:
/// room for a whole chunk of a large message as stuffed (a few per cent more than was
/// read; twice at most, when every octet read is a line end), so that each chunk goes
/// out in one `writev` (with exactly one chunk's worth, the last few KiB of every chunk
/// took a second write).
const TLS_SEND_BUFFER: usize = 2 * maildrop::MESSAGE_CHUNK;
/// Time allowed for a TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(30);
/// Time allowed for the last words to a connection shed to make room, and for TLS's
/// close_notify at the end of a session (a client that reads nothing more cannot keep
/// its task, socket and place).
const SHED_WRITE_TIMEOUT: Duration = Duration::from_secs(2);
const CLOSE_NOTIFY_TIMEOUT: Duration = Duration::from_secs(5);

/// What every connection shares.
pub(crate) struct Shared {
    pub config: Config,
    pub auth: Authenticator<Dir>,
    pub acceptor: TlsAcceptor,
    /// The connection limit, the per-address and per-network caps, and shedding.
    pub admission: Arc<Admission>,
    /// The audit log.
    pub audit: AuditLog,
    /// Security notices to users.
    pub notices: Arc<crate::notices::Notices>,
    /// Live sessions, for the control socket.
    pub registry: Arc<crate::control::Registry>,
    /// What `/metrics` serves.
    pub metrics: Arc<Metrics>,
    /// Hands out session ids.
    pub sessions: Arc<SessionIds>,
    /// Checks bearer tokens (OAUTHBEARER, XOAUTH2) when issuers are configured.
    pub oauth: Option<Arc<oauth::OAuthVerifier>>,
    /// This process's random id, naming it as the owner of maildrop leases.
    pub node: String,
}

/// Session ids unique across restarts: the process's start time, then a counter.
pub(crate) struct SessionIds {
    prefix: String,
    next: std::sync::atomic::AtomicU64,
}

impl SessionIds {
    pub(crate) fn new() -> Self {
        let started = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        SessionIds {
            prefix: format!("{started:x}"),
            next: std::sync::atomic::AtomicU64::new(1),
        }
    }

    fn next(&self) -> String {
        let n = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        format!("{}-{n}", self.prefix)
    }
}

/// What the audit log's `disconnect` line reports.
#[derive(Default)]
struct Stats {
    retrieved: u64,
    deleted: u64,
    bytes_sent: u64,
}

/// The signed-in user's open maildrop.
struct OpenMaildrop {
    maildir: Maildir,
    entries: Vec<MessageEntry>,
    /// Held for the whole session: the lock behind `[IN-USE]`.
    _guard: MaildropGuard,
    /// The lease behind `[IN-USE]` across nodes, when the directory is shared.
    _lease: Option<lease::Lease>,
    /// Small messages read ahead while a client pipelines RETRs (bounded, and
    /// dropped whenever the session waits for input).
    read_ahead: maildrop::ReadAhead,
    /// The message the last RETR sent (read-ahead starts on consecutive RETRs).
    last_sent: Option<usize>,
}

/// Which timer ended a wait for input.
#[derive(Clone, Copy)]
enum Timeout {
    Idle,
    Line,
    SignIn,
}

/// How one leg of the connection (before or after STLS) ended.
enum Leg {
    Closed,
    StartTls,
}

pub(crate) struct Connection {
    shared: Arc<Shared>,
    peer: SocketAddr,
    kind: ListenerKind,
    shutdown: CancellationToken,
    session: Session,
    framer: LineFramer,
    out: Vec<u8>,
    /// The canonical name of the signed-in (or signing-in) user.
    user: Option<String>,
    maildir_path: Option<std::path::PathBuf>,
    maildrop: Option<OpenMaildrop>,
    /// The connection is under TLS now.
    tls: bool,
    /// The SCRAM exchange in progress: keys and account from the lookup.
    scram: Option<auth::ScramLookup>,
    /// The user a verified TLS client certificate names, or why it names none.
    cert_identity: Option<Result<String, &'static str>>,
    /// When the connection was accepted (the sign-in timer starts here).
    started: tokio::time::Instant,
    /// When the line now in the framer began arriving.
    partial_since: Option<tokio::time::Instant>,
    /// Command lines received.
    commands: u64,
    /// The session id in the audit log.
    id: String,
    /// The listener's address.
    local: Option<SocketAddr>,
    stats: Stats,
    /// How the connection ended, for the audit log.
    end: &'static str,
    /// The server's own shutdown token (`shutdown` is this session's child of it).
    server_shutdown: CancellationToken,
    /// The negotiated TLS version, cipher suite and SNI, once under TLS.
    tls_version: Option<String>,
    tls_cipher: Option<String>,
    sni: Option<String>,
    /// This session in `poplar_sessions`, from `run` on.
    gauge: Option<SessionGauge>,
    /// Its place under the connection limit; shed while silent before sign-in.
    ticket: Ticket,
    /// In the ticket's waiting order now (admitted connections start there).
    sheddable: bool,
}

impl Connection {
    pub(crate) fn new(
        shared: Arc<Shared>,
        peer: SocketAddr,
        kind: ListenerKind,
        shutdown: CancellationToken,
        ticket: Ticket,
    ) -> Self {
        let limits = &shared.config.limits;
        let session = Session::new(SessionConfig {
            capabilities: Capabilities {
                login_delay_secs: (shared.config.defence.login_delay_secs > 0)
                    .then_some(shared.config.defence.login_delay_secs),
                // Advertised only because open_maildrop and update enforce it.
                expire_days: shared.config.store.expire_days,
                ..Capabilities::default()
            },
            tls_active: kind == ListenerKind::Pop3s,
            stls_offered: kind == ListenerKind::Pop3,
            plaintext_allowed: shared.config.plaintext_allowed(peer.ip()),
            mechanisms: shared.config.sasl.parsed(),
            oauth_offered: shared.oauth.is_some(),
            max_bad_commands: limits.max_bad_commands,
            greeting: "Poplar POP3 server ready".into(),
            apop_timestamp: shared
                .config
                .apop
                .enabled
                .then(|| apop_timestamp(&shared.config.hostname)),
        });
        let framer = LineFramer::new(limits.max_command_line, limits.max_auth_line);
        Self {
            shared,
            peer,
            kind,
            // Its own token: cancelled by a server shutdown or by `poplar sessions end`.
            shutdown: shutdown.child_token(),
            session,
            framer,
            out: Vec::new(),
            user: None,
            maildir_path: None,
            maildrop: None,
            tls: false,
            scram: None,
            cert_identity: None,
            started: tokio::time::Instant::now(),
            partial_since: None,
            commands: 0,
            id: String::new(),
            local: None,
            stats: Stats::default(),
            end: "closed",
            tls_version: None,
            tls_cipher: None,
            sni: None,
            server_shutdown: shutdown,
            gauge: None,
            ticket,
            sheddable: true,
        }
    }

    /// A record about this connection, addresses and session id filled in.
    fn record<'a>(&'a self, event: &'a str) -> Record<'a> {
        Record {
            event,
            session: Some(&self.id),
            listener: Some(self.kind.name()),
            tls_version: self.tls_version.clone(),
            tls_cipher: self.tls_cipher.clone(),
            sni: self.sni.clone(),
            ..Record::default()
        }
        .addresses(self.peer, self.local)
    }

    /// Whether the whole server is stopping (rather than this one session being ended).
    fn server_shutting_down(&self) -> bool {
        self.server_shutdown.is_cancelled()
    }

    /// Writes one audit record about this connection.
    fn audit(&self, record: Record<'_>) {
        self.shared.audit.write(record);
    }

    pub(crate) async fn run(mut self, mut tcp: TcpStream) {
        tracing::debug!(peer = %self.peer, listener = self.kind.name(), "connection opened");
        self.id = self.shared.sessions.next();
        self.gauge = Some(self.shared.metrics.session());
        self.local = tcp.local_addr().ok();
        self.audit(self.record("connect"));
        self.shared.registry.add(crate::control::LiveSession {
            session: self.id.clone(),
            user: None,
            src: crate::control::src(self.peer),
            listener: self.kind.name(),
            state: "authorization",
            since: crate::audit::rfc3339_ms(self.shared.auth.guard().now()),
            end: self.shutdown.clone(),
        });
        // One handshake and one TLS leg for both listeners: each await point of an async
        // function takes its own room in the task, which every idle session carries.
        let plaintext_leg = self.kind == ListenerKind::Pop3;
        if plaintext_leg {
            self.session.greeting(&mut self.out);
        }
        let upgrade = !plaintext_leg || matches!(self.drive(&mut tcp).await, Ok(Leg::StartTls));
        if upgrade {
            // Bytes the client pipelined after STLS arrived unprotected; they are never
            // read as commands (RFC 2595 section 4).
            self.framer.clear();
            // The handshake counts as silence (from admission on the TLS port, from STLS
            // on the plain one): a client that stalls it can be shed.
            if plaintext_leg {
                self.ticket.waiting();
                self.sheddable = true;
            }
            // Boxed: the handshake's state is large and needed only briefly.
            if let Some(mut tls) = Box::pin(self.handshake(tcp)).await {
                let info = self.tls_info(&tls);
                self.session.tls_started(info);
                if !plaintext_leg {
                    self.session.greeting(&mut self.out);
                }
                let _ = self.drive(&mut tls).await;
                let _ = tokio::time::timeout(CLOSE_NOTIFY_TIMEOUT, tls.shutdown()).await;
            }
        }
        tracing::debug!(peer = %self.peer, "connection closed");
        self.shared.registry.remove(&self.id);
        self.audit(Record {
            user: self.user.as_deref(),
            end: Some(self.end),
            retrieved: Some(self.stats.retrieved),
            deleted: Some(self.stats.deleted),
            bytes_sent: Some(self.stats.bytes_sent),
            ..self.record("disconnect")
        });
    }

    async fn handshake(
        &mut self,
        tcp: TcpStream,
    ) -> Option<tokio_rustls::server::TlsStream<TcpStream>> {
        let shed = self.ticket.shed_token().clone();
        let handshake = tokio::select! {
            _ = shed.cancelled() => {
                self.was_shed();
                return None;
            }
            handshake = tokio::time::timeout(HANDSHAKE_TIMEOUT, self.shared.acceptor.accept(tcp)) => handshake,
        };
        match handshake {
            Ok(Ok(mut tls)) => {
                self.tls = true;
                // rustls queues at most 64 KiB of records by default, so each chunk of a
                // large RETR went out in many small writes; one chunk per write costs a
                // third less CPU (measured with `poplar-bench tls-ceiling`).
                tls.get_mut().1.set_buffer_limit(Some(TLS_SEND_BUFFER));
                let conn = tls.get_ref().1;
                self.shared.metrics.tls_handshake(conn.protocol_version());
                self.tls_version = conn.protocol_version().map(|v| format!("{v:?}"));
                self.tls_cipher = conn
                    .negotiated_cipher_suite()
                    .map(|c| format!("{:?}", c.suite()));
                self.sni = conn.server_name().map(str::to_owned);
                self.audit(self.record("tls"));
                Some(tls)
            }
            Ok(Err(e)) => {
                tracing::info!(peer = %self.peer, error = %e, "TLS handshake failed");
                self.end = "tls_failed";
                self.shared
                    .metrics
                    .tls_handshake_failed(HandshakeFailure::Error);
                self.audit(Record {
                    reason: Some("handshake_failed"),
                    ..self.record("tls_failed")
                });
                None
            }
            Err(_) => {
                tracing::info!(peer = %self.peer, "TLS handshake timed out");
                self.end = "tls_failed";
                self.shared
                    .metrics
                    .tls_handshake_failed(HandshakeFailure::Timeout);
                self.audit(Record {
                    reason: Some("handshake_timeout"),
                    ..self.record("tls_failed")
                });
                None
            }
        }
    }

    /// Closed to make room near the connection limit: said once, in the audit log
    /// (`end: busy`) and the metrics.
    fn was_shed(&mut self) {
        tracing::debug!(peer = %self.peer, "closing a silent connection to make room");
        self.end = "busy";
        self.shared.metrics.shed(self.kind.into());
    }

    /// What the handshake established; remembers the client certificate's user.
    fn tls_info(&mut self, tls: &tokio_rustls::server::TlsStream<TcpStream>) -> TlsInfo {
        let conn = tls.get_ref().1;
        let tls_config = &self.shared.config.tls;
        self.cert_identity = conn
            .peer_certificates()
            .and_then(|c| c.first())
            .map(|leaf| {
                crate::tls::client_identity(
                    leaf,
                    tls_config.client_identity,
                    &tls_config.revoked_client_certs,
                )
            });
        TlsInfo {
            channel_binding: channel_binding(conn),
            client_certificate: self.cert_identity.is_some(),
        }
    }

    /// Runs the session over one stream until it closes or asks for TLS.
    async fn drive<S: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        stream: &mut S,
    ) -> std::io::Result<Leg> {
        // Commands are short: a small read buffer keeps idle sessions cheap (long AUTH
        // lines just take several reads).
        let mut buf = vec![0u8; READ_BUFFER];
        loop {
            while let Some(frame) = self.framer.next_frame(self.session.expects_sasl_response()) {
                // A complete command: the connection speaks, so it is not shed while it
                // is served; unless it was shed while the command arrived, and then its
                // place is someone else's and nothing it sent is carried out.
                if self.sheddable {
                    if !self.ticket.working() {
                        return self.close_shed(stream).await;
                    }
                    self.sheddable = false;
                }
                self.commands += 1;
                self.partial_since = None;
                if self.commands > self.shared.config.limits.max_commands {
                    // Not in UPDATE: nothing is deleted, the maildrop lock is released.
                    pop3_proto::response::err(
                        &mut self.out,
                        None,
                        "too many commands in one session, closing connection",
                    );
                    self.end = "command_limit";
                    self.flush(stream).await?;
                    return Ok(Leg::Closed);
                }
                let started = std::time::Instant::now();
                // A fixed keyword for the latency histogram, never the line itself.
                let (command, action) = match frame {
                    // A PROXY header where none may come (the first line of a direct
                    // connection, or a second header behind a proxy): a client
                    // pretending to be a load balancer. Closed without an answer.
                    Frame::Line(line) if self.commands == 1 && line.starts_with(b"PROXY ") => {
                        tracing::info!(peer = %self.peer, "PROXY header from an untrusted address; closing");
                        self.shared.metrics.refused(crate::metrics::Refused::Proxy);
                        self.audit(Record {
                            reason: Some(crate::metrics::Refused::Proxy.as_str()),
                            ..self.record("refused")
                        });
                        self.end = "proxy_untrusted";
                        return Ok(Leg::Closed);
                    }
                    Frame::Line(line) => {
                        let command = if self.session.expects_sasl_response() {
                            CommandKind::Auth
                        } else {
                            CommandKind::of(&line)
                        };
                        (command, self.session.handle_line(&line, &mut self.out))
                    }
                    Frame::TooLong => (
                        CommandKind::Other,
                        self.session.line_too_long(&mut self.out),
                    ),
                };
                // Boxed: what a command does (a sign-in, a maildrop scan, a RETR, UPDATE)
                // is a large state machine; inline, every idle session's task would
                // carry its size (25 KB) while it waits for its next command.
                let next = Box::pin(self.perform(action, stream)).await?;
                self.shared.metrics.command(command, started.elapsed());
                match next {
                    Some(Leg::Closed) => {
                        self.flush(stream).await?;
                        return Ok(Leg::Closed);
                    }
                    Some(Leg::StartTls) => {
                        self.flush(stream).await?;
                        return Ok(Leg::StartTls);
                    }
                    None => {}
                }
                if self.out.len() >= CHUNK {
                    self.flush(stream).await?;
                }
            }
            self.flush(stream).await?;
            // A RETR may have grown the output buffer to a few hundred KiB, and a
            // pipelining client left messages read ahead; a waiting session keeps neither.
            if self.out.capacity() > IDLE_OUT_CAPACITY {
                self.out = Vec::new();
            }
            if let Some(m) = &mut self.maildrop {
                m.read_ahead = Default::default();
            }

            let limits = &self.shared.config.limits;
            let now = tokio::time::Instant::now();
            let idle = Duration::from_secs(if self.session.in_transaction() {
                limits.idle_timeout_transaction_secs
            } else {
                limits.idle_timeout_auth_secs
            });
            // The earliest of: the idle timer; the time to finish a line already begun
            // (a slowloris client trickling bytes never resets it); the time to sign in.
            let mut deadline = (now + idle, Timeout::Idle);
            if self.framer.has_buffered() {
                let since = *self.partial_since.get_or_insert(now);
                let line_end = since + Duration::from_secs(limits.line_timeout_secs);
                if line_end < deadline.0 {
                    deadline = (line_end, Timeout::Line);
                }
            } else {
                self.partial_since = None;
            }
            if !self.session.in_transaction() {
                let auth_end = self.started + Duration::from_secs(limits.auth_timeout_secs);
                if auth_end < deadline.0 {
                    deadline = (auth_end, Timeout::SignIn);
                }
            }
            // Not signed in: from now on it may be shed to make room if it stays silent
            // (bytes that make no complete command do not count as speaking).
            if !self.session.in_transaction() && !self.sheddable {
                self.ticket.waiting();
                self.sheddable = true;
            }
            let shed = self.ticket.shed_token().clone();
            let read = tokio::select! {
                biased;
                _ = shed.cancelled() => return self.close_shed(stream).await,
                _ = self.shutdown.cancelled() => {
                    // Not in UPDATE here (UPDATE never waits for input): nothing is deleted.
                    let lease_lost = self
                        .maildrop
                        .as_ref()
                        .and_then(|m| m._lease.as_ref())
                        .is_some_and(|l| l.lost());
                    let (text, end) = if self.server_shutting_down() {
                        ("server shutting down, try again later", "shutdown")
                    } else if lease_lost {
                        (
                            "this maildrop may be in use on another server now; session ended, nothing deleted",
                            "lease_lost",
                        )
                    } else {
                        ("session ended by the administrator", "ended_by_admin")
                    };
                    pop3_proto::response::err(&mut self.out, Some(pop3_proto::RespCode::SysTemp), text);
                    self.end = end;
                    self.flush(stream).await?;
                    return Ok(Leg::Closed);
                }
                read = tokio::time::timeout_at(deadline.0, stream.read(&mut buf)) => read,
            };
            match read {
                Err(_) => {
                    // RFC 1939 section 3: the autologout timer closes without UPDATE.
                    let text = match deadline.1 {
                        Timeout::Idle => "idle for too long, closing connection",
                        Timeout::Line => "command line not completed in time, closing connection",
                        Timeout::SignIn => "sign-in not completed in time, closing connection",
                    };
                    tracing::debug!(peer = %self.peer, text, "connection timed out");
                    self.end = match deadline.1 {
                        Timeout::Idle => "idle_timeout",
                        Timeout::Line => "line_timeout",
                        Timeout::SignIn => "sign_in_timeout",
                    };
                    pop3_proto::response::err(&mut self.out, None, text);
                    self.flush(stream).await?;
                    return Ok(Leg::Closed);
                }
                Ok(Ok(0)) => {
                    self.end = "client_closed";
                    return Ok(Leg::Closed);
                }
                Ok(Ok(n)) => self.framer.push(&buf[..n]),
                Ok(Err(e)) => {
                    self.end = "error";
                    return Err(e);
                }
            }
        }
    }

    async fn flush<S: AsyncWrite + Unpin>(&mut self, stream: &mut S) -> std::io::Result<()> {
        self.write_out(stream).await?;
        self.with_write_timeout(stream.flush()).await
    }

    /// Writes what is waiting in `out`. A client that stops reading is cut off after
    /// the idle timeout instead of holding its session (and maildrop lock) forever.
    async fn write_out<S: AsyncWrite + Unpin>(&mut self, stream: &mut S) -> std::io::Result<()> {
        if !self.out.is_empty() {
            let out = std::mem::take(&mut self.out);
            let written = self.with_write_timeout(stream.write_all(&out)).await;
            if written.is_ok() {
                self.stats.bytes_sent += out.len() as u64;
                self.shared.metrics.bytes_sent(out.len() as u64);
            }
            self.out = out;
            self.out.clear();
            written?;
        }
        Ok(())
    }

    /// Closes a connection shed to make room: a line on the plain leg, said within two
    /// seconds or not at all.
    async fn close_shed<S: AsyncWrite + Unpin>(&mut self, stream: &mut S) -> std::io::Result<Leg> {
        self.was_shed();
        pop3_proto::response::err(
            &mut self.out,
            Some(pop3_proto::RespCode::SysTemp),
            "server busy, closing connection; try again later",
        );
        let _ = tokio::time::timeout(SHED_WRITE_TIMEOUT, self.flush(stream)).await;
        Ok(Leg::Closed)
    }

    /// Bounds a write: a client that stops reading is cut off after the idle timeout
    /// of its state (before sign-in the shorter one), so it cannot hold its place.
    async fn with_write_timeout<F: std::future::Future<Output = std::io::Result<()>>>(
        &self,
        write: F,
    ) -> std::io::Result<()> {
        let limits = &self.shared.config.limits;
        let secs = if self.session.in_transaction() {
            limits.idle_timeout_transaction_secs
        } else {
            limits.idle_timeout_auth_secs
        };
        match tokio::time::timeout(Duration::from_secs(secs), write).await {
            Ok(result) => result,
            Err(_) => Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "client stopped reading",
            )),
        }
    }

    /// Carries out one action and any that follow from it.
    async fn perform<S: AsyncWrite + Unpin>(
        &mut self,
        mut action: Action,
        stream: &mut S,
    ) -> std::io::Result<Option<Leg>> {
        loop {
            action = match action {
                Action::None => return Ok(None),
                Action::SaslFailed {
                    mechanism,
                    user,
                    reason,
                } => {
                    tracing::info!(peer = %self.peer, mechanism, reason, "SASL exchange failed");
                    self.audit(Record {
                        user: user.as_deref(),
                        mechanism: Some(mechanism),
                        result: Some("failure"),
                        reason: Some(reason),
                        ..self.record("auth")
                    });
                    Action::None
                }
                Action::Close => {
                    self.end = if self.session.closed_for_bad_commands() {
                        "bad_commands"
                    } else {
                        "quit"
                    };
                    return Ok(Some(Leg::Closed));
                }
                Action::StartTls => return Ok(Some(Leg::StartTls)),
                Action::Authenticate(req) => {
                    let outcome = self.authenticate(req).await;
                    self.session.auth_result(outcome, &mut self.out)
                }
                Action::VerifyToken {
                    authzid,
                    token,
                    mechanism,
                } => {
                    self.verify_token(authzid.as_deref(), &token, mechanism)
                        .await
                }
                Action::LookupScram { user } => self.lookup_scram(&user).await,
                Action::External { authzid } => {
                    let outcome = self.external(authzid.as_deref()).await;
                    self.session.auth_result(outcome, &mut self.out)
                }
                Action::Apop {
                    user,
                    digest,
                    timestamp,
                } => {
                    let outcome = self.apop(&user, &timestamp, &digest).await;
                    self.session.auth_result(outcome, &mut self.out)
                }
                Action::ConfirmScram {
                    authzid,
                    user,
                    proof_ok,
                    mechanism,
                } => {
                    let outcome = self
                        .confirm_scram(authzid.as_deref(), &user, proof_ok, mechanism)
                        .await;
                    self.session.auth_result(outcome, &mut self.out)
                }
                Action::OpenMaildrop => {
                    let started = std::time::Instant::now();
                    let result = self.open_maildrop().await;
                    self.shared.metrics.maildrop_opened(started.elapsed());
                    if result.is_ok() {
                        self.shared
                            .registry
                            .update(&self.id, self.user.as_deref(), "transaction");
                        if let Some(gauge) = &mut self.gauge {
                            gauge.enter_transaction();
                        }
                    }
                    self.session.maildrop_opened(result, &mut self.out)
                }
                Action::SendMessage { index, top_lines } => {
                    // Counted (audit and metrics) once the message is open and going out.
                    self.send_message(index, top_lines, stream).await?;
                    Action::None
                }
                Action::Update { delete, retrieved } => {
                    let deleting = delete.len() as u64;
                    let result = self.update(delete, retrieved).await;
                    if result.is_ok() {
                        self.stats.deleted += deleting;
                        self.shared.metrics.deleted(deleting);
                    }
                    self.session.update_result(result, &mut self.out)
                }
            };
        }
    }
}

/// RFC 9266 `tls-exporter` channel-binding data, on TLS 1.3 only: with TLS 1.2 the
/// exporter is unsafe without extended master secret, so -PLUS is not offered there.
fn channel_binding(conn: &rustls::ServerConnection) -> Option<[u8; 32]> {
    if conn.protocol_version() != Some(rustls::ProtocolVersion::TLSv1_3) {
        return None;
    }
    conn.export_keying_material([0u8; 32], b"EXPORTER-Channel-Binding", None)
        .ok()
}

/// A timestamp unique to this connection, in RFC 1939's `<process-ID.clock@hostname>`
/// form, with random bits so it cannot be predicted or repeated.
fn apop_timestamp(hostname: &str) -> String {
    let mut random = [0u8; 8];
    let _ = getrandom::fill(&mut random);
    let random: String = random.iter().map(|b| format!("{b:02x}")).collect();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    format!("<{}.{random}.{now}@{hostname}>", std::process::id())
}
