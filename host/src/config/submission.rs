//! `[submission]`: SMTP submission listeners (STARTTLS and implicit TLS, AUTH by API
//! key), their limits and the trusted networks that may send without AUTH. The
//! certificate and key files are read by [`super::resolve`], at start, by `pipeline
//! check` and on every SIGHUP.

use super::check::{Check, Count, bounded};
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;
use toml::Spanned;

/// SMTP submission (`[submission]`, `serve/submission.rs`): applications send mail over
/// SMTP with STARTTLS (`listen`) or implicit TLS (`listen_tls`) and AUTH with an API key;
/// what they send goes through the same acceptance as `POST /v1/messages`. Message size
/// and recipients per message are `[limits]`'.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubmissionConfig {
    /// Listeners offering STARTTLS (`listen`, none by default: submission is off).
    pub listen: Vec<SocketAddr>,
    /// Listeners speaking TLS from the first byte (`listen_tls`, none by default).
    pub listen_tls: Vec<SocketAddr>,
    /// The certificate chain and key (`tls_cert_file`, `tls_key_file`; PEM), read at
    /// start and on every SIGHUP. Required with any listener.
    pub tls_cert_file: Option<PathBuf>,
    pub tls_key_file: Option<PathBuf>,
    /// The name in the greeting and the EHLO reply (`hostname`, `delivery.helo_name`).
    pub hostname: String,
    /// Sessions at once over all listeners (`max_connections`, 256); more are told 421.
    pub max_connections: u32,
    /// Sessions at once from one address, IPv6 by /64 (`max_connections_per_ip`, 32).
    pub max_connections_per_ip: u32,
    /// How long to wait for a command line (`command_timeout_secs`, 300).
    pub command_timeout: Duration,
    /// How long the whole DATA phase may take (`data_timeout_secs`, 600).
    pub data_timeout: Duration,
    /// The longest one session may last (`max_session_secs`, 3600).
    pub max_session: Duration,
    /// NOOP, RSET, EHLO/HELO, VRFY and HELP since the last message before 421
    /// (`max_unproductive_commands`, 20).
    pub max_unproductive_commands: u32,
    /// Bad commands (failed AUTH included) in one session before 421 (`max_errors`, 10).
    pub max_errors: u32,
    /// Failed AUTH from one address (IPv6 by /64) within `auth_failure_window_secs` (300)
    /// before its AUTH is answered 421, after `auth_failure_delay_ms` (2000), until the
    /// window has passed (`max_auth_failures_per_ip`, 5).
    pub max_auth_failures_per_ip: u32,
    pub auth_failure_window: Duration,
    pub auth_failure_delay: Duration,
    /// Networks whose clients send as a tenant without AUTH (`[submission.trusted_networks]`,
    /// tenant id = list of networks; none by default), as an MTA's `mynetworks`.
    pub trusted_networks: Vec<(String, crate::metrics::Network)>,
}

impl SubmissionConfig {
    /// Whether any listener is configured.
    pub fn enabled(&self) -> bool {
        !self.listen.is_empty() || !self.listen_tls.is_empty()
    }
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSubmission {
    #[serde(default)]
    listen: Vec<Spanned<String>>,
    #[serde(default)]
    listen_tls: Vec<Spanned<String>>,
    tls_cert_file: Option<Spanned<PathBuf>>,
    tls_key_file: Option<Spanned<PathBuf>>,
    hostname: Option<String>,
    max_connections: Count,
    max_connections_per_ip: Count,
    command_timeout_secs: Count,
    data_timeout_secs: Count,
    max_session_secs: Count,
    max_unproductive_commands: Count,
    max_errors: Count,
    max_auth_failures_per_ip: Count,
    auth_failure_window_secs: Count,
    auth_failure_delay_ms: Option<Spanned<u64>>,
    #[serde(default)]
    trusted_networks: std::collections::BTreeMap<String, Vec<Spanned<String>>>,
}

impl RawSubmission {
    /// `[submission]`; the certificate files are read by `resolve.rs`, not here.
    pub(super) fn validate(self, check: &mut Check, helo_name: &str) -> SubmissionConfig {
        let mut addrs = |key: &str, raw: Vec<Spanned<String>>| -> Vec<SocketAddr> {
            let mut out = Vec::new();
            for v in raw {
                match v.get_ref().parse::<SocketAddr>() {
                    Ok(a) => out.push(a),
                    Err(_) => check.at(
                        v.span(),
                        format!("submission.{key}"),
                        format!("{:?} is not an address like 127.0.0.1:587", v.get_ref()),
                    ),
                }
            }
            out
        };
        let listen = addrs("listen", self.listen);
        let listen_tls = addrs("listen_tls", self.listen_tls);
        let cert = self.tls_cert_file.map(Spanned::into_inner);
        let key = self.tls_key_file.map(Spanned::into_inner);
        if (!listen.is_empty() || !listen_tls.is_empty()) && (cert.is_none() || key.is_none()) {
            check.at(
                0..0,
                "submission.tls_cert_file",
                "submission takes AUTH only over TLS: set tls_cert_file and tls_key_file",
            );
        }
        let mut n = |key: &str, raw, default, max| {
            bounded(check, format!("submission.{key}"), raw, default, max)
        };
        let secs = Duration::from_secs;
        let out_max_connections = n("max_connections", self.max_connections, 256, 100_000) as u32;
        let max_connections_per_ip = n(
            "max_connections_per_ip",
            self.max_connections_per_ip,
            32,
            100_000,
        ) as u32;
        let command_timeout = secs(n(
            "command_timeout_secs",
            self.command_timeout_secs,
            300,
            3600,
        ));
        let data_timeout = secs(n("data_timeout_secs", self.data_timeout_secs, 600, 3600));
        let max_session = secs(n("max_session_secs", self.max_session_secs, 3600, 86_400));
        let max_unproductive_commands = n(
            "max_unproductive_commands",
            self.max_unproductive_commands,
            20,
            10_000,
        ) as u32;
        let max_errors = n("max_errors", self.max_errors, 10, 1000) as u32;
        let max_auth_failures_per_ip = n(
            "max_auth_failures_per_ip",
            self.max_auth_failures_per_ip,
            5,
            10_000,
        ) as u32;
        let auth_failure_window = secs(n(
            "auth_failure_window_secs",
            self.auth_failure_window_secs,
            300,
            86_400,
        ));
        let auth_failure_delay = match self.auth_failure_delay_ms {
            Some(v) if *v.get_ref() > 60_000 => {
                check.at(
                    v.span(),
                    "submission.auth_failure_delay_ms",
                    "must be between 0 and 60000",
                );
                Duration::from_millis(2000)
            }
            Some(v) => Duration::from_millis(v.into_inner()),
            None => Duration::from_millis(2000),
        };
        let mut trusted_networks = Vec::new();
        for (tenant, nets) in self.trusted_networks {
            for v in nets {
                match v.get_ref().parse() {
                    Ok(net) => trusted_networks.push((tenant.clone(), net)),
                    Err(e) => {
                        check.at(v.span(), format!("submission.trusted_networks.{tenant}"), e)
                    }
                }
            }
        }
        SubmissionConfig {
            listen,
            listen_tls,
            tls_cert_file: cert,
            tls_key_file: key,
            hostname: self.hostname.unwrap_or_else(|| helo_name.to_owned()),
            max_connections: out_max_connections,
            max_connections_per_ip,
            command_timeout,
            data_timeout,
            max_session,
            max_unproductive_commands,
            max_errors,
            max_auth_failures_per_ip,
            auth_failure_window,
            auth_failure_delay,
            trusted_networks,
        }
    }
}
