//! A tenant's bounce reader for the tenant plugin tests: whatever it is given (a DSN
//! e-mail, an SMTP reply), it reads one soft `mailboxfull` failure with status 4.2.2
//! and a diagnostic naming itself, so a test can tell its reading from the pipeline's.
//! With `mode=panic` it traps on every call.

use sluice_sdk::bounce::*;

/// The plugin.
pub struct TenantBounce;

impl BounceParser for TenantBounce {
    fn parse(input: BounceInput) -> BounceOutput {
        if sluice_sdk::config::get("mode").as_deref() == Some("panic") {
            panic!("tenant bounce plugin panics on purpose");
        }
        let recipient = match input {
            BounceInput::Reply(r) => r.recipient,
            // The host applies a result that names nobody to the return path's recipient.
            _ => String::new(),
        };
        BounceOutput {
            results: vec![BounceResult {
                recipient,
                status: "4.2.2".into(),
                reply_code: None,
                reason: Reason::Mailboxfull,
                hard: false,
                action: "failed".into(),
                diagnostic: "read by the tenant's own bounce plugin".into(),
                original_message_id: None,
                verp_token: None,
            }],
            notes: Vec::new(),
        }
    }
}

sluice_sdk::export_bounce_parser!(TenantBounce);
