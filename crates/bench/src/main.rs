//! `poplar-bench`: a load generator for any POP3 server, the Rust successor of
//! `shared/bench/pop3bench.py` (same scenario names and JSON fields), fast enough that
//! the client is not what limits the measurement.
//!
//! ```text
//! poplar-bench [common] login    --concurrency 8 --duration 15 --max-logins 5000
//! poplar-bench [common] retr     [--pipeline] [--max-msgs N] [--repeat R]
//! poplar-bench [common] scale    --repeat 2
//! poplar-bench [common] idle     --sessions 1000 --open-concurrency 16 --settle 3
//! poplar-bench [common] failures --concurrency 4 --count 100
//! poplar-bench [common] check
//! poplar-bench [--json F --label L] tls-ceiling --repeat 3
//! ```
//! Every loop is bounded by a count and a time limit; every network operation has a
//! timeout (`--timeout`).
#![forbid(unsafe_code)]

mod body;
mod conn;
mod procstat;
mod readbuf;
mod report;
mod scenario;
mod tls;

use std::time::Duration;

use clap::{Parser, Subcommand};

use conn::{AuthKind, Mode, Target};

#[derive(Parser)]
#[command(
    name = "poplar-bench",
    version,
    about = "Load generator for POP3 servers",
    args_override_self = true
)]
struct Cli {
    #[command(flatten)]
    common: Common,
    #[command(subcommand)]
    scenario: Scenario,
}

#[derive(clap::Args)]
struct Common {
    #[arg(long, global = true, default_value = "127.0.0.1")]
    host: String,
    /// Plain POP3 port (also used for STLS).
    #[arg(long, global = true, default_value_t = 21110)]
    port: u16,
    /// Implicit-TLS port.
    #[arg(long, global = true, default_value_t = 21995)]
    tls_port: u16,
    /// User name; `{i}` is replaced by a number in [--user-offset, --user-offset + --users)
    /// so that sessions spread over many maildrops (e.g. `u{i}`).
    #[arg(long, global = true, default_value = "alice")]
    user: String,
    /// How many users `{i}` in --user ranges over.
    #[arg(long, global = true, default_value_t = 1)]
    users: u64,
    /// First number substituted for `{i}`.
    #[arg(long, global = true, default_value_t = 0)]
    user_offset: u64,
    /// Password (the same for every `{i}` user).
    #[arg(long, global = true, default_value = "", hide_default_value = true)]
    password: String,
    /// A file of `USER PASSWORD` lines (for example app passwords, one per user);
    /// users not in it use --password.
    #[arg(long, global = true)]
    password_file: Option<String>,
    #[arg(long, global = true, value_enum, default_value_t = Mode::Tls)]
    mode: Mode,
    /// USER/PASS or AUTH PLAIN with an initial response.
    #[arg(long, global = true, value_enum, default_value_t = AuthKind::User)]
    auth: AuthKind,
    /// CA or certificate (PEM) to verify the server against, or `none` to accept any
    /// certificate (the handshake signature is still checked).
    #[arg(long, global = true, default_value = "none")]
    cafile: String,
    /// TLS server name (SNI and certificate check).
    #[arg(long, global = true, default_value = "localhost")]
    sni: String,
    /// Pin the TLS version: TLSv1_2 or TLSv1_3.
    #[arg(long, global = true)]
    tls_max: Option<String>,
    /// Offer only X25519 and P-256 key exchange (no X25519MLKEM768 hybrid), like
    /// OpenSSL 3.0 clients.
    #[arg(long, global = true)]
    classical_kx: bool,
    /// Let rustls resume TLS sessions (off: every connection is a full handshake).
    #[arg(long, global = true)]
    tls_resume: bool,
    /// Root PID of the server's process tree: report its CPU, RSS and PSS.
    #[arg(long, global = true)]
    server_pid: Option<u32>,
    /// Append one JSON result line per run to this file.
    #[arg(long, global = true)]
    json: Option<String>,
    /// Free text carried into the JSON line (e.g. server and configuration).
    #[arg(long, global = true, default_value = "", hide_default_value = true)]
    label: String,
    /// Timeout of every network operation, in seconds.
    #[arg(long, global = true, default_value_t = 120.0)]
    timeout: f64,
    /// Connect from this many loopback addresses in turn, 127.x.y.1, each in a /24 of
    /// its own (0: the system's choice, 127.0.0.1).
    #[arg(long, global = true, default_value_t = 0)]
    sources: u32,
    /// Runtime worker threads (default: the number of cores).
    #[arg(long, global = true)]
    threads: Option<usize>,
}

#[derive(Subcommand)]
enum Scenario {
    /// Connect, sign in, STAT, QUIT in a loop: sign-ins per second and latency.
    Login(scenario::login::Args),
    /// Sign in, LIST, RETR every message; check each size against LIST.
    Retr(scenario::retr::Args),
    /// Sign in + STAT + UIDL (full listing) + QUIT latency, per repeat.
    Scale(scenario::scale::Args),
    /// Hold many authenticated sessions; server memory per session.
    Idle(scenario::idle::Args),
    /// Response time of failed sign-ins, by reason.
    Failures(scenario::failures::Args),
    /// CAPA, STLS and sign-in smoke test.
    Check,
    /// The loopback TLS ceiling of one large RETR: an in-memory sender in this process,
    /// the `retr` client. No server needed.
    TlsCeiling(scenario::ceiling::Args),
}

/// User names from a `{i}` template.
#[derive(Clone)]
pub struct Users {
    template: String,
    count: u64,
    offset: u64,
}

impl Users {
    /// The `k`-th user name (wrapping around the range).
    pub fn name(&self, k: u64) -> String {
        if self.template.contains("{i}") {
            let i = self.offset + k % self.count.max(1);
            self.template.replace("{i}", &i.to_string())
        } else {
            self.template.clone()
        }
    }

    /// How many distinct maildrops the template names.
    pub fn distinct(&self) -> u64 {
        if self.template.contains("{i}") {
            self.count.max(1)
        } else {
            1
        }
    }
}

/// The password of each user: one for all, or per user from a file.
#[derive(Clone)]
pub struct Passwords {
    default: String,
    by_user: std::sync::Arc<std::collections::HashMap<String, String>>,
}

impl Passwords {
    fn load(default: &str, file: Option<&str>) -> anyhow::Result<Self> {
        let mut by_user = std::collections::HashMap::new();
        if let Some(path) = file {
            let text = std::fs::read_to_string(path)
                .map_err(|e| anyhow::anyhow!("reading --password-file {path}: {e}"))?;
            for (n, line) in text.lines().enumerate() {
                let line = line.trim();
                if line.is_empty() || line.starts_with('#') {
                    continue;
                }
                let Some((user, password)) = line.split_once(char::is_whitespace) else {
                    anyhow::bail!("--password-file {path} line {}: not `USER PASSWORD`", n + 1);
                };
                by_user.insert(user.to_owned(), password.trim().to_owned());
            }
        }
        Ok(Passwords {
            default: default.to_owned(),
            by_user: std::sync::Arc::new(by_user),
        })
    }

    /// The password of `user`.
    pub fn of(&self, user: &str) -> &str {
        self.by_user.get(user).map_or(&self.default, String::as_str)
    }
}

/// Everything a scenario needs from the command line.
pub struct Env {
    pub target: Target,
    pub mode: Mode,
    pub auth: AuthKind,
    pub users: Users,
    pub passwords: Passwords,
    pub server_pid: Option<u32>,
    pub report: report::Context,
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let c = &cli.common;
    let mut rt = tokio::runtime::Builder::new_multi_thread();
    rt.enable_all();
    if let Some(n) = c.threads {
        rt.worker_threads(n.max(1));
    }
    let rt = match rt.build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("poplar-bench: cannot start the runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(cli)) {
        Ok(true) => std::process::ExitCode::SUCCESS,
        Ok(false) => std::process::ExitCode::from(1),
        Err(e) => {
            eprintln!("poplar-bench: {e:#}");
            std::process::ExitCode::from(2)
        }
    }
}

/// Runs the scenario; `Ok(false)` when it ran but found errors.
async fn run(cli: Cli) -> anyhow::Result<bool> {
    let c = cli.common;
    if matches!(cli.scenario, Scenario::TlsCeiling(_)) && c.cafile != "none" {
        anyhow::bail!(
            "tls-ceiling: its sender has a fresh self-signed certificate; leave --cafile at none"
        );
    }
    let tls = tls::Tls::new(&tls::TlsOptions {
        cafile: (c.cafile != "none").then(|| c.cafile.clone()),
        sni: c.sni.clone(),
        tls_max: c.tls_max.clone(),
        classical_kx: c.classical_kx,
        resume: c.tls_resume,
    })?;
    if !(c.timeout > 0.0 && c.timeout.is_finite()) {
        anyhow::bail!("--timeout must be a positive number of seconds");
    }
    let env = Env {
        target: Target {
            host: c.host.clone(),
            port: c.port,
            tls_port: c.tls_port,
            tls,
            op_timeout: Duration::from_secs_f64(c.timeout),
            sources: std::sync::Arc::new(conn::Sources::loopback(c.sources)),
        },
        mode: c.mode,
        auth: c.auth,
        users: Users {
            template: c.user.clone(),
            count: c.users,
            offset: c.user_offset,
        },
        passwords: Passwords::load(&c.password, c.password_file.as_deref())?,
        server_pid: c.server_pid,
        report: report::Context {
            host: c.host,
            mode: c.mode.name(),
            auth: match c.auth {
                AuthKind::User => "user",
                AuthKind::Plain => "plain",
            },
            user: c.user,
            label: c.label,
            json: c.json,
        },
    };
    match cli.scenario {
        Scenario::Login(a) => scenario::login::run(&env, a).await,
        Scenario::Retr(a) => scenario::retr::run(&env, a).await,
        Scenario::Scale(a) => scenario::scale::run(&env, a).await,
        Scenario::Idle(a) => scenario::idle::run(&env, a).await,
        Scenario::Failures(a) => scenario::failures::run(&env, a).await,
        Scenario::Check => scenario::check::run(&env).await,
        Scenario::TlsCeiling(a) => scenario::ceiling::run(&env, a).await,
    }
}
