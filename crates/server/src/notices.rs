//! Security notices: a short, plain message delivered into the user's own maildrop
//! after a sign-in from a network never seen for the account, and after the account
//! is locked for unfamiliar networks. Optionally copied to an administrator's maildrop
//! (an intruder can delete the user's copy). Rate-limited per user; switched off per
//! user (`poplar user notices USER off`) or for everyone (`notices.enabled`).

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use auth::defence::Clock;
use directory::Directory as _;

use crate::Dir;
use crate::config::Config;

/// What happened, for the notice's wording.
pub(crate) enum Notice<'a> {
    /// Signed in from a network never seen for this account.
    NewNetwork {
        address: IpAddr,
        mechanism: &'a str,
        tls: Option<&'a str>,
    },
    /// Locked for unfamiliar networks after this many failures.
    Locked { failures: u32, until: i64 },
}

/// Delivers notices; shared by every connection.
pub(crate) struct Notices {
    config: crate::config::Notices,
    hostname: String,
    dir: Arc<Dir>,
    clock: Arc<dyn Clock>,
    /// When each user last got a notice (this process's memory: a restart may send
    /// one more; a configuration reload keeps it).
    last_sent: Arc<Mutex<HashMap<String, i64>>>,
}

impl Notices {
    pub(crate) fn new(config: &Config, dir: Arc<Dir>, clock: Arc<dyn Clock>) -> Self {
        Notices {
            config: config.notices.clone(),
            hostname: config.hostname.clone(),
            dir,
            clock,
            last_sent: Arc::default(),
        }
    }

    /// These notices under a reloaded configuration, remembering who got one when.
    pub(crate) fn with_config(&self, config: &Config) -> Self {
        Notices {
            config: config.notices.clone(),
            hostname: config.hostname.clone(),
            dir: self.dir.clone(),
            clock: self.clock.clone(),
            last_sent: self.last_sent.clone(),
        }
    }

    /// Delivers `notice` to `user` (and the administrator's copy) unless notices are
    /// off for them or one went out within the rate limit. Failures are logged, never
    /// passed on: a notice must not stop a sign-in.
    pub(crate) async fn send(&self, user: &str, notice: Notice<'_>) {
        if !self.config.enabled {
            return;
        }
        let now = self.clock.now();
        {
            let mut last = self.last_sent.lock().unwrap_or_else(|e| e.into_inner());
            let interval = i64::from(self.config.min_interval_minutes) * 60_000;
            if last
                .get(user)
                .is_some_and(|t| now < t.saturating_add(interval))
            {
                tracing::debug!(user, "security notice skipped: rate limit");
                return;
            }
            last.insert(user.to_owned(), now);
        }
        match self.dir.notices_enabled(user).await {
            Ok(Some(true)) => {}
            Ok(_) => return,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the notice setting");
                return;
            }
        }
        let message = self.compose(user, &notice, now, None);
        self.deliver(user, message).await;
        let copy_to = self.config.copy_to.trim();
        if !copy_to.is_empty() && copy_to != user {
            let copy = self.compose(user, &notice, now, Some(copy_to));
            self.deliver(copy_to, copy).await;
        }
    }

    async fn deliver(&self, to: &str, message: Vec<u8>) {
        let maildir = match self.dir.find_user(to).await {
            Ok(Some(record)) => PathBuf::from(record.maildir),
            Ok(None) => {
                tracing::warn!(user = to, "security notice not delivered: no such user");
                return;
            }
            Err(e) => {
                tracing::warn!(error = %e, "security notice not delivered");
                return;
            }
        };
        let delivered =
            tokio::task::spawn_blocking(move || maildir::Maildir::new(&maildir).deliver(&message))
                .await;
        match delivered {
            Ok(Ok(_)) => tracing::info!(user = to, "security notice delivered"),
            Ok(Err(e)) => tracing::warn!(user = to, error = %e, "security notice not delivered"),
            Err(e) => tracing::warn!(user = to, error = %e, "security notice not delivered"),
        }
    }

    /// The message: plain text, UTF-8, with the headers a mail client needs.
    fn compose(
        &self,
        user: &str,
        notice: &Notice<'_>,
        now: i64,
        copy_for: Option<&str>,
    ) -> Vec<u8> {
        let when = crate::audit::rfc3339_ms(now);
        let (subject, body) = match notice {
            Notice::NewNetwork {
                address,
                mechanism,
                tls,
            } => (
                "Security notice: sign-in from a new network".to_owned(),
                format!(
                    "Your mail account {user} on {host} was signed in to from a network it\n\
                     has not been used from before.\n\n\
                     \x20 Time:        {when}\n\
                     \x20 Address:     {address}\n\
                     \x20 Sign-in:     {mechanism}{tls}\n\
                     \x20 Client:      not known (POP3 clients do not name themselves)\n\n\
                     If this was you (a new phone, a trip, a new internet connection), there\n\
                     is nothing to do.\n\n\
                     If it was not you, change your password now and tell your mail\n\
                     administrator: someone else knows it. They can see every sign-in to\n\
                     your account and lock it.\n",
                    host = self.hostname,
                    tls = tls.map(|v| format!(" over {v}")).unwrap_or_default(),
                ),
            ),
            Notice::Locked { failures, until } => (
                "Security notice: your account was locked for unknown networks".to_owned(),
                format!(
                    "Your mail account {user} on {host} had {failures} failed sign-ins from\n\
                     networks it is not normally used from, so sign-ins from such networks\n\
                     are refused until {until}. Sign-ins from the networks you normally use\n\
                     keep working.\n\n\
                     If these attempts were not you, someone is guessing your password:\n\
                     make sure it is long and used nowhere else, and tell your mail\n\
                     administrator.\n",
                    host = self.hostname,
                    until = crate::audit::rfc3339_ms(*until),
                ),
            ),
        };
        let subject = match copy_for {
            Some(_) => format!("[copy: {user}] {subject}"),
            None => subject,
        };
        let to = copy_for.unwrap_or(user);
        let date = rfc5322_date(now);
        let id = format!("{now}.{}@{}", std::process::id(), self.hostname);
        let text = format!(
            "From: Poplar security notices <postmaster@{host}>\r\n\
             To: {to}\r\n\
             Subject: {subject}\r\n\
             Date: {date}\r\n\
             Message-ID: <{id}>\r\n\
             Auto-Submitted: auto-generated\r\n\
             MIME-Version: 1.0\r\n\
             Content-Type: text/plain; charset=utf-8\r\n\
             Content-Transfer-Encoding: 8bit\r\n\
             \r\n\
             {body}",
            host = self.hostname,
            body = body.replace('\n', "\r\n"),
        );
        text.into_bytes()
    }
}

/// An RFC 5322 date in UTC.
fn rfc5322_date(ms: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(ms.div_euclid(1000))
        .ok()
        .and_then(|t| {
            t.format(time::macros::format_description!(
                "[weekday repr:short], [day padding:none] [month repr:short] [year] [hour]:[minute]:[second] +0000"
            ))
            .ok()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::rfc5322_date;

    #[test]
    fn date() {
        assert_eq!(
            rfc5322_date(1_800_000_000_123),
            "Fri, 15 Jan 2027 08:00:00 +0000"
        );
    }
}
