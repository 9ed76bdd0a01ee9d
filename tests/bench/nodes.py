#!/usr/bin/env python3
"""Nodes on one PostgreSQL: takeover time after kill -9, and throughput with 1, 2, 3 nodes.

Takeover (--takeover): two nodes (`a`, `b`) on a fresh database in front of one smtp-sink
that answers DATA after 1 s, so work waits. `--takeover-messages` messages go through node
a; once they are accepted a is killed with SIGKILL. Measured from the kill, on the store's
events: the first `routed` event of a's recipients written by b (b has taken the lease and
starts a transaction), the first and the last `delivered`. Repeated for each heartbeat
interval in --beats (dead after 5 intervals).

Throughput (--throughput): for k in --nodes, k nodes on a fresh database, one fast
counting smtp-sink; `sluice bench push` sends --messages/k messages to each node at once
(--concurrency connections each); msg/s from the first request to the sink counting the
last message, and each node's CPU seconds (utime + stime from /proc) per message.

    tests/bench/nodes.py [--takeover] [--throughput] [--beats 500,1000,2000] [--nodes 1,2,3]
    SLUICE_BIN=/path/to/sluice tests/bench/nodes.py ...   (a binary built elsewhere)

Needs PostgreSQL on 127.0.0.1:5432 (user postgres, trust) and Postfix's smtp-sink. All
nodes share this machine's cores: read the per-node CPU, not only msg/s. Everything
listens on 127.0.0.1; every process it starts is stopped on exit.
"""

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
ADMIN = "nodes-bench-admin"
SINK_PORT = 30470
BASE_HTTP = 30471
PROCS = []


def binary():
    if os.environ.get("SLUICE_BIN"):
        return os.environ["SLUICE_BIN"]
    target = os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target"))
    subprocess.run(["cargo", "build", "--release", "-q", "-p", "sluice"], cwd=ROOT, check=True)
    return os.path.join(target, "release", "sluice")


def psql(sql, db="postgres"):
    out = subprocess.run(
        ["psql", "-qAt", "-h", "127.0.0.1", "-U", "postgres", "-d", db, "-c", sql],
        capture_output=True, text=True, check=True,
    )
    return out.stdout.strip()


def http(port, method, path, token, body=None):
    req = urllib.request.Request(
        f"http://127.0.0.1:{port}{path}", data=body, method=method,
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, json.loads(r.read() or b"null")
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"null")


def wait_until(what, check, timeout_s):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.02)
    sys.exit(f"nodes.py: timed out waiting for {what}")


def start_sink(work, opts):
    log = open(os.path.join(work, "sink.log"), "wb")
    smtp_sink = shutil.which("smtp-sink") or "/usr/sbin/smtp-sink"
    p = subprocess.Popen(
        [smtp_sink, "-u", "nobody", "-c", "-m", "1024", *opts, f"127.0.0.1:{SINK_PORT}", "1024"],
        stdout=log, stderr=subprocess.STDOUT,
    )
    PROCS.append(p)
    time.sleep(0.3)
    return p, os.path.join(work, "sink.log")


def sink_count(path):
    try:
        text = open(path, "rb").read().decode("latin-1")
    except OSError:
        return 0
    for chunk in reversed(text.replace("\r", "\n").split("\n")):
        for w in chunk.split():
            if w.startswith("mesg="):
                return int(w[5:])
    return 0


def start_node(sluice, work, db, name, port, beat_ms, max_in_flight, conn_limit):
    pipeline = os.path.join(work, f"pipeline-{name}.toml")
    with open(pipeline, "w") as f:
        f.write(f"""[server]
http_listen = "127.0.0.1:{port}"
node_id = "bench-{name}"
heartbeat_ms = {beat_ms}
dead_after_heartbeats = 5
[store]
url = "postgres://postgres@127.0.0.1:5432/{db}"
[admin]
token_env = "NODES_BENCH_ADMIN"
[delivery]
max_in_flight = {max_in_flight}
lease_secs = 300
[[relay]]
id = "sink"
url = "smtp://127.0.0.1:{SINK_PORT}"
connection_limit = {conn_limit}
tags = ["pool:platform"]
[[tenant]]
id = "bench"
allowed_sender_domains = ["example.com"]
# The one tenant of the bench is the whole load: its admission limits are lifted.
[admission.tenant.bench]
max_requests_in_flight = 100000
accepts_per_sec = 1000000
accept_burst = 1000000
""")
    log = open(os.path.join(work, f"serve-{name}.log"), "wb")
    p = subprocess.Popen(
        [sluice, "serve", "--drain-secs", "1", "--pipeline", pipeline],
        stdout=log, stderr=subprocess.STDOUT,
        env={**os.environ, "NODES_BENCH_ADMIN": ADMIN, "SLUICE_LOG": "warn"},
    )
    PROCS.append(p)

    def up():
        try:
            return http(port, "GET", "/healthz", ADMIN)[0] == 200
        except OSError:
            return False

    wait_until(f"node {name} to answer", up, 120)
    return p


def cpu_secs(pid):
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def fresh_db(tag):
    db = f"sluice_nodes_bench_{tag}_{os.getpid()}"
    psql(f"DROP DATABASE IF EXISTS {db} WITH (FORCE)")
    psql(f"CREATE DATABASE {db}")
    return db


def stop_all():
    for p in PROCS:
        if p.poll() is None:
            p.kill()
            p.wait()
    PROCS.clear()


def takeover(sluice, beat_ms, n):
    work = tempfile.mkdtemp(prefix="sluice-nodes-bench-")
    db = fresh_db(f"t{beat_ms}")
    try:
        start_sink(work, ["-w", "1"])
        a = start_node(sluice, work, db, "a", BASE_HTTP, beat_ms, 8, 8)
        start_node(sluice, work, db, "b", BASE_HTTP + 1, beat_ms, 8, 8)
        _, v = http(BASE_HTTP, "POST", "/admin/v1/tenants/bench/keys", ADMIN)
        key = v["key"]
        body = lambda i: json.dumps({"from": "x@example.com", "to": [f"r{i}@example.org"],
                                     "subject": f"takeover {i}", "text": "hello"}).encode()
        for i in range(n):
            st, v = http(BASE_HTTP, "POST", "/v1/messages", key, body(i))
            assert st == 202, v
        a.send_signal(signal.SIGKILL)
        a.wait()
        killed_ms = int(time.time() * 1000)
        # Read after the kill: a dead node records nothing more.
        held = psql("SELECT message_id FROM recipients WHERE lease_owner = 'bench-a' "
                    "AND state = 'delivering'", db).split()
        ids = ",".join(f"'{m}'" for m in held)
        q = (f"SELECT COUNT(*), MIN(at_ms), MAX(at_ms) FROM events WHERE kind = 'delivered' "
             f"AND message_id IN ({ids})")

        def done():
            return int(psql(q, db).split("|")[0]) >= len(held)

        wait_until("the killed node's work delivered", done, 300)
        _, first_d, last_d = (int(x) for x in psql(q, db).split("|"))
        first_r = int(psql(f"SELECT MIN(at_ms) FROM events WHERE kind = 'routed' AND at_ms >= "
                           f"{killed_ms} AND message_id IN ({ids})", db))
        return {
            "beat_ms": beat_ms, "dead_after_ms": 5 * beat_ms, "held_at_kill": len(held),
            "first_routed_s": (first_r - killed_ms) / 1000,
            "first_delivered_s": (first_d - killed_ms) / 1000,
            "last_delivered_s": (last_d - killed_ms) / 1000,
        }
    finally:
        stop_all()
        psql(f"DROP DATABASE IF EXISTS {db} WITH (FORCE)")
        shutil.rmtree(work, ignore_errors=True)


def throughput(sluice, k, n, concurrency):
    work = tempfile.mkdtemp(prefix="sluice-nodes-bench-")
    db = fresh_db(f"n{k}")
    try:
        _, sink_log = start_sink(work, [])
        nodes = [start_node(sluice, work, db, f"n{i}", BASE_HTTP + i, 1000, 512, 32)
                 for i in range(k)]
        _, v = http(BASE_HTTP, "POST", "/admin/v1/tenants/bench/keys", ADMIN)
        key = v["key"]
        cpu0 = [cpu_secs(p.pid) for p in nodes]
        already = sink_count(sink_log)
        t0 = time.monotonic()
        pushes = [subprocess.Popen(
            [sluice, "bench", "push", "--url", f"http://127.0.0.1:{BASE_HTTP + i}", "--key", key,
             "--messages", str(n // k), "--concurrency", str(concurrency)],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT) for i in range(k)]
        for p in pushes:
            out, _ = p.communicate()
            if p.returncode != 0:
                sys.exit(f"push failed: {out.decode()}")
        total = (n // k) * k
        wait_until("every message at the sink",
                   lambda: sink_count(sink_log) - already >= total, 600)
        secs = time.monotonic() - t0
        cpu = [cpu_secs(p.pid) - c for p, c in zip(nodes, cpu0)]
        return {
            "nodes": k, "messages": total, "secs": round(secs, 2),
            "msg_per_s": round(total / secs),
            "cpu_s_per_node": [round(c, 2) for c in cpu],
            "cpu_us_per_msg": round(sum(cpu) / total * 1e6),
        }
    finally:
        stop_all()
        psql(f"DROP DATABASE IF EXISTS {db} WITH (FORCE)")
        shutil.rmtree(work, ignore_errors=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--takeover", action="store_true")
    ap.add_argument("--throughput", action="store_true")
    ap.add_argument("--beats", default="500,1000,2000")
    ap.add_argument("--takeover-messages", type=int, default=150)
    ap.add_argument("--nodes", default="1,2,3")
    ap.add_argument("--messages", type=int, default=6000)
    ap.add_argument("--concurrency", type=int, default=16)
    args = ap.parse_args()
    if not (args.takeover or args.throughput):
        args.takeover = args.throughput = True
    sluice = binary()
    signal.signal(signal.SIGTERM, lambda *_: (stop_all(), sys.exit(1)))
    try:
        if args.takeover:
            for b in [int(x) for x in args.beats.split(",")]:
                print(json.dumps(takeover(sluice, b, args.takeover_messages)), flush=True)
        if args.throughput:
            for k in [int(x) for x in args.nodes.split(",")]:
                print(json.dumps(throughput(sluice, k, args.messages, args.concurrency)),
                      flush=True)
    finally:
        stop_all()


if __name__ == "__main__":
    main()
