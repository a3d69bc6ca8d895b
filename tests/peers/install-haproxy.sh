#!/usr/bin/env bash
# Installs Debian's HAProxy for the cluster tests (TCP mode with send-proxy-v2 in front
# of two poplar nodes), without letting the package start a system service.
# Idempotent; the tests run their own instance with a config in a temporary folder.
set -euo pipefail
if command -v haproxy >/dev/null; then
  exit 0
fi
if [ ! -x /usr/sbin/policy-rc.d ]; then
  # Debian's documented way to keep maintainer scripts from starting services.
  printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
  chmod +x /usr/sbin/policy-rc.d
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends haproxy >/dev/null
