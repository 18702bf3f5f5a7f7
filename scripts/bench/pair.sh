#!/bin/bash
# Pairs two versions of the project under one load driver (docs/benchmarks.md, "Against the
# version before the delivery core"):
#
#   scripts/bench/pair.sh <repo> <users> <outfile> <driver-repo>
#
# starts `bun run stack` of <repo> in a session of its own, runs <driver-repo>'s
# `bun run bench --ws … --users <users> --duration 10` against it, reads the CPU of every process
# of that session (gateways, discover, persist; not Redis, RabbitMQ or PostgreSQL) from /proc, and
# the whole machine's (/proc/stat: every process, the driver and the databases included), and
# appends one line to <outfile>: rate, delivered, CPU seconds, µs per message, latency, and the
# machine's CPU µs per message (`machine_us_per_msg`). Then it
# stops the stack. Alternate two repos (e.g. a worktree of an older commit and this one) on a quiet
# machine: `git worktree add --detach ../old <commit> && (cd ../old && bun install)`.
set -u
if [ $# -ne 4 ] || ! [[ "$2" =~ ^[0-9]+$ ]] || [ ! -d "$1" ] || [ ! -d "$4" ]; then
  echo "usage: $0 <repo> <users> <outfile> <driver-repo>" >&2
  exit 2
fi
REPO=$1; N=$2; OUT=$3; DRIVER=$4
LOG=$(mktemp)
setsid bash -c "cd '$REPO' && exec bun run stack" > "$LOG" 2>&1 < /dev/null &
SID=$!
stop() { [ "$SID" -gt 1 ] && [ "$SID" != "$(ps -o sid= -p $$ | tr -d ' ')" ] && { pkill -TERM -s "$SID"; sleep 3; pkill -KILL -s "$SID"; }; rm -f "$LOG"; }
trap stop EXIT
for _ in $(seq 120); do grep -q "bench against it" "$LOG" 2>/dev/null && break; sleep 1; done
CMD=$(grep -o "bun run bench --ws.*" "$LOG")
[ -n "$CMD" ] || { echo "the stack of $REPO did not start:" >&2; tail -20 "$LOG" >&2; exit 1; }
cpu() { for p in $(ps -s "$SID" -o pid=); do sed 's/.*) //' "/proc/$p/stat" 2>/dev/null | awk '{print $12+$13+$14+$15}'; done | awk '{s+=$1} END {printf "%.2f", s/100}'; }
C0=$(cpu); T0=$(awk "/^cpu /{print \$2+\$3+\$4+\$7+\$8}" /proc/stat)
R=$(cd "$DRIVER" && timeout 200 $CMD --users "$N" --duration 10 2>&1)
C1=$(cpu); T1=$(awk "/^cpu /{print \$2+\$3+\$4+\$7+\$8}" /proc/stat)
DELIV=$(echo "$R" | grep "| delivered |" | grep -o "[0-9,]*" | tr -d , | head -1)
RATE=$(echo "$R" | grep "delivered msg/s" | grep -o "[0-9,]*" | tr -d ,)
LAT=$(echo "$R" | grep "latency p50" | cut -d'|' -f3)
echo "$REPO N=$N rate=$RATE delivered=$DELIV cpu_s=$(echo "$C1 - $C0" | bc) us_per_msg=$(echo "scale=1; ($C1 - $C0)*1000000/${DELIV:-1}" | bc) lat=$LAT machine_us_per_msg=$(echo "scale=1; ($T1 - $T0)*10000/${DELIV:-1}" | bc)" >> "$OUT"
