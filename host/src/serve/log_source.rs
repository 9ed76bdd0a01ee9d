//! MTA logs as a billing source of `sluice serve` (`[[log_source]]`).
//!
//! Each source runs on a blocking thread: a [`Follower`] hands out the
//! transfers appended to the log, each is matched to a tenant by its logins
//! (sender first: outbound; else recipient: inbound; no match: counted, not
//! billed), and the matched ones become usage events in the store, rated by
//! the bill stage like the pipeline's own. The follower's checkpoint is
//! written only after the store has committed them, and a usage event's key
//! is the source id plus the transfer's stable key: a crash or a re-read
//! never bills a transfer twice, and none is skipped.

use super::state::{Server, now_ms};
use crate::bill_logs::Matcher;
use crate::config::LogSourceConfig;
use crate::logging::Chain;
use crate::maillog::follow::Follower;
use crate::maillog::{ReaderConfig, Transfer};
use crate::stage::Direction;
use crate::store::ExternalUsage;
use std::sync::Arc;
use std::time::Duration;

/// Lines read per batch: one store transaction and one checkpoint.
const BATCH_LINES: u64 = 20_000;

/// Starts one thread per configured log source.
pub fn start(server: Arc<Server>) -> Vec<std::thread::JoinHandle<()>> {
    let sources = server.pipeline.log_sources.clone();
    let logins = server.log_source_logins.clone();
    sources
        .into_iter()
        .zip(logins)
        .map(|(source, logins)| {
            let server = server.clone();
            let handle = tokio::runtime::Handle::current();
            std::thread::Builder::new()
                .name(format!("log-source-{}", source.id))
                .spawn(move || follow(server, handle, source, logins))
                .expect("cannot start a log source thread")
        })
        .collect()
}

/// Follows one source until the server shuts down.
fn follow(
    server: Arc<Server>,
    rt: tokio::runtime::Handle,
    source: LogSourceConfig,
    logins: crate::bill_logs::Logins,
) {
    let id = source.id.clone();
    let config = ReaderConfig {
        host: source.host.clone(),
        ..ReaderConfig::default()
    };
    if let Some(dir) = source.checkpoint.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    let mut follower = loop {
        match Follower::open(
            &source.path,
            source.format,
            config.clone(),
            &source.checkpoint,
        ) {
            Ok(f) => break f,
            Err(e) => {
                tracing::error!(source = %id, error = %Chain(&e), "log source cannot start; retrying");
                if sleep_unless_stopping(&server, Duration::from_secs(5)) {
                    return;
                }
            }
        }
    };
    let mut matcher = Matcher::new(logins);
    tracing::info!(source = %id, path = %source.path.display(), "following log");
    let mut unmatched = 0u64;
    while !server.is_shutting_down() {
        for w in follower.take_warnings() {
            tracing::warn!(source = %id, "{w}");
        }
        let batch = match follower.poll(BATCH_LINES) {
            Ok(b) => b,
            Err(e) => {
                tracing::error!(source = %id, error = %Chain(&e), "log source read failed");
                if sleep_unless_stopping(&server, source.poll) {
                    return;
                }
                continue;
            }
        };
        let events = usage_of(&id, &mut matcher, batch.transfers, &mut unmatched);
        if !events.is_empty() {
            let stored = rt.block_on(server.store.insert_external_usage(&events, now_ms()));
            if let Err(e) = stored {
                // Nothing is lost: the follower goes back to its last checkpoint.
                tracing::error!(source = %id, error = %Chain(&e), "log source: storing usage failed; re-reading");
                if let Err(e) = follower.rewind() {
                    tracing::error!(source = %id, error = %Chain(&e), "log source cannot rewind");
                    return;
                }
                if sleep_unless_stopping(&server, source.poll) {
                    return;
                }
                continue;
            }
        }
        if (batch.lines > 0 || !events.is_empty())
            && let Err(e) = follower.commit()
        {
            // The next commit will try again; a crash meanwhile re-reads, harmlessly.
            tracing::error!(source = %id, error = %Chain(&e), "log source checkpoint failed");
        }
        if batch.caught_up && sleep_unless_stopping(&server, source.poll) {
            break;
        }
    }
    let c = &follower.report().counters;
    tracing::info!(
        source = %id,
        lines = c.lines,
        transfers = c.transfers,
        unmatched,
        unparseable = c.unparseable,
        "log source stopped"
    );
}

/// The usage events of the transfers that match a tenant.
fn usage_of(
    source: &str,
    matcher: &mut Matcher,
    transfers: Vec<Transfer>,
    unmatched: &mut u64,
) -> Vec<ExternalUsage> {
    let mut out = Vec::with_capacity(transfers.len());
    for t in transfers {
        let Some((tenant, direction)) = matcher.classify(&t.sender, &t.recipient) else {
            *unmatched += 1;
            continue;
        };
        out.push(ExternalUsage {
            tenant_id: matcher.tenants()[tenant].clone(),
            message_id: format!("log:{source}:{}", t.key),
            recipient: t.recipient,
            sender: t.sender,
            direction: match direction {
                Direction::Outbound => "outbound".into(),
                Direction::Inbound => "inbound".into(),
            },
            size: t.size,
            relay: (!t.relay.is_empty()).then_some(t.relay),
            at_ms: t.delivered_ms,
        });
    }
    out
}

/// Sleeps in short steps; true if the server began shutting down.
fn sleep_unless_stopping(server: &Server, total: Duration) -> bool {
    let step = Duration::from_millis(50);
    let mut slept = Duration::ZERO;
    while slept < total {
        if server.is_shutting_down() {
            return true;
        }
        std::thread::sleep(step.min(total - slept));
        slept += step;
    }
    server.is_shutting_down()
}
