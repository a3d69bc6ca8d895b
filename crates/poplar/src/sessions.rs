//! `poplar sessions`: live sessions of the running server, through its control socket.

use std::io::{BufRead as _, BufReader, Write as _};
use std::os::unix::net::UnixStream;
use std::time::Duration;

use anyhow::Context as _;
use clap::Subcommand;
use server::Config;

#[derive(Subcommand)]
pub enum SessionsCommand {
    /// List live sessions (the default).
    List {
        /// One JSON array of {session, user, src, listener, state, since}.
        #[arg(long)]
        json: bool,
    },
    /// End a session: it gets `-ERR [SYS/TEMP]` and is closed; nothing is deleted.
    End {
        /// The session id, as `list` shows it.
        session: String,
    },
}

fn request(config: &Config, line: &str) -> anyhow::Result<Vec<serde_json::Value>> {
    let path = server::control::socket_path(&config.data_dir);
    let mut stream = UnixStream::connect(&path).with_context(|| {
        format!(
            "cannot reach the server at {} (is `poplar serve` running with this config?)",
            path.display()
        )
    })?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    stream.write_all(format!("{line}\n").as_bytes())?;
    BufReader::new(stream)
        .lines()
        .map(|l| Ok(serde_json::from_str(&l?)?))
        .collect()
}

/// Ends every live session of `user` (canonical) on the server running with this
/// configuration here; how many. An error when no server answers.
pub fn end_user(config: &Config, user: &str) -> anyhow::Result<usize> {
    let answer = request(config, &format!("end-user {user}"))?;
    Ok(answer
        .first()
        .and_then(|a| a["ended"].as_u64())
        .map_or(0, |n| usize::try_from(n).unwrap_or(usize::MAX)))
}

/// Whether `error` says no server runs with this configuration here (no control socket,
/// or nothing listening on it), as opposed to one that failed to answer.
pub fn no_server(error: &anyhow::Error) -> bool {
    error
        .chain()
        .filter_map(|c| c.downcast_ref::<std::io::Error>())
        .any(|e| {
            matches!(
                e.kind(),
                std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused
            )
        })
}

pub fn run(cmd: Option<SessionsCommand>, config: &Config) -> anyhow::Result<()> {
    match cmd.unwrap_or(SessionsCommand::List { json: false }) {
        SessionsCommand::List { json } => {
            let sessions = request(config, "list")?;
            if json {
                println!("{}", serde_json::Value::Array(sessions));
                return Ok(());
            }
            println!(
                "{:<16} {:<24} {:<24} {:<7} {:<14} since",
                "session", "user", "from", "port", "state"
            );
            for s in sessions {
                let text = |k: &str| s[k].as_str().unwrap_or("-").to_owned();
                println!(
                    "{:<16} {:<24} {:<24} {:<7} {:<14} {}",
                    text("session"),
                    text("user"),
                    text("src"),
                    text("listener"),
                    text("state"),
                    text("since")
                );
            }
            Ok(())
        }
        SessionsCommand::End { session } => {
            let answer = request(config, &format!("end {session}"))?;
            if answer.first().is_some_and(|a| a["ended"] == true) {
                eprintln!("session {session} ended");
                Ok(())
            } else {
                crate::exit::not_found!("no such session: {session}")
            }
        }
    }
}
