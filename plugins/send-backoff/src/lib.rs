//! The default send policy: what an attempt's reply means.
//!
//! - 2xx: delivered.
//! - No reply (connection refused, TLS failure, timeout) or a 421: the next
//!   relay of the route if one is left, else retry later.
//! - Other 4xx: retry after `base_secs × 2^(attempt-1)` (settings
//!   `base_secs`, default 60, and `max_delay_secs`, default 3600).
//! - 5xx: fail with the reply.
//! - Past `max_age_secs` (default 5 days) a retry becomes a failure.

use sluice_sdk::send::*;

/// The plugin.
pub struct Backoff;

impl SendPolicy for Backoff {
    fn decide(attempt: Attempt) -> SendDecision {
        let base: u32 = sluice_sdk::config::get_or("base_secs", 60);
        let max_delay: u32 = sluice_sdk::config::get_or("max_delay_secs", 3600);
        let max_age: u64 = sluice_sdk::config::get_or("max_age_secs", 5 * 86_400);

        let (reason, relay_problem) = match &attempt.reply {
            Some(r) if (200..300).contains(&r.code) => return SendDecision::Delivered,
            Some(r) if r.code >= 500 => {
                return SendDecision::Fail(describe(r));
            }
            Some(r) => (describe(r), r.code == 421),
            None => (
                attempt
                    .transport_error
                    .clone()
                    .unwrap_or_else(|| "no reply".into()),
                true,
            ),
        };
        if relay_problem && attempt.relays_left > 0 {
            return SendDecision::NextRelay(reason);
        }
        let shift = attempt.attempt.saturating_sub(1).min(20);
        let delay = base.saturating_mul(1 << shift).min(max_delay).max(1);
        if attempt.age_secs.saturating_add(u64::from(delay)) > max_age {
            return SendDecision::Fail(format!(
                "gave up after {} attempts over {}s: {reason}",
                attempt.attempt, attempt.age_secs
            ));
        }
        SendDecision::Retry(Retry {
            after_secs: delay,
            reason,
        })
    }
}

fn describe(reply: &SmtpReply) -> String {
    match &reply.enhanced {
        Some(e) => format!("{} {} {}", reply.code, e, reply.text),
        None => format!("{} {}", reply.code, reply.text),
    }
}

sluice_sdk::export_send_policy!(Backoff);

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_sdk::testing;

    #[test]
    fn delivered_on_2xx_and_failed_on_5xx_with_the_reply() {
        assert_eq!(
            Backoff::decide(testing::attempt(250, "2.0.0", "ok")),
            SendDecision::Delivered
        );
        assert_eq!(
            Backoff::decide(testing::attempt(550, "5.1.1", "no such user")),
            SendDecision::Fail("550 5.1.1 no such user".into())
        );
    }

    #[test]
    fn retry_delay_doubles_up_to_the_cap() {
        let delays: Vec<u32> = (1..=8)
            .map(|n| {
                let mut a = testing::attempt(451, "4.3.0", "later");
                a.attempt = n;
                match Backoff::decide(a) {
                    SendDecision::Retry(r) => r.after_secs,
                    other => panic!("{other:?}"),
                }
            })
            .collect();
        assert_eq!(delays, [60, 120, 240, 480, 960, 1920, 3600, 3600]);
    }

    #[test]
    fn connection_problems_fail_over_while_relays_are_left() {
        let mut a = testing::attempt(250, "", "");
        a.reply = None;
        a.transport_error = Some("connection refused".into());
        a.relays_left = 1;
        assert_eq!(
            Backoff::decide(a.clone()),
            SendDecision::NextRelay("connection refused".into())
        );
        a.relays_left = 0;
        assert!(matches!(Backoff::decide(a), SendDecision::Retry(r) if r.after_secs == 60));
    }

    #[test]
    fn gives_up_past_max_age() {
        testing::set_config(&[("max_age_secs", "100")]);
        let mut a = testing::attempt(451, "", "later");
        a.age_secs = 90;
        assert!(
            matches!(Backoff::decide(a), SendDecision::Fail(f) if f.starts_with("gave up after 1 attempts"))
        );
        testing::set_config(&[]);
    }
}
