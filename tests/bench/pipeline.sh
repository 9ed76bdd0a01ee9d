#!/usr/bin/env bash
# Pushes N messages through Sluice's HTTP API to smtp-sink on loopback and,
# in the same run, measures a stock Postfix relaying the same load to the
# same kind of sink, and the smtp-source → smtp-sink ceiling.
#
#   tests/bench/pipeline.sh [-n MESSAGES] [-c CONCURRENCY] [-z "1024 20480"] [-s sqlite|postgres] [--no-postfix]
#   SLUICE_BIN=/path/to/sluice tests/bench/pipeline.sh ...   (a binary built elsewhere)
#
# Needs: Postfix (smtp-sink, smtp-source), ../shared/bench beside the repo,
# PostgreSQL for -s postgres. Everything listens on 127.0.0.1 only; every
# process it starts is stopped on exit.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
SHARED_BENCH=${SHARED_BENCH:-$ROOT/../shared/bench}
N=20000; C=32; SIZES="1024 20480"; STORE=sqlite; POSTFIX=1
while [ $# -gt 0 ]; do
  case "$1" in
    -n) N=$2; shift 2;; -c) C=$2; shift 2;; -z) SIZES=$2; shift 2;; -s) STORE=$2; shift 2;;
    --no-postfix) POSTFIX=0; shift;; *) echo "unknown option $1" >&2; exit 2;;
  esac
done
OUT=${OUT:-/tmp/sluice-bench}
rm -rf "$OUT"; mkdir -p "$OUT"
SINK_PORT=30450; HTTP_PORT=30451
export STATE_DIR=$OUT
pids=()
cleanup() {
  for p in "${pids[@]:-}"; do kill "$p" 2>/dev/null || true; done
  "$SHARED_BENCH/sink.sh" stop "$SINK_PORT" >/dev/null 2>&1 || true
}
trap cleanup EXIT INT TERM

# SLUICE_BIN runs a binary built elsewhere (e.g. an older commit, side by side).
if [ -n "${SLUICE_BIN:-}" ]; then
  SLUICE=$SLUICE_BIN
else
  TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
  (cd "$ROOT" && cargo build --release -q -p sluice)
  SLUICE=$TARGET/release/sluice
fi

case "$STORE" in
  sqlite) STORE_URL="sqlite://$OUT/sluice.db";;
  postgres)
    DB=sluice_bench_$$
    psql -q -h 127.0.0.1 -U postgres -d test -c "CREATE DATABASE $DB" >/dev/null
    STORE_URL="postgres://postgres@127.0.0.1:5432/$DB";;
esac

cat > "$OUT/pipeline.toml" <<TOML
[server]
http_listen = "127.0.0.1:$HTTP_PORT"
node_id = "bench"
[store]
url = "$STORE_URL"
[admin]
token_env = "SLUICE_BENCH_ADMIN"
[delivery]
max_in_flight = 512
[[relay]]
id = "sink"
url = "smtp://127.0.0.1:$SINK_PORT"
connection_limit = 32
tags = ["pool:platform"]
[[tenant]]
id = "bench"
allowed_sender_domains = ["example.com"]
TOML
# The one tenant here is the whole load: lift its admission limits (200 accepts a
# second by default) where the binary has them, so that older binaries compare alike.
ADMISSION='[admission.tenant.bench]
max_requests_in_flight = 100000
accepts_per_sec = 1000000
accept_burst = 1000000'
printf '%s\n' "$ADMISSION" > "$OUT/admission.toml"
if "$SLUICE" pipeline check "$OUT/admission.toml" >/dev/null 2>&1; then
  printf '%s\n' "$ADMISSION" >> "$OUT/pipeline.toml"
fi

"$SHARED_BENCH/sink.sh" start "$SINK_PORT" >/dev/null
export SLUICE_BENCH_ADMIN=bench-admin-token
"$SLUICE" serve --pipeline "$OUT/pipeline.toml" >"$OUT/serve.log" 2>&1 &
pids+=($!)
for _ in $(seq 1 100); do curl -sf "http://127.0.0.1:$HTTP_PORT/healthz" >/dev/null && break; sleep 0.1; done
KEY=$(curl -sf -X POST -H "Authorization: Bearer $SLUICE_BENCH_ADMIN" "http://127.0.0.1:$HTTP_PORT/admin/v1/tenants/bench/keys" | sed 's/.*"key":"\([^"]*\)".*/\1/')

echo "## Sluice ($STORE store), $N messages, concurrency $C"
for z in $SIZES; do
  echo "- size $z B:"
  cpu0=$(awk '{print $14+$15}' /proc/"${pids[0]}"/stat)
  "$SLUICE" bench push --url "http://127.0.0.1:$HTTP_PORT" --key "$KEY" --messages "$N" --size "$z" \
    --concurrency "$C" --sink-log "$OUT/sink-$SINK_PORT.log" | sed 's/^/  /'
  cpu1=$(awk '{print $14+$15}' /proc/"${pids[0]}"/stat)
  echo "  sluice CPU: $(( (cpu1 - cpu0) * 1000000 / $(getconf CLK_TCK) / N )) µs per message"
done

if [ "$POSTFIX" = 1 ]; then
  echo; echo "## Stock Postfix relay, same load (shared/bench/postfix-relay.sh)"
  "$SHARED_BENCH/postfix-relay.sh" bench -n "$N" -c "$C" -z "$SIZES" -r 1 2>&1 | grep -E '^\|' || true
  echo; echo "## Ceiling: smtp-source → smtp-sink, new connection per message (shared/bench/limit.sh)"
  "$SHARED_BENCH/limit.sh" -n "$N" -c "$C" -z "$SIZES" -k new -r 1 2>&1 | grep -E '^\|' || true
fi
if [ "$STORE" = postgres ]; then psql -q -h 127.0.0.1 -U postgres -d test -c "DROP DATABASE $DB WITH (FORCE)" >/dev/null || true; fi
