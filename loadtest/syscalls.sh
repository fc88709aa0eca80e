#!/usr/bin/env bash
# System calls per STARTTLS session on the gateway (all its threads):
# strace -c -f attached to a one-shard gateway while 3,000 sessions run.
#
#   loadtest/syscalls.sh [BINARY] [--sessions 3000]
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
bin=${1:-$root/target/release/sealgate}; [ $# -gt 0 ] && shift
sessions=3000
[ "${1:-}" = "--sessions" ] && sessions=$2
command -v strace >/dev/null || { echo "strace is needed" >&2; exit 1; }
cargo build --release -p sealgate-load -q --manifest-path "$root/Cargo.toml"
. "$root/loadtest/lib.sh"
work=$(mktemp -d /tmp/sealgate-syscalls.XXXXXX)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null; wait "$p" 2>/dev/null; done; rm -rf "$work"; }
trap cleanup EXIT
port=$(free_port)
(cd "$work" && gateway_config "$port" "*" "[127.0.0.1]:1" 1 > sealgate.toml)
"$bin" run -c "$work/sealgate.toml" 2>"$work/gw.log" & gw=$!; pids+=("$gw")
wait_ready "$work/gw.log"
strace -c -f -p "$gw" -o "$work/strace.txt" 2>/dev/null & st=$!
sleep 1
"$root/target/release/sealgate-load" --target "127.0.0.1:$port" --mode starttls --sessions "$sessions" --concurrency 16 >/dev/null
sleep 0.5
kill -INT "$st"; wait "$st" 2>/dev/null || true
awk -v n="$sessions" '$NF ~ /^[a-z_0-9]+$/ && $4 ~ /^[0-9]+$/ && $NF != "total" {printf "%s %.2f\n", $NF, $4/n}' "$work/strace.txt" | sort -k2 -nr
awk -v n="$sessions" '$NF ~ /^[a-z_0-9]+$/ && $4 ~ /^[0-9]+$/ && $NF != "total" {t += $4} END {printf "total %.2f per session\n", t/n}' "$work/strace.txt"
