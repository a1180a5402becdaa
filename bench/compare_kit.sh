#!/usr/bin/env bash
# sipfence and the kit's Kamailio side by side in one run, with the kit's
# driver (../shared/bench/run.sh): one of its tests, reg or call.
# usage: bench/compare_kit.sh reg|call
#   env: KIT, SIPFENCE_PORT, SIPFENCE_BIN, SIPFENCE_EXTRA (replaces the default
#   chain; "" runs without plugins), SKIP_KAMAILIO=1, and the driver's own
#   knobs (REG_RATES, REG_SECS, CALL_RATES, CALL_SECS, ...).
# Needs: a release build (cargo build --release -p sipfence), the kit's
# packages (see ../shared/bench/README.md). Loopback only.
set -euo pipefail
test_name="${1:?usage: compare_kit.sh reg|call}"
here="$(cd "$(dirname "$0")" && pwd)"
root="$(dirname "$here")"
KIT="${KIT:-$root/../shared/bench}"
port="${SIPFENCE_PORT:-5060}"
bin="${SIPFENCE_BIN:-${CARGO_TARGET_DIR:-$root/target}/release/sipfence}"
out="${OUT_DIR_BASE:-$root/bench-results}/$(date +%Y%m%d-%H%M%S)-$test_name"
mkdir -p "$out"
work="$(mktemp -d)"
trap 'kill $sf_pid 2>/dev/null || true; "$KIT/kamailio/stop.sh" >/dev/null 2>&1 || true; rm -rf "$work"' EXIT

# The default chain (fail-to-ban) is on, as in the embedded default config.
default_chain='[[plugin]]
name = "fail-to-ban"
path = "builtin:fail-to-ban"
grants = ["counter", "kv"]'
"$here/sipfence_bench_config.sh" "$work" "$port" "${SIPFENCE_EXTRA-$default_chain}" > "$work/sipfence.toml"
"$bin" run --config "$work/sipfence.toml" 2> "$out/sipfence.log" &
sf_pid=$!
sleep 1

echo "== sipfence (pid $sf_pid) =="
SERVER_PID=$sf_pid DOMAIN=127.0.0.1 OUT_DIR="$out/sipfence" "$KIT/run.sh" 127.0.0.1 "$port" "$test_name"
kill -TERM $sf_pid; wait $sf_pid || true

if [[ -z "${SKIP_KAMAILIO:-}" ]]; then
  echo "== kamailio =="
  "$KIT/kamailio/start.sh"
  sleep 1
  DOMAIN=127.0.0.1 OUT_DIR="$out/kamailio" "$KIT/run.sh" 127.0.0.1 5070 "$test_name"
  "$KIT/kamailio/stop.sh"
fi

echo "== summaries in $out =="
for s in "$out"/*/summary.txt; do echo "--- $s"; cat "$s"; done
