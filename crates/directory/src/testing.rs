//! A conformance suite every [`Directory`] backend must pass.
//!
//! Backends call [`conformance`] from their own tests on a fresh, empty directory, so
//! SQLite and PostgreSQL are held to the same behaviour. Enabled in this
//! crate's tests and, for other crates, by the `test-suite` feature.

use crate::{
    AppPassword, ClearTarget, Directory, DirectoryError, FailureRecord, GuardQuery, GuardState,
    HISTORY_PER_USER, MfaRecord, ReserveQuery, SignInEntry, UserRecord,
};

/// A user with a recognisable hash and Maildir derived from `name`, enabled.
pub fn sample_user(name: &str) -> UserRecord {
    UserRecord {
        name: name.to_owned(),
        password_hash: format!("$argon2id$v=19$m=1024,t=1,p=1$c2FsdHNhbHQ$hash-of-{name}"),
        enabled: true,
        maildir: format!("/var/mail/poplar/{name}/Maildir"),
        scram_sha256: None,
        apop_secret: None,
        allowed_networks: None,
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
    allowed_networks(dir).await;
    failures_are_counted(dir).await;
    reservations_are_decided_in_turn(dir).await;
    success_forgets_failures_and_remembers_the_network(dir).await;
    bans(dir).await;
    lockouts_are_listed_cleared_and_pruned(dir).await;
    history_is_bounded_and_newest_first(dir).await;
    notices_switch(dir).await;
    two_factor(dir).await;
    app_passwords(dir).await;
    credential_dates(dir).await;
    last_sign_ins(dir).await;
    server_secrets(dir).await;
    maildrop_leases(dir).await;
    sealed_and_keyed(dir).await;
}

/// What a key rotation re-seals and re-keys: every sealed secret and keyed hash is
/// listed, and each is replaced only if it is still the value read.
async fn sealed_and_keyed<D: Directory>(dir: &D) {
    use crate::{KeyedHash, SealedKind, SealedSecret};
    for name in ["kr-a", "kr-b"] {
        dir.add_user(&sample_user(name)).await.unwrap();
    }
    assert!(
        dir.set_apop_secret("kr-a", Some("v1:apop-a"))
            .await
            .unwrap()
    );
    let totp = MfaRecord {
        totp_secret: "v1:totp-b".into(),
        confirmed: true,
        last_step: 0,
        enrolled_at: 1,
    };
    dir.set_mfa("kr-b", Some(&totp)).await.unwrap();
    let sealed: Vec<SealedSecret> = dir
        .sealed_secrets()
        .await
        .unwrap()
        .into_iter()
        .filter(|s| s.user.starts_with("kr-"))
        .collect();
    let apop = SealedSecret {
        user: "kr-a".into(),
        kind: SealedKind::Apop,
        value: "v1:apop-a".into(),
    };
    let totp_secret = SealedSecret {
        user: "kr-b".into(),
        kind: SealedKind::Totp,
        value: "v1:totp-b".into(),
    };
    assert_eq!(sealed, vec![apop.clone(), totp_secret.clone()]);
    assert!(dir.reseal(&apop, "v2:2:apop-a").await.unwrap());
    assert!(
        !dir.reseal(&apop, "v2:3:stale").await.unwrap(),
        "not the value read"
    );
    assert!(dir.reseal(&totp_secret, "v2:2:totp-b").await.unwrap());
    assert_eq!(
        dir.find_user("kr-a")
            .await
            .unwrap()
            .unwrap()
            .apop_secret
            .as_deref(),
        Some("v2:2:apop-a")
    );
    assert_eq!(
        dir.mfa("kr-b").await.unwrap().unwrap().totp_secret,
        "v2:2:totp-b"
    );

    let app = AppPassword {
        id: 0,
        user: "kr-a".into(),
        label: "phone".into(),
        hash: "kr-hash-1".into(),
        created_at: 1,
        expires_at: None,
        networks: None,
        read_only: false,
        last_used_at: None,
        last_used_from: None,
    };
    let id = dir.add_app_password(&app).await.unwrap();
    dir.set_recovery_codes("kr-b", &["kr-code-1".into(), "kr-code-2".into()])
        .await
        .unwrap();
    assert!(dir.use_recovery_code("kr-b", "kr-code-1", 5).await.unwrap());
    let keyed: Vec<KeyedHash> = dir
        .keyed_hashes()
        .await
        .unwrap()
        .into_iter()
        .filter(|k| k.user.starts_with("kr-"))
        .collect();
    assert_eq!(
        keyed,
        vec![
            KeyedHash {
                user: "kr-a".into(),
                app_password: Some((id, "phone".into())),
                hash: "kr-hash-1".into(),
            },
            KeyedHash {
                user: "kr-b".into(),
                app_password: None,
                hash: "kr-code-2".into(),
            },
        ],
        "used recovery codes need no key"
    );
    assert!(
        dir.rekey_app_password(id, "kr-hash-1", "k2:kr-hash-1")
            .await
            .unwrap()
    );
    assert!(
        !dir.rekey_app_password(id, "kr-hash-1", "k3:late")
            .await
            .unwrap()
    );
    assert!(
        dir.find_app_password("k2:kr-hash-1")
            .await
            .unwrap()
            .is_some()
    );
}

/// One owner at a time; the owner renews and releases; an expired lease is free.
async fn maildrop_leases<D: Directory>(dir: &D) {
    let md = "/var/mail/poplar/alice/Maildir";
    assert!(dir.acquire_lease(md, "node-a:1", 60_000).await.unwrap());
    assert!(!dir.acquire_lease(md, "node-b:1", 60_000).await.unwrap());
    assert!(
        dir.acquire_lease(md, "node-a:1", 60_000).await.unwrap(),
        "again by its owner"
    );
    assert!(dir.renew_lease(md, "node-a:1", 60_000).await.unwrap());
    assert!(!dir.renew_lease(md, "node-b:1", 60_000).await.unwrap());
    // Another maildrop is independent.
    assert!(
        dir.acquire_lease("/other", "node-b:1", 60_000)
            .await
            .unwrap()
    );
    dir.release_lease(md, "node-b:1").await.unwrap();
    assert!(
        !dir.acquire_lease(md, "node-b:1", 60_000).await.unwrap(),
        "not the owner's to release"
    );
    dir.release_lease(md, "node-a:1").await.unwrap();
    assert!(dir.acquire_lease(md, "node-b:1", 60_000).await.unwrap());
    // An expired lease (a node that died) goes to the next asker.
    assert!(dir.acquire_lease("/dead", "node-a:2", -1).await.unwrap());
    assert!(
        dir.acquire_lease("/dead", "node-b:2", 60_000)
            .await
            .unwrap()
    );
    assert!(!dir.renew_lease("/dead", "node-a:2", 60_000).await.unwrap());
    // A broken lease (its account disabled): the holder cannot renew it.
    assert!(
        dir.acquire_lease("/broken", "node-a:3", 60_000)
            .await
            .unwrap()
    );
    assert!(dir.break_lease("/broken").await.unwrap());
    assert!(!dir.break_lease("/broken").await.unwrap());
    assert!(
        !dir.renew_lease("/broken", "node-a:3", 60_000)
            .await
            .unwrap()
    );
    for (m, o) in [
        (md, "node-b:1"),
        ("/other", "node-b:1"),
        ("/dead", "node-b:2"),
    ] {
        dir.release_lease(m, o).await.unwrap();
    }
}

/// The first stored value of a shared secret wins; later offers get it back.
async fn server_secrets<D: Directory>(dir: &D) {
    assert_eq!(dir.server_secret("server_key").await.unwrap(), None);
    let (a, b) = tokio::join!(
        dir.ensure_server_secret("server_key", "aaaa"),
        dir.ensure_server_secret("server_key", "bbbb")
    );
    let (a, b) = (a.unwrap(), b.unwrap());
    assert_eq!(a, b, "both offers get the one stored value");
    assert!(a == "aaaa" || a == "bbbb");
    assert_eq!(
        dir.ensure_server_secret("server_key", "cccc")
            .await
            .unwrap(),
        a
    );
    assert_eq!(
        dir.server_secret("server_key").await.unwrap(),
        Some(a.clone())
    );
    assert_eq!(dir.server_secret("cookie_key").await.unwrap(), None);
    // Compare and set: of two replacements of one value, one wins.
    let (x, y) = tokio::join!(
        dir.replace_server_secret("server_key", &a, "marker x"),
        dir.replace_server_secret("server_key", &a, "marker y")
    );
    assert!(x.unwrap() ^ y.unwrap(), "exactly one replacement");
    let now = dir.server_secret("server_key").await.unwrap().unwrap();
    assert!(now == "marker x" || now == "marker y");
    assert!(
        !dir.replace_server_secret("server_key", &a, "late")
            .await
            .unwrap()
    );
    assert!(
        !dir.replace_server_secret("cookie_key", "", "new")
            .await
            .unwrap()
    );
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
    // An upgrade writes only over the hash it verified: a password changed meanwhile
    // stands.
    let upgraded = "$argon2id$v=19$m=65536,t=3,p=1$dXBzYWx0$dXBoYXNo";
    assert!(
        !dir.upgrade_credentials("alice", "$argon2id$stale", upgraded, None)
            .await
            .unwrap()
    );
    assert_eq!(
        dir.find_user("alice").await.unwrap().unwrap().password_hash,
        new_hash
    );
    assert!(
        dir.upgrade_credentials("alice", new_hash, upgraded, Some(scram))
            .await
            .unwrap()
    );
    let alice = dir.find_user("alice").await.unwrap().unwrap();
    assert_eq!(
        (alice.password_hash.as_str(), alice.scram_sha256.as_deref()),
        (upgraded, Some(scram))
    );
    assert!(dir.set_credentials("alice", new_hash, None).await.unwrap());
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

async fn allowed_networks<D: Directory>(dir: &D) {
    assert_eq!(
        dir.find_user("bob")
            .await
            .unwrap()
            .unwrap()
            .allowed_networks,
        None
    );
    assert!(
        dir.set_allowed_networks("bob", Some("192.0.2.0/24,2001:db8::/32"))
            .await
            .unwrap()
    );
    assert_eq!(
        dir.find_user("bob")
            .await
            .unwrap()
            .unwrap()
            .allowed_networks
            .as_deref(),
        Some("192.0.2.0/24,2001:db8::/32")
    );
    assert!(dir.set_allowed_networks("bob", None).await.unwrap());
    assert_eq!(
        dir.find_user("bob")
            .await
            .unwrap()
            .unwrap()
            .allowed_networks,
        None
    );
    assert!(!dir.set_allowed_networks("nobody", None).await.unwrap());
}

fn query<'a>(user: &'a str, source: &'a str, now: i64) -> GuardQuery<'a> {
    GuardQuery {
        user,
        source,
        network: "198.51.100.0/24",
        now,
        forget_before: now - 1_000,
    }
}

fn failure<'a>(
    user: &'a str,
    source: &'a str,
    attempt: Option<&'a str>,
    now: i64,
) -> FailureRecord<'a> {
    FailureRecord {
        user,
        source,
        attempt,
        unfamiliar: true,
        now,
        forget_before: now - 1_000,
        remember: 2,
        spray_since: now - 500,
        reserved: false,
    }
}

fn reserve<'a>(user: &'a str, source: &'a str, now: i64) -> ReserveQuery<'a> {
    ReserveQuery {
        query: query(user, source, now),
        familiar_since: now - 100_000,
        count_account: !user.is_empty(),
    }
}

/// The gate of these tests: at most three failures for a (user, source).
fn three(state: &GuardState) -> bool {
    state.failures < 3
}

async fn reservations_are_decided_in_turn<D: Directory>(dir: &D) {
    let src = "198.51.100.8";
    let now = 20_000;
    dir.add_user(&sample_user("rita")).await.unwrap();
    let q = reserve("rita", src, now);
    let probe = dir.reserve_attempt(&q, &three).await.unwrap();
    if !probe.counted {
        // A directory one process owns (SQLite) counts nothing when it reserves: that
        // process decides its attempts in turn (auth's guard) and records outcomes.
        assert!(probe.reserved && probe.unfamiliar);
        let again = dir.reserve_attempt(&q, &three).await.unwrap();
        assert_eq!(again.state, probe.state, "nothing counted");
        assert!(!dir.reserve_attempt(&q, &|_| false).await.unwrap().reserved);
        assert!(dir.delete_user("rita").await.unwrap());
        return;
    }
    // A shared directory (PostgreSQL) counts the probe: take it back first.
    dir.release_attempt("rita", src, true, now - 1_000)
        .await
        .unwrap();
    // Eight attempts at once: each is decided after the ones before it are counted,
    // so exactly three get through a gate of three, whatever the interleaving.
    let (a, b, c, d) = tokio::join!(
        dir.reserve_attempt(&q, &three),
        dir.reserve_attempt(&q, &three),
        dir.reserve_attempt(&q, &three),
        dir.reserve_attempt(&q, &three),
    );
    let (e, f, g, h) = tokio::join!(
        dir.reserve_attempt(&q, &three),
        dir.reserve_attempt(&q, &three),
        dir.reserve_attempt(&q, &three),
        dir.reserve_attempt(&q, &three),
    );
    let all: Vec<_> = [a, b, c, d, e, f, g, h]
        .into_iter()
        .map(Result::unwrap)
        .collect();
    assert_eq!(all.iter().filter(|r| r.reserved).count(), 3, "{all:?}");
    let mut seen: Vec<u32> = all
        .iter()
        .filter(|r| r.reserved)
        .map(|r| r.state.failures)
        .collect();
    seen.sort_unstable();
    assert_eq!(seen, [0, 1, 2], "each saw the ones before it");
    assert!(
        all.iter().all(|r| r.unfamiliar),
        "no success from the network yet"
    );
    // Counted for the (user, source) and, from an unfamiliar network, the account.
    let state = dir.guard_state(&query("rita", src, now)).await.unwrap();
    assert_eq!((state.failures, state.account_failures), (3, 3));
    assert_eq!(state.last_failure, Some(now));
    // A release takes one back (never below zero), for both counts.
    dir.release_attempt("rita", src, true, now - 1_000)
        .await
        .unwrap();
    let state = dir.guard_state(&query("rita", src, now)).await.unwrap();
    assert_eq!((state.failures, state.account_failures), (2, 2));
    // A reserved failure is counted already: settling it adds nothing, and remembers
    // its secret; a repeat of that secret takes its reservation back.
    let r = dir.reserve_attempt(&q, &three).await.unwrap();
    assert!(r.reserved);
    let settled = FailureRecord {
        reserved: true,
        ..failure("rita", src, Some("s1"), now)
    };
    let c = dir.record_failure(&settled).await.unwrap();
    assert_eq!((c.repeated, c.failures, c.account_failures), (false, 3, 3));
    let again = dir.reserve_attempt(&q, &|_| true).await.unwrap();
    assert!(again.reserved);
    let c = dir.record_failure(&settled).await.unwrap();
    assert_eq!((c.repeated, c.failures, c.account_failures), (true, 3, 3));
    // Refused by the gate: nothing counted.
    let refused = dir.reserve_attempt(&q, &three).await.unwrap();
    assert!(!refused.reserved);
    assert_eq!(refused.state.failures, 3);
    let state = dir.guard_state(&query("rita", src, now)).await.unwrap();
    assert_eq!((state.failures, state.account_failures), (3, 3));
    // An attempt that names no account counts for its source only.
    let anon = dir
        .reserve_attempt(&reserve("", src, now), &three)
        .await
        .unwrap();
    assert!(anon.reserved && !anon.unfamiliar);
    let state = dir.guard_state(&query("", src, now)).await.unwrap();
    assert_eq!((state.failures, state.account_failures), (1, 0));
    // A success wipes the (user, source) row; a reserved failure settled after it is
    // counted afresh.
    dir.record_success("rita", src, "198.51.100.0/24", now)
        .await
        .unwrap();
    let c = dir
        .record_failure(&FailureRecord {
            reserved: true,
            ..failure("rita", src, Some("s9"), now + 1)
        })
        .await
        .unwrap();
    assert_eq!(c.failures, 1);
    for user in ["rita", ""] {
        dir.clear_lockouts(ClearTarget::User(user)).await.unwrap();
    }
    assert!(dir.delete_user("rita").await.unwrap());
}

async fn failures_are_counted<D: Directory>(dir: &D) {
    let src = "198.51.100.7";
    assert_eq!(
        dir.guard_state(&query("carol", src, 10_000)).await.unwrap(),
        GuardState::default()
    );
    let c = dir
        .record_failure(&failure("carol", src, Some("h1"), 10_000))
        .await
        .unwrap();
    assert_eq!(
        (
            c.repeated,
            c.failures,
            c.account_failures,
            c.accounts_from_source
        ),
        (false, 1, 1, 1)
    );
    // The same wrong secret again counts nothing.
    let c = dir
        .record_failure(&failure("carol", src, Some("h1"), 10_100))
        .await
        .unwrap();
    assert_eq!((c.repeated, c.failures, c.account_failures), (true, 1, 1));
    // New secrets count; only the last `remember` (2) are kept.
    dir.record_failure(&failure("carol", src, Some("h2"), 10_200))
        .await
        .unwrap();
    dir.record_failure(&failure("carol", src, Some("h3"), 10_300))
        .await
        .unwrap();
    let c = dir
        .record_failure(&failure("carol", src, Some("h1"), 10_400))
        .await
        .unwrap();
    assert_eq!((c.repeated, c.failures, c.account_failures), (false, 4, 4));
    // Mechanisms without a comparable secret always count.
    let c = dir
        .record_failure(&failure("carol", src, None, 10_500))
        .await
        .unwrap();
    assert_eq!(c.failures, 5);
    // A failure from a familiar network counts for (user, source) but not the account.
    let mut familiar = failure("carol", src, None, 10_600);
    familiar.unfamiliar = false;
    let c = dir.record_failure(&familiar).await.unwrap();
    assert_eq!((c.failures, c.account_failures), (6, 5));
    let state = dir.guard_state(&query("carol", src, 10_700)).await.unwrap();
    assert_eq!((state.failures, state.last_failure), (6, Some(10_600)));
    assert_eq!(
        (state.account_failures, state.account_last_failure),
        (5, Some(10_500))
    );
    // Other names failed from the same source count toward spraying, within the window.
    dir.record_failure(&failure("nobody-1", src, None, 10_650))
        .await
        .unwrap();
    let c = dir
        .record_failure(&failure("nobody-2", src, None, 10_700))
        .await
        .unwrap();
    assert_eq!(c.accounts_from_source, 3);
    let c = dir
        .record_failure(&failure("nobody-3", src, None, 11_180))
        .await
        .unwrap();
    assert_eq!(
        c.accounts_from_source, 2,
        "failures before spray_since are not counted"
    );
    // Counts last seen before forget_before start again from zero.
    let state = dir.guard_state(&query("carol", src, 11_700)).await.unwrap();
    assert_eq!((state.failures, state.account_failures), (0, 0));
    let c = dir
        .record_failure(&failure("carol", src, Some("h1"), 11_700))
        .await
        .unwrap();
    assert_eq!((c.repeated, c.failures, c.account_failures), (false, 1, 1));
}

async fn success_forgets_failures_and_remembers_the_network<D: Directory>(dir: &D) {
    let src = "198.51.100.8";
    dir.record_failure(&failure("carol", src, None, 20_000))
        .await
        .unwrap();
    dir.record_failure(&failure("carol", "203.0.113.9", None, 20_000))
        .await
        .unwrap();
    dir.record_success("carol", src, "198.51.100.0/24", 20_100)
        .await
        .unwrap();
    let state = dir.guard_state(&query("carol", src, 20_200)).await.unwrap();
    assert_eq!(state.failures, 0);
    assert_eq!(state.account_failures, 2, "the account's count is kept");
    assert_eq!(state.network_last_success, Some(20_100));
    assert_eq!(state.last_success, Some(20_100));
    // Other sources keep their counts; other networks are not familiar.
    let other = dir
        .guard_state(&GuardQuery {
            network: "203.0.113.0/24",
            ..query("carol", "203.0.113.9", 20_200)
        })
        .await
        .unwrap();
    assert_eq!(other.failures, 1);
    assert_eq!(other.network_last_success, None);
    assert_eq!(other.last_success, Some(20_100));
    // A later success moves the time on, an out-of-order earlier one does not.
    dir.record_success("carol", src, "198.51.100.0/24", 20_500)
        .await
        .unwrap();
    dir.record_success("carol", src, "198.51.100.0/24", 20_300)
        .await
        .unwrap();
    assert_eq!(
        dir.guard_state(&query("carol", src, 20_600))
            .await
            .unwrap()
            .network_last_success,
        Some(20_500)
    );
    assert!(
        dir.network_familiar_to_anyone("198.51.100.0/24", 20_000)
            .await
            .unwrap()
    );
    assert!(
        !dir.network_familiar_to_anyone("198.51.100.0/24", 20_501)
            .await
            .unwrap()
    );
    assert!(
        !dir.network_familiar_to_anyone("203.0.113.0/24", 0)
            .await
            .unwrap()
    );
    // Deleting the user forgets its networks.
    dir.add_user(&sample_user("dave")).await.unwrap();
    dir.record_success("dave", "192.0.2.1", "192.0.2.0/24", 20_000)
        .await
        .unwrap();
    assert!(
        dir.network_familiar_to_anyone("192.0.2.0/24", 0)
            .await
            .unwrap()
    );
    assert!(dir.delete_user("dave").await.unwrap());
    assert!(
        !dir.network_familiar_to_anyone("192.0.2.0/24", 0)
            .await
            .unwrap()
    );
}

async fn bans<D: Directory>(dir: &D) {
    let src = "203.0.113.50";
    assert_eq!(dir.source_ban(src, 30_000).await.unwrap(), None);
    dir.ban_source(src, 30_000, 31_000, 12).await.unwrap();
    assert_eq!(dir.source_ban(src, 30_500).await.unwrap(), Some(31_000));
    assert_eq!(dir.source_ban(src, 31_000).await.unwrap(), None);
    // Extended, never shortened.
    dir.ban_source(src, 30_100, 32_000, 3).await.unwrap();
    dir.ban_source(src, 30_200, 31_500, 3).await.unwrap();
    assert_eq!(dir.source_ban(src, 30_500).await.unwrap(), Some(32_000));
    assert_eq!(
        dir.guard_state(&query("carol", src, 30_500))
            .await
            .unwrap()
            .source_banned_until,
        Some(32_000)
    );
    let listed = dir.lockout_state(30_500, 0).await.unwrap();
    let ban = listed.bans.iter().find(|b| b.source == src).unwrap();
    assert_eq!(
        (ban.banned_at, ban.banned_until, ban.accounts),
        (30_000, 32_000, 12)
    );
}

async fn lockouts_are_listed_cleared_and_pruned<D: Directory>(dir: &D) {
    dir.record_failure(&failure("carol", "203.0.113.10", None, 30_400))
        .await
        .unwrap();
    let state = dir.lockout_state(30_500, 0).await.unwrap();
    assert!(
        state
            .sources
            .iter()
            .any(|s| s.user == "carol" && s.source == "203.0.113.9")
    );
    assert!(state.accounts.iter().any(|a| a.user == "carol"));
    // Newest first.
    let times: Vec<i64> = state.sources.iter().map(|s| s.last_failure).collect();
    assert!(times.windows(2).all(|w| w[0] >= w[1]), "{times:?}");

    assert!(
        dir.clear_lockouts(ClearTarget::User("carol"))
            .await
            .unwrap()
            > 0
    );
    let state = dir.lockout_state(30_500, 0).await.unwrap();
    assert!(!state.sources.iter().any(|s| s.user == "carol"));
    assert!(!state.accounts.iter().any(|a| a.user == "carol"));
    assert!(state.sources.iter().any(|s| s.user == "nobody-3"));

    assert!(
        dir.clear_lockouts(ClearTarget::Source("203.0.113.50"))
            .await
            .unwrap()
            > 0
    );
    assert_eq!(dir.source_ban("203.0.113.50", 30_500).await.unwrap(), None);

    dir.ban_source("203.0.113.51", 40_000, 41_000, 10)
        .await
        .unwrap();
    dir.record_failure(&failure("erin", "203.0.113.51", None, 40_000))
        .await
        .unwrap();
    assert!(dir.prune_defence(39_000).await.unwrap() > 0);
    let state = dir.lockout_state(40_000, 0).await.unwrap();
    assert!(
        state.sources.iter().all(|s| s.last_failure >= 39_000),
        "{state:?}"
    );
    assert_eq!(state.bans.len(), 1);
    dir.clear_lockouts(ClearTarget::All).await.unwrap();
    assert_eq!(
        dir.lockout_state(40_000, 0).await.unwrap(),
        Default::default()
    );
}

async fn history_is_bounded_and_newest_first<D: Directory>(dir: &D) {
    dir.add_user(&sample_user("hist")).await.unwrap();
    let entry = |at: i64, result: &str| SignInEntry {
        user: "hist".into(),
        at,
        address: "192.0.2.1".into(),
        mechanism: "PLAIN".into(),
        result: result.into(),
    };
    let n = HISTORY_PER_USER + 5;
    for i in 0..n {
        let result = if i % 2 == 0 { "success" } else { "failure" };
        dir.record_sign_in(&entry(1_000 + i, result)).await.unwrap();
    }
    let all = dir.sign_in_history("hist", 1000).await.unwrap();
    assert_eq!(all.len() as i64, HISTORY_PER_USER);
    assert_eq!(all[0].at, 1_000 + n - 1, "newest first");
    assert_eq!(
        all.last().unwrap().at,
        1_005,
        "the oldest five were dropped"
    );
    assert_eq!(dir.sign_in_history("hist", 3).await.unwrap().len(), 3);
    // Unknown users get no history.
    let mut ghost = entry(5, "failure");
    ghost.user = "ghost".into();
    dir.record_sign_in(&ghost).await.unwrap();
    assert!(dir.sign_in_history("ghost", 10).await.unwrap().is_empty());
    // Deleting the user deletes the history.
    assert!(dir.delete_user("hist").await.unwrap());
    assert!(dir.sign_in_history("hist", 10).await.unwrap().is_empty());
}

async fn notices_switch<D: Directory>(dir: &D) {
    assert_eq!(dir.notices_enabled("alice").await.unwrap(), Some(true));
    assert!(dir.set_notices("alice", false).await.unwrap());
    assert_eq!(dir.notices_enabled("alice").await.unwrap(), Some(false));
    assert!(dir.set_notices("alice", true).await.unwrap());
    assert_eq!(dir.notices_enabled("nobody").await.unwrap(), None);
    assert!(!dir.set_notices("nobody", true).await.unwrap());
}

async fn two_factor<D: Directory>(dir: &D) {
    dir.add_user(&sample_user("mfa")).await.unwrap();
    assert_eq!(dir.mfa_policy("mfa").await.unwrap(), None);
    assert!(dir.set_mfa_policy("mfa", Some("required")).await.unwrap());
    assert_eq!(
        dir.mfa_policy("mfa").await.unwrap().as_deref(),
        Some("required")
    );
    assert!(dir.set_mfa_policy("mfa", None).await.unwrap());
    assert_eq!(dir.mfa_policy("mfa").await.unwrap(), None);
    assert!(!dir.set_mfa_policy("nobody", Some("off")).await.unwrap());

    assert_eq!(dir.mfa("mfa").await.unwrap(), None);
    let record = MfaRecord {
        totp_secret: "sealed".into(),
        confirmed: false,
        last_step: 0,
        enrolled_at: 7,
    };
    dir.set_mfa("mfa", Some(&record)).await.unwrap();
    assert_eq!(dir.mfa("mfa").await.unwrap(), Some(record.clone()));
    let confirmed = MfaRecord {
        confirmed: true,
        last_step: 100,
        ..record
    };
    dir.set_mfa("mfa", Some(&confirmed)).await.unwrap();
    // Each step once, and never an earlier one.
    assert!(!dir.accept_totp_step("mfa", 100).await.unwrap());
    assert!(dir.accept_totp_step("mfa", 101).await.unwrap());
    assert!(!dir.accept_totp_step("mfa", 101).await.unwrap());
    assert!(!dir.accept_totp_step("mfa", 99).await.unwrap());
    assert_eq!(dir.mfa("mfa").await.unwrap().unwrap().last_step, 101);

    let codes: Vec<String> = (0..10).map(|i| format!("hash{i}")).collect();
    dir.set_recovery_codes("mfa", &codes).await.unwrap();
    assert_eq!(dir.recovery_codes_left("mfa").await.unwrap(), 10);
    assert!(dir.use_recovery_code("mfa", "hash3", 5).await.unwrap());
    assert!(
        !dir.use_recovery_code("mfa", "hash3", 6).await.unwrap(),
        "used once"
    );
    assert!(!dir.use_recovery_code("mfa", "nope", 6).await.unwrap());
    assert_eq!(dir.recovery_codes_left("mfa").await.unwrap(), 9);
    // Removing the enrolment removes the codes.
    dir.set_mfa("mfa", None).await.unwrap();
    assert_eq!(dir.mfa("mfa").await.unwrap(), None);
    assert_eq!(dir.recovery_codes_left("mfa").await.unwrap(), 0);
}

async fn app_passwords<D: Directory>(dir: &D) {
    let new = |label: &str, hash: &str| AppPassword {
        id: 0,
        user: "mfa".into(),
        label: label.into(),
        hash: hash.into(),
        created_at: 10,
        expires_at: Some(1_000),
        networks: Some("192.0.2.0/24".into()),
        read_only: true,
        last_used_at: None,
        last_used_from: None,
    };
    let a = dir.add_app_password(&new("phone", "h-a")).await.unwrap();
    let b = dir.add_app_password(&new("scanner", "h-b")).await.unwrap();
    assert_ne!(a, b);
    let found = dir.find_app_password("h-a").await.unwrap().unwrap();
    assert_eq!(
        found,
        AppPassword {
            id: a,
            ..new("phone", "h-a")
        }
    );
    assert_eq!(dir.find_app_password("h-x").await.unwrap(), None);
    dir.touch_app_password(b, 500, "192.0.2.9").await.unwrap();
    let listed = dir.list_app_passwords("mfa").await.unwrap();
    assert_eq!(listed.iter().map(|p| p.id).collect::<Vec<_>>(), vec![a, b]);
    assert_eq!(listed[1].last_used_at, Some(500));
    assert_eq!(listed[1].last_used_from.as_deref(), Some("192.0.2.9"));
    assert!(
        !dir.revoke_app_password("alice", a).await.unwrap(),
        "only the owner's"
    );
    assert!(dir.revoke_app_password("mfa", a).await.unwrap());
    assert_eq!(dir.find_app_password("h-a").await.unwrap(), None);
    assert!(dir.delete_user("mfa").await.unwrap());
    assert_eq!(
        dir.find_app_password("h-b").await.unwrap(),
        None,
        "deleted with the user"
    );
}

/// A made user's password is dated now; an imported one is marked imported with no
/// date, and stays so through a same-password upgrade until a new password is set.
async fn credential_dates<D: Directory>(dir: &D) {
    let dates = |name: &'static str| async move {
        dir.credential_dates()
            .await
            .unwrap()
            .into_iter()
            .find(|d| d.user == name)
    };
    dir.add_user(&sample_user("frank")).await.unwrap();
    let frank = dates("frank").await.unwrap();
    assert!(!frank.imported);
    let set = frank
        .password_set_at
        .clone()
        .expect("a new user's password is dated");
    assert!(set.ends_with('Z') && set.contains('T'), "{set}");
    assert!(frank.created_at.ends_with('Z'), "{}", frank.created_at);

    let mut grace = sample_user("grace");
    grace.password_hash = "{SHA512-CRYPT}$6$salt$legacy".to_owned();
    dir.import_user(&grace).await.unwrap();
    assert_eq!(dir.find_user("grace").await.unwrap(), Some(grace.clone()));
    let imported = dates("grace").await.unwrap();
    assert!(imported.imported);
    assert_eq!(imported.password_set_at, None);
    let err = dir.import_user(&grace).await.unwrap_err();
    assert!(matches!(err, DirectoryError::Exists), "{err:?}");

    // The hash upgraded at sign-in: the same password, still the imported one.
    let upgraded = "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$dXBncmFkZWQ";
    assert!(dir.set_credentials("grace", upgraded, None).await.unwrap());
    assert_eq!(dates("grace").await.unwrap(), imported);
    // A new password ends it.
    let scram = "SCRAM-SHA-256$4096:c2FsdA==$AAAA:BBBB";
    assert!(
        dir.change_password("grace", upgraded, Some(scram))
            .await
            .unwrap()
    );
    let changed = dates("grace").await.unwrap();
    assert!(!changed.imported);
    assert!(changed.password_set_at.is_some());
    let record = dir.find_user("grace").await.unwrap().unwrap();
    assert_eq!(
        (
            record.password_hash.as_str(),
            record.scram_sha256.as_deref()
        ),
        (upgraded, Some(scram))
    );
    assert!(!dir.change_password("nobody", upgraded, None).await.unwrap());

    // Every user is listed, in the order of list_users.
    let names: Vec<String> = dir
        .credential_dates()
        .await
        .unwrap()
        .into_iter()
        .map(|d| d.user)
        .collect();
    let users: Vec<String> = dir
        .list_users()
        .await
        .unwrap()
        .into_iter()
        .map(|u| u.name)
        .collect();
    assert_eq!(names, users);
}

/// The latest success per user over all its networks; users without one are absent.
async fn last_sign_ins<D: Directory>(dir: &D) {
    dir.record_success("frank", "192.0.2.7", "192.0.2.0/24", 50_000)
        .await
        .unwrap();
    dir.record_success("frank", "198.51.100.7", "198.51.100.0/24", 52_000)
        .await
        .unwrap();
    dir.record_success("frank", "192.0.2.8", "192.0.2.0/24", 51_000)
        .await
        .unwrap();
    let all = dir.last_sign_ins().await.unwrap();
    let names: Vec<&str> = all.iter().map(|s| s.user.as_str()).collect();
    let mut sorted = names.clone();
    sorted.sort_unstable();
    sorted.dedup();
    assert_eq!(names, sorted, "one row per user, ordered by name");
    let frank = all.iter().find(|s| s.user == "frank").unwrap();
    assert_eq!(frank.at, 52_000);
    assert!(!all.iter().any(|s| s.user == "grace"), "{all:?}");
    // A deleted user's history goes with it.
    assert!(dir.delete_user("frank").await.unwrap());
    assert!(
        !dir.last_sign_ins()
            .await
            .unwrap()
            .iter()
            .any(|s| s.user == "frank")
    );
}

/// The environment variable naming a PostgreSQL server the tests may create databases
/// on (`postgres://postgres@127.0.0.1:PORT/postgres`). `scripts/test` starts a private
/// cluster with `tests/peers/pg-cluster.sh` and sets it.
pub const PG_URL_VAR: &str = "POPLAR_TEST_PG_URL";

/// A new, empty database on the test PostgreSQL server, as a URL.
///
/// Without [`PG_URL_VAR`] the PostgreSQL tests cannot run: under `CI=true` that is a
/// failure (this panics), elsewhere they are skipped (`None`, saying why on stderr).
pub async fn postgres_test_database() -> Option<String> {
    use sqlx::Connection as _;
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);

    let Ok(server) = std::env::var(PG_URL_VAR) else {
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!("{PG_URL_VAR} is not set under CI=true: the PostgreSQL tests must run");
        }
        eprintln!(
            "skipped: {PG_URL_VAR} is not set (scripts/test starts a private PostgreSQL \
             cluster and sets it)"
        );
        return None;
    };
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let name = format!(
        "poplar_t_{}_{}_{}",
        std::process::id(),
        nanos,
        NEXT.fetch_add(1, Ordering::Relaxed)
    );
    let mut conn = sqlx::PgConnection::connect(&server)
        .await
        .unwrap_or_else(|e| panic!("cannot reach the test PostgreSQL at {server}: {e}"));
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "CREATE DATABASE {name} TEMPLATE template0 ENCODING 'UTF8' LC_COLLATE 'C' LC_CTYPE 'C'"
    )))
    .execute(&mut conn)
    .await
    .expect("create the test database");
    let _ = conn.close().await;
    let (base, query) = match server.split_once('?') {
        Some((b, q)) => (b, format!("?{q}")),
        None => (server.as_str(), String::new()),
    };
    let (root, _db) = base
        .rsplit_once('/')
        .filter(|(root, _)| root.contains("//") && !root.ends_with('/'))
        .unwrap_or((base, ""));
    Some(format!("{root}/{name}{query}"))
}
