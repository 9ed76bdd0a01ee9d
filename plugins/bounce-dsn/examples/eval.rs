//! Native scoring against a labelled manifest, for fast iteration: the same
//! rows and comparisons as `sluice bounce eval` (whose Wasm figures are the
//! ones that count). `cargo run --release -p bounce-dsn --example eval --
//! tests/data/bounces/dev-manifest.jsonl [-v] [-r] [-f] [-c] [-t N] [-d FILE]`.
//!
//! Families marked `heldout` in the `families.jsonl` beside the manifest
//! are scored but never listed by `-v`: no rule is written from them.

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

/// The value of `key` in one flat JSON object: a string (escapes
/// decoded), or a bare number, bool or null as text.
fn field(line: &str, key: &str) -> Option<String> {
    let at = line.find(&format!("\"{key}\":"))? + key.len() + 3;
    let rest = line[at..].trim_start();
    let Some(body) = rest.strip_prefix('"') else {
        let end = rest.find([',', '}']).unwrap_or(rest.len());
        return Some(rest[..end].trim().to_owned());
    };
    let mut out = String::new();
    let mut chars = body.chars();
    while let Some(c) = chars.next() {
        match c {
            '"' => return Some(out),
            '\\' => match chars.next()? {
                'u' => {
                    let hex: String = chars.by_ref().take(4).collect();
                    let c = u32::from_str_radix(&hex, 16).ok()?;
                    out.push(char::from_u32(c).unwrap_or('?'));
                }
                'n' => out.push('\n'),
                't' => out.push('\t'),
                c => out.push(c),
            },
            c => out.push(c),
        }
    }
    None
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let path = Path::new(&args[1]);
    let verbose = args.iter().any(|a| a == "-v");
    let dir = path.parent().unwrap();
    let mut cache: HashMap<(String, usize), BounceOutput> = HashMap::new();
    let (mut n, mut rc, mut st, mut code, mut re, mut hd) = (0, 0, 0, 0, 0, 0);
    let heldout: std::collections::HashSet<String> =
        std::fs::read_to_string(dir.join("families.jsonl"))
            .unwrap_or_default()
            .lines()
            .filter(|l| field(l, "split").as_deref() == Some("heldout"))
            .filter_map(|l| field(l, "family"))
            .collect();
    // [rows, rcpt, status, code, reason, hard] for dev and held-out.
    // [rows, rcpt, status, code, reason, hard, reason by Sisimai's own
    // label where the corpus' convention differs] for dev and held-out.
    let mut tally = [[0usize; 7]; 2];
    let mut fam: std::collections::BTreeMap<String, [usize; 5]> = Default::default();
    // `-c`: expected -> given reason (and status) counts per split (counts only: the
    // held-out rows themselves are never listed).
    let mut confusion: [std::collections::BTreeMap<(String, String), usize>; 2] =
        Default::default();
    for line in std::fs::read_to_string(path).unwrap().lines() {
        let get = |k: &str| field(line, k).unwrap_or_default();
        let file = get("file");
        let msg: usize = get("msg").parse().unwrap();
        if get("no_result") == "true" {
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
        let want = get("recipient").to_ascii_lowercase();
        let got = out.results.iter().find(|r| {
            r.recipient
                .trim()
                .trim_matches(['<', '>'])
                .to_ascii_lowercase()
                == want
        });
        n += 1;
        let family = get("family");
        let held = heldout.contains(&family);
        let sp = &mut tally[usize::from(held)];
        sp[0] += 1;
        let f = fam.entry(family.clone()).or_default();
        f[0] += 1;
        let Some(g) = got else {
            *confusion[usize::from(held)]
                .entry((
                    "recipient".into(),
                    format!(
                        "not found ({} other results{})",
                        out.results.len(),
                        out.results.first().map_or(String::new(), |r| {
                            let g = r.recipient.to_ascii_lowercase();
                            let (wl, wd) = want.split_once('@').unwrap_or((&want, ""));
                            let (gl, gd) = g.split_once('@').unwrap_or((&g, ""));
                            format!(
                                "; first: {}{}{}{}",
                                if gl == wl {
                                    "same local part"
                                } else {
                                    "other local part"
                                },
                                if gd == wd {
                                    ", same domain"
                                } else {
                                    ", other domain"
                                },
                                match g.find(&want) {
                                    Some(at) => {
                                        let extra =
                                            format!("{}{}", &g[..at], &g[at + want.len()..]);
                                        if extra.chars().all(|c| !c.is_alphanumeric()) {
                                            format!(", contains the wanted and {extra:?}")
                                        } else {
                                            format!(
                                                ", contains the wanted and {} more characters",
                                                extra.len()
                                            )
                                        }
                                    }
                                    None => String::new(),
                                },
                                if want.contains(&g) {
                                    ", inside the wanted"
                                } else {
                                    ""
                                },
                            )
                        })
                    ),
                ))
                .or_default() += 1;
            if verbose && !held {
                let got: Vec<_> = out.results.iter().map(|r| &r.recipient).collect();
                println!("MISS {family} {file}#{msg} want {want} got {got:?}");
            }
            continue;
        };
        rc += 1;
        f[1] += 1;
        sp[1] += 1;
        let reason = format!("{:?}", g.reason)
            .to_ascii_lowercase()
            .replace("reason::", "");
        let ok_s = g.status == get("status");
        let ok_c = g.reply_code.map(|c| c.to_string()).unwrap_or_default() == get("replycode");
        let ok_r = reason == get("reason");
        let ok_h = g.hard.to_string() == get("hardbounce");
        if !ok_r {
            *confusion[usize::from(held)]
                .entry((get("reason"), reason.clone()))
                .or_default() += 1;
        }
        if !ok_s {
            *confusion[usize::from(held)]
                .entry((format!("status {}", get("status")), g.status.clone()))
                .or_default() += 1;
        }
        st += usize::from(ok_s);
        code += usize::from(ok_c);
        re += usize::from(ok_r);
        hd += usize::from(ok_h);
        f[2] += usize::from(ok_s);
        f[3] += usize::from(ok_r);
        f[4] += usize::from(ok_h);
        sp[2] += usize::from(ok_s);
        sp[3] += usize::from(ok_c);
        sp[4] += usize::from(ok_r);
        sp[5] += usize::from(ok_h);
        let sisimai = field(line, "sisimai_reason").unwrap_or_else(|| get("reason"));
        sp[6] += usize::from(reason == sisimai);
        // `-r`: the rule that decided each dev row's reason, and whether
        // it agreed (to see which rules the dev families exercise).
        if args.iter().any(|a| a == "-r") && !held {
            let note = out
                .notes
                .iter()
                .find(|n| n.to_ascii_lowercase().starts_with(&format!("rule {want}:")))
                .and_then(|n| n.split("reason=").nth(1))
                .and_then(|n| n.split(';').next())
                .unwrap_or("?");
            println!("RULE {note} {}", if ok_r { "ok" } else { "bad" });
        }
        if verbose && !held && !(ok_s && ok_r && ok_h) {
            let diag: String = g.diagnostic.chars().take(240).collect();
            println!(
                "BAD {family} {file}#{msg} {want}\n   want \"{}\" \"{}\" \"{}\" {}\n   got  {} {:?} {} {} [{}]\n   wdiag {}\n   gdiag {diag}",
                get("status"),
                get("replycode"),
                get("reason"),
                get("hardbounce"),
                g.status,
                g.reply_code,
                reason,
                g.hard,
                get("engine"),
                get("diagnostic_excerpt"),
            );
        }
    }
    // `-d FILE`: write every result of every message (all messages of the
    // manifest's files, not only the labelled ones) to diff before/after.
    if let Some(i) = args.iter().position(|a| a == "-d") {
        let mut dump = String::new();
        let mut seen = std::collections::HashSet::new();
        for line in std::fs::read_to_string(path).unwrap().lines() {
            let file = field(line, "file").unwrap_or_default();
            if !seen.insert(file.clone()) {
                continue;
            }
            for (k, m) in split(&std::fs::read(dir.join(&file)).unwrap())
                .into_iter()
                .enumerate()
            {
                let out = DsnParser::parse(BounceInput::Email(m));
                dump.push_str(&format!("{file}#{}\n{out:#?}\n", k + 1));
            }
        }
        std::fs::write(&args[i + 1], dump).unwrap();
    }
    // `-t N`: parse every message of the manifest N times and report the
    // native cost per e-mail (the Wasm figure is `sluice bounce bench`).
    if let Some(i) = args.iter().position(|a| a == "-t") {
        let rounds: usize = args[i + 1].parse().unwrap();
        let mut mails: Vec<Vec<u8>> = Vec::new();
        let mut seen = std::collections::HashSet::new();
        for line in std::fs::read_to_string(path).unwrap().lines() {
            let file = field(line, "file").unwrap_or_default();
            if seen.insert(file.clone()) {
                mails.extend(split(&std::fs::read(dir.join(&file)).unwrap()));
            }
        }
        let start = std::time::Instant::now();
        for _ in 0..rounds {
            for m in &mails {
                std::hint::black_box(DsnParser::parse(BounceInput::Email(m.clone())));
            }
        }
        let each = start.elapsed().as_secs_f64() * 1e6 / (rounds * mails.len()) as f64;
        println!("{} e-mails x {rounds}: {each:.1} us each", mails.len());
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
    for (name, v) in [("dev", tally[0]), ("held-out", tally[1])] {
        let p = |x: usize| x as f64 * 100.0 / v[0].max(1) as f64;
        println!(
            "{name:>8} {}: rcpt {:.2}% code {:.2}% status {:.2}% reason {:.2}% hard {:.2}% (reason by Sisimai's labels {:.2}%)",
            v[0],
            p(v[1]),
            p(v[3]),
            p(v[2]),
            p(v[4]),
            p(v[5]),
            p(v[6])
        );
        let bp = |x: usize| x * 10_000 / v[0].max(1);
        println!(
            "{name:>8} counts: rcpt {} status {} reason {} hard {}; basis points {} / {} / {} / {}",
            v[1],
            v[2],
            v[4],
            v[5],
            bp(v[1]),
            bp(v[2]),
            bp(v[4]),
            bp(v[5])
        );
    }
    if args.iter().any(|a| a == "-c") {
        for (name, c) in ["dev", "held-out"].iter().zip(&confusion) {
            let mut pairs: Vec<_> = c.iter().collect();
            pairs.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
            for ((want, got), k) in pairs {
                println!("CONFUSION {name} {want} -> {got}: {k}");
            }
        }
    }
    if args.iter().any(|a| a == "-f") {
        for (k, v) in fam {
            println!(
                "| {k} | {} | {} | {} | {} | {} |",
                v[0], v[1], v[2], v[3], v[4]
            );
        }
    }
}
