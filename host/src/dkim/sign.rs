//! The signature: `mail-auth`'s DKIM signer, relaxed/relaxed, over the header fields a
//! reader sees and a relay does not change, with `t=` and no body length (`l=` would let
//! anyone append to a signed body).

use super::keys::Algorithm;
use mail_auth::common::crypto::{Ed25519Key, RsaKey, Sha256};
use mail_auth::common::headers::HeaderWriter as _;
use mail_auth::dkim::{Canonicalization, DkimSigner};
use rustls_pki_types::{PrivateKeyDer, PrivatePkcs1KeyDer};

/// The header fields signed when the message has them (`From` always: RFC 6376 5.4).
/// Fields a relay adds (`Received`, `Return-Path`) or may rewrite are left out; those
/// absent from the message are not listed, so a downstream list or relay adding one
/// (`List-Unsubscribe`, say) does not break the signature.
pub const SIGNED_HEADERS: &[&str] = &[
    "From",
    "Sender",
    "Reply-To",
    "Subject",
    "Date",
    "Message-ID",
    "To",
    "Cc",
    "MIME-Version",
    "Content-Type",
    "Content-Transfer-Encoding",
    "In-Reply-To",
    "References",
    "List-Unsubscribe",
    "List-Unsubscribe-Post",
    "Feedback-ID",
];

/// Why a key could not be loaded or a message signed.
#[derive(Debug, thiserror::Error)]
pub enum SignError {
    #[error("the stored {0} key cannot be read: {1}")]
    BadKey(&'static str, String),
    #[error("signing failed: {0}")]
    Sign(String),
}

/// A private key ready to sign.
pub enum SigningKey {
    Ed25519(Ed25519Key),
    Rsa(RsaKey<Sha256>),
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            SigningKey::Ed25519(_) => "SigningKey::Ed25519(..)",
            SigningKey::Rsa(_) => "SigningKey::Rsa(..)",
        })
    }
}

impl SigningKey {
    /// Loads an opened private key of `algorithm` (PKCS#8 Ed25519, PKCS#1 RSA).
    pub fn load(algorithm: Algorithm, der: &[u8]) -> Result<SigningKey, SignError> {
        match algorithm {
            Algorithm::Ed25519 => Ed25519Key::from_pkcs8_der(der)
                .map(SigningKey::Ed25519)
                .map_err(|e| SignError::BadKey(algorithm.as_str(), e.to_string())),
            Algorithm::Rsa2048 => RsaKey::<Sha256>::from_key_der(PrivateKeyDer::Pkcs1(
                PrivatePkcs1KeyDer::from(der.to_vec()),
            ))
            .map(SigningKey::Rsa)
            .map_err(|e| SignError::BadKey(algorithm.as_str(), e.to_string())),
        }
    }

    pub fn algorithm(&self) -> Algorithm {
        match self {
            SigningKey::Ed25519(_) => Algorithm::Ed25519,
            SigningKey::Rsa(_) => Algorithm::Rsa2048,
        }
    }

    /// The `DKIM-Signature:` field (folded, ending in CRLF) for `message`, which must
    /// have CRLF line ends (what is sent: `wire::crlf` of the stored body).
    pub fn sign(&self, domain: &str, selector: &str, message: &[u8]) -> Result<String, SignError> {
        let headers = present_headers(message);
        let err = |e: mail_auth::Error| SignError::Sign(e.to_string());
        let signature = match self {
            SigningKey::Ed25519(k) => signer(k, domain, selector, &headers).sign(message),
            SigningKey::Rsa(k) => signer(k, domain, selector, &headers).sign(message),
        }
        .map_err(err)?;
        Ok(signature.to_header())
    }
}

fn signer<'k, K>(
    key: &'k K,
    domain: &str,
    selector: &str,
    headers: &[&'static str],
) -> DkimSigner<KeyRef<'k, K>, mail_auth::dkim::Done>
where
    K: mail_auth::common::crypto::SigningKey,
{
    DkimSigner::from_key(KeyRef(key))
        .domain(domain)
        .selector(selector)
        .headers(headers.iter().copied())
        .header_canonicalization(Canonicalization::Relaxed)
        .body_canonicalization(Canonicalization::Relaxed)
}

/// A borrowed key: `DkimSigner` owns its key, and a cached key signs many messages.
struct KeyRef<'k, K>(&'k K);

impl<K: mail_auth::common::crypto::SigningKey> mail_auth::common::crypto::SigningKey
    for KeyRef<'_, K>
{
    type Hasher = K::Hasher;

    fn sign(&self, input: impl mail_auth::common::headers::Writable) -> mail_auth::Result<Vec<u8>> {
        self.0.sign(input)
    }

    fn algorithm(&self) -> mail_auth::common::crypto::Algorithm {
        self.0.algorithm()
    }
}

/// The names of [`SIGNED_HEADERS`] the message's header has (`From` always).
fn present_headers(message: &[u8]) -> Vec<&'static str> {
    let head_end = memchr::memmem::find(message, b"\r\n\r\n").map_or(message.len(), |i| i + 2);
    let head = &message[..head_end];
    let mut present = vec!["From"];
    for line in head.split(|&b| b == b'\n') {
        if line.first().is_none_or(|b| *b == b' ' || *b == b'\t') {
            continue;
        }
        let Some(colon) = memchr::memchr(b':', line) else {
            continue;
        };
        let name = line[..colon].trim_ascii();
        if let Some(h) = SIGNED_HEADERS
            .iter()
            .find(|h| h.as_bytes().eq_ignore_ascii_case(name))
            && !present.contains(h)
        {
            present.push(h);
        }
    }
    present
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dkim::keys::generate;

    #[test]
    fn a_signature_names_domain_selector_and_the_present_headers() {
        let pair = generate(Algorithm::Ed25519).unwrap();
        let key = SigningKey::load(Algorithm::Ed25519, &pair.private_der).unwrap();
        let msg = b"From: a@example.com\r\nTo: b@example.net\r\nSubject: hi\r\nX-Other: 1\r\n\r\nbody\r\n";
        let h = key.sign("example.com", "s1", msg).unwrap();
        assert!(h.starts_with("DKIM-Signature:"), "{h}");
        assert!(h.ends_with("\r\n"));
        let flat = h.replace("\r\n", "").replace([' ', '\t'], "");
        assert!(flat.contains("d=example.com;"), "{flat}");
        assert!(flat.contains("s=s1;"), "{flat}");
        assert!(flat.contains("a=ed25519-sha256;"), "{flat}");
        assert!(flat.contains("c=relaxed/relaxed;"), "{flat}");
        let h_tag = flat.split("h=").nth(1).unwrap().split(';').next().unwrap();
        let mut names: Vec<String> = h_tag.split(':').map(str::to_ascii_lowercase).collect();
        names.sort();
        assert_eq!(names, ["from", "subject", "to"], "{flat}");
        assert!(h.lines().all(|l| l.len() < 998));
        let rsa = generate(Algorithm::Rsa2048).unwrap();
        let key = SigningKey::load(Algorithm::Rsa2048, &rsa.private_der).unwrap();
        assert!(
            key.sign("example.com", "s2", msg)
                .unwrap()
                .contains("rsa-sha256")
        );
        assert!(SigningKey::load(Algorithm::Rsa2048, &pair.private_der).is_err());
    }
}
