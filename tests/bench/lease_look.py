#!/usr/bin/env python3
"""The dispatcher's look for due work, old and new, against a flooding tenant's backlog.

Issue 16: the dispatcher looks in the store for due work at least every 250 ms, leaving
out the tenants at their share on this host. Main's look walked every due recipient in
due order and joined each to its message to skip the tenants left out; with migration
0024 the recipient carries its tenant and the look asks each other tenant for its own
oldest due rows (store/src/leases.rs). This builds the store from the real
migrations, puts BACKLOG due recipients of tenant `noisy` (older than everyone else's)
and a few of tenants `quiet` and `q2` in it, and times each look (in a transaction that
is rolled back, so every round sees the same rows), with the plan of each:

  - `at share`: noisy is left out (it is at its share);
  - `none full`: nobody is left out.

    tests/bench/lease_look.py [--backlog N] [--rounds N] [--store sqlite|postgres|both]

The SQL is a copy of the two versions in leases.rs (main's `lease_due` and this one's);
keep it in step. PostgreSQL: a scratch database `sluice_lease_look` on 127.0.0.1:5432
(user postgres, as tests/run sets up) is created and dropped.
"""

import argparse
import os
import re
import sqlite3
import statistics
import subprocess
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MIGRATIONS = os.path.join(ROOT, "host", "src", "store", "migrations")
NOW = 10_000_000
LIMIT = 256


def old_look(backend, except_tenants):
    lock = "FOR UPDATE SKIP LOCKED" if backend == "postgres" else ""
    except_sql = ""
    if except_tenants:
        names = ", ".join(f"'{t}'" for t in except_tenants)
        except_sql = (
            "AND NOT EXISTS (SELECT 1 FROM messages m WHERE m.id = r.message_id "
            f"AND m.tenant_id IN ({names}))"
        )
    return [
        f"""UPDATE recipients SET state = 'delivering', lease_owner = 'n1', lease_until_ms = {NOW + 60000},
         routed_relay = NULL, updated_at_ms = {NOW}
         WHERE (message_id, idx) IN (
             SELECT r.message_id, r.idx FROM recipients r
             WHERE ((r.state IN ('queued', 'deferred') AND r.next_attempt_at_ms <= {NOW})
                OR (r.state = 'delivering' AND r.lease_until_ms <= {NOW})) {except_sql}
             ORDER BY r.next_attempt_at_ms, r.message_id, r.idx
             LIMIT {LIMIT} {lock})
         RETURNING message_id, idx, address, domain, attempts"""
    ]


TENANTS_WITH_WORK = """WITH RECURSIVE
  q(id) AS (SELECT (SELECT tenant_id FROM recipients WHERE state = 'queued' ORDER BY tenant_id LIMIT 1)
            UNION ALL
            SELECT (SELECT r.tenant_id FROM recipients r WHERE r.state = 'queued'
                    AND r.tenant_id > q.id ORDER BY r.tenant_id LIMIT 1) FROM q WHERE q.id IS NOT NULL),
  d(id) AS (SELECT (SELECT tenant_id FROM recipients WHERE state = 'deferred' ORDER BY tenant_id LIMIT 1)
            UNION ALL
            SELECT (SELECT r.tenant_id FROM recipients r WHERE r.state = 'deferred'
                    AND r.tenant_id > d.id ORDER BY r.tenant_id LIMIT 1) FROM d WHERE d.id IS NOT NULL)
SELECT id FROM q WHERE id IS NOT NULL UNION SELECT id FROM d WHERE id IS NOT NULL"""


def new_update(backend, tenants, except_tenants):
    lock = "FOR UPDATE SKIP LOCKED" if backend == "postgres" else ""
    parts = []
    for i, t in enumerate(tenants):
        for state in ("queued", "deferred"):
            parts.append(
                f"SELECT * FROM (SELECT message_id, idx, next_attempt_at_ms AS due "
                f"FROM recipients WHERE state = '{state}' AND tenant_id = '{t}' "
                f"AND next_attempt_at_ms <= {NOW} ORDER BY next_attempt_at_ms LIMIT {LIMIT}) {state}{i}"
            )
    except_sql = ""
    if except_tenants:
        except_sql = "AND tenant_id NOT IN (" + ", ".join(f"'{t}'" for t in except_tenants) + ")"
    parts.append(
        f"SELECT * FROM (SELECT message_id, idx, next_attempt_at_ms AS due "
        f"FROM recipients WHERE state = 'delivering' AND lease_until_ms <= {NOW} {except_sql} "
        f"ORDER BY lease_until_ms LIMIT {LIMIT}) expired"
    )
    return f"""UPDATE recipients SET state = 'delivering', lease_owner = 'n1', lease_until_ms = {NOW + 60000},
         routed_relay = NULL, updated_at_ms = {NOW}
         WHERE (message_id, idx) IN (
             SELECT r.message_id, r.idx FROM recipients r
             WHERE (r.message_id, r.idx) IN (
                 SELECT c.message_id, c.idx FROM ({" UNION ALL ".join(parts)}) c
                 ORDER BY c.due, c.message_id, c.idx LIMIT {LIMIT})
             AND ((r.state IN ('queued', 'deferred') AND r.next_attempt_at_ms <= {NOW})
                OR (r.state = 'delivering' AND r.lease_until_ms <= {NOW})) {lock})
         RETURNING message_id, idx, address, domain, attempts"""


def migrations(backend):
    d = os.path.join(MIGRATIONS, backend)
    return [open(os.path.join(d, f)).read() for f in sorted(os.listdir(d)) if f.endswith(".sql")]


def fill_sql(backlog):
    """Rows: noisy's backlog due first, then quiet's and q2's 5 each, due later."""
    rows = [("noisy", backlog, 0), ("quiet", 5, 5_000_000), ("q2", 5, 5_000_000)]
    out = []
    for tenant, n, due in rows:
        out.append(
            f"INSERT INTO messages (id, tenant_id, sender, body, size, tags, max_age_secs, created_at_ms) "
            f"SELECT '{tenant}-' || s, '{tenant}', 'a@example.org', '', 0, '', 3600, 0 FROM ({{series}}) g"
            .replace("{series}", "{series_" + str(n) + "}")
        )
        out.append(
            f"INSERT INTO recipients (message_id, idx, address, domain, state, attempts, "
            f"next_attempt_at_ms, updated_at_ms, tenant_id) "
            f"SELECT '{tenant}-' || s, 0, 'r@example.org', 'example.org', 'queued', 0, {due} + s, 0, '{tenant}' "
            f"FROM ({{series}}) g".replace("{series}", "{series_" + str(n) + "}")
        )
    return out


def series(backend, n):
    if backend == "postgres":
        return f"SELECT generate_series(1, {n}) AS s"
    return f"WITH RECURSIVE c(s) AS (SELECT 1 UNION ALL SELECT s + 1 FROM c WHERE s < {n}) SELECT s FROM c"


def expand(sql, backend):
    return re.sub(r"\{series_(\d+)\}", lambda m: series(backend, int(m.group(1))), sql)


def run_sqlite(backlog, rounds):
    path = os.path.join(tempfile.mkdtemp(prefix="lease-look-"), "store.db")
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    for m in migrations("sqlite"):
        db.executescript(m)
    for s in fill_sql(backlog):
        db.execute(expand(s, "sqlite"))
    db.execute("ANALYZE")
    results = {}
    for case, except_tenants in (("at share", ["noisy"]), ("none full", [])):
        for version in ("main", "0024"):
            times, leased = [], 0
            for _ in range(rounds):
                db.execute("BEGIN")
                t0 = time.perf_counter()
                if version == "main":
                    rows = db.execute(old_look("sqlite", except_tenants)[0]).fetchall()
                else:
                    tenants = [r[0] for r in db.execute(TENANTS_WITH_WORK) if r[0] not in except_tenants]
                    rows = db.execute(new_update("sqlite", tenants, except_tenants)).fetchall()
                times.append(time.perf_counter() - t0)
                leased = len(rows)
                db.execute("ROLLBACK")
            results[(case, version)] = (statistics.median(times) * 1000, leased)
    # The plans, of the candidate selects (the UPDATE's inner part).
    plans = {}
    for version in ("main", "0024"):
        sql = old_look("sqlite", ["noisy"])[0] if version == "main" else new_update("sqlite", ["quiet", "q2"], ["noisy"])
        plans[version] = [r[3] for r in db.execute("EXPLAIN QUERY PLAN " + sql)]
    plans["tenants"] = [r[3] for r in db.execute("EXPLAIN QUERY PLAN " + TENANTS_WITH_WORK)]
    return results, plans


def psql(sql, db="postgres"):
    return subprocess.run(
        ["psql", "-h", "127.0.0.1", "-U", "postgres", "-d", db, "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1"],
        input=sql, capture_output=True, text=True, check=True,
    ).stdout


def run_postgres(backlog, rounds):
    name = "sluice_lease_look"
    psql(f"DROP DATABASE IF EXISTS {name}; CREATE DATABASE {name};")
    try:
        psql("\n".join(migrations("postgres")), name)
        psql(";\n".join(expand(s, "postgres") for s in fill_sql(backlog)) + "; ANALYZE;", name)
        results, plans = {}, {}
        for case, except_tenants in (("at share", ["noisy"]), ("none full", [])):
            for version in ("main", "0024"):
                if version == "main":
                    stmts = old_look("postgres", except_tenants)
                else:
                    stmts = [TENANTS_WITH_WORK, new_update("postgres", ["quiet", "q2"] + ([] if except_tenants else ["noisy"]), except_tenants)]
                script = []
                for _ in range(rounds):
                    script.append("BEGIN;")
                    for s in stmts:
                        script.append("EXPLAIN (ANALYZE, BUFFERS, FORMAT TEXT) " + s + ";")
                    script.append("ROLLBACK;")
                out = psql("\n".join(script), name)
                ms = [float(x) for x in re.findall(r"Execution Time: ([\d.]+) ms", out)]
                per_round = [sum(ms[i:i + len(stmts)]) for i in range(0, len(ms), len(stmts))]
                leased = re.findall(r"Update on recipients.*?rows=(\d+) loops", out)
                results[(case, version)] = (statistics.median(per_round), int(leased[0]) if leased else -1)
                if case == "at share":
                    plans[version] = out.split("Execution Time")[0].splitlines()
        return results, plans
    finally:
        psql(f"DROP DATABASE IF EXISTS {name};")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--backlog", type=int, default=100_000)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--store", default="both", choices=["sqlite", "postgres", "both"])
    ap.add_argument("--plans", action="store_true", help="print the query plans")
    a = ap.parse_args()
    stores = ["sqlite", "postgres"] if a.store == "both" else [a.store]
    print(f"backlog {a.backlog} due recipients of noisy, 5 each of quiet and q2; batch {LIMIT}; median of {a.rounds}")
    print(f"{'store':9} {'case':10} {'main ms':>9} {'0024 ms':>9} {'ratio':>7}  leased main/0024")
    for store in stores:
        results, plans = (run_sqlite if store == "sqlite" else run_postgres)(a.backlog, a.rounds)
        for case in ("at share", "none full"):
            (om, ol), (nm, nl) = results[(case, "main")], results[(case, "0024")]
            print(f"{store:9} {case:10} {om:9.3f} {nm:9.3f} {om / nm if nm else 0:6.1f}x  {ol}/{nl}")
        if a.plans:
            for k, v in plans.items():
                print(f"--- {store} plan {k}")
                print("\n".join(v))


if __name__ == "__main__":
    main()
