//! `poplar`: the one binary. A thin shell over the server, auth, directory and maildir
//! crates: `serve`, `user ...`, `passwords ...`, `mfa ...`, `app-password ...`,
//! `lockout list|clear`, `sessions`, `import ...`, `audit`, `config check`, `key
//! init|show`, `directory copy`, `completions`, `manpage`.
#![forbid(unsafe_code)]

mod audit_report;
mod backup;
mod confirm;
mod demo;
mod exit;
mod import;
mod key;
mod lockout;
mod logging;
mod mail_location;
mod mfa;
mod notify;
mod passwords;
mod progress;
mod sessions;
mod user;
mod user_show;

use std::path::{Path, PathBuf};
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
    /// Configuration file (TOML). Without one, /etc/poplar/poplar.toml when it exists
    /// (except for `serve --demo`), else the embedded default: a data folder
    /// `poplar-data` in the working directory and loopback listeners.
    #[arg(long, global = true, env = "POPLAR_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server until SIGTERM or SIGINT; SIGHUP reloads the configuration and certificates.
    Serve {
        /// First run only: create user `demo` with a random password (printed once)
        /// and a few sample messages.
        #[arg(long)]
        demo: bool,
    },
    /// Manage users.
    #[command(subcommand)]
    User(user::UserCommand),
    /// Two-factor sign-in (TOTP) for a user.
    #[command(subcommand)]
    Mfa(mfa::MfaCommand),
    /// App passwords: what mail clients use when two-factor sign-in is on.
    #[command(subcommand)]
    AppPassword(mfa::AppPasswordCommand),
    /// List the running server's live sessions, or end one.
    Sessions {
        #[command(subcommand)]
        command: Option<sessions::SessionsCommand>,
    },
    /// The password policy: load a breached-password corpus, check a password.
    #[command(subcommand)]
    Passwords(passwords::PasswordsCommand),
    /// Show and lift sign-in locks, throttles and address bans.
    #[command(subcommand)]
    Lockout(lockout::LockoutCommand),
    /// Report the weak points of the accounts and the configuration, each with what to
    /// do about it (text, or `--json`).
    Audit(audit_report::AuditArgs),
    /// Bring state over from a previous server.
    #[command(subcommand)]
    Import(import::ImportCommand),
    /// Configuration.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Back up the directory and the Maildir state Poplar owns (and, with
    /// `--with-mail`, the mail) into a new folder, while the server runs; `backup
    /// verify DEST` checks one against its manifest.
    Backup(backup::BackupArgs),
    /// Restore a backup into the configured directory (an empty data folder, or an
    /// empty PostgreSQL database) and put back each user's Maildir state.
    Restore {
        /// The backup folder.
        src: PathBuf,
    },
    /// The key ring that seals the directory's secrets, kept apart from it.
    #[command(subcommand)]
    Key(key::KeyCommand),
    /// The directory itself: move it between SQLite and PostgreSQL.
    #[command(subcommand)]
    Directory(DirectoryCommand),
    /// Print shell completions to standard output, for example
    /// `poplar completions bash > /usr/share/bash-completion/completions/poplar`.
    Completions {
        /// bash, zsh, fish, elvish or powershell.
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff) to standard output: `poplar manpage > poplar.1`.
    Manpage,
}

#[derive(Subcommand)]
enum DirectoryCommand {
    /// Copy every user, credential, two-factor and defence record and the shared server
    /// secrets from one directory into a new, empty one (SQLite to PostgreSQL or back).
    /// URLs: `sqlite://PATH` (relative to the working directory) or `postgres://...`.
    Copy {
        /// The directory to read.
        #[arg(long)]
        from: String,
        /// The directory to fill; it must have no rows yet (it is created if missing).
        #[arg(long)]
        to: String,
    },
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Validate the configuration, print the effective values and warn about insecure
    /// settings; fail (exit 1) on anything that would stop the server or a listener,
    /// such as a certificate or key that cannot be read.
    Check {
        /// Read the files as this user (the service's, say), to find what it cannot
        /// read; needs root. Default: as the caller.
        #[arg(long, value_name = "USER")]
        as_user: Option<String>,
    },
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    // Documentation of the command line itself: no configuration, no logging.
    // Made in memory, then written: a reader that stops early (`| head`) is no error.
    let document = match &cli.command {
        Command::Completions { shell } => {
            use clap::CommandFactory as _;
            let mut text = Vec::new();
            clap_complete::generate(*shell, &mut Cli::command(), "poplar", &mut text);
            Some(Ok(text))
        }
        Command::Manpage => {
            use clap::CommandFactory as _;
            let mut text = Vec::new();
            Some(
                clap_mangen::Man::new(Cli::command())
                    .render(&mut text)
                    .map(|()| text),
            )
        }
        _ => None,
    };
    if let Some(document) = document {
        use std::io::Write as _;
        return match document.and_then(|text| std::io::stdout().write_all(&text)) {
            Ok(()) => std::process::ExitCode::from(exit::OK),
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {
                std::process::ExitCode::from(exit::OK)
            }
            Err(e) => {
                eprintln!("poplar: {e}");
                std::process::ExitCode::from(exit::FAILURE)
            }
        };
    }
    init_logging();
    match start(cli) {
        Ok(()) => std::process::ExitCode::from(exit::OK),
        Err(e) => {
            eprintln!("poplar: {e:#}");
            std::process::ExitCode::from(exit::code(&e))
        }
    }
}

/// Binds `serve`'s sockets and switches to `[process] user` before the runtime starts
/// its threads, so the drop happens in a single-threaded process and every thread made
/// afterwards inherits it. Commands that touch the data folder switch too, so files
/// they create as root (the directory, the server key, Maildirs) belong to that user.
fn start(cli: Cli) -> anyhow::Result<()> {
    let demo = matches!(cli.command, Command::Serve { demo: true });
    // A file that cannot even be looked at (no permission on /etc/poplar) counts as
    // there: loading it then says why, instead of silently using the embedded default.
    let system_exists = Path::new(SYSTEM_CONFIG).try_exists().unwrap_or(true);
    let path = config_path(cli.config, demo, system_exists);
    logging::say(&match &path {
        Some(p) => format!("poplar: configuration {}", p.display()),
        None => format!(
            "poplar: configuration: the embedded default (data folder {})",
            Config::default().data_dir.display()
        ),
    });
    // `config check --as-user`: everything the check reads, the configuration file
    // first, is read as that user.
    if let Command::Config(ConfigCommand::Check {
        as_user: Some(user),
    }) = &cli.command
    {
        let process = server::process::Process {
            user: user.clone(),
            group: String::new(),
        };
        if let Some(identity) = server::process::Identity::resolve(&process)? {
            identity
                .switch_to()
                .context("--as-user: becoming that user (needs root)")?;
        }
    }
    let config = load_config(path.as_ref())?;
    logging::apply_level(&config.log.level)?;
    let sockets = match cli.command {
        Command::Serve { .. } => Some(server::Sockets::bind(&config)?),
        _ => None,
    };
    // `key add|activate|rotate|retire` rewrite the key file as the caller (root for
    // /etc/poplar); their directory work is done by a `poplar key` child that switches.
    if let Command::Key(cmd) = &cli.command
        && key::rewrites_ring(cmd)
    {
        let Command::Key(cmd) = cli.command else {
            unreachable!()
        };
        return key::change_ring(cmd, &config, path.as_deref());
    }
    // `key init` makes the key file now, as root, with its mode and group; the
    // service's user fills it after the switch.
    let prepared = match &cli.command {
        Command::Key(cmd) => key::prepare(cmd, &config)?,
        _ => key::Prepared::none(),
    };
    // `config check` reads the file and the certificates as the caller (or as
    // `--as-user`), never the data folder.
    let touches_data = !matches!(cli.command, Command::Config(_));
    if touches_data && let Some(identity) = server::process::Identity::resolve(&config.process)? {
        // A first start as root: the key ring's file is made now, as root (the
        // service's user may not write /etc/poplar), and filled after the switch.
        if !matches!(cli.command, Command::Key(_)) {
            server::secrets::hand_over_ring_file(&config, identity.gid.as_raw());
        }
        identity.switch_to()?;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the runtime")?;
    runtime.block_on(run(cli.command, config, path, sockets, prepared))
}

/// Logs to standard error: colours only on a terminal; under systemd (journald reads
/// standard error) each line starts with its syslog priority (`<3>` error .. `<7>`
/// debug, sd-daemon(3)), so `journalctl -p err` filters them, and without a timestamp
/// (the journal has its own). `POPLAR_LOG_FORMAT=json` gives JSON lines instead.
fn init_logging() {
    use std::io::IsTerminal as _;
    let from_env = tracing_subscriber::EnvFilter::try_from_env("POPLAR_LOG").ok();
    logging::set_fixed(from_env.is_some());
    let filter = from_env.unwrap_or_else(|| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    // Each format is its own type: the handle that changes the level goes with it.
    macro_rules! install {
        ($builder:expr) => {{
            let builder = $builder.with_filter_reloading();
            let handle = builder.reload_handle();
            logging::set_level_handle(move |f| handle.reload(f).map_err(|e| e.to_string()));
            builder.init();
        }};
    }
    if std::env::var("POPLAR_LOG_FORMAT").is_ok_and(|f| f == "json") {
        install!(builder.json());
    } else if logging::stderr_is_the_journal() {
        install!(builder.event_format(logging::Priority(
            tracing_subscriber::fmt::format().without_time(),
        )));
    } else {
        install!(builder);
    }
}

/// The configuration an installed Poplar uses when none is named.
const SYSTEM_CONFIG: &str = "/etc/poplar/poplar.toml";

/// Which configuration a command uses: the one named (`--config`, `POPLAR_CONFIG`);
/// else, for `serve --demo`, the embedded default (a demo never takes over an
/// installation's); else [`SYSTEM_CONFIG`] when it exists; else the embedded default
/// (`None`).
fn config_path(named: Option<PathBuf>, demo: bool, system_exists: bool) -> Option<PathBuf> {
    match named {
        Some(p) => Some(p),
        None if demo || !system_exists => None,
        None => Some(PathBuf::from(SYSTEM_CONFIG)),
    }
}

fn load_config(path: Option<&PathBuf>) -> anyhow::Result<Config> {
    match path {
        Some(p) => Ok(Config::load(p)?),
        None => Ok(Config::default()),
    }
}

async fn open_directory(config: &Config) -> anyhow::Result<Arc<Dir>> {
    server::process::prepare_data_dir(&config.data_dir)?;
    Ok(Arc::new(server::open_directory(config).await?))
}

async fn run(
    command: Command,
    config: Config,
    path: Option<PathBuf>,
    sockets: Option<server::Sockets>,
    prepared: key::Prepared,
) -> anyhow::Result<()> {
    match command {
        Command::Serve { demo } => {
            let sockets = sockets.context("serve without bound sockets")?;
            serve(config, path, demo, sockets).await
        }
        Command::User(cmd) => user::run(cmd, &config, open_directory(&config).await?).await,
        Command::Lockout(cmd) => lockout::run(cmd, &config, open_directory(&config).await?).await,
        Command::Sessions { command } => sessions::run(command, &config),
        Command::Mfa(cmd) => mfa::run_mfa(cmd, &config, open_directory(&config).await?).await,
        Command::AppPassword(cmd) => {
            mfa::run_app_password(cmd, &config, open_directory(&config).await?).await
        }
        Command::Passwords(cmd) => passwords::run(cmd, &config),
        Command::Import(cmd) => import::run(cmd, &config, open_directory(&config).await?).await,
        Command::Key(cmd) => key::run(cmd, &config, open_directory(&config).await?, prepared).await,
        Command::Backup(args) => backup::run(args, &config, open_directory(&config).await?).await,
        Command::Restore { src } => {
            backup::restore(&src, &config, open_directory(&config).await?).await
        }
        Command::Audit(args) => {
            audit_report::run(args, &config, open_directory(&config).await?).await
        }
        Command::Directory(DirectoryCommand::Copy { from, to }) => copy_directory(&from, &to).await,
        // Answered in `main`, before any configuration is read.
        Command::Completions { .. } | Command::Manpage => Ok(()),
        // `--as-user` was taken on in `start`, before the file was read.
        Command::Config(ConfigCommand::Check { .. }) => {
            // The directory URL may carry a password: show it redacted.
            let mut shown = config.clone();
            shown.directory.url = directory::redact(&shown.directory.url);
            print!("{}", toml::to_string_pretty(&shown)?);
            println!("# directory: {}", config.directory_display());
            // An unset option prints nothing above; say what it means (a TOML comment,
            // so the output still parses).
            println!("# {}", config.store.retention_summary());
            // The connection limit as `serve` would size it here (memory, open files).
            let (capacity, _) =
                server::capacity::size(&config.limits, &server::capacity::Machine::read());
            println!(
                "# connections: at most {} at once ({}); {} per network while busy",
                capacity.max_connections, capacity.basis, capacity.per_network
            );
            let mut warnings = config.warnings();
            warnings.extend(config.key_ring_warnings());
            warnings.extend(capacity.warning);
            warnings.extend(server::process::root_warning(&config.process));
            if let Err(e) = server::process::Identity::resolve(&config.process) {
                warnings.push(format!("{e:#}"));
            }
            for w in &warnings {
                eprintln!("warning: {w}");
            }
            // What would stop the server or a listener: an error, not a warning.
            let errors = server::tls::check(&config);
            for e in &errors {
                eprintln!("error: {e}");
            }
            if !errors.is_empty() {
                anyhow::bail!(
                    "the configuration cannot be served ({} errors, {} warnings)",
                    errors.len(),
                    warnings.len()
                );
            }
            eprintln!("configuration is valid ({} warnings)", warnings.len());
            Ok(())
        }
    }
}

async fn copy_directory(from: &str, to: &str) -> anyhow::Result<()> {
    use directory::Directory as _;
    let open = |url: &str| {
        let url = url.to_owned();
        async move {
            let location = directory::Location::parse(&url)?;
            directory::AnyDirectory::connect(&location)
                .await
                .with_context(|| format!("opening {}", directory::redact(&url)))
        }
    };
    for url in [from, to] {
        if let Some(problem) = directory::transport_problem(url) {
            crate::exit::refused!("{}: {problem}", directory::redact(url));
        }
    }
    if from == to {
        anyhow::bail!("--from and --to name the same directory");
    }
    let source = open(from).await?;
    let target = open(to).await?;
    if source
        .server_secret(server::SERVER_KEY_NAME)
        .await?
        .is_none()
    {
        // Its key ring may not be recorded yet (an older install's secrets/server.key):
        // the destination would then not know which ring opens what is copied.
        anyhow::bail!(
            "{} names no key ring yet: start poplar on it once (or run any `poplar user` command against it with the config that owns it), so its ring's marker is stored in it, then copy (the key file goes to the new nodes separately: docs/cluster.md)",
            directory::redact(from)
        );
    }
    let mut bar = progress::Progress::new("copying rows", 0);
    let counts = directory::copy_directory_with_progress(&source, &target, |done, total| {
        bar.set_total(total);
        bar.set(done);
    })
    .await?;
    drop(bar);
    for (table, rows) in &counts {
        println!("{table}: {rows}");
    }
    println!(
        "copied {} to {}",
        directory::redact(from),
        directory::redact(to)
    );
    source.close().await;
    target.close().await;
    Ok(())
}

async fn serve(
    config: Config,
    path: Option<PathBuf>,
    demo: bool,
    sockets: server::Sockets,
) -> anyhow::Result<()> {
    let process_warning = server::process::root_warning(&config.process);
    for w in config
        .warnings()
        .into_iter()
        .chain(config.key_ring_warnings())
        .chain(process_warning)
    {
        tracing::warn!("{w}");
    }
    let dir = open_directory(&config).await?;
    let demo_login = if demo {
        demo::prepare(&config, dir.clone()).await?
    } else {
        None
    };
    let server = server::Server::start(config.clone(), dir, sockets).await?;
    // Signal handlers go in before `ready` is printed, so a supervisor that sends
    // SIGTERM as soon as it sees `ready` always gets a graceful shutdown.
    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    let mut hup = signal(SignalKind::hangup()).context("installing the SIGHUP handler")?;
    let addrs = server.local_addrs();
    for (kind, addr) in &addrs {
        println!("listening {} {addr}", kind.name());
    }
    if let Some(addr) = server.metrics_addr() {
        println!("listening metrics {addr}");
    }
    if let Some(addr) = server.web_addr() {
        println!("listening web https://{addr}/");
    }
    println!("certificate sha256 {}", server.fingerprint());
    if let Some(password) = demo_login {
        demo::print_instructions(&config, &addrs, server.web_addr(), &password);
    }
    println!("ready");
    // Every listener is bound and the directory answered (the server opened it).
    notify::notify("READY=1");

    // SIGHUP: the configuration file read again and put in force for new connections
    // (open sessions go on), the certificates read again, the audit log reopened.
    let reloader = server.reloader();
    tokio::spawn(async move {
        while hup.recv().await.is_some() {
            tracing::info!("SIGHUP: reloading");
            notify::reloading();
            let file = match &path {
                Some(path) => {
                    let path = path.clone();
                    let read = tokio::task::spawn_blocking(move || {
                        let config = Config::load(&path)?;
                        logging::parse_level(&config.log.level)?;
                        anyhow::Ok(config)
                    });
                    match read.await {
                        Ok(Ok(config)) => Some(config),
                        Ok(Err(e)) => {
                            tracing::error!(
                                error = format!("{e:#}"),
                                "configuration not reloaded; still running the previous one"
                            );
                            None
                        }
                        Err(_) => None,
                    }
                }
                None => None,
            };
            // `reload` logs its outcome; on any failure the previous configuration and
            // certificates go on.
            let level = file.as_ref().map(|c| c.log.level.clone());
            if reloader.reload(file).await.is_ok()
                && let Some(level) = level
                && let Err(e) = logging::apply_level(&level)
            {
                tracing::error!(error = %e, "the log level is unchanged");
            }
            notify::notify("READY=1");
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
        notify::notify("STOPPING=1");
        signals.cancel();
    });
    server.run(shutdown).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_configuration_a_command_uses() {
        let named = Some(PathBuf::from("/srv/poplar.toml"));
        let system = Some(PathBuf::from(SYSTEM_CONFIG));
        // Named: always that one, demo or not.
        assert_eq!(config_path(named.clone(), false, true), named);
        assert_eq!(config_path(named.clone(), true, true), named);
        // Not named: the installation's, unless a demo; else the embedded default.
        assert_eq!(config_path(None, false, true), system);
        assert_eq!(config_path(None, true, true), None);
        assert_eq!(config_path(None, false, false), None);
    }
}
