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
//! On a plain connection to a relay that announces `PIPELINING` (RFC 2920), a
//! transaction is two round trips instead of three plus one per recipient: `MAIL`, the
//! `RCPT`s and `DATA` go out together and lettre reads their replies in turn, then the
//! body and its closing dot go out as one write (`tap.rs`). Under STARTTLS (lettre owns
//! the TLS layer) or without the keyword, lettre's own `send` runs the transaction.
//!
//! Implicit TLS (`smtps://`) still goes through lettre's transport: lettre can wrap only
//! its own sockets in TLS from the first byte.

use super::tap::{TapHandle, announces_pipelining, tap};
use crate::wire;
use lettre::address::Envelope;
use lettre::transport::smtp::Error;
use lettre::transport::smtp::authentication::{Credentials, DEFAULT_MECHANISMS};
use lettre::transport::smtp::client::{AsyncSmtpConnection, TlsParameters};
use lettre::transport::smtp::commands::{Data, Mail, Rcpt};
use lettre::transport::smtp::extension::{ClientId, Extension, MailBodyParameter, MailParameter};
use lettre::transport::smtp::response::Response;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU8, Ordering};
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
    /// The relay lacks an extension the message needs (8BITMIME, SMTPUTF8): nothing
    /// was sent, the connection is still in step, and another relay may take it.
    Unsupported(String),
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
    idle: Mutex<Vec<(Conn, Instant)>>,
    /// Whether the newest connection pipelines: [`UNKNOWN`], [`PIPELINED`] or [`ONE_BY_ONE`].
    pipelining: AtomicU8,
}

const UNKNOWN: u8 = 0;
const PIPELINED: u8 = 1;
const ONE_BY_ONE: u8 = 2;

/// One connection: lettre's client, our side of its stream, and whether transactions
/// on it are pipelined.
struct Conn {
    smtp: AsyncSmtpConnection,
    tap: TapHandle,
    pipelining: bool,
    /// Set when the dialogue may be out of step; the connection is then dropped.
    broken: bool,
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
            pipelining: AtomicU8::new(UNKNOWN),
        }
    }

    /// Whether transactions are pipelined on this relay's newest connection (`None`
    /// before the first connection).
    pub(super) fn pipelining(&self) -> Option<bool> {
        match self.pipelining.load(Ordering::Relaxed) {
            PIPELINED => Some(true),
            ONE_BY_ONE => Some(false),
            _ => None,
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
        let result = conn.transact(envelope, body).await;
        if !conn.broken && !conn.smtp.has_broken() {
            let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
            if idle.len() < self.max_idle {
                idle.push((conn, Instant::now()));
            }
        }
        result
    }

    /// Opens a connection (connect, EHLO, STARTTLS and AUTH as configured) to see that
    /// the relay answers; the connection is kept for the next message when there is room.
    pub(super) async fn probe(&self) -> Result<(), SendError> {
        let conn = self.connect().await?;
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        if idle.len() < self.max_idle {
            idle.push((conn, Instant::now()));
        }
        Ok(())
    }

    async fn connection(&self) -> Result<Conn, SendError> {
        loop {
            let parked = self.idle.lock().unwrap_or_else(|p| p.into_inner()).pop();
            let Some((mut conn, since)) = parked else {
                return self.connect().await;
            };
            let idle_for = since.elapsed();
            if idle_for >= self.idle_timeout {
                conn.smtp.abort().await;
                continue;
            }
            if idle_for >= CHECK_AFTER_IDLE && !conn.smtp.test_connected().await {
                conn.smtp.abort().await;
                continue;
            }
            return Ok(conn);
        }
    }

    async fn connect(&self) -> Result<Conn, SendError> {
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
        let (tcp, tap) = tap(tcp);
        let mut conn =
            AsyncSmtpConnection::connect_with_transport(Box::new(tcp), &self.hello).await?;
        let announced = announces_pipelining(&tap.heard());
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
        // Under TLS the queue would go out beneath the encryption.
        let pipelining = announced && !conn.is_encrypted();
        let state = if pipelining { PIPELINED } else { ONE_BY_ONE };
        self.pipelining.store(state, Ordering::Relaxed);
        Ok(Conn {
            smtp: conn,
            tap,
            pipelining,
            broken: false,
        })
    }
}

impl Conn {
    /// One transaction: pipelined where it can be, else lettre's. A refusal or a broken
    /// dialogue is the `Err`, as from lettre's `send`; either leaves the connection
    /// unusable (lettre sends `QUIT` after a refusal). `Unsupported` is found before any
    /// command and leaves it in step.
    async fn transact(&mut self, envelope: &Envelope, body: &[u8]) -> Result<Response, SendError> {
        // Checked before any command, so a relay that cannot take the message is told
        // nothing and the connection stays usable.
        let options = mail_options(&self.smtp, envelope, body)?;
        if !self.pipelining {
            // lettre's own path; the body is CRLF-only (see `client.rs`), which its
            // dot-stuffing needs, and it sends `BODY=8BITMIME` as `mail_options` does.
            return Ok(self.smtp.send(envelope, body).await?);
        }
        let mut group = Mail::new(envelope.from().cloned(), options).to_string();
        for to in envelope.to() {
            let _ = write!(group, "{}", Rcpt::new(to.clone(), vec![]));
        }
        let _ = write!(group, "{Data}");
        self.tap.queue(group.as_bytes());
        // Every command of the group gets its reply, whatever the first said, and all
        // are read so that the dialogue stays in step; the first refusal is the answer.
        let mut refusal = None;
        for _ in 0..envelope.to().len() + 1 {
            match self.smtp.read_response().await {
                Ok(_) => {}
                Err(e) if e.status().is_some() => {
                    refusal.get_or_insert(e);
                }
                Err(e) => {
                    self.broken = true;
                    return Err(e.into());
                }
            }
        }
        let data = self.smtp.read_response().await;
        match (data, refusal) {
            (Ok(_), None) => {}
            (Ok(_), Some(refused)) => {
                // The relay wants the body though a command was refused: closing the
                // connection without the final dot makes it drop the transaction.
                self.broken = true;
                return Err(refused.into());
            }
            (Err(e), refusal) => {
                if e.status().is_some() {
                    self.smtp.abort().await;
                } else {
                    self.broken = true;
                }
                return Err(refusal.unwrap_or(e).into());
            }
        }
        // The body goes out transparent (RFC 5321 §4.5.2) with its closing dot, in one
        // write with the reading of the reply; lettre's `message` does the same byte by
        // byte, a cost that grows with the body. The body is CRLF-only (`client.rs`), and
        // `stuff_for_data` doubles a dot after any CR or LF all the same.
        self.tap.queue_with(|out| {
            wire::stuff_for_data(body, out);
            out.extend_from_slice(b"\r\n.\r\n");
        });
        match self.smtp.read_response().await {
            Ok(response) => Ok(response),
            Err(e) => {
                self.smtp.abort().await;
                Err(e.into())
            }
        }
    }
}

/// The `MAIL FROM` parameters the transaction needs, as lettre's `send` chooses them:
/// `SMTPUTF8` for non-ASCII addresses, `BODY=8BITMIME` for an 8-bit body (RFC 6152).
/// A relay that does not announce what is needed is refused the message, rather than
/// sent bytes it has not agreed to carry: re-encoding a raw message to 7 bits would
/// rewrite its MIME structure and break its DKIM signatures, and the send plugin can
/// give the message to another relay (or retry) on this error.
fn mail_options(
    conn: &AsyncSmtpConnection,
    envelope: &Envelope,
    body: &[u8],
) -> Result<Vec<MailParameter>, SendError> {
    let info = conn.server_info();
    let mut options = Vec::new();
    let non_ascii = |a: &lettre::Address| !AsRef::<str>::as_ref(a).is_ascii();
    if envelope.from().is_some_and(non_ascii) || envelope.to().iter().any(non_ascii) {
        if !info.supports_feature(Extension::SmtpUtfEight) {
            return Err(SendError::Unsupported(
                "the envelope has non-ASCII addresses and the relay does not announce SMTPUTF8 (RFC 6531); not sent through it".into(),
            ));
        }
        options.push(MailParameter::SmtpUtfEight);
    }
    if !body.is_ascii() {
        if !info.supports_feature(Extension::EightBitMime) {
            return Err(SendError::Unsupported(
                "the message has 8-bit content and the relay does not announce 8BITMIME (RFC 6152); not sent through it".into(),
            ));
        }
        options.push(MailParameter::Body(MailBodyParameter::EightBitMime));
    }
    Ok(options)
}
