#!/usr/bin/env bash
# The spool's cost per relayed message: sealgate-load (closed loop, TLS
# messages) → sealgate (release build) → Postfix's smtp-sink. Prints, per
# run, messages/s, server CPU per message (user + system), and from the
# gateway's own metrics the journal's fdatasyncs and batch writes per
# message; then one run under `strace -c -f` (syscalls per message; strace
# slows the server, so its rate is not comparable) and one under
# `perf record` (the top of the profile, user vs kernel).
#
#   loadtest/spool-report.sh [--runs 3] [--duration 10s] [--concurrency 16] [--size 2048] [--writers 2] [--log info|warn (receive log level)] [--destination-concurrency 20]
#
# Everything started here is stopped on exit.
set -euo pipefail

runs=3
duration=10s
concurrency=16
size=2048
writers=2
log=info
dconc=20
while [ $# -gt 0 ]; do
  case "$1" in
    --destination-concurrency) dconc=$2; shift 2 ;;
    --log) log=$2; shift 2 ;;
    --writers) writers=$2; shift 2 ;;
    --runs) runs=$2; shift 2 ;;
    --duration) duration=$2; shift 2 ;;
    --concurrency) concurrency=$2; shift 2 ;;
    --size) size=$2; shift 2 ;;
    *) echo "usage: $0 [--runs N] [--duration 10s] [--concurrency 16] [--size 2048] [--writers 2] [--log info]" >&2; exit 2 ;;
  esac
done

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
. "$root/loadtest/lib.sh"
relay_bench spool

start_gateway() {
  rm -rf "$work/sg"
  mkdir -p "$work/sg"
  gateway_config "$sg_port" "example.com" "[127.0.0.1]:$sink_port" \
    | with_admin "$admin_port" \
    | sed "s/^shards = \(.*\)/shards = \1\nspool_writers = $writers/" > "$work/sg/sealgate.toml"
  printf '[log]\nreceive = "%s"\n[queue]\ndestination_concurrency = %s\n' "$log" "$dconc" >> "$work/sg/sealgate.toml"
  "$@" "$gw" run -c "$work/sg/sealgate.toml" 2>"$work/sg/sealgate.log" &
  sg_pid=$!
  pids+=($sg_pid)
  wait_ready "$work/sg/sealgate.log"
}


stop_gateway() {
  kill -TERM "$sg_pid"; wait "$sg_pid" 2>/dev/null || true
}

echo "| run | messages/s | server CPU µs/message (user + system) | fdatasync/message | writes/message | messages per sync |"
echo "|---|---:|---:|---:|---:|---:|"
for run in $(seq "$runs"); do
  start_gateway
  s0=$(metric "$admin_port" sealgate_spool_syncs_total); w0=$(metric "$admin_port" sealgate_spool_writes_total); m0=$(metric "$admin_port" sealgate_spool_messages_stored_total)
  out=$("$load" --target "127.0.0.1:$sg_port" --mode message --duration "$duration" \
        --concurrency "$concurrency" --size "$size" --server-pid "$sg_pid" --json)
  s1=$(metric "$admin_port" sealgate_spool_syncs_total); w1=$(metric "$admin_port" sealgate_spool_writes_total); m1=$(metric "$admin_port" sealgate_spool_messages_stored_total)
  python3 - "$run" "$out" "$s0" "$s1" "$w0" "$w1" "$m0" "$m1" <<'PY'
import json, sys
run, out = sys.argv[1], json.loads(sys.argv[2])
s0, s1, w0, w1, m0, m1 = map(float, sys.argv[3:9])
c = out["server_cpu"]
msgs = max(m1 - m0, 1)
print(f"| {run} | {out['messages_per_s']:.0f} | {c['server_us_per_session']:.0f} ({c['server_user_us_per_session']:.0f} + {c['server_system_us_per_session']:.0f}) "
      f"| {(s1 - s0) / msgs:.3f} | {(w1 - w0) / msgs:.3f} | {msgs / max(s1 - s0, 1):.1f} |")
PY
  stop_gateway
done

echo
echo "strace -c -f (one run, $duration; rates under strace are lower):"
start_gateway
strace -c -f -o "$work/strace.txt" -p "$sg_pid" 2>/dev/null &
st=$!
sleep 0.5
m0=$(metric "$admin_port" sealgate_spool_messages_stored_total)
"$load" --target "127.0.0.1:$sg_port" --mode message --duration "$duration" \
  --concurrency "$concurrency" --size "$size" --json >/dev/null
m1=$(metric "$admin_port" sealgate_spool_messages_stored_total)
kill -INT "$st"; wait "$st" 2>/dev/null || true
python3 - "$work/strace.txt" "$m0" "$m1" <<'PY'
import sys
msgs = float(sys.argv[3]) - float(sys.argv[2])
print(f"{msgs:.0f} messages")
print("| syscall | calls | per message |")
print("|---|---:|---:|")
rows = []
for l in open(sys.argv[1]):
    f = l.split()
    if len(f) >= 5 and f[0][0].isdigit() and f[-1] != "total":
        calls = int(f[3])
        rows.append((calls, f[-1]))
for calls, name in sorted(rows, reverse=True)[:14]:
    print(f"| {name} | {calls} | {calls / msgs:.2f} |")
PY
stop_gateway

if command -v perf >/dev/null; then
  echo
  echo "perf (one run, $duration): share of the gateway's samples"
  start_gateway
  perf record -q -g -o "$work/perf.data" -p "$sg_pid" >/dev/null 2>&1 &
  pr=$!
  sleep 0.5
  "$load" --target "127.0.0.1:$sg_port" --mode message --duration "$duration" \
    --concurrency "$concurrency" --size "$size" --json >/dev/null
  kill -INT "$pr"; wait "$pr" 2>/dev/null || true
  perf report -i "$work/perf.data" --no-children --sort dso --stdio 2>/dev/null \
    | grep -E '^ +[0-9]' | head -8
  echo "top symbols:"
  perf report -i "$work/perf.data" --no-children --sort sym --stdio 2>/dev/null \
    | grep -E '^ +[0-9]' | head -15
  stop_gateway
fi
