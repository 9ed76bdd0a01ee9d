//! The default bounce plugin, built as a component and run through the host,
//! against 482 real bounces labelled by Sisimai (`tests/data/bounces`).
//!
//! The floors are the figures reached; they may only go up. Every message
//! is also run with CRLF line endings and must give the same results.
//!
//! A third of the families (the MTAs and providers that wrote the bounces)
//! are held out (`data/bounces/families.jsonl`): no rule is written from
//! them, and their own floors measure how the parser does on writers it
//! was not tuned on.

use sluice::bounce_eval::{self, Manifest, Metric, Report, Split};
use sluice::builtin;
use sluice::runtime::{Plugin, PluginSpec};
use sluice::stage::{BounceInput, BounceOutput, Stage};
use sluice_tests::runtime;
use std::path::Path;
use std::time::Duration;

/// Agreement floors in basis points (1/100 %) over the labelled rows of the
/// dev families (until issue 19 these were over all rows, held-out ones
/// included: 99.00 / 98.01 / 97.02 / 98.41 %, the dev rows then scoring
/// what they score now). Issue 19's third session relabelled an unknown
/// mailbox at an unnamed SMTP step `userunknown` (RFC 3463 X.1.1; Sisimai
/// says `filtered`), on dev and held-out rows alike, by the mechanical rule
/// of `tools/relabel_unnamed_step.py`, and the parser follows the RFC: on
/// Sisimai's own labels the dev reason is 92.58 % (see BENCHMARKS.md).
/// Fourth session: amavisd-new's verdict (`Reject, id=... - SPAM`) raised
/// the dev reason to 98.51 %.
const FLOORS: [(Metric, u64); 4] = [
    (Metric::Recipient, 9940),
    (Metric::Status, 9881),
    (Metric::Reason, 9851),
    (Metric::Hard, 9910),
];

/// Floors on the held-out families alone, in basis points.
const HELD_OUT_FLOORS: [(Metric, u64); 4] = [
    (Metric::Recipient, HELD_OUT_RECIPIENT),
    (Metric::Status, HELD_OUT_STATUS),
    (Metric::Reason, HELD_OUT_REASON),
    (Metric::Hard, HELD_OUT_HARD),
];
// Lowered in issue 19 (95.23 -> 94.04 % reason, 96.42 -> 95.83 % status,
// 97.61 -> 96.42 % hard): rules written from RFCs and published MTA texts
// moved two rows of these families, which an earlier classifier had been
// fitted to. A held-out score never decides which rule stays (that would fit
// the held-out families); these floors catch silent changes, and a lower
// figure is reported in BENCHMARKS.md, not reverted. Third session: the
// labelling convention of the dev floors above (10 held-out rows relabelled
// by the same mechanical rule) raised reason to 95.23 %, then two RFC
// readings where Sisimai decides otherwise (RFC 7505's X.7.27 is the sender
// refused, not `notaccept`; a refused TCP connection is RFC 3463's X.4.1
// "no answer from host", not `blocked`) took two rows away: 94.04 %, the
// floor before the session; status and hard rose.
// Fifth session (9404 -> 9345): the IANA registry followed throughout
// (an unregistered detail or the generic X.7.1 read by RFC 3463's subject
// when nothing else decides; X.7.16-18, X.7.28, X.4.1, X.5.6) moved one row
// of these families; not reverted, by the rule above (BENCHMARKS.md).
const HELD_OUT_RECIPIENT: u64 = 9821;
const HELD_OUT_STATUS: u64 = 9642;
const HELD_OUT_REASON: u64 = 9345;
const HELD_OUT_HARD: u64 = 9702;

fn plugin() -> Plugin {
    let b = builtin::default_for(Stage::Bounce);
    let mut spec = PluginSpec::for_stage(Stage::Bounce);
    spec.limits.reuse_instances = true;
    // This test measures accuracy, not speed (that is `sluice bounce bench`).
    // The deadline is wall time, and a loaded CI machine running the tests of
    // this file in parallel through a debug host can stall a call past the
    // stage's 250 ms default.
    spec.limits.timeout = Duration::from_secs(10);
    runtime()
        .load(Stage::Bounce, b.name, b.wasm, spec)
        .expect("the default bounce plugin loads")
}

fn manifest() -> Manifest {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("data/bounces/dev-manifest.jsonl");
    Manifest::read(&path).expect("the corpus manifest reads")
}

fn parse(plugin: &Plugin, bytes: Vec<u8>) -> BounceOutput {
    plugin
        .bounce(&BounceInput::Email(bytes))
        .expect("the plugin never fails on an e-mail")
}

/// LF (and lone CR) line endings turned into CRLF.
fn crlf(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len() + bytes.len() / 20);
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'\r' if bytes.get(i + 1) == Some(&b'\n') => {
                out.extend_from_slice(b"\r\n");
                i += 1;
            }
            b'\r' | b'\n' => out.extend_from_slice(b"\r\n"),
            b => out.push(b),
        }
        i += 1;
    }
    out
}

fn report(plugin: &Plugin, manifest: &Manifest) -> Report {
    bounce_eval::evaluate(manifest, |m| Ok::<_, ()>(parse(plugin, m.bytes.clone())))
        .expect("parsing does not fail")
}

#[test]
fn corpus_accuracy_holds_its_floors() {
    let manifest = manifest();
    let report = report(&plugin(), &manifest);
    let all = report.scores;
    println!("{all}");
    assert!(all.messages > 400, "only {} messages ran", all.messages);
    assert!(all.labelled > 400, "only {} labelled rows", all.labelled);
    let s = report.by_split()[&Split::Dev];
    assert!(s.labelled > 300, "only {} dev rows", s.labelled);
    for (metric, floor) in FLOORS {
        let got = s.basis_points(metric);
        assert!(
            got >= floor,
            "{metric:?}: {got} basis points, below the floor of {floor}\n{s}"
        );
    }
}

#[test]
fn held_out_families_hold_their_floors() {
    let manifest = manifest();
    let report = report(&plugin(), &manifest);
    let by = report.by_split();
    let held = by[&Split::Heldout];
    println!("{}", report.side_by_side());
    assert!(held.labelled > 100, "only {} held-out rows", held.labelled);
    for (metric, floor) in HELD_OUT_FLOORS {
        let got = held.basis_points(metric);
        assert!(
            got >= floor,
            "held-out {metric:?}: {got} basis points, below the floor of {floor}\n{}",
            report.side_by_side()
        );
    }
}

/// Floors on the hand-labelled flufl.bounce families (`data/bounces-flufl`),
/// all held out but Postfix, in basis points. Issue 19's sixth session
/// (8750 / 8437 / 8437 / 8437 before): Exchange 5.5's unquoted
/// "<address> on <date>" recipient lines, from Microsoft's descriptions of
/// its NDRs, found two more recipients.
const FLUFL_HELD_OUT_FLOORS: [(Metric, u64); 4] = [
    (Metric::Recipient, 9375),
    (Metric::Status, 9062),
    (Metric::Reason, 9062),
    (Metric::Hard, 9062),
];

#[test]
fn flufl_families_hold_their_floors() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("data/bounces-flufl/manifest.jsonl");
    let manifest = Manifest::read(&path).expect("the flufl manifest reads");
    let report = report(&plugin(), &manifest);
    println!("{}", report.side_by_side());
    let held = report.by_split()[&Split::Heldout];
    assert!(held.labelled >= 30, "only {} held-out rows", held.labelled);
    for (metric, floor) in FLUFL_HELD_OUT_FLOORS {
        let got = held.basis_points(metric);
        assert!(
            got >= floor,
            "flufl held-out {metric:?}: {got} basis points, below the floor of {floor}\n{}",
            report.side_by_side()
        );
    }
}

/// Floors on the hand-labelled messages of the `bounced` package
/// (`data/bounces-bounced`), labelled after the rules of issue 19 were
/// written: Postfix and Exchange 2007+ are dev, the rest held out.
const BOUNCED_HELD_OUT_FLOORS: [(Metric, u64); 4] = [
    (Metric::Recipient, 9310),
    (Metric::Status, 8275),
    (Metric::Reason, 7931),
    (Metric::Hard, 9310),
];

#[test]
fn bounced_families_hold_their_floors() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("data/bounces-bounced/manifest.jsonl");
    let manifest = Manifest::read(&path).expect("the bounced manifest reads");
    let report = report(&plugin(), &manifest);
    println!("{}", report.side_by_side());
    let by = report.by_split();
    let held = by[&Split::Heldout];
    assert!(held.labelled >= 29, "only {} held-out rows", held.labelled);
    for (metric, floor) in BOUNCED_HELD_OUT_FLOORS {
        let got = held.basis_points(metric);
        assert!(
            got >= floor,
            "bounced held-out {metric:?}: {got} basis points, below the floor of {floor}\n{}",
            report.side_by_side()
        );
    }
    // The dev families (Postfix, Exchange) agree on every field.
    let dev = by[&Split::Dev];
    assert_eq!(
        dev.basis_points(Metric::Reason),
        10_000,
        "{}",
        report.side_by_side()
    );
}

/// Floors on the hand-labelled test messages of Perl's
/// Mail::DeliveryStatus::BounceParser (`data/bounces-bounceparser`), all
/// held out; measured once before issue 19's fourth session wrote any rule,
/// and not read for rules since (see its README). Issue 19's sixth session
/// (reason 8181 before): documented spam refusals (Microsoft's, SpamAssassin's
/// report, the word itself), SPF explanations and RFC 3463's X.2.1.
const BOUNCEPARSER_HELD_OUT_FLOORS: [(Metric, u64); 4] = [
    (Metric::Recipient, 9834),
    (Metric::Status, 9752),
    (Metric::Reason, 8760),
    (Metric::Hard, 9669),
];

#[test]
fn bounceparser_families_hold_their_floors() {
    let path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("data/bounces-bounceparser/manifest.jsonl");
    let manifest = Manifest::read(&path).expect("the BounceParser manifest reads");
    let report = report(&plugin(), &manifest);
    println!("{}", report.side_by_side());
    let held = report.by_split()[&Split::Heldout];
    assert!(held.labelled >= 121, "only {} held-out rows", held.labelled);
    for (metric, floor) in BOUNCEPARSER_HELD_OUT_FLOORS {
        let got = held.basis_points(metric);
        assert!(
            got >= floor,
            "BounceParser held-out {metric:?}: {got} basis points, below the floor of {floor}\n{}",
            report.side_by_side()
        );
    }
}

/// The report of one labelled set (`data/<set>/manifest.jsonl`).
fn set_report(set: &str) -> Report {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("data")
        .join(set)
        .join("manifest.jsonl");
    let manifest = Manifest::read(&path).unwrap_or_else(|e| panic!("{set}: {e}"));
    report(&plugin(), &manifest)
}

/// Asserts the floors (basis points) of one split of a set, over at least
/// `min_rows` labelled rows.
fn holds_floors(
    set: &str,
    report: &Report,
    split: Split,
    min_rows: usize,
    floors: [(Metric, u64); 4],
) {
    let scores = report.by_split().get(&split).copied().unwrap_or_default();
    assert!(
        scores.labelled >= min_rows,
        "{set} {split:?}: only {} labelled rows",
        scores.labelled
    );
    for (metric, floor) in floors {
        let got = scores.basis_points(metric);
        assert!(
            got >= floor,
            "{set} {split:?} {metric:?}: {got} basis points, below the floor of {floor}\n{}",
            report.side_by_side()
        );
    }
}

/// The hand-labelled test messages of npm's `baunsu` (`data/bounces-baunsu`),
/// all never-seen: labelled and measured once before issue 19's fifth
/// session wrote any rule, their misses never read.
#[test]
fn baunsu_never_seen_families_hold_their_floors() {
    let report = set_report("bounces-baunsu");
    println!("{}", report.side_by_side());
    holds_floors(
        "baunsu",
        &report,
        Split::Heldout,
        12,
        [
            (Metric::Recipient, 10_000),
            (Metric::Status, 10_000),
            (Metric::Reason, 9166),
            (Metric::Hard, 9166),
        ],
    );
}

/// The hand-labelled test messages of PHP Bounce Handler
/// (`data/bounces-phpbh`): the Postfix rows are training (a dev family),
/// the rest never-seen (families held out in the other corpora, or new).
#[test]
fn php_bounce_handler_families_hold_their_floors() {
    let report = set_report("bounces-phpbh");
    println!("{}", report.side_by_side());
    holds_floors(
        "phpbh",
        &report,
        Split::Dev,
        3,
        [
            (Metric::Recipient, 10_000),
            (Metric::Status, 10_000),
            (Metric::Reason, 10_000),
            (Metric::Hard, 10_000),
        ],
    );
    holds_floors(
        "phpbh",
        &report,
        Split::Heldout,
        12,
        [
            (Metric::Recipient, 10_000),
            (Metric::Status, 9166),
            (Metric::Reason, 8333),
            (Metric::Hard, 9166),
        ],
    );
}

/// The training rows of flufl.bounce's messages (Postfix, a dev family)
/// agree on every field.
#[test]
fn flufl_training_rows_agree_on_every_field() {
    let report = set_report("bounces-flufl");
    holds_floors(
        "flufl",
        &report,
        Split::Dev,
        3,
        [
            (Metric::Recipient, 10_000),
            (Metric::Status, 10_000),
            (Metric::Reason, 10_000),
            (Metric::Hard, 10_000),
        ],
    );
}

#[test]
fn a_third_of_the_writing_families_are_held_out() {
    let manifest = manifest();
    let mut families = std::collections::BTreeMap::new();
    for row in &manifest.rows {
        let family = row.family.as_deref().expect("every row names its family");
        // Not writers: messages with nothing to find, and a mixed folder.
        if family != "not-bounce" && family != "to-be-debugged" {
            families.insert(family, row.split());
        }
    }
    let held = families.values().filter(|s| **s == Split::Heldout).count();
    assert!(
        held * 100 >= families.len() * 32,
        "{held} of {} families held out",
        families.len()
    );
}

#[test]
fn crlf_line_endings_give_the_same_results() {
    let manifest = manifest();
    let plugin = plugin();
    let mut compared = 0;
    for m in &manifest.messages {
        let lf = parse(&plugin, m.bytes.clone());
        let dos = parse(&plugin, crlf(&m.bytes));
        assert_eq!(
            lf.results, dos.results,
            "{} message {}: CRLF changes the results",
            m.file, m.msg
        );
        compared += 1;
    }
    assert!(compared > 400, "only {compared} messages compared");
}

#[test]
fn every_message_yields_results_or_a_note() {
    let manifest = manifest();
    let plugin = plugin();
    for m in &manifest.messages {
        let out = parse(&plugin, m.bytes.clone());
        assert!(
            !out.results.is_empty() || !out.notes.is_empty(),
            "{} message {}: neither results nor a note",
            m.file,
            m.msg
        );
    }
}
