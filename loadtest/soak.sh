#!/usr/bin/env bash
# Soak: a gateway (release build) relaying to Postfix's smtp-sink under an
# open-loop load at half its measured capacity for a long while (10
# minutes by default). Every minute it prints the gateway's RSS, open
# files, spool disk use, journal segment files, queue length and the
# messages stored so far: they must level off, not grow. Not a CI test.
#
#   loadtest/soak.sh [--duration 10m] [--size 2048] [--fraction 0.5]
#
# Everything started here is stopped on exit.
set -euo pipefail

duration=10m
size=2048
fraction=0.5
while [ $# -gt 0 ]; do
  case "$1" in
    --duration) duration=$2; shift 2 ;;
    --size) size=$2; shift 2 ;;
    --fraction) fraction=$2; shift 2 ;;
    *) echo "usage: $0 [--duration 10m] [--size 2048] [--fraction 0.5]" >&2; exit 2 ;;
  esac
done
case $duration in
  *m) seconds=$(( ${duration%m} * 60 )) ;;
  *s) seconds=${duration%s} ;;
  *) seconds=$duration ;;
esac

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
. "$root/loadtest/lib.sh"
relay_bench soak
mkdir -p "$work/sg"
gateway_config "$sg_port" "example.com" "[127.0.0.1]:$sink_port" \
  | with_admin "$admin_port" > "$work/sg/sealgate.toml"
"$gw" run -c "$work/sg/sealgate.toml" 2>"$work/sg/sealgate.log" &
sg_pid=$!
pids+=($sg_pid)
wait_ready "$work/sg/sealgate.log"


# Capacity: closed loop, 5 s.
cap=$("$load" --target "127.0.0.1:$sg_port" --mode message --duration 5s --concurrency 16 \
      --size "$size" --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["messages_per_s"])')
rate=$(python3 -c "print(max(1, int($cap * $fraction)))")
echo "capacity $cap messages/s (closed loop, concurrency 16); soaking at $rate/s for ${seconds} s" >&2

"$load" --target "127.0.0.1:$sg_port" --mode message --rate "$rate" --concurrency 2000 \
  --duration "${seconds}s" --size "$size" --json > "$work/load.json" &
lp=$!
pids+=($lp)

sample() {
  local rss fds disk segs queue stored
  rss=$(awk '/VmRSS/ {print $2}' "/proc/$sg_pid/status")
  fds=$(ls "/proc/$sg_pid/fd" | wc -l)
  disk=$(du -sk "$work/sg/spool" | cut -f1)
  segs=$(ls "$work"/sg/spool/journal-*/ | grep -c '^segment-' || true)
  queue=$(metric "$admin_port" sealgate_queue_messages)
  stored=$(metric "$admin_port" sealgate_spool_messages_stored_total)
  echo "| $1 | $rss | $fds | $disk | $segs | $queue | $stored |"
}
echo "| minute | RSS KiB | open files | spool KiB | segment files | queued | stored so far |"
echo "|---:|---:|---:|---:|---:|---:|---:|"
sample 0
for m in $(seq 1 $(( seconds / 60 ))); do
  sleep 60
  sample "$m"
done
wait "$lp" || true
python3 - "$work/load.json" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
print(f"\nload: {r['sessions']} sessions, {r['messages']} messages ({r['messages_per_s']:.0f}/s), {r['sessions_failed']} failed")
PY
