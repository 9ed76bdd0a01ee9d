//! WAL checkpoints off the SQLite store's write connection.
//!
//! By default SQLite checkpoints inside the COMMIT that takes the log past 1,000 pages:
//! that commit copies the log back into the database and fsyncs it while every accept
//! and outcome waits behind the one writer (tens of milliseconds, about once a second
//! under load). Here the writer checkpoints only if the log has grown far past that,
//! and a task checkpoints from a read connection every [`EVERY`] in `PASSIVE` mode,
//! which copies what no reader needs without taking the write lock. Durability is
//! unchanged: a commit is durable once its log frames are fsynced.

use super::chain::Chain;
use std::time::Duration;

use sqlx::AnyPool;
use tokio::task::JoinHandle;

/// SQLite's own `wal_autocheckpoint`, kept on the read connections.
pub(crate) const SQLITE_DEFAULT_AUTOCHECKPOINT_PAGES: u32 = 1_000;
/// The writer's: a backstop should the background checkpoints fall behind (~40 MiB).
pub(crate) const WRITER_AUTOCHECKPOINT_PAGES: u32 = 10_000;
/// How often the background task checkpoints.
const EVERY: Duration = Duration::from_millis(500);

/// The background checkpoint task; it stops when this is dropped (with the store).
pub(crate) struct Checkpointer(JoinHandle<()>);

impl Checkpointer {
    /// Starts checkpointing through `read`, a pool on the same database file.
    pub(crate) fn start(read: AnyPool) -> Checkpointer {
        Checkpointer(tokio::spawn(async move {
            let mut tick = tokio::time::interval(EVERY);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                if let Err(e) = sqlx::query("PRAGMA wal_checkpoint(PASSIVE)")
                    .execute(&read)
                    .await
                {
                    // The writer's backstop checkpoints instead; the next tick tries again.
                    tracing::warn!(error = %Chain(&e), "background WAL checkpoint failed");
                }
            }
        }))
    }
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        self.0.abort();
    }
}
