//! Tenants' plugin calls run on threads of their own, at a lower CPU priority than the
//! rest of the host (`[plugins] tenant_threads`, `tenant_threads_nice`).
//!
//! Why: a tenant's plugin may spend its whole time limit on every call, one call after
//! another (the noisy neighbour busy-loops near its limit while it floods). On a
//! machine with few cores such calls take CPU the host needs for everyone else's requests
//! and deliveries. At nice 10 the kernel gives a plugin thread about a tenth of the weight
//! of a normal thread, and a thread of the host that wakes preempts it, so the host's work
//! for other tenants comes first and a plugin gets the CPU that is left (all of it on an
//! idle host). Plugin limits count CPU time, not wall time, so a call kept waiting is not
//! charged for the wait; a wall bound stops one that waits too long
//! (`runtime::deadline`).
//!
//! The threads are few (one per core by default) and only ever run plugin calls: a
//! thread's priority can be lowered without privileges but not raised again, so none of
//! them ever does other work. Who waits for a thread: every call has first taken one of
//! its version's call slots (`tenant_live.rs`), so a tenant has at most its
//! `calls_in_flight` calls queued or running here, and the queue is first come, first
//! served among those.

use crate::logging::Chain;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};

type Job = Box<dyn FnOnce() + Send>;

/// The pool; its threads end when it is dropped.
pub struct TenantThreads {
    queue: Mutex<Option<mpsc::Sender<Job>>>,
}

/// The pool is gone (the server is stopping) or the call panicked.
#[derive(Debug)]
pub struct NotRun(pub String);

impl TenantThreads {
    /// Starts `threads` threads (at least one) at `nice` (0 to 19; 0 leaves them as they
    /// are). A priority that cannot be set is logged and the thread runs at the default.
    pub fn start(threads: usize, nice: i32) -> TenantThreads {
        let threads = threads.max(1);
        let (tx, rx) = mpsc::channel::<Job>();
        let rx = Arc::new(Mutex::new(rx));
        for i in 0..threads {
            let rx = rx.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("sluice-tenant-{i}"))
                .spawn(move || {
                    lower_priority(nice);
                    loop {
                        // One thread waits on the queue at a time; the others on the lock.
                        let job = rx.lock().unwrap_or_else(|p| p.into_inner()).recv();
                        match job {
                            Ok(job) => job(),
                            Err(_) => return,
                        }
                    }
                });
            if let Err(e) = spawned {
                tracing::error!(error = %Chain(&e), "cannot start a tenant plugin thread");
            }
        }
        TenantThreads {
            queue: Mutex::new(Some(tx)),
        }
    }

    /// Runs `f` on one of the pool's threads and waits for its answer.
    pub async fn run<T, F>(&self, f: F) -> Result<T, NotRun>
    where
        T: Send + 'static,
        F: FnOnce() -> T + Send + 'static,
    {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let job: Job = Box::new(move || {
            let answer = catch_unwind(AssertUnwindSafe(f))
                .map_err(|_| NotRun("the plugin call panicked in the host".into()));
            let _ = tx.send(answer);
        });
        {
            let queue = self.queue.lock().unwrap_or_else(|p| p.into_inner());
            let sent = queue.as_ref().map(|q| q.send(job));
            if !matches!(sent, Some(Ok(()))) {
                return Err(NotRun("the tenant plugin threads have stopped".into()));
            }
        }
        rx.await
            .map_err(|_| NotRun("the tenant plugin threads have stopped".into()))?
    }
}

impl Drop for TenantThreads {
    fn drop(&mut self) {
        // Closing the queue ends each thread after the job it is running.
        self.queue.lock().unwrap_or_else(|p| p.into_inner()).take();
    }
}

/// Lowers the calling thread's priority to `nice` (Linux: per thread).
fn lower_priority(nice: i32) {
    if nice <= 0 {
        return;
    }
    #[cfg(target_os = "linux")]
    {
        // SAFETY: gettid has no preconditions; setpriority with PRIO_PROCESS and a thread
        // id changes that thread only (Linux), and raising the nice value needs no privilege.
        let done = unsafe {
            let tid = libc::gettid() as libc::id_t;
            // A process already started at a higher nice value keeps it (lowering the
            // value back would need a privilege).
            let now = libc::getpriority(libc::PRIO_PROCESS, tid);
            libc::setpriority(libc::PRIO_PROCESS, tid, nice.max(now))
        };
        if done != 0 {
            tracing::warn!(nice, error = %std::io::Error::last_os_error(), "cannot lower a tenant plugin thread's priority; it runs at the default");
        }
    }
}

/// The nice value of the calling thread (for the tests).
#[cfg(all(test, target_os = "linux"))]
fn current_nice() -> i32 {
    // SAFETY: as above; getpriority only reads.
    unsafe { libc::getpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn calls_run_on_the_pool_at_its_priority() {
        let pool = TenantThreads::start(2, 10);
        let name = pool
            .run(|| std::thread::current().name().map(str::to_owned))
            .await
            .unwrap();
        assert!(name.is_some_and(|n| n.starts_with("sluice-tenant-")));
        #[cfg(target_os = "linux")]
        assert!(pool.run(current_nice).await.unwrap() >= 10);
    }

    #[tokio::test]
    async fn a_panicking_call_is_an_error_and_the_thread_lives_on() {
        let pool = TenantThreads::start(1, 0);
        let e = pool.run(|| -> u32 { panic!("boom") }).await.unwrap_err();
        assert!(e.0.contains("panicked"), "{e:?}");
        assert_eq!(pool.run(|| 7).await.unwrap(), 7);
    }
}
