//! The SMTP listeners of `sluice serve`: bounce intake (DSNs and feedback reports sent
//! to the VERP return paths of outgoing mail) and mail submission (`[submission]`, with
//! STARTTLS and AUTH).
//!
//! [`session`] is the protocol without I/O; [`serve_connection`] (and, for submission
//! with its TLS upgrade, [`serve_session`]) drives it over a
//! stream with bounded lines, per-command and DATA timeouts, and pipelining (replies
//! are flushed only when no more pipelined input is waiting). What a recipient is and
//! what happens to a message is the [`Handler`]'s business: the server's is
//! [`crate::serve`]'s bounce intake. A message is acknowledged with 250 only after the
//! handler has durably recorded it; if it cannot, the client is told to try again
//! (4xx), so an accepted bounce is never lost.
//!
//! No client can hold the listener: [`Admission`] caps sessions per client address
//! and in all, a session lasts at most [`Config::max_session`], and a session that
//! only chats (NOOP, RSET, EHLO…) is closed after [`Limits::max_unproductive_commands`];
//! each ends with a 421 that says which limit it hit.

pub mod admission;
pub mod session;
pub mod tls;

pub use admission::{Admission, Ticket};
pub use session::{
    DataEnd, DataReader, Limits, Reply, Secret, Session, Step, SubmitMode, Transaction,
};

use session::{MAX_COMMAND_LINE, MAX_TEXT_LINE};
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{
    AsyncBufRead, AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader, ReadBuf,
};
use tokio_rustls::TlsAcceptor;

/// What the listener asks of the rest of the host.
pub trait Handler: Send + Sync {
    /// What a checked recipient resolves to.
    type Target: Send;

    /// Checks a `RCPT TO` address: `Err` is the reply that refuses it.
    fn check_rcpt(&self, address: &str)
    -> impl Future<Output = Result<Self::Target, Reply>> + Send;

    /// Takes in one message for the transaction's recipients; the reply is the final
    /// answer to DATA (250 only once the message is durably recorded).
    fn deliver(
        &self,
        tx: Transaction<Self::Target>,
        message: Vec<u8>,
    ) -> impl Future<Output = Reply> + Send;

    /// Checks AUTH credentials (submission): `Err` is the reply refusing them (535, or a
    /// 421 that ends the session). Never called by a session that offers no AUTH.
    fn authenticate(
        &self,
        _user: &str,
        _password: &Secret,
    ) -> impl Future<Output = Result<(), Reply>> + Send {
        async { Err(Reply::new(502, "5.5.1 AUTH is not implemented")) }
    }
}

/// A connection before or after its TLS upgrade.
enum Conn<S> {
    Plain(S),
    Tls(Box<tokio_rustls::server::TlsStream<S>>),
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for Conn<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Conn::Tls(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for Conn<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Conn::Tls(s) => Pin::new(s).poll_write(cx, buf),
        }
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_flush(cx),
            Conn::Tls(s) => Pin::new(s).poll_flush(cx),
        }
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Conn::Tls(s) => Pin::new(s).poll_shutdown(cx),
        }
    }
}

/// How a submission session starts.
pub struct Submit<'a> {
    /// Offers STARTTLS with this when the connection is not TLS yet.
    pub starttls: Option<&'a TlsAcceptor>,
    /// The connection is TLS already (implicit TLS).
    pub tls: bool,
    /// The client is trusted without AUTH.
    pub trusted: bool,
}

/// Timeouts and limits of every session.
#[derive(Debug, Clone)]
pub struct Config {
    pub hostname: String,
    pub limits: Limits,
    pub command_timeout: Duration,
    pub data_timeout: Duration,
    /// The longest a session may last, whatever it does.
    pub max_session: Duration,
}

/// How reading one line ended.
enum Line {
    Ok,
    /// Longer than allowed; the rest of it was read and dropped.
    TooLong,
    Eof,
}

/// Reads one line (up to and including LF) into `buf`, keeping at most `max` bytes.
async fn read_line<R: AsyncBufRead + Unpin>(
    r: &mut R,
    buf: &mut Vec<u8>,
    max: usize,
) -> std::io::Result<Line> {
    buf.clear();
    let mut too_long = false;
    loop {
        let available = r.fill_buf().await?;
        if available.is_empty() {
            return Ok(if buf.is_empty() && !too_long {
                Line::Eof
            } else if too_long {
                Line::TooLong
            } else {
                Line::Ok
            });
        }
        let (chunk, done) = match memchr::memchr(b'\n', available) {
            Some(i) => (&available[..=i], true),
            None => (available, false),
        };
        let n = chunk.len();
        if !too_long && buf.len() + n <= max {
            buf.extend_from_slice(chunk);
        } else {
            too_long = true;
            buf.clear();
        }
        r.consume(n);
        if done {
            return Ok(if too_long { Line::TooLong } else { Line::Ok });
        }
    }
}

/// Writes a reply and flushes it at once (the last one, or one the client
/// waits for before it goes on).
async fn send_now(writer: &mut (impl AsyncWrite + Unpin), reply: &Reply) -> std::io::Result<()> {
    writer.write_all(reply.to_wire().as_bytes()).await?;
    writer.flush().await
}

/// Serves one bounce-intake connection until QUIT, a timeout, too many errors or EOF.
pub async fn serve_connection<S, H>(stream: S, config: &Config, handler: &H) -> std::io::Result<()>
where
    S: AsyncRead + AsyncWrite + Unpin,
    H: Handler,
{
    serve_session(stream, config, handler, None).await
}

/// Serves one connection: bounce intake (`submit` = `None`) or submission, which may
/// upgrade to TLS on STARTTLS and authenticates through the handler.
pub async fn serve_session<S, H>(
    stream: S,
    config: &Config,
    handler: &H,
    submit: Option<Submit<'_>>,
) -> std::io::Result<()>
where
    S: AsyncRead + AsyncWrite + Unpin,
    H: Handler,
{
    let (read, write) = tokio::io::split(Conn::Plain(stream));
    let mut reader = BufReader::new(read);
    let mut writer = tokio::io::BufWriter::new(write);
    let starttls = submit.as_ref().and_then(|s| s.starttls);
    let mut session: Session<H::Target> = match &submit {
        None => Session::new(&config.hostname, config.limits.clone()),
        Some(s) => Session::submission(
            &config.hostname,
            config.limits.clone(),
            SubmitMode {
                starttls: s.starttls.is_some() && !s.tls,
                tls: s.tls,
                trusted: s.trusted,
            },
        ),
    };
    writer
        .write_all(session.greeting().to_wire().as_bytes())
        .await?;
    writer.flush().await?;
    let mut line = Vec::with_capacity(MAX_COMMAND_LINE);
    let ends = tokio::time::Instant::now() + config.max_session;
    // A wait for the client ends at its own timeout or at the session's end; which one
    // decides the 421's text.
    let wait = |timeout: Duration| {
        let own = tokio::time::Instant::now() + timeout;
        (own.min(ends), own >= ends)
    };
    let expired = |session: &Session<H::Target>, at_session_end: bool| {
        if at_session_end {
            session.too_long(config.max_session.as_secs())
        } else {
            session.timeout()
        }
    };
    loop {
        // A client that keeps talking never waits out a timeout: the session's end is
        // checked before each command too.
        if tokio::time::Instant::now() >= ends {
            return send_now(&mut writer, &expired(&session, true)).await;
        }
        let (until, at_end) = wait(config.command_timeout);
        let read =
            tokio::time::timeout_at(until, read_line(&mut reader, &mut line, MAX_COMMAND_LINE))
                .await;
        let step = match read {
            Err(_) => return send_now(&mut writer, &expired(&session, at_end)).await,
            Ok(Err(e)) => return Err(e),
            Ok(Ok(Line::Eof)) => return Ok(()),
            Ok(Ok(Line::TooLong)) => session.line_too_long(),
            Ok(Ok(Line::Ok)) => session.line(&line),
        };
        let step = match step {
            Step::CheckRcpt(address) => {
                let verdict = handler.check_rcpt(&address).await;
                session.rcpt_checked(address, verdict)
            }
            Step::Authenticate { user, password } => {
                // The reply waits for the check: flush what was answered before it.
                writer.flush().await?;
                let verdict = handler.authenticate(&user, &password).await;
                session.auth_checked(verdict)
            }
            other => other,
        };
        match step {
            Step::Reply(r) => writer.write_all(r.to_wire().as_bytes()).await?,
            Step::Close(r) => return send_now(&mut writer, &r).await,
            Step::ReadData(go_ahead) => {
                writer.write_all(go_ahead.to_wire().as_bytes()).await?;
                writer.flush().await?;
                let limit = config.limits.max_message_bytes;
                let (until, at_end) = wait(config.data_timeout);
                let data = tokio::time::timeout_at(until, read_data(&mut reader, limit)).await;
                let end = match data {
                    Err(_) => return send_now(&mut writer, &expired(&session, at_end)).await,
                    Ok(Err(e)) => return Err(e),
                    // The client went away mid-message: nothing was accepted.
                    Ok(Ok(None)) => return Ok(()),
                    Ok(Ok(Some(end))) => end,
                };
                let reply = match end {
                    DataEnd::Message(message) => {
                        let tx = session.take_transaction();
                        handler.deliver(tx, message).await
                    }
                    refused => {
                        session.abort_transaction();
                        refused.refusal(limit).expect("not a message")
                    }
                };
                writer.write_all(reply.to_wire().as_bytes()).await?;
            }
            Step::StartTls(go_ahead) => {
                let Some(acceptor) = starttls else {
                    unreachable!("a session offers STARTTLS only with an acceptor")
                };
                send_now(&mut writer, &go_ahead).await?;
                // Whatever the client sent after STARTTLS is dropped unread with the
                // buffer (RFC 3207 §4.2; the plaintext-injection attack, CVE-2011-0411).
                let conn = reader.into_inner().unsplit(writer.into_inner());
                let Conn::Plain(plain) = conn else {
                    unreachable!("STARTTLS is offered only before TLS")
                };
                let (until, _) = wait(config.command_timeout);
                let tls = match tokio::time::timeout_at(until, acceptor.accept(plain)).await {
                    Ok(Ok(tls)) => tls,
                    // A failed or stalled handshake: nothing can be said in the clear.
                    Ok(Err(e)) => return Err(e),
                    Err(_) => return Ok(()),
                };
                let (read, write) = tokio::io::split(Conn::Tls(Box::new(tls)));
                reader = BufReader::new(read);
                writer = tokio::io::BufWriter::new(write);
                session.tls_started();
                continue;
            }
            Step::CheckRcpt(_) | Step::Authenticate { .. } => unreachable!("resolved above"),
        }
        // Pipelining: answer a batch of commands in one write.
        if reader.buffer().is_empty() {
            writer.flush().await?;
        }
    }
}

/// The DATA phase; `None` on EOF before the final dot.
async fn read_data<R: AsyncBufRead + Unpin>(
    reader: &mut R,
    limit: u64,
) -> std::io::Result<Option<DataEnd>> {
    let mut data = DataReader::new(limit);
    let mut line = Vec::with_capacity(MAX_TEXT_LINE);
    loop {
        match read_line(reader, &mut line, MAX_TEXT_LINE).await? {
            Line::Eof => return Ok(None),
            Line::TooLong => data.long_line(),
            Line::Ok => {
                if let Some(end) = data.line(&line) {
                    return Ok(Some(end));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    /// Takes `ok@x` only and records what was delivered.
    struct Fake(std::sync::Mutex<Vec<Vec<u8>>>);

    impl Handler for Fake {
        type Target = ();
        async fn check_rcpt(&self, address: &str) -> Result<(), Reply> {
            if address == "ok@x" {
                Ok(())
            } else {
                Err(Reply::new(550, "5.1.1 no such bounce address"))
            }
        }
        async fn deliver(&self, _tx: Transaction<()>, message: Vec<u8>) -> Reply {
            self.0.lock().unwrap().push(message);
            Reply::new(250, "2.0.0 recorded")
        }
    }

    async fn dialogue(input: &[u8], config: &Config) -> (String, Vec<Vec<u8>>) {
        let (mut client, server) = tokio::io::duplex(64 * 1024);
        let fake = Fake(Default::default());
        client.write_all(input).await.unwrap();
        // The server sees EOF after the input; the client still reads the replies.
        client.shutdown().await.unwrap();
        let serve = serve_connection(server, config, &fake);
        let mut out = String::new();
        let read = async {
            client.read_to_string(&mut out).await.unwrap();
        };
        let (r, ()) = tokio::join!(serve, read);
        r.unwrap();
        (out, fake.0.into_inner().unwrap())
    }

    fn config() -> Config {
        Config {
            hostname: "mx.test".into(),
            limits: Limits {
                max_message_bytes: 2000,
                max_recipients: 10,
                max_errors: 10,
                max_unproductive_commands: 10,
            },
            command_timeout: Duration::from_secs(30),
            data_timeout: Duration::from_secs(30),
            max_session: Duration::from_secs(300),
        }
    }

    fn codes(out: &str) -> Vec<&str> {
        out.lines()
            .filter(|l| l.as_bytes().get(3) == Some(&b' '))
            .map(|l| &l[..3])
            .collect()
    }

    #[tokio::test]
    async fn a_pipelined_transaction_is_answered_in_order() {
        let input = b"EHLO c\r\nMAIL FROM:<>\r\nRCPT TO:<bad@x>\r\nRCPT TO:<ok@x>\r\nDATA\r\n\
            Subject: b\r\n\r\n..dot\r\n.\r\nQUIT\r\n";
        let (out, got) = dialogue(input, &config()).await;
        assert_eq!(
            codes(&out),
            ["220", "250", "250", "550", "250", "354", "250", "221"],
            "{out}"
        );
        assert_eq!(got, vec![b"Subject: b\r\n\r\n.dot\r\n".to_vec()]);
    }

    #[tokio::test]
    async fn long_lines_and_large_messages_are_refused_and_the_session_goes_on() {
        let mut input = b"EHLO c\r\n".to_vec();
        input.extend(vec![b'A'; 600]);
        input.extend(b"\r\nMAIL FROM:<>\r\nRCPT TO:<ok@x>\r\nDATA\r\n");
        for _ in 0..30 {
            input.extend(vec![b'x'; 98]);
            input.extend(b"\r\n");
        }
        input.extend(b".\r\nNOOP\r\n");
        // EOF without QUIT ends the session too.
        let (out, got) = dialogue(&input, &config()).await;
        assert_eq!(
            codes(&out),
            ["220", "250", "500", "250", "250", "354", "552", "250"],
            "{out}"
        );
        assert!(got.is_empty());
    }

    #[tokio::test]
    async fn a_message_that_never_ends_is_told_421_after_the_data_timeout() {
        let (mut client, server) = tokio::io::duplex(1024);
        let fake = Fake(Default::default());
        let config = Config {
            data_timeout: Duration::from_millis(100),
            ..config()
        };
        client
            .write_all(b"HELO c\r\nMAIL FROM:<>\r\nRCPT TO:<ok@x>\r\nDATA\r\nSubject: half\r\n")
            .await
            .unwrap();
        let serve = serve_connection(server, &config, &fake);
        let mut out = String::new();
        let (r, _) = tokio::join!(serve, client.read_to_string(&mut out));
        r.unwrap();
        assert_eq!(
            codes(&out),
            ["220", "250", "250", "250", "354", "421"],
            "{out}"
        );
        assert!(
            fake.0.into_inner().unwrap().is_empty(),
            "nothing was taken in"
        );
    }

    #[tokio::test]
    async fn a_silent_client_is_told_421_after_the_command_timeout() {
        let (mut client, server) = tokio::io::duplex(1024);
        let fake = Fake(Default::default());
        let config = Config {
            command_timeout: Duration::from_millis(100),
            ..config()
        };
        let serve = serve_connection(server, &config, &fake);
        let mut out = String::new();
        let (r, _) = tokio::join!(serve, client.read_to_string(&mut out));
        r.unwrap();
        assert_eq!(codes(&out), ["220", "421"], "{out}");
    }

    #[tokio::test]
    async fn a_client_that_never_stops_talking_is_closed_at_the_session_end() {
        let (client, server) = tokio::io::duplex(64 * 1024);
        let fake = Fake(Default::default());
        let mut config = Config {
            max_session: Duration::from_secs(1),
            ..config()
        };
        config.limits.max_unproductive_commands = u32::MAX;
        let (mut read, mut write) = tokio::io::split(client);
        // NOOPs without pause (bounded), so no read of the server ever times out.
        let talk = async move {
            for _ in 0..10_000_000 {
                if write.write_all(b"NOOP\r\n").await.is_err() {
                    return;
                }
            }
            panic!("the session never ended");
        };
        let mut out = Vec::new();
        let listen = read.read_to_end(&mut out);
        let serve = serve_connection(server, &config, &fake);
        let (r, (), _) = tokio::join!(serve, talk, listen);
        r.unwrap();
        let out = String::from_utf8_lossy(&out);
        let last = out.lines().last().unwrap_or_default();
        assert!(
            last.starts_with("421") && last.contains("session longer than 1 seconds"),
            "{last}"
        );
    }

    #[tokio::test]
    async fn a_session_that_outlasts_its_limit_is_told_421_saying_so() {
        let (mut client, server) = tokio::io::duplex(1024);
        let fake = Fake(Default::default());
        let config = Config {
            max_session: Duration::from_secs(1),
            ..config()
        };
        // One NOOP, then nothing: the command timeout (30 s) is far off, the
        // session's end is not.
        client.write_all(b"NOOP\r\n").await.unwrap();
        let serve = serve_connection(server, &config, &fake);
        let mut out = String::new();
        let (r, _) = tokio::join!(serve, client.read_to_string(&mut out));
        r.unwrap();
        assert_eq!(codes(&out), ["220", "250", "421"], "{out}");
        assert!(out.contains("session longer than 1 seconds"), "{out}");
    }
}
