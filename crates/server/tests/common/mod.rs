//! What the in-process server tests share: a loopback configuration in a temporary
//! folder, users with Maildirs, and a running server on the plain port.

use std::net::SocketAddr;
use std::sync::Arc;

use auth::Authenticator;
use server::{Config, Dir, ListenerKind, Server};
use tokio_util::sync::CancellationToken;

/// A configuration for one test: plain POP3 on an ephemeral loopback port (USER/PASS
/// allowed there), no TLS listener, no metrics or web listener (tests run side by side),
/// cheap argon2 and no failure delay (real time, tested elsewhere).
pub fn loopback_config(tmp: &tempfile::TempDir) -> Config {
    let mut config = Config {
        data_dir: tmp.path().to_owned(),
        ..Config::default()
    };
    config.listen.pop3 = vec!["127.0.0.1:0".parse().unwrap()];
    config.listen.pop3s = vec![];
    config.metrics.listen = None;
    config.web.listen = None;
    config.auth.plaintext_networks = vec!["127.0.0.0/8".parse().unwrap()];
    config.auth.argon2_memory_kib = 8;
    config.auth.argon2_iterations = 1;
    config.auth.failure_delay_ms = 0;
    config
}

/// Opens the directory and adds `users` (name, password), each with a Maildir.
pub async fn directory_with(
    config: &Config,
    users: &[(&str, &str)],
) -> (Arc<Dir>, Authenticator<Dir>) {
    std::fs::create_dir_all(&config.data_dir).unwrap();
    let dir = Arc::new(Dir::open(&config.directory_path()).await.unwrap());
    let auth = server::authenticator(config, dir.clone()).await.unwrap();
    for (user, password) in users {
        let maildir = config.data_dir.join("mail").join(user);
        maildir::Maildir::new(&maildir).create().unwrap();
        auth.add_user(
            user,
            password.as_bytes(),
            maildir.to_string_lossy().into_owned(),
        )
        .await
        .unwrap();
    }
    (dir, auth)
}

/// Runs `server` until the returned token is cancelled; the plain port's address.
pub fn run(server: Server) -> (SocketAddr, CancellationToken) {
    let addr = server
        .local_addrs()
        .into_iter()
        .find(|(k, _)| *k == ListenerKind::Pop3)
        .unwrap()
        .1;
    let shutdown = CancellationToken::new();
    tokio::spawn(server.run(shutdown.clone()));
    (addr, shutdown)
}
