#!/usr/bin/env bash
# CPU cost of a flood from a BANNED address, sipfence (default chain:
# fail-to-ban) and the kit's Kamailio side by side in one run, with the kit's
# flood driver. usage: bench/compare_flood.sh   (env: FLOOD_RATES, KIT)
# Needs a release build (cargo xtask run builds one) and the kit's packages.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(dirname "$here")"
KIT="${KIT:-$root/../shared/bench}"
port="${SIPFENCE_PORT:-5060}"
bin="${SIPFENCE_BIN:-${CARGO_TARGET_DIR:-$root/target}/release/sipfence}"
[ -x "$bin" ] || { echo "no release build at $bin: cargo build --release -p sipfence (or set SIPFENCE_BIN)" >&2; exit 1; }
export FLOOD_RATES="${FLOOD_RATES:-20000 50000 100000}"
out="${OUT_DIR_BASE:-$root/bench-results}/$(date +%Y%m%d-%H%M%S)-flood"
mkdir -p "$out"
work="$(mktemp -d)"
trap 'kill $sf_pid 2>/dev/null || true; "$KIT/kamailio/stop.sh" >/dev/null 2>&1 || true; rm -rf "$work"' EXIT

extra='[[plugin]]
name = "fail-to-ban"
path = "builtin:fail-to-ban"
grants = ["counter", "kv"]'
"$here/sipfence_bench_config.sh" "$work" "$port" "$extra" > "$work/sipfence.toml"
"$bin" run --config "$work/sipfence.toml" 2> "$out/sipfence.log" &
sf_pid=$!
sleep 1

echo "== sipfence (pid $sf_pid) =="
SERVER_PID=$sf_pid DOMAIN=127.0.0.1 KEEP_BAN=1 OUT_DIR="$out/sipfence" "$KIT/flood/run_flood.sh" 127.0.0.1 "$port"
kill -TERM $sf_pid; wait $sf_pid || true

if [ "${SKIP_KAMAILIO:-0}" != 1 ]; then
  echo "== kamailio =="
  "$KIT/kamailio/start.sh"
  sleep 1
  OUT_DIR="$out/kamailio" "$KIT/flood/run_flood.sh" 127.0.0.1 5070
  "$KIT/kamailio/stop.sh"
fi

echo "== summaries in $out =="
for s in "$out"/*/summary.txt; do echo "--- $s"; cat "$s"; done
