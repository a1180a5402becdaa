#!/usr/bin/env bash
# Writes a sipfence config with the bench kit's users (1000..1999, password
# pw<user>) to stdout. usage: sipfence_bench_config.sh DIR [PORT] [extra toml]
set -euo pipefail
dir="$1"; port="${2:-5060}"; extra="${3:-}"
cat <<TOML
[server]
listen = ["127.0.0.1:$port"]
control_socket = "$dir/sipfence.sock"

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
