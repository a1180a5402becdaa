#!/usr/bin/env bash
# Where a REGISTER's CPU goes, thread by thread, for one or more builds
# alternated round by round (A B A B ...): the way to compare two builds on a
# machine whose speed drifts by more than the change being measured.
#
# usage: bench/register_threads.sh LABEL=BINARY [LABEL=BINARY ...]
#   env: RATE (6000 registrations/s), ROUNDS (2), PORT (5066),
#        WARMUP (4 s), MEASURE (8 s), CHAIN (0; 1 runs the default chain,
#        fail-to-ban, as the embedded default config does)
#
# Each run starts the build with the kit's 1,000 users and no plugin chain
# (unless CHAIN=1), has SIPp (the kit's reg_auth.xml: REGISTER, 401, REGISTER with digest, 200)
# register at RATE, and reads /proc from WARMUP s to WARMUP + MEASURE s (by
# default past Timer J, so the transaction table is at its steady size; a
# longer WARMUP lets the nonce-count table fill too). It prints, per
# thread name: CPU time per registration (us), voluntary and involuntary
# context switches per registration; and the process's minor page faults per
# second. Loopback only.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
KIT="${KIT:-$here/../../shared/bench}"
RATE="${RATE:-6000}"
ROUNDS="${ROUNDS:-2}"
PORT="${PORT:-5066}"
WARMUP="${WARMUP:-4}"
MEASURE="${MEASURE:-8}"
extra=""
[[ "${CHAIN:-0}" == 1 ]] && extra='[[plugin]]
name = "fail-to-ban"
path = "builtin:fail-to-ban"
grants = ["counter", "kv"]'
[[ $# -ge 1 ]] || { sed -n 2,18p "$0"; exit 2; }
command -v sipp >/dev/null || { echo "sipp not installed (apt-get install sip-tester)"; exit 2; }
hz="$(getconf CLK_TCK)"

# thread-name cpu-ticks voluntary involuntary (threads of one name summed), then "faults N"
snapshot() {
  local pid="$1" t
  for t in /proc/"$pid"/task/*; do
    printf '%s %s %s %s\n' "$(cat "$t/comm")" "$(awk '{print $14+$15}' "$t/stat")" \
      "$(awk '/^voluntary/{print $2}' "$t/status")" "$(awk '/^nonvoluntary/{print $2}' "$t/status")"
  done | awk '{c[$1]+=$2; v[$1]+=$3; n[$1]+=$4} END {for (k in c) print k, c[k], v[k], n[k]}' | sort
  echo "faults $(awk '{print $10}' "/proc/$pid/stat") 0 0"
}

for round in $(seq 1 "$ROUNDS"); do
  for spec in "$@"; do
    label="${spec%%=*}"; bin="${spec#*=}"
    work="$(mktemp -d)"
    "$here/sipfence_bench_config.sh" "$work" "$PORT" "$extra" > "$work/sipfence.toml"
    "$bin" run --config "$work/sipfence.toml" 2> "$work/sipfence.log" &
    pid=$!
    sleep 1
    ( cd "$work" && sipp "127.0.0.1:$PORT" -sf "$KIT/sipp/reg_auth.xml" -inf "$KIT/sipp/users.csv" \
        -t u1 -i 127.0.0.1 -mi 127.0.0.1 -p 5067 -r "$RATE" -m $((RATE * (WARMUP + MEASURE + 2))) -timeout $((WARMUP + MEASURE + 30)) \
        -key domain 127.0.0.1 -key expires 3600 -key contact_host 127.0.0.1 -key contact_port 5067 \
        -auth_uri 127.0.0.1 -nostdin > /dev/null 2>&1 ) &
    sipp_pid=$!
    sleep "$WARMUP"; snapshot "$pid" > "$work/before"
    sleep "$MEASURE"; snapshot "$pid" > "$work/after"
    wait "$sipp_pid" || true
    regs=$((RATE * MEASURE))
    line="$(paste "$work/before" "$work/after" | awk -v n="$regs" -v hz="$hz" -v m="$MEASURE" '
      $1 == "faults" { faults = ($6 - $2) / m; next }
      { d = $6 - $2; if (d > 0) { printf "%s %.1fus v%.2f i%.2f | ", $1, d * 1e6 / hz / n, ($7 - $3) / n, ($8 - $4) / n; t += d } }
      END { printf "TOTAL %.1f us/reg, %.0f minor faults/s", t * 1e6 / hz / n, faults }')"
    echo "round $round $label: $line"
    kill "$pid"; wait "$pid" 2>/dev/null || true
    rm -rf "$work"
  done
done
