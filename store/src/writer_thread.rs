//! The SQLite store's writes on a thread and runtime of their own.
//!
//! SQLite has one write connection, and every statement on it is a round trip to
//! sqlx's worker thread. Run from the server's busy runtime, each wake-up of a writing
//! task can wait behind request handlers while the write connection stays idle, and
//! every accept, outcome and charge waits behind that. The group commit, outcome
//! recording and charge writing run here instead; PostgreSQL (a network round trip
//! per statement anyway) runs them on the caller's runtime.

use std::future::Future;

use tokio::runtime::Handle;
use tokio::sync::oneshot;

use super::StoreError;

/// A current-thread runtime on a thread of its own; it stops when this is dropped
/// (the last store handle), cancelling what still runs there.
pub(crate) struct WriterThread {
    handle: Handle,
    _stop: oneshot::Sender<()>,
}

impl WriterThread {
    pub(crate) fn start() -> std::io::Result<WriterThread> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let handle = rt.handle().clone();
        let (stop, stopped) = oneshot::channel::<()>();
        std::thread::Builder::new()
            .name("sluice-store-writer".into())
            .spawn(move || {
                rt.block_on(async {
                    let _ = stopped.await;
                });
            })?;
        Ok(WriterThread {
            handle,
            _stop: stop,
        })
    }

    /// Starts a task that lives as long as the thread.
    pub(crate) fn spawn(&self, task: impl Future<Output = ()> + Send + 'static) {
        self.handle.spawn(task);
    }

    /// Runs `work` on the writer thread and waits for its answer.
    pub(crate) async fn run<T: Send + 'static>(
        &self,
        work: impl Future<Output = Result<T, StoreError>> + Send + 'static,
    ) -> Result<T, StoreError> {
        self.handle
            .spawn(work)
            .await
            .map_err(|_| StoreError::WriterGone)?
    }
}
