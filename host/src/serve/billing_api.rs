//! Billing over HTTP: a tenant's usage, invoices and balance (`/v1/…`), and the
//! operator's tenant billing settings, credits and unrated listing (`/admin/v1/…`).
//! Every tenant read is scoped by the key's tenant: another tenant's charges are not
//! there to find.

use super::auth::{Admin, AuthTenant};
use super::billing::{TenantBilling, rate, settings};
use super::error::ApiError;
use super::state::AppState;
use super::state::now_ms;
use crate::billing::{self, Invoice, TariffInfo};
use crate::stage::BillInput;
use crate::store::BalanceMode;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;
use std::collections::HashMap;

/// Largest page of `GET /v1/usage`.
const MAX_PAGE: u32 = 1000;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/usage", get(usage))
        .route("/v1/invoices/{period}", get(invoice))
        .route("/v1/balance", get(balance))
        .route("/admin/v1/billing/unrated", get(unrated))
        .route(
            "/admin/v1/tenants/{id}/billing",
            get(get_billing).put(put_billing),
        )
        .route("/admin/v1/tenants/{id}/credits", post(credit))
}

fn query_u(q: &HashMap<String, String>, field: &str) -> Result<Option<u64>, ApiError> {
    q.get(field)
        .map(|v| {
            v.parse::<u64>().map_err(|_| {
                ApiError::invalid(
                    field,
                    format!("{field} {v:?} is not a non-negative integer"),
                )
            })
        })
        .transpose()
}

fn query_time(q: &HashMap<String, String>, field: &str) -> Result<Option<i64>, ApiError> {
    q.get(field)
        .map(|v| {
            billing::parse_time(v).map_err(|e| ApiError::invalid(field, format!("{field}: {e}")))
        })
        .transpose()
}

/// The page of a usage listing: `from`, `to`, `limit` and `after` (nothing else),
/// checked; `(from_ms, to_ms, limit, after_seq)`.
pub(super) fn page_query(q: &HashMap<String, String>) -> Result<(i64, i64, u32, i64), ApiError> {
    if let Some(bad) = q
        .keys()
        .find(|k| !matches!(k.as_str(), "from" | "to" | "limit" | "after"))
    {
        return Err(ApiError::invalid(
            bad.clone(),
            format!("unknown query parameter {bad:?} (from, to, limit, after)"),
        ));
    }
    let from = query_time(q, "from")?.unwrap_or(0);
    let to = query_time(q, "to")?.unwrap_or(i64::MAX);
    if to <= from {
        return Err(ApiError::invalid("to", "`to` must be after `from`"));
    }
    let limit = match query_u(q, "limit")? {
        None => 100,
        Some(n) if (1..=u64::from(MAX_PAGE)).contains(&n) => n as u32,
        Some(n) => {
            return Err(ApiError::invalid(
                "limit",
                format!("limit {n} is not between 1 and {MAX_PAGE}"),
            ));
        }
    };
    let after = query_u(q, "after")?.unwrap_or(0);
    let after = i64::try_from(after)
        .map_err(|_| ApiError::invalid("after", format!("after {after} is too large")))?;
    Ok((from, to, limit, after))
}

/// `GET /v1/usage?from=&to=&limit=&after=`: the tenant's ledger rows whose usage time
/// is in `[from, to)`, oldest first; `next_after` is the cursor of the next page.
async fn usage(
    State(s): State<AppState>,
    AuthTenant(t): AuthTenant,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let (from, to, limit, after) = page_query(&q)?;
    let rows = s.store.list_charges(&t.id, from, to, after, limit).await?;
    let next = (rows.len() == limit as usize)
        .then(|| rows.last().map(|r| r.seq))
        .flatten();
    let charges: Vec<serde_json::Value> = rows
        .into_iter()
        .map(|r| {
            json!({
                "seq": r.seq,
                "message_id": r.message_id,
                "recipient": r.recipient,
                "outcome": r.outcome,
                "service": r.service,
                "quantity": r.quantity,
                "unit_price": r.unit_price,
                "amount_micros": r.amount_micros,
                "amount": billing::format_micros(r.amount_micros),
                "currency": r.currency,
                "period": r.period,
                "relay": r.relay,
                "at_ms": r.at_ms,
            })
        })
        .collect();
    Ok(Json(json!({"charges": charges, "next_after": next})))
}

/// The currency of a credit: the one given, which must be the tariff's when the tariff
/// names one, else the tariff's. `tariff` names which tariff in the errors.
pub(super) fn credit_currency(
    given: Option<String>,
    tariff_currency: Option<String>,
    tariff: &str,
) -> Result<String, ApiError> {
    match (given, tariff_currency) {
        (Some(given), Some(theirs)) if given != theirs => Err(ApiError::invalid(
            "currency",
            format!("currency {given:?} is not the {tariff}'s {theirs:?}"),
        )),
        (Some(given), _) => Ok(given),
        (None, Some(theirs)) => Ok(theirs),
        (None, None) => Err(ApiError::invalid(
            "currency",
            format!("the {tariff} names no currency: give one"),
        )),
    }
}

pub(super) fn wants_csv(headers: &HeaderMap) -> bool {
    headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.to_ascii_lowercase().contains("text/csv"))
}

/// `GET /v1/invoices/{YYYY-MM}`: JSON, or CSV with `Accept: text/csv`.
async fn invoice(
    State(s): State<AppState>,
    AuthTenant(t): AuthTenant,
    Path(period): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let (_, end) =
        billing::period_bounds(&period).map_err(|e| ApiError::invalid("period", e.to_string()))?;
    let b = settings(&s, &t.id).await?;
    let info = TariffInfo::read(&b.tariff);
    let (sums, ledger_currency) = s.store.charge_sums(&t.id, &period).await?;
    let currency = ledger_currency
        .or(info.currency)
        .unwrap_or_else(|| "EUR".to_owned());
    let inv =
        Invoice::build(&t.id, &period, &currency, info.minor_units, &sums).ok_or_else(|| {
            anyhow::anyhow!("invoice {period} of tenant {:?}: an amount overflows", t.id)
        })?;
    let closed = now_ms() >= end;
    if wants_csv(&headers) {
        return Ok((
            [(header::CONTENT_TYPE, "text/csv; charset=utf-8")],
            inv.to_csv(),
        )
            .into_response());
    }
    let mut v = serde_json::to_value(&inv).unwrap_or_default();
    v["status"] = json!(if closed { "closed" } else { "open" });
    v["mode"] = json!(b.mode);
    Ok(Json(v).into_response())
}

fn balance_json(tenant: &str, b: &TenantBilling, bal: &crate::store::Balance) -> serde_json::Value {
    let f = billing::format_micros;
    json!({
        "tenant": tenant,
        "mode": b.mode,
        "currency": TariffInfo::read(&b.tariff).currency,
        "credits": f(bal.credits_micros),
        "charges": f(bal.charges_micros),
        "reserved": f(bal.reserved_micros),
        "balance": f(bal.balance_micros()),
        "available": f(bal.available_micros()),
        "balance_micros": bal.balance_micros(),
        "available_micros": bal.available_micros(),
    })
}

/// `GET /v1/balance`: credits − charges, exact, and what reservations leave.
async fn balance(
    State(s): State<AppState>,
    AuthTenant(t): AuthTenant,
) -> Result<Json<serde_json::Value>, ApiError> {
    let b = settings(&s, &t.id).await?;
    let bal = s.store.balance(&t.id).await?;
    Ok(Json(balance_json(&t.id, &b, &bal)))
}

#[derive(Deserialize)]
struct Limit {
    limit: Option<u32>,
}

/// `GET /admin/v1/billing/unrated`: usage events not rated yet, with their failures.
async fn unrated(
    State(s): State<AppState>,
    _: Admin,
    Query(q): Query<Limit>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let list = s
        .store
        .list_unrated(q.limit.unwrap_or(100).min(10_000))
        .await?;
    let list: Vec<serde_json::Value> = list
        .into_iter()
        .map(|u| {
            json!({
                "seq": u.seq,
                "tenant_id": u.tenant_id,
                "message_id": u.message_id,
                "recipient_idx": u.recipient_idx,
                "recipient": u.recipient,
                "outcome": u.outcome,
                "direction": u.direction,
                "size": u.size,
                "relay": u.relay,
                "at_ms": u.at_ms,
                "attempts": u.attempts,
                "next_try_at_ms": u.next_try_at_ms,
                "last_error": u.last_error,
            })
        })
        .collect();
    Ok(Json(json!({ "unrated": list })))
}

async fn get_billing(
    State(s): State<AppState>,
    _: Admin,
    Path(id): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    if s.store.get_tenant(&id).await?.is_none() {
        return Err(ApiError::not_found(format!("tenant {id:?}")));
    }
    let stored = s.store.get_billing(&id).await?;
    Ok(Json(json!({
        "tenant": id,
        "mode": stored.as_ref().map_or(BalanceMode::Postpaid, |b| b.mode),
        "tariff": stored.and_then(|b| b.tariff),
    })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BillingBody {
    mode: BalanceMode,
    /// The tariff document; absent = the platform's default tariff.
    tariff: Option<String>,
}

/// `PUT /admin/v1/tenants/{id}/billing {mode, tariff?}`: the platform assigns a tenant
/// its tariff; it is checked by the platform's rater (an empty batch) before it is stored.
async fn put_billing(
    State(s): State<AppState>,
    _: Admin,
    Path(id): Path<String>,
    Json(b): Json<BillingBody>,
) -> Result<Json<serde_json::Value>, ApiError> {
    if s.store.get_tenant(&id).await?.is_none() {
        return Err(ApiError::not_found(format!("tenant {id:?}")));
    }
    if let Some(tariff) = &b.tariff {
        let probe = BillInput {
            tariff: tariff.clone(),
            period_start_ms: 0,
            period_to_date: Vec::new(),
            events: Vec::new(),
        };
        rate(&s, probe).await.map_err(|e| {
            ApiError::invalid("tariff", format!("the rater refused the tariff: {e}"))
        })?;
    }
    let stored = s
        .store
        .set_billing(&id, b.mode, b.tariff.as_deref(), now_ms())
        .await?;
    s.billing.forget(&id);
    Ok(Json(json!({
        "tenant_id": stored.tenant_id,
        "mode": stored.mode.as_str(),
        "tariff": stored.tariff,
        "updated_at_ms": stored.updated_at_ms,
    })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreditBody {
    amount: String,
    currency: Option<String>,
    reference: String,
}

/// `POST /admin/v1/tenants/{id}/credits {amount, currency?, reference}`: credits once per
/// reference and releases the tenant's held recipients.
async fn credit(
    State(s): State<AppState>,
    _: Admin,
    Path(id): Path<String>,
    Json(b): Json<CreditBody>,
) -> Result<(StatusCode, Json<serde_json::Value>), ApiError> {
    let amount = billing::parse_amount(b.amount.trim())
        .map_err(|e| ApiError::invalid("amount", e.to_string()))?;
    if b.reference.trim().is_empty() {
        return Err(ApiError::invalid(
            "reference",
            "give a reference (e.g. the payment's id)",
        ));
    }
    if s.store.get_tenant(&id).await?.is_none() {
        return Err(ApiError::not_found(format!("tenant {id:?}")));
    }
    let settings = settings(&s, &id).await?;
    let tariff_currency = TariffInfo::read(&settings.tariff).currency;
    let currency = credit_currency(b.currency, tariff_currency, "tariff")?;
    let done = s
        .store
        .add_credit(&id, amount, &currency, b.reference.trim(), now_ms())
        .await?;
    if done.released > 0 {
        s.wake.notify_waiters();
    }
    let bal = s.store.balance(&id).await?;
    let mut v = balance_json(&id, &settings, &bal);
    v["credited"] = json!(done.credited);
    v["released"] = json!(done.released);
    let status = if done.credited {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(v)))
}
