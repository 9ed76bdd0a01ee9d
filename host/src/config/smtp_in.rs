//! `[smtp_in]`: the SMTP listener that takes in bounces.

use super::check::Check;
use super::delivery::Delivery;
use serde::Deserialize;
use std::net::SocketAddr;
use std::time::Duration;
use toml::Spanned;

/// The SMTP listener that takes in bounces (`[smtp_in]`).
#[derive(Debug, Clone)]
pub struct SmtpIn {
    /// Where it listens; `None` (the default) turns it off.
    pub listen: Option<SocketAddr>,
    /// The name in the greeting and the EHLO reply.
    pub hostname: String,
    /// Advertised as `SIZE` and enforced while reading DATA.
    pub max_message_bytes: u64,
    /// Most `RCPT TO` per transaction.
    pub max_recipients: u32,
    /// How long to wait for a command line.
    pub command_timeout: Duration,
    /// How long the whole DATA phase may take.
    pub data_timeout: Duration,
    /// Most connections served at once; more are told 421.
    pub max_connections: u32,
    /// Most connections from one client address (IPv6: one /64) at once; more are
    /// told 421, so one client cannot take every connection.
    pub max_connections_per_ip: u32,
    /// The longest one session may last; then it is told 421 and closed.
    pub max_session: Duration,
    /// NOOP, RSET, EHLO/HELO, VRFY and HELP a session may send since its last
    /// message before it is told 421 and closed.
    pub max_unproductive_commands: u32,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSmtpIn {
    #[serde(default)]
    listen: Option<Spanned<String>>,
    #[serde(default)]
    hostname: Option<String>,
    #[serde(default = "default_smtp_in_max_message_bytes")]
    max_message_bytes: u64,
    #[serde(default = "default_smtp_in_max_recipients")]
    max_recipients: u32,
    #[serde(default = "default_smtp_in_command_timeout")]
    command_timeout_secs: u64,
    #[serde(default = "default_smtp_in_data_timeout")]
    data_timeout_secs: u64,
    #[serde(default = "default_smtp_in_max_connections")]
    max_connections: u32,
    #[serde(default = "default_smtp_in_max_connections_per_ip")]
    max_connections_per_ip: u32,
    #[serde(default = "default_smtp_in_max_session_secs")]
    max_session_secs: u64,
    #[serde(default = "default_smtp_in_max_unproductive_commands")]
    max_unproductive_commands: u32,
}

impl Default for RawSmtpIn {
    fn default() -> Self {
        toml::from_str("").expect("every smtp_in key has a default")
    }
}

fn default_smtp_in_max_message_bytes() -> u64 {
    10 << 20
}
fn default_smtp_in_max_recipients() -> u32 {
    100
}
fn default_smtp_in_command_timeout() -> u64 {
    300
}
fn default_smtp_in_data_timeout() -> u64 {
    600
}
fn default_smtp_in_max_connections() -> u32 {
    64
}
/// An eighth of the listener: a relay sending many bounces at once still gets several.
fn default_smtp_in_max_connections_per_ip() -> u32 {
    8
}
/// Room for the longest DATA phase (`data_timeout_secs`) and a few transactions.
fn default_smtp_in_max_session_secs() -> u64 {
    1200
}
/// A client that greets, resets or NOOPs more than this between messages is idling.
fn default_smtp_in_max_unproductive_commands() -> u32 {
    20
}

impl RawSmtpIn {
    /// `[smtp_in]`; it takes bounces for `delivery.bounce_domain`, so needs one.
    pub(super) fn validate(self, check: &mut Check, delivery: &Delivery) -> SmtpIn {
        let si = self;
        let smtp_listen = si
            .listen
            .and_then(|l| match l.get_ref().parse::<SocketAddr>() {
                Ok(a) => Some(a),
                Err(_) => {
                    let v = l.get_ref().clone();
                    check.at(
                        l.span(),
                        "smtp_in.listen",
                        format!("{v:?} is not an address like 127.0.0.1:2526"),
                    );
                    None
                }
            });
        if smtp_listen.is_some() && delivery.bounce_domain.is_none() {
            check.at(
                0..0,
                "smtp_in.listen",
                "the SMTP listener takes bounces for delivery.bounce_domain: set it too",
            );
        }
        SmtpIn {
            listen: smtp_listen,
            hostname: si.hostname.unwrap_or_else(|| delivery.helo_name.clone()),
            max_message_bytes: si.max_message_bytes.max(1024),
            max_recipients: si.max_recipients.max(1),
            command_timeout: Duration::from_secs(si.command_timeout_secs.max(1)),
            data_timeout: Duration::from_secs(si.data_timeout_secs.max(1)),
            max_connections: si.max_connections.max(1),
            max_connections_per_ip: si.max_connections_per_ip.max(1),
            max_session: Duration::from_secs(si.max_session_secs.max(1)),
            max_unproductive_commands: si.max_unproductive_commands.max(1),
        }
    }
}
