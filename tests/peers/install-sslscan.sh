#!/usr/bin/env bash
# Installs Debian's sslscan, the TLS scanner behind tests/test_tls_scan.py and
# scripts/tls-scan. Idempotent; needs root (apt-get) only when sslscan is missing.
set -euo pipefail
if command -v sslscan >/dev/null; then
  exit 0
fi
"$(dirname "$0")/apt-install.sh" sslscan
