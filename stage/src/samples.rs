//! One realistic input per stage: what `sluice plugin check` smoke-runs a
//! plugin with, and what `sluice plugin run --sample` prints.

use super::*;

const NOW_MS: i64 = 1_767_225_600_000;

pub fn submission() -> Submission {
    Submission {
        tenant: "acme".into(),
        sender: "news@acme.example".into(),
        recipients: vec!["ann@example.org".into(), "bob@example.net".into()],
        headers: vec![
            Header {
                name: "From".into(),
                value: "Acme News <news@acme.example>".into(),
            },
            Header {
                name: "Subject".into(),
                value: "Your November statement".into(),
            },
        ],
        size: 14_200,
        tags: vec!["statements".into()],
        allowed_sender_domains: vec!["acme.example".into()],
        received_at_ms: NOW_MS,
    }
}

fn window(window_secs: u32, sent: u64, delivered: u64, deferred: u64) -> RelayWindow {
    RelayWindow {
        window_secs,
        sent,
        delivered,
        deferred,
        mean_latency_ms: 180,
        ..RelayWindow::default()
    }
}

pub fn route_input() -> RouteInput {
    let relay = |id: &str, weight, in_flight, sent, delivered| Relay {
        id: id.into(),
        weight,
        tags: vec!["pool:platform".into()],
        owner: None,
        in_flight,
        connection_limit: 20,
        up: true,
        windows: vec![
            window(60, sent / 60, delivered / 60, 0),
            window(900, sent / 4, delivered / 4, 3),
            window(3600, sent, delivered, 12),
        ],
    };
    RouteInput {
        message: MessageSummary {
            id: "01JD3Q5Z8X".into(),
            tenant: "acme".into(),
            sender: "news@acme.example".into(),
            recipient_domains: vec!["example.org".into()],
            recipient_count: 1,
            size: 14_200,
            tags: vec!["statements".into()],
            attempt: 1,
            age_secs: 2,
        },
        relays: vec![
            relay("mx-a", 100, 4, 12_000, 11_880),
            relay("mx-b", 50, 1, 6_000, 5_700),
        ],
        now_ms: NOW_MS,
    }
}

pub fn attempt() -> Attempt {
    Attempt {
        message_id: "01JD3Q5Z8X".into(),
        tenant: "acme".into(),
        recipient: "ann@example.org".into(),
        relay: "mx-a".into(),
        reply: Some(SmtpReply {
            code: 451,
            enhanced: Some("4.7.1".into()),
            text: "Greylisted, try again in 5 minutes".into(),
        }),
        transport_error: None,
        attempt: 1,
        age_secs: 3,
        relays_left: 1,
    }
}

pub fn bounce_input() -> BounceInput {
    let email = "From: MAILER-DAEMON@mx.example.org\r\nTo: bounces+t0k3n@bounce.acme.example\r\nSubject: Undelivered Mail Returned to Sender\r\nMIME-Version: 1.0\r\nContent-Type: multipart/report; report-type=delivery-status; boundary=\"b\"\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\nYour message could not be delivered.\r\n--b\r\nContent-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; mx.example.org\r\n\r\nFinal-Recipient: rfc822; ann@example.org\r\nAction: failed\r\nStatus: 5.1.1\r\nDiagnostic-Code: smtp; 550 5.1.1 <ann@example.org>: Recipient address rejected: User unknown\r\n--b--\r\n";
    BounceInput::Email(email.as_bytes().to_vec())
}

/// The tariff the default rater's smoke run uses.
pub const TARIFF: &str = r#"id = "sample"
currency = "EUR"
minor_units = 2

[[service]]
name = "outbound-message"
unit = "message"
direction = "outbound"
mode = "graduated"
tier = [{ up_to = 1000, price = "0" }, { up_to = 100000, price = "0.0008" }, { price = "0.0005" }]

[[service]]
name = "outbound-traffic"
unit = "kib"
direction = "outbound"
price = "0.00001"
"#;

pub fn bill_input() -> BillInput {
    let event = |i: u32| UsageEvent {
        key: format!("01JD3Q5Z8X/rcpt{i}/delivered"),
        tenant: "acme".into(),
        message_id: "01JD3Q5Z8X".into(),
        recipient: format!("user{i}@example.org"),
        outcome: Outcome::Delivered,
        direction: Direction::Outbound,
        size: 14_200,
        relay: Some("mx-a".into()),
        at_ms: NOW_MS,
    };
    BillInput {
        tariff: TARIFF.into(),
        period_start_ms: NOW_MS - 20 * 86_400_000,
        period_to_date: vec![Counter {
            service: "outbound-message".into(),
            quantity: 999,
        }],
        events: (0..3).map(event).collect(),
    }
}
