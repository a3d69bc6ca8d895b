//! `retr`: sign in, LIST, RETR every message, sequentially (one command in flight) or
//! pipelined (RFC 2449 PIPELINING: all RETRs written in large writes while the answers
//! are read). Every message's octets after un-stuffing (CRLF included, terminator
//! excluded) must equal its LIST size.

use serde_json::{Map, json};

use super::{BIG_CHUNK, Dialer, Meter};
use crate::Env;
use crate::body::{self, BodyScan};
use crate::conn::{Pop3, Pop3Error, Result, TlsInfo, write_flush};
use crate::report::{Errors, round};

#[derive(clap::Args)]
pub struct Args {
    /// Write all RETR commands at once instead of one at a time.
    #[arg(long)]
    pipeline: bool,
    /// Retrieve only the first N messages of LIST.
    #[arg(long)]
    max_msgs: Option<usize>,
    /// Sessions to run one after the other (each reported).
    #[arg(long, default_value_t = 1)]
    repeat: u32,
    /// Pipelined: bytes of commands per write.
    #[arg(long, default_value_t = 64 * 1024)]
    batch_bytes: usize,
}

/// What one session retrieved.
#[derive(Default)]
pub(super) struct Tally {
    pub messages: u64,
    pub octets: u64,
    pub wire_bytes: u64,
    pub mismatches: u64,
    pub unstuffed_dot_lines: u64,
    pub first_mismatches: Vec<(u32, u64, u64)>,
    pub errors: Errors,
}

impl Tally {
    /// Prints every size mismatch (`expected` names where the expected size came from),
    /// unstuffed dot line and error; true when there were none.
    pub(super) fn print_problems(&self, expected: &str) -> bool {
        for (n, listed, got) in &self.first_mismatches {
            println!("  message {n}: {expected} {listed} octets, RETR gave {got}");
        }
        if self.unstuffed_dot_lines > 0 {
            println!(
                "  {} lines began with an unstuffed '.'",
                self.unstuffed_dot_lines
            );
        }
        self.errors.print();
        self.mismatches == 0 && self.unstuffed_dot_lines == 0 && self.errors.total() == 0
    }

    fn check(&mut self, n: u32, listed: u64, s: &BodyScan) {
        self.messages += 1;
        self.octets += listed;
        self.wire_bytes += s.wire_octets + 3;
        self.unstuffed_dot_lines += s.unstuffed_dot_lines;
        if s.octets() != listed {
            self.mismatches += 1;
            if self.first_mismatches.len() < 5 {
                self.first_mismatches.push((n, listed, s.octets()));
            }
        }
    }
}

pub async fn run(env: &Env, a: Args) -> anyhow::Result<bool> {
    let d = Dialer::new(env);
    let mut ok = true;
    let mut rates = Vec::new();
    for run_no in 1..=a.repeat.max(1) {
        let mut c = d.open(0, BIG_CHUNK).await?;
        let tls = c.tls_info();
        let mut list: Vec<(u32, u64)> = Vec::new();
        let mut bad_list_lines = 0;
        c.multi("LIST", |l| {
            let mut f = l.split(|&b| b == b' ').filter(|p| !p.is_empty());
            let num = f
                .next()
                .and_then(|x| std::str::from_utf8(x).ok()?.parse().ok());
            let size = f
                .next()
                .and_then(|x| std::str::from_utf8(x).ok()?.parse().ok());
            match (num, size) {
                (Some(n), Some(s)) => list.push((n, s)),
                _ => bad_list_lines += 1,
            }
        })
        .await?;
        list.sort_unstable();
        if let Some(m) = a.max_msgs {
            list.truncate(m);
        }
        let meter = Meter::start(env.server_pid);
        let t = if a.pipeline {
            pipelined(&mut c, &list, a.batch_bytes, d.target.op_timeout).await?
        } else {
            sequential(&mut c, &list).await?
        };
        let m = meter.stop();
        c.quit().await?;

        let el = m.seconds.max(1e-9);
        let mb_s = t.octets as f64 / el / 1e6;
        rates.push(mb_s);
        let mut res = Map::new();
        res.insert("bench".into(), json!("retr"));
        res.insert("run".into(), json!(run_no));
        res.insert("messages".into(), json!(t.messages));
        res.insert("listed".into(), json!(list.len()));
        res.insert("octets".into(), json!(t.octets));
        res.insert("wire_bytes".into(), json!(t.wire_bytes));
        res.insert("seconds".into(), round(m.seconds, 4));
        res.insert("MB_per_s".into(), round(mb_s, 1));
        res.insert("msgs_per_s".into(), round(t.messages as f64 / el, 1));
        res.insert("size_mismatches".into(), json!(t.mismatches));
        res.insert("unstuffed_dot_lines".into(), json!(t.unstuffed_dot_lines));
        res.insert("bad_list_lines".into(), json!(bad_list_lines));
        res.insert("errors".into(), t.errors.json());
        res.insert("pipeline".into(), json!(a.pipeline));
        TlsInfo::put(tls.as_ref(), &mut res);
        m.put(&mut res);
        // The client's own cost: its ceiling on one core is 1000 / this MB/s.
        let client_ms_per_mb = 1e3 * m.client_cpu_s / (t.octets as f64 / 1e6).max(1e-9);
        res.insert("client_cpu_ms_per_MB".into(), round(client_ms_per_mb, 3));
        println!(
            "RETR {} user={}{} run {run_no}: {} msgs, {:.1} MB in {:.3}s = {mb_s:.1} MB/s, {:.1} msgs/s, \
             size mismatches={}, errors={}{}{} ({client_ms_per_mb:.2} ms client CPU/MB)",
            env.report.mode,
            d.users.name(0),
            if a.pipeline { " pipelined" } else { "" },
            t.messages,
            t.octets as f64 / 1e6,
            m.seconds,
            t.messages as f64 / el,
            t.mismatches,
            t.errors.total(),
            m.line(),
            TlsInfo::line(tls.as_ref()),
        );
        ok &= t.print_problems("LIST says")
            && bad_list_lines == 0
            && t.messages as usize == list.len();
        env.report.emit(res)?;
    }
    if rates.len() > 1 {
        rates.sort_by(f64::total_cmp);
        println!(
            "RETR over {} runs: median {:.1} MB/s, best {:.1} MB/s",
            rates.len(),
            rates[rates.len() / 2],
            rates[rates.len() - 1]
        );
    }
    Ok(ok)
}

/// One RETR at a time (also the client side of `tls-ceiling`).
pub(super) async fn sequential(c: &mut Pop3, list: &[(u32, u64)]) -> Result<Tally> {
    let finder = body::finder();
    let mut t = Tally::default();
    for &(n, size) in list {
        c.send(&format!("RETR {n}")).await?;
        match c.status().await {
            Ok(_) => {
                let s = c.rb.count_body(&mut c.stream, &finder).await?;
                t.check(n, size, &s);
            }
            Err(e @ Pop3Error::Err(_)) => t.errors.add(e.key()),
            Err(e) => return Err(e),
        }
    }
    Ok(t)
}

/// All RETRs written while the answers are read, so neither side waits for the other.
async fn pipelined(
    c: &mut Pop3,
    list: &[(u32, u64)],
    batch_bytes: usize,
    op_timeout: std::time::Duration,
) -> Result<Tally> {
    let mut batches: Vec<Vec<u8>> = vec![Vec::new()];
    for &(n, _) in list {
        let cmd = format!("RETR {n}\r\n");
        if batches
            .last()
            .is_some_and(|b| b.len() + cmd.len() > batch_bytes.max(16))
        {
            batches.push(Vec::new());
        }
        if let Some(b) = batches.last_mut() {
            b.extend_from_slice(cmd.as_bytes());
        }
    }
    let Pop3 { stream, rb, .. } = c;
    let (mut rd, mut wr) = tokio::io::split(stream);
    let writer = async {
        for b in batches.iter().filter(|b| !b.is_empty()) {
            write_flush(&mut wr, b, op_timeout).await?;
        }
        Ok::<_, Pop3Error>(())
    };
    let reader = async {
        let finder = body::finder();
        let mut t = Tally::default();
        for &(n, size) in list {
            match rb.status(&mut rd).await {
                Ok(_) => {
                    let s = rb.count_body(&mut rd, &finder).await?;
                    t.check(n, size, &s);
                }
                Err(e @ Pop3Error::Err(_)) => t.errors.add(e.key()),
                Err(e) => return Err(e),
            }
        }
        Ok(t)
    };
    // The first error ends both halves.
    let ((), t) = tokio::try_join!(writer, reader)?;
    Ok(t)
}
