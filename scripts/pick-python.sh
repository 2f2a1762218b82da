#!/usr/bin/env bash
# Print the Python bootstrap makes .venv with: 3.13 where present (pyenv's or on PATH), else 3.12, else 3.11 - never
# a newer one, which the dev lock's tools do not support (on 3.14 immutables builds from source, cfn-lint refuses 3.15;
# D427). None: exit 1, naming the supported versions. tests/infra/test_bootstrap.py.
set -euo pipefail
candidates=()
if command -v pyenv >/dev/null 2>&1; then
  root=$(pyenv root 2>/dev/null || true)
  if [ -n "$root" ] && [ -d "$root/versions" ]; then
    for minor in 13 12 11; do  # the newest patch release of each
      found=$(ls -d "$root"/versions/3."$minor".* 2>/dev/null | sort -V | tail -n 1 || true)
      [ -n "$found" ] && candidates+=("$found/bin/python")
    done
  fi
fi
candidates+=(python3.13 python3.12 python3.11 python3)
best="" best_minor=0
for candidate in "${candidates[@]}"; do
  path=$(command -v "$candidate" 2>/dev/null || true)
  [ -n "$path" ] || continue
  minor=$("$path" -c 'import sys; print(sys.version_info[1] if sys.version_info[0] == 3 else 0)' 2>/dev/null || echo 0)
  if [ "$minor" = 13 ]; then echo "$path"; exit 0; fi
  if [ "$minor" -ge 11 ] && [ "$minor" -le 13 ] && [ "$minor" -gt "$best_minor" ]; then best="$path"; best_minor=$minor; fi
done
if [ -z "$best" ]; then
  echo "bootstrap: no supported Python found: install Python 3.13, 3.12 or 3.11 (newer ones are refused: the dev lock's tools do not support them)" >&2
  exit 1
fi
echo "$best"
