#!/usr/bin/env bash
# REGISTER-with-digest throughput and server CPU per registration, sipfence
# and the kit's Kamailio side by side in one run (see compare_kit.sh).
# usage: bench/compare_register.sh   (env: REG_RATES, REG_SECS, and compare_kit.sh's)
set -euo pipefail
export REG_RATES="${REG_RATES:-1000 2000 3000 4000 5000 6000 8000 10000}"
export REG_SECS="${REG_SECS:-5}"
exec "$(dirname "$0")/compare_kit.sh" reg
