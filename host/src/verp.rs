//! VERP return paths: `PREFIX+TOKEN@bounce-domain`, where TOKEN names one
//! recipient of one stored message and carries an HMAC, so that a bounce can
//! be tied to the recipient it is about and a forged address is refused at
//! `RCPT TO`.
//!
//! The token is 30 bytes — message ULID (16), recipient index (4, big
//! endian), HMAC-SHA256 of both truncated to 10 bytes (80 bits) — written
//! in lower-case RFC 4648 base32 without padding: 48 characters of
//! `a-z 2-7`. Local parts are compared case-insensitively by many MTAs, and
//! base32 survives that; `bounces+` and the token fit the 64-octet limit.

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// Bytes of the HMAC kept in a token.
const MAC_LEN: usize = 10;
/// Bytes of a decoded token.
const TOKEN_LEN: usize = 16 + 4 + MAC_LEN;
/// Characters of an encoded token.
pub const TOKEN_CHARS: usize = TOKEN_LEN * 8 / 5;
/// Domain separation: a key shared with something else never signs a VERP token by accident.
const CONTEXT: &[u8] = b"sluice-verp-v1\0";
const ALPHABET: &[u8; 32] = b"abcdefghijklmnopqrstuvwxyz234567";

/// Why a return path is not one of ours.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerpError {
    #[error("{0:?} is not an address at the bounce domain {1:?}")]
    OtherDomain(String, String),
    #[error("{0:?} does not start with the return-path prefix {1:?}")]
    NoPrefix(String, String),
    #[error("token {0:?} is not {TOKEN_CHARS} characters of base32")]
    Malformed(String),
    #[error("token {0:?} does not verify (forged or signed with another key)")]
    BadSignature(String),
    #[error("the VERP key must be at least 16 bytes, got {0}")]
    ShortKey(usize),
}

/// The recipient a token names.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Target {
    /// The stored message's id (a ULID, upper case as the store writes it).
    pub message_id: String,
    pub recipient_idx: i32,
}

/// Signs and checks return paths for one bounce domain.
#[derive(Clone)]
pub struct Verp {
    key: Vec<u8>,
    prefix: String,
    domain: String,
}

impl std::fmt::Debug for Verp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the key.
        f.debug_struct("Verp")
            .field("prefix", &self.prefix)
            .field("domain", &self.domain)
            .finish_non_exhaustive()
    }
}

impl Verp {
    /// `prefix` and `domain` are compared case-insensitively.
    pub fn new(key: &[u8], prefix: &str, domain: &str) -> Result<Verp, VerpError> {
        if key.len() < 16 {
            return Err(VerpError::ShortKey(key.len()));
        }
        Ok(Verp {
            key: key.to_vec(),
            prefix: prefix.to_ascii_lowercase(),
            domain: domain.trim_end_matches('.').to_ascii_lowercase(),
        })
    }

    pub fn domain(&self) -> &str {
        &self.domain
    }

    fn mac(&self, payload: &[u8]) -> Hmac<Sha256> {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.key).expect("HMAC takes any key");
        mac.update(CONTEXT);
        mac.update(payload);
        mac
    }

    /// The token for one recipient; `None` when `message_id` is not a ULID
    /// (the store only makes ULIDs).
    pub fn token(&self, message_id: &str, recipient_idx: i32) -> Option<String> {
        let id = ulid::Ulid::from_string(message_id).ok()?;
        let mut bytes = [0u8; TOKEN_LEN];
        bytes[..16].copy_from_slice(&id.0.to_be_bytes());
        bytes[16..20].copy_from_slice(&recipient_idx.to_be_bytes());
        let tag = self.mac(&bytes[..20]).finalize().into_bytes();
        bytes[20..].copy_from_slice(&tag[..MAC_LEN]);
        Some(base32(&bytes))
    }

    /// The return path for one recipient: `prefix+token@domain`.
    pub fn return_path(&self, message_id: &str, recipient_idx: i32) -> Option<String> {
        let token = self.token(message_id, recipient_idx)?;
        Some(format!("{}+{token}@{}", self.prefix, self.domain))
    }

    /// Checks a token and says whom it names.
    pub fn verify_token(&self, token: &str) -> Result<Target, VerpError> {
        let malformed = || VerpError::Malformed(token.to_owned());
        if token.len() != TOKEN_CHARS {
            return Err(malformed());
        }
        let bytes = unbase32(token).ok_or_else(malformed)?;
        let bytes: [u8; TOKEN_LEN] = bytes.try_into().map_err(|_| malformed())?;
        // Constant time: a byte-by-byte oracle must not leak the tag.
        self.mac(&bytes[..20])
            .verify_truncated_left(&bytes[20..])
            .map_err(|_| VerpError::BadSignature(token.to_owned()))?;
        let id = u128::from_be_bytes(bytes[..16].try_into().expect("16 bytes"));
        let idx = i32::from_be_bytes(bytes[16..20].try_into().expect("4 bytes"));
        Ok(Target {
            message_id: ulid::Ulid(id).to_string(),
            recipient_idx: idx,
        })
    }

    /// Checks a whole address (`RCPT TO`): domain, prefix, token.
    pub fn verify_address(&self, address: &str) -> Result<Target, VerpError> {
        let (local, domain) = address
            .rsplit_once('@')
            .ok_or_else(|| VerpError::OtherDomain(address.to_owned(), self.domain.clone()))?;
        if !domain
            .trim_end_matches('.')
            .eq_ignore_ascii_case(&self.domain)
        {
            return Err(VerpError::OtherDomain(
                address.to_owned(),
                self.domain.clone(),
            ));
        }
        let token = local
            .split_once('+')
            .filter(|(p, _)| p.eq_ignore_ascii_case(&self.prefix))
            .map(|(_, t)| t)
            .ok_or_else(|| VerpError::NoPrefix(address.to_owned(), self.prefix.clone()))?;
        self.verify_token(token)
    }
}

/// Lower-case RFC 4648 base32 without padding.
fn base32(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len().div_ceil(5) * 8);
    let (mut acc, mut bits) = (0u32, 0u32);
    for &b in bytes {
        acc = (acc << 8) | u32::from(b);
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            out.push(ALPHABET[((acc >> bits) & 31) as usize] as char);
        }
    }
    if bits > 0 {
        out.push(ALPHABET[((acc << (5 - bits)) & 31) as usize] as char);
    }
    out
}

/// Decodes [`base32`], either case; `None` on any other character.
fn unbase32(text: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(text.len() * 5 / 8);
    let (mut acc, mut bits) = (0u32, 0u32);
    for c in text.bytes() {
        let v = match c.to_ascii_lowercase() {
            c @ b'a'..=b'z' => c - b'a',
            c @ b'2'..=b'7' => c - b'2' + 26,
            _ => return None,
        };
        acc = (acc << 5) | u32::from(v);
        bits += 5;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    Some(out)
}

/// A fresh random key for a store that has none yet (32 bytes, hex).
pub fn generate_key() -> String {
    let bytes: [u8; 32] = rand::random();
    hex::encode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "01KBBCT5XR6Q5JW4R1C8S4J6Z0";

    fn verp() -> Verp {
        Verp::new(
            b"0123456789abcdef-test-key",
            "bounces",
            "Bounce.Example.COM",
        )
        .unwrap()
    }

    #[test]
    fn a_token_round_trips_to_its_message_and_recipient() {
        let v = verp();
        let token = v.token(ID, 7).unwrap();
        assert_eq!(token.len(), TOKEN_CHARS);
        assert!(
            token
                .bytes()
                .all(|b| b.is_ascii_lowercase() || (b'2'..=b'7').contains(&b)),
            "{token}"
        );
        let target = v.verify_token(&token).unwrap();
        assert_eq!(
            target,
            Target {
                message_id: ID.into(),
                recipient_idx: 7
            }
        );
    }

    #[test]
    fn the_return_path_is_smtp_safe_and_verifies_in_any_case() {
        let v = verp();
        let rp = v.return_path(ID, 0).unwrap();
        let local = rp.split_once('@').unwrap().0;
        assert!(local.len() <= 64, "{rp}");
        assert!(rp.starts_with("bounces+") && rp.ends_with("@bounce.example.com"));
        assert_eq!(
            v.verify_address(&rp.to_ascii_uppercase())
                .unwrap()
                .recipient_idx,
            0
        );
    }

    #[test]
    fn a_changed_character_or_another_key_is_refused() {
        let v = verp();
        let token = v.token(ID, 1).unwrap();
        for i in [0, 20, TOKEN_CHARS - 1] {
            let mut t = token.clone().into_bytes();
            t[i] = if t[i] == b'a' { b'b' } else { b'a' };
            let t = String::from_utf8(t).unwrap();
            assert!(
                matches!(v.verify_token(&t), Err(VerpError::BadSignature(_))),
                "changed at {i}: {t}"
            );
        }
        let other =
            Verp::new(b"another key of 16+ bytes", "bounces", "bounce.example.com").unwrap();
        assert!(matches!(
            other.verify_token(&token),
            Err(VerpError::BadSignature(_))
        ));
    }

    #[test]
    fn addresses_that_are_not_ours_say_why() {
        let v = verp();
        let token = v.token(ID, 1).unwrap();
        assert!(matches!(
            v.verify_address(&format!("bounces+{token}@elsewhere.example")),
            Err(VerpError::OtherDomain(..))
        ));
        assert!(matches!(
            v.verify_address(&format!("other+{token}@bounce.example.com")),
            Err(VerpError::NoPrefix(..))
        ));
        assert!(matches!(
            v.verify_address("bounces+short@bounce.example.com"),
            Err(VerpError::Malformed(_))
        ));
        let bad_chars = "1".repeat(TOKEN_CHARS);
        assert!(matches!(
            v.verify_address(&format!("bounces+{bad_chars}@bounce.example.com")),
            Err(VerpError::Malformed(_))
        ));
        assert!(v.token("not-a-ulid", 0).is_none());
        assert!(matches!(
            Verp::new(b"short", "b", "d"),
            Err(VerpError::ShortKey(5))
        ));
    }

    #[test]
    fn base32_matches_rfc_4648_vectors() {
        assert_eq!(base32(b"foobar"), "mzxw6ytboi");
        assert_eq!(unbase32("MZXW6YTBOI").unwrap(), b"foobar");
        assert_eq!(base32(b""), "");
    }
}
