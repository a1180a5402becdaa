#!/usr/bin/env bash
# Server CPU per STUN Binding request for several running servers, measured
# in interleaved rounds (A B C A B C ...) so that the machine's drift (other
# work on the shared cores) hits them alike. Complements compare_stun.sh,
# whose sweep runs one server after the other.
# usage: bench/stun_interleaved.sh RATE ROUNDS NAME:PID:HOST:PORT...
#   e.g. bench/stun_interleaved.sh 40000 4 sipfence:1234:127.0.0.1:3490 stund:5678:127.0.0.1:3478
# env: SECS [4], SOCKS [4], KIT. Prints, per round, µs of the server
# process's CPU (utime+stime) per verified answer, and requests lost.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
KIT="${KIT:-$here/../../shared/bench}"
[ $# -ge 3 ] || { sed -n '2,10p' "$0"; exit 2; }
rate=$1; rounds=$2; shift 2
secs="${SECS:-4}"
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
hz=$(getconf CLK_TCK)
for round in $(seq "$rounds"); do
  line="round $round:"
  for target in "$@"; do
    IFS=: read -r name pid host port <<<"$target"
    before=$(ticks "$pid")
    out=$(python3 "$KIT/stun/stunload.py" "$host" "$port" --rate "$rate" --secs "$secs" \
      --socks "${SOCKS:-4}" --quiet)
    after=$(ticks "$pid")
    ok=$(sed -n 's/.* ok=\([0-9]*\).*/\1/p' <<<"$out")
    lost=$(sed -n 's/.* lost=\([0-9]*\).*/\1/p' <<<"$out")
    us=$(awk -v t=$((after - before)) -v n="$ok" -v hz="$hz" 'BEGIN { printf "%.2f", n ? t * 1e6 / hz / n : 0 }')
    line="$line $name=${us}us (lost $lost)"
  done
  echo "$line  load=$(cut -d' ' -f1 /proc/loadavg)"
done
