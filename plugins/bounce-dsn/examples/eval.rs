//! Native scoring against a labelled manifest, for fast iteration: the same
//! rows and comparisons as `sluice bounce eval` (whose Wasm figures are the
//! ones that count). `cargo run --release -p bounce-dsn --example eval --
//! tests/data/bounces/dev-manifest.jsonl [-v]`.

use bounce_dsn::DsnParser;
use sluice_sdk::bounce::*;
use std::collections::HashMap;
use std::path::Path;

/// The host's mbox split, simplified: `From ` lines after a blank line
/// (or at the start) with a digit in the date, or with an asctime date.
fn split(bytes: &[u8]) -> Vec<Vec<u8>> {
    let text = String::from_utf8_lossy(bytes);
    let mut out: Vec<Vec<u8>> = Vec::new();
    let mut cur: Vec<u8> = Vec::new();
    let mut prev_blank = true;
    let mut pos = 0;
    while pos < bytes.len() {
        let end = bytes[pos..]
            .iter()
            .position(|&b| b == b'\n' || b == b'\r')
            .map(|i| {
                let at = pos + i;
                if bytes[at] == b'\r' && bytes.get(at + 1) == Some(&b'\n') {
                    at + 2
                } else {
                    at + 1
                }
            })
            .unwrap_or(bytes.len());
        let line = &bytes[pos..end];
        let t: &[u8] = {
            let mut l = line;
            while let [rest @ .., b'\n' | b'\r'] = l {
                l = rest;
            }
            l
        };
        let sep = t.starts_with(b"From ") && {
            let words: Vec<&[u8]> = t[5..]
                .split(|b| b.is_ascii_whitespace())
                .filter(|w| !w.is_empty())
                .collect();
            words.len() >= 2
                && (if prev_blank {
                    words[1..].iter().any(|w| w.iter().any(u8::is_ascii_digit))
                } else {
                    words.len() >= 6 && words[4].contains(&b':')
                })
        };
        if sep {
            if cur.iter().any(|b| !b.is_ascii_whitespace()) {
                out.push(std::mem::take(&mut cur));
            }
            cur.clear();
        } else {
            cur.extend_from_slice(line);
        }
        prev_blank = t.is_empty();
        pos = end;
    }
    if cur.iter().any(|b| !b.is_ascii_whitespace()) {
        out.push(cur);
    }
    let _ = text;
    out
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let path = Path::new(&args[1]);
    let verbose = args.iter().any(|a| a == "-v");
    let dir = path.parent().unwrap();
    let mut cache: HashMap<(String, usize), BounceOutput> = HashMap::new();
    let (mut n, mut rc, mut st, mut code, mut re, mut hd) = (0, 0, 0, 0, 0, 0);
    let mut fam: std::collections::BTreeMap<String, [usize; 5]> = Default::default();
    for line in std::fs::read_to_string(path).unwrap().lines() {
        let row: serde_json::Value = serde_json::from_str(line).unwrap();
        let file = row["file"].as_str().unwrap().to_owned();
        let msg = row["msg"].as_u64().unwrap() as usize;
        if row["no_result"].as_bool() == Some(true) {
            continue;
        }
        let out = cache.entry((file.clone(), msg)).or_insert_with(|| {
            let bytes = std::fs::read(dir.join(&file)).unwrap();
            let m = split(&bytes)
                .get(msg.wrapping_sub(1))
                .cloned()
                .unwrap_or_default();
            DsnParser::parse(BounceInput::Email(m))
        });
        let want = row["recipient"].as_str().unwrap_or("").to_ascii_lowercase();
        let got = out.results.iter().find(|r| {
            r.recipient
                .trim()
                .trim_matches(['<', '>'])
                .to_ascii_lowercase()
                == want
        });
        n += 1;
        let family = row["family"].as_str().unwrap_or("").to_owned();
        let f = fam.entry(family.clone()).or_default();
        f[0] += 1;
        let Some(g) = got else {
            if verbose {
                println!(
                    "MISS {family} {file}#{msg} want {want} got {:?}",
                    out.results.iter().map(|r| &r.recipient).collect::<Vec<_>>()
                );
            }
            continue;
        };
        rc += 1;
        f[1] += 1;
        let reason = format!("{:?}", g.reason)
            .to_ascii_lowercase()
            .replace("reason::", "");
        let ok_s = Some(g.status.as_str()) == row["status"].as_str();
        let ok_c = g.reply_code.map(|c| c.to_string()).unwrap_or_default()
            == row["replycode"].as_str().unwrap_or("");
        let ok_r = Some(reason.as_str()) == row["reason"].as_str();
        let ok_h = Some(g.hard) == row["hardbounce"].as_bool();
        st += usize::from(ok_s);
        code += usize::from(ok_c);
        re += usize::from(ok_r);
        hd += usize::from(ok_h);
        f[2] += usize::from(ok_s);
        f[3] += usize::from(ok_r);
        f[4] += usize::from(ok_h);
        if verbose && !(ok_s && ok_r && ok_h) {
            println!(
                "BAD {family} {file}#{msg} {want}\n   want {} {} {} {}\n   got  {} {:?} {} {} [{}]\n   wdiag {}\n   gdiag {}",
                row["status"],
                row["replycode"],
                row["reason"],
                row["hardbounce"],
                g.status,
                g.reply_code,
                reason,
                g.hard,
                row["engine"].as_str().unwrap_or(""),
                row["diagnostic_excerpt"].as_str().unwrap_or(""),
                g.diagnostic.chars().take(240).collect::<String>()
            );
        }
    }
    let pct = |x: usize| x as f64 * 100.0 / n as f64;
    println!(
        "rows {n}: rcpt {rc} {:.2}% status {st} {:.2}% code {code} {:.2}% reason {re} {:.2}% hard {hd} {:.2}%",
        pct(rc),
        pct(st),
        pct(code),
        pct(re),
        pct(hd)
    );
    if args.iter().any(|a| a == "-f") {
        for (k, v) in fam {
            println!(
                "| {k} | {} | {} | {} | {} | {} |",
                v[0], v[1], v[2], v[3], v[4]
            );
        }
    }
}
