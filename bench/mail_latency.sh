#!/usr/bin/env bash
# Does SIP signalling slow down while the mail worker writes to a slow SMTP
# server? Runs the same SIP load against a fresh gateway in each MODE and
# reports the response-time percentiles SIPp measured (-trace_rtt, every
# sample):
#   idle  no mail queued (the SMTP sink runs, with the delay, but gets nothing)
#   slow  BACKLOG mails (each with a TALK_S WAV attachment) queued in the
#         database before the start; the sink answers each DATA DELAY_S late
#   fast  BACKLOG_FAST mails, the sink answers at once: the worker reads,
#         encodes and sends attachments back to back (CPU-heavy mail)
# The backlog is made by starting the gateway once (it creates the schema),
# stopping it, inserting rows into mail_queue, starting it again: the restart
# resumes them (host/src/mail/queue.rs).
#
# SIP load per mode (the kit's scenarios, UDP, users 1000..1998 / pw<user>):
#   reg   REG_RATE registrations/s for SECS s (REGISTER -> 401 -> REGISTER+auth
#         -> 200); rtd = first REGISTER sent -> 200 received (2 round trips)
#   call  CALL_RATE calls/s for SECS s to 1999, a SIPp UAS registered first
#         (INVITE -> 407 -> ACK -> INVITE+auth -> 100/180/200); rtd "setup" =
#         first INVITE -> 200 (2 round trips through the proxy), hold 0
#
# usage: bench/mail_latency.sh   (loopback only)
#   env: MODES="idle slow fast" REG_RATE=200 CALL_RATE=50 SECS=30 BACKLOG=300
#        BACKLOG_FAST=20000 DELAY_S=1 TALK_S=20 GW_IP=127.0.11.1 UAC_IP=127.0.11.2
#        SMTP_IP=127.0.11.3 SMTP_PORT=2525 SIPFENCE_BIN OUT_DIR KIT
# SIPp's response times come in steps of 4 ms here (0, 4, 8, ...): compare
# the share of samples at >= 4 ms and >= 8 ms, not only the percentiles.
# Output: OUT_DIR/summary.tsv (percentiles in ms, mails the sink saved during
# the measurement, gateway CPU), a folder per mode.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(dirname "$here")"
KIT="${KIT:-$root/../shared/bench}"
MODES="${MODES:-idle slow fast}"
REG_RATE="${REG_RATE:-200}"; CALL_RATE="${CALL_RATE:-50}"; SECS="${SECS:-30}"
BACKLOG="${BACKLOG:-300}"; BACKLOG_FAST="${BACKLOG_FAST:-20000}"
DELAY_S="${DELAY_S:-1}"; TALK_S="${TALK_S:-20}"
GW_IP="${GW_IP:-127.0.11.1}"; GW_PORT="${GW_PORT:-5060}"
UAC_IP="${UAC_IP:-127.0.11.2}"
SMTP_IP="${SMTP_IP:-127.0.11.3}"; SMTP_PORT="${SMTP_PORT:-2525}"
bin="${SIPFENCE_BIN:-${CARGO_TARGET_DIR:-$root/target}/release/sipfence}"
out="${OUT_DIR:-$root/bench-results/$(date +%Y%m%d-%H%M%S)-mail-latency}"
for ip in "$GW_IP" "$UAC_IP" "$SMTP_IP"; do
  [[ "$ip" == 127.* ]] || { echo "refusing: $ip is not loopback" >&2; exit 2; }
done
[[ -x "$bin" ]] || { echo "no gateway binary at $bin" >&2; exit 2; }
mkdir -p "$out"
hz=$(getconf CLK_TCK)
gw_pid=""; sink_pid=""; uas_pid=""
cleanup() {
  for p in "$uas_pid" "$gw_pid" "$sink_pid"; do [[ -n "$p" ]] && kill "$p" 2>/dev/null || true; done
}
trap cleanup EXIT
ticks() { python3 -c 'import sys; s=open("/proc/%s/stat"%sys.argv[1]).read(); r=s[s.rindex(")")+2:].split(); print(int(r[11])+int(r[12]))' "$1"; }
wait_log() { for _ in $(seq 100); do grep -q "$2" "$1" 2>/dev/null && return 0; sleep 0.1; done; echo "timeout waiting for '$2' in $1" >&2; return 1; }

start_gw() {  # start_gw WORK LOG
  RUST_LOG=info "$bin" run --config "$1/sipfence.toml" 2>> "$2" &
  gw_pid=$!
  wait_log "$2" '"listening"'
}
stop_gw() { kill -TERM "$gw_pid"; wait "$gw_pid" || true; gw_pid=""; }

printf 'mode\tkind\trate\tok\tfailed\tretrans\tp50_ms\tp90_ms\tp99_ms\tmax_ms\tmean_ms\tge4ms_pct\tge8ms_pct\tsamples\tmails_during\tgw_cpu_pct\tqueued_left\n' > "$out/summary.tsv"

for mode in $MODES; do
  step="$out/$mode"; work="$(mktemp -d)"; mkdir -p "$step" "$work/mail" "$work/reg" "$work/call" "$work/uas"
  case "$mode" in
    idle) backlog=0; delay="$DELAY_S" ;;
    slow) backlog="$BACKLOG"; delay="$DELAY_S" ;;
    fast) backlog="$BACKLOG_FAST"; delay=0 ;;
    *) echo "unknown mode $mode" >&2; exit 2 ;;
  esac
  extra="[log]
format = \"json\"

[api]
enabled = false

[mail]
smtp_host = \"$SMTP_IP\"
smtp_port = $SMTP_PORT
security = \"none\"
from = \"pbx@sipfence.test\"
retry_initial_ms = 1000
retry_max_ms = 5000
timeout_ms = $(( ${delay%.*} * 1000 + 30000 ))"
  SIP_LISTEN="$GW_IP:$GW_PORT" "$here/sipfence_bench_config.sh" "$work" "$GW_PORT" "$extra" > "$work/sipfence.toml"

  # A TALK_S recording-sized WAV (8 kHz 16-bit) as every mail's attachment.
  python3 - "$work/msg.wav" "$TALK_S" <<'PY'
import math, struct, sys, wave
w = wave.open(sys.argv[1], "wb"); w.setnchannels(1); w.setsampwidth(2); w.setframerate(8000)
w.writeframes(b"".join(struct.pack("<h", int(4000 * math.sin(2 * math.pi * 440 * i / 8000))) for i in range(int(float(sys.argv[2]) * 8000))))
w.close()
PY
  if (( backlog > 0 )); then
    start_gw "$work" "$step/gateway.log"; stop_gw
    python3 - "$work/sipfence.db" "$work/msg.wav" "$backlog" <<'PY'
import sqlite3, sys, time
db, wav, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
c = sqlite3.connect(db)
now = int(time.time() * 1000)
c.executemany(
    "INSERT INTO mail_queue (message_id, created_ms, mail_from, rcpt_to, subject, body, "
    "attachment_path, attachment_name, attachment_type, state, attempts, rejections, next_attempt_ms, source) "
    "VALUES (?, ?, 'pbx@sipfence.test', 'alice@sipfence.test', ?, 'A voicemail for you.', ?, 'msg.wav', "
    "'audio/wav', 'queued', 0, 0, 0, 'bench')",
    [("<bench.%d.%d@sipfence.test>" % (now, i), now, "Voicemail %d" % i, wav) for i in range(n)])
c.commit()
print("queued", c.execute("SELECT count(*) FROM mail_queue WHERE state='queued'").fetchone()[0])
PY
  fi
  python3 "$root/tests/smtp_sink.py" --host "$SMTP_IP" --port "$SMTP_PORT" --dir "$work/mail" \
      --max-secs 3600 --delay-secs "$delay" > "$step/sink.log" 2>&1 &
  sink_pid=$!
  wait_log "$step/sink.log" "listening"
  start_gw "$work" "$step/gateway.log"
  sleep 3   # the worker is writing (slow/fast) before the SIP load starts

  # The callee: a SIPp UAS registered as 1999.
  printf 'SEQUENTIAL\n1999;pw1999;[authentication username=1999 password=pw1999];x\n' > "$work/uas/callee.csv"
  ( cd "$work/uas" && exec sipp -sf "$KIT/sipp/uas_call.xml" -i "$UAC_IP" -p 5090 -mp 6100 \
      -nostdin -timeout $(( SECS * 2 + 120 )) > uas.out 2>&1 ) &
  uas_pid=$!
  ( cd "$work/uas" && sipp "$GW_IP:$GW_PORT" -sf "$KIT/sipp/reg_auth.xml" -inf callee.csv \
      -i "$UAC_IP" -p 5062 -m 1 -timeout 15 -nostdin \
      -key domain 127.0.0.1 -key expires 3600 -key contact_host "$UAC_IP" -key contact_port 5090 \
      -auth_uri 127.0.0.1 > reg.out 2>&1 ) || { echo "callee registration failed" >&2; exit 1; }
  grep -v '^1999;' "$KIT/sipp/users.csv" > "$work/users.csv"

  for kind in reg call; do
    sent0=$(ls "$work/mail" | grep -c '\.eml$' || true); g0=$(ticks "$gw_pid"); t0=$(date +%s.%N)
    if [[ $kind == reg ]]; then
      rate=$REG_RATE
      ( cd "$work/reg" && sipp "$GW_IP:$GW_PORT" -sf "$KIT/sipp/reg_auth.xml" -inf "$work/users.csv" \
          -i "$UAC_IP" -p 5061 -r "$rate" -m $(( rate * SECS )) -timeout $(( SECS + 30 )) -nostdin \
          -key domain 127.0.0.1 -key expires 3600 -key contact_host "$UAC_IP" -key contact_port 5061 \
          -auth_uri 127.0.0.1 -trace_rtt -rtt_freq 1 -trace_stat -stf stat.csv -fd 1 \
          -trace_err -error_file errors.log > sipp.out 2>&1 ) || true
    else
      rate=$CALL_RATE
      ( cd "$work/call" && sipp "$GW_IP:$GW_PORT" -sf "$KIT/sipp/uac_call.xml" -inf "$work/users.csv" -s 1999 \
          -i "$UAC_IP" -p 5080 -mp 6200 -r "$rate" -m $(( rate * SECS )) -d 0 -timeout $(( SECS + 30 )) -nostdin \
          -key domain 127.0.0.1 -auth_uri 1999@127.0.0.1 -trace_rtt -rtt_freq 1 \
          -trace_stat -stf stat.csv -fd 1 -trace_err -error_file errors.log > sipp.out 2>&1 ) || true
    fi
    g1=$(ticks "$gw_pid"); t1=$(date +%s.%N)
    sent1=$(ls "$work/mail" | grep -c '\.eml$' || true)
    left=$(python3 -c 'import sqlite3,sys; print(sqlite3.connect(sys.argv[1]).execute("SELECT count(*) FROM mail_queue WHERE state=\"queued\"").fetchone()[0])' "$work/sipfence.db")
    cp -a "$work/$kind" "$step/$kind"
    python3 - "$mode" "$kind" "$rate" "$work/$kind" "$((sent1 - sent0))" "$hz" "$g0" "$g1" "$t0" "$t1" "$left" "$kind" >> "$out/summary.tsv" <<'PY'
import csv, glob, os, statistics, sys
mode, kind, rate, d, mails, hz, g0, g1, t0, t1, left, _ = sys.argv[1:13]
hz, g0, g1, t0, t1 = int(hz), int(g0), int(g1), float(t0), float(t1)
vals = []
for f in glob.glob(os.path.join(d, "*_rtt.csv")):
    for row in csv.reader(open(f), delimiter=";"):
        # date_ms;response_time_ms;rtd_no ; rtd 1 is the registration / setup
        try:
            if row[2].strip() in ("1", "setup") or kind == "reg":
                vals.append(float(row[1]))
        except (IndexError, ValueError):
            pass
vals.sort()
ge = lambda t: 100.0 * sum(v >= t for v in vals) / len(vals) if vals else float("nan")
q = lambda p: vals[min(len(vals) - 1, int(p * len(vals)))] if vals else float("nan")
rows = list(csv.DictReader(open(os.path.join(d, "stat.csv")), delimiter=";"))
last = rows[-1] if rows else {}
ok, failed, retrans = last.get("SuccessfulCall(C)", "?"), last.get("FailedCall(C)", "?"), last.get("Retransmissions(C)", "?")
gw = 100.0 * (g1 - g0) / hz / (t1 - t0)
print("\t".join([mode, kind, rate, ok, failed, retrans] + ["%.2f" % x for x in (q(.5), q(.9), q(.99), vals[-1] if vals else float("nan"), statistics.mean(vals) if vals else float("nan"),
                                      ge(4), ge(8))]
                + [str(len(vals)), mails, "%.1f" % gw, left]))
PY
    tail -1 "$out/summary.tsv"
    sleep 2
  done
  kill "$uas_pid" 2>/dev/null || true; wait "$uas_pid" 2>/dev/null || true; uas_pid=""
  stop_gw
  kill -TERM "$sink_pid"; wait "$sink_pid" 2>/dev/null || true; sink_pid=""
  cp "$work/mail/index.tsv" "$step/sink_index.tsv" 2>/dev/null || true
  rm -rf "$work"
done
echo "== $out/summary.tsv"
column -t -s $'\t' "$out/summary.tsv"
