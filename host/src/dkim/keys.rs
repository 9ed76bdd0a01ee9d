//! DKIM keys: the two algorithms, key generation, selector names, the DNS TXT record to
//! publish, and the checks on a domain a tenant names (a hostile string until proven a
//! DNS name).

use base64::Engine as _;
use mail_auth::dkim::generate::DkimKeyPair;
use rsa::pkcs1::DecodeRsaPublicKey;
use rsa::pkcs8::EncodePublicKey;

/// Longest domain name (RFC 1035: 253 characters in text form).
pub const MAX_DOMAIN_LEN: usize = 253;

/// A key's algorithm: the store's type (a key row names it), re-exported here.
pub use crate::store::DkimAlgorithm as Algorithm;

/// The record's `k=` tag.
fn dns_k(algorithm: Algorithm) -> &'static str {
    match algorithm {
        Algorithm::Ed25519 => "ed25519",
        Algorithm::Rsa2048 => "rsa",
    }
}

/// A new key pair. `private_der` is what [`super::Sealer::seal`] seals (PKCS#8 for
/// Ed25519, PKCS#1 for RSA); `public` is the record's `p=` value, decoded.
pub struct KeyPair {
    pub algorithm: Algorithm,
    pub private_der: Vec<u8>,
    pub public: Vec<u8>,
}

impl std::fmt::Debug for KeyPair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the private key, not even in a debug print.
        f.debug_struct("KeyPair")
            .field("algorithm", &self.algorithm)
            .finish_non_exhaustive()
    }
}

/// Key generation failed (the system's randomness or the crypto library).
#[derive(Debug, thiserror::Error)]
#[error("cannot generate a DKIM key: {0}")]
pub struct GenerateError(String);

/// Generates a key pair. RSA-2048 takes tens to hundreds of milliseconds: call it off
/// the async workers.
pub fn generate(algorithm: Algorithm) -> Result<KeyPair, GenerateError> {
    let err = |e: &dyn std::fmt::Display| GenerateError(e.to_string());
    match algorithm {
        Algorithm::Ed25519 => {
            let pair = DkimKeyPair::generate_ed25519().map_err(|e| err(&e))?;
            let (private_der, public) = pair.into_inner();
            Ok(KeyPair {
                algorithm,
                private_der,
                public,
            })
        }
        Algorithm::Rsa2048 => {
            let pair = DkimKeyPair::generate_rsa(2048).map_err(|e| err(&e))?;
            let (private_der, pkcs1_public) = pair.into_inner();
            // The record carries SubjectPublicKeyInfo, as `openssl rsa -pubout` and
            // every DKIM key tool write it (RFC 6376 appendix C).
            let public = rsa::RsaPublicKey::from_pkcs1_der(&pkcs1_public)
                .map_err(|e| err(&e))?
                .to_public_key_der()
                .map_err(|e| err(&e))?
                .into_vec();
            Ok(KeyPair {
                algorithm,
                private_der,
                public,
            })
        }
    }
}

/// The name the TXT record is published under.
pub fn record_name(selector: &str, domain: &str) -> String {
    format!("{selector}._domainkey.{domain}")
}

/// The TXT record's value: `v=DKIM1; k=…; p=…`.
pub fn txt_record(algorithm: Algorithm, public: &[u8]) -> String {
    format!(
        "v=DKIM1; k={}; p={}",
        dns_k(algorithm),
        base64::engine::general_purpose::STANDARD.encode(public)
    )
}

/// The record as DNS character-strings of at most 255 bytes each (an RSA-2048 record
/// is longer than one string may be; resolvers join them). The record is ASCII.
pub fn txt_strings(record: &str) -> Vec<String> {
    record
        .as_bytes()
        .chunks(255)
        .map(|c| String::from_utf8_lossy(c).into_owned())
        .collect()
}

/// A new selector: `s`, the UTC date, and 8 random base32 characters
/// (`s20261207k3q9v2xa`): sortable by creation, unguessable, a valid DNS label, and
/// never the same twice for a domain in practice (the store's key refuses a repeat).
pub fn new_selector(now_ms: i64) -> String {
    const ALPHABET: &[u8; 32] = b"abcdefghijklmnopqrstuvwxyz234567";
    let (y, m, d) = crate::maillog::syslog_time::civil_from_days(now_ms.div_euclid(86_400_000));
    let mut random = [0u8; 8];
    getrandom::fill(&mut random).expect("the system's randomness");
    let tail: String = random
        .iter()
        .map(|b| ALPHABET[usize::from(b & 31)] as char)
        .collect();
    format!("s{y:04}{m:02}{d:02}{tail}")
}

/// Whether `s` can be a selector this module made (a path parameter is checked with it
/// before any store read).
pub fn valid_selector(s: &str) -> bool {
    (2..=63).contains(&s.len())
        && s.starts_with('s')
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
}

/// Why a string is not a domain a key may be made for.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DomainError {
    #[error("a domain is at most {MAX_DOMAIN_LEN} characters; this one has {0}")]
    TooLong(usize),
    #[error("{0:?} is not a DNS name: {1}")]
    NotDns(String, &'static str),
}

/// `s` as a domain name in its stored form (lower case, no trailing dot), or why not:
/// at least two labels of 1 to 63 letters, digits or hyphens (an internationalised name
/// in its `xn--` form), no label starting or ending with a hyphen, a top-level label
/// that is not all digits (an IP address is not a signing domain).
pub fn normalize_domain(s: &str) -> Result<String, DomainError> {
    if s.len() > MAX_DOMAIN_LEN + 1 {
        return Err(DomainError::TooLong(s.len()));
    }
    let d = s.strip_suffix('.').unwrap_or(s).to_ascii_lowercase();
    let bad = |why| Err(DomainError::NotDns(clip(s), why));
    if d.len() > MAX_DOMAIN_LEN {
        return Err(DomainError::TooLong(d.len()));
    }
    let labels: Vec<&str> = d.split('.').collect();
    if labels.len() < 2 {
        return bad("it needs at least two labels (example.com)");
    }
    for l in &labels {
        if l.is_empty() || l.len() > 63 {
            return bad("each label is 1 to 63 characters");
        }
        if !l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
            return bad("labels are letters, digits and hyphens (IDNs in their xn-- form)");
        }
        if l.starts_with('-') || l.ends_with('-') {
            return bad("a label cannot start or end with a hyphen");
        }
    }
    if labels
        .last()
        .is_some_and(|t| t.bytes().all(|b| b.is_ascii_digit()))
    {
        return bad("the top-level label cannot be all digits");
    }
    Ok(d)
}

/// A hostile string clipped for an error message (it is quoted back to the caller).
fn clip(s: &str) -> String {
    s.chars().take(80).collect()
}

/// The domain and its parents down to two labels, most specific first: where a key for
/// a `From:` domain is looked for (`news.example.com`, then `example.com`).
pub fn signing_candidates(domain: &str) -> impl Iterator<Item = &str> {
    let mut next = Some(domain);
    std::iter::from_fn(move || {
        let d = next?;
        next = d
            .split_once('.')
            .map(|(_, parent)| parent)
            .filter(|p| p.contains('.'));
        Some(d)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostile_domains_are_refused_by_reason() {
        for (input, ok) in [
            ("Example.COM.", Some("example.com")),
            ("xn--bcher-kva.example", Some("xn--bcher-kva.example")),
            ("com", None),
            ("example..com", None),
            ("-a.example.com", None),
            ("a_b.example.com", None),
            ("bücher.example", None),
            ("127.0.0.1", None),
            ("example.com/../x", None),
            ("a.example.com\r\nX: y", None),
            ("", None),
        ] {
            assert_eq!(normalize_domain(input).ok().as_deref(), ok, "{input:?}");
        }
        let long = format!("{}.com", "a.".repeat(200));
        assert!(matches!(
            normalize_domain(&long),
            Err(DomainError::TooLong(_))
        ));
        let label = format!("{}.com", "a".repeat(64));
        assert!(normalize_domain(&label).is_err());
    }

    #[test]
    fn selectors_are_dated_distinct_dns_labels() {
        // 2026-12-07T00:00:00Z
        let s = new_selector(1_796_601_600_000);
        assert!(s.starts_with("s20261207"), "{s}");
        assert_eq!(s.len(), 17);
        assert!(valid_selector(&s));
        assert_ne!(s, new_selector(1_796_601_600_000));
        assert!(!valid_selector("S2026"));
        assert!(!valid_selector("s2026.x"));
        assert!(!valid_selector(&"s".repeat(64)));
    }

    #[test]
    fn candidates_walk_up_to_two_labels() {
        let c: Vec<&str> = signing_candidates("a.news.example.com").collect();
        assert_eq!(c, ["a.news.example.com", "news.example.com", "example.com"]);
        let c: Vec<&str> = signing_candidates("example.com").collect();
        assert_eq!(c, ["example.com"]);
    }

    #[test]
    fn an_rsa_record_is_split_into_dns_strings() {
        let pair = generate(Algorithm::Rsa2048).unwrap();
        let record = txt_record(pair.algorithm, &pair.public);
        assert!(record.starts_with("v=DKIM1; k=rsa; p=MIIBIjAN"), "{record}");
        let parts = txt_strings(&record);
        assert_eq!(parts.len(), 2);
        assert!(parts.iter().all(|p| p.len() <= 255));
        assert_eq!(parts.concat(), record);
        let ed = generate(Algorithm::Ed25519).unwrap();
        assert_eq!(ed.public.len(), 32);
        assert!(!format!("{ed:?}").contains("private_der"));
    }
}
