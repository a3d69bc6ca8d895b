//! `login`: connect (full TLS handshake), sign in, STAT, QUIT, as fast as `--concurrency`
//! workers can, until `--duration` seconds or `--max-logins` sign-ins.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Map, json};

use super::{Dialer, Meter, SMALL_CHUNK};
use crate::Env;
use crate::report::{Errors, Latencies, round};

#[derive(clap::Args)]
pub struct Args {
    #[arg(long, default_value_t = 8)]
    concurrency: usize,
    /// Seconds.
    #[arg(long, default_value_t = 15.0)]
    duration: f64,
    #[arg(long, default_value_t = 5000)]
    max_logins: i64,
}

#[derive(Default)]
struct Tally {
    total: Latencies,
    connect: Latencies,
    auth: Latencies,
    errors: Errors,
}

pub async fn run(env: &Env, a: Args) -> anyhow::Result<bool> {
    let dialer = Arc::new(Dialer::new(env));
    let budget = Arc::new(AtomicI64::new(a.max_logins));
    let next_user = Arc::new(AtomicU64::new(0));
    let stop_at = Instant::now() + Duration::from_secs_f64(a.duration.max(0.0));
    let meter = Meter::start(env.server_pid);
    let mut workers = Vec::new();
    for _ in 0..a.concurrency.max(1) {
        let (dialer, budget, next_user) = (dialer.clone(), budget.clone(), next_user.clone());
        workers.push(tokio::spawn(async move {
            let mut t = Tally::default();
            while Instant::now() < stop_at && budget.fetch_sub(1, Ordering::Relaxed) > 0 {
                let k = next_user.fetch_add(1, Ordering::Relaxed);
                let t0 = Instant::now();
                let r = async {
                    let mut c = dialer.connect(SMALL_CHUNK).await?;
                    let t1 = Instant::now();
                    let user = dialer.users.name(k);
                    c.login(dialer.auth, &user, dialer.passwords.of(&user))
                        .await?;
                    let t2 = Instant::now();
                    c.cmd("STAT").await?;
                    c.quit().await?;
                    Ok::<_, crate::conn::Pop3Error>((t1, t2))
                }
                .await;
                match r {
                    Ok((t1, t2)) => {
                        t.total.push(t0.elapsed());
                        t.connect.push(t1 - t0);
                        t.auth.push(t2 - t1);
                    }
                    Err(e) => {
                        t.errors.add(e.key());
                        // Do not spin on a refusing server.
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                }
            }
            t
        }));
    }
    let mut all = Tally::default();
    for w in workers {
        let t = w.await?;
        all.total.extend(t.total);
        all.connect.extend(t.connect);
        all.auth.extend(t.auth);
        all.errors.merge(t.errors);
    }
    let m = meter.stop();
    let done = all.total.len();
    let total = all.total.summary();
    let mut res = Map::new();
    res.insert("bench".into(), json!("login"));
    res.insert("concurrency".into(), json!(a.concurrency));
    res.insert("users".into(), json!(env.users.distinct()));
    res.insert("logins".into(), json!(done));
    res.insert("seconds".into(), round(m.seconds, 3));
    res.insert("logins_per_s".into(), round(done as f64 / m.seconds, 1));
    total.put(&mut res, "");
    all.connect.summary().put(&mut res, "connect_");
    all.auth.summary().put(&mut res, "auth_");
    res.insert("errors".into(), all.errors.json());
    m.put(&mut res);
    if let Some(s) = m.server_cpu_s {
        res.insert(
            "server_cpu_ms_per_login".into(),
            round(1e3 * s / done.max(1) as f64, 2),
        );
    }
    println!(
        "LOGIN {}/{} c={}: {:.1} logins/s ({done} in {:.1}s) {} errors={}{}{}",
        env.report.mode,
        env.report.auth,
        a.concurrency,
        done as f64 / m.seconds,
        m.seconds,
        total.line(),
        all.errors.total(),
        m.line(),
        m.server_cpu_s.map_or(String::new(), |s| format!(
            " ({:.2} ms/login)",
            1e3 * s / done.max(1) as f64
        )),
    );
    if let (Some(c), Some(au)) = (res.get("connect_p50_ms"), res.get("auth_p50_ms")) {
        println!("  phases p50: connect+TLS+greeting {c} ms, sign-in {au} ms");
    }
    all.errors.print();
    let ok = all.errors.total() == 0;
    env.report.emit(res)?;
    Ok(ok)
}
