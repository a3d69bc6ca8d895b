//! The text form of the report: a summary, then each check with its items and advice.

use std::fmt::Write as _;

use super::{Finding, Item, Report, Severity, Status};

/// Width that advice and summaries are wrapped to.
const WIDTH: usize = 88;

pub(super) fn text(report: &Report) -> String {
    let mut out = String::new();
    let count = |s: &str| report.summary.get(s).copied().unwrap_or(0);
    let passed = report
        .findings
        .iter()
        .filter(|f| f.status == Status::Ok)
        .count();
    let _ = writeln!(out, "Poplar audit report, {}", report.generated_at);
    let _ = writeln!(
        out,
        "Directory {} ({} accounts)",
        report.directory, report.users
    );
    let _ = writeln!(
        out,
        "Findings: {} high, {} medium, {} low, {} to review; {passed} checks passed\n",
        count("high"),
        count("medium"),
        count("low"),
        count("info"),
    );
    for f in &report.findings {
        finding(&mut out, f);
    }
    out
}

fn finding(out: &mut String, f: &Finding) {
    let tag = match (f.status, f.severity) {
        (Status::Ok, _) => "OK",
        (Status::Finding, Severity::High) => "HIGH",
        (Status::Finding, Severity::Medium) => "MEDIUM",
        (Status::Finding, Severity::Low) => "LOW",
        (Status::Finding, Severity::Info) => "REVIEW",
    };
    let _ = writeln!(out, "[{tag}] {} ({})", f.title, f.id);
    wrap(out, "    ", &f.summary);
    for item in &f.items {
        let _ = writeln!(out, "      - {}", item_line(item));
    }
    if f.status == Status::Finding {
        wrap(out, "    ", &format!("What to do: {}", f.advice));
    }
    out.push('\n');
}

/// One line per item: who or what first, then the facts that apply.
fn item_line(item: &Item) -> String {
    let mut parts: Vec<String> = Vec::new();
    parts.extend(item.user.clone());
    parts.extend(item.address.clone());
    if item.user.is_none() && item.address.is_none() {
        parts.extend(item.setting.clone());
    }
    if item.enabled == Some(false) {
        parts.push("(disabled)".into());
    }
    if let Some(scheme) = item.scheme {
        parts.push(format!("hash {scheme}"));
    }
    if let Some(nets) = &item.networks {
        parts.push(nets.join(", "));
    }
    if let Some(t) = &item.created_at {
        parts.push(format!("created {t}"));
    }
    if let Some(t) = &item.last_sign_in {
        parts.push(format!("last sign-in {t}"));
    }
    if let Some(t) = &item.until {
        parts.push(format!("until {t}"));
    }
    if let Some(n) = item.failures {
        parts.push(format!("{n} failures"));
    }
    if let Some(n) = item.accounts {
        parts.push(format!("failed on {n} accounts"));
    }
    let mut line = parts.join("  ");
    if let Some(note) = &item.note {
        line.push_str(if parts.len() == 1 && item.setting.is_some() {
            ": "
        } else {
            "  - "
        });
        line.push_str(note);
    }
    line
}

/// Writes `text` wrapped at [`WIDTH`], each line starting with `indent`.
fn wrap(out: &mut String, indent: &str, text: &str) {
    let mut line = String::from(indent);
    for word in text.split_whitespace() {
        if line.len() > indent.len() && line.len() + 1 + word.len() > WIDTH {
            out.push_str(&line);
            out.push('\n');
            line = String::from(indent);
        }
        if line.len() > indent.len() {
            line.push(' ');
        }
        line.push_str(word);
    }
    if line.len() > indent.len() {
        out.push_str(&line);
        out.push('\n');
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrap_keeps_words_whole_and_indents() {
        let mut out = String::new();
        let text = "word ".repeat(40);
        wrap(&mut out, "  ", &text);
        assert!(out.lines().all(|l| l.starts_with("  ") && l.len() <= WIDTH));
        assert_eq!(out.split_whitespace().count(), 40);
    }

    #[test]
    fn item_line_names_the_account_first() {
        let item = Item {
            user: Some("alice".into()),
            enabled: Some(false),
            scheme: Some("SHA512-CRYPT"),
            ..Item::default()
        };
        assert_eq!(item_line(&item), "alice  (disabled)  hash SHA512-CRYPT");
    }
}
