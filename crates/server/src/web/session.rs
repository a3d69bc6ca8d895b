//! Signed-in sessions of the security page, kept in memory.
//!
//! The cookie holds 256 random bits and nothing else; the table is keyed by the
//! SHA-256 of that token, so neither a log nor a timing of the lookup says anything
//! about a live token. A session ends after `session_idle_secs` without a request,
//! `session_max_secs` after sign-in, at sign-out, or when the password changes. A
//! fresh token is issued whenever a session gains a factor, so a token planted before
//! sign-in is worth nothing after it.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use sha2::{Digest as _, Sha256};
use zeroize::Zeroizing;

/// The cookie's name. `__Host-`: browsers accept it only with `Secure`, `Path=/` and no
/// `Domain`, so no other host or plain-HTTP page can set or shadow it.
pub(crate) const COOKIE: &str = "__Host-poplar";

/// Sessions one account may hold at once; a new one ends that account's oldest.
const PER_USER: usize = 5;

/// How far a session has signed in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stage {
    /// The password was right; the second factor is still to come.
    Code,
    /// Signed in with the password, the only factor this account has.
    Password,
    /// Signed in with the password and a second factor (or has just enrolled one).
    TwoFactor,
}

/// One signed-in browser.
#[derive(Clone)]
pub(crate) struct Session {
    /// The canonical user name.
    pub user: String,
    pub stage: Stage,
    /// The token every form of this session carries (CSRF).
    pub csrf: String,
    /// An authenticator secret shown for enrolment and not yet confirmed (base32).
    pub enrolment: Option<Zeroizing<String>>,
    /// A one-line message for the next page (after a redirect).
    pub flash: Option<String>,
    /// A page holding a secret (a new app password, recovery codes), rendered by the
    /// POST that made it and shown once by the GET it redirects to, so that reloading
    /// it repeats nothing.
    pub reveal: Option<Zeroizing<String>>,
    /// What the account's credentials were at sign-in (see `Web::epoch`): a change
    /// made anywhere else (password, authenticator, account disabled) ends the session.
    pub epoch: String,
    created: Instant,
    last_seen: Instant,
}

/// The table of sessions.
pub(crate) struct Sessions {
    table: Mutex<HashMap<[u8; 32], Session>>,
    idle: Duration,
    max: Duration,
    code_timeout: Duration,
    capacity: usize,
}

/// 256 random bits as hex.
pub(crate) fn random_token() -> Option<String> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).ok()?;
    Some(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

fn key(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

impl Sessions {
    pub fn new(config: &crate::config::Web) -> Self {
        Sessions {
            table: Mutex::new(HashMap::new()),
            idle: Duration::from_secs(config.session_idle_secs),
            max: Duration::from_secs(config.session_max_secs),
            code_timeout: Duration::from_secs(config.code_timeout_secs),
            capacity: config.max_sessions,
        }
    }

    fn live(&self, s: &Session, now: Instant) -> bool {
        let limit = match s.stage {
            Stage::Code => self.code_timeout,
            _ => self.max,
        };
        now.duration_since(s.last_seen) < self.idle && now.duration_since(s.created) < limit
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<[u8; 32], Session>> {
        // A panic while holding the lock leaves no half-written entry that matters.
        self.table.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A new session for `user` at `stage`; its token (for the cookie). `None` if the
    /// system's random source fails.
    pub fn create(&self, user: &str, stage: Stage, epoch: String) -> Option<String> {
        let token = random_token()?;
        let csrf = random_token()?;
        let now = Instant::now();
        let mut table = self.lock();
        table.retain(|_, s| self.live(s, now));
        let mine = table.values().filter(|s| s.user == user).count();
        let evict = if mine >= PER_USER {
            // This account's oldest: one account cannot crowd out the others.
            table
                .iter()
                .filter(|(_, s)| s.user == user)
                .min_by_key(|(_, s)| s.created)
                .map(|(k, _)| *k)
        } else if table.len() >= self.capacity {
            // Full of live sessions: the one idle longest makes room.
            table
                .iter()
                .min_by_key(|(_, s)| s.last_seen)
                .map(|(k, _)| *k)
        } else {
            None
        };
        if let Some(k) = evict {
            table.remove(&k);
        }
        table.insert(
            key(&token),
            Session {
                user: user.to_owned(),
                stage,
                csrf,
                enrolment: None,
                flash: None,
                reveal: None,
                epoch,
                created: now,
                last_seen: now,
            },
        );
        Some(token)
    }

    /// The live session of `token`, marked as seen now.
    pub fn get(&self, token: &str) -> Option<Session> {
        let now = Instant::now();
        let mut table = self.lock();
        let k = key(token);
        let live = table.get(&k).is_some_and(|s| self.live(s, now));
        if !live {
            table.remove(&k);
            return None;
        }
        let s = table.get_mut(&k)?;
        s.last_seen = now;
        Some(s.clone())
    }

    /// Changes the session of `token`, if it is still there.
    pub fn update(&self, token: &str, change: impl FnOnce(&mut Session)) {
        if let Some(s) = self.lock().get_mut(&key(token)) {
            change(s);
        }
    }

    /// Takes the one-line message for the next page.
    pub fn take_flash(&self, token: &str) -> Option<String> {
        self.lock()
            .get_mut(&key(token))
            .and_then(|s| s.flash.take())
    }

    /// Takes the page to show once.
    pub fn take_reveal(&self, token: &str) -> Option<Zeroizing<String>> {
        self.lock()
            .get_mut(&key(token))
            .and_then(|s| s.reveal.take())
    }

    /// Moves the session of `token` to a new token at `stage` with the account's
    /// current `epoch` (the old token stops working), keeping its flash. The session's
    /// lifetime starts at the second factor, and is not extended by later changes.
    /// `None` if it is gone or randomness fails.
    pub fn promote(&self, token: &str, stage: Stage, epoch: String) -> Option<String> {
        let new = random_token()?;
        let csrf = random_token()?;
        let now = Instant::now();
        let mut table = self.lock();
        let mut s = table.remove(&key(token))?;
        if s.stage == Stage::Code {
            s.created = now;
        }
        s.stage = stage;
        s.csrf = csrf;
        s.enrolment = None;
        s.epoch = epoch;
        s.last_seen = now;
        table.insert(key(&new), s);
        Some(new)
    }

    /// Ends the session of `token`.
    pub fn remove(&self, token: &str) {
        self.lock().remove(&key(token));
    }

    /// Ends every session of `user` but the one of `keep`.
    pub fn remove_user(&self, user: &str, keep: &str) {
        let keep = key(keep);
        self.lock().retain(|k, s| *k == keep || s.user != user);
    }
}

/// The session token in a `Cookie` header, if any.
pub(crate) fn token_from(headers: &axum::http::HeaderMap) -> Option<String> {
    headers
        .get_all(axum::http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .map(|(_, value)| value.to_owned())
        .filter(|v| v.len() == 64 && v.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// The `Set-Cookie` value for `token`: HTTPS only, out of reach of scripts, never sent
/// with a request another site starts. No `Max-Age`: the browser forgets it when it
/// closes, and the server forgets it sooner.
pub(crate) fn set_cookie(token: &str) -> String {
    format!("{COOKIE}={token}; Path=/; Secure; HttpOnly; SameSite=Strict")
}

/// The `Set-Cookie` value that deletes the cookie.
pub(crate) fn clear_cookie() -> String {
    format!("{COOKIE}=; Path=/; Secure; HttpOnly; SameSite=Strict; Max-Age=0")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sessions(idle: u64, max: u64, capacity: usize) -> Sessions {
        Sessions::new(&crate::config::Web {
            session_idle_secs: idle,
            session_max_secs: max,
            code_timeout_secs: 60,
            max_sessions: capacity,
            ..Default::default()
        })
    }

    #[test]
    fn a_token_opens_its_session_and_promotion_retires_it() {
        let s = sessions(60, 600, 10);
        let t = s.create("alice", Stage::Code, String::new()).unwrap();
        assert_eq!(t.len(), 64);
        let got = s.get(&t).unwrap();
        assert_eq!((got.user.as_str(), got.stage), ("alice", Stage::Code));
        let t2 = s.promote(&t, Stage::TwoFactor, String::new()).unwrap();
        assert!(s.get(&t).is_none(), "the pre-sign-in token is dead");
        let got2 = s.get(&t2).unwrap();
        assert_eq!(got2.stage, Stage::TwoFactor);
        assert_ne!(got.csrf, got2.csrf);
        s.remove(&t2);
        assert!(s.get(&t2).is_none());
    }

    #[test]
    fn sessions_expire_and_the_table_is_bounded() {
        let s = sessions(0, 0, 10);
        let t = s.create("alice", Stage::Password, String::new()).unwrap();
        assert!(s.get(&t).is_none(), "idle limit 0: already expired");
        let s = sessions(60, 600, 2);
        let a = s.create("a", Stage::Password, String::new()).unwrap();
        std::thread::sleep(Duration::from_millis(2));
        let b = s.create("b", Stage::Password, String::new()).unwrap();
        std::thread::sleep(Duration::from_millis(2));
        let _ = s.get(&a);
        let c = s.create("c", Stage::Password, String::new()).unwrap();
        assert!(s.get(&b).is_none(), "the longest idle made room");
        assert!(s.get(&a).is_some() && s.get(&c).is_some());
    }

    #[test]
    fn one_account_cannot_crowd_out_the_others() {
        let s = sessions(60, 600, 100);
        let bob = s.create("bob", Stage::Password, String::new()).unwrap();
        let first = s.create("eve", Stage::Code, String::new()).unwrap();
        std::thread::sleep(Duration::from_millis(2));
        let rest: Vec<String> = (0..PER_USER + 3)
            .map(|_| s.create("eve", Stage::Code, String::new()).unwrap())
            .collect();
        assert!(s.get(&first).is_none(), "eve's oldest went first");
        assert!(s.get(&bob).is_some());
        let live = rest.iter().filter(|t| s.get(t).is_some()).count();
        assert_eq!(live, PER_USER);
    }

    #[test]
    fn a_password_change_ends_the_other_sessions() {
        let s = sessions(60, 600, 10);
        let mine = s.create("alice", Stage::TwoFactor, String::new()).unwrap();
        let other = s.create("alice", Stage::Password, String::new()).unwrap();
        let bob = s.create("bob", Stage::Password, String::new()).unwrap();
        s.remove_user("alice", &mine);
        assert!(s.get(&mine).is_some() && s.get(&other).is_none() && s.get(&bob).is_some());
    }

    #[test]
    fn only_a_well_formed_cookie_is_read() {
        let mut h = axum::http::HeaderMap::new();
        let t = "ab".repeat(32);
        h.insert(
            axum::http::header::COOKIE,
            format!("x=1; {COOKIE}={t}; y=2").parse().unwrap(),
        );
        assert_eq!(token_from(&h).as_deref(), Some(t.as_str()));
        h.insert(
            axum::http::header::COOKIE,
            format!("{COOKIE}=../../etc").parse().unwrap(),
        );
        assert_eq!(token_from(&h), None);
    }
}
