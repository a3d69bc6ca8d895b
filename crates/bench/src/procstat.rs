//! CPU and memory of a server's process tree, read from /proc (Linux).
//!
//! CPU is utime + stime + cutime + cstime of every process in the tree, so the time of
//! children that already exited and were reaped (Dovecot's per-connection login
//! processes) still counts. Memory is VmRSS (/proc/PID/status) and Pss
//! (/proc/PID/smaps_rollup) summed over the tree: PSS shares pages between the
//! processes that map them, so it adds up to the tree's real footprint.

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::sync::OnceLock;

use serde::Serialize;

/// Memory of the processes sharing one executable name.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Kind {
    pub n: u64,
    pub rss_kib: u64,
    pub pss_kib: u64,
}

/// One look at a process tree.
#[derive(Clone, Debug, Default, Serialize)]
pub struct TreeStats {
    pub procs: u64,
    pub rss_kib: u64,
    pub pss_kib: u64,
    pub cpu_s: f64,
    pub kinds: BTreeMap<String, Kind>,
}

/// Clock ticks per second for /proc/PID/stat times (USER_HZ; 100 on Linux/x86 and arm64).
fn clk_tck() -> f64 {
    static TCK: OnceLock<f64> = OnceLock::new();
    *TCK.get_or_init(|| {
        std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| s.trim().parse::<f64>().ok())
            .filter(|&t| t > 0.0)
            .unwrap_or(100.0)
    })
}

/// (ppid, cpu ticks incl. reaped children) from /proc/PID/stat.
fn stat_of(pid: u32) -> Option<(u32, u64)> {
    let s = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may contain spaces: split after the last ')'.
    let rest = &s[s.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_ascii_whitespace().collect();
    let ppid = f.get(1)?.parse().ok()?;
    let ticks = f
        .get(11..15)?
        .iter()
        .map(|x| x.parse::<u64>().unwrap_or(0))
        .sum();
    Some((ppid, ticks))
}

fn field_kib(path: &str, key: &str) -> u64 {
    fs::read_to_string(path)
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| {
                l.strip_prefix(key)
                    .and_then(|v| v.split_whitespace().next())
                    .and_then(|v| v.parse().ok())
            })
        })
        .unwrap_or(0)
}

fn name_of(pid: u32) -> String {
    let raw = fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    let first = raw.split(|&b| b == 0).next().unwrap_or_default();
    let s = String::from_utf8_lossy(first);
    let s = s.split_whitespace().next().unwrap_or("?");
    if s.is_empty() { "?".into() } else { s.into() }
}

/// The PIDs of `root` and all its descendants, with their stat data.
fn tree(root: u32) -> Vec<(u32, u64)> {
    let mut table: HashMap<u32, (u32, u64)> = HashMap::new();
    if let Ok(rd) = fs::read_dir("/proc") {
        for e in rd.flatten() {
            if let Some(pid) = e.file_name().to_str().and_then(|n| n.parse::<u32>().ok())
                && let Some(st) = stat_of(pid)
            {
                table.insert(pid, st);
            }
        }
    }
    let mut kids: HashMap<u32, Vec<u32>> = HashMap::new();
    for (&pid, &(ppid, _)) in &table {
        kids.entry(ppid).or_default().push(pid);
    }
    let mut out = Vec::new();
    let mut stack = vec![root];
    // Bounded: a PID is visited once, and there are finitely many.
    while let Some(p) = stack.pop() {
        if let Some(&(_, ticks)) = table.get(&p) {
            out.push((p, ticks));
            if let Some(k) = kids.remove(&p) {
                stack.extend(k);
            }
        }
    }
    out
}

/// CPU, RSS and PSS of the tree under `root`; `None` without a root.
pub fn tree_stats(root: Option<u32>) -> Option<TreeStats> {
    let root = root?;
    let tck = clk_tck();
    let mut st = TreeStats::default();
    let mut ticks = 0;
    for (pid, t) in tree(root) {
        ticks += t;
        let rss = field_kib(&format!("/proc/{pid}/status"), "VmRSS:");
        let pss = field_kib(&format!("/proc/{pid}/smaps_rollup"), "Pss:");
        let k = st.kinds.entry(name_of(pid)).or_default();
        k.n += 1;
        k.rss_kib += rss;
        k.pss_kib += pss;
        st.procs += 1;
        st.rss_kib += rss;
        st.pss_kib += pss;
    }
    st.cpu_s = ticks as f64 / tck;
    Some(st)
}

/// CPU seconds used by this process so far: the sum over its threads of
/// /proc/self/task/TID/schedstat (nanoseconds, finer than the 10 ms ticks of
/// /proc/self/stat, which is the fallback).
pub fn self_cpu() -> f64 {
    let mut ns: u64 = 0;
    let mut found = false;
    if let Ok(rd) = fs::read_dir("/proc/self/task") {
        for e in rd.flatten() {
            let path = e.path().join("schedstat");
            if let Some(v) = fs::read_to_string(path)
                .ok()
                .and_then(|s| s.split_whitespace().next()?.parse::<u64>().ok())
            {
                ns += v;
                found = true;
            }
        }
    }
    if found {
        return ns as f64 / 1e9;
    }
    stat_of(std::process::id()).map_or(0.0, |(_, t)| t as f64 / clk_tck())
}

/// The calling thread's id (TID), from the `/proc/thread-self` link (`PID/task/TID`).
pub fn current_tid() -> Option<u32> {
    let link = fs::read_link("/proc/thread-self").ok()?;
    link.file_name()?.to_str()?.parse().ok()
}

/// CPU seconds used so far by thread `tid` of this process: its schedstat
/// (nanoseconds), or utime + stime of its stat (ticks) as the fallback.
pub fn thread_cpu(tid: u32) -> Option<f64> {
    let dir = format!("/proc/self/task/{tid}");
    if let Some(ns) = fs::read_to_string(format!("{dir}/schedstat"))
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<u64>().ok())
    {
        return Some(ns as f64 / 1e9);
    }
    let s = fs::read_to_string(format!("{dir}/stat")).ok()?;
    let rest = &s[s.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_ascii_whitespace().collect();
    let ticks: u64 = f
        .get(11..13)?
        .iter()
        .map(|x| x.parse::<u64>().unwrap_or(0))
        .sum();
    Some(ticks as f64 / clk_tck())
}

/// The soft limit on open files, to warn before running out of descriptors.
pub fn max_open_files() -> Option<u64> {
    let s = fs::read_to_string("/proc/self/limits").ok()?;
    let line = s.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

/// Resets the peak resident set size (`VmHWM`) of every process under `root` to its
/// current size (`/proc/PID/clear_refs`, value 5, Linux 4.0+; needs the processes'
/// owner or root). Returns the tree's RSS now, in KiB; `None` without a root or when
/// no peak could be reset.
pub fn reset_peak_rss(root: Option<u32>) -> Option<u64> {
    let root = root?;
    let mut any = false;
    let mut rss = 0;
    for (pid, _) in tree(root) {
        any |= fs::write(format!("/proc/{pid}/clear_refs"), "5").is_ok();
        rss += field_kib(&format!("/proc/{pid}/status"), "VmRSS:");
    }
    any.then_some(rss)
}

/// The sum over the tree under `root` of each process's peak RSS (`VmHWM`) since the
/// last [`reset_peak_rss`], in KiB. The kernel keeps the peak, so nothing is sampled
/// and the measurement costs nothing while it runs.
pub fn peak_rss(root: Option<u32>) -> Option<u64> {
    let root = root?;
    Some(
        tree(root)
            .into_iter()
            .map(|(pid, _)| field_kib(&format!("/proc/{pid}/status"), "VmHWM:"))
            .sum(),
    )
}
