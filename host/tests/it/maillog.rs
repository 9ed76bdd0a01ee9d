//! Golden tests of the MTA-log readers: every log under
//! `tests/data/maillogs/` (plain or gzip) is read and its transfers and
//! counters compared with `NAME.expected.json` beside it.
//! `UPDATE_EXPECT=1 cargo test -p sluice --test it maillog::` re-blesses.

use serde_json::{Value, json};
use sluice::maillog::{Format, ReaderConfig, Transfer, YearRule, transfers_of};
use std::io::Read;
use std::path::{Path, PathBuf};

fn data() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/data/maillogs")
}

/// Every case: file, format, and how it is read.
fn cases() -> Vec<(&'static str, Format, ReaderConfig)> {
    let qmail = |host: &str| ReaderConfig {
        host: host.into(),
        ..ReaderConfig::default()
    };
    vec![
        (
            "qmail/synthetic/edgecases.syslog.log",
            Format::Qmail,
            ReaderConfig {
                year: YearRule::Start(2007),
                ..qmail("saracen")
            },
        ),
        (
            "qmail/synthetic/edgecases.multilog.log",
            Format::Qmail,
            qmail("saracen"),
        ),
        (
            "qmail/synthetic/edgecases.plain.log",
            Format::Qmail,
            qmail("saracen"),
        ),
        (
            "qmail/synthetic/stale-and-reuse.plain.log",
            Format::Qmail,
            qmail("mx1"),
        ),
        (
            "qmail/synthetic/same-recipient-twice.plain.log",
            Format::Qmail,
            qmail("mx1"),
        ),
        (
            "qmail/glidenote-multilog-2014-02-12.log",
            Format::Qmail,
            qmail("glidenote"),
        ),
        ("qmail/alotofwe-lwq-one.log", Format::Qmail, qmail("lwq")),
        ("qmail/alotofwe-lwq-two.log", Format::Qmail, qmail("lwq")),
        ("qmail/alotofwe-lwq-three.log", Format::Qmail, qmail("lwq")),
        (
            "qmail/fail2ban-qmail.log",
            Format::Qmail,
            ReaderConfig {
                year: YearRule::Start(2006),
                ..qmail("sd6")
            },
        ),
        (
            "postfix/pixelpark-helga-2023-03-14_16.mail.log.gz",
            Format::Postfix,
            ReaderConfig::default(),
        ),
        (
            "postfix/synthetic/newyear-filter.syslog.log",
            Format::Postfix,
            ReaderConfig {
                year: YearRule::Start(2023),
                filter_transports: vec!["scanner".into()],
                ..ReaderConfig::default()
            },
        ),
        (
            "postfix/fail2ban-postfix.log",
            Format::Postfix,
            ReaderConfig {
                year: YearRule::Start(2005),
                ..ReaderConfig::default()
            },
        ),
    ]
}

fn read(path: &Path) -> Vec<u8> {
    let raw = std::fs::read(path).unwrap_or_else(|e| panic!("{path:?}: {e}"));
    if path.extension().is_some_and(|e| e == "gz") {
        let mut out = Vec::new();
        flate2::read::MultiGzDecoder::new(&raw[..])
            .read_to_end(&mut out)
            .unwrap();
        out
    } else {
        raw
    }
}

fn run(file: &str, format: Format, config: ReaderConfig) -> (Vec<Transfer>, Value) {
    let (transfers, report) = transfers_of(format, config, &read(&data().join(file)));
    let got = json!({
        "transfers": transfers,
        "counters": report.counters,
        "unparseable_lines": report.unparseable_samples.iter().map(|p| p.line).collect::<Vec<_>>(),
    });
    (transfers, got)
}

fn expected_path(file: &str) -> PathBuf {
    let stem = file.trim_end_matches(".gz").trim_end_matches(".log");
    data().join(format!("{stem}.expected.json"))
}

#[test]
fn every_log_gives_its_expected_transfers() {
    let bless = std::env::var_os("UPDATE_EXPECT").is_some();
    let mut failures = Vec::new();
    let cases = cases();
    assert!(cases.len() >= 13);
    for (file, format, config) in cases {
        let (_, got) = run(file, format, config);
        let path = expected_path(file);
        let text = serde_json::to_string_pretty(&got).unwrap() + "\n";
        if bless {
            std::fs::write(&path, &text).unwrap();
            continue;
        }
        match std::fs::read_to_string(&path) {
            Ok(want) if want == text => {}
            Ok(_) => failures.push(format!("{file}: differs from {path:?}:\n{text}")),
            Err(e) => failures.push(format!("{file}: {path:?}: {e}")),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

/// The same events in three timestamp forms give the same transfers.
#[test]
fn qmail_timestamp_forms_agree() {
    let read = |f: &str| {
        let config = ReaderConfig {
            host: "saracen".into(),
            year: YearRule::Start(2007),
            ..ReaderConfig::default()
        };
        run(f, Format::Qmail, config).0
    };
    let plain = read("qmail/synthetic/edgecases.plain.log");
    assert_eq!(read("qmail/synthetic/edgecases.syslog.log"), plain);
    assert_eq!(read("qmail/synthetic/edgecases.multilog.log"), plain);
}

/// The project's hand-made expectation (`edgecases.expected-transfers.tsv`):
/// exactly its `success` rows are transfers, with the message's sender and
/// size, the delivery's start (via the message) and done times.
#[test]
fn qmail_edge_cases_match_the_expected_tsv() {
    let tsv = String::from_utf8(read(
        &data().join("qmail/synthetic/edgecases.expected-transfers.tsv"),
    ))
    .unwrap();
    let want: Vec<(String, String, u64, String, i64)> = tsv
        .lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| l.split('\t').collect::<Vec<_>>())
        .filter(|f| f[8] == "success")
        .map(|f| {
            let ms = |s: &str| {
                let (a, b) = s.split_once('.').unwrap();
                a.parse::<i64>().unwrap() * 1000 + b[..3].parse::<i64>().unwrap()
            };
            (
                f[2].to_owned(),
                f[5].to_owned(),
                f[3].parse().unwrap(),
                f[4].to_owned(),
                ms(f[7]),
            )
        })
        .collect();
    let (got, report) = {
        let (t, v) = run(
            "qmail/synthetic/edgecases.plain.log",
            Format::Qmail,
            ReaderConfig::default(),
        );
        (t, v)
    };
    let got: Vec<_> = got
        .into_iter()
        .map(|t| (t.sender, t.recipient, t.size, t.relay, t.delivered_ms))
        .collect();
    assert_eq!(got, want);
    // the abandoned delivery 13705, the one pending at EOF, the message queued at EOF
    assert_eq!(report["counters"]["abandoned_deliveries"], 1);
    assert_eq!(report["counters"]["in_flight_at_eof"], 1);
    assert_eq!(report["counters"]["queued_at_eof"], 1);
    assert_eq!(report["counters"]["joined_continuations"], 0);
}

/// splogger's folded 1,028-byte reply is joined, not counted unparseable.
#[test]
fn split_syslog_records_are_joined() {
    let config = ReaderConfig {
        year: YearRule::Start(2007),
        ..ReaderConfig::default()
    };
    let (_, report) = run(
        "qmail/synthetic/edgecases.syslog.log",
        Format::Qmail,
        config,
    );
    assert_eq!(report["counters"]["joined_continuations"], 1);
    assert_eq!(report["counters"]["unparseable"], 0);
    assert_eq!(report["counters"]["failures"], 4);
}

/// Keys are stable across reads and unique within a log, and the re-used
/// inode number gives two different keys.
#[test]
fn keys_are_stable_and_unique() {
    for (file, format, config) in cases() {
        let (a, _) = run(file, format, config.clone());
        let (b, _) = run(file, format, config);
        assert_eq!(a, b, "{file}");
        let mut keys: Vec<_> = a.iter().map(|t| &t.key).collect();
        keys.sort();
        keys.dedup();
        assert_eq!(keys.len(), a.len(), "{file}: duplicate keys");
    }
}

/// Each amavis hop of the real log is skipped and its re-injection billed:
/// 364 `status=sent` lines, 181 of them into the filter on 127.0.0.1 and 3
/// local deliveries `forwarded as` a new queue id (delivered again).
#[test]
fn postfix_content_filter_is_billed_once() {
    let (t, report) = run(
        "postfix/pixelpark-helga-2023-03-14_16.mail.log.gz",
        Format::Postfix,
        ReaderConfig::default(),
    );
    assert_eq!(report["counters"]["filter_hops"], 181 + 3);
    assert_eq!(t.len(), 364 - 181 - 3);
    assert!(t.iter().all(|t| !t.relay.contains("127.0.0.1")));
    // line 22827 holds invalid UTF-8 and is read like any other
    assert_eq!(report["counters"]["lines"], 69_861);
}
