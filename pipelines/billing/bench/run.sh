#!/bin/sh
# usage: cd DIR-with-logs-and-a-copy-of-sluice && sh /path/to/pipelines/billing/bench/run.sh
P=/work/wt-maillog/pipelines/billing/bench
for f in empty q1m q4m; do for i in 1 2 3; do
  /usr/bin/time -f "$f sluice %e s wall, %U user, %S sys, %M KB max RSS" ./sluice bill --format qmail --logins $P/qmail-logins.toml --tariffs $P/tariffs.toml $f.log > $f.json
done; done
for f in p1m p4m; do for i in 1 2 3; do
  /usr/bin/time -f "$f sluice %e s wall, %U user, %S sys, %M KB max RSS" ./sluice bill --format postfix --year 2023 --logins $P/postfix-logins.toml --tariffs $P/tariffs.toml $f.log > $f.json
done; done
for f in p1m p4m; do for i in 1 2 3; do
  /usr/bin/time -f "$f pflogsumm %e s wall, %U user, %S sys, %M KB max RSS" pflogsumm $f.log > $f.pflogsumm.txt
done; done
