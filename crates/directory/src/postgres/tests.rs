use std::sync::Arc;

use super::*;
use crate::testing::{conformance, postgres_test_database, sample_user};

async fn fresh() -> Option<PgDirectory> {
    let url = postgres_test_database().await?;
    Some(PgDirectory::connect(&url).await.unwrap())
}

#[tokio::test]
async fn postgres_passes_the_conformance_suite() {
    let Some(db) = fresh().await else { return };
    conformance(&db).await;
    db.close().await;
}

#[tokio::test]
async fn migrations_are_a_no_op_the_second_time() {
    let Some(url) = postgres_test_database().await else {
        return;
    };
    let (a, b) = tokio::join!(PgDirectory::connect(&url), PgDirectory::connect(&url));
    let (a, b) = (a.unwrap(), b.unwrap());
    a.add_user(&sample_user("alice")).await.unwrap();
    a.close().await;
    let again = PgDirectory::connect(&url).await.unwrap();
    assert_eq!(
        again.find_user("alice").await.unwrap(),
        Some(sample_user("alice"))
    );
    assert!(b.find_user("alice").await.unwrap().is_some());
}

fn failure<'a>(user: &'a str, source: &'a str, attempt: Option<&'a str>) -> FailureRecord<'a> {
    FailureRecord {
        user,
        source,
        attempt,
        unfamiliar: true,
        now: 1_000_000,
        forget_before: 0,
        remember: 3,
        spray_since: 0,
        reserved: false,
    }
}

/// Two nodes (here: two pools, many tasks) recording failures for one account at the
/// same moment: every failure is counted, none is lost to a read-modify-write race.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_failures_are_all_counted() {
    let Some(url) = postgres_test_database().await else {
        return;
    };
    let a = Arc::new(PgDirectory::connect(&url).await.unwrap());
    let b = Arc::new(PgDirectory::connect(&url).await.unwrap());
    a.add_user(&sample_user("victim")).await.unwrap();
    const EACH: usize = 25;
    let mut tasks = Vec::new();
    for (node, dir) in [a.clone(), b.clone()].into_iter().enumerate() {
        for i in 0..EACH {
            let dir = dir.clone();
            tasks.push(tokio::spawn(async move {
                // Distinct wrong secrets, so none is a "repeat"; one source per node.
                let attempt = format!("wrong-{node}-{i}");
                let source = format!("192.0.2.{node}");
                dir.record_failure(&failure("victim", &source, Some(&attempt)))
                    .await
                    .unwrap()
            }));
        }
    }
    let mut seen = Vec::new();
    for task in tasks {
        let counts = task.await.unwrap();
        assert!(!counts.repeated);
        seen.push(counts.account_failures);
    }
    // Each recording saw a distinct account count: 1..=2*EACH, each exactly once.
    seen.sort_unstable();
    let expected: Vec<u32> = (1..=u32::try_from(2 * EACH).unwrap()).collect();
    assert_eq!(seen, expected);
    let state = a.lockout_state(1_000_000, 0).await.unwrap();
    assert_eq!(state.accounts.len(), 1);
    assert_eq!(state.accounts[0].failures, u32::try_from(2 * EACH).unwrap());
    let per_source: u32 = state.sources.iter().map(|s| s.failures).sum();
    assert_eq!(per_source, u32::try_from(2 * EACH).unwrap());
}

/// The same wrong secret sent at once from two nodes counts once; recent secrets are
/// remembered up to `remember`, oldest forgotten first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_secret_counts_once_even_concurrently() {
    let Some(db) = fresh().await else { return };
    let db = Arc::new(db);
    let mut tasks = Vec::new();
    for _ in 0..10 {
        let db = db.clone();
        tasks.push(tokio::spawn(async move {
            db.record_failure(&failure("u", "198.51.100.1", Some("same")))
                .await
                .unwrap()
        }));
    }
    let mut counted = 0;
    for task in tasks {
        let c = task.await.unwrap();
        assert_eq!(c.failures, 1);
        if !c.repeated {
            counted += 1;
        }
    }
    assert_eq!(counted, 1);
    for attempt in ["b", "c", "d"] {
        let c = db
            .record_failure(&failure("u", "198.51.100.1", Some(attempt)))
            .await
            .unwrap();
        assert!(!c.repeated);
    }
    // "same" fell out of the three remembered ("b c d"): it counts again.
    let c = db
        .record_failure(&failure("u", "198.51.100.1", Some("same")))
        .await
        .unwrap();
    assert!(!c.repeated);
    assert_eq!(c.failures, 5);
    let c = db
        .record_failure(&failure("u", "198.51.100.1", Some("c")))
        .await
        .unwrap();
    assert!(c.repeated);
}

/// TOTP steps and recovery codes are accepted once, even when two nodes race.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_time_codes_are_used_once_concurrently() {
    let Some(db) = fresh().await else { return };
    let db = Arc::new(db);
    db.add_user(&sample_user("m")).await.unwrap();
    db.set_mfa(
        "m",
        Some(&MfaRecord {
            totp_secret: "sealed".into(),
            confirmed: true,
            last_step: 0,
            enrolled_at: 1,
        }),
    )
    .await
    .unwrap();
    db.set_recovery_codes("m", &["code".to_owned()])
        .await
        .unwrap();
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let db = db.clone();
        tasks.push(tokio::spawn(async move {
            (
                db.accept_totp_step("m", 42).await.unwrap(),
                db.use_recovery_code("m", "code", 5).await.unwrap(),
            )
        }));
    }
    let (mut steps, mut codes) = (0, 0);
    for task in tasks {
        let (s, c) = task.await.unwrap();
        steps += usize::from(s);
        codes += usize::from(c);
    }
    assert_eq!((steps, codes), (1, 1));
}
