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

use std::io::{ErrorKind, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

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
}

#[derive(Default)]
struct Seen {
    /// Raw bytes per connection, in the order connections were accepted.
    connections: Vec<Vec<u8>>,
    transactions: Vec<Transaction>,
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
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
        listener
            .set_nonblocking(true)
            .expect("non-blocking listener");
        let port = listener.local_addr().expect("local address").port();
        let stop = Arc::new(AtomicBool::new(false));
        let seen = Arc::new(Mutex::new(Seen::default()));
        let accept = {
            let (stop, seen) = (stop.clone(), seen.clone());
            std::thread::spawn(move || accept_loop(listener, ehlo, &stop, &seen))
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

fn accept_loop(listener: TcpListener, ehlo: Ehlo, stop: &Arc<AtomicBool>, seen: &Arc<Mutex<Seen>>) {
    let mut workers = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        match listener.accept() {
            Ok((stream, _)) if workers.len() < MAX_CONNECTIONS => {
                let index = {
                    let mut s = seen.lock().unwrap_or_else(|p| p.into_inner());
                    s.connections.push(Vec::new());
                    s.connections.len() - 1
                };
                let (stop, seen) = (stop.clone(), seen.clone());
                workers.push(std::thread::spawn(move || {
                    serve(stream, ehlo, index, &stop, &seen);
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

fn serve(mut stream: TcpStream, ehlo: Ehlo, index: usize, stop: &AtomicBool, seen: &Mutex<Seen>) {
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_read_timeout(Some(Duration::from_millis(50)));
    let lock = || seen.lock().unwrap_or_else(|p| p.into_inner());
    let reply = |stream: &mut TcpStream, text: &str| stream.write_all(text.as_bytes()).is_ok();
    if !reply(&mut stream, "220 raw-smtp ESMTP\r\n") {
        return;
    }
    let mut pending: Vec<u8> = Vec::new();
    let mut kept = 0usize;
    let mut mode = Mode::Commands;
    let mut tx: Option<Transaction> = None;
    let mut buf = [0u8; 16 * 1024];
    while !stop.load(Ordering::Relaxed) {
        let n = match stream.read(&mut buf) {
            Ok(0) => return,
            Ok(n) => n,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => continue,
            Err(_) => return,
        };
        kept += n;
        if kept > MAX_BYTES {
            return;
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
                        });
                        let mut s = lock();
                        t.reply = format!("250 2.0.0 Ok: queued as q{}", s.transactions.len() + 1);
                        let text = format!("{}\r\n", t.reply);
                        s.transactions.push(t);
                        drop(s);
                        if !reply(&mut stream, &text) {
                            return;
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
                            a.push_str("250 SIZE 100000000\r\n");
                            a
                        }
                        "MAIL" => {
                            tx = Some(Transaction {
                                mail: text.clone(),
                                rcpts: Vec::new(),
                                data: Vec::new(),
                                reply: String::new(),
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
                            let _ = reply(&mut stream, "221 2.0.0 Bye\r\n");
                            return;
                        }
                        _ => "250 2.0.0 Ok\r\n".into(),
                    };
                    if !reply(&mut stream, &answer) {
                        return;
                    }
                }
            }
        }
    }
}
