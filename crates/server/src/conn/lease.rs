//! Maildrop exclusivity across nodes: when the directory is PostgreSQL (several nodes
//! serving one Maildir tree on shared storage), a session holds a lease on its maildrop
//! in the directory besides the local lock file. The lease names its owner (this node's
//! random id and the session id) and expires `directory.maildrop_lease_secs` after its
//! last renewal on the database's clock; the session renews it every third of that.
//! A node that dies stops renewing, and the maildrop is free once the lease expires.
//! A session that finds its lease gone (taken after it expired, say while the database
//! was unreachable) is ended, so two sessions never serve one maildrop. It also keeps a
//! local deadline (the last confirmed renewal plus the lease time, less a margin): a
//! session that cannot renew (the database is slow or unreachable) is ended once that
//! deadline passes, without waiting to hear from the database, and UPDATE deletes only
//! after the database confirms the lease once more (see [`Lease::confirm`]).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use directory::Directory as _;
use tokio_util::sync::CancellationToken;

use crate::Dir;

/// A held lease: renewed in the background until dropped, then released.
pub(crate) struct Lease {
    dir: Arc<Dir>,
    maildrop: String,
    owner: String,
    ttl: Duration,
    /// Until when the lease is surely held, by this node's monotonic clock.
    held_until: Arc<Mutex<Instant>>,
    /// Set when the session is ended because the lease is (or may be) gone.
    lost: Arc<AtomicBool>,
    stop: CancellationToken,
    runtime: tokio::runtime::Handle,
}

/// The part of the lease time not counted on: the database's clock and this node's may
/// run apart a little, and a renewal takes time to land.
fn margin(ttl: Duration) -> Duration {
    ttl / 6
}

/// Renews once within `ttl / 3`; on success, moves `held_until` on.
async fn renew_once(
    dir: &Dir,
    maildrop: &str,
    owner: &str,
    ttl: Duration,
    held_until: &Mutex<Instant>,
) -> Result<bool, String> {
    let ttl_ms = i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX);
    let started = Instant::now();
    match tokio::time::timeout(ttl / 3, dir.renew_lease(maildrop, owner, ttl_ms)).await {
        Ok(Ok(true)) => {
            let until = started + ttl - margin(ttl);
            *held_until.lock().unwrap_or_else(|e| e.into_inner()) = until;
            Ok(true)
        }
        Ok(Ok(false)) => Ok(false),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("timed out".into()),
    }
}

/// Why no lease was had.
pub(crate) enum LeaseError {
    /// Another session holds it.
    InUse,
    /// The directory could not be asked.
    Unavailable(directory::DirectoryError),
}

impl Lease {
    /// Takes the lease on `maildrop` for `owner`; on a lost lease, `session` is ended.
    pub(crate) async fn acquire(
        dir: Arc<Dir>,
        maildrop: String,
        owner: String,
        ttl: Duration,
        session: CancellationToken,
    ) -> Result<Lease, LeaseError> {
        let ttl_ms = i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX);
        let started = Instant::now();
        match dir.acquire_lease(&maildrop, &owner, ttl_ms).await {
            Ok(true) => {}
            Ok(false) => return Err(LeaseError::InUse),
            Err(e) => return Err(LeaseError::Unavailable(e)),
        }
        let held_until = Arc::new(Mutex::new(started + ttl - margin(ttl)));
        let lost = Arc::new(AtomicBool::new(false));
        let stop = CancellationToken::new();
        let renew = {
            let (dir, maildrop, owner, stop, held_until, lost) = (
                dir.clone(),
                maildrop.clone(),
                owner.clone(),
                stop.clone(),
                held_until.clone(),
                lost.clone(),
            );
            async move {
                let every = ttl / 3;
                loop {
                    tokio::select! {
                        _ = stop.cancelled() => return,
                        _ = tokio::time::sleep(every) => {}
                    }
                    let renewed = renew_once(&dir, &maildrop, &owner, ttl, &held_until).await;
                    if stop.is_cancelled() {
                        return;
                    }
                    match renewed {
                        Ok(true) => {}
                        Ok(false) => {
                            tracing::error!(%maildrop, %owner, "maildrop lease lost; ending the session");
                            lost.store(true, Ordering::Release);
                            session.cancel();
                            return;
                        }
                        Err(e) => {
                            let until = *held_until.lock().unwrap_or_else(|e| e.into_inner());
                            if Instant::now() >= until {
                                tracing::error!(%maildrop, error = %e, "maildrop lease not renewed in time; ending the session");
                                lost.store(true, Ordering::Release);
                                session.cancel();
                                return;
                            }
                            // Tried again at the next tick; the lease outlives two misses.
                            tracing::warn!(%maildrop, error = %e, "renewing the maildrop lease failed");
                        }
                    }
                }
            }
        };
        tokio::spawn(renew);
        Ok(Lease {
            dir,
            maildrop,
            owner,
            ttl,
            held_until,
            lost,
            stop,
            runtime: tokio::runtime::Handle::current(),
        })
    }
}

impl Lease {
    /// Whether the session was ended for the lease (lost, or not renewed in time).
    pub(crate) fn lost(&self) -> bool {
        self.lost.load(Ordering::Acquire)
    }

    /// Whether the lease is still this session's, as the database says now (within a
    /// third of the lease time): UPDATE deletes nothing without it.
    pub(crate) async fn confirm(&self) -> bool {
        match renew_once(
            &self.dir,
            &self.maildrop,
            &self.owner,
            self.ttl,
            &self.held_until,
        )
        .await
        {
            Ok(true) => true,
            Ok(false) => {
                tracing::error!(maildrop = %self.maildrop, "maildrop lease lost before UPDATE; nothing deleted");
                false
            }
            Err(e) => {
                tracing::error!(maildrop = %self.maildrop, error = %e, "maildrop lease not confirmed before UPDATE; nothing deleted");
                false
            }
        }
    }

    /// Gives the lease up now, before answering QUIT: the next session, on any node,
    /// finds the maildrop free.
    pub(crate) async fn release(mut self) {
        self.stop.cancel();
        let (maildrop, owner) = (
            std::mem::take(&mut self.maildrop),
            std::mem::take(&mut self.owner),
        );
        if let Err(e) = self.dir.release_lease(&maildrop, &owner).await {
            tracing::warn!(%maildrop, error = %e, "releasing the maildrop lease failed; it will expire");
        }
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.stop.cancel();
        if self.owner.is_empty() {
            return; // released already
        }
        let (dir, maildrop, owner) = (
            self.dir.clone(),
            std::mem::take(&mut self.maildrop),
            std::mem::take(&mut self.owner),
        );
        // Dropped on a blocking thread too (after UPDATE's deletions): the release runs
        // on the runtime either way. If it never runs (the process dies), the lease
        // expires.
        self.runtime.spawn(async move {
            if let Err(e) = dir.release_lease(&maildrop, &owner).await {
                tracing::warn!(%maildrop, error = %e, "releasing the maildrop lease failed; it will expire");
            }
        });
    }
}
