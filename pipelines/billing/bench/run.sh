#!/bin/sh
# The billing benchmark: `sluice bill` on generated qmail and Postfix logs, and
# pflogsumm on the same Postfix logs, 3 runs each under /usr/bin/time.
#
# usage: cd DIR-with-the-logs-and-a-copy-of-sluice && sh /path/to/pipelines/billing/bench/run.sh
# The logs: see BENCHMARKS.md (gen_qmail.py / gen_postfix.py from ../shared/bench).
# The first `empty` runs have the compiled-component cache off (a cold start: the
# rater is compiled); every other run loads the compiled rater from the cache.
P=$(cd "$(dirname "$0")" && pwd)
T="%e s wall, %U user, %S sys, %M KB max RSS"
for i in 1 2 3; do
  SLUICE_CACHE_DIR=off /usr/bin/time -f "empty (no cache) sluice $T" ./sluice bill --format qmail --logins "$P/qmail-logins.toml" --tariffs "$P/tariffs.toml" empty.log > empty.json
done
for f in empty q1m q4m; do for i in 1 2 3; do
  /usr/bin/time -f "$f sluice $T" ./sluice bill --format qmail --logins "$P/qmail-logins.toml" --tariffs "$P/tariffs.toml" $f.log > $f.json
done; done
for f in p1m p4m; do for i in 1 2 3; do
  /usr/bin/time -f "$f sluice $T" ./sluice bill --format postfix --year 2023 --logins "$P/postfix-logins.toml" --tariffs "$P/tariffs.toml" $f.log > $f.json
done; done
for f in p1m p4m; do for i in 1 2 3; do
  /usr/bin/time -f "$f pflogsumm $T" pflogsumm $f.log > $f.pflogsumm.txt
done; done
