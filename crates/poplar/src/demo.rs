//! `poplar serve --demo`: a user and sample mail so a newcomer can fetch a message at once.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context as _;
use directory::Directory as _;
use server::{Config, Dir, ListenerKind};

const DEMO_USER: &str = "demo";

/// Creates the demo user and sample messages on first run; returns the password when
/// it was just made (it is shown once and never stored in the clear).
pub async fn prepare(config: &Config, dir: Arc<Dir>) -> anyhow::Result<Option<String>> {
    let canonical = server::username_policy(config)
        .canonical(DEMO_USER)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    if dir.find_user(&canonical).await?.is_some() {
        eprintln!(
            "demo user {canonical} exists; its password was shown when it was made (change it with `poplar user passwd {canonical}`)"
        );
        return Ok(None);
    }
    let password = random_password()?;
    let maildir_path = std::path::absolute(config.maildir_root().join(&canonical))?;
    let auth = server::authenticator(config, dir).await?;
    auth.add_user(
        DEMO_USER,
        password.as_bytes(),
        maildir_path.to_string_lossy().into_owned(),
    )
    .await
    .map_err(|e| anyhow::anyhow!("cannot add the demo user: {e}"))?;
    let maildir = maildir::Maildir::new(&maildir_path);
    maildir.create().context("creating the demo Maildir")?;
    for (i, (subject, body)) in SAMPLES.iter().enumerate() {
        let message = format!(
            "From: Poplar <poplar@localhost>\nTo: {canonical}\nSubject: {subject}\nMessage-ID: <demo-{i}@poplar.localhost>\nMIME-Version: 1.0\nContent-Type: text/plain; charset=utf-8\n\n{body}"
        );
        maildir.deliver(message.as_bytes())?;
    }
    Ok(Some(password))
}

const SAMPLES: [(&str, &str); 3] = [
    (
        "Welcome to Poplar",
        "This message was delivered to a Maildir and fetched over POP3 with TLS.\n",
    ),
    (
        "Dots and UTF-8",
        "A line that starts with a dot follows:\n.like this one\nÜnïcödé bodies arrive byte for byte.\n",
    ),
    (
        "Deleting",
        "DELE marks a message; it is removed only when you QUIT.\n",
    ),
];

/// Prints how to fetch a message, once everything is listening.
pub fn print_instructions(
    config: &Config,
    addrs: &[(ListenerKind, SocketAddr)],
    web: Option<SocketAddr>,
    password: &str,
) {
    println!("demo user: {DEMO_USER}  password: {password}  (shown once)");
    let cert = config.data_dir.join("tls").join("cert.pem");
    if let Some((_, addr)) = addrs.iter().find(|(k, _)| *k == ListenerKind::Pop3s) {
        println!(
            "try: curl --cacert {} pop3s://localhost:{}/1 -u '{DEMO_USER}:{password}'",
            cert.display(),
            addr.port()
        );
    }
    if let Some(web) = web {
        println!(
            "security page (two-step verification, app passwords): https://localhost:{}/",
            web.port()
        );
    }
}

/// 20 characters from an alphabet without look-alikes, in groups of five.
fn random_password() -> anyhow::Result<String> {
    const ALPHABET: &[u8] = b"abcdefghjkmnpqrstuvwxyz23456789";
    let mut out = String::new();
    let mut buf = [0u8; 64];
    while out.len() < 23 {
        getrandom::fill(&mut buf).map_err(|e| anyhow::anyhow!("no randomness: {e}"))?;
        // Rejection sampling keeps every character equally likely.
        for &b in &buf {
            if usize::from(b) < ALPHABET.len() * (256 / ALPHABET.len()) && out.len() < 23 {
                if out.len() % 6 == 5 {
                    out.push('-');
                }
                out.push(char::from(ALPHABET[usize::from(b) % ALPHABET.len()]));
            }
        }
    }
    Ok(out)
}
