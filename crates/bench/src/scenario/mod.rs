//! The scenarios, one module each, and what they share: opening signed-in sessions and
//! reading the server's and the client's resource use around a measurement.

pub mod ceiling;
pub mod check;
pub mod failures;
pub mod idle;
pub mod login;
pub mod retr;
pub mod scale;

use std::time::Instant;

use serde_json::{Map, Value, json};

use crate::conn::{AuthKind, Mode, Pop3, Result, Target};
use crate::procstat::{self, TreeStats};
use crate::report::round;
use crate::{Env, Passwords, Users};

/// Receive buffer for sessions that move little data.
pub const SMALL_CHUNK: usize = 4 * 1024;
/// Receive buffer for RETR: 256 KiB reads.
pub const BIG_CHUNK: usize = 256 * 1024;

/// What a spawned task needs to open sessions (cheap to clone).
#[derive(Clone)]
pub struct Dialer {
    pub target: Target,
    pub mode: Mode,
    pub auth: AuthKind,
    pub users: Users,
    pub passwords: Passwords,
}

impl Dialer {
    pub fn new(env: &Env) -> Self {
        Dialer {
            target: env.target.clone(),
            mode: env.mode,
            auth: env.auth,
            users: env.users.clone(),
            passwords: env.passwords.clone(),
        }
    }

    pub async fn connect(&self, chunk: usize) -> Result<Pop3> {
        Pop3::connect(&self.target, self.mode, chunk).await
    }

    /// Connects and signs in as the `k`-th user.
    pub async fn open(&self, k: u64, chunk: usize) -> Result<Pop3> {
        let mut c = self.connect(chunk).await?;
        let user = self.users.name(k);
        c.login(self.auth, &user, self.passwords.of(&user)).await?;
        Ok(c)
    }
}

/// Client CPU, server tree and wall clock at the start of a measurement.
pub struct Meter {
    t0: Instant,
    cpu0: f64,
    server0: Option<TreeStats>,
    pid: Option<u32>,
    /// The server tree's RSS when its peak was reset, KiB.
    rss0: Option<u64>,
}

/// The differences at its end.
pub struct Metered {
    pub seconds: f64,
    pub client_cpu_s: f64,
    pub server_cpu_s: Option<f64>,
    pub server_after: Option<TreeStats>,
    /// The server tree's RSS at the start and its peak during the measurement, KiB.
    pub server_rss_start_peak: Option<(u64, u64)>,
}

impl Meter {
    pub fn start(pid: Option<u32>) -> Self {
        let server0 = procstat::tree_stats(pid);
        let rss0 = procstat::reset_peak_rss(pid);
        Meter {
            rss0,
            cpu0: procstat::self_cpu(),
            server0,
            pid,
            t0: Instant::now(),
        }
    }

    pub fn stop(self) -> Metered {
        let seconds = self.t0.elapsed().as_secs_f64();
        let client_cpu_s = procstat::self_cpu() - self.cpu0;
        let server1 = procstat::tree_stats(self.pid);
        let server_cpu_s = match (&self.server0, &server1) {
            (Some(a), Some(b)) => Some(b.cpu_s - a.cpu_s),
            _ => None,
        };
        let peak = procstat::peak_rss(self.pid);
        Metered {
            seconds,
            client_cpu_s,
            server_cpu_s,
            server_after: server1,
            server_rss_start_peak: self.rss0.zip(peak),
        }
    }
}

impl Metered {
    /// `client_cpu_pct`, `server_cpu_s`, `server_cpu_pct`, server RSS/PSS after.
    pub fn put(&self, m: &mut Map<String, Value>) {
        let el = self.seconds.max(1e-9);
        m.insert(
            "client_cpu_pct".into(),
            round(100.0 * self.client_cpu_s / el, 1),
        );
        if let Some(s) = self.server_cpu_s {
            m.insert("server_cpu_s".into(), round(s, 2));
            m.insert("server_cpu_pct".into(), round(100.0 * s / el, 1));
        }
        if let Some(a) = &self.server_after {
            m.insert("server_rss_kib".into(), json!(a.rss_kib));
            m.insert("server_pss_kib".into(), json!(a.pss_kib));
        }
        if let Some((start, peak)) = self.server_rss_start_peak {
            m.insert("server_rss_start_kib".into(), json!(start));
            m.insert("server_rss_peak_kib".into(), json!(peak));
            m.insert(
                "server_rss_growth_kib".into(),
                json!(peak.saturating_sub(start)),
            );
        }
    }

    /// ` client_cpu=..% server_cpu=..%` for the summary line.
    pub fn line(&self) -> String {
        let el = self.seconds.max(1e-9);
        let mut s = format!(" client_cpu={:.1}%", 100.0 * self.client_cpu_s / el);
        if let Some(c) = self.server_cpu_s {
            s += &format!(" server_cpu={:.1}%", 100.0 * c / el);
        }
        if let Some((start, peak)) = self.server_rss_start_peak {
            s += &format!(
                " server_rss_growth={:.1}MiB",
                peak.saturating_sub(start) as f64 / 1024.0
            );
        }
        s
    }
}
