#!/usr/bin/env bash
# How palaver's HTTP workers share a streaming run:
#
#     bench/worker-split.sh DIR
#
# DIR holds a release `palaver-bench` and `palaver`. Runs `palaver-bench
# stream --runs 1 --questions 200` (50 sockets opened at once, then 10 000
# replies) and prints the CPU time (clock ticks, utime + stime from
# /proc/PID/task/TID/stat) of each of the server's `actix-rt` threads, last
# read before the server exits: the HTTP workers, and the analysis pool's
# stream arbiter (the lowest thread id; it starts first). Even worker
# figures mean the connections were spread over the workers.
set -euo pipefail
dir=$(cd "$1" && pwd)
cd "$dir"
./palaver-bench stream --runs 1 --questions 200 > /tmp/worker-split.out 2>&1 &
bench=$!
pid=
for _ in $(seq 1 2000); do
  pid=$(pgrep -P "$bench" -f "palaver serve" | head -1 || true)
  [ -n "$pid" ] && break
  sleep 0.01
done
last=
while kill -0 "$pid" 2> /dev/null; do
  now=$(for t in /proc/"$pid"/task/*; do
    case "$(cat "$t/comm" 2> /dev/null)" in
      actix-rt*) echo "$(basename "$t"):$(awk '{print $14 + $15}' "$t/stat" 2> /dev/null)" ;;
    esac
  done | tr '\n' ' ')
  [ -n "$now" ] && last=$now
  sleep 0.1
done
wait "$bench"
echo "thread:ticks $last"
grep -E "^median" /tmp/worker-split.out
