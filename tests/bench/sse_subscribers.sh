#!/usr/bin/env bash
# Many event stream subscribers on one Sluice node (issue 21): for 1 subscriber and then
# for N (10,000 by default) of one tenant on `GET /v1/events/stream`, the server's memory
# per subscriber (its RSS with them streaming minus before, over N) and the fan-out
# latency (arrival at a subscriber minus the event's `at_ms`, so the sequencer round of
# `[events] poll_ms` is in it) while M messages go through at a steady R msg/s.
#
#   tests/bench/sse_subscribers.sh [-n SUBSCRIBERS] [-m MESSAGES] [-r RATE]
#   SLUICE_BIN=/path/to/sluice PUSH_BIN=/path/to/sluice tests/bench/sse_subscribers.sh ...
#
# The subscribers are tests/bench/sse_subscribers.py (Python asyncio, one process).
# Needs: Postfix's smtp-sink (../shared/bench/sink.sh). Everything listens on 127.0.0.1
# only; the open-files limit is raised for this script's processes (to SUBSCRIBERS + 2048,
# within the hard limit); every
# process it starts is stopped on exit.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
SHARED_BENCH=${SHARED_BENCH:-$ROOT/../shared/bench}
SUBS=10000; M=60; RATE=2
while [ $# -gt 0 ]; do
  case "$1" in
    -n) SUBS=$2; shift 2;; -m) M=$2; shift 2;; -r) RATE=$2; shift 2;;
    *) echo "unknown option $1" >&2; exit 2;;
  esac
done
# The server and the subscribers' process each hold one descriptor per subscriber.
want=$((SUBS + 2048)); hard=$(ulimit -Hn)
if [ "$hard" != unlimited ] && [ "$hard" -lt "$want" ]; then
  echo "open files: $SUBS subscribers need $want descriptors per process; the hard limit is $hard" >&2
  exit 2
fi
ulimit -n "$want"
OUT=${OUT:-/tmp/sluice-sse-bench}
rm -rf "$OUT"; mkdir -p "$OUT"
SINK_PORT=${SINK_PORT:-30460}; HTTP_PORT=${HTTP_PORT:-30461}
export STATE_DIR=$OUT
pids=()
cleanup() {
  for p in "${pids[@]:-}"; do kill "$p" 2>/dev/null || true; done
  "$SHARED_BENCH/sink.sh" stop "$SINK_PORT" >/dev/null 2>&1 || true
}
trap cleanup EXIT INT TERM

if [ -n "${SLUICE_BIN:-}" ]; then
  SLUICE=$SLUICE_BIN
else
  (cd "$ROOT" && cargo build --release -q -p sluice)
  SLUICE=${CARGO_TARGET_DIR:-$ROOT/target}/release/sluice
fi
PUSH=${PUSH_BIN:-$SLUICE}

cat > "$OUT/pipeline.toml" <<TOML
[server]
http_listen = "127.0.0.1:$HTTP_PORT"
node_id = "bench"
[store]
url = "sqlite://$OUT/sluice.db"
[admin]
token_env = "SLUICE_BENCH_ADMIN"
[events]
max_streams_per_tenant = $SUBS
[[relay]]
id = "sink"
url = "smtp://127.0.0.1:$SINK_PORT"
connection_limit = 32
tags = ["pool:platform"]
[[tenant]]
id = "bench"
allowed_sender_domains = ["example.com"]
[admission.tenant.bench]
max_requests_in_flight = 100000
accepts_per_sec = 1000000
accept_burst = 1000000
TOML
"$SHARED_BENCH/sink.sh" start "$SINK_PORT" >/dev/null
export SLUICE_BENCH_ADMIN=bench-admin-token
"$SLUICE" serve --pipeline "$OUT/pipeline.toml" >"$OUT/serve.log" 2>&1 &
SERVER=$!
pids+=("$SERVER")
for _ in $(seq 1 100); do curl -sf "http://127.0.0.1:$HTTP_PORT/healthz" >/dev/null && break; sleep 0.1; done
KEY=$(curl -sf -X POST -H "Authorization: Bearer $SLUICE_BENCH_ADMIN" "http://127.0.0.1:$HTTP_PORT/admin/v1/tenants/bench/keys" | sed 's/.*"key":"\([^"]*\)".*/\1/')
rss() { awk '/^VmRSS:/ {print $2}' /proc/"$SERVER"/status; }
push() {
  "$PUSH" bench push --url "http://127.0.0.1:$HTTP_PORT" --key "$KEY" --messages "$1" --size 1024 \
    --concurrency 4 --sink-log "$OUT/sink-$SINK_PORT.log" ${2:+--rate "$2"} >/dev/null
}
# Warm-up: pools, caches and the event tables past their first rows.
push 200

echo "## $(basename "$SLUICE") serving event streams; $M messages at $RATE msg/s while they stream"
echo "| subscribers | streaming (refused) | server RSS before → with them | per subscriber | events received (subscribers complete) | fan-out p50 / p99 / max | load average |"
echo "|---|---|---|---|---|---|---|"
for n in 1 "$SUBS"; do
  rm -f "$OUT/ready" "$OUT/stop" "$OUT/result"
  rss0=$(rss)
  python3 "$ROOT/tests/bench/sse_subscribers.py" --port "$HTTP_PORT" --key "$KEY" --subscribers "$n" \
    --ready "$OUT/ready" --stop "$OUT/stop" --out "$OUT/result" &
  gen=$!
  pids+=("$gen")
  for _ in $(seq 1 1200); do [ -s "$OUT/ready" ] && break; sleep 0.1; done
  read -r streaming refused < "$OUT/ready"
  # Settled: buffers allocated as the first heartbeats go out.
  sleep 3
  rss1=$(rss)
  load=$(cut -d' ' -f1-3 /proc/loadavg)
  push "$M" "$RATE"
  sleep 2
  touch "$OUT/stop"
  wait "$gen" || true
  read -r _ _ _ complete events p50 p99 max < "$OUT/result"
  per=$(( (rss1 - rss0) * 1024 / (streaming > 0 ? streaming : 1) ))
  echo "| $n | $streaming ($refused) | $((rss0 / 1024)) → $((rss1 / 1024)) MiB | $per B | $events ($complete) | $p50 / $p99 / $max ms | $load |"
done
