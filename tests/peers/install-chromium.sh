#!/usr/bin/env bash
# Installs Debian's Chromium, the real browser tests/test_web.py drives headless through
# Playwright (the Python package from PyPI, tests/requirements.txt; it uses this browser
# through executable_path and downloads none of its own). Idempotent; needs root
# (apt-get) only when chromium is missing.
set -euo pipefail
if command -v chromium >/dev/null; then
  exit 0
fi
"$(dirname "$0")/apt-install.sh" chromium fonts-dejavu-core
