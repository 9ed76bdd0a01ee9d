//! Send: retry 4xx every ten minutes for a day, fail 5xx at once.
//!
//! Export it with `sluice_sdk::export_send_policy!(FlatRetry);`.

use crate::send::*;

/// A fixed retry interval with a one-day limit.
pub struct FlatRetry;

impl SendPolicy for FlatRetry {
    fn decide(attempt: Attempt) -> SendDecision {
        let Some(reply) = attempt.reply else {
            return SendDecision::NextRelay(attempt.transport_error.unwrap_or_default());
        };
        match reply.code {
            200..=299 => SendDecision::Delivered,
            400..=499 if attempt.age_secs < 86_400 => SendDecision::Retry(Retry {
                after_secs: 600,
                reason: reply.text,
            }),
            _ => SendDecision::Fail(format!("{} {}", reply.code, reply.text)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing;

    #[test]
    fn retries_temporary_and_fails_permanent() {
        assert_eq!(
            FlatRetry::decide(testing::attempt(250, "2.0.0", "ok")),
            SendDecision::Delivered
        );
        assert!(
            matches!(FlatRetry::decide(testing::attempt(451, "4.7.1", "try later")), SendDecision::Retry(r) if r.after_secs == 600)
        );
        assert!(matches!(
            FlatRetry::decide(testing::attempt(550, "5.1.1", "no such user")),
            SendDecision::Fail(_)
        ));
    }
}
