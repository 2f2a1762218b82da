"""The distributions installed in this environment that the lock does not name (a package the lock has dropped since
the environment was made): printed one per line, for scripts/bootstrap.sh to uninstall, so a stale .venv runs what a
fresh one would (D427, amended). Standard library only (it runs in the venv, before anything else is trusted).

Usage: python scripts/extraneous.py LOCK|- [SITE_DIR...] (site dirs: where to look; default: this interpreter's path).
Never named: the project itself and pip (installed apart from the lock: scripts/pip.txt)."""

from __future__ import annotations

import re
import sys
from importlib.metadata import distributions

KEPT = {"kilo-billing", "pip"}
_ENTRY = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)(?:\[[^\]]*\])?\s*==", re.MULTILINE)


def normal(name: str) -> str:
    """PEP 503's normal form: case and runs of ``-_.`` do not tell names apart."""
    return re.sub(r"[-_.]+", "-", name).lower()


def extraneous(lock_text: str, site: list[str] | None = None) -> list[str]:
    locked = {normal(name) for name in _ENTRY.findall(lock_text)}
    found = distributions(path=site) if site else distributions()
    installed = {normal(dist.metadata["Name"]) for dist in found if dist.metadata["Name"]}
    return sorted(installed - locked - KEPT)


if __name__ == "__main__":
    text = sys.stdin.read() if sys.argv[1] == "-" else open(sys.argv[1], encoding="utf-8").read()  # noqa: SIM115
    print("\n".join(extraneous(text, sys.argv[2:] or None)))
