//! A relay's SMTP connections: lettre's protocol client on a TCP stream we open
//! ourselves, with Nagle's algorithm off, kept between messages.
//!
//! Why not lettre's own pool: it opens its sockets with Nagle on, and lettre writes a
//! message's body and its closing `CRLF.CRLF` as two writes. The second waits for the
//! relay to acknowledge the first, which a relay with delayed ACKs holds back for up to
//! 40 ms: one stall per message and connection, whatever the load (measured: 32
//! connections carried ~700 messages/s). Its pool also sends a `NOOP` before every
//! reuse; here only a connection idle for longer than [`CHECK_AFTER_IDLE`] is checked.
//!
//! Implicit TLS (`smtps://`) still goes through lettre's transport: lettre can wrap only
//! its own sockets in TLS from the first byte.

use lettre::address::Envelope;
use lettre::transport::smtp::Error;
use lettre::transport::smtp::authentication::{Credentials, DEFAULT_MECHANISMS};
use lettre::transport::smtp::client::{AsyncSmtpConnection, TlsParameters};
use lettre::transport::smtp::extension::ClientId;
use lettre::transport::smtp::response::Response;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// A pooled connection idle for longer than this is checked with `NOOP` first.
const CHECK_AFTER_IDLE: Duration = Duration::from_secs(2);

/// STARTTLS wanted on a plain connection.
#[derive(Clone)]
pub(super) enum StartTls {
    No,
    IfOffered(TlsParameters),
    Required(TlsParameters),
}

/// Why a transaction got no SMTP reply, or which reply refused it.
#[derive(Debug)]
pub(super) enum SendError {
    /// From lettre: a refusal (with its reply) or a broken dialogue.
    Smtp(Error),
    /// The TCP connection could not be opened.
    Connect(String),
}

impl From<Error> for SendError {
    fn from(e: Error) -> SendError {
        SendError::Smtp(e)
    }
}

pub(super) struct Pool {
    host: String,
    port: u16,
    hello: ClientId,
    starttls: StartTls,
    credentials: Option<Credentials>,
    connect_timeout: Duration,
    idle_timeout: Duration,
    max_idle: usize,
    idle: Mutex<Vec<(AsyncSmtpConnection, Instant)>>,
}

impl Pool {
    pub(super) fn new(
        (host, port): (String, u16),
        hello: ClientId,
        starttls: StartTls,
        credentials: Option<Credentials>,
        connect_timeout: Duration,
        max_idle: usize,
    ) -> Pool {
        Pool {
            host,
            port,
            hello,
            starttls,
            credentials,
            connect_timeout,
            idle_timeout: Duration::from_secs(30),
            max_idle,
            idle: Mutex::new(Vec::new()),
        }
    }

    /// One transaction on a pooled or new connection. A connection that failed in
    /// any way is closed (lettre marks it broken), never pooled again.
    pub(super) async fn send(
        &self,
        envelope: &Envelope,
        body: &[u8],
    ) -> Result<Response, SendError> {
        let mut conn = self.connection().await?;
        let result = conn.send(envelope, body).await.map_err(SendError::Smtp);
        if !conn.has_broken() {
            let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
            if idle.len() < self.max_idle {
                idle.push((conn, Instant::now()));
            }
        }
        result
    }

    async fn connection(&self) -> Result<AsyncSmtpConnection, SendError> {
        loop {
            let parked = self.idle.lock().unwrap_or_else(|p| p.into_inner()).pop();
            let Some((mut conn, since)) = parked else {
                return self.connect().await;
            };
            let idle_for = since.elapsed();
            if idle_for >= self.idle_timeout {
                conn.abort().await;
                continue;
            }
            if idle_for >= CHECK_AFTER_IDLE && !conn.test_connected().await {
                conn.abort().await;
                continue;
            }
            return Ok(conn);
        }
    }

    async fn connect(&self) -> Result<AsyncSmtpConnection, SendError> {
        let addr = (self.host.as_str(), self.port);
        let where_ = || format!("connecting to {}:{}", self.host, self.port);
        let tcp = tokio::time::timeout(self.connect_timeout, tokio::net::TcpStream::connect(addr))
            .await
            .map_err(|_| {
                SendError::Connect(format!(
                    "{}: no answer within {:?}",
                    where_(),
                    self.connect_timeout
                ))
            })?
            .map_err(|e| SendError::Connect(format!("{}: {e}", where_())))?;
        tcp.set_nodelay(true)
            .map_err(|e| SendError::Connect(format!("{}: TCP_NODELAY: {e}", where_())))?;
        let mut conn =
            AsyncSmtpConnection::connect_with_transport(Box::new(tcp), &self.hello).await?;
        match &self.starttls {
            StartTls::No => {}
            StartTls::IfOffered(params) => {
                if conn.can_starttls() {
                    conn.starttls(params.clone(), &self.hello).await?;
                }
            }
            StartTls::Required(params) => conn.starttls(params.clone(), &self.hello).await?,
        }
        if let Some(credentials) = &self.credentials {
            conn.auth(DEFAULT_MECHANISMS, credentials).await?;
        }
        Ok(conn)
    }
}
