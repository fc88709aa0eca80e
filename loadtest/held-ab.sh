#!/usr/bin/env bash
# Resident memory per held TLS session of two sealgate builds, alternating,
# on fresh gateways: sealgate-load opens N STARTTLS sessions (10,000 by
# default), completes each handshake and EHLO, and holds them all open
# while it reads the gateway's RSS growth (--hold --server-pid). Medians
# are what to quote.
#
#   loadtest/held-ab.sh OLD_BINARY NEW_BINARY [--rounds 3] [--sessions 10000]
set -euo pipefail
[ $# -ge 2 ] || { echo "usage: $0 OLD NEW [--rounds N] [--sessions N]" >&2; exit 2; }
old=$1 new=$2; shift 2
rounds=3 sessions=10000
while [ $# -gt 0 ]; do
  case "$1" in
    --rounds) rounds=$2; shift 2 ;;
    --sessions) sessions=$2; shift 2 ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
done
root=$(cd "$(dirname "$0")/.." && pwd)
cargo build --release -p sealgate-load -q --manifest-path "$root/Cargo.toml"
load=$root/target/release/sealgate-load
. "$root/loadtest/lib.sh"
work=$(mktemp -d /tmp/sealgate-held-ab.XXXXXX)
gw_pid=""
cleanup() { [ -n "$gw_pid" ] && kill "$gw_pid" 2>/dev/null && wait "$gw_pid" 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT
one() {
  local bin=$1
  rm -rf "$work"/*
  local port; port=$(free_port)
  (cd "$work" && gateway_config "$port" "*" "[127.0.0.1]:1" > sealgate.toml)
  "$bin" run -c "$work/sealgate.toml" 2>"$work/gw.log" & gw_pid=$!
  wait_ready "$work/gw.log"
  "$load" --target "127.0.0.1:$port" --mode starttls --sessions "$sessions" --concurrency "$sessions" \
    --hold --timeout 120s --server-pid "$gw_pid" --json \
    | python3 -c 'import json,sys; print(round(json.load(sys.stdin)["server_cpu"]["rss_kib_per_held_session"], 2))'
  kill "$gw_pid"; wait "$gw_pid" 2>/dev/null || true; gw_pid=""
}
declare -a a b
for r in $(seq "$rounds"); do
  x=$(one "$old"); y=$(one "$new")
  echo "round $r: old $x KiB, new $y KiB per held session" >&2
  a+=("$x"); b+=("$y")
done
python3 - "$rounds" "${a[@]}" "${b[@]}" <<'PY'
import statistics, sys
n = int(sys.argv[1]); v = list(map(float, sys.argv[2:]))
for name, rs in (("old", v[:n]), ("new", v[n:])):
    print(f"{name}: {' '.join(map(str, rs))} → median {statistics.median(rs):.2f} KiB per held session")
PY
