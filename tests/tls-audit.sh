#!/usr/bin/env bash
# Full TLS audit of the STARTTLS listener with testssl (Debian package
# testssl.sh, about a minute). Starts a gateway on its default TLS settings
# (generated certificate) on a free loopback port, runs
# `testssl -t smtp`, prints the findings that are not OK and the counts by
# severity. docs/security.md quotes its output.
#
#   tests/tls-audit.sh [--cert FILE --key FILE]   (default: generated)
set -euo pipefail
cd "$(dirname "$0")/.."
cert="" key=""
while [ $# -gt 0 ]; do
  case $1 in
    --cert) cert=$(realpath "$2"); shift 2 ;;
    --key) key=$(realpath "$2"); shift 2 ;;
    *) echo "usage: $0 [--cert FILE --key FILE]" >&2; exit 2 ;;
  esac
done
if ! command -v testssl >/dev/null; then
  sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends testssl.sh bsdextrautils >/dev/null
fi
cargo build -q --bin sealgate
gw=$(pwd)/target/debug/sealgate
work=$(mktemp -d)
gw_pid=""
cleanup() { [ -n "$gw_pid" ] && kill "$gw_pid" 2>/dev/null; wait 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT
. loadtest/lib.sh
port=$(free_port)
certs='[ { cert = "tls/server.crt", key = "tls/server.key" } ]'
[ -n "$cert" ] && certs="[ { cert = \"$cert\", key = \"$key\" } ]"
gateway_config "$port" "*" "[127.0.0.1]:1" 1 "$certs" > "$work/sealgate.toml"
"$gw" run -c "$work/sealgate.toml" 2>"$work/gw.log" &
gw_pid=$!
wait_ready "$work/gw.log" || exit 1
echo "testssl $(testssl --version 2>/dev/null | grep -o 'testssl.sh *[0-9][^ ]*' | head -1) against sealgate $("$gw" --version 2>/dev/null || true) on 127.0.0.1:$port" >&2
testssl -t smtp --quiet --color 0 --warnings off --jsonfile "$work/report.json" "127.0.0.1:$port" >"$work/report.txt" 2>&1 || true
sed -n '/Testing protocols/,/Testing server defaults/p' "$work/report.txt"
sed -n '/Testing vulnerabilities/,/Testing .* ciphers/p' "$work/report.txt"
python3 - "$work/report.json" <<'PY'
import json, sys, collections
findings = json.load(open(sys.argv[1]))
print("severity counts:", dict(collections.Counter(f["severity"] for f in findings)))
print("findings not OK/INFO:")
for f in findings:
    if f["severity"] not in ("OK", "INFO"):
        print(f"  {f['severity']:8} {f['id']}: {f['finding']}")
PY
