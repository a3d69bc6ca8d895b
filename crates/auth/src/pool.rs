//! A fixed pool of hashing threads.
//!
//! Password hashing is CPU- and memory-heavy (argon2id allocates its whole memory cost
//! per hash). Run on tokio's blocking pool, each new blocking thread would get its own
//! allocator arena and keep a freed argon2 buffer cached in it, so a login flood grew
//! the server's resident memory far past `memory cost × slots` (about 1 GB was measured
//! after a few hundred failed sign-ins). A fixed set of threads bounds that by
//! construction: at most `threads` hashes run at once and at most `threads` arenas ever
//! hold hashing memory. Jobs queue in FIFO order; the async caller awaits a oneshot.

use std::sync::{Arc, Mutex, mpsc};

type Job = Box<dyn FnOnce() + Send + 'static>;

/// The threads and the queue that feeds them.
pub(crate) struct HashPool {
    queue: Mutex<mpsc::Sender<Job>>,
}

impl HashPool {
    /// Starts `threads` (at least one) named hashing threads.
    pub(crate) fn new(threads: usize) -> Arc<Self> {
        let (tx, rx) = mpsc::channel::<Job>();
        let rx = Arc::new(Mutex::new(rx));
        for i in 0..threads.max(1) {
            let rx = Arc::clone(&rx);
            let spawned = std::thread::Builder::new()
                .name(format!("poplar-hash-{i}"))
                .spawn(move || {
                    loop {
                        // The lock is held only while taking a job, not while running it.
                        let job = match rx.lock() {
                            Ok(rx) => rx.recv(),
                            Err(_) => return,
                        };
                        match job {
                            Ok(job) => job(),
                            Err(_) => return, // the pool is gone
                        }
                    }
                });
            if let Err(e) = spawned {
                tracing::error!(error = %e, "cannot start a hashing thread");
            }
        }
        Arc::new(Self {
            queue: Mutex::new(tx),
        })
    }

    /// Runs `work` on a hashing thread; `None` if the pool is gone or `work` panicked.
    pub(crate) async fn run<T, F>(&self, work: F) -> Option<T>
    where
        T: Send + 'static,
        F: FnOnce() -> T + Send + 'static,
    {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let job: Job = Box::new(move || {
            let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(work));
            let _ = tx.send(result.ok());
        });
        self.queue.lock().ok()?.send(job).ok()?;
        rx.await.ok().flatten()
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
                        pool.run(|| std::thread::current().name().unwrap_or("").to_owned())
                            .await
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
        assert_eq!(pool.run(|| -> u32 { panic!("boom") }).await, None);
        assert_eq!(
            pool.run(|| 7).await,
            Some(7),
            "a panic does not kill the pool"
        );
    }

    async fn futures_join(handles: Vec<tokio::task::JoinHandle<String>>) -> Vec<String> {
        let mut out = Vec::new();
        for h in handles {
            out.push(h.await.unwrap());
        }
        out
    }
}
