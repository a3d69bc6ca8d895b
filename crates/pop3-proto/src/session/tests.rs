//! Transcript tests of the state machine.

use super::*;
use base64::Engine as _;

pub(super) fn config(tls: bool) -> SessionConfig {
    SessionConfig {
        capabilities: Capabilities::default(),
        tls_active: tls,
        stls_offered: true,
        plaintext_allowed: false,
        mechanisms: Mechanism::ALL.to_vec(),
        oauth_offered: false,
        max_bad_commands: 3,
        greeting: "ready".into(),
        apop_timestamp: None,
    }
}

/// Feeds a line and returns what was written plus the action.
pub(super) fn say(s: &mut Session, line: &str) -> (String, Action) {
    let mut out = Vec::new();
    let action = s.handle_line(line.as_bytes(), &mut out);
    (String::from_utf8(out).unwrap(), action)
}

fn signed_in(messages: &[(u64, &str)]) -> Session {
    signed_in_with(config(true), messages)
}

pub(super) fn signed_in_with(config: SessionConfig, messages: &[(u64, &str)]) -> Session {
    let mut s = Session::new(config);
    say(&mut s, "USER alice");
    let (_, a) = say(&mut s, "PASS secret");
    assert!(matches!(a, Action::Authenticate(_)));
    let mut out = Vec::new();
    assert!(matches!(
        s.auth_result(AuthOutcome::Accepted, &mut out),
        Action::OpenMaildrop
    ));
    let metas = messages
        .iter()
        .map(|&(size, uidl)| MessageMeta {
            size,
            uidl: uidl.into(),
        })
        .collect();
    s.maildrop_opened(Ok(metas), &mut out);
    assert!(
        String::from_utf8(out)
            .unwrap()
            .starts_with("+OK maildrop ready, ")
    );
    s
}

#[test]
fn plaintext_sign_in_refused_before_tls() {
    let mut s = Session::new(config(false));
    let (text, _) = say(&mut s, "USER alice");
    assert!(text.starts_with("-ERR TLS required"), "{text}");
    let (text, a) = say(&mut s, "AUTH PLAIN AGEAYg==");
    assert!(text.starts_with("-ERR TLS required"));
    assert!(matches!(a, Action::None));
    let (text, a) = say(&mut s, "STLS");
    assert_eq!(text, "+OK Begin TLS negotiation\r\n");
    assert!(matches!(a, Action::StartTls));
    s.tls_started(TlsInfo::default());
    let (text, _) = say(&mut s, "STLS");
    assert!(text.starts_with("-ERR"));
    let (text, _) = say(&mut s, "CAPA");
    assert!(!text.contains("STLS") && text.contains("\r\nUSER\r\n"));
}

#[test]
fn pass_carries_the_whole_line_and_failures_look_alike() {
    let mut s = Session::new(config(true));
    say(&mut s, "USER alice");
    let (_, a) = say(&mut s, "PASS two words ");
    let Action::Authenticate(req) = a else {
        panic!()
    };
    assert_eq!(req.user, "alice");
    assert_eq!(req.password.expose(), b"two words ");
    let mut out = Vec::new();
    s.auth_result(AuthOutcome::Rejected, &mut out);
    assert_eq!(out, b"-ERR [AUTH] invalid user name or password\r\n");
    let (text, _) = say(&mut s, "PASS again");
    assert!(text.starts_with("-ERR send USER first"));
}

#[test]
fn utf8_user_names_need_utf8_first() {
    let mut s = Session::new(config(true));
    let (text, _) = say(&mut s, "USER jörg");
    assert!(text.starts_with("-ERR non-ASCII"));
    let (text, _) = say(&mut s, "utf8");
    assert_eq!(text, "+OK UTF8 enabled\r\n");
    let (text, _) = say(&mut s, "USER jörg");
    assert_eq!(text, "+OK send PASS\r\n");
}

#[test]
fn sasl_plain_forms() {
    let mut s = Session::new(config(true));
    let (text, _) = say(&mut s, "AUTH PLAIN");
    assert_eq!(text, "+ \r\n");
    assert!(s.expects_sasl_response());
    let (text, _) = say(&mut s, "*");
    assert!(text.starts_with("-ERR authentication cancelled"));
    say(&mut s, "AUTH PLAIN");
    let (_, a) = say(&mut s, "AGFsaWNlAHB3");
    let Action::Authenticate(req) = a else {
        panic!()
    };
    assert_eq!(
        (req.user.as_str(), req.password.expose()),
        ("alice", &b"pw"[..])
    );
    let mut out = Vec::new();
    s.auth_result(AuthOutcome::Unavailable, &mut out);
    let (text, _) = say(&mut s, "AUTH PLAIN !!!");
    assert!(text.starts_with("-ERR invalid base64"));
    let (text, _) = say(&mut s, "AUTH CRAM-MD5");
    assert!(text.starts_with("-ERR unsupported"));
    // -PLUS is not usable without channel-binding data.
    let (text, _) = say(&mut s, "AUTH SCRAM-SHA-256-PLUS");
    assert!(text.starts_with("-ERR unsupported"));
}

#[test]
fn login_with_and_without_initial_response() {
    let mut s = Session::new(config(true));
    assert_eq!(say(&mut s, "AUTH LOGIN").0, "+ VXNlcm5hbWU6\r\n");
    assert_eq!(say(&mut s, "YWxpY2U=").0, "+ UGFzc3dvcmQ6\r\n");
    let (_, a) = say(&mut s, "cGFzcyB3b3Jk");
    let Action::Authenticate(req) = a else {
        panic!()
    };
    assert_eq!((req.user.as_str(), req.mechanism), ("alice", "LOGIN"));
    assert_eq!(req.password.expose(), b"pass word");
    let mut out = Vec::new();
    s.auth_result(AuthOutcome::Rejected, &mut out);
    assert_eq!(say(&mut s, "AUTH LOGIN YWxpY2U=").0, "+ UGFzc3dvcmQ6\r\n");
    assert!(
        say(&mut s, "not base64!")
            .0
            .starts_with("-ERR invalid base64")
    );
}

#[test]
fn auth_listing_and_capa_follow_the_connection() {
    let mut s = Session::new(config(false));
    assert_eq!(
        say(&mut s, "AUTH").0,
        "+OK Supported mechanisms follow\r\n.\r\n"
    );
    s.tls_started(TlsInfo {
        channel_binding: Some([1; 32]),
        client_certificate: false,
    });
    assert_eq!(
        say(&mut s, "AUTH").0,
        "+OK Supported mechanisms follow\r\nSCRAM-SHA-256-PLUS\r\nSCRAM-SHA-256\r\nPLAIN\r\nLOGIN\r\n.\r\n"
    );
    assert!(
        say(&mut s, "CAPA")
            .0
            .contains("\r\nSASL SCRAM-SHA-256-PLUS SCRAM-SHA-256 PLAIN LOGIN\r\n")
    );
    let mut s = Session::new(config(true));
    assert!(
        say(&mut s, "CAPA")
            .0
            .contains("\r\nSASL SCRAM-SHA-256 PLAIN LOGIN\r\n")
    );
}

#[test]
fn scram_exchange_through_the_session() {
    use sasl::ScramKeys;
    let mut s = Session::new(config(true));
    // client-first "n,,n=user,r=rOprNGfwEbeRWgbNEkqO" as initial response
    let (text, a) = say(
        &mut s,
        "AUTH SCRAM-SHA-256 biwsbj11c2VyLHI9ck9wck5HZndFYmVSV2diTkVrcU8=",
    );
    assert_eq!(text, "");
    let Action::LookupScram { user } = a else {
        panic!("{a:?}")
    };
    assert_eq!(user, "user");
    assert!(!s.expects_sasl_response());
    let keys = ScramKeys::derive("pencil", b"salt", 4096);
    let mut out = Vec::new();
    assert!(matches!(s.scram_keys(&keys, &mut out), Action::None));
    assert!(out.starts_with(b"+ "));
    assert!(s.expects_sasl_response());
    // A wrong proof still goes to the I/O layer for the verdict (and the audit log).
    let (_, a) = say(&mut s, "Yz1iaXdzLHI9eCxwPUFBQUE=");
    assert!(
        matches!(
            &a,
            Action::SaslFailed { reason: "malformed_sasl", user: Some(u), mechanism: "SCRAM-SHA-256" } if u == "user"
        ),
        "nonce mismatch is malformed, and recorded: {a:?}"
    );
    assert_eq!(
        say(&mut s, "NOOP").0,
        "-ERR command not valid before sign-in\r\n"
    );
}

#[test]
fn scram_server_final_then_empty_ack_opens_the_maildrop() {
    let mut s = Session::new(config(true));
    say(&mut s, "AUTH SCRAM-SHA-256");
    let (text, a) = say(&mut s, "biwsbj11c2VyLHI9ck9wck5HZndFYmVSV2diTkVrcU8=");
    assert_eq!(text, "");
    assert!(matches!(a, Action::LookupScram { .. }));
    let mut out = Vec::new();
    s.scram_keys(&sasl::ScramKeys::derive("pencil", b"salt", 4096), &mut out);
    let server_first = String::from_utf8(out).unwrap();
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(server_first.trim_start_matches("+ ").trim_end())
        .unwrap();
    let nonce = String::from_utf8(decoded).unwrap();
    let nonce = nonce.split(',').next().unwrap().to_string();
    let final_msg = format!("c=biws,{nonce},p=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=");
    let line = base64::engine::general_purpose::STANDARD.encode(final_msg);
    let (_, a) = say(&mut s, &line);
    let Action::ConfirmScram { proof_ok, user, .. } = a else {
        panic!("{a:?}")
    };
    assert!(!proof_ok);
    assert_eq!(user, "user");
    // Pretend the I/O layer accepted: the server-final goes out as a challenge.
    let mut out = Vec::new();
    assert!(matches!(
        s.auth_result(AuthOutcome::Accepted, &mut out),
        Action::None
    ));
    let text = String::from_utf8(out).unwrap();
    let server_final = base64::engine::general_purpose::STANDARD
        .decode(text.trim_start_matches("+ ").trim_end())
        .unwrap();
    assert!(server_final.starts_with(b"v="), "{text}");
    assert!(matches!(say(&mut s, "").1, Action::OpenMaildrop));
}

#[test]
fn transaction_commands_and_errors() {
    let mut s = signed_in(&[(10, "a"), (20, "b")]);
    assert_eq!(say(&mut s, "stat").0, "+OK 2 30\r\n");
    assert_eq!(
        say(&mut s, "LIST").0,
        "+OK 2 messages (30 octets)\r\n1 10\r\n2 20\r\n.\r\n"
    );
    assert_eq!(say(&mut s, "LIST 2").0, "+OK 2 20\r\n");
    for bad in ["LIST 0", "LIST 3", "LIST 99999999999999999999999"] {
        assert_eq!(say(&mut s, bad).0, "-ERR no such message\r\n", "{bad}");
    }
    for bad in ["LIST -1", "LIST abc", "RETR x"] {
        assert_eq!(
            say(&mut s, bad).0,
            "-ERR invalid message number\r\n",
            "{bad}"
        );
    }
    assert_eq!(say(&mut s, "DELE 1").0, "+OK message 1 deleted\r\n");
    assert_eq!(say(&mut s, "DELE 1").0, "-ERR message is deleted\r\n");
    assert_eq!(say(&mut s, "RETR 1").0, "-ERR message is deleted\r\n");
    assert_eq!(
        say(&mut s, "UIDL").0,
        "+OK unique-id listing follows\r\n2 b\r\n.\r\n"
    );
    let (text, a) = say(&mut s, "RETR 2");
    assert_eq!(text, "");
    let mut out = Vec::new();
    assert!(s.message_opened(1, None, true, &mut out));
    assert_eq!(out, b"+OK 20 octets\r\n");
    out.clear();
    assert!(!s.message_opened(1, None, false, &mut out));
    assert_eq!(out, b"-ERR [SYS/TEMP] message temporarily unavailable\r\n");
    assert!(matches!(
        a,
        Action::SendMessage {
            index: 1,
            top_lines: None
        }
    ));
    let (_, a) = say(&mut s, "TOP 2 0");
    assert!(matches!(
        a,
        Action::SendMessage {
            index: 1,
            top_lines: Some(0)
        }
    ));
    assert!(say(&mut s, "TOP 2 -1").0.starts_with("-ERR"));
    assert!(
        say(&mut s, "USER bob")
            .0
            .starts_with("-ERR command not valid")
    );
    assert_eq!(
        say(&mut s, "RSET").0,
        "+OK maildrop has 2 messages (30 octets)\r\n"
    );
    say(&mut s, "DELE 2");
    let (text, a) = say(&mut s, "QUIT");
    assert_eq!(text, "");
    let Action::Update { delete, retrieved } = a else {
        panic!()
    };
    assert_eq!(delete, vec![1]);
    assert!(retrieved.is_empty(), "no retention: nothing to mark");
    let mut out = Vec::new();
    assert!(matches!(s.update_result(Ok(()), &mut out), Action::Close));
    assert_eq!(out, b"+OK Poplar signing off (1 messages left)\r\n");
}

#[test]
fn octet_totals_saturate_instead_of_overflowing() {
    let mut s = signed_in(&[(u64::MAX, "a"), (u64::MAX, "b"), (5, "c")]);
    assert_eq!(say(&mut s, "STAT").0, "+OK 3 18446744073709551615\r\n");
    assert!(
        say(&mut s, "LIST")
            .0
            .starts_with("+OK 3 messages (18446744073709551615 octets)\r\n")
    );
    say(&mut s, "DELE 1");
    say(&mut s, "DELE 2");
    assert_eq!(say(&mut s, "STAT").0, "+OK 1 5\r\n");
}

#[test]
fn failed_update_reports_sys_temp() {
    let mut s = signed_in(&[(1, "a")]);
    say(&mut s, "DELE 1");
    say(&mut s, "QUIT");
    let mut out = Vec::new();
    s.update_result(Err(()), &mut out);
    assert!(
        String::from_utf8(out)
            .unwrap()
            .starts_with("-ERR [SYS/TEMP]")
    );
}

#[test]
fn in_use_returns_to_authorization() {
    let mut s = Session::new(config(true));
    say(&mut s, "USER alice");
    say(&mut s, "PASS pw");
    let mut out = Vec::new();
    s.auth_result(AuthOutcome::Accepted, &mut out);
    s.maildrop_opened(Err(OpenFailure::InUse), &mut out);
    assert_eq!(
        out,
        b"-ERR [IN-USE] maildrop is locked by another session\r\n"
    );
    assert!(
        say(&mut s, "STAT")
            .0
            .starts_with("-ERR command not valid before sign-in")
    );
}

#[test]
fn quit_answers_in_authorization_and_bad_commands_close() {
    let mut s = Session::new(config(true));
    let (text, a) = say(&mut s, "QUIT");
    assert_eq!(text, "+OK Poplar signing off\r\n");
    assert!(matches!(a, Action::Close));

    let mut s = Session::new(config(true));
    assert_eq!(say(&mut s, "BOGUS").0, "-ERR unknown command\r\n");
    assert!(matches!(say(&mut s, "NOOP extra").1, Action::None));
    let (text, a) = say(&mut s, "XYZ");
    assert!(text.starts_with("-ERR too many bad commands"));
    assert!(matches!(a, Action::Close));
}

mod properties {
    use super::*;
    use proptest::prelude::*;

    fn line() -> impl Strategy<Value = Vec<u8>> {
        prop_oneof![
            prop::sample::select(vec![
                "USER alice",
                "PASS pw",
                "STAT",
                "LIST",
                "LIST 1",
                "LIST 0",
                "RETR 1",
                "RETR 3",
                "DELE 1",
                "DELE 2",
                "RSET",
                "NOOP",
                "TOP 1 0",
                "TOP 2 5",
                "UIDL",
                "UIDL 2",
                "CAPA",
                "STLS",
                "UTF8",
                "AUTH",
                "AUTH PLAIN",
                "AUTH PLAIN AGEAYg==",
                "*",
                "QUIT",
                "APOP a b",
                "",
                "XYZ",
            ])
            .prop_map(|s| s.as_bytes().to_vec()),
            proptest::collection::vec(any::<u8>(), 0..40),
        ]
    }

    proptest! {
        /// Any sequence of lines and outcomes: no panic, every reply starts with a
        /// status indicator, and the actions keep to the state machine.
        #[test]
        fn session_survives_any_input(
            lines in proptest::collection::vec(line(), 0..40),
            outcomes in proptest::collection::vec(0u8..6, 40),
        ) {
            let mut s = Session::new(config(false));
            let mut pending_outcome = outcomes.into_iter().cycle();
            for l in lines {
                let mut out = Vec::new();
                let mut action = s.handle_line(&l, &mut out);
                loop {
                    action = match action {
                        Action::Authenticate(_) => {
                            let o = match pending_outcome.next().unwrap_or(0) % 3 {
                                0 => AuthOutcome::Accepted,
                                1 => AuthOutcome::Rejected,
                                _ => AuthOutcome::Unavailable,
                            };
                            s.auth_result(o, &mut out)
                        }
                        Action::OpenMaildrop => {
                            let r = match pending_outcome.next().unwrap_or(0) % 3 {
                                0 => Ok(vec![
                                    MessageMeta { size: 5, uidl: "u1".into() },
                                    MessageMeta { size: 7, uidl: "u2".into() },
                                ]),
                                1 => Err(OpenFailure::InUse),
                                _ => Err(OpenFailure::Unavailable),
                            };
                            s.maildrop_opened(r, &mut out);
                            Action::None
                        }
                        Action::SendMessage { index, top_lines } => {
                            prop_assert!(s.in_transaction());
                            prop_assert!(index < 2);
                            s.message_opened(index, top_lines, true, &mut out);
                            Action::None
                        }
                        Action::StartTls => {
                            s.tls_started(TlsInfo::default());
                            Action::None
                        }
                        Action::External { .. } => s.auth_result(AuthOutcome::Rejected, &mut out),
                        Action::VerifyToken { .. } => match pending_outcome.next().unwrap_or(0) % 3 {
                            0 => s.auth_result(AuthOutcome::Accepted, &mut out),
                            1 => s.token_rejected(b"{}", &mut out),
                            _ => s.auth_result(AuthOutcome::Unavailable, &mut out),
                        },
                        Action::Apop { .. } => s.auth_result(AuthOutcome::Rejected, &mut out),
                        Action::LookupScram { .. } => {
                            s.scram_keys(&sasl::ScramKeys::derive("pw", b"salt", 4096), &mut out)
                        }
                        Action::ConfirmScram { proof_ok, .. } => {
                            let o = if proof_ok { AuthOutcome::Accepted } else { AuthOutcome::Rejected };
                            s.auth_result(o, &mut out)
                        }
                        Action::Update { delete, retrieved } => {
                            prop_assert!(delete.iter().all(|&i| i < 2));
                            prop_assert!(retrieved.is_empty());
                            s.update_result(Ok(()), &mut out)
                        }
                        Action::SaslFailed { .. } => {
                            prop_assert!(!s.in_transaction());
                            Action::None
                        }
                        Action::None | Action::Close => break,
                    };
                }
                let text = String::from_utf8_lossy(&out);
                prop_assert!(
                    text.starts_with("+OK") || text.starts_with("-ERR") || text.starts_with("+ "),
                    "reply {:?} to {:?}", text, l
                );
                if s.is_closed() {
                    break;
                }
            }
        }
    }
}

#[test]
fn apop_only_when_enabled_and_the_greeting_carries_the_timestamp() {
    let mut s = Session::new(config(true));
    let mut out = Vec::new();
    s.greeting(&mut out);
    assert_eq!(out, b"+OK ready\r\n");
    assert!(
        say(&mut s, "APOP alice 0123456789abcdef0123456789abcdef")
            .0
            .starts_with("-ERR APOP is not enabled")
    );
    let mut cfg = config(true);
    cfg.apop_timestamp = Some("<1.2@host>".into());
    let mut s = Session::new(cfg);
    let mut out = Vec::new();
    s.greeting(&mut out);
    assert_eq!(out, b"+OK ready <1.2@host>\r\n");
    let (_, a) = say(&mut s, "APOP alice 0123456789ABCDEF0123456789abcdef");
    let Action::Apop {
        user,
        digest,
        timestamp,
    } = a
    else {
        panic!("{a:?}")
    };
    assert_eq!(
        (user.as_str(), digest.as_str(), timestamp.as_str()),
        ("alice", "0123456789abcdef0123456789abcdef", "<1.2@host>")
    );
}

#[test]
fn external_only_with_a_client_certificate() {
    let mut s = Session::new(config(true));
    assert!(!say(&mut s, "CAPA").0.contains("EXTERNAL"));
    assert!(
        say(&mut s, "AUTH EXTERNAL =")
            .0
            .starts_with("-ERR unsupported")
    );
    s.tls_started(TlsInfo {
        channel_binding: None,
        client_certificate: true,
    });
    assert!(
        say(&mut s, "CAPA")
            .0
            .contains("\r\nSASL EXTERNAL SCRAM-SHA-256 PLAIN LOGIN\r\n")
    );
    let (_, a) = say(&mut s, "AUTH EXTERNAL =");
    assert!(matches!(a, Action::External { authzid: None }), "{a:?}");
    let mut out = Vec::new();
    s.auth_result(AuthOutcome::Rejected, &mut out);
    let (_, a) = say(&mut s, "AUTH EXTERNAL YWxpY2U=");
    assert!(
        matches!(a, Action::External { authzid: Some(ref z) } if z == "alice"),
        "{a:?}"
    );
}

#[test]
fn oauth_only_under_tls_with_an_issuer_and_the_rfc7628_error_step() {
    let plain = SessionConfig {
        plaintext_allowed: true,
        oauth_offered: true,
        ..config(false)
    };
    // A trusted network may sign in without TLS, but never with a bearer token.
    let mut s = Session::new(plain);
    assert!(!say(&mut s, "CAPA").0.contains("OAUTHBEARER"));
    let mut s = Session::new(config(true));
    assert!(!say(&mut s, "CAPA").0.contains("OAUTHBEARER"));
    let mut s = Session::new(SessionConfig {
        oauth_offered: true,
        ..config(true)
    });
    assert!(
        say(&mut s, "CAPA")
            .0
            .contains("\r\nSASL OAUTHBEARER XOAUTH2 SCRAM-SHA-256 PLAIN LOGIN\r\n")
    );
    let b64 = |s: &[u8]| base64::engine::general_purpose::STANDARD.encode(s);
    let ir = b64(b"n,a=alice,\x01auth=Bearer abc.def.ghi\x01\x01");
    let (text, action) = say(&mut s, &format!("AUTH OAUTHBEARER {ir}"));
    assert_eq!(text, "");
    let Action::VerifyToken {
        authzid,
        token,
        mechanism,
    } = action
    else {
        panic!("{action:?}")
    };
    assert_eq!(
        (authzid.as_deref(), token.expose(), mechanism),
        (Some("alice"), &b"abc.def.ghi"[..], "OAUTHBEARER")
    );
    let mut out = Vec::new();
    s.token_rejected(br#"{"status":"invalid_token"}"#, &mut out);
    assert_eq!(
        String::from_utf8(out).unwrap(),
        format!("+ {}\r\n", b64(br#"{"status":"invalid_token"}"#))
    );
    assert!(s.expects_sasl_response());
    assert_eq!(
        say(&mut s, "AQ==").0,
        "-ERR [AUTH] bearer token refused\r\n"
    );
    // Back in AUTHORIZATION: XOAUTH2 without an initial response, accepted.
    assert_eq!(say(&mut s, "AUTH XOAUTH2").0, "+ \r\n");
    let (_, action) = say(&mut s, &b64(b"user=bob\x01auth=Bearer t0k\x01\x01"));
    assert!(matches!(action, Action::VerifyToken { authzid: Some(ref u), .. } if u == "bob"));
    let mut out = Vec::new();
    assert!(matches!(
        s.auth_result(AuthOutcome::Accepted, &mut out),
        Action::OpenMaildrop
    ));
}
