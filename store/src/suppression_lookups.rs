//! Suppression checks at acceptance, batched: every accepted message asks which of its
//! recipients its tenant has suppressed, and one task answers all the questions that
//! are waiting with one query (per few hundred addresses) instead of one per message —
//! the only per-message statement that was left on the accept path.

use std::collections::{HashMap, HashSet};

use sqlx::AnyPool;
use tokio::sync::{mpsc, oneshot};

use super::StoreError;
use super::codec::{positional, rows_per_statement, value_rows};
use super::suppressions::{COLUMNS, Suppression, from_row};

/// Questions that may wait for the task before callers are held back.
const QUEUE: usize = 4096;
/// Most questions answered by one round of queries.
const MAX_BATCH: usize = 256;

type Answer = Result<HashMap<String, Suppression>, StoreError>;

struct Question {
    tenant_id: String,
    /// Normalised addresses.
    addresses: Vec<String>,
    reply: oneshot::Sender<Answer>,
}

/// The asking side; the task ends when the last store handle drops.
pub(crate) struct Lookups {
    questions: mpsc::Sender<Question>,
}

impl Lookups {
    /// Starts the answering task on the current tokio runtime.
    pub(crate) fn start(pool: AnyPool) -> Lookups {
        let (questions, rx) = mpsc::channel(QUEUE);
        tokio::spawn(run(pool, rx));
        Lookups { questions }
    }

    /// Which of `addresses` (normalised) `tenant_id` has suppressed, by address.
    pub(crate) async fn ask(&self, tenant_id: &str, addresses: Vec<String>) -> Answer {
        let (reply, answer) = oneshot::channel();
        self.questions
            .send(Question {
                tenant_id: tenant_id.to_owned(),
                addresses,
                reply,
            })
            .await
            .map_err(|_| StoreError::WriterGone)?;
        answer.await.map_err(|_| StoreError::WriterGone)?
    }
}

async fn run(pool: AnyPool, mut rx: mpsc::Receiver<Question>) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while rx.recv_many(&mut batch, MAX_BATCH).await > 0 {
        let questions = std::mem::take(&mut batch);
        match find(&pool, &questions).await {
            Ok(found) => {
                for q in questions {
                    let theirs = found.get(&q.tenant_id);
                    let mine = q
                        .addresses
                        .iter()
                        .filter_map(|a| Some((a.clone(), theirs?.get(a)?.clone())))
                        .collect();
                    let _ = q.reply.send(Ok(mine));
                }
            }
            Err(e) => {
                // One failed query answers every question of the round; each caller
                // gets the database's reason (the error itself is not clonable).
                let text = match &e {
                    StoreError::Database { context, source } => format!("{context}: {source}"),
                    other => other.to_string(),
                };
                for q in questions {
                    let _ = q.reply.send(Err(StoreError::Database {
                        context: format!("suppressed_among for tenant {:?}", q.tenant_id),
                        source: sqlx::Error::Protocol(text.clone()),
                    }));
                }
            }
        }
    }
}

/// Every suppression any of `questions` asks about, by tenant and address.
async fn find(
    pool: &AnyPool,
    questions: &[Question],
) -> Result<HashMap<String, HashMap<String, Suppression>>, StoreError> {
    let op = "suppressed_among";
    let mut seen = HashSet::new();
    let pairs: Vec<(&str, &str)> = questions
        .iter()
        .flat_map(|q| {
            q.addresses
                .iter()
                .map(|a| (q.tenant_id.as_str(), a.as_str()))
        })
        .filter(|p| seen.insert(*p))
        .collect();
    let mut out = HashMap::new();
    if pairs.is_empty() {
        return Ok(out);
    }
    let mut conn = pool
        .acquire()
        .await
        .map_err(StoreError::db(format!("{op}: a connection")))?;
    for chunk in pairs.chunks(rows_per_statement(2)) {
        let sql = format!(
            "SELECT {COLUMNS} FROM suppressions WHERE (tenant_id, address) IN (VALUES {})",
            value_rows(chunk.len(), 2)
        );
        let sql = positional(&conn, sql);
        let mut q = sqlx::query(&sql);
        for (tenant, address) in chunk {
            q = q.bind(*tenant).bind(*address);
        }
        let rows = q
            .fetch_all(&mut *conn)
            .await
            .map_err(StoreError::db(format!(
                "{op}: {} addresses (first: {:?} of tenant {:?})",
                chunk.len(),
                chunk[0].1,
                chunk[0].0
            )))?;
        for row in &rows {
            let s = from_row(row, op)?;
            out.entry(s.tenant_id.clone())
                .or_insert_with(HashMap::new)
                .insert(s.address.clone(), s);
        }
    }
    Ok(out)
}
