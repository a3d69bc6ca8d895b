//! A fixed pool of hashing threads.
//!
//! Password hashing is CPU- and memory-heavy (argon2id allocates its whole memory cost
//! per hash). Run on tokio's blocking pool, each new blocking thread would get its own
//! allocator arena and keep a freed argon2 buffer cached in it, so a login flood grew
//! the server's resident memory far past `memory cost × slots` (about 1 GB was measured
//! after a few hundred failed sign-ins). A fixed set of threads bounds that by
//! construction: at most `threads` hashes run at once and at most `threads` arenas ever
//! hold hashing memory. Jobs queue in FIFO order; the async caller awaits a oneshot.

//!
//! Two queues, so that a spray cannot keep the real user waiting: attempts on an account
//! from a network familiar to it (and the administrator's own work) go in the
//! *familiar* lane, everything else in the *others* lane. The first thread serves the
//! familiar lane only (when there are two or more), every other thread serves the
//! familiar lane first; the others' queue holds at most `others_queue` jobs, and an
//! attempt that finds it full is refused at once ([`Busy`]) instead of waiting behind
//! a flood.

use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex};

type Job = Box<dyn FnOnce() + Send + 'static>;

/// Which queue a job waits in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Lane {
    /// An attempt on an account from a network familiar to it, or administration.
    Familiar,
    /// Any other attempt (an unknown name, an unfamiliar network).
    Others,
}

/// The others' queue was full: the attempt was not checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Busy;

#[derive(Default)]
struct Queues {
    familiar: VecDeque<Job>,
    others: VecDeque<Job>,
    closed: bool,
}

struct Shared {
    queues: Mutex<Queues>,
    ready: Condvar,
}

/// The threads and the queues that feed them.
pub(crate) struct HashPool {
    shared: Arc<Shared>,
    others_queue: usize,
}

/// The others' queue per hashing thread: a burst this deep waits, more is refused.
pub(crate) const OTHERS_QUEUE_PER_THREAD: usize = 32;

impl HashPool {
    /// Starts `threads` (at least one) named hashing threads; the others' queue holds
    /// [`OTHERS_QUEUE_PER_THREAD`] jobs per thread.
    pub(crate) fn new(threads: usize) -> Arc<Self> {
        let threads = threads.max(1);
        let shared = Arc::new(Shared {
            queues: Mutex::new(Queues::default()),
            ready: Condvar::new(),
        });
        for i in 0..threads {
            // With two threads or more, the first is kept for the familiar lane.
            let familiar_only = threads > 1 && i == 0;
            let shared = Arc::clone(&shared);
            let spawned = std::thread::Builder::new()
                .name(format!("poplar-hash-{i}"))
                .spawn(move || serve(&shared, familiar_only));
            if let Err(e) = spawned {
                tracing::error!(error = %e, "cannot start a hashing thread");
            }
        }
        Arc::new(Self {
            shared,
            others_queue: threads * OTHERS_QUEUE_PER_THREAD,
        })
    }

    /// Runs `work` on a hashing thread in `lane`; `Ok(None)` if the pool is gone or
    /// `work` panicked, `Err(Busy)` if the others' queue is full.
    pub(crate) async fn run<T, F>(&self, lane: Lane, work: F) -> Result<Option<T>, Busy>
    where
        T: Send + 'static,
        F: FnOnce() -> T + Send + 'static,
    {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let job: Job = Box::new(move || {
            let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(work));
            let _ = tx.send(result.ok());
        });
        {
            let Ok(mut q) = self.shared.queues.lock() else {
                return Ok(None);
            };
            match lane {
                Lane::Familiar => q.familiar.push_back(job),
                Lane::Others if q.others.len() >= self.others_queue => return Err(Busy),
                Lane::Others => q.others.push_back(job),
            }
        }
        // Every thread: the one kept for the familiar lane must hear of familiar jobs.
        self.shared.ready.notify_all();
        Ok(rx.await.ok().flatten())
    }
}

impl Drop for HashPool {
    fn drop(&mut self) {
        if let Ok(mut q) = self.shared.queues.lock() {
            q.closed = true;
        }
        self.shared.ready.notify_all();
    }
}

/// One hashing thread: takes familiar jobs first, then (unless kept for the familiar
/// lane) the others'.
fn serve(shared: &Shared, familiar_only: bool) {
    loop {
        let job = {
            let Ok(mut q) = shared.queues.lock() else {
                return;
            };
            loop {
                if let Some(job) = q.familiar.pop_front() {
                    break job;
                }
                if !familiar_only && let Some(job) = q.others.pop_front() {
                    break job;
                }
                if q.closed {
                    return;
                }
                q = match shared.ready.wait(q) {
                    Ok(q) => q,
                    Err(_) => return,
                };
            }
        };
        job();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn runs_jobs_on_a_bounded_set_of_threads() {
        let pool = HashPool::new(2);
        let names: Vec<String> = futures_join(
            (0..20)
                .map(|_| {
                    let pool = Arc::clone(&pool);
                    tokio::spawn(async move {
                        pool.run(Lane::Familiar, || {
                            std::thread::current().name().unwrap_or("").to_owned()
                        })
                        .await
                        .unwrap()
                        .unwrap()
                    })
                })
                .collect(),
        )
        .await;
        let mut distinct: Vec<_> = names.clone();
        distinct.sort();
        distinct.dedup();
        assert!(distinct.len() <= 2, "{distinct:?}");
        assert!(names.iter().all(|n| n.starts_with("poplar-hash-")));
        assert_eq!(
            pool.run(Lane::Familiar, || -> u32 { panic!("boom") }).await,
            Ok(None)
        );
        assert_eq!(
            pool.run(Lane::Others, || 7).await,
            Ok(Some(7)),
            "a panic does not kill the pool"
        );
    }

    #[tokio::test]
    async fn the_familiar_lane_is_never_stuck_behind_a_flood() {
        let pool = HashPool::new(2);
        // The one thread that serves others is held up; the others' queue fills.
        let (release, gate) = std::sync::mpsc::channel::<()>();
        let gate = Arc::new(Mutex::new(gate));
        let blocker = {
            let (pool, gate) = (Arc::clone(&pool), Arc::clone(&gate));
            tokio::spawn(async move {
                pool.run(Lane::Others, move || {
                    let _ = gate.lock().unwrap().recv();
                })
                .await
            })
        };
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        let queued: Vec<_> = (0..2 * OTHERS_QUEUE_PER_THREAD)
            .map(|_| {
                let pool = Arc::clone(&pool);
                tokio::spawn(async move { pool.run(Lane::Others, || 1).await })
            })
            .collect();
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        // Full: the next other is refused at once...
        assert_eq!(pool.run(Lane::Others, || 1).await, Err(Busy));
        // ...while a familiar job runs on the thread kept for it.
        assert_eq!(pool.run(Lane::Familiar, || 2).await, Ok(Some(2)));
        release.send(()).unwrap();
        blocker.await.unwrap().unwrap();
        for q in queued {
            assert_eq!(q.await.unwrap(), Ok(Some(1)));
        }
    }

    async fn futures_join(handles: Vec<tokio::task::JoinHandle<String>>) -> Vec<String> {
        let mut out = Vec::new();
        for h in handles {
            out.push(h.await.unwrap());
        }
        out
    }
}
