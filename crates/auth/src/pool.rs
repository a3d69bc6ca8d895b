//! A fixed pool of hashing threads.
//!
//! Password hashing is CPU- and memory-heavy (argon2id allocates its whole memory cost
//! per hash). Run on tokio's blocking pool, each new blocking thread would get its own
//! allocator arena and keep a freed argon2 buffer cached in it, so a login flood grew
//! the server's resident memory far past `memory cost × slots` (about 1 GB was measured
//! after a few hundred failed sign-ins). A fixed set of threads bounds that by
//! construction: at most `threads` hashes run at once and at most `threads` arenas ever
//! hold hashing memory. Jobs wait in two queues (below), each in arrival order; the async
//! caller awaits a oneshot.

//!
//! Two queues, so that a spray cannot keep the real user waiting: attempts on an account
//! from a network familiar to it (and the administrator's own work) go in the
//! *familiar* lane, everything else in the *others* lane. The first thread serves the
//! familiar lane only (when there are two or more), every other thread serves the
//! familiar lane first; the others' queue holds at most `others_queue` jobs, and an
//! attempt that finds it full is refused at once ([`Busy`]) instead of waiting behind
//! a flood.
//!
//! A memory budget, so that costly imported hashes cannot multiply: every job declares
//! the memory it holds (the configured argon2 cost for ours and the dummy check, the
//! stored hash's own for an imported one), and a job starts only when the memory of the
//! jobs running plus its own fits the budget (`threads × the configured argon2 memory`
//! unless configured). A job bigger than the whole budget runs alone. Familiar jobs come
//! first for memory as for threads: while the head of the familiar lane waits for
//! memory, no job of the others' lane starts, so the real user waits at most for the
//! checks already running, never for the queue.

use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex};

type Job = Box<dyn FnOnce() + Send + 'static>;

/// A queued job and the memory it declared, KiB.
struct Entry {
    job: Job,
    memory_kib: u64,
}

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

struct Queues {
    familiar: VecDeque<Entry>,
    others: VecDeque<Entry>,
    closed: bool,
    /// The memory the jobs may hold at once, KiB.
    budget_kib: u64,
    /// The memory the running jobs declared, KiB.
    in_use_kib: u64,
    /// Jobs running.
    running: usize,
}

impl Queues {
    /// Whether a job declaring `memory_kib` may start now: it fits beside the running
    /// jobs, or nothing runs (a job bigger than the budget runs alone).
    fn fits(&self, memory_kib: u64) -> bool {
        self.running == 0 || self.in_use_kib.saturating_add(memory_kib) <= self.budget_kib
    }

    /// The next job a thread may start, if any: the familiar lane's head if it fits;
    /// if the familiar lane is empty (and the thread serves others), the others' head if
    /// it fits. Lanes are FIFO: a head waiting for memory is not overtaken in its lane,
    /// and a familiar head waiting for memory holds back the others' lane too.
    fn take(&mut self, familiar_only: bool) -> Option<Entry> {
        let lane = match self.familiar.front() {
            Some(head) if self.fits(head.memory_kib) => &mut self.familiar,
            Some(_) => return None,
            None if familiar_only => return None,
            None => match self.others.front() {
                Some(head) if self.fits(head.memory_kib) => &mut self.others,
                _ => return None,
            },
        };
        let entry = lane.pop_front()?;
        self.in_use_kib = self.in_use_kib.saturating_add(entry.memory_kib);
        self.running += 1;
        Some(entry)
    }
}

struct Shared {
    queues: Mutex<Queues>,
    ready: Condvar,
}

/// How much lower the CPU priority (nice) of threads that hash for others is, when a
/// thread is kept for the familiar lane: a spray keeps them busy, and at the same
/// priority they took CPU from everything else the real user needs (the TLS handshake,
/// the session, its own hash on the kept thread). At a lower priority they still use
/// every idle cycle. With a single hashing thread it serves everyone at the normal
/// priority.
const OTHERS_NICE: i32 = 10;

/// Lowers the calling thread's priority by [`OTHERS_NICE`]. On Linux `setpriority`
/// with `PRIO_PROCESS` and no id changes the calling thread only. Lowering needs no
/// privilege; a failure (another system) leaves the priority as it was.
fn yield_cpu() {
    let now = rustix::process::getpriority_process(None).unwrap_or(0);
    if let Err(e) = rustix::process::setpriority_process(None, now + OTHERS_NICE) {
        tracing::debug!(error = %e, "cannot lower a hashing thread's priority");
    }
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
    /// [`OTHERS_QUEUE_PER_THREAD`] jobs per thread, and the memory budget is
    /// `threads × share_kib` (see [`HashPool::set_budget_kib`]).
    pub(crate) fn new(threads: usize, share_kib: u64) -> Arc<Self> {
        let threads = threads.max(1);
        let shared = Arc::new(Shared {
            queues: Mutex::new(Queues {
                familiar: VecDeque::new(),
                others: VecDeque::new(),
                closed: false,
                budget_kib: share_kib.saturating_mul(threads as u64),
                in_use_kib: 0,
                running: 0,
            }),
            ready: Condvar::new(),
        });
        for i in 0..threads {
            // With two threads or more, the first is kept for the familiar lane.
            let familiar_only = threads > 1 && i == 0;
            let shared = Arc::clone(&shared);
            let spawned = std::thread::Builder::new()
                .name(format!("poplar-hash-{i}"))
                .spawn(move || serve(&shared, familiar_only, threads > 1 && !familiar_only));
            if let Err(e) = spawned {
                tracing::error!(error = %e, "cannot start a hashing thread");
            }
        }
        Arc::new(Self {
            shared,
            others_queue: threads * OTHERS_QUEUE_PER_THREAD,
        })
    }

    /// Sets the memory the jobs may hold at once, in KiB (at least 1).
    pub(crate) fn set_budget_kib(&self, budget_kib: u64) {
        if let Ok(mut q) = self.shared.queues.lock() {
            q.budget_kib = budget_kib.max(1);
        }
        self.shared.ready.notify_all();
    }

    /// Runs `work`, which holds `memory_kib` of memory, on a hashing thread in `lane`
    /// once memory allows; `Ok(None)` if the pool is gone or `work` panicked,
    /// `Err(Busy)` if the others' queue is full.
    pub(crate) async fn run<T, F>(
        &self,
        lane: Lane,
        memory_kib: u64,
        work: F,
    ) -> Result<Option<T>, Busy>
    where
        T: Send + 'static,
        F: FnOnce() -> T + Send + 'static,
    {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let job: Job = Box::new(move || {
            let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(work));
            let _ = tx.send(result.ok());
        });
        let entry = Entry { job, memory_kib };
        {
            let Ok(mut q) = self.shared.queues.lock() else {
                return Ok(None);
            };
            match lane {
                Lane::Familiar => q.familiar.push_back(entry),
                Lane::Others if q.others.len() >= self.others_queue => return Err(Busy),
                Lane::Others => q.others.push_back(entry),
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
/// lane) the others', each when the memory budget allows.
fn serve(shared: &Shared, familiar_only: bool, lower_priority: bool) {
    if lower_priority {
        yield_cpu();
    }
    loop {
        let entry = {
            let Ok(mut q) = shared.queues.lock() else {
                return;
            };
            loop {
                if let Some(entry) = q.take(familiar_only) {
                    break entry;
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
        (entry.job)();
        if let Ok(mut q) = shared.queues.lock() {
            q.in_use_kib = q.in_use_kib.saturating_sub(entry.memory_kib);
            q.running -= 1;
        }
        // Memory came free: a job waiting for it may fit now, on any thread.
        shared.ready.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    /// The per-thread share of memory in these tests, KiB.
    const SHARE: u64 = 50;

    /// Jobs that record how many of them run at once, and the most that ever did.
    #[derive(Default)]
    struct Overlap {
        now: AtomicUsize,
        most: AtomicUsize,
    }

    impl Overlap {
        /// A job that counts itself running for `ms`.
        fn job(self: &Arc<Self>, ms: u64) -> impl FnOnce() + Send + 'static {
            let me = Arc::clone(self);
            move || {
                let now = me.now.fetch_add(1, Ordering::SeqCst) + 1;
                me.most.fetch_max(now, Ordering::SeqCst);
                std::thread::sleep(Duration::from_millis(ms));
                me.now.fetch_sub(1, Ordering::SeqCst);
            }
        }
    }

    /// Runs jobs of the given memory (familiar lane) all at once; the most that ran
    /// together.
    async fn most_at_once(pool: &Arc<HashPool>, memories: &[u64]) -> usize {
        let overlap = Arc::new(Overlap::default());
        let handles: Vec<_> = memories
            .iter()
            .map(|&memory| {
                let (pool, job) = (Arc::clone(pool), overlap.job(100));
                tokio::spawn(async move { pool.run(Lane::Familiar, memory, job).await })
            })
            .collect();
        for h in handles {
            assert_eq!(h.await.unwrap(), Ok(Some(())));
        }
        overlap.most.load(Ordering::SeqCst)
    }

    #[tokio::test]
    async fn jobs_that_do_not_fit_the_budget_together_do_not_run_together() {
        // Two threads, a budget of 100 KiB.
        let pool = HashPool::new(2, SHARE);
        // Two shares fit together: both threads work (so the test can see overlap).
        assert_eq!(most_at_once(&pool, &[SHARE, SHARE]).await, 2);
        // 60 + 60 > 100: one after the other, though a thread is free.
        assert_eq!(most_at_once(&pool, &[60, 60]).await, 1);
        assert_eq!(most_at_once(&pool, &[60, 40]).await, 2);
        // A configured budget replaces threads × share.
        pool.set_budget_kib(200);
        assert_eq!(most_at_once(&pool, &[60, 60]).await, 2);
        pool.set_budget_kib(100);
        assert_eq!(most_at_once(&pool, &[60, 60]).await, 1);
    }

    #[tokio::test]
    async fn a_job_bigger_than_the_budget_runs_alone() {
        // Three threads, a budget of 150 KiB; a job of 500 amid small ones, queued in
        // every order.
        let pool = HashPool::new(3, SHARE);
        for big_at in 0..3 {
            let spans = Arc::new(Mutex::new(Vec::new()));
            let handles: Vec<_> = (0..3)
                .map(|i| {
                    let memory = if i == big_at { 500 } else { i as u64 };
                    let (pool, spans) = (Arc::clone(&pool), Arc::clone(&spans));
                    // Queued in this order: spawned tasks first run in spawn order.
                    tokio::spawn(async move {
                        pool.run(Lane::Familiar, memory, move || {
                            let start = std::time::Instant::now();
                            std::thread::sleep(Duration::from_millis(60));
                            spans.lock().unwrap().push((memory, start, start.elapsed()));
                        })
                        .await
                    })
                })
                .collect();
            for h in handles {
                // Never refused: it waits for the pool to be idle.
                assert_eq!(h.await.unwrap(), Ok(Some(())));
            }
            let spans = spans.lock().unwrap();
            let &(_, big_start, big_took) = spans.iter().find(|s| s.0 == 500).unwrap();
            for &(memory, start, took) in spans.iter().filter(|s| s.0 != 500) {
                let apart = start + took <= big_start || big_start + big_took <= start;
                assert!(apart, "a job of {memory} KiB ran beside the big one");
            }
        }
    }

    #[tokio::test]
    async fn the_familiar_lane_comes_first_for_memory_too() {
        let pool = HashPool::new(2, SHARE);
        let order = Arc::new(Mutex::new(Vec::new()));
        let (release, gate) = std::sync::mpsc::channel::<()>();
        let gate = Arc::new(Mutex::new(gate));
        // A costly others' check holds 60 of the 100 KiB.
        let blocker = {
            let (pool, gate) = (Arc::clone(&pool), Arc::clone(&gate));
            tokio::spawn(async move {
                pool.run(Lane::Others, 60, move || {
                    let _ = gate.lock().unwrap().recv();
                })
                .await
            })
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        let queue = |lane, memory, name: &'static str| {
            let (pool, order) = (Arc::clone(&pool), Arc::clone(&order));
            tokio::spawn(async move {
                pool.run(lane, memory, move || order.lock().unwrap().push(name))
                    .await
            })
        };
        // Another costly one queues first, then the real user's: neither fits now.
        let other = queue(Lane::Others, 60, "other");
        tokio::time::sleep(Duration::from_millis(50)).await;
        let familiar = queue(Lane::Familiar, 60, "familiar");
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(order.lock().unwrap().is_empty(), "nothing fits beside 60");
        release.send(()).unwrap();
        blocker.await.unwrap().unwrap();
        familiar.await.unwrap().unwrap();
        other.await.unwrap().unwrap();
        assert_eq!(*order.lock().unwrap(), ["familiar", "other"]);
    }

    #[tokio::test]
    async fn runs_jobs_on_a_bounded_set_of_threads() {
        let pool = HashPool::new(2, SHARE);
        let names: Vec<String> = futures_join(
            (0..20)
                .map(|_| {
                    let pool = Arc::clone(&pool);
                    tokio::spawn(async move {
                        pool.run(Lane::Familiar, SHARE, || {
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
            pool.run(Lane::Familiar, SHARE, || -> u32 { panic!("boom") })
                .await,
            Ok(None)
        );
        assert_eq!(
            pool.run(Lane::Others, SHARE, || 7).await,
            Ok(Some(7)),
            "a panic does not kill the pool"
        );
    }

    #[tokio::test]
    async fn the_familiar_lane_is_never_stuck_behind_a_flood() {
        let pool = HashPool::new(2, SHARE);
        // The one thread that serves others is held up; the others' queue fills.
        let (release, gate) = std::sync::mpsc::channel::<()>();
        let gate = Arc::new(Mutex::new(gate));
        let blocker = {
            let (pool, gate) = (Arc::clone(&pool), Arc::clone(&gate));
            tokio::spawn(async move {
                pool.run(Lane::Others, SHARE, move || {
                    let _ = gate.lock().unwrap().recv();
                })
                .await
            })
        };
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        let queued: Vec<_> = (0..2 * OTHERS_QUEUE_PER_THREAD)
            .map(|_| {
                let pool = Arc::clone(&pool);
                tokio::spawn(async move { pool.run(Lane::Others, SHARE, || 1).await })
            })
            .collect();
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        // Full: the next other is refused at once...
        assert_eq!(pool.run(Lane::Others, SHARE, || 1).await, Err(Busy));
        // ...while a familiar job runs on the thread kept for it, in the memory kept
        // for it (a share each: the budget is full with the blocker and this one).
        assert_eq!(pool.run(Lane::Familiar, SHARE, || 2).await, Ok(Some(2)));
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

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn threads_that_hash_for_others_run_at_a_lower_priority() {
        let ours = rustix::process::getpriority_process(None).unwrap();
        let pool = HashPool::new(2, SHARE);
        // The kept thread is never given an others' job; the other one always is.
        let theirs = pool
            .run(Lane::Others, SHARE, || {
                rustix::process::getpriority_process(None).unwrap()
            })
            .await
            .unwrap()
            .unwrap();
        assert_eq!(theirs, (ours + OTHERS_NICE).min(19));
        // A lone thread serves everyone at the normal priority.
        let single = HashPool::new(1, SHARE);
        let alone = single
            .run(Lane::Others, SHARE, || {
                rustix::process::getpriority_process(None).unwrap()
            })
            .await
            .unwrap()
            .unwrap();
        assert_eq!(alone, ours);
    }
}
