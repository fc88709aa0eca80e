#!/usr/bin/env bash
# Runs identical loads against a private Postfix instance and against
# sealgate on this host, interleaved, and prints one table of sessions/s
# and server CPU per session with the ratios (PERF-2, product.md §5).
#
#   loadtest/compare-postfix.sh [--rounds N] [--duration 5s] [--concurrency 16]
#                               [--modes "starttls message"] [--groups X25519]
#                               [--next-hop clear|tls]
#
# --next-hop tls: both legs STARTTLS, the usual gateway topology (Internet
# -> gateway -> an internal server that requires TLS). The next hop is
# sealgate-load's sink with a certificate (smtp-sink has no TLS); Postfix
# relays with smtp_tls_security_level = encrypt and is measured twice,
# without and with smtp_tls_connection_reuse (its tlsproxy keeps the TLS
# connections: "postfix-reuse"); sealgate's route has a profile with
# mandatory_tls and its connection cache on (the default).
#
# --groups: the key exchange groups the load generator offers (default
# X25519, which both servers speak: the like-for-like figure; with
# "X25519MLKEM768,X25519" sealgate negotiates the hybrid, Debian's
# OpenSSL 3.0 Postfix X25519).
#
# Both servers: loopback, the same ECDSA P-256 certificate, opportunistic
# STARTTLS, fsync on (Postfix's cleanup syncs every queue file; sealgate's
# journal syncs every batch of messages before any of them is answered),
# reverse lookups off, logs at their defaults; both relay everything to
# Postfix's `smtp-sink`. Modes: starttls (no message), message (2 KB over
# STARTTLS), plain (2 KB, no TLS), message-100k (100 KB over STARTTLS).
# Server CPU is utime+stime of each server's whole process tree from /proc,
# measured by sealgate-load --server-pid. Everything started here is
# stopped on exit.
set -euo pipefail

rounds=3
duration=5s
concurrency=16
modes="starttls message plain message-100k"
groups=X25519
next_hop=clear
while [ $# -gt 0 ]; do
  case "$1" in
    --rounds) rounds=$2; shift 2 ;;
    --duration) duration=$2; shift 2 ;;
    --concurrency) concurrency=$2; shift 2 ;;
    --modes) modes=$2; shift 2 ;;
    --groups) groups=$2; shift 2 ;;
    --next-hop) next_hop=$2; shift 2 ;;
    *) echo "usage: $0 [--rounds N] [--duration 5s] [--concurrency 16] [--modes M] [--groups G] [--next-hop clear|tls]" >&2; exit 2 ;;
  esac
done

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
if ! command -v postfix >/dev/null 2>&1 || ! command -v smtp-sink >/dev/null 2>&1; then
  echo "installing postfix (no system configuration)" >&2
  echo "postfix postfix/main_mailer_type select No configuration" | $sudo debconf-set-selections
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends postfix >/dev/null
fi
command -v python3 >/dev/null || { echo "python3 is needed for the table" >&2; exit 1; }

cargo build --release --workspace -q
gw=$root/target/release/sealgate
load=$root/target/release/sealgate-load

work=$(mktemp -d /tmp/sealgate-compare.XXXXXX)
chmod 755 "$work"
pids=()
cleanup() {
  set +e
  [ -f "$work/pf/main.cf" ] && $sudo postfix -c "$work/pf" stop >/dev/null 2>&1
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null; wait "$p" 2>/dev/null; done
  $sudo rm -rf "$work"
}
trap cleanup EXIT

. "$root/loadtest/lib.sh"
sg_port=$(free_port); pf_port=$(free_port); sink_port=$(free_port)

# --- the downstream: Postfix's own smtp-sink, or a STARTTLS sink ------------
if [ "$next_hop" = tls ]; then
  load_sink "$sink_port" "$work/sink.log" tls
  pf_smtp_tls="smtp_tls_security_level = encrypt"
  servers="postfix postfix-reuse sealgate"
else
  smtp-sink -u postfix -c "127.0.0.1:$sink_port" 1000 >/dev/null 2>&1 &
  pids+=($!)
  pf_smtp_tls="smtp_tls_security_level = none"
  servers="postfix sealgate"
fi

# --- sealgate ----------------------------------------------------------------
mkdir -p "$work/sg"
gateway_config "$sg_port" "example.com" "[127.0.0.1]:$sink_port" > "$work/sg/sealgate.toml"
if [ "$next_hop" = tls ]; then
  # The route's profile makes TLS to the next hop mandatory.
  printf 'profile = "next-hop"\n[[profile]]\nname = "next-hop"\n[profile.client]\nmandatory_tls = true\n' >> "$work/sg/sealgate.toml"
fi
"$gw" run -c "$work/sg/sealgate.toml" 2>"$work/sg/sealgate.log" &
sg_pid=$!
pids+=($sg_pid)
wait_ready "$work/sg/sealgate.log" || exit 1

# --- Postfix, private instance -----------------------------------------------
pf=$work/pf
mkdir -p "$pf" "$work/pfqueue" "$work/pfdata"
chown postfix "$work/pfdata"
cp "$work/sg/tls/server.crt" "$work/sg/tls/server.key" "$pf/"
cat > "$pf/main.cf" <<CF
compatibility_level = 3.6
queue_directory = $work/pfqueue
data_directory = $work/pfdata
mail_owner = postfix
setgid_group = postdrop
myhostname = mx.test
mydomain = test
myorigin = \$myhostname
mydestination =
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
relay_domains = example.com
relayhost = [127.0.0.1]:$sink_port
smtpd_recipient_restrictions = permit_mynetworks, reject_unauth_destination
smtpd_peername_lookup = no
smtpd_client_connection_count_limit = 0
smtpd_client_connection_rate_limit = 0
smtpd_tls_security_level = may
smtpd_tls_chain_files = $pf/server.key, $pf/server.crt
$pf_smtp_tls
alias_maps =
alias_database =
biff = no
default_process_limit = 200
maillog_file = $work/postfix.log
maillog_file_prefixes = $work
CF
cat > "$pf/master.cf" <<MASTER
127.0.0.1:$pf_port inet n - n - - smtpd
pickup    unix  n - n 60    1 pickup
cleanup   unix  n - n -     0 cleanup
qmgr      unix  n - n 300   1 qmgr
tlsmgr    unix  - - n 1000? 1 tlsmgr
rewrite   unix  - - n -     - trivial-rewrite
bounce    unix  - - n -     0 bounce
defer     unix  - - n -     0 bounce
trace     unix  - - n -     0 bounce
verify    unix  - - n -     1 verify
flush     unix  n - n 1000? 0 flush
proxymap  unix  - - n -     - proxymap
smtp      unix  - - n -     - smtp
relay     unix  - - n -     - smtp
showq     unix  n - n -     - showq
error     unix  - - n -     - error
retry     unix  - - n -     - error
discard   unix  - - n -     - discard
anvil     unix  - - n -     1 anvil
scache    unix  - - n -     1 scache
postlog   unix-dgram n - n - 1 postlogd
tlsproxy  unix  - - n -     0 tlsproxy
MASTER
# postfix reports configuration errors only to a terminal or syslog.
$sudo postfix -c "$pf" start >/dev/null 2>&1 || {
  echo "postfix failed to start:" >&2
  script -qc "postfix -c $pf check" /dev/null >&2 || true
  cat "$work/postfix.log" >&2 2>/dev/null
  exit 1
}
for _ in $(seq 100); do [ -s "$work/pfqueue/pid/master.pid" ] && break; sleep 0.1; done
pf_pid=$(tr -d ' ' < "$work/pfqueue/pid/master.pid")
for _ in $(seq 100); do python3 -c "import socket; socket.create_connection(('127.0.0.1',$pf_port),1).close()" 2>/dev/null && break; sleep 0.1; done
postfix_version=$(postconf -c "$pf" -h mail_version 2>/dev/null || echo "?")

echo "sealgate pid $sg_pid on :$sg_port, Postfix $postfix_version master pid $pf_pid on :$pf_port, smtp-sink on :$sink_port" >&2
echo "groups offered: $groups" >&2
echo "$rounds rounds × {$modes} × {${servers// /, }}, $duration each, concurrency $concurrency, next hop $next_hop" >&2

results=$work/results.jsonl
: > "$results"
for round in $(seq "$rounds"); do
  for mode in $modes; do
    case $mode in
      message-100k) run_mode=message; size=102400 ;;
      *) run_mode=$mode; size=2048 ;;
    esac
    for server in $servers; do
      case $server in
        postfix|postfix-reuse)
          port=$pf_port; pid=$pf_pid
          if [ "$next_hop" = tls ]; then
            reuse=no; [ $server = postfix-reuse ] && reuse=yes
            $sudo postconf -c "$pf" -e "smtp_tls_connection_reuse = $reuse"
            $sudo postfix -c "$pf" reload >/dev/null 2>&1
          fi ;;
        *) port=$sg_port; pid=$sg_pid ;;
      esac
      out=$("$load" --target "127.0.0.1:$port" --mode $run_mode --duration "$duration" \
             --concurrency "$concurrency" --size $size --groups "$groups" --server-pid "$pid" --json) || true
      python3 - "$server" "$mode" "$round" "$out" >> "$results" <<'PY'
import json, sys
server, mode, rnd, out = sys.argv[1:5]
r = json.loads(out)
print(json.dumps({"server": server, "mode": mode, "round": int(rnd),
                  "sessions_per_s": r["sessions_per_s"], "messages_per_s": r["messages_per_s"],
                  "cpu_us": r["server_cpu"]["server_us_per_session"],
                  "user_us": r["server_cpu"]["server_user_us_per_session"],
                  "sys_us": r["server_cpu"]["server_system_us_per_session"],
                  "failed": r["sessions_failed"],
                  "errors": [e["kind"] + ": " + e["first"] for e in r["errors"]]}))
PY
      echo "round $round $mode $server done" >&2
    done
  done
done

python3 - "$results" "$postfix_version" "$modes" "$servers" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
def med(server, mode, key):
    return statistics.median(r[key] for r in rows if r["server"] == server and r["mode"] == mode)
modes = sys.argv[3].split()
postfixes = [s for s in sys.argv[4].split() if s != "sealgate"]
for pf in postfixes:
    name = "Postfix" if pf == "postfix" else "Postfix (smtp_tls_connection_reuse)"
    print(f"| mode | {name} {sys.argv[2]} sessions/s | sealgate sessions/s | ratio | {name} CPU µs/session | sealgate CPU µs/session | ratio |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for mode in modes:
        ps, ss = med(pf, mode, "sessions_per_s"), med("sealgate", mode, "sessions_per_s")
        pc, sc = med(pf, mode, "cpu_us"), med("sealgate", mode, "cpu_us")
        print(f"| {mode} | {ps:.0f} | {ss:.0f} | {ss/ps:.2f}× | {pc:.0f} | {sc:.0f} | {pc/sc:.2f}× |")
    print()
failed = [r for r in rows if r["failed"]]
for r in failed:
    print(f"\n{r['server']} {r['mode']} round {r['round']}: {r['failed']} failed sessions: {r['errors']}")
print("\nserver CPU split, µs/session (user + system):")
for mode in modes:
    parts = ", ".join(f"{s} {med(s, mode, 'user_us'):.0f} + {med(s, mode, 'sys_us'):.0f}" for s in postfixes + ["sealgate"])
    print(f"  {mode}: {parts}")
print(f"\n(medians of {max(r['round'] for r in rows)} rounds; CPU ratio = Postfix / sealgate, higher is better for sealgate)")
PY
