//! Bounce: an e-mail, an SMTP reply or a log line in, failed recipients out.

use super::SmtpReply;
use serde::{Deserialize, Serialize};

/// Sisimai's reason vocabulary.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Reason {
    Delivered,
    Feedback,
    Vacation,
    Userunknown,
    Hostunknown,
    Hasmoved,
    Notaccept,
    Mailboxfull,
    Mesgtoobig,
    Exceedlimit,
    Blocked,
    Rejected,
    Spamdetected,
    Virusdetected,
    Filtered,
    Policyviolation,
    Securityerror,
    Authfailure,
    Badreputation,
    Requireptr,
    Norelaying,
    Networkerror,
    Systemerror,
    Systemfull,
    Toomanyconn,
    Speeding,
    Suspend,
    Syntaxerror,
    Contenterror,
    Notcompliantrfc,
    Mailererror,
    Expired,
    Onhold,
    Undefined,
}

/// A reply with the recipient it was for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReplyInput {
    pub recipient: String,
    pub reply: SmtpReply,
}

/// What the bounce parser reads.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BounceInput {
    /// Raw bytes of one e-mail; base64 in JSON.
    #[serde(rename = "email_base64", with = "base64_bytes")]
    Email(Vec<u8>),
    Reply(ReplyInput),
    LogLine(String),
}

/// One failed (or delayed) recipient.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BounceResult {
    pub recipient: String,
    pub status: String,
    pub reply_code: Option<u16>,
    pub reason: Reason,
    pub hard: bool,
    pub action: String,
    pub diagnostic: String,
    pub original_message_id: Option<String>,
    pub verp_token: Option<String>,
}

/// The bounce parser's answer.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BounceOutput {
    pub results: Vec<BounceResult>,
    #[serde(default)]
    pub notes: Vec<String>,
}

mod base64_bytes {
    use base64::Engine as _;
    use base64::engine::general_purpose::STANDARD;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&STANDARD.encode(bytes))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let text = String::deserialize(d)?;
        STANDARD
            .decode(text.trim())
            .map_err(|e| serde::de::Error::custom(format!("email_base64 is not base64: {e}")))
    }
}
