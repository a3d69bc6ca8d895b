#!/usr/bin/env bash
# Installs Debian's fail2ban, whose fail2ban-regex tests/test_fail2ban.py runs against
# contrib/fail2ban/filter.d/poplar.conf, without letting the package start its service
# (the tests only run fail2ban-regex; no jail, no firewall change). Idempotent; needs
# root (apt-get) only when fail2ban-regex is missing.
set -euo pipefail
if command -v fail2ban-regex >/dev/null; then
  exit 0
fi
"$(dirname "$0")/apt-install.sh" fail2ban
