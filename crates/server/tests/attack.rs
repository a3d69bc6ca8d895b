//! An attack simulation against the real server on loopback, with a manual clock:
//! a brute force from one address, a spray from 200 addresses over 50 accounts, and
//! the real user signing in from a familiar address throughout. Every source address
//! is a distinct 127.0.0.0/8 address (Linux routes the whole block to loopback), and
//! time only moves when the test moves it, so nothing depends on the machine's speed.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use auth::defence::ManualClock;
use directory::Directory as _;
use server::{Dir, Server};
use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::net::TcpSocket;
use tokio_util::sync::CancellationToken;

mod common;

const START: i64 = 1_800_000_000_000;
const REAL_USER_ADDR: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 2);
const BRUTE_FORCER: Ipv4Addr = Ipv4Addr::new(127, 2, 0, 1);

struct Target {
    addr: SocketAddr,
    clock: ManualClock,
    dir: Arc<Dir>,
    shutdown: CancellationToken,
    _tmp: tempfile::TempDir,
}

async fn start(users: &[(&str, &str)]) -> Target {
    let tmp = tempfile::tempdir().unwrap();
    let mut config = common::loopback_config(&tmp);
    config.limits.max_connections_per_address = 1000;
    let (dir, _) = common::directory_with(&config, users).await;
    let clock = ManualClock::new(START);
    let server = Server::bind_with_clock(config, dir.clone(), Arc::new(clock.clone()))
        .await
        .unwrap();
    let (addr, shutdown) = common::run(server);
    Target {
        addr,
        clock,
        dir,
        shutdown,
        _tmp: tmp,
    }
}

/// What a sign-in attempt saw.
#[derive(Debug, PartialEq, Eq)]
enum Seen {
    /// Signed in.
    Ok,
    /// `-ERR [AUTH]` after PASS.
    AuthFailed,
    /// Refused at the greeting (banned address).
    RefusedAtConnect(String),
}

/// USER/PASS/QUIT from `from`, with a plain tokio socket bound to that address.
async fn sign_in(t: &Target, from: Ipv4Addr, user: &str, password: &str) -> Seen {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::new(IpAddr::V4(from), 0)).unwrap();
    let stream = socket.connect(t.addr).await.unwrap();
    let (read, mut write) = stream.into_split();
    let mut read = BufReader::new(read);
    let mut line = String::new();
    read.read_line(&mut line).await.unwrap();
    if !line.starts_with("+OK") {
        return Seen::RefusedAtConnect(line);
    }
    write
        .write_all(format!("USER {user}\r\nPASS {password}\r\n").as_bytes())
        .await
        .unwrap();
    line.clear();
    read.read_line(&mut line).await.unwrap();
    assert!(line.starts_with("+OK"), "USER: {line}");
    line.clear();
    read.read_line(&mut line).await.unwrap();
    let seen = if line.starts_with("+OK") {
        Seen::Ok
    } else {
        assert_eq!(line, "-ERR [AUTH] invalid user name or password\r\n");
        Seen::AuthFailed
    };
    write.write_all(b"QUIT\r\n").await.unwrap();
    line.clear();
    let _ = read.read_line(&mut line).await;
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn brute_force_spray_and_the_real_user() {
    let mut users: Vec<(String, String)> = (0..50)
        .map(|i| (format!("user{i:02}"), format!("secret of user {i}")))
        .collect();
    users[0] = ("alice".into(), "alice's long passphrase".into());
    let refs: Vec<(&str, &str)> = users
        .iter()
        .map(|(u, p)| (u.as_str(), p.as_str()))
        .collect();
    let t = start(&refs).await;
    let real = || sign_in(&t, REAL_USER_ADDR, "alice", "alice's long passphrase");

    // The real user signs in from home: the network becomes familiar.
    assert_eq!(real().await, Seen::Ok);

    // Brute force on alice from one address.
    for i in 0..3 {
        assert_eq!(
            sign_in(&t, BRUTE_FORCER, "alice", &format!("guess{i}")).await,
            Seen::AuthFailed
        );
    }
    assert_eq!(
        sign_in(&t, BRUTE_FORCER, "alice", "guess3").await,
        Seen::AuthFailed
    );
    // Throttled now: even the right password is refused without being checked.
    assert_eq!(
        sign_in(&t, BRUTE_FORCER, "alice", "alice's long passphrase").await,
        Seen::AuthFailed
    );
    assert_eq!(real().await, Seen::Ok, "the real user is not throttled");
    let state = t.dir.lockout_state(t.clock_now(), 0).await.unwrap();
    let counted = state
        .sources
        .iter()
        .find(|s| s.user == "alice")
        .unwrap()
        .failures;
    assert_eq!(counted, 4, "refused attempts are not counted or checked");

    // The attacker waits out each delay and keeps guessing; the waits grow.
    let mut waited = Duration::ZERO;
    let mut wait = Duration::from_secs(2);
    for i in 4..60 {
        t.clock.advance(wait);
        waited += wait;
        assert_eq!(
            sign_in(&t, BRUTE_FORCER, "alice", &format!("guess{i}")).await,
            Seen::AuthFailed
        );
        wait = (wait * 2).min(Duration::from_secs(900));
        if i % 10 == 0 {
            assert_eq!(real().await, Seen::Ok, "the real user is never refused");
        }
    }
    assert!(
        waited > Duration::from_secs(10 * 3600),
        "guessing was slowed: {waited:?}"
    );
    // By now the account is locked for unfamiliar networks (50 failures): the right
    // password is refused from the attacker's address even after the throttle wait ...
    t.clock.advance(Duration::from_secs(900));
    assert_eq!(
        sign_in(&t, BRUTE_FORCER, "alice", "alice's long passphrase").await,
        Seen::AuthFailed
    );
    assert_eq!(
        sign_in(
            &t,
            Ipv4Addr::new(127, 3, 0, 1),
            "alice",
            "alice's long passphrase"
        )
        .await,
        Seen::AuthFailed
    );
    // ... and from the familiar network it works.
    assert_eq!(real().await, Seen::Ok);

    // A spray from 200 addresses, each trying a common password on 12 accounts.
    let sprayers: Vec<Ipv4Addr> = (1..=200)
        .map(|i| Ipv4Addr::new(127, 1, (i / 250) as u8, (i % 250) as u8 + 1))
        .collect();
    let mut refused_at_connect = 0;
    for (n, addr) in sprayers.iter().enumerate() {
        for k in 0..12 {
            // alice is locked for unfamiliar networks by now: attempts on her are refused
            // unchecked and not counted, so the spray goes over the other 49.
            let (user, _) = &users[1 + (n * 7 + k) % 49];
            match sign_in(&t, *addr, user, "Summer2024!").await {
                Seen::AuthFailed => assert!(k < 10, "{addr} got attempt {k} through"),
                Seen::RefusedAtConnect(line) => {
                    assert!(k >= 10, "{addr} refused after only {k} accounts");
                    assert!(line.starts_with("-ERR [SYS/TEMP]"), "{line}");
                    refused_at_connect += 1;
                }
                Seen::Ok => panic!("a spray got in"),
            }
        }
        if n % 20 == 0 {
            assert_eq!(real().await, Seen::Ok, "the real user is never refused");
        }
    }
    assert_eq!(
        refused_at_connect,
        200 * 2,
        "every sprayer banned after 10 accounts"
    );
    let state = t.dir.lockout_state(t.clock_now(), 0).await.unwrap();
    assert_eq!(state.bans.len(), 200);
    assert!(state.bans.iter().all(|b| b.accounts == 10));
    assert_eq!(real().await, Seen::Ok);

    // Bans end after ban_minutes; the real user never noticed any of it.
    t.clock.advance(Duration::from_secs(3600));
    assert_eq!(
        sign_in(&t, sprayers[0], "user01", "secret of user 1").await,
        Seen::Ok
    );
    t.shutdown.cancel();
}

impl Target {
    fn clock_now(&self) -> i64 {
        use auth::defence::Clock as _;
        self.clock.now()
    }
}
