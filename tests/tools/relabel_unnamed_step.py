#!/usr/bin/env python3
"""Applies the corpus' labelling convention for an unknown mailbox whose SMTP
step is not named (issue 19) to a Sisimai-labelled manifest, in place.

Sisimai calls a reply that says the mailbox is unknown `filtered` unless it
knows the reply answered RCPT TO. Sluice decides by RFC instead: RFC 3463's
X.1.1 ("bad destination mailbox address") and RFC 5321's 550 "mailbox
unavailable" say the address is bad, and RCPT TO is the step that answers
for an address; only a reply known to answer DATA (the whole message read,
a content filter's answer) is `filtered`. So a row is relabelled when:

- its label is Sisimai's `filtered`;
- Sisimai's own reading names no SMTP step (`smtpcommand` empty);
- its status is not a mailbox-status code (X.2.x keeps `filtered`);
- Sisimai's diagnostic excerpt says the mailbox is unknown (UNKNOWN below).

The rule is mechanical and the same for dev and held-out families; it reads
only manifest fields (nobody reads a held-out message to apply it). The
relabelled row keeps Sisimai's labels in `sisimai_reason`,
`sisimai_hardbounce` and (when it changes) `sisimai_status`, so either
convention can be scored. Running it twice changes nothing.

    python3 tests/tools/relabel_unnamed_step.py tests/data/bounces/dev-manifest.jsonl
"""

import json
import re
import sys

# Sentences that say the mailbox is not there (RFC 3463 X.1.1's meaning),
# as MTAs commonly word it.
UNKNOWN = re.compile(
    r"user unknown|unknown user|no such user|no such mailbox|no such recipient"
    r"|unknown recipient|unknown mailbox|invalid recipient|invalid mailbox"
    r"|mailbox does not exist|mailbox not found|mailbox unavailable"
    r"|user does not exist|user doesn't exist|doesn't have a \S+ account"
    r"|account that you tried to reach does not exist|address couldn't be found"
    r"|recipient does not exist|address does not exist|user not found",
    re.IGNORECASE,
)

NOTE = (
    "unknown mailbox at an unnamed SMTP step: userunknown by RFC 3463 X.1.1 and "
    "RFC 5321 (Sisimai: filtered); tests/tools/relabel_unnamed_step.py"
)


def relabel(row):
    if row.get("no_result") or row.get("reason") != "filtered":
        return False
    if row.get("smtpcommand"):
        return False
    status = row.get("status") or ""
    if status[1:4] == ".2.":
        return False
    if not UNKNOWN.search(row.get("diagnostic_excerpt") or ""):
        return False
    row["sisimai_reason"] = row["reason"]
    row["sisimai_hardbounce"] = row["hardbounce"]
    row["reason"] = "userunknown"
    row["hardbounce"] = True
    if status.endswith(".0.910"):
        row["sisimai_status"] = status
        row["status"] = status[:-3] + "911"
    row["label_note"] = NOTE
    return True


def main(path):
    lines = open(path, encoding="utf-8").read().splitlines()
    out, changed = [], 0
    for line in lines:
        if not line.strip():
            out.append(line)
            continue
        row = json.loads(line)
        if relabel(row):
            changed += 1
            line = json.dumps(row, ensure_ascii=False)
        out.append(line)
    with open(path, "w", encoding="utf-8") as f:
        f.write("\n".join(out) + "\n")
    print(f"{path}: {changed} rows relabelled")


if __name__ == "__main__":
    main(sys.argv[1])
