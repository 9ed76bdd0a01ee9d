//! The SMTP listener's [`Handler`]: a `RCPT TO` must be a VERP return path that
//! verifies and names a stored recipient; a message is read by the bounce plugin of the
//! tenant that sent the bounced message (its own when it has a live one, else the
//! pipeline's) and the verdict recorded on that recipient before the 250.

use super::bounces::{pick, verdict};
use super::state::{Server, now_ms};
use crate::logging::Chain;
use crate::smtp_in::{self, Handler, Reply, Transaction};
use crate::stage::{BounceInput, BounceOutput, Stage};
use crate::store::{BounceReport, BounceTarget, EventKind, NewEvent};
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
                tracing::warn!(error = %Chain(&e), "bounce intake: cannot look up a return path");
                Err(try_later("the store is unavailable"))
            }
        }
    }

    async fn deliver(&self, tx: Transaction<BounceTarget>, message: Vec<u8>) -> Reply {
        // One reading per tenant: each tenant's bounce plugin reads the bounces of its
        // own messages (a DSN naming several return paths is rare, and all one tenant's).
        let mut readings: Vec<(String, BounceOutput)> = Vec::new();
        let message = Arc::new(message);
        for (_, target) in &tx.rcpts {
            if readings.iter().any(|(t, _)| t == &target.tenant_id) {
                continue;
            }
            match self.read(&target.tenant_id, &message, &tx.rcpts).await {
                Ok(out) => readings.push((target.tenant_id.clone(), out)),
                Err(reply) => return reply,
            }
        }
        let n = tx.rcpts.len();
        for (_, target) in tx.rcpts {
            let Some((_, out)) = readings.iter().find(|(t, _)| t == &target.tenant_id) else {
                continue;
            };
            let v = verdict(pick(&out.results, &target.address), &out.notes);
            let class = v.detail["reason"].as_str().unwrap_or("unknown").to_owned();
            let report = BounceReport {
                message_id: target.message_id.clone(),
                recipient_idx: target.recipient_idx,
                kind: v.kind,
                detail: v.detail,
                suppress: v.suppress,
                at_ms: now_ms(),
            };
            match self.server.store.record_bounce(report).await {
                Ok(Some(done)) => {
                    // A bounce e-mail that made the recipient `bounced` is a final outcome,
                    // counted by the relay that had carried the message.
                    if done.state_changed && v.kind == EventKind::Bounced {
                        let m = crate::metrics::get();
                        let t = &done.target;
                        m.bounced
                            .get_or_create(&m.bounce(&t.tenant_id, t.last_relay.as_deref(), &class))
                            .inc();
                    }
                    tracing::info!(
                        message_id = %target.message_id,
                        domain = target.address.rsplit_once('@').map_or("", |(_, d)| d),
                        kind = v.kind.as_str(),
                        class = %class,
                        suppressed = done.suppressed,
                        "bounce recorded"
                    )
                }
                Ok(None) => {
                    tracing::warn!(message_id = %target.message_id, "bounce for a recipient that is gone")
                }
                Err(e) => {
                    tracing::warn!(error = %Chain(&e), "bounce intake: cannot record a bounce");
                    return try_later("the bounce could not be recorded");
                }
            }
        }
        Reply::new(250, format!("2.0.0 bounce recorded for {n} recipient(s)"))
    }
}

impl Intake {
    /// Reads a bounce for `tenant_id`'s messages; a failure of every plugin that could
    /// read it (or of the tenant's, when it fails closed) is a 451: the sender keeps the
    /// bounce and retries. Failures become `plugin_error` events on the bounced messages.
    async fn read(
        &self,
        tenant_id: &str,
        message: &Arc<Vec<u8>>,
        rcpts: &[(String, BounceTarget)],
    ) -> Result<BounceOutput, Reply> {
        let pipeline = self.server.plugins.stage(Stage::Bounce);
        let message = message.clone();
        let called = self
            .server
            .plugins
            .tenants
            .call_stage(
                &self.server.store,
                tenant_id,
                Stage::Bounce,
                pipeline.clone(),
                pipeline,
                move |p| p.bounce(&BounceInput::Email(message.to_vec())),
            )
            .await;
        let events: Vec<NewEvent> = called
            .failures
            .iter()
            .flat_map(|f| {
                rcpts
                    .iter()
                    .filter(|(_, t)| t.tenant_id == tenant_id)
                    .map(|(_, t)| NewEvent {
                        message_id: t.message_id.clone(),
                        recipient_idx: Some(t.recipient_idx),
                        tenant_id: t.tenant_id.clone(),
                        kind: EventKind::PluginError,
                        relay: None,
                        detail: f.detail(Stage::Bounce),
                        at_ms: now_ms(),
                    })
            })
            .collect();
        if !events.is_empty()
            && let Err(e) = self.server.store.append_events(events).await
        {
            tracing::warn!(error = %Chain(&e), "bounce intake: cannot record plugin_error events");
        }
        if let Some(why) = called.closed {
            tracing::info!(tenant = tenant_id, reason = %why, "bounce intake: deferring a bounce");
            return Err(try_later("the bounce could not be read now"));
        }
        called.result.map_err(|e| {
            tracing::warn!(error = %Chain(&e), "bounce intake: the bounce plugin failed");
            try_later("the bounce could not be read now")
        })
    }
}

/// Starts the listener when `[smtp_in] listen` is set or a socket named `smtp_in` was
/// handed over (`socket_activation`); the task serves until aborted (aborting it drops
/// every session: nothing unanswered was acknowledged).
pub async fn start(
    server: Arc<Server>,
    handed_over: Option<std::net::TcpListener>,
) -> anyhow::Result<Option<tokio::task::JoinHandle<()>>> {
    let si = server.pipeline.smtp_in.clone();
    let listener = match (handed_over, si.listen) {
        (Some(l), _) => {
            super::adopt(l).context("the SMTP socket handed over (LISTEN_FDNAMES smtp_in)")?
        }
        (None, Some(addr)) => tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("cannot listen for SMTP on {addr}"))?,
        (None, None) => return Ok(None),
    };
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
            max_unproductive_commands: si.max_unproductive_commands,
        },
        command_timeout: si.command_timeout,
        data_timeout: si.data_timeout,
        max_session: si.max_session,
    });
    let admission = smtp_in::Admission::new(si.max_connections, si.max_connections_per_ip);
    let intake = Arc::new(Intake { server });
    Ok(Some(tokio::spawn(async move {
        let mut sessions = tokio::task::JoinSet::new();
        loop {
            let (mut stream, peer) = match listener.accept().await {
                Ok(x) => x,
                Err(e) => {
                    // Out of file descriptors and the like: back off, keep serving.
                    tracing::warn!(error = %Chain(&e), "SMTP accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            while sessions.try_join_next().is_some() {}
            let slot = match admission.admit(peer.ip()) {
                Ok(ticket) => ticket,
                Err(busy) => {
                    tracing::debug!(%peer, reply = %busy.text(), "SMTP connection turned away");
                    // Bounded: a client that does not read the 421 is dropped.
                    sessions.spawn(async move {
                        use tokio::io::AsyncWriteExt;
                        let _ = tokio::time::timeout(
                            Duration::from_secs(5),
                            stream.write_all(busy.to_wire().as_bytes()),
                        )
                        .await;
                    });
                    continue;
                }
            };
            let (config, intake) = (config.clone(), intake.clone());
            sessions.spawn(async move {
                if let Err(e) = smtp_in::serve_connection(stream, &config, &*intake).await {
                    tracing::debug!(%peer, error = %Chain(&e), "SMTP session ended with an I/O error");
                }
                drop(slot);
            });
        }
    })))
}
