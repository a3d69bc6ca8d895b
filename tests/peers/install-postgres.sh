#!/usr/bin/env bash
# Installs Debian's PostgreSQL server for the cluster tests (the PostgreSQL directory
# backend, `poplar directory copy`, the two-node tests), without letting the package
# start a system cluster. Idempotent; the tests start private clusters on loopback with
# tests/peers/pg-cluster.sh.
set -euo pipefail
if ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 && id postgres >/dev/null 2>&1; then
  exit 0
fi
# postgresql-common would create and start a "main" cluster; the tests never use it.
mkdir -p /etc/postgresql-common/createcluster.d
echo 'create_main_cluster = false' > /etc/postgresql-common/createcluster.d/poplar-tests.conf
"$(dirname "$0")/apt-install.sh" postgresql
