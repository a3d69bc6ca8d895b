//! `failures`: how fast, and how alike, failed sign-ins are answered, by reason:
//! a wrong password for an existing user, an unknown user, a malformed AUTH PLAIN, and
//! (given accounts the operator prepared) a locked or disabled account with a wrong or
//! with the right password.
//! Reasons are interleaved so that throttling or drift hits all of them alike. A
//! server that does not leak whether an account exists answers the first two with the
//! same text in the same time.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Map, Value, json};

use super::{Dialer, Meter, SMALL_CHUNK};
use crate::Env;
use crate::conn::{AuthKind, Pop3, Pop3Error, plain_token};
use crate::report::{Errors, Latencies, round};

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, clap::ValueEnum)]
pub enum Reason {
    /// An existing user (--user) with a wrong password.
    WrongPassword,
    /// A user name that does not exist.
    UnknownUser,
    /// AUTH PLAIN whose initial response is not base64.
    MalformedPlain,
    /// The locked account (--locked-user) with a wrong password.
    LockedWrong,
    /// The locked account with its right password (--locked-password).
    LockedRight,
    /// The disabled account (--disabled-user) with a wrong password.
    DisabledWrong,
    /// The disabled account with its right password (--disabled-password).
    DisabledRight,
}

impl Reason {
    fn name(self) -> &'static str {
        match self {
            Reason::WrongPassword => "wrong-password",
            Reason::UnknownUser => "unknown-user",
            Reason::MalformedPlain => "malformed-plain",
            Reason::LockedWrong => "locked-wrong",
            Reason::LockedRight => "locked-right",
            Reason::DisabledWrong => "disabled-wrong",
            Reason::DisabledRight => "disabled-right",
        }
    }
}

#[derive(clap::Args)]
pub struct Args {
    #[arg(long, default_value_t = 4)]
    concurrency: usize,
    /// Attempts per reason.
    #[arg(long, default_value_t = 100)]
    count: u64,
    /// Reasons to try (comma-separated).
    #[arg(long, value_enum, value_delimiter = ',', default_values_t = [Reason::WrongPassword, Reason::UnknownUser, Reason::MalformedPlain])]
    reasons: Vec<Reason>,
    /// Stop after this many seconds even if attempts remain.
    #[arg(long, default_value_t = 300.0)]
    duration: f64,
    /// An account the server holds locked (for locked-wrong, locked-right).
    #[arg(long, default_value = "")]
    locked_user: String,
    /// Its right password.
    #[arg(long, default_value = "")]
    locked_password: String,
    /// An account the server holds disabled (for disabled-wrong, disabled-right).
    #[arg(long, default_value = "")]
    disabled_user: String,
    /// Its right password.
    #[arg(long, default_value = "")]
    disabled_password: String,
}

#[derive(Default)]
struct PerReason {
    latency: Latencies,
    /// Reply text of the failing command, by count.
    replies: BTreeMap<String, u64>,
    unexpected_ok: u64,
    /// USER answered -ERR (only with --auth user): tells an unknown user apart early.
    user_refused: u64,
    errors: Errors,
}

/// One attempt: connect, then the timed credential exchange.
async fn attempt(
    d: &Dialer,
    a: &Args,
    reason: Reason,
    k: u64,
    out: &mut PerReason,
) -> Result<(), Pop3Error> {
    let mut c = d.connect(SMALL_CHUNK).await?;
    let (user, password) = match reason {
        Reason::WrongPassword => {
            let user = d.users.name(k);
            let wrong = format!("{}-wrong{k}", d.passwords.of(&user));
            (user, wrong)
        }
        Reason::UnknownUser => (format!("nosuchuser-{k}-x7q"), d.passwords.of("").to_owned()),
        Reason::MalformedPlain => (String::new(), String::new()),
        Reason::LockedWrong => (a.locked_user.clone(), format!("wrong{k}")),
        Reason::LockedRight => (a.locked_user.clone(), a.locked_password.clone()),
        Reason::DisabledWrong => (a.disabled_user.clone(), format!("wrong{k}")),
        Reason::DisabledRight => (a.disabled_user.clone(), a.disabled_password.clone()),
    };
    let line = match (reason, d.auth) {
        (Reason::MalformedPlain, _) => "AUTH PLAIN !!not*base64!!".to_string(),
        (_, AuthKind::Plain) => format!("AUTH PLAIN {}", plain_token(&user, &password)),
        (_, AuthKind::User) => {
            if let Err(e) = c.cmd(&format!("USER {user}")).await {
                if matches!(e, Pop3Error::Err(_)) {
                    out.user_refused += 1;
                    *out.replies.entry(format!("USER: {}", e.key())).or_default() += 1;
                    return Ok(());
                }
                return Err(e);
            }
            format!("PASS {password}")
        }
    };
    let t0 = Instant::now();
    let r = c.cmd(&line).await;
    let el = t0.elapsed();
    match r {
        Ok(l) => {
            out.unexpected_ok += 1;
            *out.replies
                .entry(String::from_utf8_lossy(&l).into_owned())
                .or_default() += 1;
        }
        Err(e @ Pop3Error::Err(_)) => {
            out.latency.push(el);
            *out.replies.entry(e.key()).or_default() += 1;
        }
        Err(e) => return Err(e),
    }
    let _ = Pop3::quit(c).await;
    Ok(())
}

pub async fn run(env: &Env, a: Args) -> anyhow::Result<bool> {
    let mut reasons = a.reasons.clone();
    reasons.sort_unstable();
    reasons.dedup();
    if reasons.is_empty() {
        anyhow::bail!("failures: no --reasons");
    }
    let locked = reasons
        .iter()
        .any(|r| matches!(r, Reason::LockedWrong | Reason::LockedRight));
    let disabled = reasons
        .iter()
        .any(|r| matches!(r, Reason::DisabledWrong | Reason::DisabledRight));
    if (locked && (a.locked_user.is_empty() || a.locked_password.is_empty()))
        || (disabled && (a.disabled_user.is_empty() || a.disabled_password.is_empty()))
    {
        anyhow::bail!(
            "failures: the locked-* and disabled-* reasons need --locked-user/--locked-password and --disabled-user/--disabled-password"
        );
    }
    let reasons = Arc::new(reasons);
    let a = Arc::new(a);
    let d = Arc::new(Dialer::new(env));
    let total = a.count * reasons.len() as u64;
    let next = Arc::new(AtomicU64::new(0));
    let stop_at = Instant::now() + Duration::from_secs_f64(a.duration.max(0.0));
    let meter = Meter::start(env.server_pid);
    let mut workers = Vec::new();
    for _ in 0..a.concurrency.max(1) {
        let (d, next, reasons, a) = (d.clone(), next.clone(), reasons.clone(), a.clone());
        workers.push(tokio::spawn(async move {
            let mut per: BTreeMap<Reason, PerReason> = BTreeMap::new();
            while Instant::now() < stop_at {
                let k = next.fetch_add(1, Ordering::Relaxed);
                if k >= total {
                    break;
                }
                let reason = reasons[(k % reasons.len() as u64) as usize];
                let out = per.entry(reason).or_default();
                if let Err(e) = attempt(&d, &a, reason, k / reasons.len() as u64, out).await {
                    out.errors.add(e.key());
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
            per
        }));
    }
    let mut all: BTreeMap<Reason, PerReason> = BTreeMap::new();
    for w in workers {
        for (r, p) in w.await? {
            let e = all.entry(r).or_default();
            e.latency.extend(p.latency);
            for (k, v) in p.replies {
                *e.replies.entry(k).or_default() += v;
            }
            e.unexpected_ok += p.unexpected_ok;
            e.user_refused += p.user_refused;
            e.errors.merge(p.errors);
        }
    }
    let m = meter.stop();

    println!(
        "FAILURES {}/{} c={} ({} per reason, {:.1}s):",
        env.report.mode, env.report.auth, a.concurrency, a.count, m.seconds
    );
    println!(
        "  {:<16} {:>6} {:>6} {:>5} {:>6} {:>9} {:>9} {:>9} {:>9}",
        "reason", "-ERR", "+OK", "USER-", "errors", "p50 ms", "p90 ms", "p99 ms", "max ms"
    );
    let mut res = Map::new();
    res.insert("bench".into(), json!("failures"));
    res.insert("concurrency".into(), json!(a.concurrency));
    res.insert("count_per_reason".into(), json!(a.count));
    let mut ok = true;
    let mut p50s = BTreeMap::new();
    let mut by_reason = Map::new();
    // The set of -ERR texts each reason drew: a server that leaks nothing gives every
    // reason the same set.
    let mut reply_sets = std::collections::BTreeSet::new();
    for (reason, p) in all {
        let n = p.latency.len();
        let s = p.latency.summary();
        p50s.insert(reason, s.pct(0.5));
        println!(
            "  {:<16} {:>6} {:>6} {:>5} {:>6} {:>9.2} {:>9.2} {:>9.2} {:>9.2}",
            reason.name(),
            n,
            p.unexpected_ok,
            p.user_refused,
            p.errors.total(),
            s.pct(0.5),
            s.pct(0.9),
            s.pct(0.99),
            s.max()
        );
        let mut r = Map::new();
        r.insert("err_replies".into(), json!(n));
        r.insert("unexpected_ok".into(), json!(p.unexpected_ok));
        r.insert("user_refused".into(), json!(p.user_refused));
        s.put(&mut r, "");
        r.insert("replies".into(), json!(p.replies));
        r.insert("errors".into(), p.errors.json());
        by_reason.insert(reason.name().into(), Value::Object(r));
        ok &= p.unexpected_ok == 0 && p.errors.total() == 0;
        reply_sets.insert(p.replies.keys().cloned().collect::<Vec<_>>());
        for (text, count) in &p.replies {
            println!("    {} reply x{count}: {text}", reason.name());
        }
        p.errors.print();
    }
    if let (Some(w), Some(u)) = (
        p50s.get(&Reason::WrongPassword),
        p50s.get(&Reason::UnknownUser),
    ) {
        println!("  p50 gap wrong-password - unknown-user: {:+.2} ms", w - u);
        res.insert("p50_gap_wrong_vs_unknown_ms".into(), round(w - u, 2));
    }
    let identical = reply_sets.len() == 1;
    println!(
        "  replies identical across reasons: {}",
        if identical { "yes" } else { "NO" }
    );
    res.insert("replies_identical".into(), json!(identical));
    println!("  {}", m.line().trim());
    res.insert("reasons".into(), Value::Object(by_reason));
    m.put(&mut res);
    env.report.emit(res)?;
    Ok(ok)
}
