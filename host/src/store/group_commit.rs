//! Group commit: one writer task takes every accept that is waiting (up to a maximum),
//! writes them in one transaction and commits once, then answers each caller. One
//! fsync then covers many messages, so durability does not cap throughput at one
//! message per disk flush.
//!
//! If a statement fails inside a shared transaction (e.g. two hosts raced on the same
//! idempotency key), the batch is rolled back and each message is retried in a
//! transaction of its own, so one message's trouble never fails its neighbours. A
//! failed COMMIT is answered as an error to every caller in the batch and not retried:
//! whether it reached the disk is unknown, and retrying could store a message twice.

use sqlx::AnyPool;
use tokio::sync::{mpsc, oneshot};

use super::StoreError;
use super::accept::{self, Ids, Prepared};
use super::connect::{Backend, begin_write};
use super::types::Accepted;
use super::writer_thread::WriterThread;

/// How many accepts may wait for the writer before callers are held back.
const QUEUE: usize = 4096;

struct Job {
    message: Prepared,
    reply: oneshot::Sender<Result<Accepted, StoreError>>,
}

/// The sending side of the writer task; the task ends when the last store handle drops.
pub(crate) struct Writer {
    jobs: mpsc::Sender<Job>,
}

impl Writer {
    /// Starts the writer task: on `thread` when the store has one (SQLite), else on the
    /// current tokio runtime.
    pub(crate) fn start(
        pool: AnyPool,
        backend: Backend,
        max_batch: usize,
        thread: Option<&WriterThread>,
    ) -> Writer {
        let (jobs, rx) = mpsc::channel(QUEUE);
        let task = run(pool, backend, rx, max_batch.max(1));
        match thread {
            Some(t) => t.spawn(task),
            None => {
                tokio::spawn(task);
            }
        }
        Writer { jobs }
    }

    /// Queues one message and waits until it is committed (or has failed).
    pub(crate) async fn submit(&self, message: Prepared) -> Result<Accepted, StoreError> {
        let (reply, answer) = oneshot::channel();
        self.jobs
            .send(Job { message, reply })
            .await
            .map_err(|_| StoreError::WriterGone)?;
        answer.await.map_err(|_| StoreError::WriterGone)?
    }
}

async fn run(pool: AnyPool, backend: Backend, mut rx: mpsc::Receiver<Job>, max_batch: usize) {
    let mut ids = Ids::default();
    let mut batch = Vec::with_capacity(max_batch);
    while rx.recv_many(&mut batch, max_batch).await > 0 {
        commit_batch(&pool, backend, &mut ids, std::mem::take(&mut batch)).await;
    }
}

async fn commit_batch(pool: &AnyPool, backend: Backend, ids: &mut Ids, batch: Vec<Job>) {
    tracing::trace!(size = batch.len(), "group commit");
    match write_all(pool, backend, ids, &batch).await {
        Ok(answers) => {
            for (job, answer) in batch.into_iter().zip(answers) {
                // A caller that gave up waiting still has its message stored.
                let _ = job.reply.send(Ok(answer));
            }
        }
        Err(BatchError::Commit(e)) => {
            let text = match &e {
                StoreError::Database { source, .. } => source.to_string(),
                other => other.to_string(),
            };
            tracing::error!(error = %text, size = batch.len(), "group commit failed");
            let size = batch.len();
            for job in batch {
                let _ = job.reply.send(Err(StoreError::CommitUnknown(format!(
                    "accept: committing a group of {size} messages failed: {text}"
                ))));
            }
        }
        Err(BatchError::Statement(e)) => {
            tracing::debug!(error = %e, size = batch.len(), "group write failed; writing one by one");
            for job in batch {
                let answer = write_all(pool, backend, ids, std::slice::from_ref(&job))
                    .await
                    .map(|mut answers| answers.remove(0))
                    .map_err(BatchError::into_store_error);
                let _ = job.reply.send(answer);
            }
        }
    }
}

enum BatchError {
    /// A statement failed; nothing was committed.
    Statement(StoreError),
    /// COMMIT failed; the outcome on disk is unknown.
    Commit(StoreError),
}

impl BatchError {
    fn into_store_error(self) -> StoreError {
        match self {
            BatchError::Statement(e) | BatchError::Commit(e) => e,
        }
    }
}

async fn write_all(
    pool: &AnyPool,
    backend: Backend,
    ids: &mut Ids,
    batch: &[Job],
) -> Result<Vec<Accepted>, BatchError> {
    let mut tx = begin_write(pool, backend)
        .await
        .map_err(StoreError::db("accept: beginning a transaction"))
        .map_err(BatchError::Statement)?;
    let mut answers = Vec::with_capacity(batch.len());
    // Runs of messages without idempotency keys go in multi-row statements; a keyed
    // message is written on its own, after what came before it (it may repeat one).
    let mut run: Vec<&Prepared> = Vec::new();
    for job in batch {
        if !job.message.has_idempotency_key() {
            run.push(&job.message);
            continue;
        }
        if !run.is_empty() {
            let written = accept::write_many(&mut tx, ids, &run)
                .await
                .map_err(BatchError::Statement)?;
            answers.extend(written);
            run.clear();
        }
        let answer = accept::write_one(&mut tx, ids, &job.message)
            .await
            .map_err(BatchError::Statement)?;
        answers.push(answer);
    }
    if !run.is_empty() {
        let written = accept::write_many(&mut tx, ids, &run)
            .await
            .map_err(BatchError::Statement)?;
        answers.extend(written);
    }
    tx.commit()
        .await
        .map_err(StoreError::db(format!(
            "accept: committing a group of {} messages",
            batch.len()
        )))
        .map_err(BatchError::Commit)?;
    Ok(answers)
}
