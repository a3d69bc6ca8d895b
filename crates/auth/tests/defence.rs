//! The sign-in defence against a real SQLite directory, on a manual clock: nothing here
//! sleeps, and nothing depends on how fast the machine is.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use auth::defence::{LockoutPolicy, ManualClock};
use auth::{Argon2Params, AuthFailure, Authenticator, Reason, UsernamePolicy};
use directory::{Directory, SqliteDirectory};

const SMALL: Argon2Params = Argon2Params {
    memory_kib: 1024,
    iterations: 1,
    parallelism: 1,
};
const START: i64 = 1_800_000_000_000;

struct Fixture {
    auth: Authenticator<SqliteDirectory>,
    dir: Arc<SqliteDirectory>,
    clock: ManualClock,
    _tmp: tempfile::TempDir,
}

async fn fixture(policy: LockoutPolicy) -> Fixture {
    let tmp = tempfile::tempdir().unwrap();
    let dir = Arc::new(
        SqliteDirectory::open(&tmp.path().join("poplar.db"))
            .await
            .unwrap(),
    );
    let clock = ManualClock::new(START);
    let auth = Authenticator::new(dir.clone(), UsernamePolicy::default(), SMALL, 2)
        .unwrap()
        .with_scram(4096, b"scram secret".to_vec())
        .with_defence(policy, Arc::new(clock.clone()), b"server key");
    for user in ["alice", "bob"] {
        auth.add_user(user, b"right password", format!("/m/{user}"))
            .await
            .unwrap();
    }
    Fixture {
        auth,
        dir,
        clock,
        _tmp: tmp,
    }
}

fn ip(text: &str) -> IpAddr {
    text.parse().unwrap()
}

fn reason(r: Result<auth::Identity, AuthFailure>) -> Option<Reason> {
    match r {
        Ok(_) => None,
        Err(AuthFailure::Rejected(reason)) => Some(reason),
        Err(other) => panic!("unexpected {other:?}"),
    }
}

impl Fixture {
    async fn try_pw(&self, user: &str, pw: &str, from: &str) -> Option<Reason> {
        reason(
            self.auth
                .verify_password(user, pw.as_bytes(), ip(from))
                .await,
        )
    }
}

#[tokio::test]
async fn throttling_grows_and_refuses_without_checking() {
    let f = fixture(LockoutPolicy::default()).await;
    let a = "198.51.100.1";
    for i in 0..3 {
        assert_eq!(
            f.try_pw("alice", &format!("guess {i}"), a).await,
            Some(Reason::BadPassword)
        );
    }
    // The 4th failure starts a 2 s wait ...
    assert_eq!(
        f.try_pw("alice", "guess 3", a).await,
        Some(Reason::BadPassword)
    );
    // ... during which even the right password is refused unchecked.
    assert_eq!(
        f.try_pw("alice", "right password", a).await,
        Some(Reason::Throttled)
    );
    // Another source, or another user from this source, is not affected.
    assert_eq!(
        f.try_pw("alice", "right password", "198.51.100.2").await,
        None
    );
    assert_eq!(f.try_pw("bob", "right password", a).await, None);
    f.clock.advance(Duration::from_millis(1999));
    assert_eq!(
        f.try_pw("alice", "right password", a).await,
        Some(Reason::Throttled)
    );
    f.clock.advance(Duration::from_millis(1));
    assert_eq!(
        f.try_pw("alice", "guess 4", a).await,
        Some(Reason::BadPassword)
    );
    // The wait doubles: 4 s now.
    f.clock.advance(Duration::from_secs(3));
    assert_eq!(
        f.try_pw("alice", "right password", a).await,
        Some(Reason::Throttled)
    );
    f.clock.advance(Duration::from_secs(1));
    assert_eq!(f.try_pw("alice", "right password", a).await, None);
    // A success forgets the count.
    for i in 0..3 {
        assert_eq!(
            f.try_pw("alice", &format!("again {i}"), a).await,
            Some(Reason::BadPassword)
        );
    }
    assert_eq!(f.try_pw("alice", "right password", a).await, None);
}

#[tokio::test]
async fn ipv6_sources_are_grouped_by_64() {
    let f = fixture(LockoutPolicy::default()).await;
    for i in 0..4 {
        let from = format!("2001:db8:1:2::{}", i + 1);
        assert_eq!(
            f.try_pw("alice", &format!("guess {i}"), &from).await,
            Some(Reason::BadPassword)
        );
    }
    assert_eq!(
        f.try_pw("alice", "right password", "2001:db8:1:2:ffff::9")
            .await,
        Some(Reason::Throttled)
    );
    assert_eq!(
        f.try_pw("alice", "right password", "2001:db8:1:3::1").await,
        None
    );
}

#[tokio::test]
async fn a_stale_password_retried_counts_once() {
    let f = fixture(LockoutPolicy::default()).await;
    let phone = "198.51.100.20";
    // A phone polls every 5 minutes with the password from before a change.
    for _ in 0..40 {
        assert_eq!(
            f.try_pw("alice", "old password", phone).await,
            Some(Reason::BadPassword)
        );
        f.clock.advance(Duration::from_secs(300));
    }
    // It was never throttled, and the account is not locked.
    assert_eq!(f.try_pw("alice", "right password", phone).await, None);
    // A guesser trying different passwords is throttled after three.
    let guesser = "203.0.113.20";
    for i in 0..4 {
        assert_eq!(
            f.try_pw("alice", &format!("guess {i}"), guesser).await,
            Some(Reason::BadPassword)
        );
    }
    assert_eq!(
        f.try_pw("alice", "guess 9", guesser).await,
        Some(Reason::Throttled)
    );
}

#[tokio::test]
async fn smart_lockout_keeps_familiar_networks_in() {
    let policy = LockoutPolicy {
        lockout_threshold: 10,
        ..LockoutPolicy::default()
    };
    let f = fixture(policy.clone()).await;
    let home = "192.0.2.10";
    assert_eq!(f.try_pw("alice", "right password", home).await, None);
    // Ten failures from ten unfamiliar addresses (each below its throttle).
    for i in 0..10 {
        let from = format!("203.0.{i}.7");
        assert_eq!(
            f.try_pw("alice", &format!("guess {i}"), &from).await,
            Some(Reason::BadPassword)
        );
    }
    // Unfamiliar networks are locked out, even with the right password ...
    assert_eq!(
        f.try_pw("alice", "right password", "203.0.50.7").await,
        Some(Reason::Locked)
    );
    // ... the user's own network is not, nor another address in its /24.
    assert_eq!(f.try_pw("alice", "right password", home).await, None);
    assert_eq!(
        f.try_pw("alice", "right password", "192.0.2.99").await,
        None
    );
    // Those successes do not lift the lock for unfamiliar networks.
    assert_eq!(
        f.try_pw("alice", "right password", "203.0.50.7").await,
        Some(Reason::Locked)
    );

    // Locks survive a restart: a new authenticator over the same database.
    for i in 0..10 {
        let from = format!("203.1.{i}.7");
        f.try_pw("bob", &format!("guess {i}"), &from).await;
    }
    let again = Authenticator::new(f.dir.clone(), UsernamePolicy::default(), SMALL, 1)
        .unwrap()
        .with_defence(policy.clone(), Arc::new(f.clock.clone()), b"server key");
    assert_eq!(
        reason(
            again
                .verify_password("bob", b"right password", ip("203.1.50.7"))
                .await
        ),
        Some(Reason::Locked)
    );
    // It ends `lockout_for` after the last failure.
    f.clock.advance(policy.lockout_for);
    assert_eq!(
        reason(
            again
                .verify_password("bob", b"right password", ip("203.1.50.7"))
                .await
        ),
        None
    );
}

#[tokio::test]
async fn spraying_gets_the_source_banned_but_a_shared_nat_keeps_its_users() {
    let f = fixture(LockoutPolicy::default()).await;
    let nat = "198.51.100.77";
    // alice signs in from behind the NAT (another address in its /24).
    assert_eq!(
        f.try_pw("alice", "right password", "198.51.100.5").await,
        None
    );
    let sprayer = "203.0.113.66";
    for i in 0..10 {
        assert_eq!(
            f.try_pw(&format!("user{i}"), "Summer2024!", sprayer).await,
            Some(Reason::UnknownUser)
        );
    }
    let guard = f.auth.guard();
    assert!(!guard.connection_allowed(ip(sprayer)).await);
    assert_eq!(
        f.try_pw("bob", "right password", sprayer).await,
        Some(Reason::Banned)
    );
    // The same spray from the NAT bans it too, but the connection is still served ...
    for i in 0..10 {
        f.try_pw(&format!("other{i}"), "Summer2024!", nat).await;
    }
    assert!(guard.connection_allowed(ip(nat)).await);
    // ... for the accounts it is familiar to only.
    assert_eq!(f.try_pw("alice", "right password", nat).await, None);
    assert_eq!(
        f.try_pw("bob", "right password", nat).await,
        Some(Reason::Banned)
    );
    // The ban ends.
    f.clock.advance(guard.policy().ban_for);
    assert!(guard.connection_allowed(ip(sprayer)).await);
    assert_eq!(f.try_pw("bob", "right password", sprayer).await, None);
}

#[tokio::test]
async fn per_user_networks() {
    let f = fixture(LockoutPolicy::default()).await;
    f.dir
        .set_allowed_networks("alice", Some("192.0.2.0/24"))
        .await
        .unwrap();
    assert_eq!(f.try_pw("alice", "right password", "192.0.2.1").await, None);
    assert_eq!(
        f.try_pw("alice", "right password", "198.51.100.1").await,
        Some(Reason::IpDenied)
    );
    assert_eq!(
        f.try_pw("alice", "wrong", "198.51.100.1").await,
        Some(Reason::BadPassword)
    );
}

#[tokio::test]
async fn login_delay() {
    let f = fixture(LockoutPolicy {
        login_delay: Duration::from_secs(60),
        ..LockoutPolicy::default()
    })
    .await;
    let a = ip("192.0.2.1");
    assert!(
        f.auth
            .verify_password("alice", b"right password", a)
            .await
            .is_ok()
    );
    f.clock.advance(Duration::from_secs(59));
    assert_eq!(
        f.auth.verify_password("alice", b"right password", a).await,
        Err(AuthFailure::LoginDelay)
    );
    // A wrong password is a plain failure, never a LOGIN-DELAY.
    assert_eq!(
        f.try_pw("alice", "wrong", "192.0.2.1").await,
        Some(Reason::BadPassword)
    );
    f.clock.advance(Duration::from_secs(1));
    assert!(
        f.auth
            .verify_password("alice", b"right password", a)
            .await
            .is_ok()
    );
}

#[tokio::test]
async fn scram_is_gated_and_counted_like_passwords() {
    let f = fixture(LockoutPolicy::default()).await;
    let a = ip("198.51.100.9");
    for _ in 0..4 {
        let lookup = f.auth.scram_lookup("alice", a).await.unwrap();
        assert_eq!(
            reason(f.auth.scram_confirm(lookup, None, false).await),
            Some(Reason::BadPassword)
        );
    }
    // Throttled: the lookup still answers (fake keys), and the proof cannot succeed.
    let lookup = f.auth.scram_lookup("alice", a).await.unwrap();
    assert_eq!(
        reason(f.auth.scram_confirm(lookup, None, true).await),
        Some(Reason::Throttled)
    );
}

#[tokio::test]
async fn new_networks_are_reported_once_and_never_on_the_first_sign_in() {
    let f = fixture(LockoutPolicy::default()).await;
    let new = |from: &'static str| {
        let auth = &f.auth;
        async move {
            auth.verify_password("alice", b"right password", ip(from))
                .await
                .unwrap()
                .new_network
        }
    };
    assert!(
        !new("192.0.2.1").await,
        "the first sign-in has nothing to compare with"
    );
    assert!(!new("192.0.2.2").await, "same /24");
    assert!(
        new("198.51.100.1").await,
        "a network never seen for this account"
    );
    assert!(!new("198.51.100.1").await, "now familiar");
    assert!(new("2001:db8::1").await);
}

#[tokio::test]
async fn an_app_passwords_last_use_is_kept_to_the_minute() {
    let f = fixture(LockoutPolicy::default()).await;
    let (id, pw) = f
        .auth
        .create_app_password("alice", "phone", None, None, false)
        .await
        .unwrap();
    let last = |dir: Arc<SqliteDirectory>| async move {
        let apps = dir.list_app_passwords("alice").await.unwrap();
        let app = apps.into_iter().find(|a| a.id == id).unwrap();
        (app.last_used_at, app.last_used_from)
    };
    assert_eq!(f.try_pw("alice", &pw, "192.0.2.1").await, None);
    assert_eq!(
        last(f.dir.clone()).await,
        (Some(START), Some("192.0.2.1".into()))
    );
    // A poll half a minute later from the same address writes nothing ...
    f.clock.advance(Duration::from_secs(30));
    assert_eq!(f.try_pw("alice", &pw, "192.0.2.1").await, None);
    assert_eq!(last(f.dir.clone()).await.0, Some(START));
    // ... one from another address does, and so does one after a minute.
    assert_eq!(f.try_pw("alice", &pw, "198.51.100.7").await, None);
    assert_eq!(
        last(f.dir.clone()).await,
        (Some(START + 30_000), Some("198.51.100.7".into()))
    );
    f.clock.advance(Duration::from_secs(61));
    assert_eq!(f.try_pw("alice", &pw, "198.51.100.7").await, None);
    assert_eq!(last(f.dir.clone()).await.0, Some(START + 91_000));
}
