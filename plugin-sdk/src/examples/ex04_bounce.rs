//! Bounce: classify single SMTP replies by their enhanced status code.
//!
//! Export it with `sluice_sdk::export_bounce_parser!(ReplyOnly);`.

use crate::bounce::*;

/// Reads SMTP replies only; e-mails and log lines yield a note.
pub struct ReplyOnly;

impl BounceParser for ReplyOnly {
    fn parse(input: BounceInput) -> BounceOutput {
        let BounceInput::Reply(ReplyInput { recipient, reply }) = input else {
            return BounceOutput {
                results: Vec::new(),
                notes: vec!["only SMTP replies are read".into()],
            };
        };
        let status = reply.enhanced.clone().unwrap_or_default();
        let reason = match status.as_str() {
            "5.1.1" | "5.1.0" => Reason::Userunknown,
            "4.2.2" | "5.2.2" => Reason::Mailboxfull,
            _ => Reason::Undefined,
        };
        let result = BounceResult {
            recipient,
            status,
            reply_code: Some(reply.code),
            reason,
            hard: reply.code >= 500,
            action: if reply.code >= 500 {
                "failed"
            } else {
                "delayed"
            }
            .into(),
            diagnostic: reply.text,
            original_message_id: None,
            verp_token: None,
        };
        BounceOutput {
            results: vec![result],
            notes: Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_user_unknown() {
        let reply = SmtpReply {
            code: 550,
            enhanced: Some("5.1.1".into()),
            text: "no such user".into(),
        };
        let out = ReplyOnly::parse(BounceInput::Reply(ReplyInput {
            recipient: "a@b.c".into(),
            reply,
        }));
        assert_eq!(out.results[0].reason, Reason::Userunknown);
        assert!(out.results[0].hard);
    }
}
