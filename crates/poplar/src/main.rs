//! `poplar`: the one binary. A thin shell over the server, auth, directory and maildir
//! crates: `serve`, `user ...`, `lockout list|clear`, `import ...`, `config check`.
#![forbid(unsafe_code)]

mod demo;
mod import;
mod lockout;
mod user;

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use server::{Config, Dir};
use tokio::signal::unix::{SignalKind, signal};
use tokio_util::sync::CancellationToken;

#[derive(Parser)]
#[command(
    name = "poplar",
    version,
    about = "A POP3 server with modern authentication"
)]
struct Cli {
    /// Configuration file (TOML). Without one, the embedded default is used: a data
    /// folder `poplar-data` in the working directory and loopback listeners.
    #[arg(long, global = true, env = "POPLAR_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server until SIGTERM or SIGINT; SIGHUP reloads certificates.
    Serve {
        /// First run only: create user `demo` with a random password (printed once)
        /// and a few sample messages.
        #[arg(long)]
        demo: bool,
    },
    /// Manage users.
    #[command(subcommand)]
    User(user::UserCommand),
    /// Show and lift sign-in locks, throttles and address bans.
    #[command(subcommand)]
    Lockout(lockout::LockoutCommand),
    /// Bring state over from a previous server.
    #[command(subcommand)]
    Import(import::ImportCommand),
    /// Configuration.
    #[command(subcommand)]
    Config(ConfigCommand),
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Validate the configuration, print the effective values and warn about insecure settings.
    Check,
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    init_logging();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("poplar: cannot start the runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("poplar: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("POPLAR_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if std::env::var("POPLAR_LOG_FORMAT").is_ok_and(|f| f == "json") {
        builder.json().init();
    } else {
        builder.init();
    }
}

fn load_config(path: Option<&PathBuf>) -> anyhow::Result<Config> {
    match path {
        Some(p) => Ok(Config::load(p)?),
        None => Ok(Config::default()),
    }
}

async fn open_directory(config: &Config) -> anyhow::Result<Arc<Dir>> {
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("creating data folder {}", config.data_dir.display()))?;
    let dir = Dir::open(&config.directory_path())
        .await
        .with_context(|| format!("opening directory {}", config.directory_path().display()))?;
    Ok(Arc::new(dir))
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let config = load_config(cli.config.as_ref())?;
    match cli.command {
        Command::Serve { demo } => serve(config, demo).await,
        Command::User(cmd) => user::run(cmd, &config, open_directory(&config).await?).await,
        Command::Lockout(cmd) => lockout::run(cmd, &config, open_directory(&config).await?).await,
        Command::Import(cmd) => import::run(cmd, &config, open_directory(&config).await?).await,
        Command::Config(ConfigCommand::Check) => {
            print!("{}", toml::to_string_pretty(&config)?);
            let warnings = config.warnings();
            for w in &warnings {
                eprintln!("warning: {w}");
            }
            eprintln!("configuration is valid ({} warnings)", warnings.len());
            Ok(())
        }
    }
}

async fn serve(config: Config, demo: bool) -> anyhow::Result<()> {
    for w in config.warnings() {
        tracing::warn!("{w}");
    }
    let dir = open_directory(&config).await?;
    let demo_login = if demo {
        demo::prepare(&config, dir.clone()).await?
    } else {
        None
    };
    let server = server::Server::bind(config.clone(), dir).await?;
    // Signal handlers go in before `ready` is printed, so a supervisor that sends
    // SIGTERM as soon as it sees `ready` always gets a graceful shutdown.
    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    let mut hup = signal(SignalKind::hangup()).context("installing the SIGHUP handler")?;
    let addrs = server.local_addrs();
    for (kind, addr) in &addrs {
        println!("listening {} {addr}", kind.name());
    }
    println!("certificate sha256 {}", server.fingerprint());
    if let Some(password) = demo_login {
        demo::print_instructions(&config, &addrs, &password);
    }
    println!("ready");

    // SIGHUP: the general reload hook (certificates today). Sessions stay open.
    let reloader = server.reloader();
    tokio::spawn(async move {
        while hup.recv().await.is_some() {
            tracing::info!("SIGHUP: reloading");
            let reloader = reloader.clone();
            // `reload` logs its outcome; a failure keeps the previous certificates.
            let _ = tokio::task::spawn_blocking(move || reloader.reload()).await;
        }
    });

    let shutdown = CancellationToken::new();
    let signals = shutdown.clone();
    tokio::spawn(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        tracing::info!("shutting down");
        signals.cancel();
    });
    server.run(shutdown).await
}
