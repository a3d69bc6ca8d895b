//! A hash upgrade at sign-in against a password change made while it is in flight: the
//! change stands. The directory wrapper holds the upgrade's write until the change is
//! made, as a slow directory or an unlucky schedule would.

use std::sync::Arc;

mod common;
use common::{IP, SMALL, without_defence};

use auth::{Argon2Params, AuthFailure, Authenticator, Reason, UsernamePolicy};
use directory::SqliteDirectory;
use directory::paused::PausedUpgrade;

#[tokio::test]
async fn a_password_changed_during_an_upgrading_sign_in_stands() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = Arc::new(PausedUpgrade::new(
        SqliteDirectory::open(&tmp.path().join("poplar.db"))
            .await
            .unwrap(),
    ));
    // Made under the old parameters...
    let old = without_defence(
        Authenticator::new(dir.clone(), UsernamePolicy::default(), SMALL, 2).unwrap(),
    );
    old.add_user("alice", b"old password", "/m".into())
        .await
        .unwrap();
    // ...signed in under new ones: a right password upgrades the stored hash.
    let stronger = Argon2Params {
        memory_kib: 2048,
        ..SMALL
    };
    let auth = without_defence(
        Authenticator::new(dir.clone(), UsernamePolicy::default(), stronger, 2)
            .unwrap()
            .with_scram(4096, b"server secret".to_vec()),
    );
    let signing_in = {
        let auth = auth.clone();
        tokio::spawn(async move { auth.verify_password("alice", b"old password", IP).await })
    };
    dir.upgrade_reached().await;
    // The owner (or the administrator) changes the password meanwhile.
    auth.set_password("alice", b"new password").await.unwrap();
    dir.go_on();
    let signed_in = signing_in.await.unwrap();
    assert_eq!(signed_in.map(|i| i.user), Ok("alice".to_owned()));

    // The change stands: the old password does not come back.
    assert_eq!(
        auth.verify_password("alice", b"old password", IP).await,
        Err(AuthFailure::Rejected(Reason::BadPassword))
    );
    // (Any further upgrade is let through at once.)
    dir.go_on();
    assert!(
        auth.verify_password("alice", b"new password", IP)
            .await
            .is_ok()
    );
}
