//! DKIM signing (issue 23), as plain functions: keys per tenant and domain
//! ([`keys`]: generation, selectors, the DNS record, domain names), their sealing at
//! rest ([`seal`]: an AEAD under `[dkim] key_env`/`key_file`), and the signature
//! itself ([`sign`]: relaxed/relaxed over the usual header set, by `mail-auth`).
//!
//! Invariants:
//! - A private key leaves this module only sealed: [`seal::Sealer::seal`] is the one way
//!   from a generated key to bytes the store keeps, and nothing here prints one.
//! - No I/O: no store, no HTTP, no clock of its own (times are passed in). `serve`
//!   decides when to sign (`serve/dkim_sign.rs`, at acceptance) and where keys live
//!   (`store/dkim_keys.rs`).

pub mod keys;
pub mod seal;
pub mod sign;

pub use keys::{Algorithm, DomainError, KeyPair, generate};
pub use seal::{SealError, Sealer};
pub use sign::{SignError, SigningKey};
