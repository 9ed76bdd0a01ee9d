//! DKIM at acceptance (issue 23): the sealing secret as `serve` starts with it, the
//! tenants' active keys cached briefly, and the signature `accept.rs` adds to a message
//! before it is stored.
//!
//! Why at acceptance, once: the stored body is what every attempt sends (the relay
//! client only makes line ends CRLF and dot-stuffs, and the send stage decides about
//! replies, not headers; the return path is the envelope's), so one signature per
//! accepted message holds for every attempt and relay, and a retry costs no signing.
//! The signature is over the CRLF form the relay client sends.
//!
//! Invariants:
//! - `serve` does not start when the store holds keys and `[dkim]` names no secret, or
//!   names one that does not open them (the error names the setting, never the secret).
//! - A key change through this node's API is seen by its next message; other nodes see
//!   it within [`CACHE_TTL`].

use crate::dkim::keys::signing_candidates;
use crate::dkim::seal::Owner;
use crate::dkim::{Sealer, SigningKey};
use crate::store::{SealedDkimKey, Store, StoreError};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long a tenant's key (or its absence) for a domain is used before the store is
/// asked again.
pub const CACHE_TTL: Duration = Duration::from_secs(2);
/// Entries the cache holds at most; past it the cache starts over (a flood of distinct
/// `From:` domains costs store reads, not memory).
const CACHE_MAX: usize = 10_000;

/// A key opened and ready to sign.
#[derive(Debug)]
pub struct Loaded {
    pub domain: String,
    pub selector: String,
    key: SigningKey,
}

/// A signature made for a message.
#[derive(Debug, Clone)]
pub struct Signed {
    /// The `DKIM-Signature:` field, CRLF-ended.
    pub header: String,
    pub domain: String,
    pub selector: String,
}

type CacheEntry = (Instant, Option<Arc<Loaded>>);

/// The sealing secret and the cache of active keys.
#[derive(Debug)]
pub struct DkimSigning {
    sealer: Option<Sealer>,
    cache: Mutex<HashMap<(String, String), CacheEntry>>,
}

/// Why a message could not be signed; nothing is stored then (the client tries again).
#[derive(Debug, thiserror::Error)]
pub enum SignFailure {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("the DKIM key {selector:?} of {domain:?} cannot be used: {why}")]
    Key {
        domain: String,
        selector: String,
        why: String,
    },
}

impl DkimSigning {
    /// Checks the secret against the store: keys stored and no secret, or a secret that
    /// does not open them, stop the start.
    pub async fn start(store: &Store, secret: Option<&str>) -> anyhow::Result<DkimSigning> {
        let sealer = secret
            .map(Sealer::from_secret)
            .transpose()
            .map_err(|e| anyhow::anyhow!("dkim.key: {e}"))?;
        if let Some(any) = store.any_dkim_key().await? {
            let k = &any.key;
            let Some(sealer) = &sealer else {
                anyhow::bail!(
                    "dkim.key: the store holds DKIM keys (tenant {:?}, domain {:?}, among others) \
                     but the pipeline names no [dkim] key_env or key_file: give the secret they \
                     were sealed with",
                    k.tenant_id,
                    k.domain
                );
            };
            open(sealer, &any).map_err(|why| {
                anyhow::anyhow!(
                    "dkim.key: the secret [dkim] names does not open the stored DKIM key {:?} of \
                     tenant {:?}, domain {:?} ({why}): give the secret the keys were sealed with",
                    k.selector,
                    k.tenant_id,
                    k.domain
                )
            })?;
        }
        Ok(DkimSigning {
            sealer,
            cache: Mutex::new(HashMap::new()),
        })
    }

    /// The sealer, when `[dkim]` names a secret (else no key can be made).
    pub fn sealer(&self) -> Option<&Sealer> {
        self.sealer.as_ref()
    }

    /// Drops what this node cached of a tenant's domain (after a change through its API).
    pub fn forget(&self, tenant: &str, domain: &str) {
        self.cache
            .lock()
            .unwrap()
            .remove(&(tenant.to_owned(), domain.to_owned()));
    }

    /// The active key of a tenant's domain, from the cache or the store.
    async fn key_for(
        &self,
        store: &Store,
        tenant: &str,
        domain: &str,
    ) -> Result<Option<Arc<Loaded>>, SignFailure> {
        let id = (tenant.to_owned(), domain.to_owned());
        if let Some((at, k)) = self.cache.lock().unwrap().get(&id)
            && at.elapsed() < CACHE_TTL
        {
            return Ok(k.clone());
        }
        let loaded = match (&self.sealer, store.active_dkim_key(tenant, domain).await?) {
            (Some(sealer), Some(sealed)) => {
                let key = open(sealer, &sealed).map_err(|why| SignFailure::Key {
                    domain: domain.to_owned(),
                    selector: sealed.key.selector.clone(),
                    why,
                })?;
                Some(Arc::new(Loaded {
                    domain: sealed.key.domain,
                    selector: sealed.key.selector,
                    key,
                }))
            }
            // Keys without a secret cannot be: `start` refused them, and none can be made.
            _ => None,
        };
        let mut cache = self.cache.lock().unwrap();
        if cache.len() >= CACHE_MAX {
            cache.clear();
        }
        cache.insert(id, (Instant::now(), loaded.clone()));
        Ok(loaded)
    }

    /// Signs `body` (CRLF line ends) with the tenant's active key for `from_domain` or
    /// the nearest parent that has one; `None` when none has.
    pub async fn sign(
        &self,
        store: &Store,
        tenant: &str,
        from_domain: &str,
        body: Vec<u8>,
    ) -> Result<(Vec<u8>, Option<Signed>), SignFailure> {
        if self.sealer.is_none() {
            return Ok((body, None));
        }
        let mut found = None;
        for d in signing_candidates(from_domain) {
            if let Some(k) = self.key_for(store, tenant, d).await? {
                found = Some(k);
                break;
            }
        }
        let Some(k) = found else {
            return Ok((body, None));
        };
        // RSA takes a millisecond or more: off the async workers. Ed25519 takes tens of
        // microseconds: inline.
        let sign = move |k: Arc<Loaded>, body: Vec<u8>| {
            let r = k.key.sign(&k.domain, &k.selector, &body);
            (k, body, r)
        };
        let (k, body, r) = match k.key.algorithm() {
            crate::dkim::Algorithm::Ed25519 => sign(k, body),
            crate::dkim::Algorithm::Rsa2048 => tokio::task::spawn_blocking(move || sign(k, body))
                .await
                .map_err(|e| SignFailure::Key {
                    domain: from_domain.to_owned(),
                    selector: String::new(),
                    why: e.to_string(),
                })?,
        };
        let header = r.map_err(|e| SignFailure::Key {
            domain: k.domain.clone(),
            selector: k.selector.clone(),
            why: e.to_string(),
        })?;
        Ok((
            body,
            Some(Signed {
                header,
                domain: k.domain.clone(),
                selector: k.selector.clone(),
            }),
        ))
    }
}

/// Opens a stored key: the AEAD, then the key's own encoding.
fn open(sealer: &Sealer, sealed: &SealedDkimKey) -> Result<SigningKey, String> {
    let k = &sealed.key;
    let der = sealer
        .open(
            &sealed.private_key_sealed,
            Owner {
                tenant: &k.tenant_id,
                domain: &k.domain,
                selector: &k.selector,
            },
        )
        .map_err(|e| e.to_string())?;
    SigningKey::load(k.algorithm, &der).map_err(|e| e.to_string())
}
