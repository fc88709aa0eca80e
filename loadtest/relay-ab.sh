#!/usr/bin/env bash
# Server CPU per relayed message of two sealgate builds, alternating, on
# fresh gateways: 2 KB messages over STARTTLS (sealgate-load --mode
# message), relayed to sealgate-load's sink (which offers PIPELINING and
# CHUNKING; with --tls-next-hop also STARTTLS). The figure is utime+stime
# of the gateway's process from /proc around a fixed number of sessions,
# once every message has been delivered; medians are what to quote.
#
#   loadtest/relay-ab.sh OLD_BINARY NEW_BINARY [--rounds 4] [--sessions 5000]
#                        [--tls-next-hop] [--size 2048]
set -euo pipefail
[ $# -ge 2 ] || { echo "usage: $0 OLD NEW [--rounds N] [--sessions N] [--tls-next-hop] [--size N]" >&2; exit 2; }
old=$1 new=$2; shift 2
rounds=4 sessions=5000 tls="" size=2048
while [ $# -gt 0 ]; do
  case "$1" in
    --rounds) rounds=$2; shift 2 ;;
    --sessions) sessions=$2; shift 2 ;;
    --tls-next-hop) tls=tls; shift ;;
    --size) size=$2; shift 2 ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
done
root=$(cd "$(dirname "$0")/.." && pwd)
. "$root/loadtest/lib.sh"
bench_work relay-ab
sink_port=$(free_port)
load_sink "$sink_port" "$work/sink.log" $tls

one() {
  local bin=$1 dir port admin gw_pid
  dir=$(mktemp -d "$work/gw.XXXXXX")
  port=$(free_port); admin=$(free_port)
  gateway_config "$port" "example.com" "[127.0.0.1]:$sink_port" | with_admin "$admin" > "$dir/sealgate.toml"
  "$bin" run -c "$dir/sealgate.toml" 2>"$dir/sealgate.log" &
  gw_pid=$!
  wait_ready "$dir/sealgate.log" >&2
  read -r u0 s0 < <(awk '{print $14, $15}' "/proc/$gw_pid/stat")
  "$load" --target "127.0.0.1:$port" --mode message --size "$size" --sessions "$sessions" \
    --concurrency 16 >/dev/null || true
  for _ in $(seq 600); do
    [ "$(metric "$admin" sealgate_deliveries_total)" -ge "$sessions" ] && break
    sleep 0.05
  done
  read -r u1 s1 < <(awk '{print $14, $15}' "/proc/$gw_pid/stat")
  kill "$gw_pid"; wait "$gw_pid" 2>/dev/null || true
  rm -rf "$dir"
  python3 -c "import sys; u,s,n,hz=map(float,sys.argv[1:]); print(f'{(u+s)*1e6/hz/n:.0f} {u*1e6/hz/n:.0f} {s*1e6/hz/n:.0f}')" \
    $((u1-u0)) $((s1-s0)) "$sessions" "$(getconf CLK_TCK)"
}
declare -a a b
for r in $(seq "$rounds"); do
  x=$(one "$old"); y=$(one "$new")
  echo "round $r: old $x, new $y (total user system µs/message)" >&2
  a+=("$x"); b+=("$y")
done
ab_report "$rounds" message "${a[@]}" "${b[@]}"
