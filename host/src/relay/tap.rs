//! The TCP stream under lettre's SMTP client on our own connections, with what
//! pipelining (RFC 2920) needs that lettre does not offer:
//!
//! - bytes can be queued to go out ahead of lettre's next read, so that `MAIL`, every
//!   `RCPT` and `DATA` leave in one segment and lettre then reads their replies one by
//!   one ([`TapHandle::queue`]);
//! - lettre's writes are held until it reads or closes, so a body and its closing
//!   `CRLF.CRLF` (two writes in lettre) leave together: every write of the SMTP client
//!   is followed by a read of the reply, which sends what waits first;
//! - what the server says before the first transaction is kept, so the EHLO reply's
//!   `PIPELINING` keyword can be looked for (lettre keeps only the keywords it uses).
//!
//! Under STARTTLS this stream carries ciphertext: the queue is then never used (see
//! `pool.rs`), and holding writes until the next read is still right.

use lettre::transport::smtp::client::AsyncTokioStream;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, ready};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// Held writes past this are sent before more is taken.
const HOLD_AT_MOST: usize = 64 * 1024;
/// The most kept of what the server said before the first transaction.
const HEARD_AT_MOST: usize = 16 * 1024;

#[derive(Default)]
struct Shared {
    /// Bytes to send, from `sent` on.
    out: Vec<u8>,
    sent: usize,
    /// What was read so far, while still listening.
    heard: Option<Vec<u8>>,
}

impl Shared {
    fn waiting(&self) -> usize {
        self.out.len() - self.sent
    }

    /// Sends what waits; `Ready(Ok)` once nothing does.
    fn poll_drain(&mut self, tcp: &mut TcpStream, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.sent < self.out.len() {
            match Pin::new(&mut *tcp).poll_write(cx, &self.out[self.sent..]) {
                Poll::Ready(Ok(0)) => {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::WriteZero,
                        "the relay's connection took no more bytes",
                    )));
                }
                Poll::Ready(Ok(n)) => self.sent += n,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            }
        }
        self.out.clear();
        self.sent = 0;
        Poll::Ready(Ok(()))
    }
}

/// The stream lettre owns.
pub(super) struct Tap {
    tcp: TcpStream,
    shared: Arc<Mutex<Shared>>,
}

/// Our side of a [`Tap`] lettre owns.
pub(super) struct TapHandle(Arc<Mutex<Shared>>);

impl std::fmt::Debug for Tap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tap").field("tcp", &self.tcp).finish()
    }
}

/// Wraps `tcp`, listening to what the server says until [`TapHandle::heard`].
pub(super) fn tap(tcp: TcpStream) -> (Tap, TapHandle) {
    let shared = Arc::new(Mutex::new(Shared {
        heard: Some(Vec::new()),
        ..Shared::default()
    }));
    (
        Tap {
            tcp,
            shared: shared.clone(),
        },
        TapHandle(shared),
    )
}

fn lock(shared: &Mutex<Shared>) -> MutexGuard<'_, Shared> {
    shared.lock().unwrap_or_else(|p| p.into_inner())
}

impl TapHandle {
    /// Queues `bytes` to be sent before the next read.
    pub(super) fn queue(&self, bytes: &[u8]) {
        lock(&self.0).out.extend_from_slice(bytes);
    }

    /// Queues what `write` appends to the queue (no copy of its own).
    pub(super) fn queue_with(&self, write: impl FnOnce(&mut Vec<u8>)) {
        write(&mut lock(&self.0).out);
    }

    /// What the server said so far (greeting, EHLO reply, …); stops listening.
    pub(super) fn heard(&self) -> Vec<u8> {
        lock(&self.0).heard.take().unwrap_or_default()
    }
}

impl AsyncRead for Tap {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let mut shared = lock(&this.shared);
        // A reply is only ever awaited for what was written: send it first.
        ready!(shared.poll_drain(&mut this.tcp, cx))?;
        let before = buf.filled().len();
        let read = Pin::new(&mut this.tcp).poll_read(cx, buf);
        if let (Poll::Ready(Ok(())), Some(heard)) = (&read, shared.heard.as_mut()) {
            let new = &buf.filled()[before..];
            let room = HEARD_AT_MOST.saturating_sub(heard.len());
            heard.extend_from_slice(&new[..new.len().min(room)]);
        }
        read
    }
}

impl AsyncWrite for Tap {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let mut shared = lock(&this.shared);
        if shared.waiting() + buf.len() > HOLD_AT_MOST {
            ready!(shared.poll_drain(&mut this.tcp, cx))?;
            // A large write goes straight out instead of through the buffer.
            if buf.len() > HOLD_AT_MOST {
                return Pin::new(&mut this.tcp).poll_write(cx, buf);
            }
        }
        shared.out.extend_from_slice(buf);
        Poll::Ready(Ok(buf.len()))
    }

    /// Holds the bytes until the next read: see the module doc.
    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let mut shared = lock(&this.shared);
        ready!(shared.poll_drain(&mut this.tcp, cx))?;
        Pin::new(&mut this.tcp).poll_shutdown(cx)
    }
}

impl AsyncTokioStream for Tap {
    fn peer_addr(&self) -> io::Result<SocketAddr> {
        self.tcp.peer_addr()
    }
}

/// Whether an EHLO reply among `heard` (greeting and replies as the server sent them)
/// announces `PIPELINING`.
pub(super) fn announces_pipelining(heard: &[u8]) -> bool {
    heard.split(|&b| b == b'\n').any(|line| {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        line.len() > 4
            && line.starts_with(b"250")
            && matches!(line[3], b'-' | b' ')
            && line[4..].trim_ascii().eq_ignore_ascii_case(b"PIPELINING")
    })
}

#[cfg(test)]
mod tests {
    use super::announces_pipelining;

    #[test]
    fn pipelining_is_read_from_the_ehlo_reply_only() {
        let postfix =
            b"220 sink ESMTP\r\n250-sink\r\n250-PIPELINING\r\n250-8BITMIME\r\n250 SMTPUTF8\r\n";
        assert!(announces_pipelining(postfix));
        assert!(announces_pipelining(
            b"220 x\r\n250-x\r\n250 pipelining\r\n"
        ));
        let without = b"220 sink ESMTP\r\n250-sink\r\n250-8BITMIME\r\n250 SMTPUTF8\r\n";
        assert!(!announces_pipelining(without));
        // Said in a greeting, or as a word of another line, it announces nothing.
        assert!(!announces_pipelining(b"220 PIPELINING\r\n250 x\r\n"));
        assert!(!announces_pipelining(
            b"220 x\r\n250-x\r\n250 XPIPELINING\r\n"
        ));
        assert!(!announces_pipelining(b""));
    }
}
