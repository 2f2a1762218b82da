#!/usr/bin/env bash
# The browser tests' one system dependency: Debian's chromium at /usr/bin/chromium (Playwright drives it; the Python
# package comes with .venv). Installed here when missing, as root (CI and the dev machines run as root), once.
set -euo pipefail
if [ -x /usr/bin/chromium ]; then
  exit 0
fi
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
  echo "browser: /usr/bin/chromium is missing; install Debian's chromium package (apt-get install chromium)" >&2
  exit 1
fi
echo "browser: installing Debian's chromium for the dashboard's browser tests (apt-get, log: /tmp/kilo-chromium.log)" >&2
if ! { apt-get -o Acquire::Retries=5 update && DEBIAN_FRONTEND=noninteractive apt-get -o Acquire::Retries=5 install -y chromium; } \
    >/tmp/kilo-chromium.log 2>&1; then
  tail -n 20 /tmp/kilo-chromium.log >&2
  echo "browser: installing chromium failed, see /tmp/kilo-chromium.log" >&2
  exit 1
fi
