//! Delivery servers as the sender sees them: one [`RelayClient`] per relay
//! (lettre connection pool, connection and rate limits, health), kept in a
//! [`Relays`] registry that follows the store while traffic flows.

mod client;
mod health;
mod pool;
mod tap;
mod tls_ca;

pub use client::{RelayClient, RelayReply, RelaySettings};
pub use health::{Health, TokenBucket};
pub use tls_ca::{MAX_CA_FILE_BYTES, TlsCa, check_ca_file};

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

/// The relays this process can send through, by id.
#[derive(Default)]
pub struct Relays {
    map: RwLock<HashMap<String, Arc<RelayClient>>>,
}

impl Relays {
    /// Makes the registry match `settings`: new relays are added, changed
    /// ones rebuilt (in-flight sends finish on the old client), removed ones
    /// dropped. Returns the ids whose client could not be built, with why.
    pub fn sync(
        &self,
        settings: Vec<RelaySettings>,
        helo: &str,
        timeout: std::time::Duration,
    ) -> Vec<(String, String)> {
        let mut failed = Vec::new();
        let mut map = self.map.write().unwrap_or_else(|p| p.into_inner());
        let wanted: std::collections::HashSet<String> =
            settings.iter().map(|s| s.id.clone()).collect();
        map.retain(|id, _| wanted.contains(id));
        for s in settings {
            let unchanged = map.get(&s.id).is_some_and(|c| *c.settings() == s);
            if unchanged {
                continue;
            }
            let id = s.id.clone();
            match RelayClient::new(s, helo, timeout) {
                Ok(c) => {
                    map.insert(id, Arc::new(c));
                }
                Err(e) => {
                    map.remove(&id);
                    failed.push((id, e));
                }
            }
        }
        failed
    }

    pub fn get(&self, id: &str) -> Option<Arc<RelayClient>> {
        self.map
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(id)
            .cloned()
    }

    pub fn all(&self) -> Vec<Arc<RelayClient>> {
        let mut v: Vec<_> = self
            .map
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect();
        v.sort_by(|a, b| a.settings().id.cmp(&b.settings().id));
        v
    }
}

pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        let c = cause.to_string();
        if !s.contains(&c) {
            s.push_str(": ");
            s.push_str(&c);
        }
        source = cause.source();
    }
    s
}
