#!/usr/bin/env bash
# Installs the POP3 clients people run, as Debian ships them, for the client tests
# (tests/test_client_*.py): fetchmail, getmail6, mutt and neomutt (both built with GNU
# SASL), and Perl's Net::POP3 (part of perl) with Authen::SASL and IO::Socket::SSL.
# Idempotent; needs root (apt-get) only when something is missing. No service is
# started (fetchmail's package ships an init script, disabled by default).
set -euo pipefail
need=()
command -v fetchmail >/dev/null || need+=(fetchmail)
command -v getmail >/dev/null || need+=(getmail6)
command -v mutt >/dev/null || need+=(mutt)
command -v neomutt >/dev/null || need+=(neomutt)
perl -MAuthen::SASL -e1 2>/dev/null || need+=(libauthen-sasl-perl)
perl -MIO::Socket::SSL -e1 2>/dev/null || need+=(libio-socket-ssl-perl)
perl -MNet::POP3 -e1 2>/dev/null || need+=(perl)
if [ ${#need[@]} -eq 0 ]; then
  exit 0
fi
"$(dirname "$0")/apt-install.sh" "${need[@]}"
