//! Sending one webhook request (issue 21), safely for a URL a hostile tenant chose: the
//! Standard Webhooks signature, and a small HTTP/1.1 client of our own that connects
//! only to addresses it checked itself, follows no redirect, and is bounded in time
//! and in the bytes it reads. A leaf: it knows nothing of the store or of `serve`.
//!
//! Why our own client: `hyper`'s client needs crates that are not in the lock file
//! (`want`), `reqwest` is not in it either, and what we need is small and is all about
//! its limits: one POST at a time on a connection, the status line and headers read
//! into a bounded buffer, the body never read past the cap.
//!
//! Connections are kept alive between requests to the same receiver ([`Conn`],
//! [`IdlePool`], several per webhook when it has several requests in flight, one on
//! each): a webhook busy with small batches pays a round trip per request, not
//! a TCP (and TLS) handshake and a DNS lookup. A kept connection was checked when it
//! was made and is reused only for the same origin, for at most [`MAX_CONN_AGE`] and
//! after at most [`MAX_IDLE`] idle; any error or unclean answer closes it.
//!
//! Invariants:
//! - A name is resolved here and the connection made to one of the addresses that
//!   resolution returned and this module checked (private, loopback, link-local,
//!   unspecified, multicast and other non-public ranges refused unless
//!   `allow_private`): a name that resolves to a public address for a check and an
//!   internal one for the connection (DNS rebinding) never reaches the internal one.
//! - Connecting (TLS included) takes at most `connect_timeout`, the exchange after it
//!   at most `response_timeout`, and at most `max_response_bytes` of the answer are
//!   read, whatever the receiver does (drips bytes, never answers, sends gigabytes).
//! - A 3xx is a failure like any other non-2xx: its `Location` is never followed.
//! - Every new connection goes through the address check, a kept one included when it
//!   is replaced: reuse never skips it for a connection it did not check.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio_rustls::rustls;

/// The longest URL a webhook may have.
pub const MAX_URL_LEN: usize = 2048;
/// Bytes of a failed answer's body kept in its attempt's error.
const ERROR_BODY_PREFIX: usize = 200;

/// The limits of one request.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub connect_timeout: Duration,
    pub response_timeout: Duration,
    pub max_response_bytes: usize,
    pub allow_private: bool,
}

/// What came of one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sent {
    /// The receiver's status, if it answered one.
    pub status: Option<u16>,
    pub latency: Duration,
    /// Why it did not succeed (`None` for a 2xx).
    pub error: Option<String>,
}

impl Sent {
    pub fn ok(&self) -> bool {
        self.error.is_none()
    }
}

/// A webhook URL checked for what it says (scheme, host, no credentials, length);
/// its addresses are checked when it is sent. An IP literal that is not public is
/// refused here already unless `allow_private`.
pub fn check_url(text: &str, allow_private: bool) -> Result<url::Url, String> {
    if text.len() > MAX_URL_LEN {
        return Err(format!(
            "url is {} bytes long; at most {MAX_URL_LEN}",
            text.len()
        ));
    }
    if text.bytes().any(|b| b <= b' ' || b == 0x7f) {
        return Err("url holds spaces or control characters".into());
    }
    let url = url::Url::parse(text).map_err(|e| format!("url {text:?} is not a URL: {e}"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!(
            "url scheme {:?} is not allowed; only http and https",
            url.scheme()
        ));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err("url may not hold a user name or password".into());
    }
    if url.fragment().is_some() {
        return Err("url may not hold a fragment (#…)".into());
    }
    match url.host() {
        None => return Err("url has no host".into()),
        Some(url::Host::Ipv4(ip)) if !allow_private && !is_public(IpAddr::V4(ip)) => {
            return Err(format!(
                "url's address {ip} is private, loopback, link-local or otherwise not public \
                 (webhooks.allow_private is false)"
            ));
        }
        Some(url::Host::Ipv6(ip)) if !allow_private && !is_public(IpAddr::V6(ip)) => {
            return Err(format!(
                "url's address {ip} is private, loopback, link-local or otherwise not public \
                 (webhooks.allow_private is false)"
            ));
        }
        Some(_) => {}
    }
    Ok(url)
}

/// Whether an address is one a tenant's webhook may reach without `allow_private`.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_public_v4(v4),
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_public_v4(v4);
            }
            let s = v6.segments();
            // NAT64 (64:ff9b::/96) and the deprecated IPv4-compatible form carry an
            // IPv4 address: judge that one.
            if s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] || s[..6] == [0, 0, 0, 0, 0, 0] {
                let v4 =
                    Ipv4Addr::new((s[6] >> 8) as u8, s[6] as u8, (s[7] >> 8) as u8, s[7] as u8);
                return !v6.is_unspecified() && !v6.is_loopback() && is_public_v4(v4);
            }
            !(v6.is_unspecified()
                || v6.is_loopback()
                || v6.is_multicast()
                || (s[0] & 0xfe00) == 0xfc00 // unique local fc00::/7
                || (s[0] & 0xffc0) == 0xfe80 // link-local fe80::/10
                || (s[0] & 0xffc0) == 0xfec0 // site-local fec0::/10
                || (s[0] == 0x2001 && s[1] == 0x0db8)) // documentation
        }
    }
}

fn is_public_v4(ip: Ipv4Addr) -> bool {
    let o = ip.octets();
    !(ip.is_unspecified()
        || ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_broadcast()
        || ip.is_multicast()
        || ip.is_documentation()
        || o[0] == 0 // "this network"
        || (o[0] == 100 && (o[1] & 0xc0) == 64) // shared (CGNAT) 100.64/10
        || (o[0] == 192 && o[1] == 0 && o[2] == 0) // IETF protocol assignments
        || (o[0] == 198 && (o[1] & 0xfe) == 18) // benchmarking 198.18/15
        || o[0] >= 240) // reserved
}

/// A new signing secret: `whsec_` and the base64 of 24 random bytes.
pub fn new_secret() -> String {
    let mut key = [0u8; 24];
    getrandom::fill(&mut key).expect("the system's random source");
    format!(
        "whsec_{}",
        base64::engine::general_purpose::STANDARD.encode(key)
    )
}

/// `webhook-signature`: `v1,<base64 HMAC-SHA256 of "id.timestamp.body">` per secret,
/// space-separated (the Standard Webhooks form for several keys during a rotation).
pub fn signature(secrets: &[&str], id: &str, timestamp: i64, body: &[u8]) -> String {
    let mut out = Vec::with_capacity(secrets.len());
    for secret in secrets {
        let text = secret.strip_prefix("whsec_").unwrap_or(secret);
        let key = base64::engine::general_purpose::STANDARD
            .decode(text)
            .unwrap_or_else(|_| text.as_bytes().to_vec());
        let mut mac = Hmac::<Sha256>::new_from_slice(&key).expect("HMAC takes any key length");
        mac.update(id.as_bytes());
        mac.update(b".");
        mac.update(timestamp.to_string().as_bytes());
        mac.update(b".");
        mac.update(body);
        out.push(format!(
            "v1,{}",
            base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
        ));
    }
    out.join(" ")
}

/// A connection kept open to one receiver between requests (HTTP/1.1 keep-alive).
///
/// Made only by [`send`], to an address checked then; reused only for the same scheme,
/// host, port and `allow_private`, while younger than [`MAX_CONN_AGE`] and idle for less
/// than [`MAX_IDLE`]; dropped (closed) after any error or an answer that does not leave
/// it clean (`Connection: close`, HTTP/1.0, a body not framed by `Content-Length` or
/// longer than the cap).
pub struct Conn {
    io: Box<dyn Io>,
    origin: String,
    opened: Instant,
    last_used: Instant,
}

/// How long a kept connection may sit idle before it is closed rather than reused:
/// shorter than receivers' own idle timeouts (often 60 s and more), so that a reuse
/// seldom meets a connection the receiver has just closed.
pub const MAX_IDLE: Duration = Duration::from_secs(30);
/// How long one connection is used at most: a name is resolved (and its addresses
/// checked) again at least this often, whatever its DNS says.
pub const MAX_CONN_AGE: Duration = Duration::from_secs(120);

impl Conn {
    fn usable_for(&self, origin: &str, now: Instant) -> bool {
        self.origin == origin
            && now.duration_since(self.opened) < MAX_CONN_AGE
            && now.duration_since(self.last_used) < MAX_IDLE
    }
}

/// Connections kept idle between deliveries, at most `per_key` for one key (a
/// webhook's id: as many as it may have requests in flight) and `max` in all: past
/// either the longest idle is closed.
pub struct IdlePool {
    max: usize,
    per_key: usize,
    conns: std::sync::Mutex<std::collections::HashMap<String, Vec<Conn>>>,
}

impl IdlePool {
    pub fn new(max: usize, per_key: usize) -> IdlePool {
        IdlePool {
            max,
            per_key,
            conns: std::sync::Mutex::new(std::collections::HashMap::new()),
        }
    }

    /// A connection kept for `key`, if any (stale ones are closed here), the most
    /// recently used first.
    pub fn take(&self, key: &str) -> Option<Conn> {
        let mut conns = self.conns.lock().unwrap_or_else(|p| p.into_inner());
        let kept = conns.get_mut(key)?;
        let now = Instant::now();
        kept.retain(|c| {
            now.duration_since(c.last_used) < MAX_IDLE
                && now.duration_since(c.opened) < MAX_CONN_AGE
        });
        let c = kept.pop();
        if kept.is_empty() {
            conns.remove(key);
        }
        c
    }

    /// Keeps `conn` for `key` (closing the longest idle of the key's, or of all, when
    /// either is full).
    pub fn put(&self, key: &str, conn: Conn) {
        if self.max == 0 || self.per_key == 0 {
            return;
        }
        let mut conns = self.conns.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        conns.retain(|_, kept| {
            kept.retain(|c| now.duration_since(c.last_used) < MAX_IDLE);
            !kept.is_empty()
        });
        if conns.get(key).is_some_and(|k| k.len() >= self.per_key) {
            // Oldest first: the key's longest idle is its first.
            conns.get_mut(key).map(|k| k.remove(0));
        } else if conns.values().map(Vec::len).sum::<usize>() >= self.max {
            let oldest = conns
                .iter()
                .filter_map(|(k, kept)| kept.first().map(|c| (k.clone(), c.last_used)))
                .min_by_key(|(_, used)| *used)
                .map(|(k, _)| k);
            if let Some(k) = oldest {
                let kept = conns.get_mut(&k).expect("a key just seen");
                kept.remove(0);
                if kept.is_empty() {
                    conns.remove(&k);
                }
            }
        }
        let kept = conns.entry(key.to_owned()).or_default();
        // In order of last use, so the first is the longest idle.
        let at = kept.partition_point(|c| c.last_used <= conn.last_used);
        kept.insert(at, conn);
    }

    /// Connections kept now.
    pub fn len(&self) -> usize {
        let conns = self.conns.lock().unwrap_or_else(|p| p.into_inner());
        conns.values().map(Vec::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// POSTs `body` (JSON) to `url` with the Standard Webhooks headers, within `limits`,
/// on `kept` if it is a live connection to the same origin, else on a new one (whose
/// addresses are checked); afterwards `kept` holds the connection if it may be reused.
/// A reused connection that turns out closed by the receiver before any answer (an
/// idle timeout on its side) is replaced by a new one once, for the same request.
pub async fn send(
    url: &str,
    msg_id: &str,
    timestamp: i64,
    signature: &str,
    body: &[u8],
    limits: Limits,
    kept: &mut Option<Conn>,
) -> Sent {
    let start = Instant::now();
    let result = exchange(url, msg_id, timestamp, signature, body, limits, kept).await;
    let latency = start.elapsed();
    match result {
        Ok((status, _)) if (200..300).contains(&status) => Sent {
            status: Some(status),
            latency,
            error: None,
        },
        Ok((status, detail)) => Sent {
            status: Some(status),
            latency,
            error: Some(if (300..400).contains(&status) {
                format!("answered {status}: a redirect, not followed{detail}")
            } else {
                format!("answered {status}{detail}")
            }),
        },
        Err(e) => Sent {
            status: None,
            latency,
            error: Some(e),
        },
    }
}

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// How one exchange on a connection ended.
enum Talk {
    /// An answer: status, note, and whether the connection is clean for another.
    Answer(u16, String, bool),
    /// Nothing came back at all: the request could not be written, or the connection
    /// was closed before a byte of an answer (a kept one the receiver had closed).
    Closed(String),
    Failed(String),
}

async fn exchange(
    url: &str,
    msg_id: &str,
    timestamp: i64,
    signature: &str,
    body: &[u8],
    limits: Limits,
    kept: &mut Option<Conn>,
) -> Result<(u16, String), String> {
    let url = check_url(url, limits.allow_private)?;
    let host = url.host_str().ok_or("url has no host")?.to_string();
    let port = url.port_or_known_default().ok_or("url has no port")?;
    let https = url.scheme() == "https";
    let origin = format!("{}://{host}:{port} {}", url.scheme(), limits.allow_private);
    let target = &url[url::Position::BeforePath..url::Position::AfterQuery];
    let host_header = match url.port() {
        Some(p) => format!("{host}:{p}"),
        None => host.clone(),
    };
    let head = format!(
        "POST {target} HTTP/1.1\r\nHost: {host_header}\r\nUser-Agent: Sluice-Webhooks/1\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\nwebhook-id: {msg_id}\r\n\
         webhook-timestamp: {timestamp}\r\nwebhook-signature: {signature}\r\n\r\n",
        body.len()
    );
    let now = Instant::now();
    if let Some(mut conn) = kept.take().filter(|c| c.usable_for(&origin, now))
        && quiet(&mut conn.io).await
    {
        match talk(&mut conn.io, &head, body, limits).await {
            Talk::Answer(status, note, clean) => {
                if clean {
                    conn.last_used = Instant::now();
                    *kept = Some(conn);
                }
                return Ok((status, note));
            }
            Talk::Failed(e) => return Err(e),
            // Closed by the receiver while idle: once more on a new connection.
            Talk::Closed(_) => {}
        }
    }
    let io = connect(&url, &host, port, https, limits).await?;
    let opened = Instant::now();
    let mut conn = Conn {
        io,
        origin,
        opened,
        last_used: opened,
    };
    match talk(&mut conn.io, &head, body, limits).await {
        Talk::Answer(status, note, clean) => {
            if clean {
                conn.last_used = Instant::now();
                *kept = Some(conn);
            }
            Ok((status, note))
        }
        Talk::Closed(e) | Talk::Failed(e) => Err(e),
    }
}

/// Whether a kept connection has nothing to read: neither bytes the receiver sent
/// past its last answer (which would be taken for the next answer) nor its close.
async fn quiet(io: &mut Box<dyn Io>) -> bool {
    let mut byte = [0u8; 1];
    // A zero timeout polls the read once: ready means data or end of stream.
    tokio::time::timeout(Duration::ZERO, io.read(&mut byte))
        .await
        .is_err()
}

/// A new connection to one of the addresses `host` resolves to now that the rules allow
/// (checked here, for every new connection), TLS included, within `connect_timeout`.
async fn connect(
    url: &url::Url,
    host: &str,
    port: u16,
    https: bool,
    limits: Limits,
) -> Result<Box<dyn Io>, String> {
    let connect = async {
        let addrs: Vec<SocketAddr> = match url.host() {
            Some(url::Host::Ipv4(ip)) => vec![SocketAddr::new(IpAddr::V4(ip), port)],
            Some(url::Host::Ipv6(ip)) => vec![SocketAddr::new(IpAddr::V6(ip), port)],
            _ => tokio::net::lookup_host((host, port))
                .await
                .map_err(|e| format!("cannot resolve {host}: {e}"))?
                .collect(),
        };
        let allowed: Vec<SocketAddr> = addrs
            .iter()
            .copied()
            .filter(|a| limits.allow_private || is_public(a.ip()))
            .collect();
        if allowed.is_empty() {
            return Err(if addrs.is_empty() {
                format!("{host} resolves to no address")
            } else {
                format!(
                    "refused: {host} resolves only to addresses that are not public ({}; \
                     webhooks.allow_private is false)",
                    addrs
                        .iter()
                        .map(|a| a.ip().to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            });
        }
        let mut last = String::new();
        for addr in allowed.iter().take(4) {
            match tokio::net::TcpStream::connect(addr).await {
                Ok(tcp) => {
                    let _ = tcp.set_nodelay(true);
                    let io: Box<dyn Io> = if https {
                        let name = rustls_pki_types::ServerName::try_from(host.to_owned())
                            .map_err(|e| format!("{host} is not a TLS server name: {e}"))?;
                        let tls = tokio_rustls::TlsConnector::from(tls_config())
                            .connect(name, tcp)
                            .await
                            .map_err(|e| format!("TLS with {addr} failed: {e}"))?;
                        Box::new(tls)
                    } else {
                        Box::new(tcp)
                    };
                    return Ok(io);
                }
                Err(e) => last = format!("cannot connect to {addr}: {e}"),
            }
        }
        Err(last)
    };
    tokio::time::timeout(limits.connect_timeout, connect)
        .await
        .map_err(|_| {
            format!(
                "no connection within {} ms",
                limits.connect_timeout.as_millis()
            )
        })?
}

/// Writes one request and reads its answer within `response_timeout`.
async fn talk(io: &mut Box<dyn Io>, head: &str, body: &[u8], limits: Limits) -> Talk {
    let exchange = async {
        let write = async {
            io.write_all(head.as_bytes()).await?;
            io.write_all(body).await?;
            io.flush().await
        };
        if let Err(e) = write.await {
            return Talk::Closed(format!("sending the request failed: {e}"));
        }
        read_answer(io, limits.max_response_bytes).await
    };
    tokio::time::timeout(limits.response_timeout, exchange)
        .await
        .unwrap_or_else(|_| {
            Talk::Failed(format!(
                "no complete answer within {} ms",
                limits.response_timeout.as_millis()
            ))
        })
}

/// Reads the status line and headers (never more than `cap` bytes in all), and a body
/// framed by `Content-Length` that fits in the rest of `cap` (so the connection is clean
/// for the next request); the status and, for a failure, a short note (the `Location`
/// of a redirect, the first bytes of the body).
async fn read_answer(io: &mut Box<dyn Io>, cap: usize) -> Talk {
    let mut buf = Vec::with_capacity(cap.min(8192));
    let mut chunk = [0u8; 4096];
    loop {
        let room = cap.saturating_sub(buf.len()).min(chunk.len());
        if room == 0 {
            return Talk::Failed(format!(
                "the answer's status line and headers are longer than {cap} bytes \
                 (webhooks.max_response_bytes)"
            ));
        }
        let n = match io.read(&mut chunk[..room]).await {
            Ok(n) => n,
            Err(e) if buf.is_empty() => {
                return Talk::Closed(format!("reading the answer failed: {e}"));
            }
            Err(e) => return Talk::Failed(format!("reading the answer failed: {e}")),
        };
        if n == 0 {
            return if buf.is_empty() {
                Talk::Closed("the receiver closed the connection without answering".into())
            } else {
                Talk::Failed(
                    "the receiver closed the connection in the middle of its answer".into(),
                )
            };
        }
        buf.extend_from_slice(&chunk[..n]);
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut resp = httparse::Response::new(&mut headers);
        match resp.parse(&buf) {
            Ok(httparse::Status::Complete(end)) => {
                let Some(status) = resp.code else {
                    return Talk::Failed("an answer without a status".into());
                };
                let header = |name: &str| {
                    resp.headers
                        .iter()
                        .find(|h| h.name.eq_ignore_ascii_case(name))
                        .map(|h| String::from_utf8_lossy(h.value).trim().to_ascii_lowercase())
                };
                // The body's length, when the connection can be kept: HTTP/1.1, not
                // closed by the receiver, framed by a length (chunked or read-to-close
                // bodies are not read: the connection is dropped instead).
                let keep = resp.version == Some(1)
                    && header("connection").is_none_or(|c| !c.contains("close"))
                    && header("transfer-encoding").is_none();
                let body_len = if matches!(status, 100..=199 | 204 | 304) {
                    Some(0)
                } else {
                    header("content-length").and_then(|l| l.parse::<usize>().ok())
                };
                let mut note = String::new();
                if !(200..300).contains(&status) {
                    if let Some(l) = header("location") {
                        note = format!(" (Location: {})", clip(&l, ERROR_BODY_PREFIX));
                    } else if end < buf.len() {
                        let b = String::from_utf8_lossy(&buf[end..]);
                        note = format!(": {}", clip(b.trim(), ERROR_BODY_PREFIX));
                    }
                }
                let clean = match body_len {
                    Some(len) if keep && end.saturating_add(len) <= cap => {
                        skip_body(io, buf.len() - end, len).await
                    }
                    _ => false,
                };
                return Talk::Answer(status, note, clean);
            }
            Ok(httparse::Status::Partial) => {}
            Err(e) => return Talk::Failed(format!("the answer is not HTTP/1.x: {e}")),
        }
    }
}

/// Reads and drops the rest of a body of `len` bytes of which `have` came with the
/// headers; whether the connection is clean after it (nothing more than the body came).
async fn skip_body(io: &mut Box<dyn Io>, have: usize, len: usize) -> bool {
    if have > len {
        return false;
    }
    let mut left = len - have;
    let mut chunk = [0u8; 4096];
    while left > 0 {
        match io.read(&mut chunk[..left.min(4096)]).await {
            Ok(0) | Err(_) => return false,
            Ok(n) => left -= n,
        }
    }
    true
}

fn clip(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.chars().filter(|c| !c.is_control()).collect();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    let t: String = s[..end].chars().filter(|c| !c.is_control()).collect();
    format!("{t}…")
}

fn tls_config() -> Arc<rustls::ClientConfig> {
    static CONFIG: OnceLock<Arc<rustls::ClientConfig>> = OnceLock::new();
    CONFIG
        .get_or_init(|| {
            let roots = rustls::RootCertStore {
                roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
            };
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            Arc::new(
                rustls::ClientConfig::builder_with_provider(provider)
                    .with_safe_default_protocol_versions()
                    .expect("ring supports the default protocol versions")
                    .with_root_certificates(roots)
                    .with_no_client_auth(),
            )
        })
        .clone()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_that_are_not_public_are_refused() {
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "0.0.0.0",
            "100.64.0.1",
            "255.255.255.255",
            "::1",
            "::",
            "fe80::1",
            "fd00::1",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
            "64:ff9b::a9fe:a9fe",
        ] {
            assert!(!is_public(ip.parse().unwrap()), "{ip}");
        }
        for ip in ["93.184.216.34", "1.1.1.1", "2606:4700::1111"] {
            assert!(is_public(ip.parse().unwrap()), "{ip}");
        }
    }

    #[test]
    fn urls_are_checked_for_what_they_say() {
        assert!(check_url("https://hooks.example.com/x?y=1", false).is_ok());
        for bad in [
            "ftp://example.com/",
            "file:///etc/passwd",
            "http://user:pw@example.com/",
            "http://127.0.0.1:8080/",
            "http://[::1]/",
            "http://169.254.169.254/latest/meta-data",
            "http://0x7f000001/",
            "http://example.com/a b",
            "http://example.com/\r\nX-Injected: 1",
        ] {
            assert!(check_url(bad, false).is_err(), "{bad}");
        }
        assert!(check_url("http://127.0.0.1:8080/", true).is_ok());
        let long = format!("https://example.com/{}", "a".repeat(MAX_URL_LEN));
        assert!(check_url(&long, false).is_err());
    }

    #[test]
    fn signatures_follow_standard_webhooks() {
        // The example of the Standard Webhooks specification's reference libraries.
        let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
        let sig = signature(
            &[secret],
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1614265330,
            br#"{"test": 2432232314}"#,
        );
        assert_eq!(sig, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
        let two = signature(&[secret, secret], "m", 1, b"{}");
        assert_eq!(two.split(' ').count(), 2);
    }
}
