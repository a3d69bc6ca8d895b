#!/usr/bin/env bash
# Installs Debian's mmdebstrap, which makes the throwaway Debian root that
# tests/test_package.py installs, runs and purges the Poplar package in (with
# debian-archive-keyring to check the archive it downloads from). Idempotent; needs
# root (apt-get) only when mmdebstrap is missing.
set -euo pipefail
if command -v mmdebstrap >/dev/null && [ -e /usr/share/keyrings/debian-archive-keyring.gpg ]; then
  exit 0
fi
"$(dirname "$0")/apt-install.sh" mmdebstrap debian-archive-keyring
