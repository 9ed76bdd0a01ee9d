//! A tenant's send policy for the tenant plugin tests: a 4xx (or no reply) fails the
//! recipient at once instead of being retried; 2xx is delivered. With `mode=panic` it
//! traps on every call.

use sluice_sdk::send::*;

/// The plugin.
pub struct TenantSend;

impl SendPolicy for TenantSend {
    fn decide(attempt: Attempt) -> SendDecision {
        if sluice_sdk::config::get("mode").as_deref() == Some("panic") {
            panic!("tenant send plugin panics on purpose");
        }
        match &attempt.reply {
            Some(r) if (200..300).contains(&r.code) => SendDecision::Delivered,
            Some(r) => {
                SendDecision::Fail(format!("tenant policy: no retries ({} {})", r.code, r.text))
            }
            None => SendDecision::Fail("tenant policy: no retries (no reply)".into()),
        }
    }
}

sluice_sdk::export_send_policy!(TenantSend);
