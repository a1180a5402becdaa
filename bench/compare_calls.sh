#!/usr/bin/env bash
# Calls per second (INVITE -> 407 -> INVITE+auth -> 100/180/200 -> ACK -> BYE)
# and server CPU per call, sipfence and the kit's Kamailio side by side in one
# run (see compare_kit.sh): the kit's `call` test registers a SIPp UAS as 1999
# and a SIPp UAC calls it through the proxy at increasing rates.
# usage: bench/compare_calls.sh   (env: CALL_RATES, CALL_SECS, and compare_kit.sh's)
set -euo pipefail
export CALL_RATES="${CALL_RATES:-200 400 600 800 1000 1200 1500}"
export CALL_SECS="${CALL_SECS:-8}"
exec "$(dirname "$0")/compare_kit.sh" call
