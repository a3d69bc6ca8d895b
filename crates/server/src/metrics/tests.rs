use super::*;
use auth::defence::DefenceEvents as _;

/// The value of the sample whose name and labels are exactly `series`.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|line| {
        let (name, value) = line.rsplit_once(' ')?;
        (name == series).then(|| value.parse().unwrap())
    })
}

#[test]
fn a_fresh_registry_is_openmetrics_with_fixed_series_at_zero() {
    let text = Metrics::new().encode();
    assert!(text.ends_with("# EOF\n"), "{text}");
    for (name, kind) in [
        ("poplar_connections", "counter"),
        ("poplar_connections_refused", "counter"),
        ("poplar_sessions", "gauge"),
        ("poplar_tls_handshakes", "counter"),
        ("poplar_tls_handshake_failures", "counter"),
        ("poplar_sign_in_failures", "counter"),
        ("poplar_bans", "counter"),
        ("poplar_account_locks", "counter"),
        ("poplar_messages_retrieved", "counter"),
        ("poplar_messages_deleted", "counter"),
        ("poplar_sent_bytes", "counter"),
        ("poplar_maildrop_open_seconds", "histogram"),
        ("poplar_build", "info"),
    ] {
        assert!(
            text.contains(&format!("# TYPE {name} {kind}\n")),
            "{name} {kind} missing:\n{text}"
        );
    }
    assert!(text.contains("# UNIT poplar_maildrop_open_seconds seconds\n"));
    // Families whose labels are open-ended (mechanisms, commands) appear with their
    // first series.
    assert!(!text.contains("poplar_sign_ins") && !text.contains("poplar_command_duration"));
    for series in [
        r#"poplar_connections_total{listener="pop3"}"#,
        r#"poplar_connections_total{listener="pop3s"}"#,
        r#"poplar_connections_refused_total{reason="banned"}"#,
        r#"poplar_connections_refused_total{reason="denied"}"#,
        r#"poplar_connections_refused_total{reason="busy"}"#,
        r#"poplar_sessions{state="authorization"}"#,
        r#"poplar_sessions{state="transaction"}"#,
        r#"poplar_tls_handshakes_total{version="TLSv1.3"}"#,
        r#"poplar_tls_handshake_failures_total{reason="timeout"}"#,
        r#"poplar_sign_in_failures_total{reason="throttled"}"#,
        "poplar_bans_total",
        "poplar_sent_bytes_total",
        "poplar_maildrop_open_seconds_count",
    ] {
        assert_eq!(sample(&text, series), Some(0.0), "{series} in\n{text}");
    }
    // Every private reason has its series, by its audit-log name.
    for reason in Reason::ALL {
        let series = format!(
            "poplar_sign_in_failures_total{{reason=\"{}\"}}",
            reason.as_str()
        );
        assert_eq!(sample(&text, &series), Some(0.0), "{series}");
    }
    let version = format!(
        "poplar_build_info{{version=\"{}\"}}",
        env!("CARGO_PKG_VERSION")
    );
    assert_eq!(sample(&text, &version), Some(1.0), "{text}");
}

#[test]
fn sign_ins_count_by_mechanism_result_and_reason() {
    let m = Metrics::new();
    m.sign_in("USER", SignInResult::Success);
    m.sign_in_failed("USER", Reason::BadPassword);
    m.sign_in_failed("PLAIN", Reason::BadPassword);
    m.sign_in_failed("PLAIN", Reason::Throttled);
    m.sign_in("SCRAM-SHA-256", SignInResult::Unavailable);
    m.sign_in("APOP", SignInResult::LoginDelay);
    let text = m.encode();
    let at = |series: &str| sample(&text, series);
    assert_eq!(
        at(r#"poplar_sign_ins_total{mechanism="USER",result="success"}"#),
        Some(1.0)
    );
    assert_eq!(
        at(r#"poplar_sign_ins_total{mechanism="PLAIN",result="failure"}"#),
        Some(2.0)
    );
    assert_eq!(
        at(r#"poplar_sign_ins_total{mechanism="SCRAM-SHA-256",result="unavailable"}"#),
        Some(1.0)
    );
    assert_eq!(
        at(r#"poplar_sign_ins_total{mechanism="APOP",result="login_delay"}"#),
        Some(1.0)
    );
    assert_eq!(
        at(r#"poplar_sign_in_failures_total{reason="bad_password"}"#),
        Some(2.0)
    );
    assert_eq!(
        at(r#"poplar_sign_in_failures_total{reason="throttled"}"#),
        Some(1.0)
    );
}

#[test]
fn session_gauge_follows_the_state_and_the_end() {
    let m = Metrics::new();
    let states = |m: &Metrics| {
        let text = m.encode();
        (
            sample(&text, r#"poplar_sessions{state="authorization"}"#).unwrap(),
            sample(&text, r#"poplar_sessions{state="transaction"}"#).unwrap(),
        )
    };
    let mut a = m.session();
    let b = m.session();
    assert_eq!(states(&m), (2.0, 0.0));
    a.enter_transaction();
    a.enter_transaction();
    assert_eq!(states(&m), (1.0, 1.0));
    drop(a);
    assert_eq!(states(&m), (1.0, 0.0));
    drop(b);
    assert_eq!(states(&m), (0.0, 0.0));
}

#[test]
fn transfer_tls_refusals_and_defence_events() {
    let m = Metrics::new();
    m.connection(ListenerKind::Pop3s);
    m.refused(Refused::Banned);
    m.tls_handshake(Some(rustls::ProtocolVersion::TLSv1_2));
    m.tls_handshake_failed(HandshakeFailure::Error);
    m.retrieved();
    m.deleted(3);
    m.bytes_sent(100);
    m.bytes_sent(23);
    m.banned("192.0.2.1", 10, 0);
    m.locked("alice", 50, 0);
    let text = m.encode();
    for (series, value) in [
        (r#"poplar_connections_total{listener="pop3s"}"#, 1.0),
        (r#"poplar_connections_total{listener="pop3"}"#, 0.0),
        (r#"poplar_connections_refused_total{reason="banned"}"#, 1.0),
        (r#"poplar_tls_handshakes_total{version="TLSv1.2"}"#, 1.0),
        (
            r#"poplar_tls_handshake_failures_total{reason="error"}"#,
            1.0,
        ),
        ("poplar_messages_retrieved_total", 1.0),
        ("poplar_messages_deleted_total", 3.0),
        ("poplar_sent_bytes_total", 123.0),
        ("poplar_bans_total", 1.0),
        ("poplar_account_locks_total", 1.0),
    ] {
        assert_eq!(sample(&text, series), Some(value), "{series} in\n{text}");
    }
    // Nothing the defence reports about whom reaches the exposition.
    assert!(!text.contains("alice") && !text.contains("192.0.2.1"));
}

#[test]
fn latency_histograms_bucket_by_command_keyword() {
    let m = Metrics::new();
    m.command(CommandKind::Retr, Duration::from_micros(700));
    m.command(CommandKind::Retr, Duration::from_millis(30));
    m.command(CommandKind::Other, Duration::from_secs(20));
    m.maildrop_opened(Duration::from_millis(3));
    let text = m.encode();
    assert!(text.contains("# TYPE poplar_command_duration_seconds histogram\n"));
    assert!(text.contains("# UNIT poplar_command_duration_seconds seconds\n"));
    let at = |series: &str| sample(&text, series);
    let bucket = |command: &str, le: &str| {
        at(&format!(
            "poplar_command_duration_seconds_bucket{{le=\"{le}\",command=\"{command}\"}}"
        ))
    };
    assert_eq!(bucket("RETR", "0.0005"), Some(0.0), "{text}");
    assert_eq!(bucket("RETR", "0.001"), Some(1.0));
    assert_eq!(bucket("RETR", "0.05"), Some(2.0));
    assert_eq!(bucket("RETR", "+Inf"), Some(2.0));
    assert_eq!(bucket("other", "10.0"), Some(0.0));
    assert_eq!(bucket("other", "+Inf"), Some(1.0));
    assert_eq!(
        at(r#"poplar_command_duration_seconds_count{command="RETR"}"#),
        Some(2.0)
    );
    // Only commands seen have series.
    assert!(!text.contains(r#"command="STAT""#));
    assert_eq!(
        at(r#"poplar_maildrop_open_seconds_bucket{le="0.0025"}"#),
        Some(0.0)
    );
    assert_eq!(
        at(r#"poplar_maildrop_open_seconds_bucket{le="0.005"}"#),
        Some(1.0)
    );
}

#[test]
fn names_and_labels_follow_the_conventions() {
    let m = Metrics::new();
    m.sign_in_failed("PLAIN", Reason::UnknownUser);
    for kind in CommandKind::ALL {
        m.command(kind, Duration::ZERO);
    }
    let text = m.encode();
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let name = line.split(['{', ' ']).next().unwrap();
        assert!(name.starts_with("poplar_"), "{line}");
        assert!(
            name.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'),
            "{line}"
        );
        // Only these label names exist: none can carry a user or an address.
        if let Some(labels) = line.split_once('{').map(|(_, l)| l) {
            let labels = labels.split_once('}').unwrap().0;
            for pair in labels.split(',') {
                let key = pair.split_once('=').unwrap().0;
                assert!(
                    [
                        "listener",
                        "reason",
                        "state",
                        "version",
                        "mechanism",
                        "result",
                        "command",
                        "le"
                    ]
                    .contains(&key),
                    "{line}"
                );
            }
        }
    }
}
