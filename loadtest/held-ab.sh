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
. "$root/loadtest/lib.sh"
ab_bench held-ab
one() {
  ab_start "$1"
  "$load" --target "127.0.0.1:$port" --mode starttls --sessions "$sessions" --concurrency "$sessions" \
    --hold --timeout 120s --server-pid "$gw_pid" --json \
    | python3 -c 'import json,sys; print(round(json.load(sys.stdin)["server_cpu"]["rss_kib_per_held_session"], 2))'
  ab_stop
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
