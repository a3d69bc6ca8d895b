#!/usr/bin/env bash
# Installs Debian's HAProxy for the cluster tests (TCP mode with send-proxy-v2 in front
# of two poplar nodes), without letting the package start a system service.
# Idempotent; the tests run their own instance with a config in a temporary folder.
set -euo pipefail
if command -v haproxy >/dev/null; then
  exit 0
fi
"$(dirname "$0")/apt-install.sh" haproxy
