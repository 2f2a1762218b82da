#!/usr/bin/env bash
# Create (or refresh) the project-local virtual environment .venv and install the project into it: first pip itself
# (scripts/pip.txt, hash-checked), then requirements-dev.lock (every distribution the tests, the linters and the build
# backend need, pinned with the sha256 of each file, for any platform and Python 3.11-3.13: ./dev lock makes it,
# D427), hash-checked, then the project itself, editable, with nothing more resolved; what the lock does not name is
# uninstalled.
# Python: 3.13 where present (pyenv's or on PATH), else 3.12, else 3.11; never newer (scripts/pick-python.sh).
set -euo pipefail
cd "$(dirname "$0")/.."

stamp=.venv/.kilo-installed
want=$(cat pyproject.toml requirements-dev.lock scripts/pip.txt | sha256sum | cut -d' ' -f1)
if [ -x .venv/bin/python ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  exit 0
fi
if [ ! -x .venv/bin/python ]; then
  python=$(bash scripts/pick-python.sh)
  echo "bootstrap: creating .venv with $("$python" --version 2>&1)" >&2
  "$python" -m venv .venv
fi
log=.venv/install.log
echo "bootstrap: installing the project and its locked dependencies into .venv (log: $log)" >&2
# A registry download can be cut off mid-file (seen in CI: pip gave up on a wheel after 6 resume attempts). pip is
# told to retry and resume more, and the whole install is tried up to three times, waiting between tries; pip keeps
# what it downloaded in its cache, so a retry fetches only what is missing. --require-hashes: every file installed has
# a hash of the lock, and every dependency a wheel declares must be in the lock (nothing floats). The project goes on
# top with --no-deps (its dependencies are the lock's) and --no-build-isolation (its build backend, setuptools, is
# the lock's too, already installed).
# A .venv made from an older lock keeps what the lock has dropped since (the tests would then pass here on a package a
# fresh clone lacks): every distribution the lock does not name is uninstalled (scripts/extraneous.py).
uninstall_extraneous() {
  local extra
  extra=$(.venv/bin/python scripts/extraneous.py requirements-dev.lock)
  if [ -n "$extra" ]; then
    echo "bootstrap: uninstalling what requirements-dev.lock no longer names: $(echo $extra)" >&2
    # shellcheck disable=SC2086 - one name per word
    .venv/bin/python -m pip uninstall --yes $extra
  fi
}
: >"$log"
installed=no
for attempt in 1 2 3; do
  if { .venv/bin/python -m pip install --retries 10 --timeout 60 --require-hashes --no-deps -r scripts/pip.txt \
      && .venv/bin/python -m pip install --retries 10 --timeout 60 --resume-retries 20 --require-hashes -r requirements-dev.lock \
      && .venv/bin/python -m pip install --no-deps --no-build-isolation --no-index -e . \
      && uninstall_extraneous; } >>"$log" 2>&1; then
    installed=yes
    break
  fi
  if [ "$attempt" -lt 3 ]; then
    echo "bootstrap: install attempt $attempt failed (log: $log); retrying in $((attempt * 15)) s" >&2
    sleep $((attempt * 15))
  fi
done
if [ "$installed" != yes ]; then
  tail -n 40 "$log" >&2
  echo "bootstrap: install failed after 3 attempts, see $log" >&2
  exit 1
fi
echo "$want" > "$stamp"
