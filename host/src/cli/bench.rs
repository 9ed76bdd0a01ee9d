//! `sluice bench push`: push N messages through a running Sluice's HTTP API
//! and time them to the last delivery at a counting `smtp-sink`.
//!
//! It reports accepted messages per second, accept latency (p50, p99: the
//! time to a 202, which includes the durable commit) and end-to-end
//! messages per second (first request to the sink counting the last
//! message). Load comes from `--concurrency` keep-alive connections, as fast as they
//! go, or at a steady `--rate` (messages per second).

use anyhow::{Context, Result, bail};
use clap::Args;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

#[derive(Debug, Args)]
pub struct PushArgs {
    /// Sluice's HTTP API.
    #[arg(long, alias = "addr", env = "SLUICE_URL", value_name = "URL", default_value = super::http::DEFAULT_URL)]
    url: String,
    /// A tenant API key.
    #[arg(long, env = "SLUICE_KEY")]
    key: String,
    /// Messages to push.
    #[arg(long, default_value_t = 10_000)]
    messages: usize,
    /// Approximate size of each message in bytes.
    #[arg(long, default_value_t = 1024)]
    size: usize,
    /// Parallel keep-alive connections.
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// smtp-sink's counter file (`smtp-sink -c` output) to wait for deliveries.
    #[arg(long)]
    sink_log: Option<PathBuf>,
    /// Sender address (its domain must be allowed for the tenant).
    #[arg(long, default_value = "bench@example.com")]
    from: String,
    /// Give up waiting for deliveries after this many seconds.
    #[arg(long, default_value_t = 300)]
    timeout_secs: u64,
    /// Messages per second at most, sent at a steady pace (message i not before i/rate
    /// seconds after the start); as fast as the connections go without it.
    #[arg(long)]
    rate: Option<f64>,
}

/// The last `mesg=N` in smtp-sink's CR-separated counter log.
fn sink_count(path: &PathBuf) -> u64 {
    let Ok(bytes) = std::fs::read(path) else {
        return 0;
    };
    let text = String::from_utf8_lossy(&bytes);
    text.rsplit(['\r', '\n'])
        .find_map(|chunk| {
            chunk
                .split_whitespace()
                .find_map(|w| w.strip_prefix("mesg="))
                .and_then(|n| n.parse().ok())
        })
        .unwrap_or(0)
}

async fn post(stream: &mut BufReader<TcpStream>, request: &[u8]) -> Result<u16> {
    stream.get_mut().write_all(request).await?;
    let mut status_line = String::new();
    stream.read_line(&mut status_line).await?;
    let status: u16 = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("bad status line {status_line:?}"))?;
    let mut length = 0usize;
    loop {
        let mut line = String::new();
        stream.read_line(&mut line).await?;
        if line == "\r\n" || line.is_empty() {
            break;
        }
        if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
            length = v.trim().parse().unwrap_or(0);
        }
    }
    let mut body = vec![0; length];
    stream.read_exact(&mut body).await?;
    if status != 202 {
        bail!("HTTP {status}: {}", String::from_utf8_lossy(&body));
    }
    Ok(status)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

pub fn push(args: PushArgs) -> Result<ExitCode> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(run(args))
}

/// About `len` bytes of body text as a JSON string's contents: lines of 72 characters, as
/// mail text is written (and as `smtp-source` sends it), so that the body goes out as
/// 7bit; one unbroken line would have to be quoted-printable encoded (lettre's encoding
/// chooser wants lines shorter than 75).
fn filler_text(len: usize) -> String {
    const LINE: usize = 72;
    let mut text = String::with_capacity(len + len / LINE * 2);
    let mut left = len;
    while left > 0 {
        let n = left.min(LINE);
        text.extend(std::iter::repeat_n('x', n));
        left -= n;
        if left > 0 {
            // A JSON-escaped newline; it stands for one byte of the body.
            text.push_str("\\n");
            left = left.saturating_sub(1);
        }
    }
    text
}

async fn run(args: PushArgs) -> Result<ExitCode> {
    // `--addr HOST:PORT`, the old spelling (a hidden alias), is an address without a scheme.
    let addr = if args.url.contains("://") {
        super::http::split_url(&args.url)?.0
    } else {
        args.url.clone()
    };
    let already = args.sink_log.as_ref().map_or(0, sink_count);
    let filler = filler_text(args.size.saturating_sub(300).max(1));
    let started = Instant::now();
    let next = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..args.concurrency.max(1) {
        let (addr, key, from, filler, next, total) = (
            addr.clone(),
            args.key.clone(),
            args.from.clone(),
            filler.clone(),
            next.clone(),
            args.messages,
        );
        let rate = args.rate.filter(|r| *r > 0.0);
        tasks.spawn(async move {
            let mut latencies = Vec::new();
            let mut conn = BufReader::new(TcpStream::connect(&addr).await.with_context(|| format!("cannot connect to {addr}"))?);
            conn.get_ref().set_nodelay(true)?;
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= total {
                    break;
                }
                if let Some(r) = rate {
                    let due = started + Duration::from_secs_f64(i as f64 / r);
                    tokio::time::sleep_until(due.into()).await;
                }
                let body = format!(r#"{{"from":"{from}","to":["rcpt{i}@example.org"],"subject":"bench {i}","text":"{filler}"}}"#);
                let request = format!("POST /v1/messages HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {key}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}", body.len());
                let t = Instant::now();
                post(&mut conn, request.as_bytes()).await?;
                latencies.push(t.elapsed());
            }
            anyhow::Ok(latencies)
        });
    }
    let mut latencies = Vec::with_capacity(args.messages);
    while let Some(r) = tasks.join_next().await {
        latencies.extend(r??);
    }
    let accepted_in = started.elapsed();
    latencies.sort();
    println!(
        "accepted {} messages of ~{} B in {:.2}s: {:.0} msg/s; accept latency p50 {:.2} ms, p99 {:.2} ms",
        latencies.len(),
        args.size,
        accepted_in.as_secs_f64(),
        latencies.len() as f64 / accepted_in.as_secs_f64(),
        percentile(&latencies, 0.5).as_secs_f64() * 1e3,
        percentile(&latencies, 0.99).as_secs_f64() * 1e3
    );
    if let Some(log) = &args.sink_log {
        let want = already + args.messages as u64;
        let deadline = Instant::now() + Duration::from_secs(args.timeout_secs);
        loop {
            let n = sink_count(log);
            if n >= want {
                let e2e = started.elapsed();
                println!(
                    "delivered {} messages: {:.0} msg/s end to end ({:.2}s from first request to last delivery)",
                    args.messages,
                    args.messages as f64 / e2e.as_secs_f64(),
                    e2e.as_secs_f64()
                );
                break;
            }
            if Instant::now() > deadline {
                bail!(
                    "only {} of {} messages reached the sink within {}s",
                    n - already,
                    args.messages,
                    args.timeout_secs
                );
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::filler_text;

    #[test]
    fn filler_is_the_asked_size_in_short_lines() {
        for len in [1, 76, 77, 724, 20_180] {
            let json = format!("\"{}\"", filler_text(len));
            let text: String = serde_json::from_str(&json).expect("a JSON string");
            assert_eq!(text.len(), len, "{len}");
            assert!(
                text.lines().all(|l| !l.is_empty() && l.len() <= 72),
                "{len}"
            );
        }
    }
}
