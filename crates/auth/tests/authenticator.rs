//! The authenticator against a real SQLite directory in a temporary folder.

use std::path::PathBuf;
use std::sync::Arc;

mod common;
use common::{IP, SMALL, without_defence};

use auth::{AdminError, Argon2Params, AuthFailure, Authenticator, Reason, UsernamePolicy};
use directory::{Directory, SqliteDirectory};

struct Fixture {
    auth: Authenticator<SqliteDirectory>,
    // Keeps the folder alive for the test's duration.
    _tmp: tempfile::TempDir,
}

async fn fixture_with(policy: UsernamePolicy, params: Argon2Params, slots: usize) -> Fixture {
    let tmp = tempfile::tempdir().unwrap();
    let dir = SqliteDirectory::open(&tmp.path().join("poplar.db"))
        .await
        .unwrap();
    let auth = without_defence(Authenticator::new(Arc::new(dir), policy, params, slots).unwrap());
    Fixture { auth, _tmp: tmp }
}

async fn fixture() -> Fixture {
    fixture_with(UsernamePolicy::default(), SMALL, 4).await
}

fn rejected(reason: Reason) -> Result<auth::Identity, AuthFailure> {
    Err(AuthFailure::Rejected(reason))
}

#[tokio::test]
async fn success_returns_the_identity() {
    let f = fixture().await;
    let name = f
        .auth
        .add_user("alice", b"correct horse", "/mail/alice".into())
        .await
        .unwrap();
    assert_eq!(name, "alice");
    let id = f
        .auth
        .verify_password("alice", b"correct horse", IP)
        .await
        .unwrap();
    assert_eq!(id.user, "alice");
    assert_eq!(id.maildir, PathBuf::from("/mail/alice"));
}

#[tokio::test]
async fn wrong_password_is_rejected() {
    let f = fixture().await;
    f.auth
        .add_user("alice", b"correct horse", "/mail/alice".into())
        .await
        .unwrap();
    for wrong in [&b"correct horsE"[..], b"correct", b"correct horse ", b"x"] {
        assert_eq!(
            f.auth.verify_password("alice", wrong, IP).await,
            rejected(Reason::BadPassword)
        );
    }
}

#[tokio::test]
async fn unknown_user_is_rejected() {
    let f = fixture().await;
    assert_eq!(
        f.auth.verify_password("nobody", b"whatever", IP).await,
        rejected(Reason::UnknownUser)
    );
}

#[tokio::test]
async fn bad_input_is_rejected() {
    let f = fixture().await;
    f.auth
        .add_user("alice", b"pw", "/mail/alice".into())
        .await
        .unwrap();
    for (user, pass) in [
        ("", &b"pw"[..]),
        ("../etc", b"pw"),
        ("ali ce", b"pw"),
        ("alice", b""),
        ("alice", b"\xff\xfe"),
        ("alice", b"p\x07w"),
    ] {
        assert_eq!(
            f.auth.verify_password(user, pass, IP).await,
            rejected(Reason::BadInput),
            "{user:?}"
        );
    }
}

#[tokio::test]
async fn disabled_user_is_rejected_only_after_the_password_check() {
    let f = fixture().await;
    f.auth
        .add_user("alice", b"pw", "/mail/alice".into())
        .await
        .unwrap();
    assert!(
        f.auth
            .directory()
            .set_enabled("alice", false)
            .await
            .unwrap()
    );
    assert_eq!(
        f.auth.verify_password("alice", b"pw", IP).await,
        rejected(Reason::Disabled)
    );
    assert_eq!(
        f.auth.verify_password("alice", b"wrong", IP).await,
        rejected(Reason::BadPassword)
    );
    assert!(f.auth.directory().set_enabled("alice", true).await.unwrap());
    assert!(f.auth.verify_password("alice", b"pw", IP).await.is_ok());
}

#[tokio::test]
async fn names_are_canonical_everywhere() {
    let policy = UsernamePolicy {
        lowercase: true,
        default_domain: Some("Example.org".into()),
    };
    let f = fixture_with(policy, SMALL, 4).await;
    let name = f
        .auth
        .add_user("Alice", b"pw", "/mail/alice".into())
        .await
        .unwrap();
    assert_eq!(name, "alice@example.org");
    for raw in ["alice", "ALICE", "Alice@Example.ORG", "alice@example.org"] {
        let id = f.auth.verify_password(raw, b"pw", IP).await.unwrap();
        assert_eq!(id.user, "alice@example.org", "{raw}");
    }
    assert_eq!(
        f.auth.add_user("ALICE", b"other", "/x".into()).await,
        Err(AdminError::Exists)
    );
    assert_eq!(
        f.auth.verify_password("alice@other.org", b"pw", IP).await,
        rejected(Reason::UnknownUser)
    );
    // set_password accepts raw and canonical names alike.
    assert!(f.auth.set_password("Alice", b"new").await.unwrap());
    assert!(f.auth.verify_password("alice", b"new", IP).await.is_ok());
}

#[tokio::test]
async fn utf8_names_and_passwords() {
    let policy = UsernamePolicy {
        lowercase: true,
        default_domain: None,
    };
    let f = fixture_with(policy, SMALL, 4).await;
    let name = f
        .auth
        .add_user(
            "Jörg",
            "pässwörd with spaces".as_bytes(),
            "/mail/jörg".into(),
        )
        .await
        .unwrap();
    assert_eq!(name, "jörg");
    // Decomposed ö in the name and in the password prepare to the same strings.
    let id = f
        .auth
        .verify_password(
            "jo\u{0308}rg",
            "pa\u{0308}sswo\u{0308}rd with spaces".as_bytes(),
            IP,
        )
        .await
        .unwrap();
    assert_eq!(id.user, "jörg");
    assert_eq!(
        f.auth
            .verify_password("jörg", "passwörd with spaces".as_bytes(), IP)
            .await,
        rejected(Reason::BadPassword)
    );
}

#[tokio::test]
async fn passwords_are_saslprepped_the_same_way_on_every_path() {
    let f = fixture().await;
    // Set with a non-breaking space and a soft hyphen...
    f.auth
        .add_user(
            "bob",
            "top\u{00A0}se\u{00AD}cret".as_bytes(),
            "/mail/bob".into(),
        )
        .await
        .unwrap();
    // ...verify with their SASLprep forms, and the other way round.
    assert!(
        f.auth
            .verify_password("bob", b"top secret", IP)
            .await
            .is_ok()
    );
    assert!(
        f.auth
            .set_password("bob", "I\u{00AD}X".as_bytes())
            .await
            .unwrap()
    );
    assert!(f.auth.verify_password("bob", b"IX", IP).await.is_ok());
    assert!(
        f.auth
            .verify_password("bob", "\u{2168}".as_bytes(), IP)
            .await
            .is_ok()
    );
}

#[tokio::test]
async fn admin_errors() {
    let f = fixture().await;
    assert_eq!(f.auth.set_password("nobody", b"pw").await, Ok(false));
    let err = f
        .auth
        .add_user("a/b", b"secret-pw", "/x".into())
        .await
        .unwrap_err();
    assert!(matches!(&err, AdminError::BadInput(why) if why.starts_with("user name")));
    let err = f
        .auth
        .add_user("carol", b"secret\x07pw", "/x".into())
        .await
        .unwrap_err();
    assert!(matches!(&err, AdminError::BadInput(why) if why.starts_with("password")));
    assert!(!err.to_string().contains("secret"));
    assert!(
        f.auth
            .directory()
            .find_user("carol")
            .await
            .unwrap()
            .is_none()
    );
}

#[tokio::test]
async fn stored_hash_is_argon2id_and_upgraded_when_parameters_change() {
    let f = fixture().await;
    f.auth
        .add_user("dave", b"pw", "/mail/dave".into())
        .await
        .unwrap();
    let old = f.auth.directory().find_user("dave").await.unwrap().unwrap();
    assert!(
        old.password_hash
            .starts_with("$argon2id$v=19$m=1024,t=1,p=1$")
    );
    assert!(!format!("{old:?}").contains("argon2"));

    let stronger = Argon2Params {
        memory_kib: 2048,
        iterations: 2,
        parallelism: 1,
    };
    let upgraded = Authenticator::new(
        Arc::clone(f.auth.directory()),
        UsernamePolicy::default(),
        stronger,
        2,
    )
    .unwrap();
    upgraded.verify_password("dave", b"pw", IP).await.unwrap();
    let new = f.auth.directory().find_user("dave").await.unwrap().unwrap();
    assert!(
        new.password_hash
            .starts_with("$argon2id$v=19$m=2048,t=2,p=1$")
    );
    // Both authenticators still accept the password.
    assert!(upgraded.verify_password("dave", b"pw", IP).await.is_ok());
    assert!(f.auth.verify_password("dave", b"pw", IP).await.is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_concurrent_verifications_finish() {
    let f = fixture_with(UsernamePolicy::default(), SMALL, 2).await;
    f.auth
        .add_user("erin", b"pw", "/mail/erin".into())
        .await
        .unwrap();
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..40 {
        let auth = f.auth.clone();
        tasks.spawn(async move {
            let (user, pw): (&str, &[u8]) = match i % 4 {
                0 => ("erin", b"pw"),
                1 => ("erin", b"wrong"),
                2 => ("nobody", b"pw"),
                _ => ("", b"pw"),
            };
            (i % 4, auth.verify_password(user, pw, IP).await)
        });
    }
    let mut done = 0;
    while let Some(joined) = tasks.join_next().await {
        let (kind, outcome) = joined.unwrap();
        let expected = match kind {
            0 => Ok("erin".to_owned()),
            1 => Err(AuthFailure::Rejected(Reason::BadPassword)),
            2 => Err(AuthFailure::Rejected(Reason::UnknownUser)),
            _ => Err(AuthFailure::Rejected(Reason::BadInput)),
        };
        assert_eq!(outcome.map(|id| id.user), expected);
        done += 1;
    }
    assert_eq!(done, 40);
}

#[tokio::test]
async fn cancelled_verifications_release_their_slot() {
    let f = fixture_with(UsernamePolicy::default(), SMALL, 1).await;
    f.auth
        .add_user("frank", b"pw", "/mail/frank".into())
        .await
        .unwrap();
    for _ in 0..5 {
        // Dropped at its first poll that is pending: the blocking task keeps the slot
        // until it ends, then gives it back.
        let attempt = f.auth.verify_password("frank", b"pw", IP);
        let _ = tokio::time::timeout(std::time::Duration::from_micros(1), attempt).await;
    }
    assert!(f.auth.verify_password("frank", b"pw", IP).await.is_ok());
}

#[tokio::test]
async fn default_parameters_work() {
    let f = fixture_with(UsernamePolicy::default(), Argon2Params::default(), 1).await;
    f.auth
        .add_user("grace", b"pw", "/mail/grace".into())
        .await
        .unwrap();
    let stored = f
        .auth
        .directory()
        .find_user("grace")
        .await
        .unwrap()
        .unwrap();
    assert!(
        stored
            .password_hash
            .starts_with("$argon2id$v=19$m=19456,t=2,p=1$")
    );
    assert!(f.auth.verify_password("grace", b"pw", IP).await.is_ok());
    assert_eq!(
        f.auth.verify_password("grace", b"nope", IP).await,
        rejected(Reason::BadPassword)
    );
    assert_eq!(
        f.auth.verify_password("nobody", b"pw", IP).await,
        rejected(Reason::UnknownUser)
    );
}

#[test]
fn reasons_have_stable_names() {
    assert_eq!(Reason::BadInput.as_str(), "bad_input");
    assert_eq!(Reason::UnknownUser.as_str(), "unknown_user");
    assert_eq!(Reason::BadPassword.as_str(), "bad_password");
    assert_eq!(Reason::Disabled.as_str(), "disabled");
    assert_eq!(
        AuthFailure::Rejected(Reason::BadPassword).to_string(),
        AuthFailure::Rejected(Reason::UnknownUser).to_string()
    );
}
