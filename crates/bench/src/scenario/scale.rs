//! `scale`: connect, sign in, STAT, UIDL (the full listing), optionally LIST, QUIT; each
//! repeat reported on its own: the first shows the cost of a first open of the maildrop
//! (no server-side index yet), later ones the warm cost.

use std::time::Instant;

use serde_json::{Map, json};

use super::{BIG_CHUNK, Dialer, Meter};
use crate::Env;
use crate::report::round;

#[derive(clap::Args)]
pub struct Args {
    #[arg(long, default_value_t = 2)]
    repeat: u32,
    /// Also time a full LIST after UIDL.
    #[arg(long)]
    with_list: bool,
}

fn ms(a: Instant, b: Instant) -> f64 {
    (b - a).as_secs_f64() * 1e3
}

pub async fn run(env: &Env, a: Args) -> anyhow::Result<bool> {
    let d = Dialer::new(env);
    let user = d.users.name(0);
    for i in 1..=a.repeat.max(1) {
        let meter = Meter::start(env.server_pid);
        let t0 = Instant::now();
        let mut c = d.connect(BIG_CHUNK).await?;
        let t1 = Instant::now();
        c.login(d.auth, &user, d.passwords.of(&user)).await?;
        let t2 = Instant::now();
        let stat = c.cmd("STAT").await?;
        let t3 = Instant::now();
        let mut bad = 0u64;
        let lines = c
            .multi("UIDL", |l| {
                if l.split(|&b| b == b' ').filter(|p| !p.is_empty()).count() != 2 {
                    bad += 1;
                }
            })
            .await?;
        let mut t4 = Instant::now();
        let mut list_ms = None;
        if a.with_list {
            c.multi("LIST", |_| {}).await?;
            let t = Instant::now();
            list_ms = Some(ms(t4, t));
            t4 = t;
        }
        c.quit().await?;
        let t5 = Instant::now();
        let m = meter.stop();
        let messages: u64 = String::from_utf8_lossy(&stat)
            .split_whitespace()
            .nth(1)
            .and_then(|n| n.parse().ok())
            .unwrap_or(0);
        let mut res = Map::new();
        res.insert("bench".into(), json!("scale"));
        res.insert("run".into(), json!(i));
        res.insert("messages".into(), json!(messages));
        res.insert("uidl_lines".into(), json!(lines));
        res.insert("bad_uidl_lines".into(), json!(bad));
        for (k, v) in [
            ("connect_ms", ms(t0, t1)),
            ("login_ms", ms(t1, t2)),
            ("stat_ms", ms(t2, t3)),
            ("uidl_ms", ms(t3, t4) - list_ms.unwrap_or(0.0)),
            ("quit_ms", ms(t4, t5)),
            ("total_ms", ms(t0, t5)),
        ] {
            res.insert(k.into(), round(v, 1));
        }
        if let Some(l) = list_ms {
            res.insert("list_ms".into(), round(l, 1));
        }
        m.put(&mut res);
        println!(
            "SCALE {} run {i}{}: {messages} msgs total={}ms (connect {} login {} STAT {} UIDL {} [{lines} lines]{} QUIT {}){}",
            env.report.mode,
            if i == 1 { " (first)" } else { " (warm)" },
            res["total_ms"],
            res["connect_ms"],
            res["login_ms"],
            res["stat_ms"],
            res["uidl_ms"],
            list_ms.map_or(String::new(), |l| format!(" LIST {l:.1}")),
            res["quit_ms"],
            m.server_cpu_s
                .map_or(String::new(), |s| format!(" server_cpu={:.0}ms", s * 1e3)),
        );
        if lines as u64 != messages || bad != 0 {
            println!("  UIDL gave {lines} lines ({bad} malformed) for {messages} messages");
        }
        env.report.emit(res)?;
    }
    Ok(true)
}
