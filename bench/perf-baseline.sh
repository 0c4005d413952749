#!/usr/bin/env bash
# Where the bare baseline server spends its CPU while it streams:
#
#     bench/perf-baseline.sh DIR OUT
#
# DIR holds a release `palaver-bench` (and `palaver`). Starts
# `palaver-bench stream --runs 1 --questions 400`, attaches `perf record`
# for 3 s to the baseline server it starts (`palaver-bench baseline`), and
# prints the share of its samples in the kernel and under `sendto`.
set -euo pipefail
dir=$1 out=$2
cd "$dir"
./palaver-bench stream --runs 1 --questions 400 > "$out.bench.txt" 2>&1 &
bench=$!
pid=
for _ in $(seq 1 1200); do
  pid=$(pgrep -f 'palaver-bench baseline' | head -1 || true)
  [ -n "$pid" ] && break
  sleep 0.05
done
perf record -q -F 4999 -g -p "$pid" -o "$out.data" -- sleep 3 2> /dev/null || true
wait "$bench" || true
kernel=$(perf report -i "$out.data" --no-children --sort dso --stdio -g none 2> /dev/null |
  awk '/\[kernel.kallsyms\]/ {print $1}')
sendto=$(perf report -i "$out.data" --children --sort sym --stdio -g none 2> /dev/null |
  awk '/__x64_sys_sendto$/ {print $1}')
echo "kernel $kernel, under sendto $sendto"
