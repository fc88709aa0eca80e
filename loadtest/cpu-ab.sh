#!/usr/bin/env bash
# Server CPU per STARTTLS session of two sealgate builds, alternating, on
# fresh gateways: utime and stime of the whole process from /proc before
# and after a fixed number of sessions (10,000 by default), so that the
# figure is the server's alone. Medians are what to quote.
#
#   loadtest/cpu-ab.sh OLD_BINARY NEW_BINARY [--rounds 4] [--sessions 10000]
#                      [--shards 0] [-- extra sealgate-load arguments]
#
# --shards 1 with the generator pinned elsewhere: PIN="taskset -c 1".
set -euo pipefail
[ $# -ge 2 ] || { echo "usage: $0 OLD NEW [--rounds N] [--sessions N] [--shards N] [-- load args]" >&2; exit 2; }
old=$1 new=$2; shift 2
rounds=4 sessions=10000 shards=0
while [ $# -gt 0 ]; do
  case "$1" in
    --rounds) rounds=$2; shift 2 ;;
    --sessions) sessions=$2; shift 2 ;;
    --shards) shards=$2; shift 2 ;;
    --) shift; break ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
done
root=$(cd "$(dirname "$0")/.." && pwd)
. "$root/loadtest/lib.sh"
ab_bench cpu-ab
hz=$(getconf CLK_TCK)
one() {
  local bin=$1; shift
  ab_start "$bin" "$shards"
  read -r u0 s0 < <(awk '{print $14, $15}' "/proc/$gw_pid/stat")
  ${PIN:-} "$load" --target "127.0.0.1:$port" --mode starttls --sessions "$sessions" --concurrency 16 "$@" >/dev/null
  read -r u1 s1 < <(awk '{print $14, $15}' "/proc/$gw_pid/stat")
  ab_stop
  python3 -c "import sys; u,s,n,hz=map(float,sys.argv[1:]); print(f'{(u+s)*1e6/hz/n:.0f} {u*1e6/hz/n:.0f} {s*1e6/hz/n:.0f}')" $((u1-u0)) $((s1-s0)) "$sessions" "$hz"
}
declare -a a b
for r in $(seq "$rounds"); do
  x=$(one "$old" "$@"); y=$(one "$new" "$@")
  echo "round $r: old $x, new $y (total user system µs/session)" >&2
  a+=("$x"); b+=("$y")
done
ab_report "$rounds" session "${a[@]}" "${b[@]}"
