//! Percentiles, error tables and the JSON result line (same field names as
//! pop3bench.py where the measurement is the same).

use std::collections::BTreeMap;
use std::io::Write as _;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use serde_json::{Map, Value, json};

/// Latencies in milliseconds.
#[derive(Default)]
pub struct Latencies(Vec<f64>);

impl Latencies {
    pub fn push(&mut self, d: Duration) {
        self.0.push(d.as_secs_f64() * 1e3);
    }

    pub fn extend(&mut self, other: Latencies) {
        self.0.extend(other.0);
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Sorts once; percentiles are read from the sorted copy.
    pub fn summary(mut self) -> Summary {
        self.0.sort_by(f64::total_cmp);
        Summary(self.0)
    }
}

/// Sorted latencies.
pub struct Summary(Vec<f64>);

impl Summary {
    /// The same rank rule as pop3bench.py: `sorted[min(n-1, int(q*n))]`.
    pub fn pct(&self, q: f64) -> f64 {
        if self.0.is_empty() {
            return f64::NAN;
        }
        let i = ((q * self.0.len() as f64) as usize).min(self.0.len() - 1);
        self.0[i]
    }

    pub fn max(&self) -> f64 {
        self.0.last().copied().unwrap_or(f64::NAN)
    }

    /// `{prefix}p50_ms`, `p90_ms`, `p99_ms`, `max_ms` into `m`.
    pub fn put(&self, m: &mut Map<String, Value>, prefix: &str) {
        for (name, v) in [
            ("p50_ms", self.pct(0.5)),
            ("p90_ms", self.pct(0.9)),
            ("p99_ms", self.pct(0.99)),
            ("max_ms", self.max()),
        ] {
            m.insert(format!("{prefix}{name}"), round(v, 2));
        }
    }

    /// `p50=.. p90=.. p99=.. max=..` for the summary line.
    pub fn line(&self) -> String {
        format!(
            "p50={:.1}ms p90={:.1}ms p99={:.1}ms max={:.1}ms",
            self.pct(0.5),
            self.pct(0.9),
            self.pct(0.99),
            self.max()
        )
    }
}

/// Rounds for the JSON line; NaN becomes null.
pub fn round(v: f64, digits: i32) -> Value {
    if !v.is_finite() {
        return Value::Null;
    }
    let f = 10f64.powi(digits);
    json!((v * f).round() / f)
}

/// Errors counted by kind.
#[derive(Default)]
pub struct Errors(pub BTreeMap<String, u64>);

impl Errors {
    pub fn add(&mut self, key: String) {
        *self.0.entry(key).or_default() += 1;
    }

    pub fn merge(&mut self, other: Errors) {
        for (k, v) in other.0 {
            *self.0.entry(k).or_default() += v;
        }
    }

    pub fn total(&self) -> u64 {
        self.0.values().sum()
    }

    pub fn json(&self) -> Value {
        json!(self.0)
    }

    /// Prints the table when there were errors.
    pub fn print(&self) {
        for (k, v) in &self.0 {
            println!("  error x{v}: {k}");
        }
    }
}

/// Fields every result line carries, from the command line.
pub struct Context {
    pub host: String,
    pub mode: &'static str,
    pub auth: &'static str,
    pub user: String,
    pub label: String,
    pub json: Option<String>,
}

impl Context {
    /// Adds the common fields and appends the line to `--json FILE`.
    pub fn emit(&self, mut res: Map<String, Value>) -> anyhow::Result<()> {
        let ts = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0);
        res.insert("tool".into(), json!("poplar-bench"));
        res.insert("host".into(), json!(self.host));
        res.insert("mode".into(), json!(self.mode));
        res.insert("auth".into(), json!(self.auth));
        res.insert("user".into(), json!(self.user));
        res.insert("ts".into(), round(ts, 3));
        res.insert("label".into(), json!(self.label));
        res.insert("loadavg1".into(), loadavg1());
        if let Some(path) = &self.json {
            let mut f = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .with_context(|| format!("opening {path}"))?;
            writeln!(f, "{}", Value::Object(res)).with_context(|| format!("writing {path}"))?;
        }
        Ok(())
    }
}

fn loadavg1() -> Value {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<f64>().ok())
        .map_or(Value::Null, |v| json!(v))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_follow_pop3bench_py() {
        let mut l = Latencies::default();
        for ms in 1..=100 {
            l.push(Duration::from_millis(ms));
        }
        let s = l.summary();
        assert_eq!(s.pct(0.5), 51.0);
        assert_eq!(s.pct(0.99), 100.0);
        assert_eq!(s.max(), 100.0);
        assert!(Latencies::default().summary().pct(0.5).is_nan());
    }
}
