#!/usr/bin/env bash
# apt-install.sh PACKAGE...: installs Debian packages for the tests, quietly, without
# recommends, and without letting maintainer scripts start system services (the tests
# start their own instances). Shared by the install-*.sh scripts; needs root.
set -euo pipefail
if [ ! -x /usr/sbin/policy-rc.d ]; then
  # Debian's documented way to keep maintainer scripts from starting services.
  printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
  chmod +x /usr/sbin/policy-rc.d
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "$@" >/dev/null
