# Shared by loadtest/perf-report.sh, loadtest/compare-postfix.sh, the A/B
# scripts (cpu-ab.sh, held-ab.sh, latency-ab.sh) and
# tests/tls-audit.sh: a free loopback port, a gateway configuration for
# measurements, and waiting for a gateway to be ready. Source it.

# A free TCP port on 127.0.0.1.
free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# gateway_config PORT DOMAIN VIA [SHARDS] [CERTIFICATES]: a configuration on
# 127.0.0.1:PORT that routes DOMAIN to VIA, with the spool and (unless
# CERTIFICATES, a TOML array, is given) a self-signed certificate beside
# the file. Every load client comes from 127.0.0.1, so the per-address
# connection limit is lifted.
gateway_config() {
  local port=$1 domain=$2 via=$3 shards=${4:-0}
  local certs=${5:-'[ { cert = "tls/server.crt", key = "tls/server.key" } ]'}
  cat <<TOML
[server]
hostname = "mx.test"
listen = ["127.0.0.1:$port"]
shards = $shards
spool_dir = "spool"
accept_domains = ["example.com"]
[limits]
connections_per_ip = 20000
[admin]
listen = "127.0.0.1:0"
[tls]
certificates = $certs
generate_self_signed = true
[[route]]
domain = "$domain"
via = "$via"
TOML
}

# wait_ready LOG: waits (10 s at most) for a gateway's "sealgate ready"
# line in LOG; prints the log and fails otherwise.
wait_ready() {
  for _ in $(seq 100); do grep -q "sealgate ready" "$1" && return 0; sleep 0.1; done
  cat "$1" >&2
  return 1
}

# with_admin PORT: a filter that puts a gateway configuration's metrics
# endpoint on 127.0.0.1:PORT (gateway_config ... | with_admin PORT).
with_admin() {
  sed "s/^listen = \"127.0.0.1:0\"/listen = \"127.0.0.1:$1\"/"
}

# metric ADMIN_PORT NAME: the sum of NAME's samples (all label sets) on the
# gateway's /metrics.
metric() {
  python3 - "$1" "$2" <<'PY'
import sys, urllib.request
body = urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[1]}/metrics", timeout=5).read().decode()
print(int(sum(float(l.split()[-1]) for l in body.splitlines() if l.startswith(sys.argv[2] + " ") or l.startswith(sys.argv[2] + "{"))))
PY
}

# relay_bench NAME: the set-up of a relay benchmark (soak.sh,
# spool-report.sh): the release binaries ($gw, $load), a work directory
# ($work) removed on exit with every process in $pids, free ports
# ($sink_port, $sg_port, $admin_port) and Postfix's smtp-sink on $sink_port.
# Call it from the script's top level (it sets the EXIT trap).
relay_bench() {
  command -v smtp-sink >/dev/null || { echo "smtp-sink (Debian package postfix) is needed" >&2; exit 1; }
  bench_work "$1"
  sink_port=$(free_port); sg_port=$(free_port); admin_port=$(free_port)
  smtp-sink -u postfix -c "127.0.0.1:$sink_port" 1000 >/dev/null 2>&1 &
  pids+=($!)
}

# bench_work NAME: the release binaries ($gw, $load) and a work directory
# ($work) removed on exit with every process in $pids (reuse.sh,
# relay-ab.sh, relay-syscalls.sh, relay_bench). Call it from the script's
# top level (it sets the EXIT trap).
bench_work() {
  cargo build --release --workspace -q --manifest-path "$root/Cargo.toml"
  gw=$root/target/release/sealgate
  load=$root/target/release/sealgate-load
  work=$(mktemp -d "/tmp/sealgate-$1.XXXXXX")
  pids=()
  trap relay_bench_cleanup EXIT
}

# load_sink PORT LOG [tls]: sealgate-load's sink on 127.0.0.1:PORT, its
# messages counted and dropped, with a certificate for STARTTLS when the
# third argument is "tls" (a fresh one beside LOG); ready on return, its pid
# in $sink_pid and in $pids. At its stop LOG says "sink received N messages
# over M connections".
load_sink() {
  local port=$1 log=$2 tls=()
  if [ "${3:-}" = tls ]; then
    "$gw" cert ca --cn sink.test --days 30 --out-cert "$log.crt" --out-key "$log.key" >/dev/null
    tls=(--tls-cert "$log.crt" --tls-key "$log.key")
  fi
  "$load" sink --listen "127.0.0.1:$port" "${tls[@]}" 2>"$log" &
  sink_pid=$!
  pids+=("$sink_pid")
  for _ in $(seq 100); do grep -q "sink ready" "$log" && return 0; sleep 0.1; done
  cat "$log" >&2
  return 1
}

# ab_report ROUNDS UNIT OLD... NEW...: the medians of two builds' rounds,
# each round "total user system" (µs per UNIT), as cpu-ab.sh and
# relay-ab.sh print them.
ab_report() {
  python3 - "$@" <<'PY'
import statistics, sys
n, unit = int(sys.argv[1]), sys.argv[2]
rows = [tuple(map(float, r.split())) for r in sys.argv[3:]]
for name, rs in (("old", rows[:n]), ("new", rows[n:])):
    t = statistics.median(r[0] for r in rs); u = statistics.median(r[1] for r in rs); s = statistics.median(r[2] for r in rs)
    print(f"{name}: {' '.join(str(int(r[0])) for r in rs)} → median {t:.0f} µs/{unit} (user {u:.0f} + system {s:.0f})")
PY
}

relay_bench_cleanup() {
  set +e
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null; wait "$p" 2>/dev/null; done
  rm -rf "$work"
}

# ab_bench NAME: the set-up of a two-build comparison (cpu-ab.sh,
# held-ab.sh, latency-ab.sh): the load generator built in release ($load),
# a work directory ($work) removed on exit with the gateway in $gw_pid.
# Call it from the script's top level (it sets the EXIT trap).
ab_bench() {
  cargo build --release -p sealgate-load -q --manifest-path "$root/Cargo.toml"
  load=$root/target/release/sealgate-load
  work=$(mktemp -d "/tmp/sealgate-$1.XXXXXX")
  gw_pid=""
  trap ab_bench_cleanup EXIT
}

ab_bench_cleanup() {
  [ -n "$gw_pid" ] && kill "$gw_pid" 2>/dev/null && wait "$gw_pid" 2>/dev/null
  rm -rf "$work"
}

# ab_start BINARY [SHARDS]: a fresh gateway of BINARY (empty spool, new
# certificate, the measurement configuration on a free $port), ready.
ab_start() {
  rm -rf "${work:?}"/*
  port=$(free_port)
  gateway_config "$port" "*" "[127.0.0.1]:1" "${2:-0}" > "$work/sealgate.toml"
  "$1" run -c "$work/sealgate.toml" 2>"$work/gw.log" &
  gw_pid=$!
  wait_ready "$work/gw.log"
}

# ab_stop: stops the gateway ab_start started.
ab_stop() {
  kill "$gw_pid"; wait "$gw_pid" 2>/dev/null || true; gw_pid=""
}
