//! `sluice serve`: the HTTP API, the scheduler and the senders, wired
//! together around one store and one plugin runtime.
//!
//! Life of a message: `POST /v1/messages` or SMTP submission (`submission.rs`), both
//! through `accept.rs` → ingest plugin → committed to
//! the store (durable before 202), its recipients leased to this host and
//! handed to the dispatcher in memory when it has room (else the dispatcher
//! leases due recipients from the store) → route plugin picks relays →
//! lettre sends → send plugin reads each reply → the outcome and its events
//! are recorded. Nothing is held only in memory: a crash loses leases, which
//! expire and are taken again.
//! Beside the pipeline's own mail, MTA logs named in `[[log_source]]` are
//! followed and their transfers billed (`log_source.rs`).

mod accept;
mod account_billing;
mod accounts_api;
mod accounts_cache;
mod admin;
mod admission;
mod api;
pub mod auth;
mod billing;
mod billing_api;
mod billing_cache;
mod body_budget;
mod body_limit;
mod bounce_intake;
mod bounces;
mod clock;
mod dispatch;
mod dkim_api;
mod dkim_sign;
mod dto;
mod error;
mod event_hub;
mod event_log;
mod events_api;
mod fair;
mod handoff;
mod heartbeat;
mod live_limits;
mod log_source;
mod metrics_http;
mod nodes;
mod openapi;
mod plugin_call;
mod plugins;
mod portal;
pub mod preflight;
mod queue_api;
mod relay_probe;
mod reload;
mod request_count;
mod retry;
mod state;
mod submission;
mod suppressions;
mod tenant_live;
mod tenant_plugins;
mod tenant_threads;
mod upload_limits;
mod webhooks;
mod webhooks_api;

pub use state::{Server, StartOptions};

use crate::config::Pipeline;
use anyhow::Context;
use std::sync::Arc;
use std::time::Duration;

/// The API's OpenAPI 3.1 document (`GET /openapi.json`, `sluice openapi`).
pub fn openapi_json() -> String {
    openapi::json()
}

/// A listening socket handed over, for tokio.
pub(crate) fn adopt(listener: std::net::TcpListener) -> std::io::Result<tokio::net::TcpListener> {
    listener.set_nonblocking(true)?;
    tokio::net::TcpListener::from_std(listener)
}

/// Runs until SIGINT or SIGTERM, then drains: stops accepting, lets
/// in-flight attempts finish (up to `drain`), gives back the leases left.
///
/// `pipeline_path` is the file `pipeline` came from, reloaded on SIGHUP (`reload.rs`);
/// `None` for the embedded default.
pub async fn run(
    pipeline: Pipeline,
    pipeline_path: Option<std::path::PathBuf>,
    drain: Duration,
    options: StartOptions,
) -> anyhow::Result<()> {
    // Sockets handed over by a supervisor (systemd) or a test take the place of binding.
    let mut inherited = crate::socket_activation::Inherited::from_env()
        .context("the sockets handed to sluice serve (LISTEN_PID, LISTEN_FDS, LISTEN_FDNAMES)")?;
    let server = Arc::new(Server::start(pipeline, options).await?);
    let listener = match inherited.take("http") {
        Some(l) => adopt(l).context("the HTTP socket handed over (LISTEN_FDNAMES http)")?,
        None => tokio::net::TcpListener::bind(server.pipeline.server.http_listen)
            .await
            .with_context(|| format!("cannot listen on {}", server.pipeline.server.http_listen))?,
    };
    let addr = listener.local_addr()?;
    // Joined before any work starts: what this node id held from an earlier process
    // (a crash) is given back, due now, and delivered at once.
    let reclaimed = server.node.join(&server.store, &addr.to_string()).await?;
    println!(
        "sluice: HTTP API on http://{addr} (node {}, {reclaimed} leased recipients of an earlier run taken back)",
        server.node.id
    );
    let heart = tokio::spawn(heartbeat::heartbeat_loop(server.clone()));

    let smtp_in = bounce_intake::start(server.clone(), inherited.take("smtp_in")).await?;
    let submission = submission::start(server.clone()).await?;
    let dispatcher = tokio::spawn(dispatch::run(server.clone()));
    let refresher = tokio::spawn(state::refresh_loop(server.clone()));
    let biller = tokio::spawn(billing::run(server.clone()));
    let prober = tokio::spawn(relay_probe::run(server.clone()));
    let reloader = tokio::spawn(reload::run(server.clone(), pipeline_path));
    let account_biller = tokio::spawn(account_billing::run(server.clone()));
    let event_log = tokio::spawn(event_log::run(server.clone()));
    let deliveries = webhooks::Deliveries::new(&server);
    let webhooks = tokio::spawn(webhooks::run(server.clone(), deliveries.clone()));
    let log_sources = log_source::start(server.clone());

    let app = api::router(
        server.clone(),
        events_api::routes()
            .merge(metrics_http::routes())
            .merge(webhooks_api::routes())
            .merge(dkim_api::routes())
            .merge(openapi::routes())
            .merge(queue_api::routes())
            .merge(portal::routes(&server)),
    );
    // The peer's address, for `[metrics] allow_unauthenticated_from`.
    let app = app.into_make_service_with_connect_info::<std::net::SocketAddr>();
    axum::serve(listener, app)
        .with_graceful_shutdown({
            let events = server.events.clone();
            async move {
                shutdown_signal().await;
                // Event streams never end by themselves: end them, or the graceful
                // shutdown would wait for their clients forever.
                events.close();
            }
        })
        .await
        .context("HTTP server failed")?;

    tracing::info!("shutting down: no new messages, finishing in-flight attempts");
    server.begin_shutdown();
    refresher.abort();
    prober.abort();
    // A sequencer round is one transaction: one cut short gives no cursors.
    event_log.abort();
    // Deliveries write what they sent and give their webhooks' leases back, so another
    // node goes on at once; one cut short moved no cursor past what it had not written:
    // that is sent again (at least once).
    webhooks.abort();
    deliveries.stop(&server).await;
    reloader.abort();
    if let Some(listener) = smtp_in {
        listener.abort();
    }
    // A session cut short before its final 250 acknowledged nothing.
    for listener in submission {
        listener.abort();
    }
    // Rating is transactional: a batch cut short is claimed again after its claim expires.
    biller.abort();
    account_biller.abort();
    if tokio::time::timeout(drain, dispatcher).await.is_err() {
        tracing::warn!(
            drain_secs = drain.as_secs(),
            "in-flight attempts did not finish in time; their leases are given back"
        );
    }
    // A source stops between batches: what it handed to the store is
    // committed, and its checkpoint says so.
    for t in log_sources {
        let _ = tokio::task::spawn_blocking(move || t.join()).await;
    }
    let released = server
        .store
        .release_leases(&server.node.id, state::now_ms())
        .await?;
    // Beating until the leases are given back: until then the others must not take them.
    heart.abort();
    if let Err(e) = server
        .store
        .stop_node(&server.node.id, &server.node.incarnation, state::now_ms())
        .await
    {
        tracing::warn!(error = %crate::logging::Chain(&e), "cannot mark this node stopped; the others see it dead soon");
    }
    println!("sluice: stopped ({released} leased recipients given back)");
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
}
