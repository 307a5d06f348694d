#!/usr/bin/env python3
"""Call counts and totals of a callgrind dump.

    callgrind-calls.py FILE [NAME-SUBSTRING...]

Prints the dump's event totals, then, for every called function whose
name contains one of the substrings, how many times it was called (summed
over its call sites). Used with the runner's --wrap-server/--attach to
count messages (calls to the send or recv wrapper) in a window.
"""
import re
import sys
from collections import defaultdict

path, pats = sys.argv[1], sys.argv[2:]
names = {}
calls = defaultdict(int)
cfn = None
events = totals = None
for line in open(path, errors="replace"):
    line = line.rstrip("\n")
    if line.startswith("events:"):
        events = line.split()[1:]
    elif line.startswith("totals:") or (line.startswith("summary:") and totals is None):
        totals = [int(x) for x in line.split()[1:]]
    m = re.match(r"^c?fn=\((\d+)\)(?: (.*))?$", line)
    if m:
        fid, name = m.group(1), m.group(2)
        if name:
            names[fid] = name
        if line.startswith("cfn="):
            cfn = names.get(fid, fid)
        continue
    if line.startswith("calls=") and cfn is not None:
        calls[cfn] += int(line.split("=")[1].split()[0])
        cfn = None
if events and totals:
    for e, t in zip(events, totals):
        print(f"{e:6} {t:>14,}")
for name, n in sorted(calls.items(), key=lambda kv: -kv[1]):
    if any(p in name for p in pats):
        print(f"{n:>12,}  {name}")
