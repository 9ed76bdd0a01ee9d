#!/usr/bin/env bash
# Tenant plugin benchmarks on two `sluice serve` hosts sharing one PostgreSQL store,
# delivering to smtp-sink on loopback:
#
#  1. upload → live: a route plugin is uploaded on host 1 (compiled, checked, stored,
#     activated); messages flow all the while; we time the first message routed by the
#     new version on host 1 and on host 2 (read from each host's per-version call
#     counters in GET /v1/plugins).
#  2. throughput (`sluice bench push` to host 1) with the pipeline's router only, with a
#     tenant route plugin, and with it while activate / rollback run in a loop on host 1.
#
#   tests/bench/plugins.sh [-n MESSAGES] [-c CONCURRENCY] [-r ROUNDS]
#
# Needs: smtp-sink (Postfix), PostgreSQL at 127.0.0.1:5432 (user postgres, trust),
# curl, jq, ../shared/bench beside the repo. Every process it starts is stopped on exit.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
SHARED_BENCH=${SHARED_BENCH:-$ROOT/../shared/bench}
N=5000; C=32; ROUNDS=5
while [ $# -gt 0 ]; do
  case "$1" in
    -n) N=$2; shift 2;; -c) C=$2; shift 2;; -r) ROUNDS=$2; shift 2;;
    *) echo "unknown option $1" >&2; exit 2;;
  esac
done
OUT=${OUT:-/tmp/sluice-bench-plugins}
rm -rf "$OUT"; mkdir -p "$OUT"
SINK_PORT=30460; H1=30461; H2=30462
export STATE_DIR=$OUT
DB=sluice_bench_plugins_$$
pids=()
cleanup() {
  for p in "${pids[@]:-}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  "$SHARED_BENCH/sink.sh" stop "$SINK_PORT" >/dev/null 2>&1 || true
  psql -q -h 127.0.0.1 -U postgres -d test -c "DROP DATABASE IF EXISTS $DB WITH (FORCE)" >/dev/null 2>&1 || true
}
trap cleanup EXIT INT TERM

TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
WASM_DIR=${SLUICE_WASM_TARGET_DIR:-$TARGET/wasm-plugins}/wasm32-wasip2/plugin
(cd "$ROOT" && cargo build --release -q -p sluice)
# A copy: the shared target directory may be rebuilt by someone else meanwhile.
cp "$TARGET/release/sluice" "$OUT/sluice"
SLUICE=$OUT/sluice
ROUTER=$WASM_DIR/router_weighted.wasm
[ -f "$ROUTER" ] || { echo "no $ROUTER (build the host once)" >&2; exit 1; }

psql -q -h 127.0.0.1 -U postgres -d test -c "CREATE DATABASE $DB" >/dev/null
export SLUICE_BENCH_ADMIN=bench-admin-token
for h in 1 2; do
  port=$([ $h = 1 ] && echo $H1 || echo $H2)
  cat > "$OUT/pipeline-$h.toml" <<TOML
[server]
http_listen = "127.0.0.1:$port"
node_id = "host$h"
[store]
url = "postgres://postgres@127.0.0.1:5432/$DB"
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
done
"$SHARED_BENCH/sink.sh" start "$SINK_PORT" >/dev/null
for h in 1 2; do
  "$SLUICE" serve --pipeline "$OUT/pipeline-$h.toml" >"$OUT/serve-$h.log" 2>&1 &
  pids+=($!)
  # Host 1 migrates the database; host 2 starts once it is up.
  port=$([ $h = 1 ] && echo $H1 || echo $H2)
  for _ in $(seq 1 200); do curl -sf "http://127.0.0.1:$port/healthz" >/dev/null && break; sleep 0.05; done
done
KEY=$(curl -sf -X POST -H "Authorization: Bearer $SLUICE_BENCH_ADMIN" "http://127.0.0.1:$H1/admin/v1/tenants/bench/keys" | jq -r .key)
auth=(-H "Authorization: Bearer $KEY")
now_ms() { date +%s%3N; }
calls_on() { # host-port version → calls of that route version on that host
  curl -sf "${auth[@]}" "http://127.0.0.1:$1/v1/plugins" |
    jq "[.plugins[] | select(.stage==\"route\") | .versions[] | select(.version==$2) | .stats.calls // 0] | first // 0"
}
upload() { # round → version number
  # Distinct bytes per round (a custom section naming the round), so that each upload is
  # a new component that the hosts compile, not one found in the compiled-component cache.
  python3 - "$ROUTER" "$OUT/round-$1.wasm" "$1-$$" <<'PY'
import sys
src, dst, tag = sys.argv[1], sys.argv[2], sys.argv[3].encode()
def leb(n):
    out = bytearray()
    while True:
        b, n = n & 0x7F, n >> 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)
name = b"sluice-bench-round"
body = leb(len(name)) + name + tag
open(dst, "wb").write(open(src, "rb").read() + b"\x00" + leb(len(body)) + body)
PY
  curl -sf "${auth[@]}" -X PUT --data-binary "@$OUT/round-$1.wasm" -H 'Content-Type: application/wasm' \
    "http://127.0.0.1:$H1/v1/plugins/route?config=round%3D$1" | jq .version.version
}

# A trickle of messages (one every 20 ms) so that both hosts route all the time.
trickle() {
  local i=0
  while :; do
    curl -sf -o /dev/null "${auth[@]}" -H 'Content-Type: application/json' \
      -d "{\"from\":\"t@example.com\",\"to\":[\"r$i@example.net\"],\"subject\":\"trickle $i\",\"text\":\"x\"}" \
      "http://127.0.0.1:$(( i % 2 ? H2 : H1 ))/v1/messages" || true
    i=$((i + 1)); sleep 0.02
  done
}

push() {
  "$SLUICE" bench push --url "http://127.0.0.1:$H1" --key "$KEY" --messages "$N" --size 1024 \
    --concurrency "$C" --sink-log "$OUT/sink-$SINK_PORT.log" | sed 's/^/  /'
}
echo "## Baseline: the pipeline's router only (no tenant plugin), $N messages of 1 KiB, concurrency $C"
push
echo

echo "## Upload → first message routed by the new version (2 hosts, PostgreSQL, $(stat -c %s "$ROUTER") B component)"
echo "| round | upload answered (compile + check + store + activate) | live on host 1 | live on host 2 |"
echo "|---|---|---|---|"
upload 0 >/dev/null   # the first upload also warms the hosts
trickle & tp=$!; pids+=($tp)
sleep 3
for r in $(seq 1 "$ROUNDS"); do
  t0=$(now_ms)
  v=$(upload "$r")
  t_up=$(now_ms)
  t1=""; t2=""
  while [ -z "$t1" ] || [ -z "$t2" ]; do
    [ -z "$t1" ] && [ "$(calls_on $H1 "$v")" -gt 0 ] && t1=$(now_ms)
    [ -z "$t2" ] && [ "$(calls_on $H2 "$v")" -gt 0 ] && t2=$(now_ms)
    if [ $(( $(now_ms) - t0 )) -gt 30000 ]; then echo "round $r: version $v not live within 30 s" >&2; break; fi
    sleep 0.01
  done
  echo "| $r (v$v) | $((t_up - t0)) ms | $(( ${t1:-0} - t0 )) ms | $(( ${t2:-0} - t0 )) ms |"
  sleep 2.5
done
kill "$tp" 2>/dev/null || true; wait "$tp" 2>/dev/null || true

echo
echo "## Throughput with a tenant route plugin, $N messages of 1 KiB, concurrency $C"
echo "- the tenant's plugin, no switching:"
push
echo "- activate/rollback in a loop on host 1 meanwhile:"
switches=$OUT/switches
(
  n=0
  while :; do
    curl -sf -o /dev/null "${auth[@]}" -H 'Content-Type: application/json' -d '{"version": 1}' \
      "http://127.0.0.1:$H1/v1/plugins/route/activate" && n=$((n + 1))
    curl -sf -o /dev/null "${auth[@]}" -X POST "http://127.0.0.1:$H1/v1/plugins/route/rollback" && n=$((n + 1))
    echo $n > "$switches"
  done
) & sp=$!; pids+=($sp)
s0=$(now_ms)
push
s1=$(now_ms)
kill "$sp" 2>/dev/null || true; wait "$sp" 2>/dev/null || true
echo "  switches: $(cat "$switches" 2>/dev/null || echo 0) in $(( (s1 - s0) / 1000 )) s"
