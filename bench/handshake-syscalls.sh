#!/usr/bin/env bash
# System calls per handshake of palaver's server:
#
#     bench/handshake-syscalls.sh DIR [N]
#
# DIR holds a release `palaver-bench` and `palaver`. Runs `palaver-bench
# cost --rounds 1 --handshakes N --questions 1` (N = 5000), counts with
# `perf stat` the system calls of the first palaver server it starts (the
# handshake scenario's; the streaming scenario's first 50 connections and
# replies run on it too) and prints each per handshake.
set -euo pipefail
dir=$(cd "$1" && pwd)
n=${2:-5000}
calls="sendto recvfrom epoll_ctl epoll_wait accept4 close setsockopt getpeername futex getrandom shutdown write"
events=$(for c in $calls; do printf 'syscalls:sys_enter_%s,' "$c"; done)raw_syscalls:sys_enter
out=$(mktemp)
cd "$dir"
./palaver-bench cost --rounds 1 --handshakes "$n" --questions 1 > "$out.bench" 2>&1 &
bench=$!
pid=
for _ in $(seq 1 2000); do
  pid=$(pgrep -P "$bench" -f "palaver serve" | head -1 || true)
  [ -n "$pid" ] && break
  sleep 0.01
done
# `perf stat -p` counts the threads that exist when it starts: wait for the
# HTTP workers (one per core) and the analysis pool's stream arbiter.
want=$(($(nproc) + 1))
for _ in $(seq 1 2000); do
  have=$(grep -l '^actix-rt' /proc/"$pid"/task/*/comm 2> /dev/null | wc -l)
  [ "$have" -ge "$want" ] && break
  sleep 0.01
done
perf stat -x, -o "$out" -e "$events" -p "$pid" 2> /dev/null || true
wait "$bench"
awk -F, -v n="$n" '/sys_enter/ {sub(/.*:sys_enter_?/, "", $3); printf "%-12s %6.2f\n", ($3 == "" ? "all" : $3), $1 / n}' "$out"
rm -f "$out" "$out.bench"
