//! A tenant's own customers over HTTP (issue 17): `/v1/accounts` (CRUD with logins),
//! each account's usage, invoices, balance, credits and keys (a key of one account:
//! what it may call is `auth.rs`'s), and `/v1/account-billing` (the
//! tenant's account tariff and where its account rating stands, with the reason of the
//! last refused batch).
//!
//! These are the tenant's books, kept by the tenant's rater: every route is scoped by
//! the key's tenant (another tenant's account is a 404), and nothing here reads or
//! writes the platform → tenant books (`billing_api.rs`). The request and response
//! shapes are this module's own; store types are not the wire format.

use super::account_billing::rate_for_accounts;
use super::auth::AuthTenant;
use super::auth::Caller;
use super::billing_api::PageQuery;
use super::billing_api::{credit_currency, page_query, wants_csv};
use super::dto::billing::{
    AccountBalanceView, AccountBillingView, AccountCredited, AccountInvoiceView, AccountKeyList,
    AccountKeyView, AccountList, AccountUsagePage, AccountView, NewAccountKey, RatingView,
    balance_mode,
};
use super::error::ApiError;
use super::state::AppState;
use super::state::now_ms;
use crate::billing::{self, Invoice, TariffInfo};
use crate::stage::BillInput;
use crate::store::{Account, AccountUpdate, Balance, BalanceMode, NewAccount};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};
use std::collections::HashMap;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/accounts", get(list).post(create))
        .route(
            "/v1/accounts/{id}",
            get(get_one).patch(update).delete(remove),
        )
        .route("/v1/accounts/{id}/usage", get(usage))
        .route("/v1/accounts/{id}/invoices/{period}", get(invoice))
        .route("/v1/accounts/{id}/balance", get(balance))
        .route("/v1/accounts/{id}/credits", post(credit))
        .route("/v1/accounts/{id}/keys", get(list_keys).post(create_key))
        .route("/v1/accounts/{id}/keys/{key_id}", delete(revoke_key))
        .route(
            "/v1/account-billing",
            get(get_account_billing).put(put_account_billing),
        )
}

/// `POST /v1/accounts`.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct CreateBody {
    /// 1–64 of `A-Z a-z 0-9 - _ .`
    #[schema(pattern = "^[A-Za-z0-9._-]{1,64}$")]
    id: String,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    #[schema(schema_with = balance_mode)]
    mode: Option<BalanceMode>,
    #[serde(default)]
    logins: Vec<String>,
}

/// `PATCH /v1/accounts/{id}`.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct UpdateBody {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    #[schema(schema_with = balance_mode)]
    mode: Option<BalanceMode>,
    #[serde(default)]
    logins: Option<Vec<String>>,
}

/// The tenant's accounts.
#[utoipa::path(get, path = "/v1/accounts",
    responses((status = 200, description = "the accounts", body = AccountList)))]
async fn list(
    State(s): State<AppState>,
    AuthTenant(t): AuthTenant,
) -> Result<Json<AccountList>, ApiError> {
    let accounts = s.store.list_accounts(&t.id).await?;
    Ok(Json(AccountList {
        accounts: accounts.iter().map(AccountView::from).collect(),
    }))
}

/// Adds an account (a customer of the tenant's, billed by the tenant's rater).
#[utoipa::path(post, path = "/v1/accounts", request_body = CreateBody,
    responses((status = 201, description = "the account", body = AccountView)))]
async fn create(
    State(s): State<AppState>,
    AuthTenant(t): AuthTenant,
    Json(b): Json<CreateBody>,
) -> Result<(StatusCode, Json<AccountView>), ApiError> {
    let new = NewAccount {
        name: b.name.unwrap_or_else(|| b.id.clone()),
        id: b.id,
        mode: b.mode.unwrap_or(BalanceMode::Postpaid),
        logins: b.logins,
    };
    let a = s.store.create_account(&t.id, &new, now_ms()).await?;
    s.accounts.forget(&t.id);
    Ok((StatusCode::CREATED, Json(AccountView::from(&a))))
}

/// Puts the tenant's held mail back to the dispatcher, which checks it again (the
/// platform's prepaid rule and the tenant's); how many recipients.
async fn release(s: &AppState, tenant: &str, detail: Value) -> Result<usize, ApiError> {
    let n = s.store.release_held(tenant, &detail, now_ms()).await?;
    if n > 0 {
        s.wake.notify_waiters();
    }
    Ok(n)
}

async fn account_of(s: &AppState, tenant: &str, id: &str) -> Result<Account, ApiError> {
    s.store
        .get_account(tenant, id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("account {id:?}")))
}

/// An account.
#[utoipa::path(get, path = "/v1/accounts/{id}",
    responses((status = 200, description = "the account", body = AccountView)))]
async fn get_one(
    State(s): State<AppState>,
    AuthTenant(t): AuthTenant,
    Path(id): Path<String>,
) -> Result<Json<AccountView>, ApiError> {
    Ok(Json(AccountView::from(&account_of(&s, &t.id, &id).await?)))
}

/// Changes an account; its held mail is looked at again under the new terms.
#[utoipa::path(patch, path = "/v1/accounts/{id}", request_body = UpdateBody,
    responses((status = 200, description = "the account", body = AccountView)))]
async fn update(
    State(s): State<AppState>,
    AuthTenant(t): AuthTenant,
    Path(id): Path<String>,
    Json(b): Json<UpdateBody>,
) -> Result<Json<AccountView>, ApiError> {
    let change = AccountUpdate {
        name: b.name,
        mode: b.mode,
        logins: b.logins,
    };
    s.store
        .update_account(&t.id, &id, &change, now_ms())
        .await?;
    s.accounts.forget(&t.id);
    // Mail held by the tenant's prepaid rule is looked at again under the new terms.
    release(
        &s,
        &t.id,
        json!({"reason": "account changed", "account": id}),
    )
    .await?;
    Ok(Json(AccountView::from(&account_of(&s, &t.id, &id).await?)))
}

/// Removes an account (its keys are revoked with it).
#[utoipa::path(delete, path = "/v1/accounts/{id}",
    responses((status = 204, description = "removed")))]
async fn remove(
    State(s): State<AppState>,
    AuthTenant(t): AuthTenant,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    s.store.delete_account(&t.id, &id, now_ms()).await?;
    s.accounts.forget(&t.id);
    // Its keys were revoked with it.
    s.forget_keys();
    release(
        &s,
        &t.id,
        json!({"reason": "account deleted", "account": id}),
    )
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `GET /v1/accounts/{id}/usage?from=&to=&limit=&after=`: the account's charges.
#[utoipa::path(get, path = "/v1/accounts/{id}/usage", params(PageQuery),
    responses((status = 200, description = "a page of charges", body = AccountUsagePage)))]
async fn usage(
    State(s): State<AppState>,
    Caller(c): Caller,
    Path(id): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Json<AccountUsagePage>, ApiError> {
    let (from, to, limit, after) = page_query(&q)?;
    account_of(&s, &c.tenant.id, &id).await?;
    let rows = s
        .store
        .list_account_charges(&c.tenant.id, &id, from, to, after, limit)
        .await?;
    let next = (rows.len() == limit as usize)
        .then(|| rows.last().map(|r| r.seq))
        .flatten();
    Ok(Json(AccountUsagePage {
        charges: rows.into_iter().map(Into::into).collect(),
        next_after: next,
    }))
}

/// `GET /v1/accounts/{id}/invoices/{YYYY-MM}`: JSON, or CSV with `Accept: text/csv`,
/// built and rounded as the platform's invoices are.
#[utoipa::path(get, path = "/v1/accounts/{id}/invoices/{period}",
    params(("period" = String, Path, description = "`YYYY-MM`")),
    responses((status = 200, description = "the invoice", content(
        (AccountInvoiceView = "application/json"),
        (String = "text/csv"),
    ))))]
async fn invoice(
    State(s): State<AppState>,
    Caller(c): Caller,
    Path((id, period)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let (_, end) =
        billing::period_bounds(&period).map_err(|e| ApiError::invalid("period", e.to_string()))?;
    let account = account_of(&s, &c.tenant.id, &id).await?;
    let tariff = s.store.get_account_tariff(&c.tenant.id).await?;
    let info = TariffInfo::read(tariff.as_deref().unwrap_or(""));
    let (sums, ledger_currency) = s
        .store
        .account_charge_sums(&c.tenant.id, &id, &period)
        .await?;
    let currency = ledger_currency
        .or(info.currency)
        .unwrap_or_else(|| "EUR".to_owned());
    let inv =
        Invoice::build(&id, &period, &currency, info.minor_units, &sums).ok_or_else(|| {
            anyhow::anyhow!("invoice {period} of account {id:?}: an amount overflows")
        })?;
    if wants_csv(&headers) {
        return Ok((
            [(header::CONTENT_TYPE, "text/csv; charset=utf-8")],
            inv.to_csv(),
        )
            .into_response());
    }
    Ok(Json(AccountInvoiceView {
        invoice: inv.into(),
        account: id,
        status: if now_ms() >= end { "closed" } else { "open" },
        mode: account.mode,
    })
    .into_response())
}

fn balance_json(a: &Account, currency: Option<String>, bal: &Balance) -> AccountBalanceView {
    AccountBalanceView::new(a, currency, bal)
}

async fn tariff_currency(s: &AppState, tenant: &str) -> Result<Option<String>, ApiError> {
    let tariff = s.store.get_account_tariff(tenant).await?;
    Ok(tariff.and_then(|t| TariffInfo::read(&t).currency))
}

/// An account's balance in the tenant's books.
#[utoipa::path(get, path = "/v1/accounts/{id}/balance",
    responses((status = 200, description = "the balance", body = AccountBalanceView)))]
async fn balance(
    State(s): State<AppState>,
    Caller(c): Caller,
    Path(id): Path<String>,
) -> Result<Json<AccountBalanceView>, ApiError> {
    let a = account_of(&s, &c.tenant.id, &id).await?;
    let bal = s.store.account_balance(&c.tenant.id, &id).await?;
    Ok(Json(balance_json(
        &a,
        tariff_currency(&s, &c.tenant.id).await?,
        &bal,
    )))
}

/// A credit to an account.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct CreditBody {
    /// Decimal text, e.g. `"20.00"`.
    #[schema(pattern = "^[0-9]+([.][0-9]{0,6})?$")]
    amount: String,
    #[serde(default)]
    currency: Option<String>,
    reference: String,
}

/// `POST /v1/accounts/{id}/credits {amount, currency?, reference}`: the tenant credits
/// its customer once per reference (201; a repeat is 200 with `credited: false`).
#[utoipa::path(post, path = "/v1/accounts/{id}/credits", request_body = CreditBody,
    responses(
        (status = 201, description = "credited: the balance after it", body = AccountCredited),
        (status = 200, description = "a reference credited before: nothing changed", body = AccountCredited),
    ))]
async fn credit(
    State(s): State<AppState>,
    AuthTenant(t): AuthTenant,
    Path(id): Path<String>,
    Json(b): Json<CreditBody>,
) -> Result<(StatusCode, Json<AccountCredited>), ApiError> {
    let amount = billing::parse_amount(b.amount.trim())
        .map_err(|e| ApiError::invalid("amount", e.to_string()))?;
    if b.reference.trim().is_empty() {
        return Err(ApiError::invalid(
            "reference",
            "give a reference (e.g. the payment's id)",
        ));
    }
    let a = account_of(&s, &t.id, &id).await?;
    let tariff = tariff_currency(&s, &t.id).await?;
    let currency = credit_currency(b.currency, tariff.clone(), "account tariff")?;
    let credited = s
        .store
        .add_account_credit(&t.id, &id, amount, &currency, b.reference.trim(), now_ms())
        .await?;
    let released = release(
        &s,
        &t.id,
        json!({"reason": "account credited", "account": id, "reference": b.reference.trim()}),
    )
    .await?;
    let bal = s.store.account_balance(&t.id, &id).await?;
    let v = AccountCredited {
        balance: balance_json(&a, tariff, &bal),
        credited,
        released,
    };
    let status = if credited {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(v)))
}

/// The tenant's account tariff and where its account rating stands.
#[utoipa::path(get, path = "/v1/account-billing",
    responses((status = 200, description = "the tariff and the rating", body = AccountBillingView)))]
async fn get_account_billing(
    State(s): State<AppState>,
    AuthTenant(t): AuthTenant,
) -> Result<Json<AccountBillingView>, ApiError> {
    let tariff = s.store.get_account_tariff(&t.id).await?;
    let status = s.store.account_rating_status(&t.id).await?;
    Ok(Json(AccountBillingView {
        tariff,
        rating: status.map(RatingView::from),
    }))
}

/// The tenant's account tariff.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct AccountBillingBody {
    /// The tariff the tenant rates its accounts with; `null` removes it.
    tariff: Option<String>,
}

/// `PUT /v1/account-billing {tariff}`: checked by the tenant's account rater (an empty
/// batch) before it is stored.
#[utoipa::path(put, path = "/v1/account-billing", request_body = AccountBillingBody,
    responses((status = 200, description = "the tariff and the rating", body = AccountBillingView)))]
async fn put_account_billing(
    State(s): State<AppState>,
    AuthTenant(t): AuthTenant,
    Json(b): Json<AccountBillingBody>,
) -> Result<Json<AccountBillingView>, ApiError> {
    if let Some(tariff) = &b.tariff {
        if tariff.len() > 256 * 1024 {
            return Err(ApiError::invalid("tariff", "larger than 256 KiB"));
        }
        let probe = BillInput {
            tariff: tariff.clone(),
            period_start_ms: 0,
            period_to_date: Vec::new(),
            events: Vec::new(),
        };
        rate_for_accounts(&s, &t.id, true, probe)
            .await
            .map_err(|e| {
                ApiError::invalid("tariff", format!("the rater refused the tariff: {e}"))
            })?;
    }
    s.store
        .set_account_tariff(&t.id, b.tariff.as_deref(), now_ms())
        .await?;
    get_account_billing(State(s), AuthTenant(t)).await
}

/// `POST /v1/accounts/{id}/keys`: a key for the tenant's customer, which may submit mail
/// billed to this account and read this account's usage, invoices and balance, nothing
/// else (`auth.rs`). The secret is shown this once; only its hash is stored.
#[utoipa::path(post, path = "/v1/accounts/{id}/keys",
    responses((status = 201, description = "the key and its secret", body = NewAccountKey)))]
async fn create_key(
    State(s): State<AppState>,
    AuthTenant(t): AuthTenant,
    Path(id): Path<String>,
) -> Result<(StatusCode, Json<NewAccountKey>), ApiError> {
    let (info, secret) = s.store.create_account_key(&t.id, &id, now_ms()).await?;
    let key = NewAccountKey {
        info: AccountKeyView::from(&info),
        key: secret,
        note: "the key is shown this once; only its hash is stored",
    };
    Ok((StatusCode::CREATED, Json(key)))
}

/// `GET /v1/accounts/{id}/keys`: the account's keys, revoked ones too, without secrets.
#[utoipa::path(get, path = "/v1/accounts/{id}/keys",
    responses((status = 200, description = "the keys", body = AccountKeyList)))]
async fn list_keys(
    State(s): State<AppState>,
    AuthTenant(t): AuthTenant,
    Path(id): Path<String>,
) -> Result<Json<AccountKeyList>, ApiError> {
    account_of(&s, &t.id, &id).await?;
    let keys = s.store.list_account_keys(&t.id, &id).await?;
    Ok(Json(AccountKeyList {
        keys: keys.iter().map(AccountKeyView::from).collect(),
    }))
}

/// `DELETE /v1/accounts/{id}/keys/{key_id}`: 204, or 404 when the account has no such
/// live key.
#[utoipa::path(delete, path = "/v1/accounts/{id}/keys/{key_id}",
    responses((status = 204, description = "revoked")))]
async fn revoke_key(
    State(s): State<AppState>,
    AuthTenant(t): AuthTenant,
    Path((id, key_id)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    if !s
        .store
        .revoke_account_key(&t.id, &id, &key_id, now_ms())
        .await?
    {
        return Err(ApiError::not_found(format!(
            "live key {key_id:?} of account {id:?}"
        )));
    }
    s.forget_keys();
    Ok(StatusCode::NO_CONTENT)
}
