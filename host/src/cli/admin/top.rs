//! `sluice admin top`: each relay's rates, refreshed every `--interval` seconds from the
//! relay list's live stats (the shared one-minute and 15-minute windows, and what is
//! in flight on the node answering).
//!
//! Bounded: the interval is 1–3600 s, at most [`MAX_ROWS`] relays are shown (the
//! busiest), `--iterations N` stops after N screens. On a terminal the screen is
//! redrawn and `q` or Ctrl-C quits (the terminal's settings are put back however the
//! command ends short of being killed); elsewhere each screen is printed after the
//! last, and `--json` prints each relay list as the API gave it, one per line.

use super::Ctx;
use super::relays::{health, latency, n, window};
use super::table::{Table, count, duration_ms, now_ms, rate, text, utc};
use anyhow::Result;
use serde_json::Value;
use std::io::IsTerminal;
use std::time::{Duration, Instant};

/// The most relays on one screen.
pub const MAX_ROWS: usize = 40;

#[derive(Debug, clap::Args)]
pub struct TopArgs {
    /// Seconds between refreshes (1–3600).
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u64).range(1..=3600))]
    interval: u64,
    /// Stop after this many screens (default: until q or Ctrl-C).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    iterations: Option<u64>,
}

pub fn run(ctx: &Ctx, a: TopArgs) -> Result<()> {
    let interactive =
        !ctx.json && std::io::stdin().is_terminal() && std::io::stdout().is_terminal();
    // Held to the end of the loop: dropping it restores the terminal.
    let keys = if interactive { Keys::open() } else { None };
    let interval = Duration::from_secs(a.interval);
    let mut shown = 0u64;
    loop {
        let answer = ctx.api.get("/admin/v1/relays")?;
        shown += 1;
        if ctx.json {
            // One line per screen: the API's compact JSON as it came.
            let mut line = answer.raw.trim_ascii_end().to_vec();
            line.push(b'\n');
            super::out_bytes(&line)?;
        } else {
            let screen = render(&answer.json, ctx.api.url(), a.interval, now_ms());
            if keys.is_some() {
                // Home, clear, then the screen.
                super::out(&format!("\x1b[H\x1b[2J{screen}"))?;
            } else {
                super::out(&format!("{screen}\n"))?;
            }
        }
        if a.iterations.is_some_and(|max| shown >= max) {
            return Ok(());
        }
        match &keys {
            Some(k) => {
                if k.quit_within(interval) {
                    return Ok(());
                }
            }
            None => std::thread::sleep(interval),
        }
    }
}

fn render(v: &Value, url: &str, interval: u64, now: i64) -> String {
    let mut relays: Vec<&Value> = v["relays"].as_array().into_iter().flatten().collect();
    let sent = |r: &Value| n(window(r, 60), "sent");
    relays.sort_by(|a, b| {
        sent(b)
            .cmp(&sent(a))
            .then_with(|| text(&a["id"]).cmp(&text(&b["id"])))
    });
    let total = |field: &str| relays.iter().map(|r| n(window(r, 60), field)).sum::<u64>();
    let bounced = total("hard_bounced") + total("soft_bounced");
    let in_flight: u64 = relays.iter().filter_map(|r| r["in_flight"].as_u64()).sum();
    let up = relays.iter().filter(|r| health(r) == "up").count();
    let mut out = format!(
        "sluice admin top  {url}  {} UTC  every {}  (q quits)\n\
         relays {} ({up} up)  in flight {in_flight}  last minute: sent {}  delivered {}  \
         deferred {}  bounced {}\n\n",
        utc(now),
        duration_ms(interval.saturating_mul(1000) as i64),
        relays.len(),
        rate(total("sent"), 60),
        rate(total("delivered"), 60),
        rate(total("deferred"), 60),
        rate(bounced, 60),
    );
    let mut t = Table::new(&[
        "RELAY",
        "STATE",
        "UP",
        ">IN FLIGHT",
        ">SENT",
        ">DELIVERED",
        ">DEFERRED",
        ">BOUNCED",
        ">BLOCKED",
        ">LATENCY",
        ">SENT 15m",
    ]);
    for r in relays.iter().take(MAX_ROWS) {
        let w = window(r, 60);
        let w15 = window(r, 900);
        t.row(vec![
            text(&r["id"]),
            text(&r["state"]),
            health(r).into(),
            format!("{}/{}", text(&r["in_flight"]), text(&r["connection_limit"])),
            rate(n(w, "sent"), 60),
            rate(n(w, "delivered"), 60),
            rate(n(w, "deferred"), 60),
            rate(n(w, "hard_bounced") + n(w, "soft_bounced"), 60),
            count(n(w, "blocked")),
            latency(w),
            rate(n(w15, "sent"), 900),
        ]);
    }
    out.push_str(&t.render("(no relays)"));
    if relays.len() > MAX_ROWS {
        out.push_str(&format!(
            "… and {} quieter relays (`sluice admin relays list` shows all)\n",
            relays.len() - MAX_ROWS
        ));
    }
    out
}

/// The terminal read key by key, without echo, Ctrl-C arriving as a byte (so that
/// quitting runs [`Drop`], which restores the settings found).
struct Keys {
    saved: libc::termios,
}

impl Keys {
    /// Switches stdin to key-by-key reading; `None` when its settings cannot be read.
    fn open() -> Option<Keys> {
        // SAFETY: termios is plain data; tcgetattr fills it for fd 0, checked below.
        let mut saved: libc::termios = unsafe { std::mem::zeroed() };
        // SAFETY: fd 0 is open for the process's life; `saved` is a valid termios.
        if unsafe { libc::tcgetattr(0, &mut saved) } != 0 {
            return None;
        }
        let mut raw = saved;
        raw.c_lflag &= !(libc::ICANON | libc::ECHO | libc::ISIG);
        raw.c_cc[libc::VMIN] = 1;
        raw.c_cc[libc::VTIME] = 0;
        // SAFETY: as above; `raw` is a copy of what tcgetattr gave with flags changed.
        if unsafe { libc::tcsetattr(0, libc::TCSANOW, &raw) } != 0 {
            return None;
        }
        Some(Keys { saved })
    }

    /// Waits `wait`; true as soon as `q`, `Q` or Ctrl-C is pressed.
    fn quit_within(&self, wait: Duration) -> bool {
        let deadline = Instant::now() + wait;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            let mut fd = libc::pollfd {
                fd: 0,
                events: libc::POLLIN,
                revents: 0,
            };
            let ms = i32::try_from(left.as_millis()).unwrap_or(i32::MAX).max(1);
            // SAFETY: one valid pollfd, its count 1.
            let ready = unsafe { libc::poll(&mut fd, 1, ms) };
            if ready <= 0 {
                // Timed out, or a signal (e.g. a resize) woke it: look at the clock again.
                continue;
            }
            let mut buf = [0u8; 64];
            // SAFETY: reads at most buf.len() bytes into buf.
            let got = unsafe { libc::read(0, buf.as_mut_ptr().cast(), buf.len()) };
            if got <= 0 {
                // The terminal went away: nothing more can be pressed.
                return true;
            }
            if buf[..got as usize]
                .iter()
                .any(|b| matches!(b, b'q' | b'Q' | 0x03))
            {
                return true;
            }
        }
    }
}

impl Drop for Keys {
    fn drop(&mut self) {
        // SAFETY: puts back the settings tcgetattr read from fd 0.
        unsafe {
            libc::tcsetattr(0, libc::TCSANOW, &self.saved);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_busiest_relays_come_first_and_the_screen_is_bounded() {
        let relays: Vec<Value> = (0..MAX_ROWS + 3)
            .map(|i| {
                json!({"id": format!("r{i:02}"), "state": "active", "up": true, "in_flight": 0,
                       "connection_limit": 4,
                       "windows": [{"window_secs": 60, "sent": i * 60, "delivered": i * 60}]})
            })
            .collect();
        let screen = render(&json!({ "relays": relays }), "http://x", 2, 0);
        let lines: Vec<&str> = screen.lines().collect();
        assert!(lines[0].contains("every 2s"), "{screen}");
        assert!(lines[3].starts_with("RELAY"), "{screen}");
        assert!(
            lines[4].starts_with("r42") && lines[4].contains("42.0/s"),
            "{screen}"
        );
        assert_eq!(lines.len(), 3 + 1 + MAX_ROWS + 1, "{screen}");
        assert!(
            lines.last().unwrap().contains("3 quieter relays"),
            "{screen}"
        );
    }
}
