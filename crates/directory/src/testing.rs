//! A conformance suite every [`Directory`] backend must pass.
//!
//! Backends call [`conformance`] from their own tests on a fresh, empty directory, so
//! SQLite today and PostgreSQL later are held to the same behaviour. Enabled in this
//! crate's tests and, for other crates, by the `test-suite` feature.

use crate::{Directory, DirectoryError, UserRecord};

/// A user with a recognisable hash and Maildir derived from `name`, enabled.
pub fn sample_user(name: &str) -> UserRecord {
    UserRecord {
        name: name.to_owned(),
        password_hash: format!("$argon2id$v=19$m=1024,t=1,p=1$c2FsdHNhbHQ$hash-of-{name}"),
        enabled: true,
        maildir: format!("/var/mail/poplar/{name}/Maildir"),
        scram_sha256: None,
        apop_secret: None,
    }
}

/// Runs every check of the suite against `dir`, which must start empty.
///
/// Panics (as tests do) on the first behaviour that differs from the contract.
pub async fn conformance<D: Directory>(dir: &D) {
    starts_empty(dir).await;
    add_and_find(dir).await;
    duplicate_is_refused(dir).await;
    names_compare_exactly(dir).await;
    set_credentials(dir).await;
    set_apop_secret(dir).await;
    set_enabled(dir).await;
    delete(dir).await;
    list_is_ordered_by_name(dir).await;
}

async fn starts_empty<D: Directory>(dir: &D) {
    assert!(
        dir.list_users().await.unwrap().is_empty(),
        "suite needs an empty directory"
    );
    assert!(dir.find_user("nobody").await.unwrap().is_none());
}

async fn add_and_find<D: Directory>(dir: &D) {
    let alice = sample_user("alice");
    dir.add_user(&alice).await.unwrap();
    assert_eq!(dir.find_user("alice").await.unwrap(), Some(alice));

    // Non-ASCII names and a disabled account round-trip unchanged.
    let mut jorg = sample_user("jörg@example.org");
    jorg.enabled = false;
    dir.add_user(&jorg).await.unwrap();
    assert_eq!(dir.find_user("jörg@example.org").await.unwrap(), Some(jorg));
}

async fn duplicate_is_refused<D: Directory>(dir: &D) {
    let mut again = sample_user("alice");
    again.password_hash = "other".to_owned();
    again.maildir = "/elsewhere".to_owned();
    let err = dir.add_user(&again).await.unwrap_err();
    assert!(matches!(err, DirectoryError::Exists), "{err:?}");
    // The original record is untouched.
    assert_eq!(
        dir.find_user("alice").await.unwrap(),
        Some(sample_user("alice"))
    );
}

/// Names arrive canonical; a backend must not fold case or trim on its own (for
/// PostgreSQL: plain `text`, not `citext`).
async fn names_compare_exactly<D: Directory>(dir: &D) {
    assert!(dir.find_user("Alice").await.unwrap().is_none());
    assert!(dir.find_user("alice ").await.unwrap().is_none());
    assert!(dir.find_user("jorg@example.org").await.unwrap().is_none());
    dir.add_user(&sample_user("Alice")).await.unwrap();
    assert_eq!(
        dir.find_user("Alice").await.unwrap(),
        Some(sample_user("Alice"))
    );
    assert_eq!(
        dir.find_user("alice").await.unwrap(),
        Some(sample_user("alice"))
    );
    assert!(dir.delete_user("Alice").await.unwrap());
}

async fn set_credentials<D: Directory>(dir: &D) {
    let new_hash = "$argon2id$v=19$m=19456,t=2,p=1$bmV3c2FsdA$bmV3aGFzaA";
    let scram = "SCRAM-SHA-256$4096:c2FsdA==$AAAA:BBBB";
    assert!(
        dir.set_credentials("alice", new_hash, Some(scram))
            .await
            .unwrap()
    );
    let alice = dir.find_user("alice").await.unwrap().unwrap();
    assert_eq!(alice.password_hash, new_hash);
    assert_eq!(alice.scram_sha256.as_deref(), Some(scram));
    // A later change without SCRAM clears the old keys: they no longer match.
    assert!(dir.set_credentials("alice", new_hash, None).await.unwrap());
    assert_eq!(
        dir.find_user("alice").await.unwrap().unwrap().scram_sha256,
        None
    );
    assert_eq!(alice.maildir, sample_user("alice").maildir);
    assert!(alice.enabled);
    assert!(!dir.set_credentials("nobody", new_hash, None).await.unwrap());
    assert!(dir.find_user("nobody").await.unwrap().is_none());
}

async fn set_enabled<D: Directory>(dir: &D) {
    assert!(dir.set_enabled("alice", false).await.unwrap());
    assert!(!dir.find_user("alice").await.unwrap().unwrap().enabled);
    // Setting the current value again still reports that the user exists.
    assert!(dir.set_enabled("alice", false).await.unwrap());
    assert!(dir.set_enabled("alice", true).await.unwrap());
    assert!(dir.find_user("alice").await.unwrap().unwrap().enabled);
    assert!(!dir.set_enabled("nobody", true).await.unwrap());
}

async fn delete<D: Directory>(dir: &D) {
    dir.add_user(&sample_user("temp")).await.unwrap();
    assert!(dir.delete_user("temp").await.unwrap());
    assert!(dir.find_user("temp").await.unwrap().is_none());
    assert!(!dir.delete_user("temp").await.unwrap());
    // The name is free again.
    dir.add_user(&sample_user("temp")).await.unwrap();
    assert!(dir.delete_user("temp").await.unwrap());
}

/// Order is by the bytes of the name (code point order for UTF-8); for PostgreSQL that
/// means `ORDER BY name COLLATE "C"`.
async fn list_is_ordered_by_name<D: Directory>(dir: &D) {
    for name in ["carol", "Zed", "bob", "alice@example.org", "émile"] {
        dir.add_user(&sample_user(name)).await.unwrap();
    }
    let names: Vec<String> = dir
        .list_users()
        .await
        .unwrap()
        .into_iter()
        .map(|u| u.name)
        .collect();
    let mut expected: Vec<String> = [
        "alice",
        "jörg@example.org",
        "carol",
        "Zed",
        "bob",
        "alice@example.org",
        "émile",
    ]
    .into_iter()
    .map(String::from)
    .collect();
    expected.sort();
    assert_eq!(names, expected);
    let users = dir.list_users().await.unwrap();
    assert!(!users[names.iter().position(|n| n == "jörg@example.org").unwrap()].enabled);
}

async fn set_apop_secret<D: Directory>(dir: &D) {
    assert!(
        dir.set_apop_secret("alice", Some("v1:c2VjcmV0"))
            .await
            .unwrap()
    );
    let alice = dir.find_user("alice").await.unwrap().unwrap();
    assert_eq!(alice.apop_secret.as_deref(), Some("v1:c2VjcmV0"));
    assert!(dir.set_apop_secret("alice", None).await.unwrap());
    assert_eq!(
        dir.find_user("alice").await.unwrap().unwrap().apop_secret,
        None
    );
    assert!(!dir.set_apop_secret("nobody", None).await.unwrap());
}
