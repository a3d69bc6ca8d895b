#!/usr/bin/env bash
# Unpacks Debian's crowdsec package (the engine, cscli, and the hub snapshot Debian ships
# with it) into ${POPLAR_PEERS_DIR:-/var/cache/poplar-peers}/crowdsec, for
# tests/test_fail2ban.py, which runs the engine in replay mode on an audit log with
# contrib/crowdsec. Nothing is installed: no service, no hub download, no registration
# with CrowdSec's central API. Idempotent; needs apt-get only when the tree is missing.
set -euo pipefail
dest="${POPLAR_PEERS_DIR:-/var/cache/poplar-peers}/crowdsec"
if [ -x "$dest/usr/bin/crowdsec" ]; then
  exit 0
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
chmod 755 "$work" # apt-get download writes as _apt where it can
cd "$work"
if ! apt-get download -qq crowdsec 2>/dev/null; then
  apt-get update -qq
  apt-get download -qq crowdsec
fi
mkdir -p "$(dirname "$dest")"
dpkg-deb -x crowdsec_*.deb "$work/tree"
rm -rf "$dest"
mv "$work/tree" "$dest"
