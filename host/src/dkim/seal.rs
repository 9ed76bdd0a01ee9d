//! DKIM private keys at rest: sealed with ChaCha20-Poly1305 (ring's AEAD) under a key
//! derived from the pipeline's `[dkim] key_env`/`key_file` secret, so a dump of the
//! database alone reveals no private key.
//!
//! The derived key is HKDF-SHA256 of the secret (a fixed salt naming this use). Each
//! sealed key has its own random 96-bit nonce, and its owner — tenant, domain and
//! selector — is the AEAD's associated data: a row copied into another tenant's or
//! domain's place does not open, so whoever can write the database still cannot make
//! Sluice sign one tenant's mail with another's key. The stored form is
//! `v1.` + base64(nonce ‖ ciphertext ‖ tag); the version leaves room for a new scheme.

use base64::Engine as _;
use ring::aead::{self, Aad, LessSafeKey, Nonce, UnboundKey};
use ring::hkdf;

/// The shortest secret taken: 32 bytes (as `openssl rand -base64 32` prints, 44).
pub const MIN_SECRET_BYTES: usize = 32;
const SALT: &[u8] = b"sluice dkim private key sealing v1";
const PREFIX: &str = "v1.";

/// Why a secret cannot seal, or a sealed key cannot be opened. Never holds the secret
/// or the key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SealError {
    #[error("the secret is {0} bytes; at least {MIN_SECRET_BYTES} are needed")]
    ShortSecret(usize),
    #[error("not a sealed key of a known form")]
    Malformed,
    /// A wrong secret, or a row moved to another owner, or changed.
    #[error("the sealed key does not open with this secret for this owner")]
    WrongKey,
}

/// Seals and opens private keys; made once from the secret at start.
pub struct Sealer {
    key: LessSafeKey,
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Sealer(..)")
    }
}

/// Whose key a sealed value is: bound into the AEAD.
#[derive(Debug, Clone, Copy)]
pub struct Owner<'a> {
    pub tenant: &'a str,
    pub domain: &'a str,
    pub selector: &'a str,
}

impl Owner<'_> {
    fn aad(&self) -> Vec<u8> {
        // NUL cannot occur in any of the three (checked names), so the join is unambiguous.
        [self.tenant, self.domain, self.selector]
            .join("\0")
            .into_bytes()
    }
}

impl Sealer {
    pub fn from_secret(secret: &str) -> Result<Sealer, SealError> {
        if secret.len() < MIN_SECRET_BYTES {
            return Err(SealError::ShortSecret(secret.len()));
        }
        let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, SALT).extract(secret.as_bytes());
        let info = [b"chacha20-poly1305".as_slice()];
        let okm = prk
            .expand(&info, &aead::CHACHA20_POLY1305)
            .map_err(|_| SealError::Malformed)?;
        let key = UnboundKey::from(okm);
        Ok(Sealer {
            key: LessSafeKey::new(key),
        })
    }

    /// `plain` sealed for `owner`, in its stored form.
    pub fn seal(&self, plain: &[u8], owner: Owner<'_>) -> String {
        let mut nonce = [0u8; aead::NONCE_LEN];
        getrandom::fill(&mut nonce).expect("the system's randomness");
        let mut buf = plain.to_vec();
        self.key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(owner.aad()),
                &mut buf,
            )
            .expect("ChaCha20-Poly1305 seals any key-sized input");
        let mut out = nonce.to_vec();
        out.extend_from_slice(&buf);
        format!(
            "{PREFIX}{}",
            base64::engine::general_purpose::STANDARD_NO_PAD.encode(out)
        )
    }

    /// The private key sealed in `stored` for `owner`.
    pub fn open(&self, stored: &str, owner: Owner<'_>) -> Result<Vec<u8>, SealError> {
        let b64 = stored.strip_prefix(PREFIX).ok_or(SealError::Malformed)?;
        let raw = base64::engine::general_purpose::STANDARD_NO_PAD
            .decode(b64)
            .map_err(|_| SealError::Malformed)?;
        if raw.len() < aead::NONCE_LEN + aead::CHACHA20_POLY1305.tag_len() {
            return Err(SealError::Malformed);
        }
        let (nonce, sealed) = raw.split_at(aead::NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| SealError::Malformed)?;
        let mut buf = sealed.to_vec();
        let plain = self
            .key
            .open_in_place(nonce, Aad::from(owner.aad()), &mut buf)
            .map_err(|_| SealError::WrongKey)?;
        Ok(plain.to_vec())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "0123456789abcdef0123456789abcdef";

    fn owner<'a>(tenant: &'a str, domain: &'a str) -> Owner<'a> {
        Owner {
            tenant,
            domain,
            selector: "s20261207abcdefgh",
        }
    }

    #[test]
    fn a_sealed_key_opens_only_with_its_secret_and_owner() {
        let s = Sealer::from_secret(SECRET).unwrap();
        let sealed = s.seal(b"private key bytes", owner("t1", "example.com"));
        assert!(sealed.starts_with("v1."));
        assert!(!sealed.contains("private"));
        assert_eq!(
            s.open(&sealed, owner("t1", "example.com")).unwrap(),
            b"private key bytes"
        );
        // Copied to another tenant's or domain's row: refused.
        assert_eq!(
            s.open(&sealed, owner("t2", "example.com")),
            Err(SealError::WrongKey)
        );
        assert_eq!(
            s.open(&sealed, owner("t1", "example.net")),
            Err(SealError::WrongKey)
        );
        let other = Sealer::from_secret("another secret of at least 32 bytes!").unwrap();
        assert_eq!(
            other.open(&sealed, owner("t1", "example.com")),
            Err(SealError::WrongKey)
        );
        // Two seals of one key differ (own nonces).
        assert_ne!(
            sealed,
            s.seal(b"private key bytes", owner("t1", "example.com"))
        );
        assert_eq!(
            s.open("v1.AAAA", owner("t1", "example.com")),
            Err(SealError::Malformed)
        );
        assert_eq!(
            s.open("plain", owner("t1", "example.com")),
            Err(SealError::Malformed)
        );
    }

    #[test]
    fn a_short_secret_is_refused_without_quoting_it() {
        let e = Sealer::from_secret("short").unwrap_err();
        assert_eq!(e, SealError::ShortSecret(5));
        assert!(!e.to_string().contains("short"));
    }
}
