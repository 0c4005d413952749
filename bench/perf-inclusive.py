#!/usr/bin/env python3
"""Which functions one group of threads spends its samples under.

    perf script -i /tmp/perf.data -F comm,tid,ip,sym --no-inline > /tmp/perf.txt
    bench/perf-inclusive.py /tmp/perf.txt sled-io [N]

For the threads whose name starts with the prefix (e.g. `sled-io`, sled's
IO threads; `palaver-committ`, the group committer), prints the N (default
30) functions found in most of their samples' stacks, each with the share
of those samples it appears in (inclusive: a sample counts once for every
function on its stack). The profile is the one `bench/perf-split.py` reads.
"""

import sys
from collections import Counter


def stacks(path):
    """(thread name, [frames, leaf first]) for each sample."""
    comm, frames = None, []
    with open(path, errors="replace") as f:
        for line in f:
            if not line.strip():
                if comm is not None:
                    yield comm, frames
                comm, frames = None, []
            elif line[0] not in " \t":
                comm, frames = line.split()[0], []
            else:
                parts = line.strip().split(None, 1)
                frames.append(parts[1] if len(parts) > 1 else "?")
    if comm is not None:
        yield comm, frames


def main():
    if len(sys.argv) not in (3, 4):
        sys.exit(__doc__)
    path, prefix = sys.argv[1], sys.argv[2]
    top = int(sys.argv[3]) if len(sys.argv) == 4 else 30
    counts, samples = Counter(), 0
    for comm, frames in stacks(path):
        if comm.startswith(prefix):
            samples += 1
            counts.update(set(frames))
    print(f"{samples} samples of threads {prefix}*")
    for function, n in counts.most_common(top):
        print(f"{100 * n / max(samples, 1):5.1f} %  {function[:110]}")


if __name__ == "__main__":
    main()
