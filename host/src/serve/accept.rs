//! Acceptance of a submission, whatever carried it (issue 20's core of `serve`): the
//! one path from a composed message to "durably accepted" that `POST /v1/messages`
//! (`api.rs`) and SMTP submission (`submission.rs`) both take.
//!
//! [`accept_submission`] checks the message against the live `[limits]`, the tenant's
//! accounts and suppressions, runs the ingest plugins (the platform's, then the
//! tenant's), checks the header authors, commits the message and hands its recipients
//! to the dispatcher. It answers with plain types ([`Accepted`], [`AcceptError`]): the
//! HTTP layer turns them into JSON, the SMTP layer into replies.
//!
//! Invariants:
//! - Nothing here knows HTTP or SMTP: no status codes, no replies, no wire types.
//! - `Ok` means committed to the store (durable before the 202 or the final 250).

use super::handoff::NoRoom;
use super::plugins::call;
use super::state::{Server, now_ms};
use super::tenant_live::LiveCall;
use crate::compose::{self, Composed};
use crate::logging::Chain;
use crate::stage::{Header, IngestDecision, Stage, Submission};
use crate::store::{
    ACCOUNT_TAG, EventKind, KeyOwner, KeyScope, MAX_TAG_BYTES, MAX_TAGS, NewEvent, NewMessage,
    RecipientState, StoreError, normalize_address,
};
use std::sync::Arc;

/// Largest body handed to the dispatcher in memory (256 KiB): with the handoff's cap on
/// recipients held (`[delivery.fairness] max_held`, default 1,024), at most 256 MiB of
/// bodies wait in memory; larger messages wait in the store.
const HANDOFF_MAX_BODY_BYTES: usize = 256 << 10;

/// A submission as any transport hands it over: who sends (the key's owner, or the
/// tenant a trusted network stands for), the composed message with its envelope, and
/// what the client asked for beside it.
pub struct NewSubmission {
    pub owner: KeyOwner,
    pub message: Composed,
    /// The client's tags; `account:ID` bills the message to one of the tenant's accounts.
    pub tags: Vec<String>,
    pub idempotency_key: Option<String>,
    /// The transport checked each recipient against the tenant's suppressions moments
    /// before (SMTP at RCPT, each refused one answered there): not asked again. A
    /// suppression added in between is as one added just after the commit.
    pub recipients_checked: bool,
}

/// A recipient left out because the tenant suppressed it.
#[derive(Debug, Clone)]
pub struct SuppressedRecipient {
    pub address: String,
    pub reason: String,
    pub source: String,
    pub since_ms: i64,
}

/// A committed submission.
#[derive(Debug)]
pub struct Accepted {
    /// Sluice's id of the message.
    pub id: String,
    /// The idempotency key matched an earlier message (whose id and Message-ID these are).
    pub duplicate: bool,
    /// The message's `Message-ID` header (`None`: a repeat of a message stored before
    /// the store kept it apart, whose header could not be read).
    pub message_id: Option<String>,
    pub recipients: Vec<(String, RecipientState)>,
    pub suppressed: Vec<SuppressedRecipient>,
}

/// Why a submission was not accepted. Nothing was stored for any of them.
#[derive(Debug, thiserror::Error)]
pub enum AcceptError {
    #[error("this node is shutting down; send to another")]
    ShuttingDown,
    /// A field of the submission is wrong (the `field` names it as the JSON form does).
    #[error("{message}")]
    Invalid { field: String, message: String },
    #[error("the message is {size} bytes; the limit is {limit}")]
    TooLarge { size: u64, limit: u64 },
    /// The key may not do what the submission asks (an account's key naming another
    /// account).
    #[error("{message}")]
    Forbidden { field: String, message: String },
    #[error("every recipient is on the suppression list: {list}")]
    AllSuppressed { list: String },
    /// An ingest plugin rejected it; `field` is `from` for the platform's.
    #[error("{reason}")]
    Rejected {
        reason: String,
        field: Option<&'static str>,
    },
    /// An ingest plugin failed and its policy is to accept nothing: try again.
    #[error("{0}; nothing was accepted, try again")]
    PluginFailed(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

fn invalid(field: impl Into<String>, message: impl Into<String>) -> AcceptError {
    AcceptError::Invalid {
        field: field.into(),
        message: message.into(),
    }
}

/// Tags are searched by (`GET /v1/messages?tag=`) and each kept as a row of the tag
/// index: a message carries at most [`MAX_TAGS`], each at most [`MAX_TAG_BYTES`], so
/// one submission cannot write thousands of index rows.
fn check_tags(tags: &[String]) -> Result<(), AcceptError> {
    if tags.len() > MAX_TAGS {
        return Err(invalid(
            "tags",
            format!("{} tags; at most {MAX_TAGS}", tags.len()),
        ));
    }
    if let Some(long) = tags.iter().find(|t| t.len() > MAX_TAG_BYTES) {
        let shown: String = long.chars().take(40).collect();
        return Err(invalid(
            "tags",
            format!(
                "tag {shown:?}… is {} bytes; at most {MAX_TAG_BYTES}",
                long.len()
            ),
        ));
    }
    Ok(())
}

/// An account's key submits for its account: the submission is billed to it (the tag
/// `account:ID` is added when the submission names none), one naming another account is
/// refused, and its idempotency keys are its own (kept apart from other accounts' and
/// the tenant's, so a repeat finds only this account's message).
pub fn bill_to_key_account(
    owner: &KeyOwner,
    tags: &mut Vec<String>,
    idempotency_key: &mut Option<String>,
) -> Result<(), AcceptError> {
    let KeyScope::Account(account) = &owner.scope else {
        return Ok(());
    };
    if let Some(other) = tags
        .iter()
        .filter_map(|t| t.strip_prefix(ACCOUNT_TAG))
        .find(|named| named != account)
    {
        return Err(AcceptError::Forbidden {
            field: "account".into(),
            message: format!(
                "this key is account {account:?}'s: its mail is billed to {account:?}, it \
                 cannot name account {other:?}"
            ),
        });
    }
    if !tags
        .iter()
        .any(|t| t.strip_prefix(ACCOUNT_TAG) == Some(account))
    {
        tags.push(format!("{ACCOUNT_TAG}{account}"));
    }
    if let Some(key) = idempotency_key.as_mut() {
        *key = format!("{ACCOUNT_TAG}{account}:{key}");
    }
    Ok(())
}

/// Refuses a message whose header `From:` or `Sender:` names a domain outside the
/// tenant's allowed sender domains: the envelope sender is checked by the ingest plugin,
/// but the header is what the reader sees, and a tenant must not send as someone else
/// through it. A tenant's `header_from_check = false` turns this off.
fn check_authors(headers: &[(String, String)], allowed: &[String]) -> Result<(), AcceptError> {
    let authors =
        compose::author_domains(headers).map_err(|e| invalid(e.field.clone(), e.to_string()))?;
    for (field, domain) in authors {
        if !compose::domain_allowed(&domain, allowed) {
            return Err(invalid(
                field.clone(),
                format!(
                    "{field}: domain {domain:?} is not among the tenant's allowed sender domains"
                ),
            ));
        }
    }
    Ok(())
}

/// The domain of the header `From:`'s first address, lower case: what DKIM signs for.
fn from_domain(headers: &[(String, String)]) -> Option<String> {
    compose::author_domains(headers)
        .ok()?
        .into_iter()
        .find(|(field, _)| field.eq_ignore_ascii_case("headers.from"))
        .map(|(_, d)| d)
}

/// At most one account per message ([`ACCOUNT_TAG`]: the `account` field, query
/// parameter or `Sluice-Account` header adds it), and one the tenant has. Account billing
/// takes it before matching logins; the dispatcher's prepaid check too.
async fn check_account(s: &Server, tenant_id: &str, tags: &[String]) -> Result<(), AcceptError> {
    let named: Vec<&str> = tags
        .iter()
        .filter_map(|t| t.strip_prefix(ACCOUNT_TAG))
        .collect();
    match named.as_slice() {
        [] => Ok(()),
        [one] => match s.store.get_account(tenant_id, one).await? {
            Some(_) => Ok(()),
            None => Err(invalid(
                "account",
                format!(
                    "{one:?} is not one of this tenant's accounts (GET /v1/accounts lists them)"
                ),
            )),
        },
        _ => Err(invalid(
            "account",
            format!(
                "a message is billed to one account; it names {}",
                named.len()
            ),
        )),
    }
}

/// Splits a new message's recipients into those to send to and those the tenant has
/// suppressed. All suppressed: [`AcceptError::AllSuppressed`], and nothing is accepted.
async fn filter_suppressed(
    s: &Server,
    tenant: &str,
    recipients: Vec<String>,
) -> Result<(Vec<String>, Vec<SuppressedRecipient>), AcceptError> {
    let found = s.store.suppressed_among(tenant, &recipients).await?;
    if found.is_empty() {
        return Ok((recipients, Vec::new()));
    }
    let (mut keep, mut refused) = (Vec::new(), Vec::new());
    for r in recipients {
        match found.get(&normalize_address(&r)) {
            Some(sup) => refused.push(SuppressedRecipient {
                address: r,
                reason: sup.reason.clone(),
                source: sup.source.clone(),
                since_ms: sup.created_at_ms,
            }),
            None => keep.push(r),
        }
    }
    if keep.is_empty() {
        let list: Vec<String> = refused
            .iter()
            .map(|r| format!("{} ({})", r.address, r.reason))
            .collect();
        return Err(AcceptError::AllSuppressed {
            list: list.join(", "),
        });
    }
    Ok((keep, refused))
}

/// The distinct domains of some addresses, comma-separated, at most 10 named: what a
/// log line says of recipients (never their full addresses).
pub(super) fn recipient_domains<'a>(addresses: impl Iterator<Item = &'a str>) -> String {
    let mut domains: Vec<&str> = Vec::new();
    let mut more = 0usize;
    for a in addresses {
        let d = a.rsplit_once('@').map_or("", |(_, d)| d);
        if domains.contains(&d) {
            continue;
        }
        if domains.len() < 10 {
            domains.push(d);
        } else {
            more += 1;
        }
    }
    let mut out = domains.join(",");
    if more > 0 {
        out.push_str(&format!(",+{more} more"));
    }
    out
}

/// Accepts one submission: checks, ingest plugins, commit, hand-off (see the module
/// doc). `Ok` only once the message is committed.
pub async fn accept_submission(s: &Server, sub: NewSubmission) -> Result<Accepted, AcceptError> {
    if s.is_shutting_down() {
        return Err(AcceptError::ShuttingDown);
    }
    let NewSubmission {
        owner,
        message: mut composed,
        mut tags,
        mut idempotency_key,
        recipients_checked,
    } = sub;
    // `[limits]` as they are now: a SIGHUP reload may have changed them.
    let limits = s.limits.get();
    // An account's key sends for its account only (`auth.rs`).
    bill_to_key_account(&owner, &mut tags, &mut idempotency_key)?;
    check_tags(&tags)?;
    let tenant = owner.tenant;
    check_account(s, &tenant.id, &tags).await?;
    if composed.body.len() as u64 > limits.max_message_bytes {
        return Err(AcceptError::TooLarge {
            size: composed.body.len() as u64,
            limit: limits.max_message_bytes,
        });
    }
    if composed.recipients.len() > limits.max_recipients as usize {
        return Err(invalid(
            "to",
            format!(
                "{} recipients; the limit is {}",
                composed.recipients.len(),
                limits.max_recipients
            ),
        ));
    }
    // Suppressed recipients are left out here, each with its reason (all: refused).
    let suppressed = if recipients_checked {
        Vec::new()
    } else {
        let (kept, suppressed) =
            filter_suppressed(s, &tenant.id, std::mem::take(&mut composed.recipients)).await?;
        composed.recipients = kept;
        suppressed
    };

    let submission = Submission {
        tenant: tenant.id.clone(),
        sender: composed.sender.clone(),
        recipients: composed.recipients.clone(),
        headers: composed
            .headers
            .iter()
            .map(|(n, v)| Header {
                name: n.clone(),
                value: v.clone(),
            })
            .collect(),
        size: composed.body.len() as u64,
        tags: tags.clone(),
        allowed_sender_domains: tenant.allowed_sender_domains.clone(),
        received_at_ms: now_ms(),
    };
    // The platform's ingest plugin decides first: its rules (sender domains, sizes) hold
    // for every tenant, and a tenant's plugin cannot undo a platform rejection. Then the
    // tenant's own, if it has a live one, sees the submission with the platform's added
    // headers and may reject or add more. If the tenant's fails, its policy decides: the
    // platform's decision stands (`fallback`; the failure is recorded on the accepted
    // message) or nothing is accepted and the client is told to try again (`defer`).
    let platform_submission = submission.clone();
    let decision = call(s.plugins.stage(Stage::Ingest), move |p| {
        p.ingest(&platform_submission)
    })
    .await
    .map_err(|e| AcceptError::PluginFailed(format!("the ingest plugin failed ({e})")))?;
    let (mut body, mut tags) = (composed.body, tags);
    let mut add_headers = Vec::new();
    let mut tenant_failure = None;
    match decision {
        IngestDecision::Reject(r) => {
            return Err(AcceptError::Rejected {
                reason: r.reason,
                field: Some("from"),
            });
        }
        IngestDecision::Accept(a) => {
            let mut submission = submission;
            submission.headers.extend(a.add_headers.iter().cloned());
            add_headers.extend(a.add_headers);
            tags.extend(a.add_tags);
            let tenant_call = s
                .plugins
                .tenants
                .call_live(&s.store, &tenant.id, Stage::Ingest, move |p| {
                    p.ingest(&submission)
                })
                .await;
            match tenant_call {
                LiveCall::NoPlugin => {}
                LiveCall::Closed(why) => return Err(AcceptError::PluginFailed(why)),
                LiveCall::Done(Ok(IngestDecision::Reject(r))) => {
                    return Err(AcceptError::Rejected {
                        reason: r.reason,
                        field: None,
                    });
                }
                LiveCall::Done(Ok(IngestDecision::Accept(a))) => {
                    add_headers.extend(a.add_headers);
                    tags.extend(a.add_tags);
                }
                LiveCall::Done(Err(f)) if f.closed => {
                    return Err(AcceptError::PluginFailed(f.closed_reason()));
                }
                LiveCall::Done(Err(f)) => {
                    tracing::warn!(tenant = %tenant.id, error = %f.error, "tenant ingest plugin failed; the platform's decision stands");
                    tenant_failure = Some(f);
                }
            }
        }
    }
    // After the ingest plugins, so that a sender they refuse is refused with their
    // reason (for the JSON form the header `From:` is the envelope sender).
    if tenant.header_from_check {
        check_authors(&composed.headers, &tenant.allowed_sender_domains)?;
    }
    if !add_headers.is_empty() {
        let mut prefix = Vec::new();
        for h in add_headers {
            prefix.extend_from_slice(format!("{}: {}\r\n", h.name, h.value).as_bytes());
        }
        // One allocation of the final size; the unprefixed body is freed at once.
        let mut prefixed = Vec::with_capacity(prefix.len() + body.len());
        prefixed.extend_from_slice(&prefix);
        prefixed.extend_from_slice(&body);
        body = prefixed;
    }
    // DKIM last, over the message as it is stored and sent (`dkim_sign.rs` says why
    // once, here). The relay client sends CRLF line ends: the body is stored with them.
    let fixed = match crate::wire::crlf(&body) {
        std::borrow::Cow::Owned(fixed) => Some(fixed),
        std::borrow::Cow::Borrowed(_) => None,
    };
    let mut body = fixed.unwrap_or(body);
    if let Some(domain) = from_domain(&composed.headers) {
        let (signed_body, signed) = s
            .dkim
            .sign(&s.store, &tenant.id, &domain, body)
            .await
            .map_err(|e| match e {
                super::dkim_sign::SignFailure::Store(e) => AcceptError::Store(e),
                other => {
                    tracing::error!(tenant = %tenant.id, error = %Chain(&other), "a message could not be DKIM-signed");
                    AcceptError::PluginFailed(other.to_string())
                }
            })?;
        body = signed_body;
        if let Some(sig) = signed {
            let mut prefixed = Vec::with_capacity(sig.header.len() + body.len());
            prefixed.extend_from_slice(sig.header.as_bytes());
            prefixed.extend_from_slice(&body);
            body = prefixed;
        }
    }
    let message = NewMessage {
        tenant_id: tenant.id.clone(),
        idempotency_key,
        sender: composed.sender,
        recipients: composed.recipients,
        body: Arc::new(body),
        tags,
        max_age_secs: s
            .pipeline
            .delivery
            .max_age
            .as_secs()
            .min(u64::from(u32::MAX)) as u32,
        header_message_id: Some(composed.message_id.clone()),
    };
    // With room at the dispatcher, the recipients are accepted leased to this host and
    // handed over in memory (`handoff.rs`); otherwise the dispatcher leases them later.
    // Large bodies are not held in memory while they wait: they are read from the store
    // when sent, so what the handoff holds is bounded in bytes, not only in recipients.
    let room = if message.body.len() <= HANDOFF_MAX_BODY_BYTES {
        s.handoff
            .reserve(&tenant.id, message.recipients.len())
            .map_err(Some)
    } else {
        Err(None)
    };
    let accepted = match room {
        Ok(room) => {
            // The dispatcher shares the stored bytes: no second copy of the message.
            let body = message.body.clone();
            let lease_ms = s.pipeline.delivery.lease.as_millis() as i64;
            let mut accepted = s
                .store
                .accept_leased(message, now_ms(), &s.node.id, lease_ms)
                .await?;
            room.send(std::mem::take(&mut accepted.leases), body);
            accepted
        }
        Err(no_room) => {
            let accepted = s.store.accept(message, now_ms()).await?;
            // A tenant at its own cap is not woken for: a look now would leave its work
            // out all the same, after reading past all of it (its backlog, on the
            // store's one writer, once per submission of a flooding tenant). The
            // dispatcher looks when one of its groups finishes (`handoff.rs`).
            if no_room != Some(NoRoom::Tenant) {
                s.wake.notify_one();
            }
            accepted
        }
    };
    if !accepted.duplicate {
        let n = accepted.recipients.len() as u64;
        let m = crate::metrics::get();
        let labels = m.tenant(&tenant.id);
        m.accepted_messages.get_or_create(&labels).inc();
        m.accepted_recipients.get_or_create(&labels).inc_by(n);
        if tracing::enabled!(tracing::Level::INFO) {
            tracing::info!(
                message_id = %accepted.id,
                tenant = %tenant.id,
                recipients = n,
                domains = %recipient_domains(accepted.recipients.iter().map(|(a, _)| a.as_str())),
                "accepted"
            );
        }
    }
    if let Some(f) = tenant_failure.filter(|_| !accepted.duplicate) {
        let event = NewEvent {
            message_id: accepted.id.clone(),
            recipient_idx: None,
            tenant_id: tenant.id.clone(),
            kind: EventKind::PluginError,
            relay: None,
            detail: f.detail(Stage::Ingest),
            at_ms: now_ms(),
        };
        if let Err(e) = s.store.append_events(vec![event]).await {
            tracing::error!(error = %Chain(&e), "cannot record a plugin_error event");
        }
    }
    // A repeat is answered with the first submission's Message-ID, not the one just
    // made for the repeat (which was never stored).
    let message_id = match (accepted.duplicate, accepted.header_message_id.clone()) {
        (false, _) => Some(composed.message_id),
        (true, Some(stored)) => Some(stored),
        (true, None) => stored_message_id(s, &accepted.id).await,
    };
    Ok(Accepted {
        id: accepted.id,
        duplicate: accepted.duplicate,
        message_id,
        recipients: accepted.recipients,
        suppressed,
    })
}

/// The `Message-ID` in a stored message's header: for a message stored before the
/// store kept it apart (migration 0017). `None` if it cannot be read.
async fn stored_message_id(s: &Server, id: &str) -> Option<String> {
    let body = s
        .store
        .message_body(id)
        .await
        .map_err(|e| tracing::warn!(message_id = %id, error = %Chain(&e), "cannot read a repeated message's header"))
        .ok()?;
    let (headers, _) = compose::parse_header_section(&body).ok()?;
    headers
        .into_iter()
        .find(|(name, _)| name.eq_ignore_ascii_case("message-id"))
        .map(|(_, value)| value.trim().to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Tenant;

    fn owner(scope: KeyScope) -> KeyOwner {
        KeyOwner {
            tenant: Tenant {
                id: "t".into(),
                name: "t".into(),
                allowed_sender_domains: Vec::new(),
                pools: Vec::new(),
                route_plugin: None,
                header_from_check: true,
                created_at_ms: 0,
            },
            scope,
            key_id: "k".into(),
        }
    }

    #[test]
    fn an_account_keys_submission_is_billed_to_its_account() {
        let a = owner(KeyScope::Account("shop".into()));
        let (mut tags, mut key) = (vec!["x".to_string()], Some("k1".to_string()));
        bill_to_key_account(&a, &mut tags, &mut key).unwrap();
        assert_eq!(tags, ["x", "account:shop"]);
        assert_eq!(key.as_deref(), Some("account:shop:k1"));
        let mut tags = vec!["account:shop".to_string()];
        bill_to_key_account(&a, &mut tags, &mut None).unwrap();
        assert_eq!(tags, ["account:shop"]);
        let mut tags = vec!["account:shop".to_string(), "account:boss".to_string()];
        let e = bill_to_key_account(&a, &mut tags, &mut None).unwrap_err();
        assert!(
            matches!(&e, AcceptError::Forbidden { field, .. } if field == "account"),
            "{e:?}"
        );
        let t = owner(KeyScope::Tenant);
        let (mut tags, mut key) = (vec!["account:boss".to_string()], Some("k".to_string()));
        bill_to_key_account(&t, &mut tags, &mut key).unwrap();
        assert_eq!((tags.len(), key.as_deref()), (1, Some("k")));
    }
}
