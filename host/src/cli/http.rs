//! A minimal blocking HTTP/1.1 client for the CLI's calls to a running Sluice
//! (`sluice plugin upload`): one request per connection, `http://` only.

use anyhow::{Context, Result, bail};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

/// Where the commands that talk to a running Sluice find it, when neither `--url` nor
/// `SLUICE_URL` says.
pub const DEFAULT_URL: &str = "http://127.0.0.1:8025";

/// The server and key of a command that talks to a running Sluice: one spelling for
/// all of them.
#[derive(Debug, clap::Args)]
pub struct ServerArgs {
    /// Sluice's HTTP API [default: http://127.0.0.1:8025]
    #[arg(long, env = "SLUICE_URL", value_name = "URL")]
    url: Option<String>,
    /// A tenant API key (or, with --tenant, the admin token).
    #[arg(long, env = "SLUICE_KEY", hide_env_values = true)]
    key: String,
}

impl ServerArgs {
    /// The server's URL, and whether it was given (else it is [`DEFAULT_URL`]).
    pub fn url(&self) -> (&str, bool) {
        match &self.url {
            Some(u) => (u.as_str(), true),
            None => (DEFAULT_URL, false),
        }
    }

    /// [`request`] to this server with this key; a failure to reach it says which
    /// server was tried and why that one.
    pub fn request(
        &self,
        method: &str,
        path: &str,
        content_type: &str,
        body: &[u8],
    ) -> Result<Response> {
        let (url, given) = self.url();
        request(method, url, path, &self.key, content_type, body)
            .with_context(|| calling(url, given))
    }
}

/// The context of a failed call: which server was tried, and why that one.
pub fn calling(url: &str, given: bool) -> String {
    if given {
        format!("calling Sluice at {url}")
    } else {
        format!(
            "calling Sluice at {url}: no --url or SLUICE_URL was given, so the default was tried"
        )
    }
}

/// The most of an answer read: a server (or whatever answers at the URL) cannot make
/// the CLI hold more than this in memory. The largest answers are admin listings of
/// 10,000 rows, a few MiB.
pub const MAX_ANSWER_BYTES: u64 = 64 << 20;

/// An answer: status code and body.
pub struct Response {
    pub status: u16,
    pub body: Vec<u8>,
}

/// Splits `http://host:port/base` into the address and the path prefix.
pub(super) fn split_url(url: &str) -> Result<(String, String)> {
    let Some(rest) = url.strip_prefix("http://") else {
        if url.starts_with("https://") {
            bail!(
                "{url:?}: https is not supported by the CLI; reach Sluice over http (e.g. through an SSH tunnel)"
            );
        }
        bail!("{url:?} is not an http:// URL");
    };
    let (host, path) = match rest.find('/') {
        Some(i) => (&rest[..i], rest[i..].trim_end_matches('/')),
        None => (rest, ""),
    };
    if host.is_empty() {
        bail!("{url:?} names no host");
    }
    // It goes into the request line and the Host header as it is.
    if rest.chars().any(|c| c.is_whitespace() || c.is_control()) {
        bail!("{url:?} has spaces or control characters");
    }
    let host = if host.contains(':') {
        host.to_owned()
    } else {
        format!("{host}:80")
    };
    Ok((host, path.to_owned()))
}

/// Sends one request to `base_url` + `path` with a bearer token.
pub fn request(
    method: &str,
    base_url: &str,
    path: &str,
    token: &str,
    content_type: &str,
    body: &[u8],
) -> Result<Response> {
    let (addr, prefix) = split_url(base_url)?;
    let mut stream =
        TcpStream::connect(&addr).with_context(|| format!("cannot connect to {addr}"))?;
    stream.set_read_timeout(Some(Duration::from_secs(120)))?;
    let head = format!(
        "{method} {prefix}{path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\n\
         Content-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\
         User-Agent: sluice-cli\r\n\r\n",
        body.len()
    );
    stream
        .write_all(head.as_bytes())
        .with_context(|| format!("cannot send to {addr}"))?;
    // A server may refuse (413) before reading the whole body; its answer still counts.
    let sent = stream.write_all(body);
    let mut raw = Vec::new();
    let read = (&mut stream)
        .take(MAX_ANSWER_BYTES + 1)
        .read_to_end(&mut raw);
    if raw.len() as u64 > MAX_ANSWER_BYTES {
        bail!("the answer of {addr} is longer than {MAX_ANSWER_BYTES} bytes");
    }
    if raw.is_empty() {
        sent.with_context(|| format!("cannot send to {addr}"))?;
        read.with_context(|| format!("no answer from {addr}"))?;
        bail!("{addr} closed the connection without an answer");
    }
    parse(&raw).with_context(|| format!("the answer of {addr} is not HTTP"))
}

fn parse(raw: &[u8]) -> Result<Response> {
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .context("no end of headers")?;
    let head = String::from_utf8_lossy(&raw[..end]);
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .context("no status code")?;
    let body = &raw[end + 4..];
    let chunked = head.lines().any(|l| {
        let l = l.to_ascii_lowercase();
        l.starts_with("transfer-encoding:") && l.contains("chunked")
    });
    let body = if chunked {
        dechunk(body)?
    } else {
        body.to_vec()
    };
    Ok(Response { status, body })
}

fn dechunk(mut body: &[u8]) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let line_end = body
            .windows(2)
            .position(|w| w == b"\r\n")
            .context("chunk size line")?;
        let size = std::str::from_utf8(&body[..line_end])?;
        let size = usize::from_str_radix(size.split(';').next().unwrap_or("").trim(), 16)
            .with_context(|| format!("chunk size {size:?}"))?;
        body = &body[line_end + 2..];
        if size == 0 {
            return Ok(out);
        }
        if body.len() < size + 2 {
            bail!("chunk cut short");
        }
        out.extend_from_slice(&body[..size]);
        body = &body[size + 2..];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_split_into_address_and_prefix() {
        assert_eq!(
            split_url("http://127.0.0.1:8025").unwrap(),
            ("127.0.0.1:8025".into(), String::new())
        );
        assert_eq!(
            split_url("http://mail.example/sluice/").unwrap(),
            ("mail.example:80".into(), "/sluice".into())
        );
        assert!(
            split_url("https://x")
                .unwrap_err()
                .to_string()
                .contains("https")
        );
        assert!(split_url("ftp://x").is_err());
        assert!(split_url("http://x/a b").is_err());
        assert!(split_url("http://x/\r\nHost: y").is_err());
    }

    #[test]
    fn chunked_and_plain_bodies_are_read() {
        let r = parse(b"HTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n")
            .unwrap();
        assert_eq!((r.status, r.body.as_slice()), (201, &b"abcde"[..]));
        let r = parse(b"HTTP/1.1 422 Unprocessable\r\nContent-Length: 2\r\n\r\n{}").unwrap();
        assert_eq!((r.status, r.body.as_slice()), (422, &b"{}"[..]));
    }
}
