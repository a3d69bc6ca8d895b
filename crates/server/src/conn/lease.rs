//! Maildrop exclusivity across nodes: when the directory is PostgreSQL (several nodes
//! serving one Maildir tree on shared storage), a session holds a lease on its maildrop
//! in the directory besides the local lock file. The lease names its owner (this node's
//! random id and the session id) and expires `directory.maildrop_lease_secs` after its
//! last renewal on the database's clock; the session renews it every third of that.
//! A node that dies stops renewing, and the maildrop is free once the lease expires.
//! A session that finds its lease gone (taken after it expired, say while the database
//! was unreachable) is ended, so two sessions never serve one maildrop.

use std::sync::Arc;
use std::time::Duration;

use directory::Directory as _;
use tokio_util::sync::CancellationToken;

use crate::Dir;

/// A held lease: renewed in the background until dropped, then released.
pub(crate) struct Lease {
    dir: Arc<Dir>,
    maildrop: String,
    owner: String,
    stop: CancellationToken,
    runtime: tokio::runtime::Handle,
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
        match dir.acquire_lease(&maildrop, &owner, ttl_ms).await {
            Ok(true) => {}
            Ok(false) => return Err(LeaseError::InUse),
            Err(e) => return Err(LeaseError::Unavailable(e)),
        }
        let stop = CancellationToken::new();
        let renew = {
            let (dir, maildrop, owner, stop) =
                (dir.clone(), maildrop.clone(), owner.clone(), stop.clone());
            async move {
                let every = ttl / 3;
                loop {
                    tokio::select! {
                        _ = stop.cancelled() => return,
                        _ = tokio::time::sleep(every) => {}
                    }
                    match dir.renew_lease(&maildrop, &owner, ttl_ms).await {
                        Ok(true) => {}
                        Ok(false) => {
                            if stop.is_cancelled() {
                                return;
                            }
                            tracing::error!(%maildrop, %owner, "maildrop lease lost; ending the session");
                            session.cancel();
                            return;
                        }
                        // Tried again at the next tick; the lease outlives two misses.
                        Err(e) => {
                            tracing::warn!(%maildrop, error = %e, "renewing the maildrop lease failed")
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
            stop,
            runtime: tokio::runtime::Handle::current(),
        })
    }
}

impl Lease {
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
