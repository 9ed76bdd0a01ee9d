#!/usr/bin/env bash
# SMTP submission throughput (issue 23): smtp-source pushes N messages into Sluice's
# `[submission]` listener (a trusted network for the load generator: smtp-source speaks
# neither TLS nor AUTH), Sluice relays them to smtp-sink; in the same run a stock Postfix
# relays the same load to the same kind of sink, and smtp-source → smtp-sink gives the
# new-connection ceiling. One message per connection everywhere (smtp-source's default).
#
#   tests/bench/submission.sh [-n MESSAGES] [-c CONCURRENCY] [-z "1024 20480"] [--no-postfix]
#   SLUICE_BIN=/path/to/sluice tests/bench/submission.sh ...   (a binary built elsewhere)
#
# Inject: until smtp-source has had every final 250 (each after Sluice's commit);
# end to end: until the sink has counted N. Needs Postfix (smtp-sink, smtp-source),
# openssl, ../shared/bench beside the repo. Loopback only; every process it starts is
# stopped on exit.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
SHARED_BENCH=${SHARED_BENCH:-$ROOT/../shared/bench}
# shellcheck source=/dev/null
. "$SHARED_BENCH/common.sh"
N=20000; C=32; SIZES="1024 20480"; POSTFIX=1
while [ $# -gt 0 ]; do
  case "$1" in
    -n) N=$2; shift 2;; -c) C=$2; shift 2;; -z) SIZES=$2; shift 2;;
    --no-postfix) POSTFIX=0; shift;; *) echo "unknown option $1" >&2; exit 2;;
  esac
done
[ "$N" -le 1000000 ] || { echo "-n capped at 1000000" >&2; exit 2; }
OUT=${OUT:-/tmp/sluice-bench-submission}
rm -rf "$OUT"; mkdir -p "$OUT"
SINK_PORT=${SINK_PORT:-30460}; HTTP_PORT=${HTTP_PORT:-30461}; SUBMIT_PORT=${SUBMIT_PORT:-30462}
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
  TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
  (cd "$ROOT" && cargo build --release -q -p sluice)
  SLUICE=$TARGET/release/sluice
fi

openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
  -subj /CN=127.0.0.1 -keyout "$OUT/submit.key" -out "$OUT/submit.pem" 2>/dev/null

cat > "$OUT/pipeline.toml" <<TOML
[server]
http_listen = "127.0.0.1:$HTTP_PORT"
node_id = "bench"
[store]
url = "sqlite://$OUT/sluice.db"
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
allowed_sender_domains = ["bench.invalid"]
[admission.tenant.bench]
max_requests_in_flight = 100000
accepts_per_sec = 1000000
accept_burst = 1000000
[submission]
listen = ["127.0.0.1:$SUBMIT_PORT"]
tls_cert_file = "$OUT/submit.pem"
tls_key_file = "$OUT/submit.key"
max_connections = 1024
max_connections_per_ip = 1024
[submission.trusted_networks]
bench = ["127.0.0.1/32"]
TOML
"$SHARED_BENCH/sink.sh" start "$SINK_PORT" >/dev/null
export SLUICE_BENCH_ADMIN=bench-admin-token
"$SLUICE" serve --pipeline "$OUT/pipeline.toml" >"$OUT/serve.log" 2>&1 &
pids+=($!)
wait_port 127.0.0.1 "$SUBMIT_PORT" 60

echo "## Sluice SMTP submission (sqlite store), $N messages, concurrency $C, new connection per message"
done_before=0
for z in $SIZES; do
  echo "- size $z B (load average before: $(cut -d' ' -f1-3 /proc/loadavg)):"
  cpu0=$(awk '{print $14+$15}' /proc/"${pids[0]}"/stat)
  t0=$(now_ns)
  timeout 600 "$SMTP_SOURCE" -s "$C" -m "$N" -l "$z" -M bench.invalid \
    -f sender@bench.invalid -t rcpt@bench.invalid "127.0.0.1:$SUBMIT_PORT" >"$OUT/src-$z.out" 2>&1 </dev/null
  t1=$(now_ns)
  done_before=$((done_before + N))
  wait_count "$OUT/sink-$SINK_PORT.log" "$done_before" 600
  t2=$(now_ns)
  cpu1=$(awk '{print $14+$15}' /proc/"${pids[0]}"/stat)
  awk -v n="$N" -v a="$t0" -v b="$t1" -v c="$t2" \
    'BEGIN{printf "  inject %.0f msg/s, end to end %.0f msg/s\n", n*1e9/(b-a), n*1e9/(c-a)}'
  echo "  sluice CPU: $(( (cpu1 - cpu0) * 1000000 / $(getconf CLK_TCK) / N )) µs per message"
  echo "  load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
done

if [ "$POSTFIX" = 1 ]; then
  echo; echo "## Stock Postfix relay, same load (shared/bench/postfix-relay.sh)"
  "$SHARED_BENCH/postfix-relay.sh" bench -n "$N" -c "$C" -z "$SIZES" -r 1 2>&1 | grep -E '^\|' || true
  echo; echo "## Ceiling: smtp-source → smtp-sink, new connection per message (shared/bench/limit.sh)"
  "$SHARED_BENCH/limit.sh" -n "$N" -c "$C" -z "$SIZES" -k new -r 1 2>&1 | grep -E '^\|' || true
fi
