#!/usr/bin/env bash
# Installs Debian's Dovecot (core + POP3) for the migration tests, without letting the
# package start a system service. Idempotent; the tests start their own instances on
# loopback with configs in temporary folders.
set -euo pipefail
if command -v dovecot >/dev/null && [ -x /usr/lib/dovecot/pop3 ]; then
  exit 0
fi
if [ ! -x /usr/sbin/policy-rc.d ]; then
  # Debian's documented way to keep maintainer scripts from starting services.
  printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
  chmod +x /usr/sbin/policy-rc.d
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends dovecot-core dovecot-pop3d >/dev/null
