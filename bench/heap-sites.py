#!/usr/bin/env python3
"""Heap per connection under one frame, split by the frames it calls.

    bench/heaptrack-idle.sh DIR /tmp/ht/x 2000
    bench/heap-sites.py /tmp/ht/x.stacks 2000 'ws::connect' 3
    bench/heap-sites.py /tmp/ht/x.stacks 2000 'graceful_shutdown' 1

Each stack (heaptrack's peak bytes, one per line, frames root first, as
`bench/heaptrack-idle.sh` writes them) that passes through a frame
containing FRAME is counted, divided by N connections, for the DEPTH frames
after the last such frame (generic parameters and source locations cut
short), largest first.
"""

import re
import sys
from collections import Counter


def short(frame):
    frame = re.sub(r"\s*\([^()]*\)$", "", frame)
    for _ in range(8):
        frame = re.sub(r"<[^<>]*>", "", frame)
    return frame.strip()[:70]


def main():
    path, n, needle, depth = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
    totals = Counter()
    for line in open(path, errors="replace"):
        stack, _, cost = line.rstrip("\n").rpartition(" ")
        if not cost.isdigit():
            continue
        frames = stack.split(";")
        found = [i for i, frame in enumerate(frames) if needle in frame]
        if found:
            after = frames[found[-1] + 1 : found[-1] + 1 + depth]
            totals[" | ".join(short(f) for f in after) or "(itself)"] += int(cost)
    for site, cost in totals.most_common(15):
        print(f"{cost / n:8.1f} B  {site}")


if __name__ == "__main__":
    main()
