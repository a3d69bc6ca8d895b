//! Transcript tests of the retention policy at UPDATE (RFC 2449 section 6.7, EXPIRE):
//! which messages QUIT hands to the store to delete or to mark retrieved.

use super::tests::{config, say, signed_in_with};
use super::*;

/// A session with `expire_days` over five messages.
fn retention_session(expire_days: Option<u32>) -> Session {
    let mut cfg = config(true);
    cfg.capabilities.expire_days = expire_days;
    signed_in_with(cfg, &[(1, "a"), (2, "b"), (3, "c"), (4, "d"), (5, "e")])
}

/// Asks for a message and reports it opened, as the I/O layer does.
fn fetch(s: &mut Session, line: &str) {
    let (_, a) = say(s, line);
    let Action::SendMessage { index, top_lines } = a else {
        panic!("{a:?}")
    };
    let mut out = Vec::new();
    assert!(s.message_opened(index, top_lines, true, &mut out));
}

/// Retrieves 1, 2 and 3 in full, 4 by TOP only, and deletes 2; QUIT's plan.
fn retention_quit(expire_days: Option<u32>) -> (Vec<usize>, Vec<usize>, String) {
    let mut s = retention_session(expire_days);
    fetch(&mut s, "RETR 1");
    fetch(&mut s, "RETR 2");
    fetch(&mut s, "RETR 3");
    fetch(&mut s, "RETR 3");
    fetch(&mut s, "TOP 4 10");
    // A RETR whose message could not be opened was not retrieved.
    let (_, a) = say(&mut s, "RETR 5");
    assert!(matches!(a, Action::SendMessage { index: 4, .. }));
    s.message_opened(4, None, false, &mut Vec::new());
    say(&mut s, "DELE 2");
    // RSET unmarks deletions, not retrievals.
    say(&mut s, "RSET");
    say(&mut s, "DELE 2");
    let (_, a) = say(&mut s, "QUIT");
    let Action::Update { delete, retrieved } = a else {
        panic!("{a:?}")
    };
    let mut out = Vec::new();
    s.update_result(Ok(()), &mut out);
    (delete, retrieved, String::from_utf8(out).unwrap())
}

#[test]
fn expire_never_marks_nothing() {
    let (delete, retrieved, text) = retention_quit(None);
    assert_eq!((delete, retrieved), (vec![1], vec![]));
    assert_eq!(text, "+OK Poplar signing off (4 messages left)\r\n");
    let mut s = retention_session(None);
    assert!(say(&mut s, "CAPA").0.contains("\r\nEXPIRE NEVER\r\n"));
}

#[test]
fn expire_days_mark_what_retr_sent_and_not_deleted() {
    let (delete, retrieved, text) = retention_quit(Some(3));
    // 2 is deleted anyway; 4 had TOP only; 5 could not be opened.
    assert_eq!((delete, retrieved), (vec![1], vec![0, 2]));
    assert_eq!(text, "+OK Poplar signing off (4 messages left)\r\n");
    let mut s = retention_session(Some(3));
    let capa = say(&mut s, "CAPA").0;
    assert!(capa.contains("\r\nEXPIRE 3\r\n"), "{capa}");
    assert!(!capa.contains("NEVER"));
}

#[test]
fn expire_zero_deletes_what_retr_sent() {
    let (delete, retrieved, text) = retention_quit(Some(0));
    assert_eq!((delete, retrieved), (vec![0, 1, 2], vec![]));
    assert_eq!(text, "+OK Poplar signing off (2 messages left)\r\n");
    let mut s = retention_session(Some(0));
    assert!(say(&mut s, "CAPA").0.contains("\r\nEXPIRE 0\r\n"));
}

/// A read-only session (a read-only app password) changes nothing at UPDATE, whatever
/// the retention: no deletion, not even with `EXPIRE 0`, and no retrieval marks.
#[test]
fn a_read_only_session_marks_and_deletes_nothing() {
    for expire_days in [None, Some(0), Some(3)] {
        let mut cfg = config(true);
        cfg.capabilities.expire_days = expire_days;
        let mut s = Session::new(cfg);
        say(&mut s, "USER alice");
        let (_, a) = say(&mut s, "PASS secret");
        assert!(matches!(a, Action::Authenticate(_)));
        s.set_read_only();
        assert!(s.is_read_only());
        let mut out = Vec::new();
        s.auth_result(AuthOutcome::Accepted, &mut out);
        let metas = vec![MessageMeta {
            size: 3,
            uidl: "a".into(),
        }];
        s.maildrop_opened(Ok(metas), &mut out);
        fetch(&mut s, "RETR 1");
        assert!(say(&mut s, "DELE 1").0.starts_with("-ERR"));
        let (_, a) = say(&mut s, "QUIT");
        let Action::Update { delete, retrieved } = a else {
            panic!("{a:?}")
        };
        assert_eq!((delete, retrieved), (vec![], vec![]), "{expire_days:?}");
    }
}
