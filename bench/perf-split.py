#!/usr/bin/env python3
"""Splits a `perf record` profile of palaver into where the CPU went.

    BENCH_SERVER_WRAPPER="perf record -F 4999 --call-graph dwarf,32768 -o /tmp/perf.data --" \
        ./target/release/palaver-bench stream --runs 1 --questions 100
    perf script -i /tmp/perf.data -F comm,tid,ip,sym --no-inline > /tmp/perf.txt
    bench/perf-split.py /tmp/perf.txt [CPU µs per reply]

Each sample goes to one category: by its thread for sled's IO threads and
the group committer; else by its system call when it is in one; else by the
frame nearest the leaf that belongs to palaver, sled, actix or tokio (so an
allocation counts for the code that asked for it). Samples of the setup
(argon2 for the benchmark's users, the server's start) are left out of the
shares. With the CPU per reply the benchmark measured, each share is also
given in µs per reply.
"""

import re
import sys
from collections import Counter

THREADS = [
    (re.compile(r"^sled-io"), "flush: sled IO threads (pwrite, sync_file_range, wakeups)"),
    (re.compile(r"^palaver-committ"), "flush: group committer thread"),
]

SYSCALLS = [
    (re.compile(r"__x64_sys_(sendto|sendmsg|write|writev)\b"), "socket writes (syscalls)"),
    (re.compile(r"__x64_sys_(recvfrom|recvmsg|read|readv)\b"), "socket reads (syscalls)"),
    (re.compile(r"__x64_sys_futex\b"), "wakeups between threads (futex)"),
    (re.compile(r"__x64_sys_epoll_wait\b"), "waiting for IO (epoll)"),
]

SETUP = re.compile(r"argon2|palaver_actors::password|Supervisor::boot|Auth::start|Store::open")

# Nearest-to-leaf frame owned by one of these decides the category.
FRAMES = [
    (re.compile(r"^sled::"), "storage: sled (tree updates, node splits, page cache)"),
    (re.compile(r"^<?palaver_storage::"), "storage: palaver_storage (encoding, keys)"),
    (re.compile(r"palaver_actors::replies::"), "reply hub (events, resume log)"),
    (re.compile(r"palaver_actors::protocol::"), "JSON encoding of frames"),
    (re.compile(r"palaver_actors::socket::"), "socket layer (outbox, WebSocket framing)"),
    (re.compile(r"palaver_actors::session::"), "session actor"),
    (re.compile(r"palaver_actors::analysis::"), "analysis run (echo engine, sink)"),
    (re.compile(r"palaver_actors::telemetry::|^metrics"), "metrics"),
    (re.compile(r"palaver_actors::"), "actors, other"),
    (re.compile(r"^<?palaver::"), "HTTP handlers"),
    (re.compile(r"^<?actix::"), "actor runtime (mailboxes, contexts)"),
    (re.compile(r"^<?actix_http::|^<?actix_web::|^<?actix_server::"), "HTTP/WebSocket dispatcher"),
    (re.compile(r"^<?tokio::"), "async runtime (tokio)"),
    (re.compile(r"^<?crossbeam_epoch::"), "storage: sled (tree updates, node splits, page cache)"),
]


def samples(lines):
    head, frames = None, []
    for line in lines:
        line = line.rstrip("\n")
        if not line.strip():
            if head is not None:
                yield head, frames
            head, frames = None, []
        elif line.startswith("\t") or line.startswith(" " * 8):
            parts = line.strip().split(" ", 1)
            frames.append(parts[1] if len(parts) > 1 else "")
        else:
            head = line.split()[0]
            frames = []
    if head is not None:
        yield head, frames


def category(comm, frames):
    for pattern, name in THREADS:
        if pattern.search(comm):
            return name
    if any(SETUP.search(f) for f in frames):
        return None
    for frame in frames:
        for pattern, name in SYSCALLS:
            if pattern.search(frame):
                return name
    for frame in frames:
        for pattern, name in FRAMES:
            if pattern.search(frame):
                return name
    if any(re.search(r"schedule|irq|task_switch", f) for f in frames):
        return "kernel: scheduling, interrupts"
    if any(re.search(r"^(_int_malloc|_int_free|malloc|cfree|realloc|malloc_consolidate)", f) for f in frames):
        return "allocator, caller unknown"
    return "other"


def main():
    path = sys.argv[1]
    per_reply = float(sys.argv[2]) if len(sys.argv) > 2 else None
    counts, setup = Counter(), 0
    with open(path, errors="replace") as f:
        for comm, frames in samples(f):
            name = category(comm, frames)
            if name is None:
                setup += 1
            else:
                counts[name] += 1
    total = sum(counts.values())
    print(f"{total} samples ({setup} of the setup left out)\n")
    print("| where | share |" + (" µs per reply |" if per_reply else ""))
    print("|---|---|" + ("---|" if per_reply else ""))
    for name, n in counts.most_common():
        share = n / total
        row = f"| {name} | {share * 100:.1f} % |"
        if per_reply:
            row += f" {share * per_reply:.0f} |"
        print(row)


if __name__ == "__main__":
    main()
