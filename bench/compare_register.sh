#!/usr/bin/env bash
# REGISTER-with-digest throughput and server CPU per registration, sipfence
# and the kit's Kamailio side by side in one run, with the kit's driver.
# usage: bench/compare_register.sh   (env: REG_RATES, REG_SECS, KIT, SIPFENCE_PORT)
# Needs: a release build (cargo build --release -p sipfence), the kit's
# packages (see ../shared/bench/README.md). Loopback only.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(dirname "$here")"
KIT="${KIT:-$root/../shared/bench}"
port="${SIPFENCE_PORT:-5060}"
export REG_RATES="${REG_RATES:-1000 2000 3000 4000 5000 6000 8000 10000}"
export REG_SECS="${REG_SECS:-5}"
out="${OUT_DIR_BASE:-$root/bench-results}/$(date +%Y%m%d-%H%M%S)-register"
mkdir -p "$out"
work="$(mktemp -d)"
trap 'kill $sf_pid 2>/dev/null || true; "$KIT/kamailio/stop.sh" >/dev/null 2>&1 || true; rm -rf "$work"' EXIT

# The default chain (fail-to-ban) is on, as in the embedded default config.
default_chain='[[plugin]]
name = "fail-to-ban"
path = "builtin:fail-to-ban"
grants = ["counter", "kv"]'
"$here/sipfence_bench_config.sh" "$work" "$port" "${SIPFENCE_EXTRA-$default_chain}" > "$work/sipfence.toml"
"$root/target/release/sipfence" run --config "$work/sipfence.toml" 2> "$out/sipfence.log" &
sf_pid=$!
sleep 1

echo "== sipfence (pid $sf_pid) =="
SERVER_PID=$sf_pid DOMAIN=127.0.0.1 OUT_DIR="$out/sipfence" "$KIT/run.sh" 127.0.0.1 "$port" reg
kill -TERM $sf_pid; wait $sf_pid || true

echo "== kamailio =="
"$KIT/kamailio/start.sh"
sleep 1
OUT_DIR="$out/kamailio" "$KIT/run.sh" 127.0.0.1 5070 reg
"$KIT/kamailio/stop.sh"

echo "== summaries in $out =="
for s in "$out"/*/summary.txt; do echo "--- $s"; cat "$s"; done
