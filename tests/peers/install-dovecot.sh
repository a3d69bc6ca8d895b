#!/usr/bin/env bash
# Installs Debian's Dovecot (core + POP3) for the migration tests, without letting the
# package start a system service. Idempotent; the tests start their own instances on
# loopback with configs in temporary folders.
set -euo pipefail
if command -v dovecot >/dev/null && [ -x /usr/lib/dovecot/pop3 ]; then
  exit 0
fi
"$(dirname "$0")/apt-install.sh" dovecot-core dovecot-pop3d
