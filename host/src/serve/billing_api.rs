//! Billing over HTTP: a tenant's usage, invoices and balance (`/v1/…`), and the
//! operator's tenant billing settings, credits and unrated listing (`/admin/v1/…`).
//! Every tenant read is scoped by the key's tenant: another tenant's charges are not
//! there to find.

use super::auth::{Admin, AuthTenant};
use super::billing::{TenantBilling, rate, settings};
use super::dto::billing::{
    BalanceView, BillingStored, BillingView, Credited, InvoiceView, UnratedList, UsagePage,
};
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

/// The query of a usage listing, for the document (`page_query` reads it).
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)] // Never built: it only describes what `page_query` reads.
pub(super) struct PageQuery {
    /// From this time (`YYYY-MM-DD`, `YYYY-MM-DDTHH:MM:SSZ` or Unix ms; default: the
    /// beginning).
    #[param(min_length = 1)]
    from: Option<String>,
    /// Before this time (default: no end); after `from`.
    #[param(min_length = 1)]
    to: Option<String>,
    /// Rows in the page, 1–1000 (default 100).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<u32>,
    /// The `next_after` of the page before.
    after: Option<u64>,
}

/// `GET /v1/usage?from=&to=&limit=&after=`: the tenant's ledger rows whose usage time
/// is in `[from, to)`, oldest first; `next_after` is the cursor of the next page.
#[utoipa::path(get, path = "/v1/usage", params(PageQuery),
    responses((status = 200, description = "a page of charges", body = UsagePage)))]
async fn usage(
    State(s): State<AppState>,
    AuthTenant(t): AuthTenant,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Json<UsagePage>, ApiError> {
    let (from, to, limit, after) = page_query(&q)?;
    let rows = s.store.list_charges(&t.id, from, to, after, limit).await?;
    let next = (rows.len() == limit as usize)
        .then(|| rows.last().map(|r| r.seq))
        .flatten();
    Ok(Json(UsagePage {
        charges: rows.into_iter().map(Into::into).collect(),
        next_after: next,
    }))
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
#[utoipa::path(get, path = "/v1/invoices/{period}",
    params(("period" = String, Path, description = "`YYYY-MM`")),
    responses((status = 200, description = "the invoice (open until the month ends)", content(
        (InvoiceView = "application/json"),
        (String = "text/csv"),
    ))))]
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
    Ok(Json(InvoiceView {
        invoice: inv.into(),
        status: if closed { "closed" } else { "open" },
        mode: b.mode,
    })
    .into_response())
}

fn balance_json(tenant: &str, b: &TenantBilling, bal: &crate::store::Balance) -> BalanceView {
    BalanceView::new(tenant, b.mode, TariffInfo::read(&b.tariff).currency, bal)
}

/// `GET /v1/balance`: credits − charges, exact, and what reservations leave.
#[utoipa::path(get, path = "/v1/balance",
    responses((status = 200, description = "the balance", body = BalanceView)))]
async fn balance(
    State(s): State<AppState>,
    AuthTenant(t): AuthTenant,
) -> Result<Json<BalanceView>, ApiError> {
    let b = settings(&s, &t.id).await?;
    let bal = s.store.balance(&t.id).await?;
    Ok(Json(balance_json(&t.id, &b, &bal)))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct Limit {
    /// At most this many (default 100, at most 10,000).
    limit: Option<u32>,
}

/// `GET /admin/v1/billing/unrated`: usage events not rated yet, with their failures.
#[utoipa::path(get, path = "/admin/v1/billing/unrated", params(Limit),
    responses((status = 200, description = "the unrated usage events", body = UnratedList)))]
async fn unrated(
    State(s): State<AppState>,
    _: Admin,
    Query(q): Query<Limit>,
) -> Result<Json<UnratedList>, ApiError> {
    let list = s
        .store
        .list_unrated(q.limit.unwrap_or(100).min(10_000))
        .await?;
    Ok(Json(UnratedList {
        unrated: list.into_iter().map(Into::into).collect(),
    }))
}

/// A tenant's billing settings: prepaid or postpaid, and its tariff.
#[utoipa::path(get, path = "/admin/v1/tenants/{id}/billing",
    responses((status = 200, description = "the settings", body = BillingView)))]
async fn get_billing(
    State(s): State<AppState>,
    _: Admin,
    Path(id): Path<String>,
) -> Result<Json<BillingView>, ApiError> {
    if s.store.get_tenant(&id).await?.is_none() {
        return Err(ApiError::not_found(format!("tenant {id:?}")));
    }
    let stored = s.store.get_billing(&id).await?;
    Ok(Json(BillingView {
        mode: stored.as_ref().map_or(BalanceMode::Postpaid, |b| b.mode),
        tariff: stored.and_then(|b| b.tariff),
        tenant: id,
    }))
}

/// A tenant's billing settings.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct BillingBody {
    #[schema(schema_with = super::dto::billing::balance_mode)]
    mode: BalanceMode,
    /// The tariff document; absent = the platform's default tariff.
    tariff: Option<String>,
}

/// `PUT /admin/v1/tenants/{id}/billing {mode, tariff?}`: the platform assigns a tenant
/// its tariff; it is checked by the platform's rater (an empty batch) before it is stored.
#[utoipa::path(put, path = "/admin/v1/tenants/{id}/billing", request_body = BillingBody,
    responses((status = 200, description = "the settings as stored", body = BillingStored)))]
async fn put_billing(
    State(s): State<AppState>,
    _: Admin,
    Path(id): Path<String>,
    Json(b): Json<BillingBody>,
) -> Result<Json<BillingStored>, ApiError> {
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
    Ok(Json(BillingStored {
        tenant_id: stored.tenant_id,
        mode: stored.mode,
        tariff: stored.tariff,
        updated_at_ms: stored.updated_at_ms,
    }))
}

/// A credit to a tenant.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct CreditBody {
    /// Decimal text, e.g. `"100.00"`.
    #[schema(pattern = "^[0-9]+([.][0-9]{0,6})?$")]
    amount: String,
    currency: Option<String>,
    reference: String,
}

/// `POST /admin/v1/tenants/{id}/credits {amount, currency?, reference}`: credits once per
/// reference and releases the tenant's held recipients.
#[utoipa::path(post, path = "/admin/v1/tenants/{id}/credits", request_body = CreditBody,
    responses(
        (status = 201, description = "credited: the balance after it", body = Credited),
        (status = 200, description = "a reference credited before: nothing changed", body = Credited),
    ))]
async fn credit(
    State(s): State<AppState>,
    _: Admin,
    Path(id): Path<String>,
    Json(b): Json<CreditBody>,
) -> Result<(StatusCode, Json<Credited>), ApiError> {
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
    let v = Credited {
        balance: balance_json(&id, &settings, &bal),
        credited: done.credited,
        released: done.released,
    };
    let status = if done.credited {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(v)))
}
