#!/usr/bin/env bash
# STUN Binding requests per second and server CPU per request: sipfence's
# standalone STUN listener and its SIP port, coturn and stund, one after the
# other in one run, with the kit's sweep (../shared/bench/stun/run_stun_bench.sh:
# stunload.py sends RFC 5389 requests and checks every XOR-MAPPED-ADDRESS).
# usage: bench/compare_stun.sh
# env: RATES ["2000 5000 10000 20000 40000 60000"] (IPv4), RATES6 ["10000 20000 40000"],
#      SECS [5], FINGERPRINT [0], KIT, SIPFENCE (binary; default
#      ${CARGO_TARGET_DIR:-target}/release/sipfence), SIP_PORT [5062],
#      SF_STUN_PORT [3490], STUN_PORT [3478] (coturn, stund; stund also
#      takes STUN_PORT+1), SERVERS
#      ["sipfence-stun sipfence-sip coturn stund"].
# Needs: a release build (cargo build --release -p sipfence) and
# `apt-get install coturn stun-server` (see ../shared/bench/README.md). Loopback only.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(dirname "$here")"
KIT="${KIT:-$root/../shared/bench}"
SIPFENCE="${SIPFENCE:-${CARGO_TARGET_DIR:-$root/target}/release/sipfence}"
sip_port="${SIP_PORT:-5062}"
sf_stun_port="${SF_STUN_PORT:-3490}"
stun_port="${STUN_PORT:-3478}"
export RATES="${RATES:-2000 5000 10000 20000 40000 60000}"
RATES6="${RATES6:-10000 20000 40000}"
SERVERS="${SERVERS:-sipfence-stun sipfence-sip coturn stund}"
out="${OUT_DIR_BASE:-$root/bench-results}/$(date +%Y%m%d-%H%M%S)-stun"
mkdir -p "$out"
work="$(mktemp -d)"
sf_pid=""
cleanup() {
  [ -n "$sf_pid" ] && kill "$sf_pid" 2>/dev/null || true
  for kind in coturn stund; do "$KIT/stun/stun_server.sh" stop "$kind" >/dev/null 2>&1 || true; done
  rm -rf "$work"
}
trap cleanup EXIT
[ -x "$SIPFENCE" ] || { echo "no release binary at $SIPFENCE: cargo build --release -p sipfence"; exit 2; }

# One sipfence serves both measured ports: the standalone listener and the
# SIP port (where STUN is the NAT keep-alive of RFC 5626). No plugin chain:
# STUN never reaches it.
SIP_LISTEN="127.0.0.1:$sip_port [::1]:$sip_port" \
STUN_LISTEN="127.0.0.1:$sf_stun_port [::1]:$sf_stun_port" \
  "$here/sipfence_bench_config.sh" "$work" "$sip_port" > "$work/sipfence.toml"
start_sipfence() {
  [ -n "$sf_pid" ] && return 0
  "$SIPFENCE" run --config "$work/sipfence.toml" 2> "$out/sipfence.log" &
  sf_pid=$!
  sleep 1
  kill -0 "$sf_pid" || { cat "$out/sipfence.log"; exit 1; }
}
# Its counters, then stop it: the other servers are measured on a machine
# without it.
stop_sipfence() {
  [ -n "$sf_pid" ] || return 0
  "$SIPFENCE" stats --config "$work/sipfence.toml" > "$out/sipfence-stats.json" || true
  kill -TERM "$sf_pid"; wait "$sf_pid" || true
  sf_pid=""
}

# bench NAME HOST PORT PID RATES
bench() {
  LABEL="server=$1" SERVER_PID="$4" RATES="$5" OUT_DIR="$out/$1/$( [[ $2 == *:* ]] && echo v6 || echo v4 )" \
    "$KIT/stun/run_stun_bench.sh" "$2" "$3"
}

for server in $SERVERS; do
  echo "== $server =="
  case "$server" in
    sipfence-stun)
      start_sipfence
      bench "$server" 127.0.0.1 "$sf_stun_port" "$sf_pid" "$RATES"
      bench "$server" ::1 "$sf_stun_port" "$sf_pid" "$RATES6" ;;
    sipfence-sip)
      start_sipfence
      bench "$server" 127.0.0.1 "$sip_port" "$sf_pid" "$RATES"
      bench "$server" ::1 "$sip_port" "$sf_pid" "$RATES6" ;;
    coturn|stund)
      stop_sipfence
      "$KIT/stun/stun_server.sh" start "$server" "$stun_port" || { echo "skipping $server"; continue; }
      pid="$("$KIT/stun/stun_server.sh" pid "$server")"
      sleep 1
      bench "$server" 127.0.0.1 "$stun_port" "$pid" "$RATES"
      # stund 0.97 has no IPv6.
      [ "$server" = coturn ] && bench "$server" ::1 "$stun_port" "$pid" "$RATES6"
      "$KIT/stun/stun_server.sh" stop "$server"
      sleep 2 ;;
    *) echo "unknown server $server"; exit 2 ;;
  esac
done
stop_sipfence

# One table: per server and family, each rate's answered/s, loss and µs/req.
echo
echo "== results ($out) =="
echo "| server | family | asked /s | sent /s | lost+bad | srv µs/req | marginal µs/req | server cpu % | udp drops | pass |"
echo "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"
for s in "$out"/*/v?/summary.txt; do
  server="$(basename "$(dirname "$(dirname "$s")")")"; family="$(basename "$(dirname "$s")")"
  awk -v srv="$server" -v fam="$family" '
    /^[0-9]+ [0-9]+ [0-9]+ / && / \| / {
      split($0, part, "|"); split(part[1], a, " "); split(part[2], c, " "); split(part[3], u, " ")
      printf "| %s | %s | %s | %s | %s (%s %%) | %s | %s | %s | %s | %s |\n", srv, fam, a[1], a[3], a[6], a[7], u[1], u[2], c[1], u[3], part[4] + 0
    }' "$s"
done | tee "$out/table.md"
