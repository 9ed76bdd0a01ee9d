//! DKIM keys on the wire (`/v1/domains/{domain}/dkim`): what a key is and the DNS record
//! to publish for it. A private key has no field here: no answer can carry one.

use crate::dkim::keys::{record_name, txt_record, txt_strings};
use crate::store::DkimKey;
use base64::Engine as _;
use serde::Serialize;
use utoipa::ToSchema;

/// One key of a domain.
#[derive(Debug, Serialize, ToSchema)]
pub struct DkimKeyView {
    #[schema(example = "example.com")]
    pub domain: String,
    #[schema(example = "s20261207k3q9v2xa")]
    pub selector: String,
    /// `ed25519` or `rsa-2048`.
    #[schema(example = "ed25519")]
    pub algorithm: String,
    /// Whether it signs the domain's mail now (one key of a domain at a time).
    pub active: bool,
    pub created_at_ms: i64,
    /// When it last became the active key.
    pub activated_at_ms: Option<i64>,
    /// The DNS record to publish: a TXT record at `dns_name` with `dns_txt`.
    pub dns: DkimDnsRecord,
}

/// The TXT record a key is verified with.
#[derive(Debug, Serialize, ToSchema)]
pub struct DkimDnsRecord {
    /// `{selector}._domainkey.{domain}`.
    #[schema(example = "s20261207k3q9v2xa._domainkey.example.com")]
    pub name: String,
    #[schema(example = "TXT")]
    pub r#type: String,
    /// The record's value as one string.
    #[schema(example = "v=DKIM1; k=ed25519; p=11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo=")]
    pub value: String,
    /// The same value cut into DNS character-strings of at most 255 bytes (an RSA-2048
    /// record needs two), for zone files and providers that want them apart.
    pub strings: Vec<String>,
}

/// A domain's keys, oldest first.
#[derive(Debug, Serialize, ToSchema)]
pub struct DkimKeyList {
    pub keys: Vec<DkimKeyView>,
}

impl From<&DkimKey> for DkimKeyView {
    fn from(k: &DkimKey) -> DkimKeyView {
        let public = base64::engine::general_purpose::STANDARD
            .decode(&k.public_key)
            .unwrap_or_default();
        let value = txt_record(k.algorithm, &public);
        DkimKeyView {
            domain: k.domain.clone(),
            selector: k.selector.clone(),
            algorithm: k.algorithm.as_str().to_owned(),
            active: k.active,
            created_at_ms: k.created_at_ms,
            activated_at_ms: k.activated_at_ms,
            dns: DkimDnsRecord {
                name: record_name(&k.selector, &k.domain),
                r#type: "TXT".to_owned(),
                strings: txt_strings(&value),
                value,
            },
        }
    }
}
