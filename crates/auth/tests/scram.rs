//! SCRAM keys: derived with the password, looked up for the exchange, faked for
//! unknown users, added to accounts that lack them at their next password sign-in.

use std::sync::Arc;

mod common;
use common::{IP, SMALL, without_defence};

use auth::{AuthFailure, Authenticator, Reason, UsernamePolicy};
use directory::{Directory, SqliteDirectory, UserRecord};
use sasl::ScramKeys;

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
        Authenticator::new(dir.clone(), UsernamePolicy::default(), SMALL, 2)
            .unwrap()
            .with_scram(4096, b"server secret".to_vec()),
    );
    (auth, dir, tmp)
}

#[tokio::test]
async fn keys_derive_from_the_prepared_password() {
    let (auth, _dir, _tmp) = fixture().await;
    // U+00AD is mapped to nothing by SASLprep: the keys must be those of "IX".
    auth.add_user("alice", "I\u{00AD}X".as_bytes(), "/m".into())
        .await
        .unwrap();
    let lookup = auth.scram_lookup("alice", IP).await.unwrap();
    let expected = ScramKeys::derive("IX", &lookup.keys.salt, 4096);
    assert_eq!(lookup.keys, expected);
    let id = auth.scram_confirm(lookup, None, true).await.unwrap();
    assert_eq!(id.user, "alice");
}

#[tokio::test]
async fn unknown_users_get_stable_fake_keys_and_fail() {
    let (auth, _dir, _tmp) = fixture().await;
    let a = auth.scram_lookup("ghost", IP).await.unwrap();
    let b = auth.scram_lookup("ghost", IP).await.unwrap();
    assert_eq!(a.keys, b.keys);
    assert_eq!(a.keys.iterations, 4096);
    assert_eq!(
        auth.scram_confirm(a, None, true).await,
        Err(AuthFailure::Rejected(Reason::UnknownUser))
    );
}

#[tokio::test]
async fn confirm_checks_proof_account_and_authzid() {
    let (auth, dir, _tmp) = fixture().await;
    auth.add_user("bob", b"pw", "/m".into()).await.unwrap();
    let lookup = auth.scram_lookup("bob", IP).await.unwrap();
    assert_eq!(
        auth.scram_confirm(lookup, None, false).await,
        Err(AuthFailure::Rejected(Reason::BadPassword))
    );
    let lookup = auth.scram_lookup("bob", IP).await.unwrap();
    assert_eq!(
        auth.scram_confirm(lookup, Some("carol"), true).await,
        Err(AuthFailure::Rejected(Reason::AuthzidMismatch))
    );
    let lookup = auth.scram_lookup("bob", IP).await.unwrap();
    assert!(auth.scram_confirm(lookup, Some("bob"), true).await.is_ok());
    dir.set_enabled("bob", false).await.unwrap();
    let lookup = auth.scram_lookup("bob", IP).await.unwrap();
    assert_eq!(
        auth.scram_confirm(lookup, None, true).await,
        Err(AuthFailure::Rejected(Reason::Disabled))
    );
}

#[tokio::test]
async fn accounts_without_keys_get_them_at_the_next_password_sign_in() {
    let (auth, dir, _tmp) = fixture().await;
    auth.add_user("carol", b"secret words", "/m".into())
        .await
        .unwrap();
    let record = dir.find_user("carol").await.unwrap().unwrap();
    // As an import would leave it: a hash and no SCRAM keys.
    dir.set_credentials("carol", &record.password_hash, None)
        .await
        .unwrap();
    let lookup = auth.scram_lookup("carol", IP).await.unwrap();
    assert_eq!(
        auth.scram_confirm(lookup, None, true).await,
        Err(AuthFailure::Rejected(Reason::BadPassword)),
        "no keys: SCRAM cannot succeed yet"
    );
    auth.verify_password("carol", b"secret words", IP)
        .await
        .unwrap();
    let after = dir.find_user("carol").await.unwrap().unwrap();
    assert_eq!(after.password_hash, record.password_hash, "hash kept");
    let keys = ScramKeys::parse(after.scram_sha256.as_deref().unwrap()).unwrap();
    assert_eq!(keys, ScramKeys::derive("secret words", &keys.salt, 4096));
}

#[tokio::test]
async fn without_scram_no_keys_are_stored() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = Arc::new(
        SqliteDirectory::open(&tmp.path().join("poplar.db"))
            .await
            .unwrap(),
    );
    let auth = Authenticator::new(dir.clone(), UsernamePolicy::default(), SMALL, 2).unwrap();
    auth.add_user("dave", b"pw", "/m".into()).await.unwrap();
    let UserRecord { scram_sha256, .. } = dir.find_user("dave").await.unwrap().unwrap();
    assert_eq!(scram_sha256, None);
    assert!(auth.scram_lookup("dave", IP).await.is_err());
}

#[tokio::test]
async fn after_the_iteration_count_changes_fakes_show_what_accounts_show() {
    let (auth, dir, _tmp) = fixture().await;
    for name in ["alice", "bob", "carol"] {
        auth.add_user(name, b"secret one", "/m".into())
            .await
            .unwrap();
    }
    // The administrator raises the count: the accounts keep 4096 until they sign in
    // with a password, and so must the names that have no account.
    let raised = without_defence(
        Authenticator::new(dir.clone(), UsernamePolicy::default(), SMALL, 2)
            .unwrap()
            .with_scram(8192, b"server secret".to_vec()),
    );
    let real = raised.scram_lookup("alice", IP).await.unwrap();
    assert_eq!(real.keys.iterations, 4096);
    for ghost in ["ghost", "nobody", "x1", "x2", "x3", "x4", "x5", "x6"] {
        let fake = raised.scram_lookup(ghost, IP).await.unwrap();
        assert_eq!(fake.keys.iterations, 4096, "{ghost}");
    }
}
