//! Writing accepted messages: validation before queueing, then their rows (message,
//! recipients, `accepted` events) inside a transaction the group committer owns — a
//! message with an idempotency key on its own (it may be a repeat), the others of a
//! group in multi-row `INSERT`s, one statement per table per hundred-odd rows instead
//! of three per message: every statement is a round trip to the database (for SQLite, to
//! sqlx's worker thread and back).

use std::time::{Duration, UNIX_EPOCH};

use sqlx::AnyConnection;

use super::StoreError;
use super::codec::{
    col, domain_of, get_state, list_to_text, positional, rows_per_statement, value_rows,
};
use super::events::{insert_event, insert_events};
use super::types::{Accepted, EventKind, Lease, NewEvent, NewMessage, RecipientState};

/// The most recipients one message may have; more is almost certainly a caller bug.
pub const MAX_RECIPIENTS: usize = 10_000;
/// The longest idempotency key kept.
pub const MAX_IDEMPOTENCY_KEY: usize = 256;
/// The most tags one message may carry (the API refuses more).
pub const MAX_TAGS: usize = 64;
/// The longest tag kept in `message_tags`, and so the longest a search may ask for.
pub const MAX_TAG_BYTES: usize = 128;

/// A message that passed validation, with each recipient's domain worked out, waiting
/// for the writer.
#[derive(Debug)]
pub(crate) struct Prepared {
    msg: NewMessage,
    domains: Vec<String>,
    now_ms: i64,
    lease: Option<LeaseTerms>,
}

/// A lease the recipients are written with, so the accepting host can deliver them at
/// once without leasing them back out of the store.
#[derive(Debug)]
pub(crate) struct LeaseTerms {
    pub owner: String,
    pub until_ms: i64,
}

impl Prepared {
    pub(crate) fn new(msg: NewMessage, now_ms: i64) -> Result<Prepared, StoreError> {
        let op = "accept";
        if msg.tenant_id.is_empty() {
            return Err(StoreError::invalid(op, "tenant id is empty"));
        }
        if msg.recipients.is_empty() {
            return Err(StoreError::invalid(
                op,
                "a message needs at least one recipient",
            ));
        }
        if msg.recipients.len() > MAX_RECIPIENTS {
            return Err(StoreError::invalid(
                op,
                format!(
                    "{} recipients; at most {MAX_RECIPIENTS} per message",
                    msg.recipients.len()
                ),
            ));
        }
        let domains = msg
            .recipients
            .iter()
            .map(|r| {
                domain_of(r).ok_or_else(|| {
                    StoreError::invalid(op, format!("recipient {r:?} is not an address"))
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        if !msg.sender.is_empty() && domain_of(&msg.sender).is_none() {
            return Err(StoreError::invalid(
                op,
                format!("sender {:?} is not an address", msg.sender),
            ));
        }
        if msg.body.is_empty() {
            return Err(StoreError::invalid(op, "the message body is empty"));
        }
        if msg.tags.len() > MAX_TAGS {
            return Err(StoreError::invalid(
                op,
                format!("{} tags; at most {MAX_TAGS} per message", msg.tags.len()),
            ));
        }
        if let Some(key) = &msg.idempotency_key
            && (key.is_empty() || key.len() > MAX_IDEMPOTENCY_KEY)
        {
            return Err(StoreError::invalid(
                op,
                format!("idempotency key {key:?} must be 1 to {MAX_IDEMPOTENCY_KEY} bytes"),
            ));
        }
        Ok(Prepared {
            msg,
            domains,
            now_ms,
            lease: None,
        })
    }

    /// The recipients are to be written leased on these terms.
    pub(crate) fn leased(mut self, terms: LeaseTerms) -> Prepared {
        self.lease = Some(terms);
        self
    }

    /// The state the recipients are written in, and the lease columns.
    fn recipient_state(&self) -> (RecipientState, Option<&str>, Option<i64>) {
        match &self.lease {
            Some(t) => (
                RecipientState::Delivering,
                Some(t.owner.as_str()),
                Some(t.until_ms),
            ),
            None => (RecipientState::Queued, None, None),
        }
    }

    /// What the dispatcher needs to deliver the recipients of this message, stored as
    /// `id`, when they were written leased.
    fn leases(&self, id: &str) -> Vec<Lease> {
        let Some(terms) = &self.lease else {
            return Vec::new();
        };
        let msg = &self.msg;
        msg.recipients
            .iter()
            .zip(&self.domains)
            .enumerate()
            .map(|(idx, (address, domain))| Lease {
                message_id: id.to_owned(),
                tenant_id: msg.tenant_id.clone(),
                recipient_idx: i32::try_from(idx).unwrap_or(i32::MAX),
                address: address.clone(),
                domain: domain.clone(),
                attempts: 0,
                created_at_ms: self.now_ms,
                max_age_secs: msg.max_age_secs,
                sender: msg.sender.clone(),
                size: u64::try_from(msg.body.len()).unwrap_or(u64::MAX),
                tags: msg.tags.clone(),
                lease_until_ms: terms.until_ms,
            })
            .collect()
    }
}

/// Makes message ids: ULIDs whose time part is the caller's `now_ms`, strictly
/// increasing within this process (so ids sort by acceptance).
#[derive(Default)]
pub(crate) struct Ids(ulid::Generator);

impl Ids {
    fn next(&mut self, now_ms: i64) -> ulid::Ulid {
        let at = UNIX_EPOCH + Duration::from_millis(u64::try_from(now_ms).unwrap_or(0));
        // The generator only fails when 80 random bits overflow within one millisecond;
        // a fresh random id is then still unique.
        self.0
            .generate_from_datetime(at)
            .unwrap_or_else(|_| ulid::Ulid::from_datetime(at))
    }
}

impl Prepared {
    /// Whether writing it must first look for an earlier message with the same key.
    pub(crate) fn has_idempotency_key(&self) -> bool {
        self.msg.idempotency_key.is_some()
    }

    pub(crate) fn tenant_id(&self) -> &str {
        &self.msg.tenant_id
    }

    pub(crate) fn now_ms(&self) -> i64 {
        self.now_ms
    }
}

/// Writes messages without idempotency keys inside the caller's transaction, each
/// table's rows in multi-row statements. The answers are in `batch`'s order.
pub(crate) async fn write_many(
    conn: &mut AnyConnection,
    ids: &mut Ids,
    batch: &[&Prepared],
) -> Result<Vec<Accepted>, StoreError> {
    debug_assert!(batch.iter().all(|p| !p.has_idempotency_key()));
    let context = || format!("accept: a group of {} messages", batch.len());
    let id_of: Vec<String> = batch
        .iter()
        .map(|p| ids.next(p.now_ms).to_string())
        .collect();
    let messages: Vec<(&str, &Prepared)> = id_of
        .iter()
        .map(String::as_str)
        .zip(batch.iter().copied())
        .collect();
    for chunk in messages.chunks(rows_per_statement(10)) {
        let sql = format!(
            "INSERT INTO messages (id, tenant_id, idempotency_key, sender, body, size, tags, \
             max_age_secs, created_at_ms, header_message_id) VALUES {}",
            value_rows(chunk.len(), 10)
        );
        let sql = positional(&*conn, sql);
        let mut q = sqlx::query(&sql);
        for (id, p) in chunk {
            let msg = &p.msg;
            q = q
                .bind(*id)
                .bind(&msg.tenant_id)
                .bind(None::<String>)
                .bind(&msg.sender)
                .bind(msg.body.as_slice())
                .bind(i64::try_from(msg.body.len()).unwrap_or(i64::MAX))
                .bind(list_to_text(&msg.tags))
                .bind(i64::from(msg.max_age_secs))
                .bind(p.now_ms)
                .bind(msg.header_message_id.clone());
        }
        q.execute(&mut *conn)
            .await
            .map_err(StoreError::db(format!("{}: messages", context())))?;
    }
    let tags: Vec<(&str, &str, &str)> = messages
        .iter()
        .flat_map(|&(id, p)| {
            indexed_tags(&p.msg.tags).map(move |tag| (p.msg.tenant_id.as_str(), tag, id))
        })
        .collect();
    insert_tags(conn, &tags, &context()).await?;
    // (message id, recipient index, address, domain, message)
    let recipients: Vec<(&str, i32, &String, &String, &Prepared)> = messages
        .iter()
        .flat_map(|&(id, p)| {
            p.msg.recipients.iter().zip(&p.domains).enumerate().map(
                move |(idx, (address, domain))| {
                    (
                        id,
                        i32::try_from(idx).unwrap_or(i32::MAX),
                        address,
                        domain,
                        p,
                    )
                },
            )
        })
        .collect();
    for chunk in recipients.chunks(rows_per_statement(11)) {
        let sql = format!(
            "INSERT INTO recipients (message_id, idx, address, domain, state, attempts, \
             next_attempt_at_ms, updated_at_ms, lease_owner, lease_until_ms, tenant_id) VALUES {}",
            value_rows(chunk.len(), 11)
        );
        let sql = positional(&*conn, sql);
        let mut q = sqlx::query(&sql);
        for (id, idx, address, domain, p) in chunk {
            let (state, owner, until) = p.recipient_state();
            q = q
                .bind(*id)
                .bind(i64::from(*idx))
                .bind(*address)
                .bind(*domain)
                .bind(state.as_str())
                .bind(0_i64)
                .bind(p.now_ms)
                .bind(p.now_ms)
                .bind(owner)
                .bind(until)
                .bind(&p.msg.tenant_id);
        }
        q.execute(&mut *conn)
            .await
            .map_err(StoreError::db(format!("{}: recipients", context())))?;
    }
    let accepted: Vec<NewEvent> = recipients
        .iter()
        .map(|&(id, idx, address, _, p)| accepted_event(id, idx, address, p))
        .collect();
    insert_events(conn, &accepted, "accept").await?;
    Ok(messages
        .iter()
        .map(|&(id, p)| Accepted {
            id: id.to_owned(),
            recipients: p
                .msg
                .recipients
                .iter()
                .map(|a| (a.clone(), RecipientState::Queued))
                .collect(),
            leases: p.leases(id),
            duplicate: false,
            header_message_id: p.msg.header_message_id.clone(),
        })
        .collect())
}

/// The tags of a message that `message_tags` keeps (migration 0028): each once, and
/// only those a search can ask for (at most [`MAX_TAG_BYTES`]).
fn indexed_tags(tags: &[String]) -> impl Iterator<Item = &str> {
    tags.iter()
        .enumerate()
        .filter(|(i, t)| !t.is_empty() && t.len() <= MAX_TAG_BYTES && !tags[..*i].contains(*t))
        .map(|(_, t)| t.as_str())
}

/// Writes `(tenant, tag, message id)` rows of `message_tags`: nothing for untagged
/// messages, else one multi-row statement per few hundred tags.
pub(crate) async fn insert_tags(
    conn: &mut AnyConnection,
    rows: &[(&str, &str, &str)],
    context: &str,
) -> Result<(), StoreError> {
    for chunk in rows.chunks(rows_per_statement(3)) {
        let sql = format!(
            "INSERT INTO message_tags (tenant_id, tag, message_id) VALUES {}",
            value_rows(chunk.len(), 3)
        );
        let sql = positional(&*conn, sql);
        let mut q = sqlx::query(&sql);
        for (tenant, tag, id) in chunk {
            q = q.bind(*tenant).bind(*tag).bind(*id);
        }
        q.execute(&mut *conn)
            .await
            .map_err(StoreError::db(format!("{context}: tags")))?;
    }
    Ok(())
}

/// The `accepted` event of one recipient of `p`.
fn accepted_event(message_id: &str, idx: i32, address: &str, p: &Prepared) -> NewEvent {
    NewEvent {
        message_id: message_id.to_owned(),
        recipient_idx: Some(idx),
        tenant_id: p.msg.tenant_id.clone(),
        kind: EventKind::Accepted,
        relay: None,
        detail: serde_json::json!({ "address": address }),
        at_ms: p.now_ms,
    }
}

/// Writes one message inside the caller's transaction, or finds the earlier message
/// with the same idempotency key.
pub(crate) async fn write_one(
    conn: &mut AnyConnection,
    ids: &mut Ids,
    p: &Prepared,
) -> Result<Accepted, StoreError> {
    let msg = &p.msg;
    if let Some(key) = &msg.idempotency_key
        && let Some(found) = find_duplicate(conn, &msg.tenant_id, key).await?
    {
        return Ok(found);
    }
    let id = ids.next(p.now_ms).to_string();
    let context = || format!("accept: message {id:?} of tenant {:?}", msg.tenant_id);
    sqlx::query(
        "INSERT INTO messages (id, tenant_id, idempotency_key, sender, body, size, tags, \
         max_age_secs, created_at_ms, header_message_id) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
    )
    .bind(&id)
    .bind(&msg.tenant_id)
    .bind(msg.idempotency_key.clone())
    .bind(&msg.sender)
    .bind(msg.body.as_slice())
    .bind(i64::try_from(msg.body.len()).unwrap_or(i64::MAX))
    .bind(list_to_text(&msg.tags))
    .bind(i64::from(msg.max_age_secs))
    .bind(p.now_ms)
    .bind(msg.header_message_id.clone())
    .execute(&mut *conn)
    .await
    .map_err(StoreError::db(context()))?;
    let tags: Vec<(&str, &str, &str)> = indexed_tags(&msg.tags)
        .map(|tag| (msg.tenant_id.as_str(), tag, id.as_str()))
        .collect();
    insert_tags(conn, &tags, &context()).await?;
    let mut recipients = Vec::with_capacity(msg.recipients.len());
    let (state, owner, until) = p.recipient_state();
    for (idx, (address, domain)) in msg.recipients.iter().zip(&p.domains).enumerate() {
        let idx = i32::try_from(idx).unwrap_or(i32::MAX);
        sqlx::query(
            "INSERT INTO recipients (message_id, idx, address, domain, state, attempts, \
             next_attempt_at_ms, updated_at_ms, lease_owner, lease_until_ms, tenant_id) \
             VALUES ($1, $2, $3, $4, $5, 0, $6, $6, $7, $8, $9)",
        )
        .bind(&id)
        .bind(i64::from(idx))
        .bind(address)
        .bind(domain)
        .bind(state.as_str())
        .bind(p.now_ms)
        .bind(owner)
        .bind(until)
        .bind(&msg.tenant_id)
        .execute(&mut *conn)
        .await
        .map_err(StoreError::db(format!(
            "{}: recipient {address:?}",
            context()
        )))?;
        insert_event(conn, &accepted_event(&id, idx, address, p), "accept").await?;
        recipients.push((address.clone(), RecipientState::Queued));
    }
    Ok(Accepted {
        leases: p.leases(&id),
        id,
        recipients,
        duplicate: false,
        header_message_id: msg.header_message_id.clone(),
    })
}

/// The message of tenant `$1` with idempotency key `$2` (also for its plan, `plans.rs`).
pub(crate) const FIND_DUPLICATE_SQL: &str =
    "SELECT id, header_message_id FROM messages WHERE tenant_id = $1 AND idempotency_key = $2";

async fn find_duplicate(
    conn: &mut AnyConnection,
    tenant_id: &str,
    key: &str,
) -> Result<Option<Accepted>, StoreError> {
    let op = "accept";
    let context = || format!("accept: idempotency key {key:?} of tenant {tenant_id:?}");
    let Some(row) = sqlx::query(FIND_DUPLICATE_SQL)
        .bind(tenant_id)
        .bind(key)
        .fetch_optional(&mut *conn)
        .await
        .map_err(StoreError::db(context()))?
    else {
        return Ok(None);
    };
    let id: String = col(&row, op, "id")?;
    let header_message_id: Option<String> = col(&row, op, "header_message_id")?;
    let rows =
        sqlx::query("SELECT address, state FROM recipients WHERE message_id = $1 ORDER BY idx")
            .bind(&id)
            .fetch_all(&mut *conn)
            .await
            .map_err(StoreError::db(context()))?;
    let recipients = rows
        .iter()
        .map(|r| Ok((col(r, op, "address")?, get_state(r, op)?)))
        .collect::<Result<Vec<_>, StoreError>>()?;
    Ok(Some(Accepted {
        id,
        recipients,
        leases: Vec::new(),
        duplicate: true,
        header_message_id,
    }))
}
