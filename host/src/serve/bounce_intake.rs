//! The SMTP listener's [`Handler`]: a `RCPT TO` must be a VERP return path that
//! verifies and names a stored recipient; a message is read by the pipeline's bounce
//! plugin and its verdict recorded on that recipient before the 250.

use super::bounces::{pick, verdict};
use super::plugins::call;
use super::state::{Server, now_ms};
use crate::smtp_in::{self, Handler, Reply, Transaction};
use crate::stage::{BounceInput, Stage};
use crate::store::{BounceReport, BounceTarget};
use crate::verp::VerpError;
use anyhow::Context;
use std::sync::Arc;
use std::time::Duration;

/// Bad commands before a session is closed.
const MAX_ERRORS: u32 = 20;

/// Bounce intake for one server.
pub struct Intake {
    server: Arc<Server>,
}

fn try_later(what: &str) -> Reply {
    Reply::new(451, format!("4.3.0 {what}; try again later"))
}

impl Handler for Intake {
    type Target = BounceTarget;

    async fn check_rcpt(&self, address: &str) -> Result<BounceTarget, Reply> {
        let Some(verp) = &self.server.verp else {
            return Err(Reply::new(
                550,
                format!("5.1.1 <{address}>: no such bounce address"),
            ));
        };
        let target = verp.verify_address(address).map_err(|e| match e {
            VerpError::BadSignature(_) => Reply::new(
                550,
                format!("5.7.1 <{address}>: return path does not verify"),
            ),
            _ => Reply::new(550, format!("5.1.1 <{address}>: no such bounce address")),
        })?;
        match self
            .server
            .store
            .bounce_target(&target.message_id, target.recipient_idx)
            .await
        {
            Ok(Some(t)) => Ok(t),
            Ok(None) => Err(Reply::new(
                550,
                format!("5.1.1 <{address}>: no such message or recipient"),
            )),
            Err(e) => {
                tracing::warn!(error = %e, "bounce intake: cannot look up a return path");
                Err(try_later("the store is unavailable"))
            }
        }
    }

    async fn deliver(&self, tx: Transaction<BounceTarget>, message: Vec<u8>) -> Reply {
        let input = BounceInput::Email(message);
        let out = match call(self.server.plugins.stage(Stage::Bounce), move |p| {
            p.bounce(&input)
        })
        .await
        {
            Ok(out) => out,
            Err(e) => {
                tracing::warn!(error = %e, "bounce intake: the bounce plugin failed");
                return try_later("the bounce could not be read now");
            }
        };
        let n = tx.rcpts.len();
        for (_, target) in tx.rcpts {
            let v = verdict(pick(&out.results, &target.address), &out.notes);
            let report = BounceReport {
                message_id: target.message_id.clone(),
                recipient_idx: target.recipient_idx,
                kind: v.kind,
                detail: v.detail,
                suppress: v.suppress,
                at_ms: now_ms(),
            };
            match self.server.store.record_bounce(report).await {
                Ok(Some(done)) => tracing::info!(
                    message_id = %target.message_id,
                    recipient = %target.address,
                    kind = v.kind.as_str(),
                    suppressed = done.suppressed,
                    "bounce recorded"
                ),
                Ok(None) => {
                    tracing::warn!(message_id = %target.message_id, "bounce for a recipient that is gone")
                }
                Err(e) => {
                    tracing::warn!(error = %e, "bounce intake: cannot record a bounce");
                    return try_later("the bounce could not be recorded");
                }
            }
        }
        Reply::new(250, format!("2.0.0 bounce recorded for {n} recipient(s)"))
    }
}

/// Starts the listener when `[smtp_in] listen` is set; the task serves until aborted
/// (aborting it drops every session: nothing unanswered was acknowledged).
pub async fn start(server: Arc<Server>) -> anyhow::Result<Option<tokio::task::JoinHandle<()>>> {
    let si = server.pipeline.smtp_in.clone();
    let Some(addr) = si.listen else {
        return Ok(None);
    };
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen for SMTP on {addr}"))?;
    println!(
        "sluice: SMTP bounce intake on {} for {}",
        listener.local_addr()?,
        server.verp.as_ref().map_or("-", |v| v.domain())
    );
    let config = Arc::new(smtp_in::Config {
        hostname: si.hostname.clone(),
        limits: smtp_in::Limits {
            max_message_bytes: si.max_message_bytes,
            max_recipients: si.max_recipients,
            max_errors: MAX_ERRORS,
        },
        command_timeout: si.command_timeout,
        data_timeout: si.data_timeout,
    });
    let slots = Arc::new(tokio::sync::Semaphore::new(si.max_connections as usize));
    let intake = Arc::new(Intake { server });
    Ok(Some(tokio::spawn(async move {
        let mut sessions = tokio::task::JoinSet::new();
        loop {
            let (mut stream, peer) = match listener.accept().await {
                Ok(x) => x,
                Err(e) => {
                    // Out of file descriptors and the like: back off, keep serving.
                    tracing::warn!(error = %e, "SMTP accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            while sessions.try_join_next().is_some() {}
            let Ok(slot) = slots.clone().try_acquire_owned() else {
                sessions.spawn(async move {
                    use tokio::io::AsyncWriteExt;
                    let busy = Reply::new(421, "4.3.2 too many connections, try again later");
                    let _ = stream.write_all(busy.to_wire().as_bytes()).await;
                });
                continue;
            };
            let (config, intake) = (config.clone(), intake.clone());
            sessions.spawn(async move {
                if let Err(e) = smtp_in::serve_connection(stream, &config, &*intake).await {
                    tracing::debug!(%peer, error = %e, "SMTP session ended with an I/O error");
                }
                drop(slot);
            });
        }
    })))
}
