#!/bin/sh
# Syscall profile of a running server, for the runner's --attach option:
#
#   lubdub-bench echo-10k --runs 1 --duration 10 \
#       --attach 'bench/scripts/syscall-profile.sh {pid} {secs}'
#
# Prints, per second of the window (as root, or with perf_event_paranoid
# low enough for tracepoints):
#   * every syscall the process made, by type (perf stat on the
#     syscalls:sys_enter_* tracepoints), non-zero counts only;
#   * epoll waits and the events they returned (perf record on the
#     sys_exit_epoll_* tracepoints, whose `ret` is the event count);
#   * context switches, CPU migrations, page faults and task clock
#     (software events: hardware counters such as cache misses are not
#     available in every VM; this one says `<not supported>` if so).
# Divide by the run's msg/s for figures per message.
set -eu
pid=$1
secs=$2
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

perf stat -x, -e 'syscalls:sys_enter_*' -p "$pid" -o "$tmp/sys.csv" -- sleep "$secs" &
a=$!
perf record -q -e 'syscalls:sys_exit_epoll_wait,syscalls:sys_exit_epoll_pwait,syscalls:sys_exit_epoll_pwait2' \
    -p "$pid" -o "$tmp/epoll.data" -- sleep "$secs" >/dev/null 2>&1 &
b=$!
perf stat -x, -e 'task-clock,context-switches,cpu-migrations,page-faults,cache-misses,LLC-load-misses' \
    -p "$pid" -o "$tmp/sw.csv" -- sleep "$secs" &
c=$!
wait $a $b $c

echo "--- syscall profile of pid $pid over $secs s (per second) ---"
# perf stat -x, lines: value,unit,event,...
awk -F, -v s="$secs" '$3 ~ /syscalls:/ && $1+0 > 0 {
    sub("syscalls:sys_enter_", "", $3); printf "  %-22s %12.0f /s\n", $3, $1 / s
}' "$tmp/sys.csv" | sort -k2 -n -r
awk -F, -v s="$secs" '$3 != "" && $3 !~ /syscalls:/ {
    if ($1 ~ /not/) printf "  %-22s %s\n", $3, $1;
    else printf "  %-22s %12.1f /s\n", $3, $1 / s
}' "$tmp/sw.csv"
perf script -i "$tmp/epoll.data" -F trace 2>/dev/null | python3 -c '
import sys
secs = float(sys.argv[1])
rets = [int(t, 16) for line in sys.stdin for t in line.split()[-1:] if t.startswith("0x")]
rets = [r - (1 << 64) if r >= 1 << 63 else r for r in rets]
errors = sum(1 for r in rets if r < 0)
rets = [r for r in rets if r >= 0]
if errors:
    print("  epoll waits that failed (EINTR...): %d" % errors)
if rets:
    ev = sum(rets)
    empty = sum(1 for r in rets if r == 0)
    print("  epoll waits %.0f /s (%.0f /s returned no event); events %.0f /s, %.2f per wait, largest %d"
          % (len(rets) / secs, empty / secs, ev / secs, ev / len(rets), max(rets)))
else:
    print("  no epoll wait recorded")
' "$secs"
