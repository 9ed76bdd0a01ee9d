//! Whether a relay is answering, and how fast it may be fed.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Marks a relay down after consecutive transport failures (refused
/// connections, timeouts, TLS errors) and up again after a pause, so
/// traffic moves to the others and comes back by itself.
pub struct Health {
    inner: Mutex<(u32, Option<Instant>)>,
    threshold: u32,
    pause: Duration,
}

impl Health {
    pub fn new(threshold: u32, pause: Duration) -> Health {
        Health {
            inner: Mutex::new((0, None)),
            threshold: threshold.max(1),
            pause,
        }
    }

    /// False while the relay is marked down.
    pub fn is_up(&self) -> bool {
        let g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        g.1.is_none_or(|until| Instant::now() >= until)
    }

    /// Whether the last try got no SMTP reply at all (one transport failure or more in
    /// a row): such a relay is worth a probe, since work waits for it.
    pub fn unanswered(&self) -> bool {
        self.inner.lock().unwrap_or_else(|p| p.into_inner()).0 > 0
    }

    /// Any SMTP reply, even a 5xx, shows the relay is there.
    pub fn answered(&self) {
        *self.inner.lock().unwrap_or_else(|p| p.into_inner()) = (0, None);
    }

    /// A failure below SMTP; returns true when this marked the relay down.
    pub fn failed(&self) -> bool {
        let mut g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        g.0 += 1;
        if g.0 >= self.threshold {
            let was_up = g.1.is_none_or(|until| Instant::now() >= until);
            g.1 = Some(Instant::now() + self.pause);
            return was_up;
        }
        false
    }
}

/// A token bucket of `rate` tokens a second, holding at most one second's worth.
pub struct TokenBucket {
    rate: f64,
    state: Mutex<(f64, Instant)>,
}

impl TokenBucket {
    pub fn new(rate_per_sec: u32) -> TokenBucket {
        let rate = f64::from(rate_per_sec.max(1));
        TokenBucket {
            rate,
            state: Mutex::new((rate, Instant::now())),
        }
    }

    /// Takes a token, or says how long until one is there.
    pub fn take(&self) -> Result<(), Duration> {
        let mut g = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        let refill = now.duration_since(g.1).as_secs_f64() * self.rate;
        g.0 = (g.0 + refill).min(self.rate);
        g.1 = now;
        if g.0 >= 1.0 {
            g.0 -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - g.0) / self.rate))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marked_down_after_threshold_and_up_after_an_answer() {
        let h = Health::new(3, Duration::from_secs(60));
        assert!(!h.failed() && !h.failed());
        assert!(h.is_up());
        assert!(h.failed(), "third failure marks it down");
        assert!(!h.is_up() && h.unanswered());
        h.answered();
        assert!(h.is_up() && !h.unanswered());
    }

    #[test]
    fn bucket_allows_its_rate_then_asks_to_wait() {
        let b = TokenBucket::new(5);
        for _ in 0..5 {
            assert!(b.take().is_ok());
        }
        let wait = b.take().unwrap_err();
        assert!(wait <= Duration::from_millis(200), "{wait:?}");
    }
}
