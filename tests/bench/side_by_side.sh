#!/usr/bin/env bash
# Two release binaries side by side, alternating, on the accounts benchmark (issue 17)
# and the noisy-neighbour benchmark (issue 16), one table row per run.
#
#   tests/bench/side_by_side.sh accounts BASE_BIN NEW_BIN [ROUNDS] [-s sqlite|postgres] [-n N]
#   tests/bench/side_by_side.sh noisy    BASE_BIN NEW_BIN [ROUNDS]
#
# accounts: each round runs, for each binary (the order alternates from round to round),
# tests/bench/pipeline.sh -z 1024 --no-postfix without accounts and with --accounts 50,
# and prints msg/s end to end, the server's CPU per message (/proc, with both ratings
# done), accounts / none, and the account rating's phases per event (the debug line
# `accounts rated`: claim, read, rate, write, summed over the run ÷ events rated).
# noisy: tests/bench/noisy.py --quiet 200 --rate 20 for each binary in turn.
# Every run holds /work/notes/bench.lock when it exists (shared machines), and prints
# the load average. Logs stay in $OUT_ROOT (/tmp/side-by-side).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
WHAT=$1 BASE=$2 NEW=$3; shift 3
ROUNDS=3
if [ $# -gt 0 ] && [[ $1 != -* ]]; then ROUNDS=$1; shift; fi
STORE=sqlite N=20000
while [ $# -gt 0 ]; do
  case "$1" in
    -s) STORE=$2; shift 2;; -n) N=$2; shift 2;; *) echo "unknown option $1" >&2; exit 2;;
  esac
done
OUT_ROOT=${OUT_ROOT:-/tmp/side-by-side}
mkdir -p "$OUT_ROOT"
LOCK=${BENCH_LOCK:-/work/notes/bench.lock}
locked() { if [ -e "$(dirname "$LOCK")" ]; then flock "$LOCK" "$@"; else "$@"; fi; }
load() { cut -d' ' -f1 /proc/loadavg; }

# Sums the `accounts rated` debug lines of a serve log: events, then µs per event of
# claim, read, rate, write.
phases() {
  grep -h 'accounts rated' "$1" 2>/dev/null | sed 's/\x1b\[[0-9;]*m//g' | awk '
    { for (i = 1; i <= NF; i++) { split($i, kv, "="); v[kv[1]] = kv[2] }
      e += v["events"]; c += v["claim_us"]; r += v["read_us"]; t += v["rate_us"]; w += v["write_us"]; b++ }
    END { if (e > 0) printf "%d batches, %d events/batch; claim %.0f, read %.0f, rate %.0f, write %.0f", b, e / b, c / e, r / e, t / e, w / e;
          else printf "-" }'
}

run_pipeline() { # bin label accounts
  local bin=$1 label=$2 acc=$3 out="$OUT_ROOT/$2-acc$3"
  local args=(-n "$N" -c 32 -z 1024 -s "$STORE" --no-postfix)
  [ "$acc" -gt 0 ] && args+=(--accounts "$acc")
  local l0; l0=$(load)
  locked env OUT="$out" SLUICE_BIN="$bin" SLUICE_LOG='warn,sluice::serve::account_billing=debug' \
    "$ROOT/tests/bench/pipeline.sh" "${args[@]}" >"$out.txt" 2>&1 || true
  cp "$out/serve.log" "$out.serve.log" 2>/dev/null || true
  local rate cpu cpu_done
  rate=$(sed -n 's/.*delivered [0-9]* messages: \([0-9]*\) msg\/s end to end.*/\1/p' "$out.txt" | tail -1)
  cpu=$(sed -n 's/.*sluice CPU: \([0-9]*\) µs per message.*/\1/p' "$out.txt" | tail -1)
  cpu_done=$(sed -n 's/.*sluice CPU with both ratings done: \([0-9]*\) µs.*/\1/p' "$out.txt" | tail -1)
  echo "${rate:-0} ${cpu_done:-${cpu:-0}} $l0-$(load)"
}

if [ "$WHAT" = accounts ]; then
  echo "| round | bin | none msg/s | CPU µs/msg | accounts msg/s | CPU µs/msg (ratings done) | accounts / none | load | account rating per event (µs) |"
  echo "|---|---|---:|---:|---:|---:|---:|---|---|"
  for r in $(seq 1 "$ROUNDS"); do
    if [ $((r % 2)) = 1 ]; then order="base new"; else order="new base"; fi
    for which in $order; do
      bin=$BASE; [ "$which" = new ] && bin=$NEW
      read -r n_rate n_cpu n_load < <(run_pipeline "$bin" "$which-r$r" 0)
      read -r a_rate a_cpu a_load < <(run_pipeline "$bin" "$which-r$r" 50)
      ratio=$(awk -v a="$a_rate" -v n="$n_rate" 'BEGIN { if (n > 0) printf "%.2f", a / n; else print "-" }')
      echo "| $r | $which | $n_rate | $n_cpu | $a_rate | $a_cpu | $ratio | $n_load, $a_load | $(phases "$OUT_ROOT/$which-r$r-acc50.serve.log") |"
    done
  done
elif [ "$WHAT" = noisy ]; then
  for r in $(seq 1 "$ROUNDS"); do
    if [ $((r % 2)) = 1 ]; then order="base new"; else order="new base"; fi
    for which in $order; do
      bin=$BASE; [ "$which" = new ] && bin=$NEW
      echo "### round $r, $which ($(date -u +%H:%M:%S), load $(load))"
      locked env SLUICE_BIN="$bin" python3 "$ROOT/tests/bench/noisy.py" --quiet 200 --rate 20 \
        >"$OUT_ROOT/noisy-$which-r$r.txt" 2>&1 || true
      tail -n 12 "$OUT_ROOT/noisy-$which-r$r.txt"
      echo "(load after $(load))"
    done
  done
else
  echo "first argument: accounts or noisy" >&2; exit 2
fi
