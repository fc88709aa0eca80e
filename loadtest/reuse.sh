#!/usr/bin/env bash
# How many outbound connections sealgate opens to one next hop (the
# connection cache, docs/delivery.md), counted by the next hop itself:
# sealgate-load's sink, which reports the connections it accepted.
#
#   loadtest/reuse.sh [--idle 2s] [--tls]
#
# Two loads, each on a fresh gateway and sink:
#   spaced      100 messages 30 ms apart (open loop, 33/s; at most 4 in
#               flight when the gateway's fsync is slow)
#   concurrent  304 messages, 8 sessions at a time (closed loop)
# Each waits until the gateway has delivered every message, then stops the
# sink and prints messages and connections. --idle sets [queue]
# connection_idle ("0s": no cache, the figure before it); --tls gives the
# sink a certificate, so both legs are STARTTLS.
set -euo pipefail

idle=2s
tls=""
while [ $# -gt 0 ]; do
  case "$1" in
    --idle) idle=$2; shift 2 ;;
    --tls) tls=tls; shift ;;
    *) echo "usage: $0 [--idle 2s] [--tls]" >&2; exit 2 ;;
  esac
done

root=$(cd "$(dirname "$0")/.." && pwd)
. "$root/loadtest/lib.sh"
bench_work reuse

run() {
  local name=$1; shift
  local dir=$work/$name sink_port gw_port admin
  mkdir -p "$dir"
  sink_port=$(free_port); gw_port=$(free_port); admin=$(free_port)
  load_sink "$sink_port" "$dir/sink.log" $tls
  { gateway_config "$gw_port" "example.com" "[127.0.0.1]:$sink_port" 1 | with_admin "$admin"
    printf '[queue]\nconnection_idle = "%s"\n' "$idle"; } > "$dir/sealgate.toml"
  "$gw" run -c "$dir/sealgate.toml" 2>"$dir/sealgate.log" &
  local gw_pid=$!
  pids+=($gw_pid)
  wait_ready "$dir/sealgate.log"
  "$load" --target "127.0.0.1:$gw_port" --mode plain --json "$@" > "$dir/load.json" || { cat "$dir/load.json" >&2; exit 1; }
  local sent
  sent=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["messages"])' "$dir/load.json")
  # Delivered: every accepted message has its delivery line.
  for _ in $(seq 600); do
    [ "$(metric "$admin" sealgate_deliveries_total)" -ge "$sent" ] && break
    sleep 0.1
  done
  kill "$gw_pid"; wait "$gw_pid" 2>/dev/null || true
  kill "$sink_pid"; wait "$sink_pid" 2>/dev/null || true
  local got
  got=$(grep -o "sink received .*" "$dir/sink.log")
  local lost
  lost=$(grep -c "status=deferred\|status=bounced" "$dir/sealgate.log" || true)
  echo "$name: $sent messages accepted, $got; deferred or bounced: $lost (connection_idle $idle, next hop $([ -n "$tls" ] && echo STARTTLS || echo clear))"
}

run spaced --sessions 100 --rate 33 --concurrency 4
run concurrent --sessions 304 --concurrency 8
