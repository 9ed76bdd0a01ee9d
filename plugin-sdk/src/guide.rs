//! # Writing a plugin
//!
//! A tenant plugin decides one thing for your own traffic — which relay a
//! message goes through, what it costs — and Sluice runs it beside everybody
//! else's, sandboxed and bounded. This page walks from an empty directory to
//! a plugin that routes your mail, and back again when it misbehaves.
//!
//! ## 1. Start a crate
//!
//! ```text
//! sluice plugin new --stage route my-router
//! cd my-router
//! ```
//!
//! `plugin new` writes a crate that builds as it is: `Cargo.toml` depending
//! on `sluice-sdk` with `crate-type = ["cdylib", "rlib"]` (the component, and
//! a library your tests can call) and a size-optimised release profile;
//! `src/lib.rs` with a working plugin for the stage and a unit test; a README
//! with the commands below. Every stage can be a tenant's own; each decides for
//! that tenant's traffic only:
//!
//! | stage | decides | runs |
//! |-------|---------|------|
//! | `ingest` | accept (adding headers, tags) or reject a submission | after the platform's filter, which it cannot overrule |
//! | `route` | which relays, in order, or defer / reject | before every delivery attempt |
//! | `send` | what a relay's reply means: delivered, retry when, or fail | after every attempt |
//! | `bounce` | what a refusal while sending, or a DSN received on a message's return path, says: reason, hard or soft | on each 4xx/5xx and each received bounce |
//! | `bill` | the charges of a batch of usage events | in the background, in batches |
//!
//! ## 2. Write the decision
//!
//! Implement the stage's trait and end the crate with its export macro. Two
//! complete plugins, each under 60 lines and compiled with their tests on
//! every CI run:
//!
//! - [`ex06_own_relay_first`](crate::examples::ex06_own_relay_first): route
//!   through my own relay unless its soft-bounce rate over 15 minutes is above
//!   5 %, then through the platform pool. It reads the relay's live windowed
//!   stats from [`RouteInput`](crate::route::RouteInput) and compares rates
//!   with integers.
//! - [`ex07_free_then_tiered`](crate::examples::ex07_free_then_tiered): the
//!   first 1,000 messages a month are free, then tiered. It continues from the
//!   month's counters the host passes in, so batches chain up exactly.
//!
//! The rules every plugin lives by:
//!
//! - **Decide, do not act.** No sockets, files, environment or clock: the time
//!   is in the input. Settings come from [`config`](crate::config) (given at
//!   upload with `--config KEY=VALUE`; read from the host once per instance, so
//!   reading them on every call is free), and [`log`](crate::log) writes to your
//!   plugin log.
//! - **Money is exact.** Prices are [`Decimal`](crate::types::Decimal)s and
//!   amounts integer micro-units; never a float.
//! - **Every call is bounded.** By default a route call has 50 ms and 64 MiB,
//!   in a fresh instance (nothing survives between calls), and each host runs
//!   at most one call of your version per core at once (more wait their turn,
//!   which delays only your own mail). You may ask for other limits at upload
//!   (`--timeout-ms`, `--memory-mib`, `--calls-in-flight`) up to the
//!   platform's maxima (`[plugins] max_timeout_ms`, `max_memory_mib`,
//!   `max_calls_in_flight`).
//!
//! ## 3. Test it natively
//!
//! ```text
//! cargo test
//! ```
//!
//! The trait impl is plain Rust on your machine: build inputs with
//! [`testing`](crate::testing) (`testing::route_input`, `testing::relay`,
//! `testing::bill_input`, …), set settings with `testing::set_config`, read
//! what was logged with `testing::take_logs`.
//!
//! ## 4. Build and check the component
//!
//! ```text
//! cargo build --release --target wasm32-wasip2
//! sluice plugin check --stage route target/wasm32-wasip2/release/my_router.wasm
//! sluice plugin run --stage route target/wasm32-wasip2/release/my_router.wasm --input in.json
//! ```
//!
//! `check` type-checks the component against the stage's world (naming the
//! export it lacks, if any) and runs it once on the stage's sample input
//! under its limits — the same checks an upload goes through.
//!
//! ## 5. Upload, activate, roll back
//!
//! ```text
//! sluice plugin upload --stage route target/wasm32-wasip2/release/my_router.wasm \
//!     --url https://sluice.example --key "$SLUICE_KEY" --config relay=mine
//! ```
//!
//! (`PUT /v1/plugins/route` with the component as the body does the same.)
//! Sluice compiles the component, type-checks it, smoke-runs it on the sample
//! and stores it as the next version with its SHA-256, size, uploader and
//! time. An upload that is not a component, serves another stage, traps or
//! runs past its deadline on the sample, or is larger than the platform
//! allows is refused with a JSON error saying which. Otherwise the new
//! version is active at once (`--no-activate` only stores it) on every host
//! within seconds; messages already being routed finish on the version they
//! started with.
//!
//! - `GET /v1/plugins` — your versions per stage, which one is active, and
//!   per version its calls, errors by kind and p50/p99/mean call time;
//! - `POST /v1/plugins/route/activate` with `{"version": 3}` — switch;
//! - `POST /v1/plugins/route/rollback` — back to the version active before
//!   (repeatable);
//! - `GET /v1/plugins/route/logs` — what your plugin logged, its stderr (panic
//!   messages), and how failed calls ended.
//!
//! ## 6. When it fails
//!
//! A call that traps, runs out of time or memory, or answers something
//! invalid never loses mail, and the message gets a `plugin_error` event
//! saying why (with `"on_failure"`). What happens instead is yours to choose
//! per stage at upload (`--on-failure`, `?on_failure=`):
//!
//! - `fallback` (the default): the platform's plugin decides this once.
//! - `defer` (fail closed): nobody else decides for you. Per stage: `route` —
//!   the recipients are deferred and retried in a minute; `send` — a 2xx still
//!   counts as delivered, anything else is retried, never failed; `bounce` — a
//!   refusal while sending stays unclassified (nothing suppressed), a received
//!   DSN is refused with `451` so the reporting server retries it; `ingest` —
//!   the submission is refused with `503` (nothing accepted, try again);
//!   `bill` — the events stay unrated and are retried.
//!
//! After 5 failed calls within a minute the version is suspended, and one
//! `plugin_error` event carries `"suspended": true` with the reason. While
//! suspended, a `fallback` stage runs the platform's plugin and a `defer`
//! stage keeps deferring (each deferral says the plugin is suspended and
//! why), until you upload a new version or activate one; deferred mail then
//! goes out on its next retry. Your plugin's failures cost your own traffic
//! only: other tenants' calls run in their own instances and slots and do not
//! wait for yours.
//!
//! ## 7. Billing: raters and tariffs
//!
//! A rater (`bill::Rater`) gets a batch of usage events, the tenant's tariff
//! document and the period-to-date quantity of every service, and answers one
//! charge per (event, service) it bills: quantity, unit price (an exact
//! decimal) and amount in micro-units (`10^-6` of the currency; never floats).
//! `sluice serve` writes a usage event for every final outcome of a recipient
//! (`delivered`, `bounced`, `failed`, `expired`; direction `outbound`) in the
//! same transaction as the outcome, and a background task rates pending events
//! in batches per tenant and calendar month (UTC). What the platform charges
//! a tenant is rated only by the platform's rater (`rater-tiered` unless the
//! operator configured another) with the tariff the platform assigned to the
//! tenant: a tenant's uploaded rater (`PUT /v1/plugins/bill`) is never asked
//! what the platform charges that tenant; it bills the tenant's own customers
//! (accounts, `/v1/accounts`): it gets the tenant's usage events matched to its
//! accounts by their logins (sender, else recipient), per account and month,
//! with `tenant` set to the account id, and its charges go to the tenant's own
//! ledger (the same checks apply). When the rater cannot answer, the events stay unrated and are
//! retried with backoff — never charged from an answer that did not validate
//! or failed the host's checks (currency, the tariff's services, no negative
//! amount unless the service has `credit = true`, a flat service's price and
//! `amount = quantity × unit price` within a micro-unit; one failing charge
//! refuses the batch). Charges are keyed by (message, recipient, outcome,
//! service): a replayed batch never charges twice.
//!
//! Prepaid tenants: before a message is routed, its cost is estimated by the
//! platform's rater on one synthetic `delivered` event per recipient (after the
//! period's counters) and reserved; if credits − charges − reservations cannot
//! cover it, the recipient is `held` with the reason until a credit arrives.
//! A rater should therefore be cheap and deterministic.
//!
//! ### The tariff TOML of `rater-tiered`
//!
//! ```toml
//! id = "standard-2026"
//! currency = "EUR"          # ISO 4217; the rater's answers must use it
//! minor_units = 2           # digits of the minor unit, for invoices (default 2)
//!
//! [[service]]
//! name = "outbound-message" # free text; one invoice line per service
//! unit = "message"          # message | byte | kib | mib (sizes rounded up per message)
//! direction = "outbound"    # outbound | inbound
//! outcomes = ["delivered"]  # default: ["delivered"] outbound, ["received"] inbound;
//!                           # add "bounced", "failed", "expired" to bill those
//! price = "0.0004"          # flat: quantity × price
//! # credit = true           # only a credit service may have a negative price
//!
//! [[service]]
//! name = "outbound-traffic"
//! unit = "mib"
//! direction = "outbound"
//! mode = "graduated"        # each tier prices the part of the period inside it
//! tier = [{ up_to = 1000, price = "0.0002" }, { price = "0.0001" }]
//!
//! [[service]]
//! name = "bounce-fee"
//! unit = "message"
//! direction = "outbound"
//! outcomes = ["bounced"]
//! mode = "volume"           # the tier the period reaches prices all of it
//! tier = [{ up_to = 100000, price = "0.0008" }, { price = "0.0005" }]
//! ```
//!
//! Tiers count the period-to-date quantity (`up_to` is where a tier ends; the
//! last has none). Each amount is computed exactly and rounded once, half away
//! from zero, to a micro-unit.
//!
//! **Volume mode is settled at period end.** During the month each event is
//! charged at the tier reached so far, and ledger rows are never changed.
//! Once a month is over and none of its usage is unrated, the host asks the
//! rater for the price of the tier the month's total reached and writes one
//! settlement row per volume service: `total × that price − what was
//! charged` (usually a credit, as volume prices fall). It is on the month's
//! invoice as a tier line with `"settlement": true`. Settlement reads `mode =
//! "volume"` from the tariff TOML; a tenant's own rater with another format
//! settles (or not) in its own charges.
//!
//! Invoices (`GET /v1/invoices/{YYYY-MM}`) round each service line's exact
//! amount to the currency's minor unit **half away from zero** (commercial
//! rounding; `sluice bill` rounds the same way), and the total is the sum of
//! the rounded lines; the response states this rule.
