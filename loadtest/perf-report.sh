#!/usr/bin/env bash
# Measures sealgate against its targets (product.md §5) on this host and
# prints the figures for docs/performance.md:
#   1. the ceiling: criterion's in-memory rustls server handshake (ECDSA
#      P-256, RSA-2048) and the in-memory STARTTLS session, medians of runs;
#   2. server CPU per real STARTTLS session over loopback (sealgate-load
#      --server-pid), each run on a fresh gateway, and its ratio to (1);
#   3. resident memory per idle post-handshake TLS session at 10,000
#      sessions (--hold), each run on a fresh gateway;
#   4. p99 STARTTLS handshake latency at half the maximum session rate;
#   5. the same session resumed with a ticket (in memory and over
#      loopback).
# Every TLS figure uses X25519 for the key exchange (the benches' client
# and sealgate-load --groups X25519), unless a line says otherwise; the
# in-memory X25519MLKEM768 figures are printed for reference.
#
#   loadtest/perf-report.sh [--runs N] [--duration 5s]
set -euo pipefail
runs=3
duration=5s
while [ $# -gt 0 ]; do
  case "$1" in
    --runs) runs=$2; shift 2 ;;
    --duration) duration=$2; shift 2 ;;
    *) echo "usage: $0 [--runs N] [--duration 5s]" >&2; exit 2 ;;
  esac
done
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
cargo build --release --workspace -q
gw=$root/target/release/sealgate
load=$root/target/release/sealgate-load
work=$(mktemp -d /tmp/sealgate-perf.XXXXXX)
gw_pid=""
cleanup() {
  [ -n "$gw_pid" ] && kill "$gw_pid" 2>/dev/null && wait "$gw_pid" 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT
. "$root/loadtest/lib.sh"
port=$(free_port)
# Nothing leaves loopback: queued mail goes to a closed port.
gateway_config "$port" "*" "[127.0.0.1]:1" > "$work/sealgate.toml"
start_gw() {
  rm -rf "$work/spool"
  "$gw" run -c "$work/sealgate.toml" 2>"$work/gw.log" &
  gw_pid=$!
  wait_ready "$work/gw.log" || exit 1
}
stop_gw() { kill "$gw_pid"; wait "$gw_pid" 2>/dev/null || true; gw_pid=""; }
median() { python3 -c 'import statistics,sys; print(statistics.median(float(x) for x in sys.argv[1:]))' "$@"; }
json() { python3 -c 'import json,sys; d=json.load(sys.stdin); print(eval(sys.argv[1], {"d": d}))' "$1"; }

echo "== 1. ceiling: criterion, $runs runs" >&2
hs=(); rsa=(); sess=(); hs_pq=(); sess_pq=(); hs_res=(); sess_res=()
for _ in $(seq "$runs"); do
  out=$(cargo bench -q --bench tls -- --warm-up-time 2 --measurement-time 5 2>/dev/null)
  pick() { echo "$out" | grep -A1 "^$1" | grep -o 'time: *\[[^]]*\]' | awk '{v=$4; u=$5; if (u=="ms") v*=1000; print v}'; }
  hs+=("$(pick 'handshake/ecdsa-p256')"); rsa+=("$(pick 'handshake/rsa-2048')"); sess+=("$(pick 'session/starttls-ecdsa-p256')")
  hs_pq+=("$(pick 'handshake-x25519mlkem768/ecdsa-p256')"); sess_pq+=("$(pick 'session-x25519mlkem768/starttls-ecdsa-p256')")
  hs_res+=("$(pick 'handshake-resumed/ecdsa-p256')"); sess_res+=("$(pick 'session-resumed/starttls-ecdsa-p256')")
done
hs_m=$(median "${hs[@]}"); rsa_m=$(median "${rsa[@]}"); sess_m=$(median "${sess[@]}")
sess_res_m=$(median "${sess_res[@]}")
echo "handshake ecdsa-p256 (X25519) µs: ${hs[*]} → median $hs_m"
echo "handshake rsa-2048 (X25519) µs: ${rsa[*]} → median $rsa_m"
echo "in-memory STARTTLS session (X25519) µs: ${sess[*]} → median $sess_m (×$(python3 -c "print(round($sess_m/$hs_m,2))") the handshake)"
echo "X25519MLKEM768: handshake µs ${hs_pq[*]} → median $(median "${hs_pq[@]}"); session µs ${sess_pq[*]} → median $(median "${sess_pq[@]}")"
echo "resumed (ticket, X25519): handshake µs ${hs_res[*]} → median $(median "${hs_res[@]}"); session µs ${sess_res[*]} → median $sess_res_m"

echo "== 2. STARTTLS session over loopback, $runs runs of $duration, fresh gateway each" >&2
cpu=(); usr=(); sys=(); rate=()
for _ in $(seq "$runs"); do
  start_gw
  r=$("$load" --target "127.0.0.1:$port" --mode starttls --duration "$duration" --concurrency 16 --groups X25519 --server-pid "$gw_pid" --json)
  stop_gw
  cpu+=("$(echo "$r" | json 'd["server_cpu"]["server_us_per_session"]')")
  usr+=("$(echo "$r" | json 'd["server_cpu"]["server_user_us_per_session"]')")
  sys+=("$(echo "$r" | json 'd["server_cpu"]["server_system_us_per_session"]')")
  rate+=("$(echo "$r" | json 'd["sessions_per_s"]')")
done
cpu_m=$(median "${cpu[@]}"); rate_m=$(median "${rate[@]}")
usr_m=$(median "${usr[@]}")
echo "server CPU µs/session: ${cpu[*]} → median $cpu_m (user $usr_m + system $(median "${sys[@]}")); ×$(python3 -c "print(round($cpu_m/$hs_m,2))") the handshake ceiling, ×$(python3 -c "print(round($cpu_m/$sess_m,2))") the in-memory session (user alone ×$(python3 -c "print(round($usr_m/$sess_m,2))"))"
echo "sessions/s at concurrency 16: ${rate[*]} → median $rate_m"

echo "== 3. memory: 10,000 held TLS sessions, $runs runs, fresh gateway each" >&2
mem=()
for _ in $(seq "$runs"); do
  start_gw
  r=$("$load" --target "127.0.0.1:$port" --mode starttls --sessions 10000 --concurrency 10000 --hold --timeout 120s --server-pid "$gw_pid" --json)
  stop_gw
  mem+=("$(echo "$r" | json 'round(d["server_cpu"]["rss_kib_per_held_session"], 2)')")
done
echo "RSS growth KiB per held session: ${mem[*]} → median $(median "${mem[@]}")"

echo "== 4. latency at half the maximum rate ($(python3 -c "print(int($rate_m/2))")/s), $runs runs" >&2
p99=(); p50=()
for _ in $(seq "$runs"); do
  start_gw
  r=$("$load" --target "127.0.0.1:$port" --mode starttls --duration "$duration" --rate "$(python3 -c "print(int($rate_m/2))")" --concurrency 512 --json)
  stop_gw
  p99+=("$(echo "$r" | json 'd["phases"]["handshake"]["p99"]')")
  p50+=("$(echo "$r" | json 'd["phases"]["handshake"]["p50"]')")
done
echo "STARTTLS→handshake µs at 50% load: p50 ${p50[*]} → median $(median "${p50[@]}"); p99 ${p99[*]} → median $(median "${p99[@]}") (spread $(python3 -c 'import sys; v=[float(x) for x in sys.argv[1:]]; print(min(v), "–", max(v))' "${p99[@]}"))"

echo "== 5. resumed STARTTLS sessions over loopback (tickets), $runs runs of $duration" >&2
rcpu=(); rusr=(); rsys=()
for _ in $(seq "$runs"); do
  start_gw
  r=$("$load" --target "127.0.0.1:$port" --mode starttls --duration "$duration" --concurrency 16 --resumption --server-pid "$gw_pid" --json)
  stop_gw
  rcpu+=("$(echo "$r" | json 'd["server_cpu"]["server_us_per_session"]')")
  rusr+=("$(echo "$r" | json 'd["server_cpu"]["server_user_us_per_session"]')")
  rsys+=("$(echo "$r" | json 'd["server_cpu"]["server_system_us_per_session"]')")
done
rcpu_m=$(median "${rcpu[@]}")
echo "server CPU µs/resumed session: ${rcpu[*]} → median $rcpu_m (user $(median "${rusr[@]}") + system $(median "${rsys[@]}")); ×$(python3 -c "print(round($rcpu_m/$sess_res_m,2))") the in-memory resumed session"
