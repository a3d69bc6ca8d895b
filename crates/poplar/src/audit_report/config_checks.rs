//! The configuration checks of `poplar audit`: plaintext mechanisms outside TLS, APOP,
//! the TLS setup, and the rest of `poplar config check`'s warnings. Each check takes
//! the warnings it reports out of the shared list, so none is reported twice.

use server::Config;

use super::{Accounts, Finding, Item, Severity, Status};

/// Moves the warnings `pred` picks out of `warnings`.
fn take(warnings: &mut Vec<String>, pred: impl Fn(&str) -> bool) -> Vec<String> {
    let (taken, kept) = std::mem::take(warnings).into_iter().partition(|w| pred(w));
    *warnings = kept;
    taken
}

fn setting(name: &str, note: String) -> Item {
    Item {
        setting: Some(name.to_owned()),
        note: Some(note),
        ..Item::default()
    }
}

/// `auth.plaintext_networks`: where USER/PASS, PLAIN, LOGIN, SCRAM (and APOP) are
/// accepted without TLS.
pub(super) fn plaintext(config: &Config, warnings: &mut Vec<String>) -> Finding {
    let taken = take(warnings, |w| w.starts_with("auth.plaintext_networks"));
    let mut mechanisms = vec!["USER/PASS".to_owned()];
    mechanisms.extend(
        config
            .sasl
            .mechanisms
            .iter()
            .filter(|m| {
                let m = m.to_ascii_uppercase();
                m != "EXTERNAL" && !m.ends_with("-PLUS")
            })
            .cloned(),
    );
    if config.apop.enabled {
        mechanisms.push("APOP".into());
    }
    let mut beyond_loopback = false;
    let items: Vec<Item> = config
        .auth
        .plaintext_networks
        .iter()
        .map(|net| {
            // Loopback only if both ends of the range are loopback addresses.
            let loopback = net.network().is_loopback() && net.broadcast().is_loopback();
            beyond_loopback |= !loopback;
            let prefix = format!("auth.plaintext_networks includes {net}");
            let note = taken
                .iter()
                .find_map(|w| {
                    let rest = w.strip_prefix(&prefix)?;
                    let rest = rest.strip_prefix(':').or_else(|| rest.strip_prefix(','))?;
                    Some(rest.trim_start().to_owned())
                })
                .unwrap_or_else(|| "loopback: passwords do not leave this host".to_owned());
            Item {
                setting: Some("auth.plaintext_networks".into()),
                networks: Some(vec![net.to_string()]),
                note: Some(note),
                ..Item::default()
            }
        })
        .collect();
    let status = if items.is_empty() {
        Status::Ok
    } else {
        Status::Finding
    };
    Finding {
        id: "plaintext_without_tls",
        title: "Passwords accepted without TLS",
        status,
        severity: if beyond_loopback {
            Severity::High
        } else {
            Severity::Low
        },
        summary: if items.is_empty() {
            "passwords are accepted only under TLS (STLS or port 995), from everywhere".into()
        } else {
            format!(
                "{} accepted without TLS from {} (auth.plaintext_networks)",
                mechanisms.join(", "),
                super::checks::counted(items.len(), "network", "networks")
            )
        },
        advice: "Remove every network that does not need it from auth.plaintext_networks and have those clients use STLS on port 110 or implicit TLS on port 995. Keep at most loopback, for a local webmail or fetchmail.".into(),
        items,
    }
}

/// APOP: MD5 over a secret the server keeps recoverable.
pub(super) fn apop(config: &Config, a: &Accounts, warnings: &mut Vec<String>) -> Finding {
    take(warnings, |w| w.starts_with("apop.enabled"));
    let items: Vec<Item> = a
        .users
        .iter()
        .filter(|u| u.apop_secret.is_some())
        .map(|u| Item {
            user: Some(u.name.clone()),
            enabled: Some(u.enabled),
            note: Some("has an APOP secret".into()),
            ..Item::default()
        })
        .collect();
    let n = items.len();
    let (status, severity, summary) = match (config.apop.enabled, n) {
        (true, _) => (
            Status::Finding,
            Severity::Medium,
            format!(
                "APOP is enabled (apop.enabled); {} with an APOP secret may use it",
                super::checks::accounts(n)
            ),
        ),
        (false, 0) => (
            Status::Ok,
            Severity::Low,
            "APOP is off and no account keeps an APOP secret".into(),
        ),
        (false, _) => (
            Status::Finding,
            Severity::Low,
            format!(
                "APOP is off, but {} still keep an APOP secret (stored encrypted, recoverable with the server key)",
                super::checks::accounts(n)
            ),
        ),
    };
    Finding {
        id: "apop_enabled",
        title: "APOP",
        status,
        severity,
        summary,
        advice: "APOP hashes with MD5 over a secret the server must keep recoverable. Move its clients to USER/PASS or SCRAM-SHA-256 under TLS, then set apop.enabled = false and clear the secrets (`poplar user apop-secret USER --clear`).".into(),
        items,
    }
}

/// Listeners, certificates and the certificate checks of `poplar config check`.
pub(super) fn tls(config: &Config, warnings: &mut Vec<String>) -> Finding {
    let cert_checks = server::tls::check::warnings(config);
    let found = take(warnings, |w| {
        cert_checks.iter().any(|c| c == w)
            || w.starts_with("listening beyond loopback with a self-signed")
    });
    let mut items: Vec<Item> = Vec::new();
    for addr in &config.listen.pop3 {
        items.push(setting("listen.pop3", format!("{addr}: plain POP3 with STLS; passwords only after STLS (outside auth.plaintext_networks)")));
    }
    for addr in &config.listen.pop3s {
        items.push(setting("listen.pop3s", format!("{addr}: implicit TLS")));
    }
    for source in server::tls::sources(config) {
        items.push(setting(
            &source.label,
            format!("certificate {}", source.cert.display()),
        ));
    }
    items.push(setting(
        "tls.client_ca",
        match &config.tls.client_ca {
            Some(ca) => format!("EXTERNAL: client certificates from {}", ca.display()),
            None => "EXTERNAL (client certificates) is off".into(),
        },
    ));
    let severity = if found
        .iter()
        .any(|w| w.contains("expired") || w.contains("cannot"))
    {
        Severity::High
    } else {
        Severity::Medium
    };
    let status = if found.is_empty() {
        Status::Ok
    } else {
        Status::Finding
    };
    let summary = if found.is_empty() {
        "TLS 1.2 and 1.3 only, forward-secret AEAD suites; the certificates pass every check"
            .to_owned()
    } else {
        format!(
            "TLS 1.2 and 1.3 only, forward-secret AEAD suites; {}:",
            super::checks::counted(found.len(), "certificate problem", "certificate problems")
        )
    };
    items.extend(found.into_iter().map(|w| setting("tls", w)));
    Finding {
        id: "tls_setup",
        title: "TLS setup",
        status,
        severity,
        summary,
        advice: "Fix each certificate problem as its line says; `poplar config check` repeats these checks, and `scripts/tls-scan HOST:PORT` (add --starttls for port 110) checks a running listener from outside.".into(),
        items,
    }
}

/// The rest of `poplar config check`'s warnings.
pub(super) fn other_warnings(warnings: Vec<String>) -> Finding {
    let n = warnings.len();
    Finding {
        id: "config_warnings",
        title: "Other configuration warnings",
        status: if n == 0 { Status::Ok } else { Status::Finding },
        severity: Severity::Low,
        summary: if n == 0 {
            "no other warnings from `poplar config check`".into()
        } else {
            format!(
                "{} from `poplar config check`",
                super::checks::counted(n, "warning", "warnings")
            )
        },
        advice: "Each warning says what to change in the configuration file.".into(),
        items: warnings.into_iter().map(|w| setting("config", w)).collect(),
    }
}
