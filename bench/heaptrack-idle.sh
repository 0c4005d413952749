#!/usr/bin/env bash
# The heap of N idle WebSocket connections, by allocation site:
#
#     bench/heaptrack-idle.sh DIR OUT [N]
#
# DIR holds a release `palaver` and `palaver-bench` (built together).
# Runs `palaver-bench hold --n N` (default 2000) with the server under
# heaptrack; once the server's `palaver_ws_connections` gauge reads N
# (every socket open and idle) the harness is paused and the server ended
# by its PID, so heaptrack's peak is the idle state (plus what the drain
# at SIGTERM allocates). Writes OUT.zst and OUT.stacks (demangled, one
# stack per line with its peak bytes: `heaptrack_print
# --flamegraph-cost-type peak`, then `rustfilt`), which
# `bench/heap-sites.py OUT.stacks N` reads.
set -euo pipefail
dir=$1 out=$2 n=${3:-2000}
cd "$dir"
BENCH_SERVER_WRAPPER="heaptrack -o $out" ./palaver-bench hold --n "$n" > "$out.bench.txt" 2>&1 &
harness=$!
for _ in $(seq 1 1200); do
  sleep 0.5
  server=$(pgrep -x palaver -n || true)
  [ -n "$server" ] || continue
  addr=$(ss -ltnp 2>/dev/null | grep "pid=$server," | grep -o '127.0.0.1:[0-9]*' | head -1 || true)
  [ -n "$addr" ] || continue
  open=$(curl -s "$addr/metrics" | awk '$1 == "palaver_ws_connections" {print $2}')
  if [ "$open" = "$n" ]; then
    kill -STOP "$harness"
    kill -TERM "$server"
    while kill -0 "$server" 2>/dev/null; do sleep 0.2; done
    break
  fi
done
kill -CONT "$harness" 2>/dev/null || true
kill "$harness" 2>/dev/null || true
wait "$harness" 2>/dev/null || true
heaptrack_print -f "$out.zst" -F "$out.raw" --flamegraph-cost-type peak > /dev/null
rustfilt < "$out.raw" > "$out.stacks"
rm -f "$out.raw"
