#!/usr/bin/env bash
# Resident memory per registration binding: start sipfence with N extensions
# (default 100000), measure its RSS, register every extension once with SIPp
# (digest auth), wait until the finished transactions are swept, measure
# again. usage: bench/memory_bindings.sh [N]   Loopback only.
# env: RATE (4000), SETTLE (15 s), CHAIN (0; 1 runs the default chain,
# fail-to-ban).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(dirname "$here")"
n="${1:-100000}"
port="${SIPFENCE_PORT:-5066}"
rate="${RATE:-4000}"
settle="${SETTLE:-15}"
bin="${SIPFENCE_BIN:-${CARGO_TARGET_DIR:-$root/target}/release/sipfence}"
[ -x "$bin" ] || { echo "no release build at $bin: cargo build --release -p sipfence (or set SIPFENCE_BIN)" >&2; exit 1; }
work="$(mktemp -d)"
trap 'kill $pid 2>/dev/null || true; rm -rf "$work"' EXIT

{
  cat <<TOML
[server]
listen = ["127.0.0.1:$port"]
control_socket = "$work/sipfence.sock"
[storage]
database = "$work/sipfence.db"
purge_interval_ms = 1000
[auth]
algorithms = ["MD5", "SHA-256"]
# Short-lived nonces, so their replay table is purged before measuring.
nonce_lifetime_ms = 3000
[transaction]
# Short timers so finished transactions are swept within seconds.
t1_ms = 50
t2_ms = 400
TOML
  if [[ "${CHAIN:-0}" == 1 ]]; then
    printf '[[plugin]]\nname = "fail-to-ban"\npath = "builtin:fail-to-ban"\ngrants = ["counter", "kv"]\n'
  fi
  for u in $(seq 100000 $((100000 + n - 1))); do
    printf '[[extension]]\nnumber = "%s"\npassword = "pw%s"\n' "$u" "$u"
  done
} > "$work/sipfence.toml"
{
  echo SEQUENTIAL
  for u in $(seq 100000 $((100000 + n - 1))); do
    echo "$u;[authentication username=$u password=pw$u]"
  done
} > "$work/users.csv"

rss() { awk '/VmRSS/ {print $2}' "/proc/$1/status"; }
start() {
  "$bin" run --config "$work/sipfence.toml" 2> "$work/$1" &
  pid=$!
  for _ in $(seq 300); do grep -q 'ready' "$work/$1" 2>/dev/null && break; sleep 0.2; done
  grep -q 'ready' "$work/$1" || { echo "sipfence not ready after 60 s" >&2; exit 1; }
  # Parsing a config of 100,000 extensions frees ~200 MB; mimalloc gives
  # freed pages back after its purge delay (10 s, main.rs), so measure after.
  sleep "$settle"
}
start log
idle=$(rss $pid)
echo "extensions: $n  idle RSS (first start): ${idle} KiB"
(cd "$work" && sipp "127.0.0.1:$port" -sf "$root/tests/sipp/register_auth.xml" -inf users.csv \
   -i 127.0.0.1 -key domain 127.0.0.1 -key expires 3600 -auth_uri 127.0.0.1 \
   -r "$rate" -m "$n" -timeout 120s -nostdin -trace_stat -stf stat.csv > /dev/null 2>&1) || echo "sipp exit $?"
# Finished transactions are swept after Timer J and the nonces expire after
# 3 s; the pages they took go back after the purge delay.
sleep "$settle"
full=$(rss $pid)
count=$("$bin" registrations list --json --config "$work/sipfence.toml" | grep -c '"extension"')
echo "bindings: $count  RSS: ${full} KiB"
awk -v a="$idle" -v b="$full" -v c="$count" 'BEGIN { printf "per binding, after registering: %.0f bytes above idle\n", (b - a) * 1024 / c }'
sleep "$settle"
listed=$(rss $pid)
echo "RSS ${settle} s after listing every binding: ${listed} KiB"

# The same bindings restored from the database by a restart: the memory they
# take without the churn of 200,000 finished transactions and nonce counts
# around them (allocator pages freed in a burst are not all returned).
kill -TERM $pid; wait $pid || true
start log2
restored=$(rss $pid)
echo "restart with the $count bindings restored: RSS ${restored} KiB"
# The idle figure for the same path: a restart with no bindings in the database.
kill -TERM $pid; wait $pid || true
cp "$work/sipfence.db" "$work/full.db"
sqlite3 "$work/sipfence.db" "DELETE FROM bindings; VACUUM;" 2>/dev/null || rm -f "$work/sipfence.db"*
start log3
empty=$(rss $pid)
echo "restart with no bindings: RSS ${empty} KiB"
awk -v a="$empty" -v b="$restored" -v c="$count" 'BEGIN { printf "per binding, restored vs empty restart: %.0f bytes\n", (b - a) * 1024 / c }'
