//! Sending through one relay with lettre: connections kept between messages
//! (`pool.rs`), bounded by the relay's connection limit, its rate limit, and
//! replies per recipient.

use super::error_chain;
use super::health::{Health, TokenBucket};
use super::pool::{Pool, SendError, StartTls};
use super::tls_ca::TlsCa;
use crate::relay_spec::{TLS_CA_WITHOUT_TLS, Tls, parse_relay_url};
use crate::stage::SmtpReply;
use lettre::address::{Address, Envelope};
use lettre::transport::smtp::AsyncSmtpTransport;
use lettre::transport::smtp::PoolConfig;
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Tls as LettreTls, TlsParameters};
use lettre::transport::smtp::extension::ClientId;
use lettre::transport::smtp::response::Response;
use lettre::{AsyncTransport, Tokio1Executor};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;

/// Everything that defines a relay client; a change rebuilds the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelaySettings {
    pub id: String,
    pub url: String,
    pub auth_user: Option<String>,
    /// The resolved password (never stored or logged).
    pub auth_password: Option<String>,
    pub connection_limit: u32,
    pub rate_limit_per_sec: Option<u32>,
    pub weight: u32,
    pub tags: Vec<String>,
    pub owner: Option<String>,
    /// Draining: no new attempts; in-flight ones finish.
    pub draining: bool,
    /// The relay's own CA file, trusted instead of the public roots (`tls_ca.rs`).
    pub tls_ca: Option<TlsCa>,
}

/// What one recipient got from one attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelayReply {
    pub reply: Option<SmtpReply>,
    pub transport_error: Option<String>,
    pub latency_ms: u32,
}

/// One relay: its pool, its limits and its health.
pub struct RelayClient {
    settings: RelaySettings,
    transport: Transport,
    permits: Arc<Semaphore>,
    bucket: Option<TokenBucket>,
    health: Health,
    timeout: Duration,
    /// This relay's SMTP transaction time (`sluice_smtp_transaction_seconds`), looked up
    /// once.
    transaction_seconds: crate::metrics::Histogram,
}

impl RelayClient {
    pub fn new(
        settings: RelaySettings,
        helo: &str,
        timeout: Duration,
    ) -> Result<RelayClient, String> {
        let (host, port, tls) = parse_relay_url(&settings.url)?;
        let params = || match &settings.tls_ca {
            Some(ca) => ca
                .parameters(&host)
                .map_err(|e| format!("relay {}: {e}", settings.id)),
            None => TlsParameters::new(host.clone())
                .map_err(|e| format!("relay {}: TLS set-up: {e}", settings.id)),
        };
        if tls == Tls::None && settings.tls_ca.is_some() {
            return Err(format!("relay {}: {TLS_CA_WITHOUT_TLS}", settings.id));
        }
        let hello = ClientId::Domain(helo.to_owned());
        let credentials = match (&settings.auth_user, &settings.auth_password) {
            (Some(user), Some(pass)) => Some(Credentials::new(user.clone(), pass.clone())),
            _ => None,
        };
        let starttls = match tls {
            Tls::None => Some(StartTls::No),
            Tls::Opportunistic => Some(StartTls::IfOffered(params()?)),
            Tls::Required => Some(StartTls::Required(params()?)),
            Tls::Implicit => None,
        };
        let transport = match starttls {
            Some(starttls) => Transport::Own(Box::new(Pool::new(
                (host, port),
                hello,
                starttls,
                credentials,
                timeout,
                settings.connection_limit as usize,
            ))),
            None => {
                let mut builder =
                    AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(host.as_str())
                        .port(port)
                        .tls(LettreTls::Wrapper(params()?))
                        .timeout(Some(timeout))
                        .hello_name(hello)
                        .pool_config(
                            PoolConfig::new()
                                .max_size(settings.connection_limit)
                                .idle_timeout(Duration::from_secs(30)),
                        );
                if let Some(credentials) = credentials {
                    builder = builder.credentials(credentials);
                }
                Transport::Lettre(builder.build())
            }
        };
        let metrics = crate::metrics::get();
        let transaction_seconds = metrics
            .smtp_transaction
            .get_or_create_owned(&metrics.relay(&settings.id));
        Ok(RelayClient {
            transaction_seconds,
            permits: Arc::new(Semaphore::new(settings.connection_limit as usize)),
            bucket: settings.rate_limit_per_sec.map(TokenBucket::new),
            health: Health::new(3, Duration::from_secs(30)),
            transport,
            settings,
            timeout,
        })
    }

    pub fn settings(&self) -> &RelaySettings {
        &self.settings
    }

    /// Recipients being attempted through this relay now.
    pub fn in_flight(&self) -> u32 {
        self.settings
            .connection_limit
            .saturating_sub(self.permits.available_permits() as u32)
    }

    /// Whether transactions on this relay are pipelined (RFC 2920): known once a
    /// connection has been opened; never for implicit TLS, which lettre's pool carries.
    pub fn pipelining(&self) -> Option<bool> {
        match &self.transport {
            Transport::Own(pool) => pool.pipelining(),
            Transport::Lettre(_) => Some(false),
        }
    }

    /// Up unless consecutive transport failures marked it down.
    pub fn is_up(&self) -> bool {
        self.health.is_up()
    }

    /// Whether the last try got no SMTP reply (see [`RelayClient::probe`]).
    pub fn unanswered(&self) -> bool {
        self.health.unanswered()
    }

    /// Connects and says EHLO (with STARTTLS and AUTH as configured) to see whether a
    /// relay that stopped answering is back; an answer marks it up at once. Bounded by
    /// the relay's timeout. Returns the error when it still does not answer.
    pub async fn probe(&self) -> Result<(), String> {
        let attempt = async {
            match &self.transport {
                Transport::Own(pool) => pool.probe().await.map_err(|e| match e {
                    SendError::Connect(e) | SendError::Unsupported(e) => e,
                    SendError::Smtp(e) => error_chain(&e),
                }),
                Transport::Lettre(t) => match t.test_connection().await {
                    Ok(true) => Ok(()),
                    Ok(false) => Err("the connection test failed".to_owned()),
                    Err(e) => Err(error_chain(&e)),
                },
            }
        };
        let result = match tokio::time::timeout(self.timeout * 2, attempt).await {
            Ok(r) => r,
            Err(_) => Err(format!("no answer within {:?}", self.timeout * 2)),
        };
        if result.is_ok() {
            self.health.answered();
        }
        result
    }

    /// Sends `body` to `recipients` in one transaction; one reply per
    /// recipient, in order. When the relay refuses the transaction and there
    /// are several recipients, each is retried alone so that every
    /// recipient gets its own reply (lettre stops at the first refused RCPT).
    ///
    /// Whatever the store holds (rows older than the checks at acceptance), the body
    /// leaves with CRLF line ends only, so the relay and we agree on where its lines,
    /// and so its end, are (see `wire`).
    pub async fn send(&self, sender: &str, recipients: &[String], body: &[u8]) -> Vec<RelayReply> {
        let body = &*crate::wire::crlf(body);
        let first = self.send_once(sender, recipients, body).await;
        let refused = first.reply.as_ref().is_some_and(|r| r.code >= 400);
        if recipients.len() > 1 && refused {
            let mut out = Vec::with_capacity(recipients.len());
            for r in recipients {
                out.push(self.send_once(sender, std::slice::from_ref(r), body).await);
            }
            return out;
        }
        vec![first; recipients.len()]
    }

    async fn send_once(&self, sender: &str, recipients: &[String], body: &[u8]) -> RelayReply {
        let envelope = match envelope(sender, recipients) {
            Ok(e) => e,
            Err(e) => {
                return RelayReply {
                    reply: None,
                    transport_error: Some(e),
                    latency_ms: 0,
                };
            }
        };
        let _permit = self
            .permits
            .acquire()
            .await
            .expect("the semaphore is never closed");
        if let Some(bucket) = &self.bucket {
            while let Err(wait) = bucket.take() {
                tokio::time::sleep(wait).await;
            }
        }
        let started = Instant::now();
        // lettre's timeout is per command; this bounds the whole transaction.
        let result =
            tokio::time::timeout(self.timeout * 4, self.transport.send(&envelope, body)).await;
        let took = started.elapsed();
        self.transaction_seconds.observe(took.as_secs_f64());
        let latency_ms = took.as_millis().min(u128::from(u32::MAX)) as u32;
        let unsupported = matches!(result, Ok(Err(SendError::Unsupported(_))));
        let out = match result {
            Err(_) => RelayReply {
                reply: None,
                transport_error: Some(format!("no answer within {:?}", self.timeout * 4)),
                latency_ms,
            },
            Ok(Ok(response)) => {
                let text = response.message().collect::<Vec<_>>().join("\n");
                let code = response.code().to_string().parse().unwrap_or(250);
                RelayReply {
                    reply: Some(reply(code, &text)),
                    transport_error: None,
                    latency_ms,
                }
            }
            Ok(Err(SendError::Connect(e) | SendError::Unsupported(e))) => RelayReply {
                reply: None,
                transport_error: Some(e),
                latency_ms,
            },
            Ok(Err(SendError::Smtp(e))) => match e.status() {
                Some(code) => {
                    let shown = e.to_string();
                    let text = shown.split_once("): ").map_or("", |(_, t)| t);
                    RelayReply {
                        reply: Some(reply(code.to_string().parse().unwrap_or(451), text)),
                        transport_error: None,
                        latency_ms,
                    }
                }
                None => RelayReply {
                    reply: None,
                    transport_error: Some(error_chain(&e)),
                    latency_ms,
                },
            },
        };
        if out.reply.is_some() || unsupported {
            // A relay that answered, or that lacks an extension, is up.
            self.health.answered();
        } else if self.health.failed() {
            tracing::warn!(relay = %self.settings.id, error = out.transport_error.as_deref().unwrap_or("no reply"), "relay marked down after repeated transport failures");
        }
        out
    }
}

/// Our own connections for plain and STARTTLS relays; lettre's pool for implicit TLS.
enum Transport {
    Own(Box<Pool>),
    Lettre(AsyncSmtpTransport<Tokio1Executor>),
}

impl Transport {
    async fn send(&self, envelope: &Envelope, body: &[u8]) -> Result<Response, SendError> {
        match self {
            Transport::Own(pool) => pool.send(envelope, body).await,
            // lettre's own refusals to send, before any command: the relay lacks
            // 8BITMIME or SMTPUTF8 for this message (as `pool.rs` checks for its own).
            Transport::Lettre(t) => t.send_raw(envelope, body).await.map_err(|e| {
                if e.is_client() {
                    SendError::Unsupported(format!("not sent through this relay: {e}"))
                } else {
                    SendError::Smtp(e)
                }
            }),
        }
    }
}

fn envelope(sender: &str, recipients: &[String]) -> Result<Envelope, String> {
    let from = if sender.is_empty() {
        None
    } else {
        Some(
            sender
                .parse::<Address>()
                .map_err(|e| format!("sender {sender:?}: {e}"))?,
        )
    };
    let to = recipients
        .iter()
        .map(|r| {
            r.parse::<Address>()
                .map_err(|e| format!("recipient {r:?}: {e}"))
        })
        .collect::<Result<Vec<_>, _>>()?;
    Envelope::new(from, to).map_err(|e| e.to_string())
}

/// An SMTP reply with its enhanced status code split off the text.
pub fn reply(code: u16, text: &str) -> SmtpReply {
    let first = text.split_whitespace().next().unwrap_or("");
    let is_enhanced = {
        let p: Vec<&str> = first.split('.').collect();
        p.len() == 3
            && matches!(p[0], "2" | "4" | "5")
            && p.iter()
                .all(|x| !x.is_empty() && x.bytes().all(|b| b.is_ascii_digit()))
    };
    if is_enhanced {
        SmtpReply {
            code,
            enhanced: Some(first.to_owned()),
            text: text[first.len()..].trim_start().to_owned(),
        }
    } else {
        SmtpReply {
            code,
            enhanced: None,
            text: text.to_owned(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enhanced_status_is_split_from_the_text() {
        assert_eq!(
            reply(550, "5.1.1 <a@b>: no such user"),
            SmtpReply {
                code: 550,
                enhanced: Some("5.1.1".into()),
                text: "<a@b>: no such user".into()
            }
        );
        assert_eq!(
            reply(250, "Ok"),
            SmtpReply {
                code: 250,
                enhanced: None,
                text: "Ok".into()
            }
        );
    }
}
