#!/usr/bin/env bash
# Writes a sipfence config with the bench kit's users (1000..1999, password
# pw<user>) to stdout. usage: sipfence_bench_config.sh DIR [PORT] [extra toml]
# env: SIP_LISTEN (default "127.0.0.1:PORT"), STUN_LISTEN (the standalone STUN
# listener's addresses; default none, so benches never collide on 3478).
set -euo pipefail
dir="$1"; port="${2:-5060}"; extra="${3:-}"
quote() { local out="" a; for a in $1; do out="$out${out:+, }\"$a\""; done; echo "$out"; }
cat <<TOML
[server]
listen = [$(quote "${SIP_LISTEN:-127.0.0.1:$port}")]
control_socket = "$dir/sipfence.sock"

[stun]
listen = [$(quote "${STUN_LISTEN:-}")]

[storage]
database = "$dir/sipfence.db"

[auth]
# SIPp 3.6 answers only the first challenge and knows only MD5.
algorithms = ["MD5", "SHA-256"]

$extra
TOML
for u in $(seq 1000 1999); do
  printf '[[extension]]\nnumber = "%s"\npassword = "pw%s"\n' "$u" "$u"
done
