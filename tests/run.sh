#!/usr/bin/env bash
# The test command (README): installs the real peers the tests talk to
# (swaks with its TLS modules, openssl, python3, dnsmasq, Postfix,
# promtool from prometheus, HAProxy, nsd, unbound, ldnsutils, Pebble, BIND 9, redis-server, headless
# Chromium; Exim unpacked beside them) from Debian when they are missing, then runs every test in the
# workspace.
set -euo pipefail
cd "$(dirname "$0")/.."

sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
need=()
command -v swaks >/dev/null 2>&1 || need+=(swaks)
perl -MNet::SSLeay -e1 >/dev/null 2>&1 || need+=(libnet-ssleay-perl)
command -v openssl >/dev/null 2>&1 || need+=(openssl)
command -v python3 >/dev/null 2>&1 || need+=(python3)
command -v kill >/dev/null 2>&1 || need+=(procps)
command -v dnsmasq >/dev/null 2>&1 || [ -x /usr/sbin/dnsmasq ] || need+=(dnsmasq-base)
command -v postfix >/dev/null 2>&1 || [ -x /usr/sbin/postfix ] || need+=(postfix)
command -v promtool >/dev/null 2>&1 || need+=(prometheus)
command -v haproxy >/dev/null 2>&1 || [ -x /usr/sbin/haproxy ] || need+=(haproxy)
command -v strace >/dev/null 2>&1 || need+=(strace)
command -v sslscan >/dev/null 2>&1 || need+=(sslscan)
# DANE: a DNSSEC-signed zone (ldns-keygen, ldns-signzone, drill), served by
# nsd and validated by unbound.
command -v ldns-signzone >/dev/null 2>&1 || need+=(ldnsutils)
command -v nsd >/dev/null 2>&1 || [ -x /usr/sbin/nsd ] || need+=(nsd)
command -v unbound >/dev/null 2>&1 || [ -x /usr/sbin/unbound ] || need+=(unbound)
# ACME: Pebble, the Let's Encrypt test server; BIND 9 signing a zone and
# taking DNS UPDATEs for the DANE key rollover, dig as an observer.
command -v pebble >/dev/null 2>&1 || need+=(pebble)
command -v named >/dev/null 2>&1 || [ -x /usr/sbin/named ] || need+=(bind9)
command -v dig >/dev/null 2>&1 || need+=(bind9-dnsutils)
# The fleet's store.
command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
# TLS reports are checked against tests/schemas/tlsrpt.json.
python3 -c 'import jsonschema' >/dev/null 2>&1 || need+=(python3-jsonschema)
# The Debian package's unit, checked by systemd-analyze verify.
command -v systemd-analyze >/dev/null 2>&1 || need+=(systemd)
command -v adduser >/dev/null 2>&1 || [ -x /usr/sbin/adduser ] || need+=(adduser)
# The generated man pages, rendered by man.
command -v man >/dev/null 2>&1 || need+=(man-db)
# The status page, loaded and screenshotted in headless Chromium.
command -v chromium-headless-shell >/dev/null 2>&1 || need+=(chromium-headless-shell)
# Exim as a sending peer that uses BDAT (tests/chunking.rs). Debian's
# exim4 conflicts with Postfix as the system MTA, so its daemon package is
# unpacked beside the suite (below) instead of installed; its libraries
# are installed here with the rest.
exim_root=${SEALGATE_EXIM_ROOT:-/opt/sealgate-test-peers/exim4}
[ -x "$exim_root/usr/sbin/exim4" ] || need+=(libgnutls-dane0 libidn12 libnsl2 libdb5.3 libpcre2-8-0)

if [ ${#need[@]} -gt 0 ]; then
  echo "tests/run.sh: installing ${need[*]}"
  # Postfix runs as private test instances only: no system configuration.
  echo "postfix postfix/main_mailer_type select No configuration" | $sudo debconf-set-selections
  $sudo apt-get update -qq
  # No package may start its service (bind9 would start a system named):
  # the tests start every peer they need themselves.
  policy=""
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' | $sudo tee /usr/sbin/policy-rc.d >/dev/null
    $sudo chmod +x /usr/sbin/policy-rc.d
    policy=/usr/sbin/policy-rc.d
  fi
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${need[@]}"
  [ -z "$policy" ] || $sudo rm -f "$policy"
fi

# Exim's daemon package, unpacked (the package lists were updated above,
# since its libraries were needed), and the Debian-exim user its binary
# names.
if [ ! -x "$exim_root/usr/sbin/exim4" ]; then
  echo "tests/run.sh: unpacking exim4-daemon-light into $exim_root"
  dl=$(mktemp -d)
  (cd "$dl" && apt-get download -qq exim4-daemon-light 2>/dev/null)
  $sudo mkdir -p "$exim_root"
  $sudo dpkg -x "$dl"/exim4-daemon-light_*.deb "$exim_root"
  rm -rf "$dl"
fi
getent passwd Debian-exim >/dev/null || $sudo useradd --system --no-create-home --shell /usr/sbin/nologin Debian-exim
export SEALGATE_EXIM="$exim_root/usr/sbin/exim4"

# Every test starts its peers and stops them, in temporary directories it
# removes: after the suite, no process it started may survive and no
# temporary directory it made may remain. Only what this suite started
# counts: a process carrying this run's mark in its environment (every
# child of the tests inherits it), or one working in, or started with, a
# test directory (sealgate-it-*: Postfix's master cleans its environment
# but runs in its queue directory there). Other jobs' processes and /tmp
# entries are left alone, as is what ran before the suite.
peers='(^|/)(sealgate|sealgate-load|master|smtpd|smtp-sink|dnsmasq|nsd|unbound|haproxy|openssl|swaks|exim4|pebble|named|redis-server|chromium-headless-shell)( |$)|policy_server.py'
before=$(pgrep -f -d ' ' "$peers" || true)
marker=$(mktemp /tmp/sealgate-run-marker.XXXXXX)
SEALGATE_SUITE_RUN=$(basename "$marker")
export SEALGATE_SUITE_RUN
status=0
cargo test --workspace "$@" || status=$?
ours() {
  tr '\0' '\n' < "/proc/$1/environ" 2>/dev/null | grep -qx "SEALGATE_SUITE_RUN=$SEALGATE_SUITE_RUN" && return 0
  case "$(readlink "/proc/$1/cwd" 2>/dev/null)" in */sealgate-it-*) return 0 ;; esac
  tr '\0' ' ' < "/proc/$1/cmdline" 2>/dev/null | grep -q 'sealgate-it-'
}
left=()
for pid in $(pgrep -f "$peers" || true); do
  case " $before " in *" $pid "*) continue ;; esac
  [ "$pid" = "$$" ] && continue
  ours "$pid" || continue
  left+=("$pid: $(tr '\0' ' ' < "/proc/$pid/cmdline" 2>/dev/null)")
done
dirs=$(find /tmp -maxdepth 1 -newer "$marker" \( -name 'sealgate-it-*' -o -name 'sealgate-deb.*' \) -print 2>/dev/null || true)
rm -f "$marker"
if [ ${#left[@]} -gt 0 ]; then
  echo "tests/run.sh: processes the tests started are still running:" >&2
  printf '  %s\n' "${left[@]}" >&2
  status=1
fi
if [ -n "$dirs" ]; then
  echo "tests/run.sh: temporary directories the tests left behind:" >&2
  echo "$dirs" | sed 's/^/  /' >&2
  status=1
fi
exit $status
