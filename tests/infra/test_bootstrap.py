"""bootstrap's choice of Python (scripts/pick-python.sh): 3.13, else 3.12, else 3.11; never a newer one (the dev lock's
tools do not install there: immutables builds from source on 3.14, cfn-lint refuses 3.15). Fake interpreters on an
otherwise empty PATH, each printing its minor version."""

from __future__ import annotations

import subprocess
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
