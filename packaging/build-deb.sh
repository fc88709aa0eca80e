#!/usr/bin/env bash
# Builds the Debian package of sealgate with dpkg-deb: the binary, the
# systemd unit from config/ (run as the `sealgate` system user), a
# commented configuration in /etc/sealgate/, the spool in
# /var/spool/sealgate, man pages and shell completions generated from the
# command line, and the docs. Logs go to standard error, i.e. the journal.
#
#   packaging/build-deb.sh [--binary PATH] [--out DIR]
#
# Without --binary it builds the release binary first.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
bin="" out="$root/target/debian"
while [ $# -gt 0 ]; do
  case "$1" in
    --binary) bin=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    *) echo "usage: $0 [--binary PATH] [--out DIR]" >&2; exit 2 ;;
  esac
done
if [ -z "$bin" ]; then
  cargo build --release -q --manifest-path "$root/Cargo.toml" --bin sealgate
  bin=$root/target/release/sealgate
fi
version=$(sed -n 's/^version = "\(.*\)"/\1/p' "$root/Cargo.toml" | head -1)
arch=$(dpkg --print-architecture)
stage=$(mktemp -d "${TMPDIR:-/tmp}/sealgate-deb.XXXXXX")
trap 'rm -rf "$stage"' EXIT
pkg=$stage/sealgate

# Stripped: the debug information (most of the release build's size)
# stays in the build tree.
install -D -s -m 755 "$bin" "$pkg/usr/bin/sealgate"
install -D -m 644 "$root/packaging/sealgate.toml" "$pkg/etc/sealgate/sealgate.toml"
# The unit from config/, for the packaged paths and user.
install -d "$pkg/lib/systemd/system"
sed -e 's|/usr/local/bin/sealgate|/usr/bin/sealgate|g' \
    -e 's|^ExecReload=.*|ExecReload=/usr/bin/sealgate reload -c /etc/sealgate/sealgate.toml|' \
    -e 's|^ReadWritePaths=.*|ReadWritePaths=/var/spool/sealgate /etc/sealgate/tls|' \
    -e 's|^\[Service\]$|[Service]\nUser=sealgate\nGroup=sealgate|' \
    "$root/config/sealgate.service" > "$pkg/lib/systemd/system/sealgate.service"
"$bin" generate-docs --out "$stage/generated"
install -d "$pkg/usr/share/man/man1"
for page in "$stage"/generated/man/*.1; do
  gzip -9n < "$page" > "$pkg/usr/share/man/man1/$(basename "$page").gz"
done
install -D -m 644 "$stage/generated/completions/sealgate.bash" "$pkg/usr/share/bash-completion/completions/sealgate"
install -D -m 644 "$stage/generated/completions/_sealgate" "$pkg/usr/share/zsh/vendor-completions/_sealgate"
install -D -m 644 "$stage/generated/completions/sealgate.fish" "$pkg/usr/share/fish/vendor_completions.d/sealgate.fish"
install -d "$pkg/usr/share/doc/sealgate"
install -m 644 "$root"/docs/*.md "$root/README.md" "$pkg/usr/share/doc/sealgate/"
install -d -m 755 "$pkg/DEBIAN"
echo /etc/sealgate/sealgate.toml > "$pkg/DEBIAN/conffiles"
size=$(du -sk "$pkg" | cut -f1)
cat > "$pkg/DEBIAN/control" <<CONTROL
Package: sealgate
Version: $version
Architecture: $arch
Maintainer: sealgate developers <sealgate@localhost>
Installed-Size: $size
Depends: adduser, libc6
Section: mail
Priority: optional
Description: secure email gateway: an SMTP relay that enforces TLS policy per partner
 sealgate relays mail between an organisation's mail servers and the
 Internet and enforces TLS policy per partner: opportunistic and mandatory
 STARTTLS, certificate verification, client certificates, DANE, MTA-STS,
 REQUIRETLS and TLS reporting, with per-core event loops.
CONTROL
cat > "$pkg/DEBIAN/postinst" <<'SCRIPT'
#!/bin/sh
set -e
if [ "$1" = configure ]; then
  if ! getent passwd sealgate >/dev/null; then
    adduser --system --group --quiet --home /var/spool/sealgate --no-create-home sealgate
  fi
  install -d -m 750 -o sealgate -g sealgate /var/spool/sealgate
  install -d -m 750 -o sealgate -g sealgate /etc/sealgate/tls
  if [ -d /run/systemd/system ]; then
    systemctl daemon-reload || true
  fi
  echo "sealgate: edit /etc/sealgate/sealgate.toml (accept_domains, certificates), then: systemctl enable --now sealgate"
fi
exit 0
SCRIPT
cat > "$pkg/DEBIAN/prerm" <<'SCRIPT'
#!/bin/sh
set -e
if [ -d /run/systemd/system ] && [ "$1" = remove ]; then
  systemctl stop sealgate.service || true
fi
exit 0
SCRIPT
cat > "$pkg/DEBIAN/postrm" <<'SCRIPT'
#!/bin/sh
set -e
if [ "$1" = purge ]; then
  # Purge removes everything the package made, the spool included, as
  # Postfix's does (`apt remove` keeps it, and the configuration).
  rm -rf /etc/sealgate/tls /var/spool/sealgate
  if getent passwd sealgate >/dev/null; then
    # deluser warns that it cannot clean crontabs without cron: the
    # system user never had one.
    deluser --system --quiet sealgate 2>/dev/null || true
  fi
  if [ -d /run/systemd/system ]; then
    systemctl daemon-reload || true
  fi
fi
exit 0
SCRIPT
chmod 755 "$pkg/DEBIAN/postinst" "$pkg/DEBIAN/prerm" "$pkg/DEBIAN/postrm"
mkdir -p "$out"
deb=$out/sealgate_${version}_${arch}.deb
dpkg-deb --root-owner-group --build "$pkg" "$deb" >/dev/null
echo "$deb"
