//! The pipeline file's validation: the raw file, section by section (one module each),
//! into a [`Pipeline`]. Pure: it reads no file and no environment variable (`resolve.rs`
//! does, after it, for `serve` and `sluice pipeline check` alike), so what it says of a
//! file depends on the file alone. Every error is collected before the answer.

use super::Pipeline;
use super::admission::RawAdmission;
use super::check::Check;
use super::delivery::RawDelivery;
use super::dkim::RawDkim;
use super::error::ConfigErrors;
use super::events::RawEvents;
use super::log_sources::{self, RawLogSource};
use super::metrics::RawMetrics;
use super::plugins::{DEFAULT_MAX_UPLOAD_BYTES, RawPlugins};
use super::relays::{self, RawRelay};
use super::server::{Limits, RawAdmin, RawLimits, RawServer, RawStore};
use super::smtp_in::RawSmtpIn;
use super::submission::RawSubmission;
use super::tenants::{self, RawTenant};
use super::webhooks::RawWebhooks;
use serde::Deserialize;

/// The file as serde reads it: unknown keys are errors, values keep their spans.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawPipeline {
    #[serde(default)]
    server: RawServer,
    #[serde(default)]
    store: RawStore,
    #[serde(default)]
    admin: RawAdmin,
    #[serde(default)]
    limits: RawLimits,
    #[serde(default)]
    delivery: RawDelivery,
    #[serde(default)]
    plugins: RawPlugins,
    #[serde(default)]
    relay: Vec<RawRelay>,
    #[serde(default)]
    tenant: Vec<RawTenant>,
    #[serde(default)]
    smtp_in: RawSmtpIn,
    #[serde(default)]
    submission: RawSubmission,
    #[serde(default)]
    log_source: Vec<RawLogSource>,
    #[serde(default)]
    admission: RawAdmission,
    #[serde(default)]
    events: RawEvents,
    #[serde(default)]
    metrics: RawMetrics,
    #[serde(default)]
    webhooks: RawWebhooks,
    #[serde(default)]
    dkim: RawDkim,
}

impl RawPipeline {
    /// Checks every section, and what one section says of another (a relay's owner is a
    /// tenant of the file, the request budget holds the largest request, the SMTP
    /// listener has a bounce domain).
    pub(super) fn validate(self, text: &str, origin: &str) -> Result<Pipeline, ConfigErrors> {
        let mut check = Check {
            text,
            origin,
            errors: Vec::new(),
        };
        let check = &mut check;
        let admission = self.admission.validate(check);
        let events = self.events.validate(check);
        let metrics = self.metrics.validate(check);
        let webhooks = self.webhooks.validate(check);
        let dkim = self.dkim.validate(check);
        let largest_body = Limits {
            max_message_bytes: self.limits.max_message_bytes,
            max_recipients: self.limits.max_recipients,
        }
        .max_submission_body_bytes()
        .max(
            self.plugins
                .max_upload_bytes
                .unwrap_or(DEFAULT_MAX_UPLOAD_BYTES),
        );
        let server = self.server.validate(check, largest_body);
        let store = self.store.validate(check);
        let admin = self.admin.validate(check);
        let limits = self.limits.validate(check);
        let delivery = self.delivery.validate(check);
        let smtp_in = self.smtp_in.validate(check, &delivery);
        let submission = self.submission.validate(check, &delivery.helo_name);
        let log_sources = log_sources::validate(self.log_source, check);
        let plugins = self.plugins.validate(check);
        let relays = relays::validate(self.relay, check, &tenants::ids(&self.tenant));
        let tenants = tenants::validate(self.tenant, check);

        if !check.errors.is_empty() {
            return Err(ConfigErrors(std::mem::take(&mut check.errors)));
        }
        Ok(Pipeline {
            server,
            store,
            admin,
            limits,
            delivery,
            plugins,
            relays,
            tenants,
            smtp_in,
            submission,
            log_sources,
            admission,
            events,
            metrics,
            webhooks,
            dkim,
        })
    }
}
