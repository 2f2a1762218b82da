"""bootstrap's choice of Python (scripts/pick-python.sh): 3.13, else 3.12, else 3.11; never a newer one (the dev lock's
tools do not install there: immutables builds from source on 3.14, cfn-lint refuses 3.15). Fake interpreters on an
otherwise empty PATH, each printing its minor version."""

from __future__ import annotations

import re
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _pick(tmp_path: Path, minors: dict[str, int]) -> subprocess.CompletedProcess[str]:
    for name, minor in minors.items():
        fake = tmp_path / name
        fake.write_text(f"#!/bin/sh\necho {minor}\n")
        fake.chmod(0o755)
    return subprocess.run(
        ["/bin/bash", str(ROOT / "scripts/pick-python.sh")],
        env={"PATH": str(tmp_path)},
        capture_output=True,
        text=True,
        check=False,
    )


def test_given_python3_is_3_14_and_a_3_12_is_present_then_3_12_is_picked(tmp_path: Path) -> None:
    picked = _pick(tmp_path, {"python3": 14, "python3.14": 14, "python3.12": 12, "python3.11": 11})
    assert (picked.returncode, picked.stdout.strip()) == (0, str(tmp_path / "python3.12"))


def test_given_3_13_present_then_it_is_picked(tmp_path: Path) -> None:
    picked = _pick(tmp_path, {"python3": 15, "python3.11": 11, "python3.13": 13})
    assert (picked.returncode, picked.stdout.strip()) == (0, str(tmp_path / "python3.13"))


def test_given_only_newer_or_older_pythons_then_bootstrap_refuses_naming_the_supported_ones(tmp_path: Path) -> None:
    picked = _pick(tmp_path, {"python3": 14, "python3.15": 15, "python3.10": 10})
    assert picked.returncode == 1
    assert picked.stdout == ""
    assert "3.13, 3.12 or 3.11" in picked.stderr


# --- what bootstrap installs: pip at its pin, and nothing the lock does not name (D427, amended) ---------------------
def _extraneous(lock: str, site: Path) -> list[str]:
    done = subprocess.run(
        [sys.executable, str(ROOT / "scripts/extraneous.py"), "-", str(site)],
        input=lock,
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stdout.split()


def _installed(site: Path, *names: str) -> None:
    for name in names:
        info = site / f"{name.replace('-', '_')}-1.0.dist-info"
        info.mkdir(parents=True)
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n")


def test_given_a_venv_holding_a_package_the_lock_dropped_then_it_alone_is_named_for_uninstalling(
    tmp_path: Path,
) -> None:
    _installed(tmp_path, "boto3", "Typing_Extensions", "zope.interface", "left-behind", "pip", "kilo-billing")
    lock = (
        "boto3==1.40.0 \\\n    --hash=sha256:" + "a" * 64 + "\n"
        "typing-extensions==4.15.0 ; python_full_version < '3.13' \\\n    --hash=sha256:" + "b" * 64 + "\n"
        "    # via boto3\n"
        "zope-interface[testing]==8.0 \\\n    --hash=sha256:" + "c" * 64 + "\n"
    )
    # names compared in PEP 503's form; the project and pip are installed apart from the lock
    assert _extraneous(lock, tmp_path) == ["left-behind"]


def test_given_the_lock_naming_everything_installed_then_nothing_is_named(tmp_path: Path) -> None:
    _installed(tmp_path, "boto3", "pip")
    assert _extraneous("boto3==1.40.0 \\\n    --hash=sha256:" + "a" * 64 + "\n", tmp_path) == []


def test_the_venvs_pip_is_the_one_scripts_pip_txt_pins_with_its_hashes() -> None:
    """bootstrap installed pip from scripts/pip.txt (hash-checked), not the newest release (before: ``--upgrade pip``)."""
    text = (ROOT / "scripts/pip.txt").read_text()
    pinned = re.search(r"^pip==(\S+) \\$", text, re.MULTILINE)
    assert pinned is not None
    assert len(re.findall(r"--hash=sha256:[0-9a-f]{64}", text)) >= 1
    assert version("pip") == pinned[1]
    assert "-r scripts/pip.txt" in (ROOT / "scripts/bootstrap.sh").read_text()
