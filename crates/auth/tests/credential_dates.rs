//! The administrative paths keep the directory's record of where each password came
//! from (`poplar audit`'s "never changed since import"): `add_user` and `set_password`
//! date a new password, `import_user` marks the account imported, and the upgrade of a
//! legacy hash at sign-in, being the same password, changes neither.

use std::sync::Arc;

use auth::{Argon2Params, Authenticator, CostlyHashes, UsernamePolicy};
use directory::{CredentialDates, Directory, SqliteDirectory};

const HASHES: &str = include_str!("fixtures/legacy-hashes.txt");
const IP: std::net::IpAddr = std::net::IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 1));

/// (password, hash) of the first `openssl passwd -6` fixture.
fn sha512_crypt() -> (&'static str, &'static str) {
    HASHES
        .lines()
        .find_map(|l| {
            let mut f = l.strip_prefix("openssl passwd -6\t")?.split('\t');
            Some((f.next()?, f.next()?))
        })
        .expect("an openssl passwd -6 fixture")
}

async fn dates(auth: &Authenticator<SqliteDirectory>, user: &str) -> CredentialDates {
    auth.directory()
        .credential_dates()
        .await
        .unwrap()
        .into_iter()
        .find(|d| d.user == user)
        .unwrap()
}

#[tokio::test]
async fn password_dates_follow_the_admin_paths_and_survive_the_upgrade() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = SqliteDirectory::open(&tmp.path().join("poplar.db"))
        .await
        .unwrap();
    let params = Argon2Params {
        memory_kib: 1024,
        iterations: 1,
        parallelism: 1,
    };
    let auth = Authenticator::new(Arc::new(dir), UsernamePolicy::default(), params, 2)
        .unwrap()
        .with_scram(4096, b"scram secret".to_vec());

    auth.add_user("made", b"made pw", "/mail/made".into())
        .await
        .unwrap();
    let made = dates(&auth, "made").await;
    assert!(!made.imported && made.password_set_at.is_some(), "{made:?}");

    let (password, hash) = sha512_crypt();
    let parsed = auth::legacy::parse(hash).unwrap();
    auth.import_user("old", parsed, "/mail/old".into(), CostlyHashes::Refuse)
        .await
        .unwrap();
    let imported = dates(&auth, "old").await;
    assert!(imported.imported && imported.password_set_at.is_none());

    // The first sign-in replaces the legacy hash (and adds SCRAM keys): same password.
    auth.verify_password("old", password.as_bytes(), IP)
        .await
        .unwrap();
    let record = auth.directory().find_user("old").await.unwrap().unwrap();
    assert!(record.password_hash.starts_with("$argon2id$"));
    assert!(record.scram_sha256.is_some());
    assert_eq!(dates(&auth, "old").await, imported);

    // A cleartext entry is hashed at import, but is still the imported password.
    let plain = auth::legacy::parse("{PLAIN}imported plain").unwrap();
    auth.import_user("plain", plain, "/mail/plain".into(), CostlyHashes::Refuse)
        .await
        .unwrap();
    assert!(dates(&auth, "plain").await.imported);

    // A new password ends it.
    assert!(auth.set_password("old", b"a new password").await.unwrap());
    let changed = dates(&auth, "old").await;
    assert!(
        !changed.imported && changed.password_set_at.is_some(),
        "{changed:?}"
    );
    assert!(
        auth.verify_password("old", b"a new password", IP)
            .await
            .is_ok()
    );
}
