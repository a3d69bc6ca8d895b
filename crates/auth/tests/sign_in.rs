//! The one entry point, `Authenticator::sign_in`: what it tells the server, what it
//! remembers in the account's history, and when a refusal comes back.

use std::sync::{Arc, Mutex};
use std::time::Duration;

mod common;
use common::{IP, SMALL, without_defence};

use auth::{
    Attempt, Authenticator, EventFuture, Proof, Reason, SignInEvent, SignInEvents, UsernamePolicy,
    Verdict,
};
use directory::{Directory, SqliteDirectory};

/// Remembers what it was told.
#[derive(Default)]
struct Recorder {
    decided: Mutex<Vec<(String, String, Verdict)>>,
    new_networks: Mutex<Vec<(String, String)>>,
}

impl SignInEvents for Recorder {
    fn decided(&self, e: &SignInEvent<'_>) {
        self.decided.lock().unwrap().push((
            e.mechanism.to_owned(),
            e.given.to_owned(),
            e.verdict.clone(),
        ));
    }
    fn new_network<'a>(&'a self, user: &'a str, how: &'a str) -> EventFuture<'a> {
        self.new_networks
            .lock()
            .unwrap()
            .push((user.to_owned(), how.to_owned()));
        Box::pin(std::future::ready(()))
    }
}

const DELAY: Duration = Duration::from_millis(300);

async fn fixture() -> (
    Authenticator<SqliteDirectory>,
    Arc<SqliteDirectory>,
    tempfile::TempDir,
) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = Arc::new(
        SqliteDirectory::open(&tmp.path().join("poplar.db"))
            .await
            .unwrap(),
    );
    let auth = without_defence(
        Authenticator::new(dir.clone(), UsernamePolicy::default(), SMALL, 2).unwrap(),
    )
    .with_failure_delay(DELAY);
    auth.add_user("alice", b"right password", "/m".into())
        .await
        .unwrap();
    (auth, dir, tmp)
}

fn password<'a>(user: &'a str, password: &'a str) -> Proof<'a> {
    Proof::Password {
        mechanism: "PLAIN",
        user,
        password: password.as_bytes(),
        authzid: None,
    }
}

async fn history(dir: &SqliteDirectory, want: usize) -> Vec<(String, String)> {
    for _ in 0..100 {
        let got = dir.sign_in_history("alice", 10).await.unwrap();
        if got.len() >= want {
            return got.into_iter().map(|e| (e.mechanism, e.result)).collect();
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("the history never got {want} entries");
}

#[tokio::test]
async fn a_refusal_is_told_remembered_and_answered_at_the_deadline() {
    let (auth, dir, _tmp) = fixture().await;
    let events = Recorder::default();
    let started = tokio::time::Instant::now();
    let attempt = Attempt {
        source: IP,
        started,
        proof: password("alice", "wrong password"),
    };
    let verdict = auth.sign_in(attempt, &events).await;
    assert_eq!(verdict, Verdict::Refused(Reason::BadPassword));
    // From the attempt's start, not from the end of the check.
    assert!(started.elapsed() >= DELAY, "{:?}", started.elapsed());
    assert_eq!(
        *events.decided.lock().unwrap(),
        vec![("PLAIN".into(), "alice".into(), verdict)]
    );
    assert_eq!(
        history(&dir, 1).await,
        vec![("PLAIN".into(), "failure".into())]
    );
}

#[tokio::test]
async fn a_success_is_told_and_remembered_without_waiting() {
    let (auth, dir, _tmp) = fixture().await;
    let events = Recorder::default();
    let started = tokio::time::Instant::now();
    let attempt = Attempt {
        source: IP,
        started,
        proof: password("alice", "right password"),
    };
    let Verdict::SignedIn(identity) = auth.sign_in(attempt, &events).await else {
        panic!("not signed in");
    };
    assert_eq!(identity.user, "alice");
    assert!(started.elapsed() < DELAY, "{:?}", started.elapsed());
    assert_eq!(events.decided.lock().unwrap().len(), 1);
    assert_eq!(
        history(&dir, 1).await,
        vec![("PLAIN".into(), "success".into())]
    );
}

#[tokio::test]
async fn an_unknown_name_is_told_but_has_no_history() {
    let (auth, dir, _tmp) = fixture().await;
    let events = Recorder::default();
    let attempt = Attempt {
        source: IP,
        started: tokio::time::Instant::now(),
        proof: password("nobody", "wrong password"),
    };
    assert_eq!(
        auth.sign_in(attempt, &events).await,
        Verdict::Refused(Reason::UnknownUser)
    );
    assert_eq!(events.decided.lock().unwrap().len(), 1);
    assert!(dir.sign_in_history("nobody", 10).await.unwrap().is_empty());
}

#[tokio::test]
async fn the_page_password_step_asks_for_a_code_only_when_there_is_one() {
    let (auth, dir, _tmp) = fixture().await;
    let events = Recorder::default();
    let attempt = Attempt {
        source: IP,
        started: tokio::time::Instant::now(),
        proof: Proof::WebPassword {
            user: "alice",
            password: b"right password",
        },
    };
    assert_eq!(
        auth.sign_in(attempt, &events).await,
        Verdict::WebSignedIn {
            user: "alice".into(),
            factor: None
        }
    );
    assert_eq!(events.decided.lock().unwrap()[0].0, "password");
    assert_eq!(
        history(&dir, 1).await,
        vec![("WEB".into(), "success".into())]
    );
}

#[test]
fn a_proof_never_shows_its_secret() {
    let shown = format!(
        "{:?}",
        Attempt {
            source: IP,
            started: tokio::time::Instant::now(),
            proof: password("alice", "hunter2 secret"),
        }
    );
    assert!(
        shown.contains("alice") && shown.contains("PLAIN"),
        "{shown}"
    );
    assert!(!shown.contains("hunter2"), "{shown}");
    let code = format!(
        "{:?}",
        Proof::WebCode {
            user: "alice",
            code: "123456"
        }
    );
    assert!(!code.contains("123456"), "{code}");
}
