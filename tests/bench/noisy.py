#!/usr/bin/env python3
"""Noisy neighbour: does one tenant's slow plugin and flood slow another tenant down?

Runs one `sluice serve` (release build, SQLite) in front of smtp-sink on loopback with
two tenants. Tenant `quiet` (no plugins) sends messages at a steady pace and its
end-to-end latency (from just before its POST to the `delivered` event) is measured,
twice in the same run:

  1. alone;
  2. while tenant `noisy`, whose route plugin (tests/guests/slow-router) spins near its
     time limit on every call with one call at a time, floods the API.

It prints quiet's p50/p99 in both phases and their ratio (goal: p99 within 2x of the
unloaded p99), and noisy's delivery rate against what its own plugin allows
(1 / time per call, one call at a time).

    tests/bench/noisy.py [--quiet N] [--rate PER_SEC] [--flood N] [--timeout-ms MS]
                         [--flood-concurrency N] [--flood-in-process] [--flood-nice N]
                         [--max-hold-ms MS]
    SLUICE_BIN=/path/to/sluice tests/bench/noisy.py      (a binary built elsewhere)

Everything listens on 127.0.0.1 and every process it starts is stopped on exit. Loops
are bounded in count and time.
"""

import argparse
import json
import multiprocessing
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
ADMIN = "noisy-bench-admin"
SINK_PORT = 30460
HTTP_PORT = 30461


def target_dir():
    return os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target"))


def http(method, path, token, body=None, content_type="application/json"):
    req = urllib.request.Request(
        f"http://127.0.0.1:{HTTP_PORT}{path}",
        data=body,
        method=method,
        headers={"Authorization": f"Bearer {token}", "Content-Type": content_type},
    )
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, json.loads(r.read() or b"null")
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"null")


def percentile(values, p):
    values = sorted(values)
    k = max(0, min(len(values) - 1, int(round(p / 100 * len(values) + 0.5)) - 1))
    return values[k]


def wait_until(what, check, timeout_s):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.05)
    sys.exit(f"noisy.py: timed out waiting for {what}")


def send_quiet(key, n, rate, post_ms=None):
    """Sends n messages at `rate` per second; returns [(id, t0_ms)]. The time each
    POST took to be answered is appended to `post_ms`."""
    sent = []
    start = time.monotonic()
    for i in range(n):
        due = start + i / rate
        delay = due - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        t0 = time.time() * 1000
        body = json.dumps(
            {"from": "q@example.com", "to": [f"q{i}@example.net"], "subject": f"quiet {i}", "text": "hello"}
        ).encode()
        st, v = http("POST", "/v1/messages", key, body)
        if post_ms is not None:
            post_ms.append(time.time() * 1000 - t0)
        if st != 202:
            sys.exit(f"noisy.py: quiet's POST answered {st}: {v}")
        sent.append((v["id"], t0))
    return sent


def latencies(key, sent, timeout_s):
    """Waits for every message to be delivered; end-to-end latencies in ms."""
    out = {}
    deadline = time.monotonic() + timeout_s
    while len(out) < len(sent):
        if time.monotonic() > deadline:
            sys.exit(f"noisy.py: {len(sent) - len(out)} quiet messages not delivered in {timeout_s}s")
        for mid, t0 in sent:
            if mid in out:
                continue
            st, v = http("GET", f"/v1/messages/{mid}", key)
            delivered = [e for e in v.get("events", []) if e["kind"] == "delivered"]
            if delivered:
                out[mid] = delivered[0]["at_ms"] - t0
        time.sleep(0.1)
    return list(out.values())


def flood(key, n, concurrency, stop, counts, nice=0):
    """noisy's flood: `concurrency` threads submitting back to back until n messages are
    accepted or `stop` is set. A refusal (429) is not waited out: the next request goes
    at once, as a hostile client would. Runs in a process of its own (see `start_flood`),
    at `nice` (a flooding client on another machine takes none of the server's CPU; a
    nice one on this machine takes what the server leaves)."""
    if nice:
        os.nice(nice)
    lock = threading.Lock()
    accepted = [0]

    def worker():
        while not stop.is_set():
            with lock:
                if accepted[0] >= n:
                    return
                i = accepted[0] + counts["refused"].value
            body = json.dumps(
                {"from": "n@example.com", "to": [f"n{i}@example.net"], "subject": f"noisy {i}", "text": "hello"}
            ).encode()
            st, _ = http("POST", "/v1/messages", key, body)
            with lock:
                if st == 202:
                    accepted[0] += 1
                    counts["accepted"].value += 1
                elif st == 429:
                    counts["refused"].value += 1
                else:
                    counts["other"].value += 1

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


class Counter:
    def __init__(self):
        self.value = 0


def start_flood(key, n, concurrency, same_process=False, nice=0):
    """Starts the flood in a process of its own, so that its threads do not take the
    interpreter lock from quiet's client (which would count as quiet's latency);
    `same_process` runs it on threads of this process instead, as earlier runs did."""
    if same_process:
        stop = threading.Event()
        counts = {k: Counter() for k in ("accepted", "refused", "other")}
        t = threading.Thread(target=flood, args=(key, n, concurrency, stop, counts), daemon=True)
        t.start()
        t.kill = lambda: None
        return t, stop, counts
    ctx = multiprocessing.get_context("fork")
    stop = ctx.Event()
    counts = {k: ctx.Value("q", 0) for k in ("accepted", "refused", "other")}
    proc = ctx.Process(target=flood, args=(key, n, concurrency, stop, counts, nice), daemon=True)
    proc.start()
    return proc, stop, counts


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quiet", type=int, default=200, help="quiet's messages per phase")
    ap.add_argument("--rate", type=float, default=20.0, help="quiet's messages per second")
    ap.add_argument("--flood", type=int, default=20000, help="noisy's accepted messages at most")
    ap.add_argument("--flood-concurrency", type=int, default=8)
    ap.add_argument(
        "--noisy-accepts-per-sec",
        type=int,
        default=0,
        help="noisy's own accept rate ([admission.tenant.noisy]; binaries with admission only)",
    )
    ap.add_argument(
        "--flood-in-process",
        action="store_true",
        help="run the flood on threads of this process (shares quiet's interpreter lock)",
    )
    ap.add_argument(
        "--flood-nice",
        type=int,
        default=0,
        help="run the flood's process at this nice level (models a client on another machine)",
    )
    ap.add_argument(
        "--max-hold-ms",
        type=int,
        default=None,
        help="[admission] max_hold_ms (binaries that hold requests only; default: theirs)",
    )
    ap.add_argument("--timeout-ms", type=int, default=250, help="noisy's plugin time limit")
    ap.add_argument(
        "--tenant-threads-nice",
        type=int,
        default=None,
        help="[plugins] tenant_threads_nice (binaries with tenant threads only; default: theirs)",
    )
    args = ap.parse_args()

    sluice = os.environ.get("SLUICE_BIN")
    if not sluice:
        subprocess.run(["cargo", "build", "--release", "-q", "-p", "sluice"], cwd=ROOT, check=True)
        sluice = os.path.join(target_dir(), "release", "sluice")
    wasm = os.path.join(target_dir(), "wasm-plugins", "wasm32-wasip2", "plugin", "slow_router.wasm")
    if not os.path.exists(wasm):
        sys.exit(f"noisy.py: no {wasm}; build the host once (it builds the test guests)")
    smtp_sink = shutil.which("smtp-sink") or "/usr/sbin/smtp-sink"

    work = tempfile.mkdtemp(prefix="sluice-noisy-")
    procs = []

    def cleanup(*_):
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
        shutil.rmtree(work, ignore_errors=True)

    signal.signal(signal.SIGTERM, lambda *_: (cleanup(), sys.exit(1)))
    try:
        # Calibrate the plugin: steps per call that take half its time limit (more and
        # calls under load run past it, fail, and the version is suspended).
        spin = calibrate(sluice, wasm, args.timeout_ms * 0.5)
        call_ms = time_call(sluice, wasm, spin)
        procs.append(
            subprocess.Popen(
                [smtp_sink, "-u", "nobody", "-c", f"127.0.0.1:{SINK_PORT}", "1024"],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        )
        pipeline = os.path.join(work, "pipeline.toml")
        with open(pipeline, "w") as f:
            f.write(
                f"""
[server]
http_listen = "127.0.0.1:{HTTP_PORT}"
node_id = "noisy-bench"
[store]
url = "sqlite://{work}/sluice.db"
[admin]
token_env = "SLUICE_NOISY_ADMIN"
[plugins]
max_timeout_ms = {max(args.timeout_ms, 1000)}
{"" if args.tenant_threads_nice is None else f"tenant_threads_nice = {args.tenant_threads_nice}"}
[[relay]]
id = "sink"
url = "smtp://127.0.0.1:{SINK_PORT}"
connection_limit = 32
tags = ["pool:platform"]
[[tenant]]
id = "quiet"
allowed_sender_domains = ["example.com"]
[[tenant]]
id = "noisy"
allowed_sender_domains = ["example.com"]
"""
            )
            if args.max_hold_ms is not None:
                f.write(f"[admission]\nmax_hold_ms = {args.max_hold_ms}\n")
            if args.noisy_accepts_per_sec:
                f.write(
                    f"[admission.tenant.noisy]\naccepts_per_sec = {args.noisy_accepts_per_sec}\n"
                    f"accept_burst = {args.noisy_accepts_per_sec}\n"
                )
        env = dict(os.environ, SLUICE_NOISY_ADMIN=ADMIN)
        procs.append(
            subprocess.Popen(
                [sluice, "serve", "--drain-secs", "1", "--pipeline", pipeline],
                env=env,
                cwd=work,
                stdout=subprocess.DEVNULL,
                stderr=open(os.path.join(work, "serve.log"), "w"),
            )
        )

        def up():
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{HTTP_PORT}/healthz", timeout=2) as r:
                    return r.status == 200
            except OSError:
                return False

        wait_until("sluice serve", up, 120)
        keys = {}
        for t in ("quiet", "noisy"):
            st, v = http("POST", f"/admin/v1/tenants/{t}/keys", ADMIN, b"")
            assert st == 201, v
            keys[t] = v["key"]

        # Phase 1: quiet alone. The load average is printed with every figure: the
        # machine may be shared.
        load_start = os.getloadavg()
        post_alone, post_loaded = [], []
        alone = latencies(
            keys["quiet"], send_quiet(keys["quiet"], args.quiet, args.rate, post_alone), 300
        )

        # Phase 2: noisy's slow router, noisy flooding, quiet at the same pace.
        with open(wasm, "rb") as f:
            st, v = http(
                "PUT",
                f"/v1/plugins/route?config=spin={spin}&timeout_ms={args.timeout_ms}&calls_in_flight=1",
                keys["noisy"],
                f.read(),
                "application/wasm",
            )
        assert st == 201, v
        flood_started = time.monotonic()
        flooder, stop, counts = start_flood(
            keys["noisy"], args.flood, args.flood_concurrency, args.flood_in_process, args.flood_nice
        )
        time.sleep(2)  # let the flood build a backlog first
        loaded = latencies(
            keys["quiet"], send_quiet(keys["quiet"], args.quiet, args.rate, post_loaded), 600
        )
        load_loaded = os.getloadavg()
        stop.set()
        flooder.join(timeout=60)
        if flooder.is_alive():
            flooder.kill()
        flood_secs = time.monotonic() - flood_started
        noisy_delivered, first_ms, last_ms = count_delivered(work)
        # What noisy's plugin allows is measured where it ran: the server's own p50 of
        # its calls (one at a time), under the same load.
        st, plugins = http("GET", "/v1/plugins", keys["noisy"])
        route = next(p for p in plugins["plugins"] if p["stage"] == "route")
        stats = next(v for v in route["versions"] if v["active"])["stats"] or {}
        served_ms = (stats.get("p50_us") or call_ms * 1000) / 1000
        allowed = 1000.0 / served_ms
        # One call at a time, calls back to back take their sum: the mean is the rate one
        # call slot allows (binaries that report it; the p50 above for the others).
        mean_ms = (stats.get("mean_us") or stats.get("p50_us") or call_ms * 1000) / 1000
        allowed_mean = 1000.0 / mean_ms

        p50a, p99a = percentile(alone, 50), percentile(alone, 99)
        p50l, p99l = percentile(loaded, 50), percentile(loaded, 99)
        print(
            f"noisy's plugin: {spin} steps, {call_ms:.0f} ms per call alone, {served_ms:.0f} ms (p50) "
            f"in the server under load (limit {args.timeout_ms} ms), 1 call at a time; "
            f"{stats.get('calls')} calls, errors {stats.get('errors')}, suspended: {route.get('suspended')}"
        )
        print("| phase | quiet p50 ms | quiet p99 ms | quiet mean ms |")
        print("|---|---|---|---|")
        print(f"| quiet alone | {p50a:.0f} | {p99a:.0f} | {statistics.mean(alone):.0f} |")
        print(f"| noisy flooding | {p50l:.0f} | {p99l:.0f} | {statistics.mean(loaded):.0f} |")
        print(f"| ratio | {p50l / p50a:.2f} | {p99l / p99a:.2f} | |")
        # Where quiet's time goes: answering its POST (admission, checks, the durable
        # commit) against the whole way to delivery.
        print(
            f"quiet's POST answered: p50 {percentile(post_alone, 50):.1f} → "
            f"{percentile(post_loaded, 50):.1f} ms, p99 {percentile(post_alone, 99):.1f} → "
            f"{percentile(post_loaded, 99):.1f} ms (alone → noisy flooding)"
        )
        # From its first delivery to its last: the plugin's start-up is not its rate.
        rate = (noisy_delivered - 1) / max(0.001, (last_ms - first_ms) / 1000)
        print(
            f"noisy's flood ({args.flood_concurrency} connections, nice {args.flood_nice}): "
            f"{counts['accepted'].value} accepted, {counts['refused'].value} "
            f"refused with 429, {counts['other'].value} other answers in {flood_secs:.1f} s"
        )
        print(
            f"noisy: {noisy_delivered} delivered in {flood_secs:.1f} s of flooding, "
            f"{rate:.2f}/s from its first delivery to its last; its plugin allows "
            f"{allowed:.2f}/s in the server under load ({rate / allowed:.2f} of it), "
            f"{allowed_mean:.2f}/s by its mean call there ({mean_ms:.0f} ms; "
            f"{rate / allowed_mean:.2f} of it), "
            f"{1000.0 / call_ms:.2f}/s at its time per call alone ({rate * call_ms / 1000.0:.2f} of it)"
        )
        print(
            "load average (1, 5, 15 min): at the start %.2f %.2f %.2f; at the end of the "
            "flood %.2f %.2f %.2f" % (*load_start, *load_loaded)
        )
    finally:
        cleanup()


def count_delivered(work):
    """noisy's delivered recipients and the times of its first and last delivery (ms),
    read from the store's events."""
    import sqlite3

    db = sqlite3.connect(os.path.join(work, "sluice.db"))
    try:
        return db.execute(
            "SELECT count(*), min(at_ms), max(at_ms) FROM events "
            "WHERE tenant_id = 'noisy' AND kind = 'delivered'"
        ).fetchone()
    finally:
        db.close()


def time_call(sluice, wasm, spin, runs=3):
    """Milliseconds of one route call with `spin` steps, less the load time."""

    def run(steps):
        best = None
        for _ in range(runs):
            t = time.monotonic()
            subprocess.run(
                [sluice, "plugin", "run", "--stage", "route", wasm, "--config", f"spin={steps}",
                 "--timeout-ms", "60000", "--sample"],
                check=True,
                stdout=subprocess.DEVNULL,
            )
            d = (time.monotonic() - t) * 1000
            best = d if best is None else min(best, d)
        return best

    return max(1.0, run(spin) - run(0))


def calibrate(sluice, wasm, target_ms):
    steps = 10_000_000
    ms = time_call(sluice, wasm, steps)
    return max(1, int(steps * target_ms / ms))


if __name__ == "__main__":
    main()
