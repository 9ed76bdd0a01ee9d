//! `sluice plugin new --stage STAGE NAME`: writes a plugin crate that builds for
//! `wasm32-wasip2` as it is, with a unit test on the SDK's native harness and a README
//! saying how to build, check and upload it.
//!
//! The binary carries the SDK's sources (`src/`, `wit/`, embedded by `build.rs`) and
//! writes them into the new crate as `vendor/sluice-sdk`, a path dependency, with the
//! lock file of the workspace the binary was built in: the crate builds anywhere with
//! the `sluice` binary and crates.io, and with the versions Sluice was tested with.

use super::UsageError;
use crate::stage::Stage;
use anyhow::{Context, Result};
use clap::Args;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(Debug, Args)]
pub struct NewArgs {
    /// The stage: ingest, route, send, bounce or bill.
    #[arg(long)]
    stage: Stage,
    /// The crate's name (lower case, digits, `-`); also its directory.
    name: String,
    /// Where to create the crate's directory.
    #[arg(long, default_value = ".")]
    dir: PathBuf,
    /// Depend on this `sluice-sdk` crate instead of a copy of the SDK this binary
    /// carries (for work on the SDK itself).
    #[arg(long)]
    sdk_path: Option<PathBuf>,
}

#[allow(missing_docs)]
mod embedded {
    include!(concat!(env!("OUT_DIR"), "/sdk_sources.rs"));
}

/// Where the SDK's copy goes, inside the new crate.
const VENDORED_SDK: &str = "vendor/sluice-sdk";

fn valid_name(name: &str) -> bool {
    name.starts_with(|c: char| c.is_ascii_lowercase())
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
}

/// `my-router` → `MyRouter`.
fn type_name(name: &str) -> String {
    name.split(['-', '_'])
        .filter(|p| !p.is_empty())
        .map(|p| {
            let mut c = p.chars();
            c.next()
                .map(|f| f.to_ascii_uppercase().to_string() + c.as_str())
                .unwrap_or_default()
        })
        .collect()
}

pub fn run(args: NewArgs) -> Result<ExitCode> {
    if !valid_name(&args.name) {
        return Err(UsageError(format!(
            "{:?} is not a crate name: start with a-z, then a-z 0-9 - _",
            args.name
        ))
        .into());
    }
    let template = template(args.stage);
    let sdk = match &args.sdk_path {
        Some(path) => path
            .canonicalize()
            .map_err(|e| UsageError(format!("--sdk-path {}: {e}", path.display())))?
            .display()
            .to_string(),
        None => VENDORED_SDK.to_owned(),
    };
    let root = args.dir.join(&args.name);
    if root.exists() {
        return Err(UsageError(format!("{} already exists", root.display())).into());
    }
    let ty = type_name(&args.name);
    let fill = |text: &str| {
        text.replace("{NAME}", &args.name)
            .replace("{TYPE}", &ty)
            .replace("{STAGE}", args.stage.name())
            .replace("{SDK}", &sdk.replace('\\', "/"))
            .replace("{FILE}", &args.name.replace('-', "_"))
    };
    write(&root.join("Cargo.toml"), &fill(CARGO_TOML))?;
    write(&root.join("src/lib.rs"), &fill(template))?;
    write(&root.join("README.md"), &fill(README))?;
    write(&root.join(".gitignore"), "/target\n")?;
    if args.sdk_path.is_none() {
        write_sdk(&root.join(VENDORED_SDK))?;
        write(&root.join("Cargo.lock"), embedded::CARGO_LOCK)?;
    }
    println!(
        "created {} ({} plugin {ty}); see its README.md to build, check and upload it",
        root.display(),
        args.stage
    );
    Ok(ExitCode::SUCCESS)
}

/// The SDK this binary carries, as a crate of its own at `dir`.
fn write_sdk(dir: &Path) -> Result<()> {
    for (path, text) in embedded::SDK_FILES {
        write(&dir.join(path), text)?;
    }
    let manifest = SDK_CARGO_TOML
        .replace("{VERSION}", env!("CARGO_PKG_VERSION"))
        .replace("{DEPENDENCIES}", embedded::SDK_DEPENDENCIES);
    write(&dir.join("Cargo.toml"), &manifest)?;
    // The SDK's money arithmetic is the host's crate `sluice-money`, vendored beside it.
    let money = dir.with_file_name("sluice-money");
    for (path, text) in embedded::MONEY_FILES {
        write(&money.join(path), text)?;
    }
    write(
        &money.join("Cargo.toml"),
        &MONEY_CARGO_TOML.replace("{VERSION}", env!("CARGO_PKG_VERSION")),
    )
}

fn write(path: &Path, text: &str) -> Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    std::fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))
}

const CARGO_TOML: &str = r#"[package]
name = "{NAME}"
version = "0.1.0"
edition = "2024"
publish = false

[lib]
# cdylib: the component; rlib: so that `cargo test` can call the plugin natively.
crate-type = ["cdylib", "rlib"]

[dependencies]
sluice-sdk = { path = "{SDK}" }

# Small components load and instantiate faster; Sluice instantiates one per call.
[profile.release]
opt-level = "s"
lto = true
codegen-units = 1
panic = "abort"
strip = true

# A crate of its own, even inside another workspace.
[workspace]
"#;

const SDK_CARGO_TOML: &str = r#"# The Sluice plugin SDK, written by `sluice plugin new` from the copy the sluice
# binary carries (the SDK of that binary's version).
[package]
name = "sluice-sdk"
version = "{VERSION}"
edition = "2024"
rust-version = "1.95"
license = "Apache-2.0"
publish = false

[dependencies]
{DEPENDENCIES}"#;

const MONEY_CARGO_TOML: &str = r#"# Exact money shared by the Sluice host and its SDK, written by `sluice plugin new`.
[package]
name = "sluice-money"
version = "{VERSION}"
edition = "2024"
rust-version = "1.95"
license = "Apache-2.0"
publish = false

[features]
serde = ["dep:serde"]

[dependencies]
serde = { version = "1", features = ["derive"], optional = true }
"#;

const README: &str = r#"# {NAME}

A Sluice {STAGE} plugin.

Build the component (needs `rustup target add wasm32-wasip2`):

    cargo build --release --target wasm32-wasip2

Test it natively, check it against the {STAGE} world and run it once on a sample:

    cargo test
    sluice plugin check --stage {STAGE} target/wasm32-wasip2/release/{FILE}.wasm
    sluice plugin run --stage {STAGE} target/wasm32-wasip2/release/{FILE}.wasm --sample

Upload it as your {STAGE} plugin (a new version, active at once; `--no-activate` to
only store it; `--config KEY=VALUE` for settings the plugin reads with
`sluice_sdk::config::get`):

    sluice plugin upload --stage {STAGE} target/wasm32-wasip2/release/{FILE}.wasm \
        --url http://127.0.0.1:8025 --key "$SLUICE_KEY"

Then `GET /v1/plugins` lists your versions with their call counters,
`GET /v1/plugins/{STAGE}/logs` shows what the plugin logged, and
`POST /v1/plugins/{STAGE}/rollback` goes back to the version before.

`vendor/sluice-sdk` is the plugin SDK of the `sluice` binary that wrote this crate
(`cargo doc --open` shows its guide); `Cargo.lock` pins the versions it was tested
with. Nothing else is needed but crates.io.
"#;

fn template(stage: Stage) -> &'static str {
    match stage {
        Stage::Route => ROUTE,
        Stage::Bill => BILL,
        Stage::Ingest => INGEST,
        Stage::Bounce => BOUNCE,
        Stage::Send => SEND,
    }
}

const SEND: &str = r#"//! {TYPE}: what a relay's reply means for one recipient. 2xx is delivered; a 4xx is
//! retried with a doubling delay for up to `max_age_hours` (default 24); a 5xx fails;
//! no reply at all tries the next relay.

use sluice_sdk::send::*;

/// The plugin.
pub struct {TYPE};

impl SendPolicy for {TYPE} {
    fn decide(attempt: Attempt) -> SendDecision {
        let Some(reply) = attempt.reply else {
            return SendDecision::NextRelay(attempt.transport_error.unwrap_or_default());
        };
        let max_age_hours: u64 = sluice_sdk::config::get("max_age_hours")
            .and_then(|h| h.parse().ok())
            .unwrap_or(24);
        match reply.code {
            200..=299 => SendDecision::Delivered,
            400..=499 if attempt.age_secs < max_age_hours * 3600 => SendDecision::Retry(Retry {
                after_secs: 60u32.saturating_mul(1 << attempt.attempt.min(10)),
                reason: format!("{} {}", reply.code, reply.text),
            }),
            _ => SendDecision::Fail(format!("{} {}", reply.code, reply.text)),
        }
    }
}

sluice_sdk::export_send_policy!({TYPE});

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_sdk::testing;

    #[test]
    fn retries_temporary_refusals_with_backoff_and_fails_permanent_ones() {
        assert_eq!(
            {TYPE}::decide(testing::attempt(250, "2.0.0", "ok")),
            SendDecision::Delivered
        );
        let mut again = testing::attempt(451, "4.7.1", "try later");
        again.attempt = 3;
        assert!(matches!({TYPE}::decide(again), SendDecision::Retry(r) if r.after_secs == 480));
        assert!(matches!(
            {TYPE}::decide(testing::attempt(550, "5.1.1", "no such user")),
            SendDecision::Fail(_)
        ));
    }
}
"#;

const ROUTE: &str = r#"//! {TYPE}: relays that are up, those with spare connections first.

use sluice_sdk::route::*;

/// The plugin.
pub struct {TYPE};

impl Router for {TYPE} {
    fn route(input: RouteInput) -> RouteDecision {
        let mut up: Vec<Relay> = input.relays.into_iter().filter(|r| r.up).collect();
        if up.is_empty() {
            return RouteDecision::Defer(Deferral {
                delay_secs: 60,
                reason: "no relay is up".into(),
            });
        }
        up.sort_by_key(|r| r.in_flight >= r.connection_limit);
        sluice_sdk::log::debug(&format!("{} relays up", up.len()));
        RouteDecision::Relays(up.into_iter().map(|r| r.id).collect())
    }
}

sluice_sdk::export_router!({TYPE});

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_sdk::testing;

    #[test]
    fn skips_relays_that_are_down_and_puts_full_ones_last() {
        let mut full = testing::relay("full");
        full.in_flight = full.connection_limit;
        let mut down = testing::relay("down");
        down.up = false;
        let input = testing::route_input(vec![full, down, testing::relay("free")]);
        assert_eq!(
            {TYPE}::route(input),
            RouteDecision::Relays(vec!["free".into(), "full".into()])
        );
    }
}
"#;

const BILL: &str = r#"//! {TYPE}: a price per delivered message, from the `price` setting (default 0.0004).

use sluice_sdk::bill::*;

/// The plugin.
pub struct {TYPE};

impl Rater for {TYPE} {
    fn rate(input: BillInput) -> Result<BillOutput, String> {
        let price = sluice_sdk::config::get("price").unwrap_or_else(|| "0.0004".into());
        let price = Decimal::parse(&price).map_err(|e| format!("setting price: {e}"))?;
        let amount = price.times_in_micros(1).ok_or("the price overflows")?;
        let charges = input
            .events
            .into_iter()
            .filter(|e| e.outcome == Outcome::Delivered)
            .map(|e| Charge {
                event_key: e.key,
                service: "outbound-message".into(),
                quantity: 1,
                unit_price: price,
                amount,
            })
            .collect();
        Ok(BillOutput {
            charges,
            currency: "EUR".into(),
        })
    }
}

sluice_sdk::export_rater!({TYPE});

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_sdk::testing;

    #[test]
    fn charges_delivered_messages_only() {
        let events = vec![
            testing::usage_event("k1", Outcome::Delivered, 1000),
            testing::usage_event("k2", Outcome::Bounced, 1000),
        ];
        testing::set_config(&[("price", "0.0005")]);
        let out = {TYPE}::rate(testing::bill_input("", events)).unwrap();
        assert_eq!(out.charges.len(), 1);
        assert_eq!(out.charges[0].amount, 500);
    }
}
"#;

const INGEST: &str = r#"//! {TYPE}: accepts mail from the tenant's own domains and tags it.

use sluice_sdk::ingest::*;

/// The plugin.
pub struct {TYPE};

impl IngestFilter for {TYPE} {
    fn check(submission: Submission) -> IngestDecision {
        let domain = submission.sender.rsplit('@').next().unwrap_or("").to_ascii_lowercase();
        if !submission.allowed_sender_domains.iter().any(|d| d == "*" || *d == domain) {
            return IngestDecision::Reject(Rejection {
                code: 550,
                reason: format!("{domain:?} is not one of your sender domains"),
            });
        }
        IngestDecision::Accept(Acceptance {
            add_headers: Vec::new(),
            add_tags: vec!["checked".into()],
        })
    }
}

sluice_sdk::export_ingest_filter!({TYPE});

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_sdk::testing;

    #[test]
    fn accepts_own_domains_only() {
        assert!(matches!(
            {TYPE}::check(testing::submission("a@example.com")),
            IngestDecision::Accept(_)
        ));
        assert!(matches!(
            {TYPE}::check(testing::submission("a@elsewhere.test")),
            IngestDecision::Reject(_)
        ));
    }
}
"#;

const BOUNCE: &str = r#"//! {TYPE}: reads SMTP replies by their enhanced status code.

use sluice_sdk::bounce::*;

/// The plugin.
pub struct {TYPE};

impl BounceParser for {TYPE} {
    fn parse(input: BounceInput) -> BounceOutput {
        let BounceInput::Reply(ReplyInput { recipient, reply }) = input else {
            return BounceOutput {
                results: Vec::new(),
                notes: vec!["only SMTP replies are read".into()],
            };
        };
        let status = reply.enhanced.clone().unwrap_or_default();
        let reason = match status.as_str() {
            "5.1.1" | "5.1.0" => Reason::Userunknown,
            "4.2.2" | "5.2.2" => Reason::Mailboxfull,
            _ => Reason::Undefined,
        };
        let hard = reply.code >= 500;
        BounceOutput {
            results: vec![BounceResult {
                recipient,
                status,
                reply_code: Some(reply.code),
                reason,
                hard,
                action: if hard { "failed" } else { "delayed" }.into(),
                diagnostic: reply.text,
                original_message_id: None,
                verp_token: None,
            }],
            notes: Vec::new(),
        }
    }
}

sluice_sdk::export_bounce_parser!({TYPE});

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unknown_user_is_a_hard_bounce() {
        let out = {TYPE}::parse(BounceInput::Reply(ReplyInput {
            recipient: "x@example.org".into(),
            reply: SmtpReply {
                code: 550,
                enhanced: Some("5.1.1".into()),
                text: "no such user".into(),
            },
        }));
        assert_eq!(out.results[0].reason, Reason::Userunknown);
        assert!(out.results[0].hard);
    }
}
"#;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_become_types() {
        assert_eq!(type_name("my-router"), "MyRouter");
        assert_eq!(type_name("tiered_rater2"), "TieredRater2");
        assert!(valid_name("my-router"));
        assert!(!valid_name("My Router"));
        assert!(!valid_name("9lives"));
    }
}
