#!/usr/bin/env python3
"""Account for every message of tests/integration/pipeline-load.py.

usage: pipeline-account.py LOAD-LOG SINK-DIR [KILLS-FILE WINDOW-SECONDS]

Reads the sender's log (B/D/A/R/X lines) and the primary's copies (smtp-sink
files, matched by "X-Load-Token:"), and prints "name value" lines:

  begun       transactions started
  accepted    messages that got 250
  delivered   distinct accepted tokens the primary holds
  lost        accepted but never delivered (must be 0)
  duplicated  accepted tokens delivered more than once
  dup_extra   copies beyond the first, in all
  dup_max_gap the longest time from a duplicate's first copy to the next kill
  dup_outside duplicates whose first copy did not arrive within WINDOW seconds
              before a kill (the documented window of the relay; must be 0)
  orphans     dot sent, connection broke before the reply, yet delivered:
              committed in the instant before a kill (the 250 window)
  unsure      dot sent, connection broke, not delivered
  refused     refused with a 4xx/5xx reply (before or after the data)
  refused_delivered  refused, yet delivered (must be 0)
  unsent_delivered   broken before the dot, yet delivered (must be 0)
  strangers   tokens in the sink the sender never began (must be 0)
  codes       refusal codes seen, "code:count,..."
Lines starting "diag " explain the failures.
"""
import os
import re
import sys

log_f, sink = sys.argv[1], sys.argv[2]
kills = []
window = 0.0
if len(sys.argv) > 4:
    kills = sorted(float(l) for l in open(sys.argv[3]) if l.strip())
    window = float(sys.argv[4])

state = {}
codes = {}
for line in open(log_f):
    f = line.split()
    if len(f) < 2:
        continue
    kind, tok = f[0], f[1]
    st = state.setdefault(tok, set())
    st.add(kind)
    if kind == "R":
        codes[f[2]] = codes.get(f[2], 0) + 1

copies = {}
if os.path.isdir(sink):
    for name in os.listdir(sink):
        p = os.path.join(sink, name)
        try:
            data = open(p, "rb").read()
        except OSError:
            continue
        m = re.search(rb"^X-Load-Token: (\S+)", data, re.M)
        if m:
            copies.setdefault(m.group(1).decode(), []).append(os.stat(p).st_mtime)

out = {k: 0 for k in ("begun", "accepted", "delivered", "lost", "duplicated", "dup_extra",
                      "dup_outside", "orphans", "unsure", "refused", "refused_delivered",
                      "unsent_delivered", "strangers")}
diags = []
max_gap = 0.0
for tok, st in state.items():
    if "B" in st:
        out["begun"] += 1
    n = len(copies.get(tok, []))
    if "A" in st:
        out["accepted"] += 1
        if n == 0:
            out["lost"] += 1
            diags.append("accepted but never delivered: " + tok)
        else:
            out["delivered"] += 1
        if n > 1:
            out["duplicated"] += 1
            out["dup_extra"] += n - 1
            first = min(copies[tok])
            gap = min([k - first for k in kills if k >= first - 0.05] or [99.0])
            max_gap = max(max_gap, gap)
            if gap > window:
                out["dup_outside"] += 1
                diags.append("duplicate %s: first copy %.3fs before the next kill" % (tok, gap))
    elif "R" in st:
        out["refused"] += 1
        if n > 0:
            out["refused_delivered"] += 1
            diags.append("refused but delivered: " + tok)
    elif "D" in st:
        if n > 0:
            out["orphans"] += 1
        else:
            out["unsure"] += 1
    elif n > 0:
        out["unsent_delivered"] += 1
        diags.append("data never finished but delivered: " + tok)
for tok in copies:
    if tok not in state:
        out["strangers"] += 1
        diags.append("delivered but never sent: " + tok)
for k, v in out.items():
    print(k, v)
print("dup_max_gap", "%.3f" % max_gap)
print("codes", ",".join("%s:%d" % kv for kv in sorted(codes.items())) or "-")
for d in diags[:20]:
    print("diag", d)
