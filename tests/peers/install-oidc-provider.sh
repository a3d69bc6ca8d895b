#!/usr/bin/env bash
# Installs the OpenID provider behind tests/test_oauth.py: panva's oidc-provider (the
# OpenID-certified Node.js implementation) from the npm registry, at the version pinned in
# tests/peers/oidc/package-lock.json, into tests/peers/oidc/node_modules (ignored by git).
# Needs Node.js and npm; installs Debian's when they are missing (root). Idempotent.
set -euo pipefail
cd "$(dirname "$0")/oidc"
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends nodejs npm >/dev/null
fi
if [ -f node_modules/oidc-provider/package.json ] \
   && node -e 'const l=require("./package-lock.json");const i=require("./node_modules/oidc-provider/package.json");process.exit(l.packages["node_modules/oidc-provider"].version===i.version?0:1)'; then
  exit 0
fi
npm ci --no-audit --no-fund --loglevel=error
