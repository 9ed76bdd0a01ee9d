//! SMTP submission (issue 23, `[submission]`): the [`Handler`] that puts the SMTP
//! protocol machine (`smtp_in`) in front of [`accept_submission`], and its listeners
//! (STARTTLS on `listen`, implicit TLS on `listen_tls`).
//!
//! A client authenticates with AUTH PLAIN or LOGIN once the connection is TLS: the user
//! name is the tenant's id or the key's id, the password an API key, checked as the
//! HTTP API checks a bearer key. A client whose address is in one of a tenant's
//! `trusted_networks` sends as that tenant without AUTH. Recipients are answered one by
//! one at RCPT (a suppressed one 550 5.7.1, so acceptance does not ask again); after
//! DATA the message goes through the same acceptance as `POST /v1/messages` and the
//! final 250 follows its commit. Tags and an idempotency key ride in the header
//! ([`TAGS_FIELD`], [`IDEMPOTENCY_FIELD`]), taken out before the message is stored.
//!
//! Bounds (each with its own reply): sessions in all and per address (421 at connect),
//! failed AUTH per address ([`AuthFailures`]: past the limit, 421 after a delay until
//! the window passes), bad and idle commands and the session's length (421), message
//! size (552: `[limits] max_message_bytes`, advertised as SIZE) and recipients (452:
//! `[limits] max_recipients`), tags and the idempotency key (550). Neither the password
//! nor the AUTH exchange's lines reach a reply or a log line.

use super::accept::{AcceptError, NewSubmission, accept_submission};
use super::admission::Kind;
use super::state::Server;
use crate::config::SubmissionConfig;
use crate::logging::Chain;
use crate::smtp_in::tls::Certificates;
use crate::smtp_in::{self, Handler, Reply, Secret, Transaction};
use crate::store::{KeyOwner, KeyScope, StoreError};
use anyhow::Context;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Addresses with recent AUTH failures remembered at most: past it, the oldest are
/// forgotten (a client spread over more addresses than this gains one extra try each).
const MAX_TRACKED_ADDRESSES: usize = 10_000;

/// Failed AUTH per client address (IPv6 by /64) within a window.
pub struct AuthFailures {
    max: u32,
    window: Duration,
    delay: Duration,
    seen: Mutex<HashMap<IpAddr, (u32, Instant)>>,
}

impl AuthFailures {
    /// The bounds `[submission]` sets; the portal's sign-in counts its failures under
    /// the same ones (`portal/login.rs`).
    pub(super) fn new(config: &SubmissionConfig) -> AuthFailures {
        AuthFailures {
            max: config.max_auth_failures_per_ip,
            window: config.auth_failure_window,
            delay: config.auth_failure_delay,
            seen: Mutex::new(HashMap::new()),
        }
    }

    /// How long a refusal past the limit is delayed.
    pub(super) fn delay(&self) -> Duration {
        self.delay
    }

    /// How many failures an address may have within the window.
    pub(super) fn max(&self) -> u32 {
        self.max
    }

    /// Whether `ip` has used up its failures in the current window.
    pub(super) fn blocked(&self, ip: IpAddr) -> bool {
        let seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        seen.get(&smtp_in::admission::client_key(ip))
            .is_some_and(|(n, since)| *n >= self.max && since.elapsed() < self.window)
    }

    /// Counts a failure; whether `ip` has now used up its failures.
    pub(super) fn failed(&self, ip: IpAddr) -> bool {
        let key = smtp_in::admission::client_key(ip);
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        if seen.len() >= MAX_TRACKED_ADDRESSES && !seen.contains_key(&key) {
            let window = self.window;
            seen.retain(|_, (_, since)| since.elapsed() < window);
            if seen.len() >= MAX_TRACKED_ADDRESSES
                && let Some(oldest) = seen.iter().min_by_key(|(_, (_, t))| *t).map(|(k, _)| *k)
            {
                seen.remove(&oldest);
            }
        }
        let entry = seen.entry(key).or_insert((0, Instant::now()));
        if entry.1.elapsed() >= self.window {
            *entry = (0, Instant::now());
        }
        entry.0 += 1;
        entry.0 >= self.max
    }

    /// The reply once an address is past its failures, given after the delay (so a
    /// guesser's rate is bounded even if it opens new sessions).
    async fn refuse(&self) -> Reply {
        tokio::time::sleep(self.delay).await;
        Reply::new(
            421,
            format!(
                "4.7.0 too many failed authentications from your address (limit {}), \
                 try again later",
                self.max
            ),
        )
    }
}

/// The header field whose value is the message's tags, comma-separated (the HTTP
/// API's `tags`); read at acceptance and removed, as [`IDEMPOTENCY_FIELD`] is.
pub const TAGS_FIELD: &str = "X-Sluice-Tags";
/// The header field whose value is the message's idempotency key (the HTTP API's
/// `Idempotency-Key`): a repeat is answered 250 with the first message's id and not
/// sent again.
pub const IDEMPOTENCY_FIELD: &str = "X-Sluice-Idempotency-Key";
/// Most tags one message may carry in [`TAGS_FIELD`], and the longest tag (bytes): the
/// store's bounds, the same as the HTTP API's `tags`.
use crate::store::{MAX_TAG_BYTES, MAX_TAGS};

/// What the client asked for beside the message, in its header.
#[derive(Debug, Default, PartialEq, Eq)]
struct ClientFields {
    tags: Vec<String>,
    idempotency_key: Option<String>,
}

/// Takes [`TAGS_FIELD`] and [`IDEMPOTENCY_FIELD`] out of a message's header: what they
/// ask, and the message without them (so neither is stored nor reaches a relay). `Err`
/// is the reply refusing the message: too many or too long tags, an idempotency key
/// given twice, empty or over the store's limit.
fn client_fields(message: Vec<u8>) -> Result<(Vec<u8>, ClientFields), Reply> {
    let (taken, stripped) = crate::compose::take_fields(&message, &[TAGS_FIELD, IDEMPOTENCY_FIELD]);
    let mut fields = ClientFields::default();
    let refuse = |text: String| Reply::new(550, format!("5.6.0 {text}"));
    for (name, value) in taken {
        if name.eq_ignore_ascii_case(TAGS_FIELD) {
            for tag in value.split(',').map(str::trim).filter(|t| !t.is_empty()) {
                if tag.len() > MAX_TAG_BYTES {
                    return Err(refuse(format!(
                        "{TAGS_FIELD}: a tag is over {MAX_TAG_BYTES} bytes"
                    )));
                }
                if fields.tags.len() == MAX_TAGS {
                    return Err(refuse(format!("{TAGS_FIELD}: more than {MAX_TAGS} tags")));
                }
                fields.tags.push(tag.to_owned());
            }
        } else {
            let max = crate::store::MAX_IDEMPOTENCY_KEY;
            if fields.idempotency_key.is_some() {
                return Err(refuse(format!(
                    "{IDEMPOTENCY_FIELD} is given more than once"
                )));
            }
            if value.is_empty() || value.len() > max {
                return Err(refuse(format!(
                    "{IDEMPOTENCY_FIELD} must be 1 to {max} bytes"
                )));
            }
            fields.idempotency_key = Some(value);
        }
    }
    Ok((stripped.unwrap_or(message), fields))
}

/// What every session of the listeners shares.
struct Shared {
    server: Arc<Server>,
    config: SubmissionConfig,
    failures: AuthFailures,
}

/// One session's handler: who is sending, once known.
struct Session {
    shared: Arc<Shared>,
    peer: IpAddr,
    owner: Mutex<Option<KeyOwner>>,
}

fn try_later(what: &str) -> Reply {
    Reply::new(451, format!("4.3.0 {what}; try again later"))
}

impl Session {
    fn owner(&self) -> Option<KeyOwner> {
        self.owner.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// The reply to a submission the core did not accept.
fn refusal(e: AcceptError) -> Reply {
    let text = e.to_string();
    match e {
        AcceptError::ShuttingDown => Reply::new(421, format!("4.3.2 {text}")),
        AcceptError::Invalid { .. } => Reply::new(550, format!("5.6.0 {text}")),
        AcceptError::TooLarge { .. } => Reply::new(552, format!("5.3.4 {text}")),
        AcceptError::Forbidden { .. } | AcceptError::AllSuppressed { .. } => {
            Reply::new(550, format!("5.7.1 {text}"))
        }
        AcceptError::Rejected { .. } => Reply::new(550, format!("5.7.1 rejected: {text}")),
        AcceptError::PluginFailed(_) => Reply::new(451, format!("4.3.0 {text}")),
        // What the store refuses to write (an account's prefix made the idempotency key
        // too long): the same message would be refused again.
        AcceptError::Store(StoreError::Invalid(_)) => Reply::new(550, format!("5.6.0 {text}")),
        AcceptError::Store(StoreError::CommitUnknown(_)) => {
            tracing::error!(error = %Chain(&e), "a submission's commit outcome is unknown");
            try_later("the store could not confirm the message was stored")
        }
        AcceptError::Store(_) => {
            tracing::error!(error = %Chain(&e), "submission: store failure");
            try_later("the message could not be stored")
        }
    }
}

impl Handler for Session {
    type Target = ();

    async fn authenticate(&self, user: &str, password: &Secret) -> Result<(), Reply> {
        let failures = &self.shared.failures;
        if failures.blocked(self.peer) {
            return Err(failures.refuse().await);
        }
        let owner = match self.shared.server.key_owner(&password.0).await {
            Ok(o) => o,
            Err(e) => {
                tracing::warn!(error = %format!("{e:#}"), "submission: cannot look up a key");
                return Err(Reply::new(454, "4.7.0 temporary authentication failure"));
            }
        };
        match owner {
            Some(o) if user == o.tenant.id || user == o.key_id => {
                tracing::debug!(peer = %self.peer, tenant = %o.tenant.id, "submission: authenticated");
                *self.owner.lock().unwrap_or_else(|p| p.into_inner()) = Some(o);
                Ok(())
            }
            _ => {
                // The user name may be a mistyped secret: it is not logged either.
                tracing::info!(peer = %self.peer, "submission: authentication failed");
                if failures.failed(self.peer) {
                    return Err(failures.refuse().await);
                }
                Err(Reply::new(535, "5.7.8 authentication credentials invalid"))
            }
        }
    }

    async fn check_rcpt(&self, address: &str) -> Result<(), Reply> {
        let Some(owner) = self.owner() else {
            return Err(Reply::new(530, "5.7.0 authentication required"));
        };
        if !crate::compose::valid_address(address) {
            return Err(Reply::new(
                553,
                format!("5.1.3 <{address}>: not a valid address"),
            ));
        }
        let found = self
            .shared
            .server
            .store
            .suppressed_among(&owner.tenant.id, &[address.to_owned()])
            .await;
        match found {
            Ok(found) => match found.values().next() {
                Some(sup) => Err(Reply::new(
                    550,
                    format!(
                        "5.7.1 <{address}>: on the suppression list ({}, from {})",
                        sup.reason, sup.source
                    ),
                )),
                None => Ok(()),
            },
            Err(e) => {
                tracing::warn!(error = %Chain(&e), "submission: cannot check suppressions");
                Err(try_later("recipients cannot be checked now"))
            }
        }
    }

    async fn deliver(&self, tx: Transaction<()>, message: Vec<u8>) -> Reply {
        let Some(owner) = self.owner() else {
            return Reply::new(530, "5.7.0 authentication required");
        };
        let (message, fields) = match client_fields(message) {
            Ok(x) => x,
            Err(refused) => return refused,
        };
        let s = &self.shared.server;
        // The tenant's accept rate and requests in flight, as for `POST /v1/messages`.
        let admitted = match s.admission.admit(&owner.tenant.id, Kind::Submission).await {
            Ok(a) => a,
            Err(refused) => {
                return Reply::new(
                    451,
                    format!(
                        "4.7.0 over the tenant's limit ({}); try again in {} s",
                        refused.limit_key(),
                        refused.retry_after_secs()
                    ),
                );
            }
        };
        let recipients: Vec<String> = tx.rcpts.into_iter().map(|(a, ())| a).collect();
        let composed = match crate::compose::from_raw(
            &message,
            &tx.mail_from,
            &recipients,
            &s.pipeline.delivery.helo_name,
        ) {
            Ok(c) => c,
            Err(e) => return Reply::new(550, format!("5.6.0 {e}")),
        };
        drop(message);
        let result = accept_submission(
            s,
            NewSubmission {
                owner,
                message: composed,
                tags: fields.tags,
                idempotency_key: fields.idempotency_key,
                // Each at RCPT, a suppressed one refused there.
                recipients_checked: true,
            },
        )
        .await;
        drop(admitted);
        match result {
            Ok(a) if a.duplicate => Reply::new(
                250,
                format!(
                    "2.0.0 accepted as {} before (a repeat of its idempotency key: not sent again)",
                    a.id
                ),
            ),
            Ok(a) => Reply::new(250, format!("2.0.0 accepted as {}", a.id)),
            Err(e) => refusal(e),
        }
    }
}

/// The tenant whose trusted network `ip` is in, as the owner its mail is sent as.
async fn trusted_owner(shared: &Shared, ip: IpAddr) -> Option<KeyOwner> {
    let (tenant, _) = shared
        .config
        .trusted_networks
        .iter()
        .find(|(_, net)| net.contains(ip))?;
    // Cached briefly, as an API key's owner is (`Server::tenant`): not a store read for
    // every connection.
    match shared.server.tenant(tenant).await {
        Ok(Some(t)) => Some(KeyOwner {
            tenant: t,
            scope: KeyScope::Tenant,
            key_id: "trusted-network".into(),
        }),
        Ok(None) => {
            tracing::warn!(tenant = %tenant, "submission.trusted_networks names a tenant that does not exist");
            None
        }
        Err(e) => {
            tracing::warn!(error = %format!("{e:#}"), "submission: cannot read a trusted network's tenant");
            None
        }
    }
}

/// Starts the submission listeners when `[submission]` has any; each task serves until
/// aborted (aborting drops every session: nothing unanswered was acknowledged).
pub async fn start(server: Arc<Server>) -> anyhow::Result<Vec<tokio::task::JoinHandle<()>>> {
    let config = server.pipeline.submission.clone();
    if !config.enabled() {
        return Ok(Vec::new());
    }
    let (Some(cert), Some(key)) = (&config.tls_cert_file, &config.tls_key_file) else {
        anyhow::bail!("[submission] needs tls_cert_file and tls_key_file");
    };
    let certs = Arc::new(
        Certificates::load(cert, key)
            .map_err(anyhow::Error::msg)
            .context("the submission certificate")?,
    );
    let mut tasks = vec![tokio::spawn(reload_certificates(certs.clone()))];
    let shared = Arc::new(Shared {
        failures: AuthFailures::new(&config),
        server,
        config: config.clone(),
    });
    let admission = smtp_in::Admission::new(config.max_connections, config.max_connections_per_ip);
    let listeners = config
        .listen
        .iter()
        .map(|a| (*a, false))
        .chain(config.listen_tls.iter().map(|a| (*a, true)));
    for (addr, implicit) in listeners {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("cannot listen for SMTP submission on {addr}"))?;
        println!(
            "sluice: SMTP submission on {} ({})",
            listener.local_addr()?,
            if implicit { "implicit TLS" } else { "STARTTLS" }
        );
        tasks.push(tokio::spawn(serve(
            listener,
            implicit,
            shared.clone(),
            admission.clone(),
            certs.clone(),
        )));
    }
    Ok(tasks)
}

/// Reads the certificate files again on every SIGHUP (the rest of the pipeline is
/// `reload.rs`'s).
async fn reload_certificates(certs: Arc<Certificates>) {
    let Ok(mut hangups) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
    else {
        return;
    };
    while hangups.recv().await.is_some() {
        match certs.reload() {
            Ok(()) => tracing::info!("SIGHUP: submission certificate reloaded"),
            Err(e) => tracing::error!(
                error = %e,
                "SIGHUP: the submission certificate was not reloaded; the last good one stays"
            ),
        }
    }
}

async fn serve(
    listener: tokio::net::TcpListener,
    implicit: bool,
    shared: Arc<Shared>,
    admission: Arc<smtp_in::Admission>,
    certs: Arc<Certificates>,
) {
    let mut sessions = tokio::task::JoinSet::new();
    loop {
        let (mut stream, peer) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                // Out of file descriptors and the like: back off, keep serving.
                tracing::warn!(error = %Chain(&e), "SMTP submission accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        while sessions.try_join_next().is_some() {}
        let slot = match admission.admit(peer.ip()) {
            Ok(ticket) => ticket,
            Err(busy) => {
                tracing::debug!(%peer, reply = %busy.text(), "SMTP submission connection turned away");
                if implicit {
                    // Nothing can be said before the handshake: close.
                    continue;
                }
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
        let (shared, acceptor) = (shared.clone(), certs.acceptor());
        sessions.spawn(async move {
            let _ = stream.set_nodelay(true);
            let s = &shared.config;
            // `[limits]` as they are now (SIGHUP applies them to the next session).
            let limits = shared.server.limits.get();
            let config = smtp_in::Config {
                hostname: s.hostname.clone(),
                limits: smtp_in::Limits {
                    max_message_bytes: limits.max_message_bytes,
                    max_recipients: limits.max_recipients,
                    max_errors: s.max_errors,
                    max_unproductive_commands: s.max_unproductive_commands,
                },
                command_timeout: s.command_timeout,
                data_timeout: s.data_timeout,
                max_session: s.max_session,
            };
            let owner = trusted_owner(&shared, peer.ip()).await;
            let trusted = owner.is_some();
            let handler = Session {
                shared: shared.clone(),
                peer: peer.ip(),
                owner: Mutex::new(owner),
            };
            let served = if implicit {
                match tokio::time::timeout(config.command_timeout, acceptor.accept(stream)).await
                {
                    Ok(Ok(tls)) => {
                        let submit = smtp_in::Submit {
                            starttls: None,
                            tls: true,
                            trusted,
                        };
                        smtp_in::serve_session(tls, &config, &handler, Some(submit)).await
                    }
                    Ok(Err(e)) => Err(e),
                    Err(_) => Ok(()),
                }
            } else {
                let submit = smtp_in::Submit {
                    starttls: Some(&acceptor),
                    tls: false,
                    trusted,
                };
                smtp_in::serve_session(stream, &config, &handler, Some(submit)).await
            };
            if let Err(e) = served {
                tracing::debug!(%peer, error = %Chain(&e), "SMTP submission session ended with an I/O error");
            }
            drop(slot);
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn failures(max: u32) -> AuthFailures {
        AuthFailures {
            max,
            window: Duration::from_secs(60),
            delay: Duration::ZERO,
            seen: Mutex::new(HashMap::new()),
        }
    }

    #[test]
    fn an_address_is_blocked_after_its_failures_and_others_are_not() {
        let f = failures(3);
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "2001:db8::1".parse().unwrap();
        assert!(!f.failed(a));
        assert!(!f.failed(a));
        assert!(!f.blocked(a));
        assert!(f.failed(a));
        assert!(f.blocked(a));
        assert!(!f.blocked(b));
        assert!(!f.blocked("2001:db8:0:1::1".parse().unwrap()));
        f.failed(b);
        f.failed(b);
        f.failed(b);
        assert!(f.blocked("2001:db8::ffff".parse().unwrap()), "same /64");
    }

    #[test]
    fn tags_and_an_idempotency_key_are_read_from_the_header_and_bounded() {
        let (message, fields) = client_fields(
            b"From: a@b.test\r\nx-sluice-tags: a, b,,\r\nX-Sluice-Tags: c\r\n\
              X-Sluice-Idempotency-Key:  k-1 \r\nSubject: s\r\n\r\nX-Sluice-Tags: body\r\n"
                .to_vec(),
        )
        .unwrap();
        assert_eq!(
            fields,
            ClientFields {
                tags: vec!["a".into(), "b".into(), "c".into()],
                idempotency_key: Some("k-1".into()),
            }
        );
        assert_eq!(
            message,
            b"From: a@b.test\r\nSubject: s\r\n\r\nX-Sluice-Tags: body\r\n"
        );
        let plain = b"From: a@b.test\r\n\r\nbody\r\n".to_vec();
        assert_eq!(
            client_fields(plain.clone()).unwrap(),
            (plain, ClientFields::default())
        );

        let with = |header: String| {
            client_fields(format!("From: a@b.test\r\n{header}\r\n\r\nx\r\n").into_bytes())
                .map(|_| ())
                .unwrap_err()
        };
        let tags: Vec<String> = (0..=MAX_TAGS).map(|i| format!("t{i}")).collect();
        let r = with(format!("X-Sluice-Tags: {}", tags.join(",")));
        assert!(
            r.code == 550 && r.text().contains(&format!("more than {MAX_TAGS} tags")),
            "{r:?}"
        );
        let r = with(format!("X-Sluice-Tags: {}", "t".repeat(MAX_TAG_BYTES + 1)));
        assert!(
            r.code == 550 && r.text().contains("over 128 bytes"),
            "{r:?}"
        );
        let r = with(format!("X-Sluice-Idempotency-Key: {}", "k".repeat(257)));
        assert!(
            r.code == 550 && r.text().contains("1 to 256 bytes"),
            "{r:?}"
        );
        let r = with("X-Sluice-Idempotency-Key:".into());
        assert!(r.code == 550, "{r:?}");
        let r = with("X-Sluice-Idempotency-Key: a\r\nX-Sluice-Idempotency-Key: b".into());
        assert!(
            r.code == 550 && r.text().contains("more than once"),
            "{r:?}"
        );
    }

    #[test]
    fn the_table_of_addresses_is_bounded() {
        let f = failures(2);
        for i in 0..(MAX_TRACKED_ADDRESSES as u32 + 50) {
            f.failed(IpAddr::V4(i.into()));
        }
        assert!(f.seen.lock().unwrap().len() <= MAX_TRACKED_ADDRESSES);
    }
}
