//! Group commit: one writer task takes every accept and every outcome batch that is
//! waiting (up to a maximum), writes them in one transaction and commits once, then
//! answers each caller. One fsync then covers many messages and the outcomes of earlier
//! ones, so durability does not cap throughput at one message per disk flush, and the
//! store's one writer is not taken turn about by accepts and outcomes.
//!
//! The writer keeps its connection from round to round while work keeps coming, up to
//! [`HOLD_AT_MOST`]: taking one from sqlx's pool and giving it back costs two pings, each
//! a round trip to SQLite's worker thread, as much as the round's inserts. Then it gives
//! the connection back, so that the store's other writers (leases, billing, the admin
//! API), queued fairly on the same pool, get their turn.
//!
//! If a statement fails inside a shared transaction (e.g. two hosts raced on the same
//! idempotency key), the round is rolled back and written again in parts: the accepts
//! in one transaction, each outcome batch in its own; if the accepts fail again, each
//! message alone. One message's or batch's trouble never fails its neighbours. A failed
//! COMMIT is answered as an error to every caller in the round and not retried: whether
//! it reached the disk is unknown, and retrying could store a message twice.

use super::chain::Chain;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use sqlx::pool::PoolConnection;
use sqlx::{Any, AnyConnection, AnyPool};
use tokio::sync::{mpsc, oneshot};

use super::StoreError;
use super::accept::{self, Ids, Prepared};
use super::connect::{Backend, begin_write_on};
use super::events;
use super::types::{Accepted, NewEvent, Outcome};
use super::writer_thread::WriterThread;

/// How many jobs may wait for the writer before callers are held back.
const QUEUE: usize = 4096;

/// How long the writer keeps the write connection across rounds before it lets the
/// store's other writers have it.
const HOLD_AT_MOST: Duration = Duration::from_millis(10);

/// Told of each round that reached the disk: how long writing and committing it took, and
/// how many accepts and outcome batches it held. The host's metrics give one
/// ([`super::Store::observe_commits`]); the store itself keeps no metrics.
pub type CommitObserver = Box<dyn Fn(Duration, usize) + Send + Sync>;

/// Outcomes of leased work to record (see [`super::Store::record_with_events`]).
pub(crate) struct Record {
    pub owner: String,
    pub events: Vec<NewEvent>,
    pub outcomes: Vec<Outcome>,
    pub now_ms: i64,
}

enum Job {
    Accept {
        message: Prepared,
        reply: oneshot::Sender<Result<Accepted, StoreError>>,
    },
    Record {
        record: Record,
        reply: oneshot::Sender<Result<usize, StoreError>>,
    },
}

/// The sending side of the writer task; the task ends when the last store handle drops.
pub(crate) struct Writer {
    jobs: mpsc::Sender<Job>,
    health: Arc<WriteHealth>,
    observer: Arc<OnceLock<CommitObserver>>,
}

/// How the writer's last round ended, for readiness: a store that cannot write (a full
/// disk, a dropped database) shows here as soon as a write is tried.
#[derive(Debug, Default)]
pub(crate) struct WriteHealth {
    /// Whether the last round that ended reached the disk (true until one fails).
    failing: AtomicBool,
}

impl WriteHealth {
    fn set(&self, failing: bool) {
        self.failing.store(failing, Ordering::Relaxed);
    }
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
        let health = Arc::new(WriteHealth::default());
        let observer = Arc::new(OnceLock::new());
        let task = run(
            pool,
            backend,
            rx,
            max_batch.max(1),
            health.clone(),
            observer.clone(),
        );
        match thread {
            Some(t) => t.spawn(task),
            None => {
                tokio::spawn(task);
            }
        }
        Writer {
            jobs,
            health,
            observer,
        }
    }

    /// Sets the observer of committed rounds; false if one was set already (it stays).
    pub(crate) fn observe(&self, observer: CommitObserver) -> bool {
        self.observer.set(observer).is_ok()
    }

    /// Whether the last round failed to reach the store.
    pub(crate) fn failing(&self) -> bool {
        self.health.failing.load(Ordering::Relaxed)
    }

    /// Queues one message and waits until it is committed (or has failed).
    pub(crate) async fn submit(&self, message: Prepared) -> Result<Accepted, StoreError> {
        let (reply, answer) = oneshot::channel();
        self.jobs
            .send(Job::Accept { message, reply })
            .await
            .map_err(|_| StoreError::WriterGone)?;
        answer.await.map_err(|_| StoreError::WriterGone)?
    }

    /// Queues outcomes (already checked) and waits until they are committed; returns
    /// how many were applied.
    pub(crate) async fn record(&self, record: Record) -> Result<usize, StoreError> {
        let (reply, answer) = oneshot::channel();
        self.jobs
            .send(Job::Record { record, reply })
            .await
            .map_err(|_| StoreError::WriterGone)?;
        answer.await.map_err(|_| StoreError::WriterGone)?
    }
}

type AcceptReply = oneshot::Sender<Result<Accepted, StoreError>>;
type RecordReply = oneshot::Sender<Result<usize, StoreError>>;

/// One round's work, split by kind, each in the order it arrived.
#[derive(Default)]
struct Round {
    accepts: Vec<(Prepared, AcceptReply)>,
    records: Vec<(Record, RecordReply)>,
}

impl Round {
    fn add(&mut self, job: Job) {
        match job {
            Job::Accept { message, reply } => self.accepts.push((message, reply)),
            Job::Record { record, reply } => self.records.push((record, reply)),
        }
    }

    /// Answers every caller with `error` (the write connection could not be had);
    /// nothing of the round was written.
    fn fail(self, error: &sqlx::Error) {
        let text = format!("group commit: taking the write connection: {error}");
        tracing::error!(error = %text, "group commit failed");
        let err = || StoreError::Unavailable(text.clone());
        for (_, reply) in self.accepts {
            let _ = reply.send(Err(err()));
        }
        for (_, reply) in self.records {
            let _ = reply.send(Err(err()));
        }
    }
}

async fn run(
    pool: AnyPool,
    backend: Backend,
    mut rx: mpsc::Receiver<Job>,
    max_batch: usize,
    health: Arc<WriteHealth>,
    observer: Arc<OnceLock<CommitObserver>>,
) {
    let mut ids = Ids::default();
    let mut jobs = Vec::with_capacity(max_batch);
    // The write connection and when it was taken from the pool.
    let mut held: Option<(PoolConnection<Any>, Instant)> = None;
    while rx.recv_many(&mut jobs, max_batch).await > 0 {
        let mut round = Round::default();
        for job in jobs.drain(..) {
            round.add(job);
        }
        if held
            .as_ref()
            .is_some_and(|(_, since)| since.elapsed() >= HOLD_AT_MOST)
        {
            // Dropping returns it to the pool, where other writers may be waiting.
            held = None;
        }
        let (mut conn, since) = match held.take() {
            Some(held) => held,
            None => match pool.acquire().await {
                Ok(conn) => (conn, Instant::now()),
                Err(e) => {
                    health.set(true);
                    round.fail(&e);
                    continue;
                }
            },
        };
        let end = commit_round(&mut conn, backend, &mut ids, round, observer.get()).await;
        match end {
            RoundEnd::Clean => health.set(false),
            RoundEnd::Broken => health.set(true),
            // A statement refused (a duplicate key): the store itself is fine.
            RoundEnd::Failed => {}
        }
        match end {
            // Kept only while more work waits.
            RoundEnd::Clean if !rx.is_empty() => held = Some((conn, since)),
            RoundEnd::Clean | RoundEnd::Failed => {}
            // Closed, not given back: the pool opens a fresh one for the next round.
            RoundEnd::Broken => drop(conn.detach()),
        }
    }
}

/// How a round ended, and so what becomes of its connection.
enum RoundEnd {
    /// Everything was written: the connection may be kept for the next round.
    Clean,
    /// Something failed but the connection is sound: back to the pool.
    Failed,
    /// A COMMIT failed or a transaction could not begin: the database may have ended
    /// the transaction behind sqlx's back (SQLite rolls back by itself when the disk is
    /// full), and sqlx would refuse every later BEGIN on this connection. It is closed.
    Broken,
}

/// Writes one round and answers its callers.
async fn commit_round(
    conn: &mut AnyConnection,
    backend: Backend,
    ids: &mut Ids,
    round: Round,
    observer: Option<&CommitObserver>,
) -> RoundEnd {
    tracing::trace!(
        accepts = round.accepts.len(),
        records = round.records.len(),
        "group commit"
    );
    let messages: Vec<&Prepared> = round.accepts.iter().map(|(m, _)| m).collect();
    let records: Vec<&Record> = round.records.iter().map(|(r, _)| r).collect();
    let started = Instant::now();
    match write_round(conn, backend, ids, &messages, &records).await {
        Ok((accepted, recorded)) => {
            if let Some(observe) = observer {
                observe(started.elapsed(), messages.len() + records.len());
            }
            // A caller that gave up waiting still has its work stored.
            for ((_, reply), answer) in round.accepts.into_iter().zip(accepted) {
                let _ = reply.send(Ok(answer));
            }
            for ((_, reply), answer) in round.records.into_iter().zip(recorded) {
                let _ = reply.send(Ok(answer));
            }
            RoundEnd::Clean
        }
        Err(BatchError::Commit(e)) => {
            let text = match &e {
                StoreError::Database { source, .. } => source.to_string(),
                other => other.to_string(),
            };
            let (a, r) = (round.accepts.len(), round.records.len());
            tracing::error!(error = %text, accepts = a, records = r, "group commit failed");
            let unknown = || {
                StoreError::CommitUnknown(format!(
                    "committing a group of {a} messages and {r} outcome batches failed: {text}"
                ))
            };
            for (_, reply) in round.accepts {
                let _ = reply.send(Err(unknown()));
            }
            for (_, reply) in round.records {
                let _ = reply.send(Err(unknown()));
            }
            RoundEnd::Broken
        }
        Err(BatchError::Begin(e)) => {
            let text = e.to_string();
            tracing::error!(error = %text, accepts = messages.len(), records = records.len(), "group commit could not begin a transaction");
            let unavailable = || StoreError::Unavailable(text.clone());
            for (_, reply) in round.accepts {
                let _ = reply.send(Err(unavailable()));
            }
            for (_, reply) in round.records {
                let _ = reply.send(Err(unavailable()));
            }
            RoundEnd::Broken
        }
        Err(BatchError::Statement(e)) => {
            tracing::debug!(error = %Chain(&e), accepts = messages.len(), records = records.len(), "group write failed; writing in parts");
            let mut accepts = round.accepts;
            let mut broken = false;
            if !round.records.is_empty() && !accepts.is_empty() {
                // The accepts together first: the outcomes may have been the trouble.
                let messages: Vec<&Prepared> = accepts.iter().map(|(m, _)| m).collect();
                match write_round(conn, backend, ids, &messages, &[]).await {
                    Ok((accepted, _)) => {
                        for ((_, reply), answer) in accepts.drain(..).zip(accepted) {
                            let _ = reply.send(Ok(answer));
                        }
                    }
                    Err(e @ (BatchError::Commit(_) | BatchError::Begin(_))) => {
                        broken = true;
                        let e = e.into_store_error();
                        let text = e.to_string();
                        for (_, reply) in accepts.drain(..) {
                            let _ = reply.send(Err(StoreError::CommitUnknown(text.clone())));
                        }
                    }
                    // Alone, below.
                    Err(BatchError::Statement(_)) => {}
                }
            }
            // Once the connection is broken, what is left is answered without it.
            for (message, reply) in accepts {
                let answer = if broken {
                    Err(BatchError::Begin(StoreError::Unavailable(
                        "group commit: the write connection failed earlier in this round".into(),
                    )))
                } else {
                    write_round(conn, backend, ids, &[&message], &[])
                        .await
                        .map(|(mut accepted, _)| accepted.remove(0))
                };
                broken |= matches!(answer, Err(BatchError::Commit(_) | BatchError::Begin(_)));
                let _ = reply.send(answer.map_err(BatchError::into_store_error));
            }
            for (record, reply) in round.records {
                let answer = if broken {
                    Err(BatchError::Begin(StoreError::Unavailable(
                        "group commit: the write connection failed earlier in this round".into(),
                    )))
                } else {
                    write_round(conn, backend, ids, &[], &[&record])
                        .await
                        .map(|(_, mut recorded)| recorded.remove(0))
                };
                broken |= matches!(answer, Err(BatchError::Commit(_) | BatchError::Begin(_)));
                let _ = reply.send(answer.map_err(BatchError::into_store_error));
            }
            if broken {
                RoundEnd::Broken
            } else {
                RoundEnd::Failed
            }
        }
    }
}

enum BatchError {
    /// No transaction could begin on the connection; nothing was written.
    Begin(StoreError),
    /// A statement failed; nothing was committed.
    Statement(StoreError),
    /// COMMIT failed; the outcome on disk is unknown.
    Commit(StoreError),
}

impl BatchError {
    fn into_store_error(self) -> StoreError {
        match self {
            BatchError::Begin(e) | BatchError::Statement(e) | BatchError::Commit(e) => e,
        }
    }
}

/// Writes the messages, then the outcome batches, in one transaction; the answers are
/// in the order given.
async fn write_round(
    conn: &mut AnyConnection,
    backend: Backend,
    ids: &mut Ids,
    messages: &[&Prepared],
    records: &[&Record],
) -> Result<(Vec<Accepted>, Vec<usize>), BatchError> {
    let mut tx = begin_write_on(conn, backend)
        .await
        .map_err(|e| {
            // The cause, not only where: "beginning a transaction" alone told nobody why.
            let cause = e.to_string();
            StoreError::db(format!("group commit: beginning a transaction ({cause})"))(e)
        })
        .map_err(BatchError::Begin)?;
    let accepted = write_accepts(&mut tx, ids, messages)
        .await
        .map_err(BatchError::Statement)?;
    let mut recorded = Vec::with_capacity(records.len());
    for r in records {
        let applied = events::write_record(&mut tx, &r.owner, &r.events, &r.outcomes, r.now_ms)
            .await
            .map_err(BatchError::Statement)?;
        recorded.push(applied);
    }
    tx.commit()
        .await
        .map_err(StoreError::db(format!(
            "group commit: committing {} messages and {} outcome batches",
            messages.len(),
            records.len()
        )))
        .map_err(BatchError::Commit)?;
    Ok((accepted, recorded))
}

async fn write_accepts(
    tx: &mut AnyConnection,
    ids: &mut Ids,
    messages: &[&Prepared],
) -> Result<Vec<Accepted>, StoreError> {
    let mut answers = Vec::with_capacity(messages.len());
    // Runs of messages without idempotency keys go in multi-row statements; a keyed
    // message is written on its own, after what came before it (it may repeat one).
    let mut run: Vec<&Prepared> = Vec::new();
    for &message in messages {
        if !message.has_idempotency_key() {
            run.push(message);
            continue;
        }
        if !run.is_empty() {
            answers.extend(accept::write_many(tx, ids, &run).await?);
            run.clear();
        }
        answers.push(accept::write_one(tx, ids, message).await?);
    }
    if !run.is_empty() {
        answers.extend(accept::write_many(tx, ids, &run).await?);
    }
    if !messages.is_empty() {
        // A suspended tenant's new mail is stored held, in this same commit.
        let tenants: Vec<&str> = messages.iter().map(|m| m.tenant_id()).collect();
        let now_ms = messages.iter().map(|m| m.now_ms()).max().unwrap_or(0);
        super::queue::park_suspended(tx, &tenants, &mut answers, now_ms).await?;
    }
    Ok(answers)
}
