//! What bounce intake writes: a bounce e-mail's verdict on one recipient (an event on
//! the relay that carried it, a state change for a failure, a suppression for a hard
//! bounce or a complaint) in one transaction, and secrets the host keeps in the store.

use serde::Serialize;

use super::codec::{col, get_idx, get_state};
use super::events::insert_event;
use super::suppressions::{NewSuppression, upsert_in};
use super::types::{EventKind, NewEvent, RecipientState};
use super::{Store, StoreError};

/// The recipient a VERP token names, as intake needs it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BounceTarget {
    pub message_id: String,
    pub recipient_idx: i32,
    pub tenant_id: String,
    pub address: String,
    pub state: RecipientState,
    /// The relay of the last attempt: the one that carried the message.
    pub last_relay: Option<String>,
}

/// One bounce e-mail's verdict on one recipient.
#[derive(Debug, Clone, PartialEq)]
pub struct BounceReport {
    pub message_id: String,
    pub recipient_idx: i32,
    /// `Bounced` (the recipient becomes `bounced`), `Delayed`, `Complained` or
    /// `BounceNote` (an event only).
    pub kind: EventKind,
    /// The event's detail: reason, hard, status, diagnostic… and `source`.
    pub detail: serde_json::Value,
    /// Suppress the recipient's address for its tenant with this reason and source.
    pub suppress: Option<(String, String)>,
    pub at_ms: i64,
}

/// What [`Store::record_bounce`] did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BounceRecorded {
    pub target: BounceTarget,
    /// The recipient went to `bounced` (it was not already, and not being delivered).
    pub state_changed: bool,
    pub suppressed: bool,
}

const TARGET_SQL: &str = "SELECT r.message_id, r.idx, r.address, r.state, r.last_relay, \
    m.tenant_id FROM recipients r JOIN messages m ON m.id = r.message_id \
    WHERE r.message_id = $1 AND r.idx = $2";

fn target_from(row: &sqlx::any::AnyRow, op: &str) -> Result<BounceTarget, StoreError> {
    Ok(BounceTarget {
        message_id: col(row, op, "message_id")?,
        recipient_idx: get_idx(row, op, "idx")?,
        tenant_id: col(row, op, "tenant_id")?,
        address: col(row, op, "address")?,
        state: get_state(row, op)?,
        last_relay: col(row, op, "last_relay")?,
    })
}

impl Store {
    /// The recipient `(message_id, recipient_idx)` with its tenant and last relay;
    /// `None` if there is no such recipient.
    pub async fn bounce_target(
        &self,
        message_id: &str,
        recipient_idx: i32,
    ) -> Result<Option<BounceTarget>, StoreError> {
        let op = "bounce_target";
        let row = sqlx::query(TARGET_SQL)
            .bind(message_id)
            .bind(i64::from(recipient_idx))
            .fetch_optional(&self.pools().read)
            .await
            .map_err(StoreError::db(format!(
                "{op}: message {message_id:?} recipient {recipient_idx}"
            )))?;
        row.map(|r| target_from(&r, op)).transpose()
    }

    /// Applies a bounce e-mail's verdict in one transaction: appends the event (naming
    /// the recipient's last relay, so relay stats count it there); for `Bounced` moves
    /// the recipient to `bounced` from any state but `delivering` (a late bounce after
    /// `delivered` included; a leased recipient's outcome is its host's to write); and
    /// suppresses the address when asked. `None` if there is no such recipient.
    pub async fn record_bounce(
        &self,
        report: BounceReport,
    ) -> Result<Option<BounceRecorded>, StoreError> {
        let op = "record_bounce";
        if !matches!(
            report.kind,
            EventKind::Bounced | EventKind::Delayed | EventKind::Complained | EventKind::BounceNote
        ) {
            return Err(StoreError::invalid(
                op,
                format!(
                    "a bounce cannot be recorded as a {:?} event",
                    report.kind.as_str()
                ),
            ));
        }
        let what = || {
            format!(
                "{op}: message {:?} recipient {}",
                report.message_id, report.recipient_idx
            )
        };
        let mut tx = self
            .pools()
            .begin_write()
            .await
            .map_err(StoreError::db(what()))?;
        let row = sqlx::query(TARGET_SQL)
            .bind(&report.message_id)
            .bind(i64::from(report.recipient_idx))
            .fetch_optional(&mut *tx)
            .await
            .map_err(StoreError::db(what()))?;
        let Some(row) = row else {
            return Ok(None);
        };
        let target = target_from(&row, op)?;
        insert_event(
            &mut tx,
            &NewEvent {
                message_id: target.message_id.clone(),
                recipient_idx: Some(target.recipient_idx),
                tenant_id: target.tenant_id.clone(),
                kind: report.kind,
                relay: target.last_relay.clone(),
                detail: report.detail.clone(),
                at_ms: report.at_ms,
            },
            op,
        )
        .await?;
        let mut state_changed = false;
        if report.kind == EventKind::Bounced {
            let done = sqlx::query(
                "UPDATE recipients SET state = 'bounced', updated_at_ms = $3 \
                 WHERE message_id = $1 AND idx = $2 AND state NOT IN ('delivering', 'bounced')",
            )
            .bind(&target.message_id)
            .bind(i64::from(target.recipient_idx))
            .bind(report.at_ms)
            .execute(&mut *tx)
            .await
            .map_err(StoreError::db(what()))?;
            state_changed = done.rows_affected() > 0;
        }
        let suppressed = report.suppress.is_some();
        if let Some((reason, source)) = report.suppress {
            let new = NewSuppression {
                tenant_id: target.tenant_id.clone(),
                address: target.address.clone(),
                reason,
                source,
                detail: report.detail.clone(),
                message_id: Some(target.message_id.clone()),
                added_by: super::AddedBy::Platform,
            };
            upsert_in(&mut tx, &new, report.at_ms, op).await?;
        }
        tx.commit()
            .await
            .map_err(|_| StoreError::CommitUnknown(what()))?;
        Ok(Some(BounceRecorded {
            target,
            state_changed,
            suppressed,
        }))
    }

    /// The host secret `name`, made with `make` and stored if there is none yet. Hosts
    /// that start together agree: the first insert wins and everyone reads it back.
    pub async fn host_secret(
        &self,
        name: &str,
        make: impl FnOnce() -> String,
        now_ms: i64,
    ) -> Result<String, StoreError> {
        let op = "host_secret";
        sqlx::query(
            "INSERT INTO host_secrets (name, value, created_at_ms) VALUES ($1, $2, $3) \
             ON CONFLICT (name) DO NOTHING",
        )
        .bind(name)
        .bind(make())
        .bind(now_ms)
        .execute(&self.pools().write)
        .await
        .map_err(StoreError::db(format!("{op} {name:?}")))?;
        let row = sqlx::query("SELECT value FROM host_secrets WHERE name = $1")
            .bind(name)
            .fetch_one(&self.pools().write)
            .await
            .map_err(StoreError::db(format!("{op} {name:?}")))?;
        col(&row, op, "value")
    }

    /// The host secret `name`, if there is one; a read, nothing is written.
    pub async fn get_host_secret(&self, name: &str) -> Result<Option<String>, StoreError> {
        let op = "get_host_secret";
        let row = sqlx::query("SELECT value FROM host_secrets WHERE name = $1")
            .bind(name)
            .fetch_optional(&self.pools().read)
            .await
            .map_err(StoreError::db(format!("{op} {name:?}")))?;
        row.map(|r| col(&r, op, "value")).transpose()
    }

    /// Sets the host secret `name` to `value`, replacing what was there.
    pub async fn set_host_secret(
        &self,
        name: &str,
        value: &str,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO host_secrets (name, value, created_at_ms) VALUES ($1, $2, $3) \
             ON CONFLICT (name) DO UPDATE SET value = excluded.value, \
             created_at_ms = excluded.created_at_ms",
        )
        .bind(name)
        .bind(value)
        .bind(now_ms)
        .execute(&self.pools().write)
        .await
        .map_err(StoreError::db(format!("set_host_secret {name:?}")))?;
        Ok(())
    }
}
