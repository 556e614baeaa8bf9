//! A few threads of their own for password hashing.
//!
//! Why not tokio's blocking pool: argon2 takes ~19 MiB a check, and the allocator keeps what a
//! thread freed for that thread's next use. Spread over the blocking pool's hundreds of
//! threads, a burst of checks left hundreds of MiB resident; on a fixed handful of threads the
//! memory stays at a handful of checks' worth.

use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::{Arc, Mutex};

type Job = Box<dyn FnOnce() + Send>;

/// `threads` hashing threads fed from one queue.
pub struct HashPool {
    jobs: SyncSender<Job>,
}

impl HashPool {
    /// Starts the threads (at least one).
    pub fn new(threads: usize) -> std::io::Result<HashPool> {
        let threads = threads.max(1);
        // Callers queue behind a semaphore of `threads` permits, so this never fills.
        let (jobs, rx) = sync_channel::<Job>(threads * 2);
        let rx = Arc::new(Mutex::new(rx));
        for i in 0..threads {
            let rx: Arc<Mutex<Receiver<Job>>> = rx.clone();
            std::thread::Builder::new()
                .name(format!("hash-{i}"))
                .spawn(move || loop {
                    let job = rx.lock().unwrap_or_else(|p| p.into_inner()).recv();
                    match job {
                        Ok(job) => job(),
                        Err(_) => return,
                    }
                })?;
        }
        Ok(HashPool { jobs })
    }

    /// Runs `f` on a hashing thread; `None` if the pool has stopped or `f` panicked.
    pub async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> Option<T> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let job: Job = Box::new(move || {
            if let Ok(v) = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
                let _ = tx.send(v);
            }
        });
        self.jobs.try_send(job).ok()?;
        rx.await.ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn jobs_run_on_the_pools_own_threads() {
        let pool = HashPool::new(2).unwrap();
        let name = pool
            .run(|| std::thread::current().name().unwrap_or("").to_string())
            .await
            .unwrap();
        assert!(name.starts_with("hash-"), "{name}");
        assert_eq!(pool.run(|| 6 * 7).await, Some(42));
        assert_eq!(pool.run(|| -> u8 { panic!("boom") }).await, None);
        assert_eq!(
            pool.run(|| 1).await,
            Some(1),
            "a panic does not stop the pool"
        );
    }
}
