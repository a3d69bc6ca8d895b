//! The classic Prometheus text format (version 0.0.4), for scrapers that do not ask for
//! OpenMetrics. prometheus-client writes OpenMetrics only; the two differ in a few
//! lines, rewritten here: counter families are named with their `_total` suffix, info
//! metrics become gauges named `_info`, and `# UNIT` and `# EOF` go away. Samples are
//! the same in both.

/// `Content-Type` of the classic format.
pub(crate) const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Rewrites an OpenMetrics exposition (as prometheus-client writes it: `# HELP` just
/// before `# TYPE`) into the classic format.
pub(crate) fn from_openmetrics(openmetrics: &str) -> String {
    let mut out = String::with_capacity(openmetrics.len());
    // A HELP line waits for its TYPE line, which says whether its name changes.
    let mut help: Option<(&str, &str)> = None;
    for line in openmetrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        if let Some(rest) = line.strip_prefix("# HELP ") {
            flush_help(&mut out, help.take());
            help = Some(rest.split_once(' ').unwrap_or((rest, "")));
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap_or((rest, "untyped"));
            let (suffix, kind) = match kind {
                "counter" => ("_total", "counter"),
                "info" => ("_info", "gauge"),
                other => ("", other),
            };
            let renamed = format!("{name}{suffix}");
            match help.take() {
                Some((help_name, text)) if help_name == name => {
                    flush_help(&mut out, Some((&renamed, text)));
                }
                other => flush_help(&mut out, other),
            }
            out.push_str("# TYPE ");
            out.push_str(&renamed);
            out.push(' ');
            out.push_str(kind);
            out.push('\n');
            continue;
        }
        flush_help(&mut out, help.take());
        out.push_str(line);
        out.push('\n');
    }
    flush_help(&mut out, help);
    out
}

/// Writes a held `# HELP` line, if any.
fn flush_help(out: &mut String, help: Option<(&str, &str)>) {
    if let Some((name, text)) = help {
        out.push_str("# HELP ");
        out.push_str(name);
        out.push(' ');
        out.push_str(text);
        out.push('\n');
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_info_and_units_are_rewritten_samples_kept() {
        let openmetrics = "\
# HELP poplar_build Poplar's version.
# TYPE poplar_build info
poplar_build_info{version=\"0.1.0\"} 1
# HELP poplar_bans Source addresses banned.
# TYPE poplar_bans counter
poplar_bans_total 2
# HELP poplar_sessions Sessions open now.
# TYPE poplar_sessions gauge
poplar_sessions{state=\"authorization\"} 1
# HELP poplar_maildrop_open_seconds Time to open.
# TYPE poplar_maildrop_open_seconds histogram
# UNIT poplar_maildrop_open_seconds seconds
poplar_maildrop_open_seconds_sum 0.5
poplar_maildrop_open_seconds_count 1
poplar_maildrop_open_seconds_bucket{le=\"+Inf\"} 1
# EOF
";
        let classic = "\
# HELP poplar_build_info Poplar's version.
# TYPE poplar_build_info gauge
poplar_build_info{version=\"0.1.0\"} 1
# HELP poplar_bans_total Source addresses banned.
# TYPE poplar_bans_total counter
poplar_bans_total 2
# HELP poplar_sessions Sessions open now.
# TYPE poplar_sessions gauge
poplar_sessions{state=\"authorization\"} 1
# HELP poplar_maildrop_open_seconds Time to open.
# TYPE poplar_maildrop_open_seconds histogram
poplar_maildrop_open_seconds_sum 0.5
poplar_maildrop_open_seconds_count 1
poplar_maildrop_open_seconds_bucket{le=\"+Inf\"} 1
";
        assert_eq!(from_openmetrics(openmetrics), classic);
    }

    #[test]
    fn the_whole_registry_converts() {
        let metrics = super::super::Metrics::new();
        metrics.sign_in("USER", super::super::SignInResult::Success);
        let classic = from_openmetrics(&metrics.encode());
        assert!(classic.contains("# TYPE poplar_sign_ins_total counter\n"));
        assert!(classic.contains("# HELP poplar_sign_ins_total Sign-in attempts"));
        assert!(!classic.contains("# EOF") && !classic.contains("# UNIT"));
        // Every TYPE names the samples that follow it.
        let mut family = "";
        for line in classic.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                family = rest.split(' ').next().unwrap();
            } else if !line.starts_with('#') {
                assert!(line.starts_with(family), "{line} after TYPE {family}");
            }
        }
    }
}
