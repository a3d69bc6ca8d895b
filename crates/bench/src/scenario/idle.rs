//! `idle`: open `--sessions` signed-in sessions (users from the `{i}` template, since a
//! maildrop is exclusive), hold them, and after `--settle` seconds read the server
//! tree's memory: growth per session relative to a baseline taken before opening.
//! Then NOOP each (they must still be alive), QUIT all, and look once more after
//! another settle: memory the server did not give back.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::bail;
use serde_json::{Map, json};
use tokio::sync::Semaphore;

use super::{Dialer, SMALL_CHUNK};
use crate::Env;
use crate::conn::Pop3;
use crate::procstat::{self, TreeStats};
use crate::report::{Errors, round};

#[derive(clap::Args)]
pub struct Args {
    #[arg(long, default_value_t = 1000)]
    sessions: u64,
    /// Sessions being opened at once.
    #[arg(long, default_value_t = 16)]
    open_concurrency: usize,
    /// Seconds to wait after opening before measuring.
    #[arg(long, default_value_t = 3.0)]
    settle: f64,
    /// Sign in and out this many sessions before the baseline (0: none).
    #[arg(long, default_value_t = 0)]
    warmup: u64,
    /// Give up opening new sessions after this many seconds.
    #[arg(long, default_value_t = 300.0)]
    open_timeout: f64,
}

fn per_session(after: &TreeStats, before: &TreeStats, n: u64) -> (f64, f64, f64) {
    let n = n.max(1) as f64;
    (
        (after.pss_kib as f64 - before.pss_kib as f64) / n,
        (after.rss_kib as f64 - before.rss_kib as f64) / n,
        (after.procs as f64 - before.procs as f64) / n,
    )
}

pub async fn run(env: &Env, a: Args) -> anyhow::Result<bool> {
    let Some(pid) = env.server_pid else {
        bail!("idle: --server-pid is required (root of the server process tree)");
    };
    if let Some(limit) = procstat::max_open_files()
        && limit < a.sessions + 100
    {
        bail!(
            "idle: {} sessions need {} file descriptors, the limit is {limit} (ulimit -n)",
            a.sessions,
            a.sessions + 100
        );
    }
    if env.users.distinct() < a.sessions {
        println!(
            "note: {} sessions over {} distinct users; a server with exclusive maildrops will refuse the rest",
            a.sessions,
            env.users.distinct()
        );
    }
    let Some(before) = procstat::tree_stats(Some(pid)) else {
        bail!("idle: cannot read /proc for pid {pid}");
    };
    let d = Arc::new(Dialer::new(env));
    let sem = Arc::new(Semaphore::new(a.open_concurrency.max(1)));
    let deadline = Instant::now() + Duration::from_secs_f64(a.open_timeout.max(0.0));
    let settle = Duration::from_secs_f64(a.settle.max(0.0));
    let mut errors = Errors::default();
    let before = if a.warmup > 0 {
        // Sign-ins grow the server's allocator (e.g. per-thread arenas that keep
        // password-hashing buffers); a warm-up moves that growth before the baseline.
        let (warm, mut e) = open_range(&d, &sem, deadline, 0..a.warmup.min(a.sessions)).await;
        let failed = close_all(warm).await;
        if failed > 0 {
            e.add(format!("{failed} warm-up QUITs failed"));
        }
        for (k, v) in e.0 {
            errors.add(format!("warm-up: {k} (x{v})"));
        }
        tokio::time::sleep(settle).await;
        procstat::tree_stats(Some(pid)).unwrap_or_default()
    } else {
        before
    };
    let t0 = Instant::now();
    let half = a.sessions / 2;
    let (mut conns, e) = open_range(&d, &sem, deadline, 0..half).await;
    errors.merge(e);
    let n_half = conns.len() as u64;
    tokio::time::sleep(settle).await;
    let mid = procstat::tree_stats(Some(pid)).unwrap_or_default();
    let (more, e) = open_range(&d, &sem, deadline, half..a.sessions).await;
    errors.merge(e);
    conns.extend(more);
    let open_s = t0.elapsed().as_secs_f64() - settle.as_secs_f64();
    let n_open = conns.len() as u64;
    tokio::time::sleep(settle).await;
    let held = procstat::tree_stats(Some(pid)).unwrap_or_default();
    // Every session must still be alive and signed in.
    let mut alive = Vec::with_capacity(conns.len());
    for mut c in conns {
        match c.cmd("NOOP").await {
            Ok(_) => alive.push(c),
            Err(e) => errors.add(format!("NOOP after settle: {}", e.key())),
        }
    }
    let n = alive.len() as u64;
    let (pss, rss, procs) = per_session(&held, &before, n);
    // The second half's growth per session: fixed costs and one-off growth of the
    // first sign-ins drop out.
    let (pss_slope, rss_slope, _) = per_session(&held, &mid, n_open.saturating_sub(n_half));
    println!(
        "IDLE {}: {n}/{} signed-in idle sessions (opened in {open_s:.1}s); server procs {} -> {}; \
         RSS {:.1} -> {:.1} MiB = {rss:.1} KiB/session; PSS {:.1} -> {:.1} MiB = {pss:.1} KiB/session",
        env.report.mode,
        a.sessions,
        before.procs,
        held.procs,
        before.rss_kib as f64 / 1024.0,
        held.rss_kib as f64 / 1024.0,
        before.pss_kib as f64 / 1024.0,
        held.pss_kib as f64 / 1024.0,
    );
    let kind_line: Vec<String> = held
        .kinds
        .iter()
        .map(|(k, v)| {
            format!(
                "{k}: {} procs, RSS {:.1} MiB, PSS {:.1} MiB",
                v.n,
                v.rss_kib as f64 / 1024.0,
                v.pss_kib as f64 / 1024.0
            )
        })
        .collect();
    println!("  by process: {}", kind_line.join("; "));
    println!(
        "  second half only ({} -> {n_open} sessions): PSS {:.1} -> {:.1} MiB = {pss_slope:.1} KiB/session, RSS {rss_slope:.1} KiB/session",
        n_half,
        mid.pss_kib as f64 / 1024.0,
        held.pss_kib as f64 / 1024.0,
    );
    errors.print();

    let quit_failed = close_all(alive).await;
    tokio::time::sleep(settle).await;
    let closed = procstat::tree_stats(Some(pid)).unwrap_or_default();
    println!(
        "  after QUIT of all and {:.0}s: RSS {:.1} MiB, PSS {:.1} MiB ({:+.1} MiB PSS vs. before){}",
        a.settle,
        closed.rss_kib as f64 / 1024.0,
        closed.pss_kib as f64 / 1024.0,
        (closed.pss_kib as f64 - before.pss_kib as f64) / 1024.0,
        if quit_failed > 0 {
            format!("; {quit_failed} QUITs failed")
        } else {
            String::new()
        }
    );

    let mut res = Map::new();
    res.insert("bench".into(), json!("idle"));
    res.insert("sessions_requested".into(), json!(a.sessions));
    res.insert("sessions_alive".into(), json!(n));
    res.insert("open_seconds".into(), round(open_s, 1));
    res.insert("errors".into(), errors.json());
    res.insert("before".into(), json!(before));
    res.insert("warmup".into(), json!(a.warmup));
    res.insert("mid".into(), json!(mid));
    res.insert("sessions_mid".into(), json!(n_half));
    res.insert("after".into(), json!(held));
    res.insert("after_quit".into(), json!(closed));
    res.insert("rss_kib_per_session".into(), round(rss, 1));
    res.insert("pss_kib_per_session".into(), round(pss, 1));
    res.insert("procs_per_session".into(), round(procs, 2));
    res.insert(
        "pss_kib_per_session_second_half".into(),
        round(pss_slope, 1),
    );
    res.insert(
        "rss_kib_per_session_second_half".into(),
        round(rss_slope, 1),
    );
    res.insert("quit_failed".into(), json!(quit_failed));
    let ok = errors.total() == 0 && n == a.sessions && quit_failed == 0;
    env.report.emit(res)?;
    Ok(ok)
}

/// Opens the sessions of users `range`, `sem` bounding how many at once.
async fn open_range(
    d: &Arc<Dialer>,
    sem: &Arc<Semaphore>,
    deadline: Instant,
    range: std::ops::Range<u64>,
) -> (Vec<Pop3>, Errors) {
    let mut tasks = Vec::with_capacity((range.end - range.start) as usize);
    for k in range {
        let (d, sem) = (d.clone(), sem.clone());
        tasks.push(tokio::spawn(async move {
            let _permit = sem.acquire_owned().await.ok()?;
            if Instant::now() > deadline {
                return Some(Err("open timeout: not attempted".to_string()));
            }
            let r = async {
                let mut c = d.open(k, SMALL_CHUNK).await?;
                c.cmd("NOOP").await?;
                Ok::<Pop3, crate::conn::Pop3Error>(c)
            }
            .await;
            Some(r.map_err(|e| e.key()))
        }));
    }
    let mut conns = Vec::new();
    let mut errors = Errors::default();
    for t in tasks {
        match t.await {
            Ok(Some(Ok(c))) => conns.push(c),
            Ok(Some(Err(e))) => errors.add(e),
            Ok(None) => errors.add("semaphore closed".into()),
            Err(e) => errors.add(format!("task: {e}")),
        }
    }
    (conns, errors)
}

/// QUITs every session, 64 at a time; returns how many failed.
async fn close_all(conns: Vec<Pop3>) -> u64 {
    let sem = Arc::new(Semaphore::new(64));
    let mut quits = Vec::with_capacity(conns.len());
    for c in conns {
        let sem = sem.clone();
        quits.push(tokio::spawn(async move {
            let _p = sem.acquire_owned().await.ok();
            c.quit().await.is_ok()
        }));
    }
    let mut failed = 0;
    for q in quits {
        if !q.await.unwrap_or(false) {
            failed += 1;
        }
    }
    failed
}
