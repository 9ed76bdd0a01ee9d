//! Hostile tenants' uploads and logs through the real `sluice serve` binary: a plugin
//! that logs as much as it can moves the host's memory by no more than its tenant's log
//! budget and its logs are read in bounded pages; a component that would be costly to
//! compile is refused before compiling or stopped by the compile bound while another
//! tenant is served; uploads are rate limited and versions are held to a quota.

use crate::support::*;
use serde_json::Value;
use std::time::Instant;

/// The log bounds these tests run with (`[plugins.logs]`); the defaults are 1 MiB per
/// stage, 2 MiB per tenant, 256 KiB per page.
const LOG_BYTES_PER_STAGE: u64 = 1 << 20;
const LOG_BYTES_PER_TENANT: u64 = 2 << 20;
const LOG_PAGE_BYTES: u64 = 256 << 10;

/// What a page's JSON holds besides its lines (tenant, stage, node, cursors).
const PAGE_ENVELOPE_BYTES: u64 = 512;

/// A host with a sink, tenants `a` and `b`, and `extra` pipeline tables.
struct Host {
    _setup: Setup,
    sluice: Sluice,
    _sink: Sink,
    a: String,
    b: String,
}

impl Host {
    fn start(extra: &str) -> Host {
        let sink_port = free_port();
        let tables = format!(
            "{extra}\n{}\n{}\n{}",
            relay_table(
                "sink",
                &format!("smtp://127.0.0.1:{sink_port}"),
                "connection_limit = 8"
            ),
            tenant_table("a", &["example.com"]),
            tenant_table("b", &["example.com"]),
        );
        let setup = Setup::new(PipelineParts {
            tables: &tables,
            ..PipelineParts::default()
        });
        let sink = Sink::start(setup.root(), sink_port, &[]);
        let sluice = setup.start();
        let a = sluice.new_key("a");
        let b = sluice.new_key("b");
        Host {
            _setup: setup,
            sluice,
            _sink: sink,
            a,
            b,
        }
    }

    fn key(&self, tenant: &str) -> &str {
        if tenant == "a" { &self.a } else { &self.b }
    }

    fn upload(&self, tenant: &str, stage: &str, query: &str, wasm: &[u8]) -> Response {
        self.sluice.request(
            "PUT",
            &format!("/v1/plugins/{stage}{query}"),
            Some(self.key(tenant)),
            Some("application/wasm"),
            wasm,
        )
    }

    fn get(&self, tenant: &str, path: &str) -> Response {
        self.sluice
            .request("GET", path, Some(self.key(tenant)), None, b"")
    }

    fn pid(&self) -> u32 {
        self.sluice.guard.pid()
    }
}

fn code(r: &Response) -> String {
    r.json()["error"]["code"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

#[test]
fn a_log_bomb_moves_the_hosts_memory_by_no_more_than_its_tenants_log_budget() {
    let h = Host::start(&format!(
        "[plugins.logs]\nmax_bytes_per_stage = {LOG_BYTES_PER_STAGE}\n\
         max_bytes_per_tenant = {LOG_BYTES_PER_TENANT}\nmax_page_bytes = {LOG_PAGE_BYTES}\n"
    ));
    let bomb = sluice::builtin::test_guests::LOG_BOMB;
    // Warm the paths an upload takes (compiling, the sample call, the store) with a
    // quiet plugin of another tenant, then measure.
    let r = h.upload(
        "b",
        "route",
        "",
        sluice::builtin::by_name("router-weighted").unwrap().wasm,
    );
    assert_eq!(r.status, 201, "{}", r.body);
    let id = h
        .sluice
        .submit(&h.b, &simple("s@example.com", "r@example.net", "warm"));
    h.sluice.wait_state(&h.b, &id, "delivered");
    let before = rss_bytes(h.pid());

    let mut ids = Vec::new();
    for n in 0..16 {
        let r = h.upload("a", "route", "?timeout_ms=1000", bomb);
        assert_eq!(r.status, 201, "upload {n}: {}", r.body);
        ids.push(h.sluice.submit(
            &h.a,
            &simple("s@example.com", "r@example.net", &format!("bomb {n}")),
        ));
    }
    for id in &ids {
        h.sluice.wait_state(&h.a, id, "delivered");
    }
    let after = rss_bytes(h.pid());
    eprintln!(
        "16 log-bomb uploads and calls: server RSS {} -> {} MiB",
        before >> 20,
        after >> 20
    );
    // The tenant's logs hold at most its budget; the rest is the compiled versions
    // kept, pool slots touched by the calls and the allocator's slack.
    let allowance = 2 * LOG_BYTES_PER_TENANT + (64 << 20);
    assert!(
        after <= before + allowance,
        "RSS grew from {} MiB to {} MiB, more than {} MiB",
        before >> 20,
        after >> 20,
        allowance >> 20
    );

    // The log is read in pages of at most the cap, and the cursor walks every line once.
    let (mut cursor, mut seqs, mut pages, mut total) = (String::new(), Vec::new(), 0, 0u64);
    loop {
        let r = h.get(
            "a",
            &format!("/v1/plugins/route/logs?limit=1000&after={cursor}"),
        );
        assert_eq!(r.status, 200, "{}", r.body);
        assert!(
            r.body.len() as u64 <= LOG_PAGE_BYTES + PAGE_ENVELOPE_BYTES,
            "a page of {} bytes",
            r.body.len()
        );
        let v = r.json();
        for line in v["lines"].as_array().unwrap() {
            seqs.push(line["seq"].as_u64().unwrap());
            let message = line["message"].as_str().unwrap();
            assert!(
                message.len() <= 4096,
                "a message of {} bytes",
                message.len()
            );
            let fields = line["fields"].as_array().cloned().unwrap_or_default();
            assert!(fields.len() <= 16, "{} fields", fields.len());
            for f in &fields {
                for s in f.as_array().unwrap() {
                    assert!(s.as_str().unwrap().len() <= 256);
                }
            }
            total += message.len() as u64;
        }
        if pages == 0 {
            // The oldest lines were evicted to stay within the budget, and the first page
            // says how many the reader missed.
            assert!(v["missed"].as_u64().unwrap() > 0, "{}", v["missed"]);
        }
        pages += 1;
        match v["next"].as_str() {
            Some(next) => cursor = next.to_owned(),
            None => break,
        }
        assert!(pages < 10_000, "the cursor does not end");
    }
    assert!(pages > 1, "the kept lines fit one page: {seqs:?}");
    assert!(!seqs.is_empty());
    assert!(
        seqs.windows(2).all(|w| w[1] == w[0] + 1),
        "the cursor skipped or repeated lines"
    );
    assert!(
        total <= LOG_BYTES_PER_TENANT,
        "{total} bytes of messages kept"
    );
    // A cursor past the end gives an empty page that says where to poll from.
    let last = seqs.last().unwrap();
    let v = h
        .get("a", &format!("/v1/plugins/route/logs?after={last}"))
        .json();
    assert_eq!(v["lines"], Value::Array(Vec::new()));
    assert_eq!(v["next"], Value::Null);
    assert_eq!(v["cursor"], last.to_string());
    // A bad cursor is named.
    let r = h.get("a", "/v1/plugins/route/logs?after=yesterday");
    assert_eq!(r.status, 422, "{}", r.body);
    assert!(r.body.contains("yesterday"), "{}", r.body);
    // The admin reads the same log in the same pages.
    let r = h.sluice.admin(
        "GET",
        "/admin/v1/tenants/a/plugins/route/logs?limit=5",
        None,
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let v = r.json();
    let lines = v["lines"].as_array().unwrap();
    assert_eq!(lines.len(), 5);
    assert_eq!(lines[0]["seq"].as_u64(), seqs.first().copied());
    assert_eq!(v["next"], lines[4]["seq"].as_u64().unwrap().to_string());
    // Tenant b's log is its own.
    let v = h.get("b", "/v1/plugins/route/logs").json();
    assert!(
        v["lines"]
            .as_array()
            .unwrap()
            .iter()
            .all(|l| l["message"].as_str().unwrap().len() < 1000),
        "{v}"
    );
}

// ---------------------------------------------------------------- compile bombs

/// A core module of `functions` functions, each with `locals` i64 locals that are all
/// live across `loops` nested loops: cheap to write, costly for cranelift's register
/// allocator (the shape of the observed 47-second upload).
///
/// Each module is new (a constant of this run in it): a component compiled before would
/// come from the compiled-component disk cache without compiling.
fn costly_module(functions: u32, locals: u32, loops: u32) -> Vec<u8> {
    use wasm_encoder::{
        BlockType, CodeSection, ExportKind, ExportSection, Function, FunctionSection,
        Instruction as I, Module, TypeSection, ValType,
    };
    let mut types = TypeSection::new();
    types.ty().function([ValType::I32], [ValType::I64]);
    let mut funcs = FunctionSection::new();
    let mut code = CodeSection::new();
    for _ in 0..functions {
        funcs.function(0);
        let mut f = Function::new([(locals, ValType::I64)]);
        for _ in 0..loops {
            f.instruction(&I::Loop(BlockType::Empty));
        }
        for i in 1..=locals {
            f.instruction(&I::LocalGet(i))
                .instruction(&I::I64Const(i64::from(i)))
                .instruction(&I::I64Add)
                .instruction(&I::LocalSet(i));
        }
        for depth in 0..loops {
            f.instruction(&I::LocalGet(0))
                .instruction(&I::I32Const(1))
                .instruction(&I::I32Sub)
                .instruction(&I::LocalTee(0))
                .instruction(&I::BrIf(0));
            f.instruction(&I::End);
            let _ = depth;
        }
        f.instruction(&I::LocalGet(1))
            .instruction(&I::I64Const(run_salt()))
            .instruction(&I::I64Add);
        for i in 2..=locals {
            f.instruction(&I::LocalGet(i)).instruction(&I::I64Add);
        }
        f.instruction(&I::End);
        code.function(&f);
    }
    let mut exports = ExportSection::new();
    exports.export("f0", ExportKind::Func, 0);
    let mut m = Module::new();
    m.section(&types)
        .section(&funcs)
        .section(&exports)
        .section(&code);
    m.finish()
}

/// A number no earlier run used.
fn run_salt() -> i64 {
    static SALT: std::sync::OnceLock<i64> = std::sync::OnceLock::new();
    static NEXT: std::sync::atomic::AtomicI64 = std::sync::atomic::AtomicI64::new(0);
    let base = *SALT.get_or_init(|| {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        (nanos as i64) ^ (i64::from(std::process::id()) << 40)
    });
    base.wrapping_add(NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed))
}

/// `component` with `module` appended as one more core module section (a component's
/// sections may come in any order; nothing needs to use the module for wasmtime to
/// compile it).
fn with_module(component: &[u8], module: &[u8]) -> Vec<u8> {
    let mut out = component.to_vec();
    out.push(1); // core module section
    let mut len = module.len() as u64;
    loop {
        let byte = (len & 0x7f) as u8;
        len >>= 7;
        if len == 0 {
            out.push(byte);
            break;
        }
        out.push(byte | 0x80);
    }
    out.extend_from_slice(module);
    out
}

/// A component holding only `module`: no exports at all.
fn bare_component(module: &[u8]) -> Vec<u8> {
    with_module(b"\0asm\x0d\0\x01\0", module)
}

fn router() -> &'static [u8] {
    sluice::builtin::by_name("router-weighted").unwrap().wasm
}

#[test]
fn a_component_over_a_static_limit_is_refused_before_it_is_compiled() {
    let h = Host::start("");
    // One function of 20 000 locals in loops: the observed compile bomb's shape.
    let bomb = with_module(router(), &costly_module(1, 20_000, 8));
    let started = Instant::now();
    let r = h.upload("a", "route", "", &bomb);
    let took = started.elapsed();
    assert_eq!(
        (r.status, code(&r).as_str()),
        (422, "over_limit"),
        "{}",
        r.body
    );
    let message = r.json()["error"]["message"].as_str().unwrap().to_owned();
    assert!(
        message.contains("declares 20000 or more locals")
            && message.contains("at most 5000 are allowed")
            && message.contains("max_function_locals"),
        "{message}"
    );
    eprintln!("refused in {took:?}: {message}");

    // Without the stage's export, a costly module is refused as the wrong world, also
    // before compiling: the world is read, not compiled.
    let r = h.upload(
        "a",
        "route",
        "",
        &bare_component(&costly_module(4, 4000, 8)),
    );
    assert_eq!(
        (r.status, code(&r).as_str()),
        (422, "wrong_world"),
        "{}",
        r.body
    );
    assert!(r.body.contains("sluice:plugin/router@0.1.0"), "{}", r.body);

    // More core modules than allowed.
    let mut many = router().to_vec();
    for _ in 0..16 {
        many = with_module(&many, &costly_module(1, 1, 1));
    }
    let r = h.upload("a", "route", "", &many);
    assert_eq!(
        (r.status, code(&r).as_str()),
        (422, "over_limit"),
        "{}",
        r.body
    );
    assert!(r.body.contains("max_core_modules"), "{}", r.body);
}

#[test]
fn a_costly_compilation_is_stopped_at_its_bound_while_another_tenant_is_served() {
    let h = Host::start(
        "[plugins.uploads]\nmax_compile_secs = 6\nmax_compile_cpu_secs = 3\nmax_compile_memory_mib = 1024\n",
    );
    // A plugin compiles in the child and goes live as before.
    let r = h.upload(
        "b",
        "route",
        "",
        &with_module(router(), &costly_module(1, 1, 1)),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    let before = rss_bytes(h.pid());

    // Within every static limit (5000 locals, 1 MiB of code per function), yet far
    // more than 3 CPU-seconds of work for cranelift.
    let bomb = with_module(router(), &costly_module(40, 4000, 6));
    let started = Instant::now();
    let (r, peak, served) = std::thread::scope(|scope| {
        let upload = scope.spawn(|| h.upload("a", "route", "", &bomb));
        let (mut peak, mut served) = (before, 0);
        while !upload.is_finished() {
            peak = peak.max(rss_bytes(h.pid()));
            // Tenant b's mail and API go on meanwhile.
            let id = h.sluice.submit(
                &h.b,
                &simple(
                    "s@example.com",
                    "r@example.net",
                    &format!("meanwhile {served}"),
                ),
            );
            h.sluice.wait_state(&h.b, &id, "delivered");
            assert_eq!(h.get("b", "/v1/plugins").status, 200);
            served += 1;
        }
        (upload.join().unwrap(), peak, served)
    });
    eprintln!(
        "a {}-byte bomb answered in {:?}: {}; server RSS {} -> peak {} MiB; {served} messages of b delivered meanwhile",
        bomb.len(),
        started.elapsed(),
        r.body,
        before >> 20,
        peak >> 20
    );
    assert_eq!(
        (r.status, code(&r).as_str()),
        (422, "compile_bound"),
        "{}",
        r.body
    );
    assert!(
        r.body.contains("max_compile_cpu_secs") || r.body.contains("max_compile_secs"),
        "{}",
        r.body
    );
    assert!(
        served >= 1,
        "tenant b was not served while a's upload compiled"
    );
    // The compilation's memory was the child's, not the server's.
    assert!(
        peak <= before + (64 << 20),
        "the server's RSS went from {} MiB to {} MiB while compiling",
        before >> 20,
        peak >> 20
    );
    // Nothing was stored, and b's plugin still decides b's mail.
    let v = h.get("a", "/v1/plugins").json();
    assert_eq!(v["plugins"], Value::Array(Vec::new()), "{v}");
}

#[test]
fn a_compilation_over_its_memory_bound_is_stopped_and_named() {
    // 24 MiB of heap cannot hold cranelift compiling even a small plugin.
    let h = Host::start("[plugins.uploads]\nmax_compile_memory_mib = 24\n");
    let fresh = with_module(router(), &costly_module(1, 1, 1));
    let r = h.upload("a", "route", "", &fresh);
    assert_eq!(
        (r.status, code(&r).as_str()),
        (422, "compile_bound"),
        "{}",
        r.body
    );
    assert!(r.body.contains("max_compile_memory_mib"), "{}", r.body);
}

/// Compiler children of `pid` alive now (`sluice __compile-component`).
fn compilers_of(pid: u32) -> usize {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return 0;
    };
    entries
        .filter_map(|e| e.ok())
        .filter(|e| {
            let dir = e.path();
            let stat = std::fs::read_to_string(dir.join("stat")).unwrap_or_default();
            // pid (comm) state ppid …: comm may hold spaces, so split after its ')'.
            let ppid = stat
                .rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().nth(1))
                .and_then(|p| p.parse::<u32>().ok());
            ppid == Some(pid)
                && std::fs::read(dir.join("cmdline"))
                    .is_ok_and(|c| c.windows(19).any(|w| w == b"__compile-component"))
        })
        .count()
}

#[test]
fn compilations_take_turns_across_tenants() {
    let h = Host::start(
        "[plugins.uploads]\nmax_compile_secs = 2\nmax_compile_cpu_secs = 2\nmax_compiles_at_once = 1\n",
    );
    let bombs = [
        with_module(router(), &costly_module(40, 4000, 6)),
        with_module(router(), &costly_module(40, 4000, 6)),
    ];
    let h = &h;
    let (answers, most) = std::thread::scope(|scope| {
        let uploads: Vec<_> = [("a", &bombs[0]), ("b", &bombs[1])]
            .into_iter()
            .map(|(t, bomb)| scope.spawn(move || h.upload(t, "route", "", bomb)))
            .collect();
        let mut most = 0;
        while uploads.iter().any(|u| !u.is_finished()) {
            most = most.max(compilers_of(h.pid()));
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        let answers: Vec<Response> = uploads.into_iter().map(|u| u.join().unwrap()).collect();
        (answers, most)
    });
    for r in &answers {
        assert_eq!(
            (r.status, code(r).as_str()),
            (422, "compile_bound"),
            "{}",
            r.body
        );
    }
    assert_eq!(most, 1, "compiler children alive at once");
}

// ---------------------------------------------------------------- rates and quotas

#[test]
fn refused_uploads_are_rate_limited_with_retry_after_and_only_for_their_tenant() {
    let h = Host::start(
        "[plugins.uploads]\nfailed_upload_burst = 3\nfailed_uploads_per_hour = 2\n\
         upload_burst = 4\nuploads_per_hour = 60\n",
    );
    for n in 0..3 {
        let r = h.upload("a", "route", "", b"not wasm at all");
        assert_eq!(r.status, 422, "refusal {n}: {}", r.body);
    }
    // The fourth refused upload in a row is not even read, and neither is a good one:
    // a tenant that keeps sending bad components waits.
    for wasm in [&b"not wasm at all"[..], router()] {
        let r = h.upload("a", "route", "", wasm);
        assert_eq!(
            (r.status, code(&r).as_str()),
            (429, "too_many_failed_uploads"),
            "{}",
            r.body
        );
        let retry: u64 = r.header("retry-after").unwrap().parse().unwrap();
        // Two an hour: the next in at most half an hour.
        assert!((1..=1800).contains(&retry), "Retry-After: {retry}");
    }
    // Another tenant is not held back; it has its own rate of uploads.
    for n in 0..4 {
        let r = h.upload("b", "route", "?activate=false", router());
        assert_eq!(r.status, 201, "upload {n}: {}", r.body);
    }
    let r = h.upload("b", "route", "", router());
    assert_eq!(
        (r.status, code(&r).as_str()),
        (429, "too_many_uploads"),
        "{}",
        r.body
    );
    let retry: u64 = r.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=60).contains(&retry), "Retry-After: {retry}");
}

#[test]
fn a_tenant_keeps_at_most_its_quota_of_versions_and_can_still_roll_back() {
    let h = Host::start("[plugins.uploads]\nmax_versions_per_tenant = 4\n");
    let mut pruned = Vec::new();
    for n in 1..=7u64 {
        let query = format!("?config=n={n}");
        let r = h.upload("a", "route", &query, router());
        assert_eq!(r.status, 201, "upload {n}: {}", r.body);
        for p in r.json()["pruned"].as_array().unwrap() {
            pruned.push(p["version"].as_u64().unwrap());
        }
    }
    // Seven uploads, each activated: the three oldest went.
    assert_eq!(pruned, vec![1, 2, 3]);
    let v = h.get("a", "/v1/plugins").json();
    let route = &v["plugins"][0];
    let versions: Vec<u64> = route["versions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["version"].as_u64().unwrap())
        .collect();
    assert_eq!(versions, vec![4, 5, 6, 7], "{v}");
    assert_eq!(route["active_version"], 7);
    assert_eq!(route["previous_versions"], serde_json::json!([4, 5, 6]));
    // Rollbacks walk back through what is kept.
    for expected in [6, 5, 4] {
        let r = h
            .sluice
            .request("POST", "/v1/plugins/route/rollback", Some(&h.a), None, b"");
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(r.json()["active"]["version"]["version"], expected);
    }
}
