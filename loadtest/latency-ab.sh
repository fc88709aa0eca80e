#!/usr/bin/env bash
# STARTTLS handshake latency of two gateway builds at one fixed rate, the
# builds alternating round by round so the host's noise falls on both:
#
#   loadtest/latency-ab.sh OLD_SEALGATE NEW_SEALGATE [--rate 1100] [--rounds 3]
#
# Each round starts a fresh gateway (loadtest/lib.sh's measurement config),
# runs `sealgate-load --mode starttls --duration 5s --rate R --concurrency
# 512` against it, and prints p50/p99 of STARTTLS→handshake in µs.
set -euo pipefail
[ $# -ge 2 ] || { echo "usage: $0 OLD_SEALGATE NEW_SEALGATE [--rate R] [--rounds N]" >&2; exit 2; }
old=$1; new=$2; shift 2
rate=1100; rounds=3
while [ $# -gt 0 ]; do
  case "$1" in
    --rate) rate=$2; shift 2 ;;
    --rounds) rounds=$2; shift 2 ;;
    *) echo "usage: $0 OLD_SEALGATE NEW_SEALGATE [--rate R] [--rounds N]" >&2; exit 2 ;;
  esac
done
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
. "$root/loadtest/lib.sh"
ab_bench latency-ab
for round in $(seq "$rounds"); do
  for which in old new; do
    gw=$old; [ "$which" = new ] && gw=$new
    ab_start "$gw"
    r=$("$load" --target "127.0.0.1:$port" --mode starttls --duration 5s --rate "$rate" --concurrency 512 --json)
    ab_stop
    echo "round $round $which: $(echo "$r" | python3 -c 'import json,sys; d=json.load(sys.stdin); h=d["phases"]["handshake"]; print("p50", h["p50"], "p99", h["p99"], "sessions/s", round(d["sessions_per_s"]))')"
  done
done
