//! A relay for tests that records every byte it receives: a `std::net` listener on
//! loopback answering a configurable EHLO (with or without `PIPELINING` and
//! `8BITMIME`) and accepting everything.
//!
//! It reads lines the lenient way some real relays do — a bare LF ends a line too — so
//! a body that smuggles a second transaction past a CRLF-only reader shows up here as
//! one. Each end of data is answered `250 2.0.0 Ok: queued as qN`, N counting
//! transactions over the whole server, so a test can tell which reply belongs to which
//! message. Bounded: at most [`MAX_CONNECTIONS`] connections and [`MAX_BYTES`] bytes
//! kept per connection; everything stops on drop.
//!
//! It can speak TLS ([`ServerTls`]): from the first byte (as `smtps://` relays do) or
//! after `STARTTLS`, with a certificate of the test's own CA (`support/tls.rs`). What it
//! records is then the plaintext inside, and each transaction says whether it came
//! over TLS; handshakes the client broke off are counted.

use rustls::{ServerConfig, ServerConnection, StreamOwned};
use std::io::{ErrorKind, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Connections served over the server's life; later ones are closed at once.
pub const MAX_CONNECTIONS: usize = 64;
/// Bytes kept per connection; a connection past it is closed.
pub const MAX_BYTES: usize = 8 * 1024 * 1024;

/// What the server announces in its EHLO reply.
#[derive(Debug, Clone, Copy)]
pub struct Ehlo {
    pub pipelining: bool,
    pub eight_bit_mime: bool,
}

/// Whether and how the server speaks TLS.
#[derive(Clone)]
pub enum ServerTls {
    None,
    /// TLS from the first byte.
    Implicit(Arc<ServerConfig>),
    /// `STARTTLS` announced in the EHLO reply and taken when asked for.
    StartTls(Arc<ServerConfig>),
}

/// One transaction as the server read it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transaction {
    /// The `MAIL FROM:` line as received, without its line end.
    pub mail: String,
    pub rcpts: Vec<String>,
    /// The data, unstuffed, with the line ends as received.
    pub data: Vec<u8>,
    /// The reply given at its end of data.
    pub reply: String,
    /// Whether it came over TLS.
    pub tls: bool,
}

#[derive(Default)]
struct Seen {
    /// Raw bytes per connection (the plaintext inside TLS), in the order connections
    /// were accepted.
    connections: Vec<Vec<u8>>,
    transactions: Vec<Transaction>,
    /// TLS handshakes that failed (the client refused the certificate, or went away).
    handshakes_failed: usize,
}

/// The running server; stopped on drop.
pub struct RawSmtp {
    pub port: u16,
    stop: Arc<AtomicBool>,
    seen: Arc<Mutex<Seen>>,
    accept: Option<JoinHandle<()>>,
}

impl RawSmtp {
    pub fn start(ehlo: Ehlo) -> RawSmtp {
        RawSmtp::start_tls(ehlo, ServerTls::None)
    }

    pub fn start_tls(ehlo: Ehlo, tls: ServerTls) -> RawSmtp {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
        listener
            .set_nonblocking(true)
            .expect("non-blocking listener");
        let port = listener.local_addr().expect("local address").port();
        let stop = Arc::new(AtomicBool::new(false));
        let seen = Arc::new(Mutex::new(Seen::default()));
        let accept = {
            let (stop, seen) = (stop.clone(), seen.clone());
            std::thread::spawn(move || accept_loop(listener, ehlo, &tls, &stop, &seen))
        };
        RawSmtp {
            port,
            stop,
            seen,
            accept: Some(accept),
        }
    }

    pub fn url(&self) -> String {
        format!("smtp://127.0.0.1:{}", self.port)
    }

    /// The raw bytes received, one entry per connection.
    pub fn connections(&self) -> Vec<Vec<u8>> {
        self.lock().connections.clone()
    }

    /// Every byte received on every connection, concatenated.
    pub fn all_bytes(&self) -> Vec<u8> {
        self.lock().connections.concat()
    }

    /// The transactions completed so far.
    pub fn transactions(&self) -> Vec<Transaction> {
        self.lock().transactions.clone()
    }

    /// TLS handshakes that failed so far.
    pub fn handshakes_failed(&self) -> usize {
        self.lock().handshakes_failed
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Seen> {
        self.seen.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Drop for RawSmtp {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.accept.take() {
            let _ = t.join();
        }
    }
}

fn accept_loop(
    listener: TcpListener,
    ehlo: Ehlo,
    tls: &ServerTls,
    stop: &Arc<AtomicBool>,
    seen: &Arc<Mutex<Seen>>,
) {
    let mut workers = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        match listener.accept() {
            Ok((stream, _)) if workers.len() < MAX_CONNECTIONS => {
                let index = {
                    let mut s = seen.lock().unwrap_or_else(|p| p.into_inner());
                    s.connections.push(Vec::new());
                    s.connections.len() - 1
                };
                let (stop, seen, tls) = (stop.clone(), seen.clone(), tls.clone());
                workers.push(std::thread::spawn(move || {
                    connection(stream, ehlo, &tls, index, &stop, &seen);
                }));
            }
            Ok((stream, _)) => drop(stream),
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(_) => std::thread::sleep(Duration::from_millis(5)),
        }
    }
    for w in workers {
        let _ = w.join();
    }
}

enum Mode {
    Commands,
    Data,
}

/// How a dialogue on one stream ended.
#[derive(PartialEq, Eq)]
enum End {
    Closed,
    /// `STARTTLS` was answered 220: the dialogue goes on inside TLS.
    StartTls,
}

/// Read timeout of a connection's socket, so that the stop flag is seen.
const POLL: Duration = Duration::from_millis(50);

fn connection(
    stream: TcpStream,
    ehlo: Ehlo,
    tls: &ServerTls,
    index: usize,
    stop: &AtomicBool,
    seen: &Mutex<Seen>,
) {
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_read_timeout(Some(POLL));
    let lock = || seen.lock().unwrap_or_else(|p| p.into_inner());
    match tls {
        ServerTls::None => {
            let mut plain = stream;
            serve(&mut plain, ehlo, Dialogue::plain(), index, stop, seen);
        }
        ServerTls::Implicit(config) => match handshake(stream, config, stop) {
            Some(mut tls) => {
                serve(
                    &mut tls,
                    ehlo,
                    Dialogue::inside_tls(true),
                    index,
                    stop,
                    seen,
                );
            }
            None => lock().handshakes_failed += 1,
        },
        ServerTls::StartTls(config) => {
            let mut plain = stream;
            let starttls = Dialogue {
                greet: true,
                offer_starttls: true,
                tls: false,
            };
            if serve(&mut plain, ehlo, starttls, index, stop, seen) == End::StartTls {
                match handshake(plain, config, stop) {
                    Some(mut tls) => {
                        serve(
                            &mut tls,
                            ehlo,
                            Dialogue::inside_tls(false),
                            index,
                            stop,
                            seen,
                        );
                    }
                    None => lock().handshakes_failed += 1,
                }
            }
        }
    }
}

/// The server's side of a TLS handshake, within 10 s; `None` when it failed.
fn handshake(
    mut socket: TcpStream,
    config: &Arc<ServerConfig>,
    stop: &AtomicBool,
) -> Option<StreamOwned<ServerConnection, TcpStream>> {
    let mut conn = ServerConnection::new(config.clone()).ok()?;
    let deadline = Instant::now() + Duration::from_secs(10);
    while conn.is_handshaking() {
        if stop.load(Ordering::Relaxed) || Instant::now() > deadline {
            return None;
        }
        match conn.complete_io(&mut socket) {
            Ok(_) => {}
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => return None,
        }
    }
    Some(StreamOwned::new(conn, socket))
}

/// Where in the dialogue a stream starts.
#[derive(Clone, Copy)]
struct Dialogue {
    /// Send the 220 greeting (not after STARTTLS).
    greet: bool,
    offer_starttls: bool,
    tls: bool,
}

impl Dialogue {
    fn plain() -> Dialogue {
        Dialogue {
            greet: true,
            offer_starttls: false,
            tls: false,
        }
    }

    fn inside_tls(greet: bool) -> Dialogue {
        Dialogue {
            greet,
            offer_starttls: false,
            tls: true,
        }
    }
}

fn serve(
    stream: &mut dyn ReadWrite,
    ehlo: Ehlo,
    dialogue: Dialogue,
    index: usize,
    stop: &AtomicBool,
    seen: &Mutex<Seen>,
) -> End {
    let lock = || seen.lock().unwrap_or_else(|p| p.into_inner());
    let reply = |stream: &mut dyn ReadWrite, text: &str| {
        stream.write_all(text.as_bytes()).is_ok() && stream.flush().is_ok()
    };
    if dialogue.greet && !reply(stream, "220 raw-smtp ESMTP\r\n") {
        return End::Closed;
    }
    let mut pending: Vec<u8> = Vec::new();
    let mut kept = 0usize;
    let mut mode = Mode::Commands;
    let mut tx: Option<Transaction> = None;
    let mut buf = [0u8; 16 * 1024];
    while !stop.load(Ordering::Relaxed) {
        let n = match stream.read(&mut buf) {
            Ok(0) => return End::Closed,
            Ok(n) => n,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => continue,
            Err(_) => return End::Closed,
        };
        kept += n;
        if kept > MAX_BYTES {
            return End::Closed;
        }
        lock().connections[index].extend_from_slice(&buf[..n]);
        pending.extend_from_slice(&buf[..n]);
        // Lenient lines: a bare LF ends one, as in the relays smuggling exploits.
        while let Some(end) = pending.iter().position(|&b| b == b'\n') {
            let raw: Vec<u8> = pending.drain(..=end).collect();
            let line = raw.strip_suffix(b"\n").unwrap_or(&raw);
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            match mode {
                Mode::Data => {
                    if line == b"." {
                        mode = Mode::Commands;
                        let mut t = tx.take().unwrap_or_else(|| Transaction {
                            mail: String::new(),
                            rcpts: Vec::new(),
                            data: Vec::new(),
                            reply: String::new(),
                            tls: dialogue.tls,
                        });
                        let mut s = lock();
                        t.reply = format!("250 2.0.0 Ok: queued as q{}", s.transactions.len() + 1);
                        let text = format!("{}\r\n", t.reply);
                        s.transactions.push(t);
                        drop(s);
                        if !reply(stream, &text) {
                            return End::Closed;
                        }
                    } else if let Some(t) = tx.as_mut() {
                        let unstuffed = raw.strip_prefix(b".").unwrap_or(&raw);
                        t.data.extend_from_slice(unstuffed);
                    }
                }
                Mode::Commands => {
                    let text = String::from_utf8_lossy(line).into_owned();
                    let verb = text.get(..4).unwrap_or("").to_ascii_uppercase();
                    let answer = match verb.as_str() {
                        "EHLO" => {
                            let mut a = String::from("250-raw-smtp\r\n");
                            if ehlo.pipelining {
                                a.push_str("250-PIPELINING\r\n");
                            }
                            if ehlo.eight_bit_mime {
                                a.push_str("250-8BITMIME\r\n");
                            }
                            if dialogue.offer_starttls {
                                a.push_str("250-STARTTLS\r\n");
                            }
                            a.push_str("250 SIZE 100000000\r\n");
                            a
                        }
                        "MAIL" => {
                            tx = Some(Transaction {
                                mail: text.clone(),
                                rcpts: Vec::new(),
                                data: Vec::new(),
                                reply: String::new(),
                                tls: dialogue.tls,
                            });
                            "250 2.1.0 Ok\r\n".into()
                        }
                        "RCPT" => {
                            if let Some(t) = tx.as_mut() {
                                t.rcpts.push(text.clone());
                            }
                            "250 2.1.5 Ok\r\n".into()
                        }
                        "DATA" => {
                            mode = Mode::Data;
                            "354 End data with <CR><LF>.<CR><LF>\r\n".into()
                        }
                        "QUIT" => {
                            let _ = reply(stream, "221 2.0.0 Bye\r\n");
                            return End::Closed;
                        }
                        "STAR" if dialogue.offer_starttls && pending.is_empty() => {
                            return if reply(stream, "220 2.0.0 Ready to start TLS\r\n") {
                                End::StartTls
                            } else {
                                End::Closed
                            };
                        }
                        _ => "250 2.0.0 Ok\r\n".into(),
                    };
                    if !reply(stream, &answer) {
                        return End::Closed;
                    }
                }
            }
        }
    }
    End::Closed
}

/// A plain or TLS stream.
trait ReadWrite: Read + Write {}
impl<T: Read + Write> ReadWrite for T {}
