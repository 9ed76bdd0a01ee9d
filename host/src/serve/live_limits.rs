//! `[limits]` as the running server reads them: set at start, changed in place by a
//! SIGHUP reload (`reload.rs`), read by every submission. Two atomics rather than a
//! lock: a submission reads them once, and a reload that lands between the two reads
//! at worst checks one message against the old size limit and the new recipient
//! limit, both of which an operator asked for.

use crate::config::Limits;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

/// The message limits now in force on this node.
#[derive(Debug)]
pub struct LiveLimits {
    max_message_bytes: AtomicU64,
    max_recipients: AtomicU32,
}

impl LiveLimits {
    pub fn new(limits: &Limits) -> LiveLimits {
        LiveLimits {
            max_message_bytes: AtomicU64::new(limits.max_message_bytes),
            max_recipients: AtomicU32::new(limits.max_recipients),
        }
    }

    /// The limits a submission arriving now is checked against.
    pub fn get(&self) -> Limits {
        Limits {
            max_message_bytes: self.max_message_bytes.load(Ordering::Relaxed),
            max_recipients: self.max_recipients.load(Ordering::Relaxed),
        }
    }

    /// Puts reloaded limits in force for every later submission.
    pub fn set(&self, limits: &Limits) {
        self.max_message_bytes
            .store(limits.max_message_bytes, Ordering::Relaxed);
        self.max_recipients
            .store(limits.max_recipients, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reload_changes_what_later_reads_see() {
        let live = LiveLimits::new(&Limits {
            max_message_bytes: 100,
            max_recipients: 5,
        });
        assert_eq!(live.get().max_recipients, 5);
        live.set(&Limits {
            max_message_bytes: 200,
            max_recipients: 1,
        });
        let now = live.get();
        assert_eq!((now.max_message_bytes, now.max_recipients), (200, 1));
    }
}
