#!/usr/bin/env bash
# Installs Debian's Chromium, the real browser tests/test_web.py drives headless through
# Playwright (the Python package from PyPI, tests/requirements.txt; it uses this browser
# through executable_path and downloads none of its own). Idempotent; needs root
# (apt-get) only when chromium is missing.
set -euo pipefail
if command -v chromium >/dev/null; then
  exit 0
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends chromium fonts-dejavu-core >/dev/null
