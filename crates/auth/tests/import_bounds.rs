//! Imported hashes are bounded like argon2's: import refuses, with its reason, a hash
//! whose memory or estimated time is above the configured bounds unless the
//! administrator allows it, and sign-in checks whatever import took (an imported hash
//! that can never sign in was the bug: argon2 above 256 MiB was accepted at import and
//! then refused by the verifier, silently).

use std::sync::Arc;

use auth::legacy::{Dimension, HashBounds, LegacyScheme, Parsed, parse};
use auth::{
    Argon2Params, Authenticator, CostlyHashes, HashLimits, ImportError, Imported, UsernamePolicy,
};
use directory::{Directory, SqliteDirectory};

const HASHES: &str = include_str!("fixtures/legacy-hashes.txt");
const IP: std::net::IpAddr = std::net::IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 1));
/// A salt and an output of the right shapes: import only parses, so the hash need not
/// be of any password.
const ARGON2_TAIL: &str = "$c2FsdHNhbHRzYWx0$aGFzaGhhc2hoYXNoaGFzaGhhc2hoYXNoaGFzaGhhc2g";
const BCRYPT_TAIL: &str = "44rK9g7U9x2O5cMLCtKMkOxDtzehqkEB6bT3xpT6lnA8tXVREqIyi";
const SHA512_TAIL: &str =
    "RcjHW78ey30KiwmMV4TCJOCZ07QyX1ChhQbntYcIjU.XTuqWiZEqLPA4/QlCZL2ZeBVluLpVxzfURCvEudhCg.";
const PBKDF2_KEY: &str = "4b007901b765489abead49d926f721d065a429c1";

async fn authenticator(tmp: &tempfile::TempDir) -> Authenticator<SqliteDirectory> {
    let dir = SqliteDirectory::open(&tmp.path().join("poplar.db"))
        .await
        .unwrap();
    let params = Argon2Params {
        memory_kib: 1024,
        iterations: 1,
        parallelism: 1,
    };
    Authenticator::new(Arc::new(dir), UsernamePolicy::default(), params, 2).unwrap()
}

fn hash(stored: &str) -> Parsed {
    let parsed = parse(stored).unwrap_or_else(|e| panic!("{stored}: {e}"));
    assert!(matches!(parsed, Parsed::Hash(_)), "{stored}");
    parsed
}

fn yescrypt(n: u64, t: u32) -> String {
    let params = yescrypt::Params::new_with_all_params(yescrypt::Mode::Rw, n, 32, 1, t, 0).unwrap();
    format!("$y${params}$bGIz1yZZUcTSoM.mDxGiI/$NwuW1Y9OkSNrNjNFYSajeHZrVuKVZQ4Nb21nBuB0XA.")
}

#[tokio::test]
async fn an_argon2_hash_at_512_mib_is_refused_at_import_with_its_reason() {
    let tmp = tempfile::tempdir().unwrap();
    let auth = authenticator(&tmp).await;
    assert_eq!(auth.import_bounds(), HashBounds::IMPORT_DEFAULT);
    let big = format!("$argon2id$v=19$m=524288,t=2,p=1{ARGON2_TAIL}");
    for stored in [big.clone(), format!("{{ARGON2ID}}{big}")] {
        let err = auth
            .import_user(
                "big",
                hash(&stored),
                "/mail/big".into(),
                CostlyHashes::Refuse,
            )
            .await
            .unwrap_err();
        let ImportError::Costly(exceeds) = &err else {
            panic!("{err:?}");
        };
        assert_eq!(exceeds.scheme, LegacyScheme::Argon2id);
        assert_eq!(exceeds.dimension, Dimension::Memory);
        assert_eq!(
            err.to_string(),
            "ARGON2ID hash (m=524288,t=2,p=1) needs 512 MiB of memory to check, above auth.import_max_memory_kib = 262144 (256 MiB)"
        );
        assert!(
            !err.to_string().contains("c2FsdHNhbHRz"),
            "no hash in reasons"
        );
        assert!(auth.directory().find_user("big").await.unwrap().is_none());
    }
    // The administrator allows it: imported, saying which bound it passes.
    let Imported { name, above_bounds } = auth
        .import_user("big", hash(&big), "/mail/big".into(), CostlyHashes::Allow)
        .await
        .unwrap();
    assert_eq!(name, "big");
    assert_eq!(above_bounds.unwrap().dimension, Dimension::Memory);
    let record = auth.directory().find_user("big").await.unwrap().unwrap();
    assert_eq!(record.password_hash, big);
}

#[tokio::test]
async fn every_scheme_above_the_bounds_is_refused_unless_allowed() {
    let tmp = tempfile::tempdir().unwrap();
    let auth = authenticator(&tmp).await;
    let cases = [
        (
            format!("$2b$15${BCRYPT_TAIL}"),
            "BLF-CRYPT hash (cost 15) takes about 2.0 s to check, above auth.import_max_time_ms = 1000",
        ),
        (
            format!("{{SHA512-CRYPT}}$6$rounds=5000000$salt${SHA512_TAIL}"),
            "SHA512-CRYPT hash (rounds=5000000) takes about 1.5 s to check, above auth.import_max_time_ms = 1000",
        ),
        (
            format!("{{PBKDF2}}$1$salt$10000000${PBKDF2_KEY}"),
            "PBKDF2 hash (10000000 iterations) takes about 2.0 s to check, above auth.import_max_time_ms = 1000",
        ),
        (
            yescrypt(1 << 17, 0),
            "YESCRYPT hash (N=131072,r=32,p=1,t=0) needs 512 MiB of memory to check, above auth.import_max_memory_kib = 262144 (256 MiB)",
        ),
        (
            yescrypt(1 << 16, 1),
            "YESCRYPT hash (N=65536,r=32,p=1,t=1) takes about 1.3 s to check, above auth.import_max_time_ms = 1000",
        ),
        (
            format!("$argon2id$v=19$m=262144,t=16,p=1{ARGON2_TAIL}"),
            "ARGON2ID hash (m=262144,t=16,p=1) takes about 3.1 s to check, above auth.import_max_time_ms = 1000",
        ),
        (
            format!("{{ARGON2I}}$argon2i$v=19$m=1048576,t=4,p=1{ARGON2_TAIL}"),
            "ARGON2I hash (m=1048576,t=4,p=1) needs 1 GiB of memory to check, above auth.import_max_memory_kib = 262144 (256 MiB)",
        ),
    ];
    for (i, (stored, reason)) in cases.iter().enumerate() {
        let user = format!("costly{i}");
        let err = auth
            .import_user(&user, hash(stored), "/m".into(), CostlyHashes::Refuse)
            .await
            .unwrap_err();
        assert!(matches!(err, ImportError::Costly(_)), "{stored}: {err:?}");
        assert_eq!(&err.to_string(), reason, "{stored}");
        let imported = auth
            .import_user(&user, hash(stored), "/m".into(), CostlyHashes::Allow)
            .await
            .unwrap();
        assert_eq!(imported.above_bounds.unwrap().to_string(), *reason);
    }
}

#[test]
fn the_common_defaults_are_within_the_default_bounds() {
    let bounds = HashBounds::IMPORT_DEFAULT;
    let within = |stored: &str| {
        let Parsed::Hash(h) = hash(stored) else {
            unreachable!()
        };
        h.check_bounds(&bounds)
            .unwrap_or_else(|e| panic!("{stored}: {e}"));
    };
    // Every hash the fixture tools made with their defaults (doveadm, mkpasswd,
    // openssl, passlib, Python bcrypt, argon2-cffi).
    let mut n = 0;
    for line in HASHES
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let stored = line.split('\t').nth(2).unwrap();
        if let Ok(Parsed::Hash(_)) = parse(stored) {
            within(stored);
            n += 1;
        }
    }
    assert!(n > 60, "{n}");
    for stored in [
        // Dovecot's PBKDF2; glibc's and passlib's SHA-crypt.
        format!("{{PBKDF2}}$1$salt$5000${PBKDF2_KEY}"),
        format!("$6$salt${SHA512_TAIL}"),
        format!("$6$rounds=656000$salt${SHA512_TAIL}"),
        format!("$5$rounds=535000$salt${}", &SHA512_TAIL[..43]),
        // bcrypt as libraries make it, up to cost 14.
        format!("$2b$10${BCRYPT_TAIL}"),
        format!("$2b$12${BCRYPT_TAIL}"),
        format!("$2y$14${BCRYPT_TAIL}"),
        // libxcrypt's yescrypt default.
        yescrypt(4096, 0),
        // libsodium argon2id interactive and moderate, argon2i interactive and moderate.
        format!("$argon2id$v=19$m=65536,t=2,p=1{ARGON2_TAIL}"),
        format!("$argon2id$v=19$m=262144,t=3,p=1{ARGON2_TAIL}"),
        format!("{{ARGON2I}}$argon2i$v=19$m=32768,t=4,p=1{ARGON2_TAIL}"),
        format!("$argon2i$v=19$m=131072,t=6,p=1{ARGON2_TAIL}"),
        // RFC 9106's second recommended option; OWASP's; Poplar's own default.
        format!("$argon2id$v=19$m=65536,t=3,p=4{ARGON2_TAIL}"),
        format!("$argon2id$v=19$m=19456,t=2,p=1{ARGON2_TAIL}"),
    ] {
        within(&stored);
    }
}

#[tokio::test]
async fn configured_bounds_apply_and_an_allowed_hash_signs_in() {
    let tmp = tempfile::tempdir().unwrap();
    let auth = authenticator(&tmp).await.with_hash_limits(HashLimits {
        import: HashBounds {
            max_memory_kib: 256 * 1024,
            max_time_ms: 1,
        },
        memory_budget_kib: None,
    });
    assert_eq!(auth.import_bounds().max_time_ms, 1);
    // A real bcrypt fixture at cost 5 (about 1.9 ms estimated): above a 1 ms bound.
    let (password, stored) = HASHES
        .lines()
        .find_map(|l| {
            let mut f = l.strip_prefix("mkpasswd -m bcrypt\t")?.split('\t');
            Some((f.next()?, f.next()?))
        })
        .unwrap();
    let err = auth
        .import_user("bc", hash(stored), "/m".into(), CostlyHashes::Refuse)
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("above auth.import_max_time_ms = 1"),
        "{err}"
    );
    auth.import_user("bc", hash(stored), "/m".into(), CostlyHashes::Allow)
        .await
        .unwrap();
    // Sign-in checks what import took, and upgrades it.
    let who = auth
        .verify_password("bc", password.as_bytes(), IP)
        .await
        .unwrap();
    assert_eq!(who.user, "bc");
    let record = auth.directory().find_user("bc").await.unwrap().unwrap();
    assert!(record.password_hash.starts_with("$argon2id$v=19$m=1024,"));
}

#[tokio::test]
async fn an_argon2_hash_above_256_mib_signs_in_once_allowed_at_import() {
    // The old verifier refused argon2 above 256 MiB that import had taken. A real hash
    // at 264 MiB, one pass (made here: ~0.2 s and 264 MiB), allowed at import: the
    // first sign-in checks it (alone, as it is bigger than the pool's 2 MiB budget) and
    // upgrades it.
    let tmp = tempfile::tempdir().unwrap();
    let auth = authenticator(&tmp).await;
    let params = argon2::Params::new(270_000, 1, 1, None).unwrap();
    let argon2 = argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
    let big = argon2::PasswordHasher::hash_password(&argon2, b"big secret")
        .unwrap()
        .to_string();
    assert!(big.starts_with("$argon2id$v=19$m=270000,t=1,p=1$"), "{big}");
    let err = auth
        .import_user("big", hash(&big), "/m".into(), CostlyHashes::Refuse)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("needs 263.7 MiB"), "{err}");
    auth.import_user("big", hash(&big), "/m".into(), CostlyHashes::Allow)
        .await
        .unwrap();
    assert!(
        auth.verify_password("big", b"big secreT", IP)
            .await
            .is_err()
    );
    let who = auth
        .verify_password("big", b"big secret", IP)
        .await
        .unwrap();
    assert_eq!(who.user, "big");
    let record = auth.directory().find_user("big").await.unwrap().unwrap();
    assert!(record.password_hash.starts_with("$argon2id$v=19$m=1024,"));
}
