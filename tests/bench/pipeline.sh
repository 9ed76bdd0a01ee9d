#!/usr/bin/env bash
# Pushes N messages through Sluice's HTTP API to smtp-sink on loopback and,
# in the same run, measures a stock Postfix relaying the same load to the
# same kind of sink, and the smtp-source → smtp-sink ceiling.
#
#   tests/bench/pipeline.sh [-n MESSAGES] [-c CONCURRENCY] [-z "1024 20480"] [-s sqlite|postgres]
#                           [--accounts N] [--webhook] [--rate MSG_PER_SEC] [--no-postfix]
#   SLUICE_BIN=/path/to/sluice tests/bench/pipeline.sh ...   (a binary built elsewhere)
#   PUSH_BIN=/path/to/sluice ...   (`sluice bench push` from another binary, e.g. one with --rate)
#   OUT=/tmp/dir SINK_PORT=p HTTP_PORT=q tests/bench/pipeline.sh ...   (beside another run)
#
# --accounts N: live billing on both ledgers. The tenant resells: it gets N accounts,
# recipient rcpt<i>@example.org (as `sluice bench push` sends) being a login of account
# i mod N, and a tariff of its own for them, so every delivered message is rated twice:
# by the platform for the tenant and by the tenant for one of its customers. After each
# push the script waits for both ratings to catch up and prints how long that took.
#
# --webhook: a webhook subscribed to every event ("*"), sent to a small receiver on
# loopback (tests/bench/webhook_receiver.py, answers 204 at once), `[webhooks] batch_size`
# WEBHOOK_BATCH (100); after each push the script waits until the webhook's cursor has
# reached the tenant's last event and prints how long that took, the events received,
# the webhook's events per second from the push's start to caught up, and the receiver's
# event-to-arrival latency p50/p99 (arrival minus each event's `at_ms`).
#
# --rate R: `sluice bench push --rate R`, a steady R messages a second (as fast as it
# goes without it), e.g. for the webhook's latency at 1,000 msg/s.
#
# Needs: Postfix (smtp-sink, smtp-source), ../shared/bench beside the repo,
# PostgreSQL for -s postgres. Everything listens on 127.0.0.1 only; every
# process it starts is stopped on exit.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
SHARED_BENCH=${SHARED_BENCH:-$ROOT/../shared/bench}
N=20000; C=32; SIZES="1024 20480"; STORE=sqlite; POSTFIX=1; ACCOUNTS=0; WEBHOOK=0; RATE=
while [ $# -gt 0 ]; do
  case "$1" in
    -n) N=$2; shift 2;; -c) C=$2; shift 2;; -z) SIZES=$2; shift 2;; -s) STORE=$2; shift 2;;
    --accounts) ACCOUNTS=$2; shift 2;;
    --webhook) WEBHOOK=1; shift;;
    --rate) RATE=$2; shift 2;;
    --no-postfix) POSTFIX=0; shift;; *) echo "unknown option $1" >&2; exit 2;;
  esac
done
# An account holds at most 1,000 logins (store::MAX_LOGINS).
if [ "$ACCOUNTS" -gt 0 ] && [ $(( (N + ACCOUNTS - 1) / ACCOUNTS )) -gt 1000 ]; then
  echo "--accounts $ACCOUNTS: $N recipients need at least $(( (N + 999) / 1000 )) accounts (1,000 logins each)" >&2
  exit 2
fi
OUT=${OUT:-/tmp/sluice-bench}
rm -rf "$OUT"; mkdir -p "$OUT"
# Ports and OUT may be moved when another run shares the machine.
SINK_PORT=${SINK_PORT:-30450}; HTTP_PORT=${HTTP_PORT:-30451}; WEBHOOK_PORT=${WEBHOOK_PORT:-30452}
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

if [ "$WEBHOOK" = 1 ]; then
  printf '[webhooks]\nallow_private = true\nbatch_size = %s\npoll_ms = 100\n' "${WEBHOOK_BATCH:-100}" >> "$OUT/pipeline.toml"
fi
"$SHARED_BENCH/sink.sh" start "$SINK_PORT" >/dev/null
export SLUICE_BENCH_ADMIN=bench-admin-token
"$SLUICE" serve --pipeline "$OUT/pipeline.toml" >"$OUT/serve.log" 2>&1 &
pids+=($!)
# After the server: pids[0] is the server, whose CPU is measured.
if [ "$WEBHOOK" = 1 ]; then
  python3 "$ROOT/tests/bench/webhook_receiver.py" "$WEBHOOK_PORT" "$OUT/webhook-events" &
  pids+=($!)
fi
for _ in $(seq 1 100); do curl -sf "http://127.0.0.1:$HTTP_PORT/healthz" >/dev/null && break; sleep 0.1; done
KEY=$(curl -sf -X POST -H "Authorization: Bearer $SLUICE_BENCH_ADMIN" "http://127.0.0.1:$HTTP_PORT/admin/v1/tenants/bench/keys" | sed 's/.*"key":"\([^"]*\)".*/\1/')

API="http://127.0.0.1:$HTTP_PORT"
if [ "$WEBHOOK" = 1 ]; then
  HOOK=$(curl -sf -X POST -H "Authorization: Bearer $KEY" -H 'Content-Type: application/json' \
    -d "{\"url\": \"http://127.0.0.1:$WEBHOOK_PORT/hook\", \"events\": [\"*\"]}" "$API/v1/webhooks" |
    sed 's/.*"id":"\([^"]*\)".*/\1/')
  echo "## A webhook subscribed to every event ($HOOK, batch_size ${WEBHOOK_BATCH:-100})"
fi
# Seconds until the webhook's cursor reaches the tenant's last event.
webhook_caught_up() {
  local t0 t1 cursor more
  t0=$(date +%s.%N)
  for _ in $(seq 1 3000); do
    cursor=$(curl -sf -H "Authorization: Bearer $KEY" "$API/v1/webhooks/$HOOK" | sed -n 's/.*"cursor":\([0-9]*\).*/\1/p')
    more=$(curl -sf -H "Authorization: Bearer $KEY" "$API/v1/events?after=${cursor:-0}&limit=1" | grep -c '"cursor"' || true)
    if [ "$more" = 0 ]; then
      t1=$(date +%s.%N)
      got=$(cat "$OUT/webhook-events" 2>/dev/null || echo 0)
      echo "  webhook caught up $(echo "$t1 - $t0" | bc) s after the last delivery (cursor $cursor; receiver counted $got events)"
      echo "  webhook: $(echo "scale=0; $got / ($t1 - $PUSH_T0)" | bc) events/s from the push's start to caught up"
      # events requests connections p50 p99 max (ms), as webhook_receiver.py writes them.
      read -r _ lreq lconn lp50 lp99 lmax < "$OUT/webhook-events.lat" || true
      echo "  webhook: $lreq requests on $lconn connections; event to arrival p50 $lp50 ms, p99 $lp99 ms, max $lmax ms"
      return
    fi
    sleep 0.1
  done
  echo "  webhook not caught up after 300 s (cursor $cursor)"
}
if [ "$ACCOUNTS" -gt 0 ]; then
  tariff='id = \"bench-accounts\"\ncurrency = \"EUR\"\nminor_units = 2\n[[service]]\nname = \"mail\"\nunit = \"message\"\ndirection = \"outbound\"\nmode = \"graduated\"\ntier = [{ up_to = 100, price = \"0.002\" }, { price = \"0.001\" }]\n'
  curl -sf -X PUT -H "Authorization: Bearer $KEY" -H 'Content-Type: application/json' \
    -d "{\"tariff\": \"$tariff\"}" "$API/v1/account-billing" >/dev/null
  for a in $(seq 0 $((ACCOUNTS - 1))); do
    logins=$(seq "$a" "$ACCOUNTS" $((N - 1)) | sed 's/.*/"rcpt&@example.org"/' | paste -sd, -)
    curl -sf -X POST -H "Authorization: Bearer $KEY" -H 'Content-Type: application/json' \
      -d "{\"id\": \"acct$a\", \"logins\": [$logins]}" "$API/v1/accounts" >/dev/null
  done
  echo "## Billing: the platform's rater for the tenant, and $ACCOUNTS accounts of the tenant rated by its own tariff"
fi

# Seconds until both ratings have caught up (nothing unrated for the platform, nothing
# waiting after the tenant's account-rating cursor).
caught_up() {
  local t0 t1
  t0=$(date +%s.%N)
  for _ in $(seq 1 1200); do
    unrated=$(curl -sf -H "Authorization: Bearer $SLUICE_BENCH_ADMIN" "$API/admin/v1/billing/unrated?limit=1" | grep -c '"seq"' || true)
    waiting=$(curl -sf -H "Authorization: Bearer $KEY" "$API/v1/account-billing" | sed -n 's/.*"waiting":\([0-9]*\).*/\1/p')
    if [ "$unrated" = 0 ] && [ "${waiting:-0}" = 0 ]; then
      t1=$(date +%s.%N); echo "  both ratings caught up $(echo "$t1 - $t0" | bc) s after the last delivery"; return
    fi
    sleep 0.1
  done
  echo "  ratings not caught up after 120 s (unrated: $unrated, account usage waiting: $waiting)"
}

echo "## Sluice ($STORE store), $N messages, concurrency $C"
for z in $SIZES; do
  echo "- size $z B (load average before: $(cut -d' ' -f1-3 /proc/loadavg)):"
  cpu0=$(awk '{print $14+$15}' /proc/"${pids[0]}"/stat)
  PUSH_T0=$(date +%s.%N)
  "${PUSH_BIN:-$SLUICE}" bench push --url "http://127.0.0.1:$HTTP_PORT" --key "$KEY" --messages "$N" --size "$z" \
    --concurrency "$C" --sink-log "$OUT/sink-$SINK_PORT.log" ${RATE:+--rate "$RATE"} | sed 's/^/  /'
  cpu1=$(awk '{print $14+$15}' /proc/"${pids[0]}"/stat)
  echo "  sluice CPU: $(( (cpu1 - cpu0) * 1000000 / $(getconf CLK_TCK) / N )) µs per message"
  if [ "$ACCOUNTS" -gt 0 ]; then
    caught_up
    cpu2=$(awk '{print $14+$15}' /proc/"${pids[0]}"/stat)
    echo "  sluice CPU with both ratings done: $(( (cpu2 - cpu0) * 1000000 / $(getconf CLK_TCK) / N )) µs per message"
  fi
  if [ "$WEBHOOK" = 1 ]; then
    webhook_caught_up
    cpu2=$(awk '{print $14+$15}' /proc/"${pids[0]}"/stat)
    echo "  sluice CPU with the webhook caught up: $(( (cpu2 - cpu0) * 1000000 / $(getconf CLK_TCK) / N )) µs per message"
  fi
  echo "  load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
done

if [ "$POSTFIX" = 1 ]; then
  echo; echo "## Stock Postfix relay, same load (shared/bench/postfix-relay.sh)"
  "$SHARED_BENCH/postfix-relay.sh" bench -n "$N" -c "$C" -z "$SIZES" -r 1 2>&1 | grep -E '^\|' || true
  echo; echo "## Ceiling: smtp-source → smtp-sink, new connection per message (shared/bench/limit.sh)"
  "$SHARED_BENCH/limit.sh" -n "$N" -c "$C" -z "$SIZES" -k new -r 1 2>&1 | grep -E '^\|' || true
fi
if [ "$STORE" = postgres ]; then psql -q -h 127.0.0.1 -U postgres -d test -c "DROP DATABASE $DB WITH (FORCE)" >/dev/null || true; fi
