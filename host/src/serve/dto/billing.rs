//! The two ledgers on the wire: the platform's books of a tenant (`/v1/usage`,
//! `/v1/invoices`, `/v1/balance`, `/admin/v1/…/billing`, credits) and a tenant's books
//! of its accounts (`/v1/accounts…`, `/v1/account-billing`). Amounts are exact micros
//! (integers) beside their decimal text; never floats.

use super::enum_of;
use crate::billing::{Invoice, InvoiceLine, TierLine, format_micros};
use crate::store::{
    Account, AccountLedgerEntry, AccountRatingStatus, ApiKeyInfo, Balance, BalanceMode,
    LedgerEntry, PendingUsage,
};
use serde::Serialize;
use utoipa::ToSchema;

pub(crate) fn balance_mode() -> utoipa::openapi::Object {
    enum_of(
        &[BalanceMode::Prepaid, BalanceMode::Postpaid],
        "`prepaid`: mail waits without credit; `postpaid`: invoiced afterwards",
    )
}

/// One row of the platform's ledger of a tenant.
#[derive(Debug, Serialize, ToSchema)]
pub struct ChargeView {
    pub seq: i64,
    pub message_id: String,
    pub recipient: String,
    pub outcome: String,
    pub service: String,
    pub quantity: u64,
    /// Decimal text.
    pub unit_price: String,
    pub amount_micros: i64,
    /// `amount_micros` as decimal text.
    pub amount: String,
    pub currency: String,
    /// `YYYY-MM`.
    pub period: String,
    pub relay: Option<String>,
    pub at_ms: i64,
}

impl From<LedgerEntry> for ChargeView {
    fn from(r: LedgerEntry) -> ChargeView {
        ChargeView {
            seq: r.seq,
            message_id: r.message_id,
            recipient: r.recipient,
            outcome: r.outcome,
            service: r.service,
            quantity: r.quantity,
            unit_price: r.unit_price,
            amount_micros: r.amount_micros,
            amount: format_micros(r.amount_micros),
            currency: r.currency,
            period: r.period,
            relay: r.relay,
            at_ms: r.at_ms,
        }
    }
}

/// `GET /v1/usage`: a page of charges, oldest first.
#[derive(Debug, Serialize, ToSchema)]
pub struct UsagePage {
    pub charges: Vec<ChargeView>,
    /// The `after` of the next page; `null` on the last.
    pub next_after: Option<i64>,
}

/// An invoice's lines and totals, rounded by the one rule (half away from zero per
/// line; the total is the sum of the rounded lines).
#[derive(Debug, Serialize, ToSchema)]
pub struct InvoiceBody {
    /// The tenant's id (an account's invoice: the account's id).
    pub tenant: String,
    pub period: String,
    pub currency: String,
    pub minor_units: u8,
    pub lines: Vec<InvoiceLineView>,
    pub total_micros: i64,
    pub total: String,
    /// The rounding rule's name.
    pub rounding: &'static str,
}

/// One service on an invoice.
#[derive(Debug, Serialize, ToSchema)]
pub struct InvoiceLineView {
    pub service: String,
    pub quantity: u64,
    /// The unit price when the service was charged at one price only.
    pub unit_price: Option<String>,
    pub tiers: Vec<TierView>,
    /// Exact.
    pub amount_micros: i64,
    /// Rounded to the minor unit.
    pub amount: String,
}

/// One price of a service on an invoice.
#[derive(Debug, Serialize, ToSchema)]
pub struct TierView {
    pub unit_price: String,
    pub quantity: u64,
    pub amount_micros: i64,
    /// A volume-mode settlement at period end; left out when false.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub settlement: bool,
}

impl From<Invoice> for InvoiceBody {
    fn from(i: Invoice) -> InvoiceBody {
        InvoiceBody {
            tenant: i.tenant,
            period: i.period,
            currency: i.currency,
            minor_units: i.minor_units,
            lines: i.lines.into_iter().map(InvoiceLineView::from).collect(),
            total_micros: i.total_micros,
            total: i.total,
            rounding: i.rounding,
        }
    }
}

impl From<InvoiceLine> for InvoiceLineView {
    fn from(l: InvoiceLine) -> InvoiceLineView {
        InvoiceLineView {
            service: l.service,
            quantity: l.quantity,
            unit_price: l.unit_price,
            tiers: l
                .tiers
                .into_iter()
                .map(|t: TierLine| TierView {
                    unit_price: t.unit_price,
                    quantity: t.quantity,
                    amount_micros: t.amount_micros,
                    settlement: t.settlement,
                })
                .collect(),
            amount_micros: l.amount_micros,
            amount: l.amount,
        }
    }
}

/// `GET /v1/invoices/{period}` as JSON (`Accept: text/csv` gives CSV).
#[derive(Debug, Serialize, ToSchema)]
pub struct InvoiceView {
    #[serde(flatten)]
    pub invoice: InvoiceBody,
    /// `open` until the period ends, then `closed`.
    pub status: &'static str,
    #[schema(schema_with = balance_mode)]
    pub mode: BalanceMode,
}

/// A tenant's balance with the platform.
#[derive(Debug, Serialize, ToSchema)]
pub struct BalanceView {
    pub tenant: String,
    #[schema(schema_with = balance_mode)]
    pub mode: BalanceMode,
    /// The tariff's currency, if it names one.
    pub currency: Option<String>,
    pub credits: String,
    pub charges: String,
    /// Estimated cost of recipients authorised but not yet rated.
    pub reserved: String,
    /// credits − charges.
    pub balance: String,
    /// What reservations leave of the balance.
    pub available: String,
    pub balance_micros: i64,
    pub available_micros: i64,
}

impl BalanceView {
    pub fn new(tenant: &str, mode: BalanceMode, currency: Option<String>, b: &Balance) -> Self {
        BalanceView {
            tenant: tenant.to_owned(),
            mode,
            currency,
            credits: format_micros(b.credits_micros),
            charges: format_micros(b.charges_micros),
            reserved: format_micros(b.reserved_micros),
            balance: format_micros(b.balance_micros()),
            available: format_micros(b.available_micros()),
            balance_micros: b.balance_micros(),
            available_micros: b.available_micros(),
        }
    }
}

/// `POST /admin/v1/tenants/{id}/credits`: the balance after the credit (201; a repeat
/// of a reference is 200 with `credited: false`).
#[derive(Debug, Serialize, ToSchema)]
pub struct Credited {
    #[serde(flatten)]
    pub balance: BalanceView,
    /// False for a reference credited before.
    pub credited: bool,
    /// Held recipients released to be checked again.
    pub released: usize,
}

/// `GET /admin/v1/billing/unrated`: one usage event not rated yet.
#[derive(Debug, Serialize, ToSchema)]
pub struct UnratedView {
    pub seq: i64,
    pub tenant_id: String,
    pub message_id: String,
    pub recipient_idx: i32,
    pub recipient: String,
    pub outcome: String,
    pub direction: String,
    pub size: u64,
    pub relay: Option<String>,
    pub at_ms: i64,
    /// Failed ratings so far.
    pub attempts: u32,
    pub next_try_at_ms: i64,
    pub last_error: Option<String>,
}

impl From<PendingUsage> for UnratedView {
    fn from(u: PendingUsage) -> UnratedView {
        UnratedView {
            seq: u.seq,
            tenant_id: u.tenant_id,
            message_id: u.message_id,
            recipient_idx: u.recipient_idx,
            recipient: u.recipient,
            outcome: u.outcome,
            direction: u.direction,
            size: u.size,
            relay: u.relay,
            at_ms: u.at_ms,
            attempts: u.attempts,
            next_try_at_ms: u.next_try_at_ms,
            last_error: u.last_error,
        }
    }
}

/// The unrated usage events.
#[derive(Debug, Serialize, ToSchema)]
pub struct UnratedList {
    pub unrated: Vec<UnratedView>,
}

/// `GET /admin/v1/tenants/{id}/billing`.
#[derive(Debug, Serialize, ToSchema)]
pub struct BillingView {
    pub tenant: String,
    #[schema(schema_with = balance_mode)]
    pub mode: BalanceMode,
    /// The tariff document; `null`: the platform's default tariff.
    pub tariff: Option<String>,
}

/// `PUT /admin/v1/tenants/{id}/billing`: the settings as stored.
#[derive(Debug, Serialize, ToSchema)]
pub struct BillingStored {
    pub tenant_id: String,
    #[schema(schema_with = balance_mode)]
    pub mode: BalanceMode,
    pub tariff: Option<String>,
    pub updated_at_ms: i64,
}

// ---- a tenant's accounts ----

/// One of a tenant's own customers.
#[derive(Debug, Serialize, ToSchema)]
pub struct AccountView {
    pub id: String,
    pub name: String,
    #[schema(schema_with = balance_mode)]
    pub mode: BalanceMode,
    /// Lower-case addresses and domains whose mail is billed to it, sorted.
    pub logins: Vec<String>,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
}

impl From<&Account> for AccountView {
    fn from(a: &Account) -> AccountView {
        AccountView {
            id: a.id.clone(),
            name: a.name.clone(),
            mode: a.mode,
            logins: a.logins.clone(),
            created_at_ms: a.created_at_ms,
            updated_at_ms: a.updated_at_ms,
        }
    }
}

/// `GET /v1/accounts`.
#[derive(Debug, Serialize, ToSchema)]
pub struct AccountList {
    pub accounts: Vec<AccountView>,
}

/// One row of an account's ledger.
#[derive(Debug, Serialize, ToSchema)]
pub struct AccountChargeView {
    pub seq: i64,
    pub account: String,
    pub message_id: String,
    pub recipient: String,
    pub outcome: String,
    pub service: String,
    pub quantity: u64,
    pub unit_price: String,
    pub amount_micros: i64,
    pub amount: String,
    pub currency: String,
    pub period: String,
    pub at_ms: i64,
}

impl From<AccountLedgerEntry> for AccountChargeView {
    fn from(r: AccountLedgerEntry) -> AccountChargeView {
        AccountChargeView {
            seq: r.seq,
            account: r.account_id,
            message_id: r.message_id,
            recipient: r.recipient,
            outcome: r.outcome,
            service: r.service,
            quantity: r.quantity,
            unit_price: r.unit_price,
            amount_micros: r.amount_micros,
            amount: format_micros(r.amount_micros),
            currency: r.currency,
            period: r.period,
            at_ms: r.at_ms,
        }
    }
}

/// `GET /v1/accounts/{id}/usage`.
#[derive(Debug, Serialize, ToSchema)]
pub struct AccountUsagePage {
    pub charges: Vec<AccountChargeView>,
    pub next_after: Option<i64>,
}

/// `GET /v1/accounts/{id}/invoices/{period}` as JSON.
#[derive(Debug, Serialize, ToSchema)]
pub struct AccountInvoiceView {
    #[serde(flatten)]
    pub invoice: InvoiceBody,
    pub account: String,
    pub status: &'static str,
    #[schema(schema_with = balance_mode)]
    pub mode: BalanceMode,
}

/// An account's balance in its tenant's books.
#[derive(Debug, Serialize, ToSchema)]
pub struct AccountBalanceView {
    pub account: String,
    #[schema(schema_with = balance_mode)]
    pub mode: BalanceMode,
    /// The account tariff's currency, if it names one.
    pub currency: Option<String>,
    pub credits: String,
    pub charges: String,
    pub balance: String,
    pub balance_micros: i64,
}

impl AccountBalanceView {
    pub fn new(a: &Account, currency: Option<String>, b: &Balance) -> AccountBalanceView {
        AccountBalanceView {
            account: a.id.clone(),
            mode: a.mode,
            currency,
            credits: format_micros(b.credits_micros),
            charges: format_micros(b.charges_micros),
            balance: format_micros(b.balance_micros()),
            balance_micros: b.balance_micros(),
        }
    }
}

/// `POST /v1/accounts/{id}/credits`: the account's balance after the credit.
#[derive(Debug, Serialize, ToSchema)]
pub struct AccountCredited {
    #[serde(flatten)]
    pub balance: AccountBalanceView,
    pub credited: bool,
    pub released: usize,
}

/// `GET /v1/account-billing`: the tenant's account tariff and its rating's progress.
#[derive(Debug, Serialize, ToSchema)]
pub struct AccountBillingView {
    /// The tariff the tenant rates its accounts with.
    pub tariff: Option<String>,
    /// `null` before the first rating.
    pub rating: Option<RatingView>,
}

/// Where a tenant's account rating stands.
#[derive(Debug, Serialize, ToSchema)]
pub struct RatingView {
    pub after_seq: i64,
    /// Usage events after the cursor.
    pub waiting: i64,
    pub attempts: u32,
    pub next_try_at_ms: i64,
    /// Why the last batch was refused; `null` after a success.
    pub last_error: Option<String>,
}

impl From<AccountRatingStatus> for RatingView {
    fn from(s: AccountRatingStatus) -> RatingView {
        RatingView {
            after_seq: s.after_seq,
            waiting: s.waiting,
            attempts: s.attempts,
            next_try_at_ms: s.next_try_at_ms,
            last_error: s.last_error,
        }
    }
}

/// An account's key, without its secret.
#[derive(Debug, Serialize, ToSchema)]
pub struct AccountKeyView {
    pub id: String,
    pub account: Option<String>,
    /// The first characters of the secret, to tell keys apart.
    pub prefix: String,
    pub created_at_ms: i64,
    pub revoked_at_ms: Option<i64>,
}

impl From<&ApiKeyInfo> for AccountKeyView {
    fn from(k: &ApiKeyInfo) -> AccountKeyView {
        AccountKeyView {
            id: k.id.clone(),
            account: k.account_id.clone(),
            prefix: k.prefix.clone(),
            created_at_ms: k.created_at_ms,
            revoked_at_ms: k.revoked_at_ms,
        }
    }
}

/// `GET /v1/accounts/{id}/keys`.
#[derive(Debug, Serialize, ToSchema)]
pub struct AccountKeyList {
    pub keys: Vec<AccountKeyView>,
}

/// A key made (201): its secret, shown this once.
#[derive(Debug, Serialize, ToSchema)]
pub struct NewAccountKey {
    #[serde(flatten)]
    pub info: AccountKeyView,
    pub key: String,
    pub note: &'static str,
}
