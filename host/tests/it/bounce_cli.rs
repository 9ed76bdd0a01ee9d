//! `sluice bounce parse` and `sluice bounce eval` as a user runs them: a
//! directory walked (and what bounds the walk), `--explain` naming the rule
//! behind each field, CSV a spreadsheet can open safely, dev and held-out
//! figures side by side.

use serde_json::Value;
use std::path::Path;
use std::process::{Command, Output};

fn sluice(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(args)
        .output()
        .expect("sluice runs")
}

fn ok_stdout(out: &Output) -> String {
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "exit {:?}\nstdout: {stdout}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// A Postfix-style DSN for `rcpt` whose Diagnostic-Code is `diagnostic`.
fn dsn(rcpt: &str, status: &str, diagnostic: &str) -> String {
    format!(
        "From: MAILER-DAEMON@mx.example.org (Mail Delivery System)\n\
To: sender@example.com\n\
Subject: Undelivered Mail Returned to Sender\n\
MIME-Version: 1.0\n\
Content-Type: multipart/report; report-type=delivery-status; boundary=\"B\"\n\
\n\
--B\n\
Content-Type: text/plain\n\
\n\
Your message could not be delivered.\n\
--B\n\
Content-Type: message/delivery-status\n\
\n\
Reporting-MTA: dns; mx.example.org\n\
\n\
Final-Recipient: rfc822; {rcpt}\n\
Action: failed\n\
Status: {status}\n\
Diagnostic-Code: smtp; {diagnostic}\n\
--B--\n"
    )
}

fn lines(stdout: &str) -> Vec<Value> {
    stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

#[test]
fn parse_walks_a_directory_and_explains_each_field() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    std::fs::create_dir_all(root.join("a/b")).unwrap();
    std::fs::write(
        root.join("a/one.eml"),
        dsn(
            "gone@example.net",
            "5.1.1",
            "550 5.1.1 <gone@example.net>: Recipient address rejected: User unknown (in reply to RCPT TO command)",
        ),
    )
    .unwrap();
    std::fs::write(
        root.join("a/b/two"),
        dsn("full@example.net", "4.2.2", "452 4.2.2 Mailbox full"),
    )
    .unwrap();
    // A hidden file is not read; a link back up the tree does not loop.
    std::fs::write(
        root.join("a/.hidden.eml"),
        dsn("hidden@example.net", "5.1.1", "550 x"),
    )
    .unwrap();
    #[cfg(unix)]
    std::os::unix::fs::symlink(root, root.join("a/b/loop")).unwrap();

    let out = sluice(&["bounce", "parse", "--explain", root.to_str().unwrap()]);
    let rows = lines(&ok_stdout(&out));
    let recipients: Vec<&str> = rows
        .iter()
        .map(|r| r["recipient"].as_str().unwrap_or("-"))
        .collect();
    assert_eq!(
        recipients,
        // A directory's files (sorted) come before its subdirectories.
        ["gone@example.net", "full@example.net"],
        "{rows:#?}"
    );
    let gone = &rows[0];
    assert_eq!(gone["reason"], "userunknown");
    assert_eq!(gone["hardbounce"], true);
    let rules = &gone["rules"];
    assert_eq!(rules["recipient"], "dsn-final-recipient", "{rules}");
    assert_eq!(rules["status"], "dsn-status-field", "{rules}");
    assert_eq!(rules["replycode"], "reply-in-diagnostic", "{rules}");
    assert_eq!(rules["hard"], "hard-reason-address-gone", "{rules}");
    assert!(
        rules["reason"].as_str().is_some_and(|r| !r.is_empty()),
        "{rules}"
    );
    let full = &rows[1];
    assert_eq!(
        (&full["reason"], &full["hardbounce"]),
        (&Value::from("mailboxfull"), &Value::from(false))
    );
    assert_eq!(full["rules"]["reason"], "status-narrow");
    assert_eq!(full["rules"]["hard"], "soft-reason-may-pass-later");

    // Without --explain there are no rules.
    let out = sluice(&["bounce", "parse", root.join("a/one.eml").to_str().unwrap()]);
    let rows = lines(&ok_stdout(&out));
    assert!(rows[0].get("rules").is_none(), "{rows:?}");
}

#[test]
fn csv_output_quotes_fields_and_defuses_formulas() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("m.eml");
    // Whoever answers the SMTP session writes the diagnostic: here, a
    // spreadsheet formula with a comma and a quote in it.
    std::fs::write(
        &file,
        dsn(
            "x@example.net",
            "5.7.1",
            "=HYPERLINK(\"http://evil.example/\",\"click\")",
        ),
    )
    .unwrap();
    let out = sluice(&[
        "bounce",
        "parse",
        "--output",
        "csv",
        "--explain",
        file.to_str().unwrap(),
    ]);
    let stdout = ok_stdout(&out);
    let mut rows = stdout.lines();
    assert_eq!(
        rows.next(),
        Some(
            "file,msg,recipient,status,replycode,reason,hardbounce,action,diagnostic,original_message_id,verp_token,rule_recipient,rule_replycode,rule_status,rule_reason,rule_hard"
        )
    );
    let row = rows.next().expect("one result row");
    assert!(
        row.contains(",\"'=HYPERLINK(\"\"http://evil.example/\"\",\"\"click\"\")\","),
        "{row}"
    );
    assert!(row.contains(",x@example.net,5.7.1,"), "{row}");
    assert!(
        row.ends_with(
            ",dsn-final-recipient,none,dsn-status-field,status-class-rfc3463,soft-reason-may-pass-later"
        ),
        "{row}"
    );
    assert_eq!(rows.next(), None);
}

#[test]
fn parse_skips_files_over_the_size_limit_and_reads_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("small.eml"),
        dsn("a@example.net", "5.1.1", "550 5.1.1 user unknown"),
    )
    .unwrap();
    // Larger than the limit given below: skipped before it is read.
    let big = dsn("b@example.net", "5.1.1", &"x".repeat(20_000));
    std::fs::write(dir.path().join("big.eml"), big).unwrap();
    let out = sluice(&[
        "bounce",
        "parse",
        "--max-file-size",
        "10000",
        dir.path().to_str().unwrap(),
    ]);
    let rows = lines(&ok_stdout(&out));
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0]["recipient"], "a@example.net");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("big.eml") && stderr.contains("over --max-file-size"),
        "{stderr}"
    );
}

/// An Amazon SES notification as SES publishes it through SNS by e-mail.
fn ses_bounce(rcpt: &str) -> String {
    let doc = format!(
        r#"{{"notificationType":"Bounce","bounce":{{"bounceType":"Permanent","bounceSubType":"General","bouncedRecipients":[{{"emailAddress":"{rcpt}","action":"failed","status":"5.1.1","diagnosticCode":"smtp; 550 5.1.1 user unknown"}}]}},"mail":{{"source":"s@example.com"}}}}"#
    );
    format!(
        "From: AWS Notifications <no-reply@sns.amazonaws.com>\nSubject: AWS Notification Message\n\n{{\"Type\" : \"Notification\", \"Message\" : \"{}\"}}\n",
        doc.replace('"', "\\\"")
    )
}

#[test]
fn ses_notifications_are_read_and_json_bombs_are_not() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("a-ses.eml"), ses_bounce("gone@example.net")).unwrap();
    // The worst a JSON reader meets: nesting far past any notification's,
    // and millions of tiny values. Neither is a notification; both end
    // quickly inside the plugin's memory and time limits.
    let deep = format!(
        "Subject: AWS Notification Message\n\n{{\"notificationType\":\"Bounce\",\"mail\":{}{}}}\n",
        "[".repeat(1_000_000),
        "]".repeat(1_000_000)
    );
    std::fs::write(dir.path().join("b-deep.eml"), deep).unwrap();
    let wide = format!(
        "Subject: AWS Notification Message\n\n{{\"notificationType\":\"Bounce\",\"mail\":{{}},\"bounce\":{{\"bouncedRecipients\":[{}{{\"emailAddress\":\"x@example.net\"}}]}}}}\n",
        "{},".repeat(2_000_000)
    );
    std::fs::write(dir.path().join("c-wide.eml"), wide).unwrap();
    let out = sluice(&["bounce", "parse", "--explain", dir.path().to_str().unwrap()]);
    let rows = lines(&ok_stdout(&out));
    let ses: Vec<&Value> = rows
        .iter()
        .filter(|r| r["file"].as_str().is_some_and(|f| f.ends_with("a-ses.eml")))
        .collect();
    assert_eq!(ses.len(), 1, "{rows:?}");
    assert_eq!(ses[0]["recipient"], "gone@example.net");
    assert_eq!(ses[0]["reason"], "userunknown");
    assert_eq!(ses[0]["rules"]["recipient"], "ses-bounced-recipient");
    // The bombs give no SES recipient (the plain-text reader may still
    // find an address in them, but never from the JSON).
    assert!(
        rows.iter()
            .all(|r| r["rules"]["recipient"] != "ses-bounced-recipient"
                || r["recipient"] == "gone@example.net"),
        "{rows:?}"
    );
}

#[test]
fn parse_of_a_missing_path_names_it() {
    let out = sluice(&["bounce", "parse", "/nonexistent/sluice-bounce-dir"]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("/nonexistent/sluice-bounce-dir"),
        "{stderr}"
    );
}

fn write_manifest(dir: &Path) {
    std::fs::write(
        dir.join("a.eml"),
        dsn("a@example.net", "5.1.1", "550 5.1.1 user unknown"),
    )
    .unwrap();
    std::fs::write(
        dir.join("b.eml"),
        dsn("b@example.net", "4.2.2", "452 4.2.2 mailbox full"),
    )
    .unwrap();
    std::fs::write(
        dir.join("m.jsonl"),
        concat!(
            r#"{"file":"a.eml","msg":1,"family":"mta-a","recipient":"a@example.net","status":"5.1.1","replycode":"550","reason":"userunknown","hardbounce":true}"#,
            "\n",
            r#"{"file":"b.eml","msg":1,"family":"mta-b","recipient":"b@example.net","status":"4.2.2","replycode":"452","reason":"filtered","hardbounce":false}"#,
            "\n"
        ),
    )
    .unwrap();
    std::fs::write(
        dir.join("families.jsonl"),
        "{\"family\":\"mta-a\",\"split\":\"dev\"}\n{\"family\":\"mta-b\",\"split\":\"heldout\"}\n",
    )
    .unwrap();
}

#[test]
fn eval_reports_dev_and_held_out_side_by_side_and_lists_only_dev_rows() {
    let dir = tempfile::tempdir().unwrap();
    write_manifest(dir.path());
    let manifest = dir.path().join("m.jsonl");
    let out = sluice(&["bounce", "eval", "--verbose", manifest.to_str().unwrap()]);
    let stdout = ok_stdout(&out);
    assert!(
        stdout.contains("| metric | dev (1 families) | held-out (1 families) | all |"),
        "{stdout}"
    );
    assert!(
        stdout.contains("| reason | 1 / 1 (100.00 %) | 0 / 1 (0.00 %) | 1 / 2 (50.00 %) |"),
        "{stdout}"
    );
    // The held-out row disagrees (its label says filtered) but is not shown.
    assert!(!stdout.contains("b@example.net"), "{stdout}");
    assert!(
        stdout.contains("(1 held-out rows disagree; not listed)"),
        "{stdout}"
    );

    // A family the families file does not list is refused, naming it.
    std::fs::write(
        dir.path().join("families.jsonl"),
        "{\"family\":\"mta-a\",\"split\":\"dev\"}\n",
    )
    .unwrap();
    let out = sluice(&["bounce", "eval", manifest.to_str().unwrap()]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("\"mta-b\""), "{stderr}");
}
