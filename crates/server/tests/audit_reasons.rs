//! Every private failure reason, produced through the real server on loopback and read
//! back from the audit log. The `match` over `auth::Reason` has no wildcard: a new
//! reason that this test does not produce fails to compile.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use auth::Reason;
use base64::Engine as _;
use directory::Directory as _;
use server::Server;
use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::net::TcpSocket;
use tokio_util::sync::CancellationToken;

mod common;

const PW: &str = "the right password";

struct Target {
    addr: SocketAddr,
    expired_app_password: String,
    audit: std::path::PathBuf,
    shutdown: CancellationToken,
    _tmp: tempfile::TempDir,
}

async fn start() -> Target {
    let tmp = tempfile::tempdir().unwrap();
    let mut config = common::loopback_config(&tmp);
    config.apop.enabled = true;
    config.defence.lockout_threshold = 2;
    config.defence.ban_accounts = 2;
    config.mfa.password_with_code = true;
    let users = ["alice", "bob", "dis", "lock", "net", "nat", "mfa", "app"].map(|u| (u, PW));
    let (dir, auth) = common::directory_with(&config, &users).await;
    dir.set_enabled("dis", false).await.unwrap();
    dir.set_allowed_networks("net", Some("10.0.0.0/8"))
        .await
        .unwrap();
    auth.set_mfa_policy("mfa", Some(auth::MfaPolicy::Required))
        .await
        .unwrap();
    let (_, expired) = auth
        .create_app_password("app", "old phone", Some(1), None, false)
        .await
        .unwrap();
    let audit = config.data_dir.join("audit.log");
    let (addr, shutdown) = common::run(Server::bind(config, dir).await.unwrap());
    Target {
        addr,
        audit,
        expired_app_password: expired.to_string(),
        shutdown,
        _tmp: tmp,
    }
}

/// Sends `lines` after the greeting from `from`; returns every reply line.
async fn talk(t: &Target, from: Ipv4Addr, lines: &[String]) -> Vec<String> {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::new(IpAddr::V4(from), 0)).unwrap();
    let stream = socket.connect(t.addr).await.unwrap();
    let (read, mut write) = stream.into_split();
    let mut read = BufReader::new(read);
    let mut greeting = String::new();
    read.read_line(&mut greeting).await.unwrap();
    assert!(greeting.starts_with("+OK"), "{greeting}");
    let mut replies = Vec::new();
    for line in lines {
        write
            .write_all(format!("{line}\r\n").as_bytes())
            .await
            .unwrap();
        let mut reply = String::new();
        read.read_line(&mut reply).await.unwrap();
        replies.push(reply);
    }
    write.write_all(b"QUIT\r\n").await.unwrap();
    replies
}

fn user_pass(user: &str, pw: &str) -> Vec<String> {
    vec![format!("USER {user}"), format!("PASS {pw}")]
}

/// How to make the server fail a sign-in for `reason`: set-up exchanges, then the one
/// whose audit line is checked (user as given, mechanism, source).
struct Plan {
    setup: Vec<(Ipv4Addr, Vec<String>)>,
    attempt: (Ipv4Addr, Vec<String>),
    user: &'static str,
    mechanism: &'static str,
}

/// `None`: a bearer-token reason. Those need TLS and a real issuer; tests/test_oauth.py
/// produces each of them against a real OpenID provider and reads its audit line.
fn plan(t: &Target, reason: Reason, n: u8) -> Option<Plan> {
    let from = Ipv4Addr::new(127, 10, n, 1);
    let simple = |user: &'static str, pw: &str| Plan {
        setup: vec![],
        attempt: (from, user_pass(user, pw)),
        user,
        mechanism: "USER",
    };
    Some(match reason {
        Reason::TokenMalformed
        | Reason::TokenAlgorithm
        | Reason::TokenSignature
        | Reason::TokenUnknownKey
        | Reason::TokenExpired
        | Reason::TokenNotYetValid
        | Reason::TokenIssuer
        | Reason::TokenAudience
        | Reason::TokenScope
        | Reason::TokenInactive
        | Reason::TokenNoUser
        | Reason::TokenUserMismatch => return None,
        // A full hashing queue for unfamiliar networks: tests/test_signin_race.py fills
        // it with a spray from many addresses and reads the audit log.
        Reason::Busy => return None,
        Reason::BadInput => simple(".hidden", PW),
        Reason::UnknownUser => simple("nobody", PW),
        Reason::BadPassword => simple("alice", "wrong"),
        Reason::Disabled => simple("dis", PW),
        Reason::IpDenied => simple("net", PW),
        Reason::MfaRequired => simple("mfa", PW),
        Reason::BadSecondFactor => simple("mfa", &format!("{PW}000000")),
        Reason::AppPasswordExpired => simple("app", &t.expired_app_password),
        Reason::AuthzidMismatch => {
            // bob, asking to act as alice; counted as bob's failure (alice already has
            // one from an unfamiliar network, and two would lock her here).
            let ir = base64::engine::general_purpose::STANDARD.encode(format!("alice\0bob\0{PW}"));
            Plan {
                setup: vec![],
                attempt: (from, vec![format!("AUTH PLAIN {ir}")]),
                user: "bob",
                mechanism: "PLAIN",
            }
        }
        Reason::NoApopSecret => Plan {
            setup: vec![],
            attempt: (from, vec![format!("APOP alice {}", "0".repeat(32))]),
            user: "alice",
            mechanism: "APOP",
        },
        Reason::Throttled => Plan {
            // From a network bob signed in from, so the failures throttle this address
            // without locking the account (lockout_threshold is 2 here).
            setup: std::iter::once((from, user_pass("bob", PW)))
                .chain((0..4).map(|i| (from, user_pass("bob", &format!("guess{i}")))))
                .collect(),
            attempt: (from, user_pass("bob", PW)),
            user: "bob",
            mechanism: "USER",
        },
        Reason::Locked => Plan {
            setup: (0..2)
                .map(|i| (Ipv4Addr::new(127, 11, i, 1), user_pass("lock", "guess")))
                .collect(),
            attempt: (from, user_pass("lock", PW)),
            user: "lock",
            mechanism: "USER",
        },
        Reason::Banned => {
            // nat signs in from 127.12.0.0/24; another address there sprays two names
            // and is banned, but still served (a shared NAT) except for accounts it
            // is not familiar to.
            let nat = Ipv4Addr::new(127, 12, 0, 2);
            Plan {
                setup: vec![
                    (Ipv4Addr::new(127, 12, 0, 1), user_pass("nat", PW)),
                    (nat, user_pass("ghost1", "x")),
                    (nat, user_pass("ghost2", "x")),
                ],
                attempt: (nat, user_pass("alice", PW)),
                user: "alice",
                mechanism: "USER",
            }
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_failure_reason_reaches_the_audit_log() {
    let t = start().await;
    for (n, reason) in Reason::ALL.into_iter().enumerate() {
        let Some(p) = plan(&t, reason, n as u8) else {
            continue;
        };
        for (from, lines) in &p.setup {
            talk(&t, *from, lines).await;
        }
        let replies = talk(&t, p.attempt.0, &p.attempt.1).await;
        assert_eq!(
            replies.last().unwrap(),
            "-ERR [AUTH] invalid user name or password\r\n",
            "{reason:?}"
        );
        // The line is written before the client hears the answer; the writer thread
        // may still be on its way to the disk.
        let line = wait_for_line(&t, reason.as_str()).await;
        let src = p.attempt.0.to_string();
        assert_eq!(line["event"], "auth", "{reason:?}");
        assert_eq!(line["result"], "failure", "{reason:?}");
        assert_eq!(line["user"], p.user, "{reason:?}");
        assert_eq!(line["mechanism"], p.mechanism, "{reason:?}");
        assert_eq!(line["src_ip"], src.as_str(), "{reason:?}");
        assert_eq!(line["listener"], "pop3", "{reason:?}");
        assert!(line.get("user_resolved").is_none(), "{reason:?}");
        assert!(line["session"].as_str().is_some_and(|s| !s.is_empty()));
    }
    let text = std::fs::read_to_string(&t.audit).unwrap();
    assert!(!text.contains(PW), "a password reached the audit log");
    t.shutdown.cancel();
}

async fn wait_for_line(t: &Target, reason: &str) -> serde_json::Value {
    for _ in 0..100 {
        if let Ok(text) = std::fs::read_to_string(&t.audit) {
            let found = text
                .lines()
                .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
                .find(|v| v["reason"] == reason && v["event"] == "auth");
            if let Some(v) = found {
                return v;
            }
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    panic!(
        "no audit line with reason {reason}:\n{}",
        std::fs::read_to_string(&t.audit).unwrap_or_default()
    );
}
