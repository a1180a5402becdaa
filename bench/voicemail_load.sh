#!/usr/bin/env bash
# Simultaneous voicemail recordings: how much CPU the gateway spends per
# recording, for a ramp of concurrent calls. For each N in RAMP a fresh
# gateway (release build) is started on GW_IP; mailbox 101 is never
# registered (unavailable = "voicemail"), so SIPp's tests/sipp/uac_voicemail.xml
# calls (as extension 100, INVITE challenged with 407) are all answered by
# the mailbox, hear a 0.5 s greeting and the beep, and stream TALK_MS of a
# mu-law tone (rtp_stream, 50 packets/s) before the BYE. SIPp keeps N calls up
# (-l N, calls started evenly at N per TALK_MS). No mail (no [mail] server).
#
# Measured per step, in the steady window (all N calls up, WINDOW_S seconds
# from ramp end + 3 s): the gateway's CPU (utime+stime from /proc/PID/stat,
# all threads) and SIPp's, the machine's, SIPp's CurrentCall; after the step:
# the recordings (count, WAV header durations), the gateway's
# "voicemail: recording ended" lines (lost/reordered/ended), SIPp failures.
#
# usage: bench/voicemail_load.sh            (env below; loopback only)
#   RAMP="25 50 100 200 400"  TALK_MS=20000  WINDOW_S=30  GW_IP=127.0.10.1
#   UAC_IP=127.0.10.2  SIPFENCE_BIN  OUT_DIR  KEEP_WAVS=1 (keeps recordings)
# Output: OUT_DIR/summary.tsv, one folder per step (gateway log, SIPp files).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(dirname "$here")"
RAMP="${RAMP:-25 50 100 200 400}"
TALK_MS="${TALK_MS:-20000}"
WINDOW_S="${WINDOW_S:-30}"
GW_IP="${GW_IP:-127.0.10.1}"
GW_PORT="${GW_PORT:-5060}"
UAC_IP="${UAC_IP:-127.0.10.2}"
bin="${SIPFENCE_BIN:-${CARGO_TARGET_DIR:-$root/target}/release/sipfence}"
out="${OUT_DIR:-$root/bench-results/$(date +%Y%m%d-%H%M%S)-voicemail-load}"
for ip in "$GW_IP" "$UAC_IP"; do
  [[ "$ip" == 127.* ]] || { echo "refusing: $ip is not loopback" >&2; exit 2; }
done
[[ -x "$bin" ]] || { echo "no gateway binary at $bin (cargo build --release -p sipfence)" >&2; exit 2; }
mkdir -p "$out"
hz=$(getconf CLK_TCK)
gw_pid=""; sipp_pid=""
cleanup() {
  [[ -n "$sipp_pid" ]] && kill "$sipp_pid" 2>/dev/null || true
  [[ -n "$gw_pid" ]] && kill "$gw_pid" 2>/dev/null || true
}
trap cleanup EXIT

# utime+stime of one process (all its threads), in clock ticks.
ticks() { python3 - "$1" <<'PY'
import sys
s = open("/proc/%s/stat" % sys.argv[1]).read()
r = s[s.rindex(")") + 2:].split()
print(int(r[11]) + int(r[12]))
PY
}
# All processes' utime+stime+cutime+cstime (machine-wide, per-task precise).
machine_ticks() { python3 "$root/../shared/bench/lib/ticks.py" all 2>/dev/null || echo 0; }

printf 'N\tcalls_ok\tcalls_failed\tcurrent_calls_avg\tgw_cpu_pct\tgw_cpu_pct_per_rec\tsipp_cpu_pct\tmachine_cpu_pct\trecordings\twav_s_min\twav_s_median\twav_s_max\tlost_total\treordered_total\tended\n' > "$out/summary.tsv"

for n in $RAMP; do
  step="$out/n$n"; work="$(mktemp -d)"
  mkdir -p "$step" "$work/sipp"
  # 0.5 s greeting: with the 0.4 s beep it is over before the caller talks
  # (1 s after the ACK); caller audio during the greeting is not recorded.
  python3 - "$work/greeting.wav" "$work/sipp/voicemail_tone.ulaw" "$TALK_MS" <<'PY'
import math, struct, sys, wave
w = wave.open(sys.argv[1], "wb"); w.setnchannels(1); w.setsampwidth(2); w.setframerate(8000)
w.writeframes(b"".join(struct.pack("<h", int(4000 * math.sin(2 * math.pi * 660 * i / 8000))) for i in range(4000)))
w.close()
def ulaw(s):
    sign = 0x80 if s < 0 else 0
    s = min(abs(s), 32635) + 0x84
    exp = 7
    while exp > 0 and not (s & (0x4000 >> (7 - exp))):
        exp -= 1
    mant = (s >> (exp + 3)) & 0x0F
    return ~(sign | (exp << 4) | mant) & 0xFF
n = int(sys.argv[3]) * 8
tone = bytes(ulaw(int((6000 + 3000 * math.sin(math.pi * i / 8000)) * math.sin(2 * math.pi * 440 * i / 8000))) for i in range(n))
open(sys.argv[2], "wb").write(tone)
PY
  rtp_ports=$(( n * 2 + 200 ))
  cat > "$work/sipfence.toml" <<TOML
[server]
listen = ["$GW_IP:$GW_PORT"]
control_socket = "$work/control.sock"

[stun]
listen = []

[storage]
database = "$work/sipfence.db"

[log]
format = "json"

[api]
enabled = false

[auth]
# SIPp answers MD5 challenges only.
algorithms = ["MD5"]

[voicemail]
dir = "$work/voicemail"
rtp_port_min = 40000
rtp_port_max = $(( 40000 + rtp_ports ))
max_length_ms = $(( TALK_MS + 60000 ))
silence_timeout_ms = 30000
min_length_ms = 1000

[[extension]]
number = "100"
password = "pw100"

[[extension]]
number = "101"
password = "pw101"
unavailable = "voicemail"
greeting = "greeting.wav"
TOML
  RUST_LOG=info "$bin" run --config "$work/sipfence.toml" 2> "$step/gateway.log" &
  gw_pid=$!
  for _ in $(seq 50); do grep -q '"listening"' "$step/gateway.log" 2>/dev/null && break; sleep 0.1; done

  total=$(( n * 3 ))
  ( cd "$work/sipp" && exec sipp "$GW_IP:$GW_PORT" -sf "$root/tests/sipp/uac_voicemail.xml" \
      -i "$UAC_IP" -mi "$UAC_IP" -p 5062 -mp 16000 -bind_local \
      -s 101 -au 100 -ap pw100 -auth_uri 101@127.0.0.1 -key caller 100 -key domain 127.0.0.1 \
      -d $(( TALK_MS + 300 )) -l "$n" -r "$n" -rp "$TALK_MS" -m "$total" \
      -nostdin -timeout $(( TALK_MS / 1000 * 4 + 120 )) \
      -trace_stat -stf "$step/sipp_stat.csv" -fd 1 -trace_err -error_file "$step/sipp_errors.log" \
      -trace_screen -screen_file "$step/sipp_screen.txt" > "$step/sipp.out" 2>&1 ) &
  sipp_pid=$!
  sleep 0.5
  sipp_real=$(pgrep -P "$sipp_pid" -x sipp || echo "$sipp_pid")

  # Ramp: TALK_MS + ~1.3 s until the first calls end; then steady state.
  sleep $(( TALK_MS / 1000 + 3 ))
  g0=$(ticks "$gw_pid"); s0=$(ticks "$sipp_real"); m0=$(machine_ticks); t0=$(date +%s.%N)
  sleep "$WINDOW_S"
  g1=$(ticks "$gw_pid"); s1=$(ticks "$sipp_real"); m1=$(machine_ticks); t1=$(date +%s.%N)
  win_start=$(date -d "@${t0%.*}" +%s); win_end=$(date -d "@${t1%.*}" +%s)
  wait "$sipp_pid" || true; sipp_pid=""
  sleep 2
  kill -TERM "$gw_pid"; wait "$gw_pid" || true; gw_pid=""

  python3 - "$step" "$work/voicemail" "$n" "$hz" "$g0" "$g1" "$s0" "$s1" "$m0" "$m1" "$t0" "$t1" "$win_start" "$win_end" >> "$out/summary.tsv" <<'PY'
import csv, glob, json, os, statistics, sys, wave, time
step, vmdir, n, hz = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
g0, g1, s0, s1, m0, m1 = map(int, sys.argv[5:11])
t0, t1 = float(sys.argv[11]), float(sys.argv[12])
win_start, win_end = int(sys.argv[13]), int(sys.argv[14])
secs = t1 - t0
pct = lambda a, b: 100.0 * (b - a) / hz / secs
durs = []
for f in glob.glob(os.path.join(vmdir, "**", "*.wav"), recursive=True):
    with wave.open(f) as w:
        durs.append(w.getnframes() / w.getframerate())
lost = reordered = 0
ended = {}
for line in open(os.path.join(step, "gateway.log"), errors="replace"):
    try:
        v = json.loads(line)
    except ValueError:
        continue
    if v.get("message") == "voicemail: recording ended":
        lost += int(v.get("lost", 0)); reordered += int(v.get("reordered", 0))
        e = str(v.get("ended")); ended[e] = ended.get(e, 0) + 1
ok = failed = 0
cur = []
rows = list(csv.DictReader(open(os.path.join(step, "sipp_stat.csv")), delimiter=";"))
if rows:
    ok = int(rows[-1]["SuccessfulCall(C)"]); failed = int(rows[-1]["FailedCall(C)"])
    for r in rows:
        # CurrentTime is "YYYY-MM-DD HH:MM:SS:uuuuuu  epoch.usec"
        ts = float(r["CurrentTime"].split()[-1])
        if win_start <= ts <= win_end:
            cur.append(int(r["CurrentCall"]))
cur_avg = statistics.mean(cur) if cur else float("nan")
gw = pct(g0, g1)
print("\t".join(str(x) for x in [
    n, ok, failed, "%.1f" % cur_avg, "%.1f" % gw, "%.3f" % (gw / cur_avg if cur else float("nan")),
    "%.1f" % pct(s0, s1), "%.1f" % pct(m0, m1),
    "%.1f" % (pct(m0, m1) - gw - pct(s0, s1)), len(durs),
    "%.2f" % min(durs) if durs else "-", "%.2f" % statistics.median(durs) if durs else "-",
    "%.2f" % max(durs) if durs else "-", lost, reordered,
    ",".join("%s=%d" % kv for kv in sorted(ended.items()))]))
PY
  tail -1 "$out/summary.tsv"
  if [[ -n "${KEEP_WAVS:-}" ]]; then cp -a "$work/voicemail" "$step/"; fi
  rm -rf "$work"
  sleep 3
done
echo "== $out/summary.tsv"
column -t -s $'\t' "$out/summary.tsv"
