#!/usr/bin/env bash
# System calls per relayed message on the gateway (all its threads: shard,
# spool writers, scheduler, log): strace -c -f attached to a one-shard
# gateway relaying N 2 KB messages (over STARTTLS, 8 sessions at a time)
# to sealgate-load's sink, counted until every message is delivered.
# futex + sched_yield is the thread hand-offs per message.
#
#   loadtest/relay-syscalls.sh [--messages 2000] [--idle 2s]
#
# --idle: [queue] connection_idle ("0s": a connection per attempt).
set -euo pipefail
messages=2000 idle=2s
while [ $# -gt 0 ]; do
  case "$1" in
    --messages) messages=$2; shift 2 ;;
    --idle) idle=$2; shift 2 ;;
    *) echo "usage: $0 [--messages N] [--idle 2s]" >&2; exit 2 ;;
  esac
done
root=$(cd "$(dirname "$0")/.." && pwd)
command -v strace >/dev/null || { echo "strace is needed" >&2; exit 1; }
. "$root/loadtest/lib.sh"
bench_work relay-syscalls
sink_port=$(free_port) port=$(free_port) admin=$(free_port)
load_sink "$sink_port" "$work/sink.log"
{ gateway_config "$port" "example.com" "[127.0.0.1]:$sink_port" 1 | with_admin "$admin"
  printf '[queue]\nconnection_idle = "%s"\n' "$idle"; } > "$work/sealgate.toml"
"$gw" run -c "$work/sealgate.toml" 2>"$work/gw.log" & g=$!; pids+=($g)
wait_ready "$work/gw.log"
strace -c -f -p "$g" -o "$work/strace.txt" 2>/dev/null & st=$!
sleep 1
"$load" --target "127.0.0.1:$port" --mode message --sessions "$messages" --concurrency 8 >/dev/null || true
for _ in $(seq 600); do
  [ "$(metric "$admin" sealgate_deliveries_total)" -ge "$messages" ] && break
  sleep 0.1
done
kill -INT "$st"; wait "$st" 2>/dev/null || true
echo "delivered: $(metric "$admin" sealgate_deliveries_total) of $messages (connection_idle $idle)"
awk -v n="$messages" '$NF ~ /^[a-z_0-9]+$/ && $4 ~ /^[0-9]+$/ && $NF != "total" {printf "%s %.2f\n", $NF, $4/n}' "$work/strace.txt" | sort -k2 -nr | head -16
awk -v n="$messages" '$NF ~ /^[a-z_0-9]+$/ && $4 ~ /^[0-9]+$/ && $NF != "total" {t += $4} $NF == "futex" || $NF == "sched_yield" {w += $4} END {printf "total %.2f per message; futex + sched_yield %.2f\n", t/n, w/n}' "$work/strace.txt"
