"""``./dev lock``: the hashed lock of every deployed artifact, and the offline check that each still covers its inputs.

Each artifact ``./dev package`` builds (the layer, each function code folder) has a ``requirements.txt`` (what its
code needs, edited by hand, commented) and beside it a ``requirements.lock`` generated from it: its whole dependency
closure, every distribution pinned with ``==`` and the sha256 of each of its files on PyPI (``--hash``), resolved for
Lambda's Python and platform (python3.13, arm64 manylinux_2_28, wheels only). ``./dev package`` installs the lock
with ``pip --require-hashes`` and refuses a lock lacking a dependency its wheels declare for Lambda
(``kilo_dev.package.unmet_dependencies``, D428), so the same commit installs the same
files (D420).

The locks are made by uv (``uv pip compile --generate-hashes``), itself pinned with its hashes in
``scripts/lock-tool.txt`` and installed into ``.lock-tool/`` apart from ``.venv``. The inputs:
- the artifact's ``requirements.txt``;
- pyproject's pins (dependencies and extras) as constraints: where a distribution the tests run with is also
  deployed, the lock has the tested version;
- a function's layers' locks as constraints: a distribution both ship has the layer's version (the function's copy
  is pruned, ``kilo_dev.package.prune``).
An existing lock's pins are kept where its inputs allow (only what changed moves); ``--upgrade`` moves everything to
the newest allowed.

``problems`` (the test ``tests/infra/test_locks.py`` and ``./dev package`` run it, offline, no resolver) tells a lock
that no longer covers its inputs: a requirement missing from it or at another version, a pyproject pin it
contradicts, a pin without hashes, a requirement removed but still locked, a layer's distribution at another
version.

The dev/test environment has its own lock, ``requirements-dev.lock`` (D427): pyproject's dependencies, its
``dev`` extra and its build backend (``[build-system] requires``), with their whole closure and hashes, resolved by
uv with ``--universal`` for Python 3.11 and newer on every platform (one entry per version, with markers where the
resolution forks). ``scripts/bootstrap.sh`` installs it into ``.venv`` with ``pip --require-hashes``, then the project
itself without dependencies. It is locked first and is a constraint of every artifact's lock, so a distribution both
have is at one version: the tests run what deploys (``dev_problems`` checks it, offline, and that the dev lock has
pyproject's build backend at its pin: bootstrap builds the project with the lock's, ``--no-build-isolation``).
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tomllib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from kilo_dev.package import LOCK, RUNTIME_PYTHON, Artifact, artifacts, normal, requirement_lines
from kilo_dev.template import ROOT, Template

TOOL_REQUIREMENTS = ROOT / "scripts" / "lock-tool.txt"
TOOL_VENV = ROOT / ".lock-tool"
PINS = ROOT / ".build" / "lock" / "pyproject-pins.txt"
# The dev/test environment's lock (.venv, scripts/bootstrap.sh) and its build backend, its one input besides pyproject
DEV_LOCK = ROOT / "requirements-dev.lock"
BUILD_REQUIRES = ROOT / ".build" / "lock" / "build-system.txt"
DEV_PYTHON = "3.11"  # pyproject's requires-python floor: --universal resolves for it and every newer Python
# template.yaml's Architectures: [arm64] on python3.13 (Amazon Linux 2023, glibc 2.34): manylinux_2_28 covers the
# manylinux2014 (2.17) wheels too
LAMBDA_PLATFORM = "aarch64-manylinux_2_28"
COMMAND = "./dev lock"

_PIN = re.compile(r"^(?P<name>[A-Za-z0-9][A-Za-z0-9._-]*)(?:\[[^\]]*\])?\s*==\s*(?P<version>[^\s;\\]+)")
_HASH = re.compile(r"--hash=sha256:[0-9a-f]{64}")
_MARKER = re.compile(r"^\s*;\s*(?P<marker>.*?)\s*(?:--hash|$)")
PROJECT_VIA = "kilo-billing (pyproject.toml)"  # uv's note on a requirement read from pyproject


@dataclass
class Locked:
    version: str
    hashes: int
    via: list[str] = field(default_factory=list)  # uv's annotation: "-r <file>", "-c <file>" or a distribution
    marker: str = ""  # the environment marker of a --universal lock's entry ("" : every environment)


def parse_lock(text: str) -> dict[str, Locked]:
    """A hashed requirements file (uv's or pip-tools' output): name -> version, hash count and ``# via`` notes."""
    return dict(parse_entries(text))


def parse_entries(text: str) -> list[tuple[str, Locked]]:
    """Every entry of a hashed requirements file, in order, with its marker: a ``--universal`` lock may pin one name
    twice, for two environments."""
    entries: list[tuple[str, Locked]] = []
    current: Locked | None = None
    logical = text.replace("\\\n", " ")
    for line in logical.splitlines():
        stripped = line.strip()
        if not stripped:
            continue
        if stripped.startswith("#"):
            note = stripped.lstrip("#").strip()
            if current is not None and line.startswith(" "):
                note = note.removeprefix("via").strip()
                if note:
                    current.via.append(note)
            continue
        match = _PIN.match(stripped)
        if match is None:
            raise ValueError(f"not a pinned requirement: {stripped[:80]!r}")
        marker = _MARKER.match(stripped[match.end() :])
        current = Locked(match["version"], len(_HASH.findall(stripped)), marker=marker["marker"] if marker else "")
        entries.append((normal(match["name"]), current))
    return entries


def pins(requirements: Iterable[str]) -> dict[str, str]:
    """``name==version`` requirements -> {normalized name: version}; any other form -> version ``""`` (unpinned)."""
    found = {}
    for requirement in requirements:
        match = _PIN.match(requirement.strip())
        name = match["name"] if match else re.split(r"[\s\[<>=!~;]", requirement.strip(), maxsplit=1)[0]
        found[normal(name)] = match["version"] if match else ""
    return found


def project_pins(pyproject: str) -> dict[str, str]:
    """pyproject's pins: its dependencies and every extra's."""
    project = tomllib.loads(pyproject)["project"]
    listed = list(project.get("dependencies", []))
    for extra in project.get("optional-dependencies", {}).values():
        listed.extend(extra)
    return pins(listed)


def build_pins(pyproject: str) -> dict[str, str]:
    """pyproject's build backend: its ``[build-system] requires``, as ``pins``."""
    return pins(tomllib.loads(pyproject)["build-system"]["requires"])


def problems(
    source: str,
    requirements: Sequence[str],
    lock: dict[str, Locked],
    project: dict[str, str],
    layers: dict[str, dict[str, Locked]],
) -> list[str]:
    """Why the lock of ``source`` (its folder, as the lock's ``-r`` notes name it) does not cover its inputs: its
    requirements (``requirement_lines``), pyproject's pins and its layers' locks. Empty: it covers them."""
    found = []
    wanted = pins(requirements)
    for name, version in wanted.items():
        if not version:
            found.append(f"{source}: {name} is not pinned with == in requirements.txt")
        elif name not in lock:
            found.append(f"{source}: {name}=={version} is required but not locked")
        elif lock[name].version != version:
            found.append(f"{source}: {name}=={version} is required but {lock[name].version} is locked")
    direct = f"-r {source}/requirements.txt"
    for name, entry in lock.items():
        if entry.hashes == 0:
            found.append(f"{source}: {name}=={entry.version} is locked without --hash")
        if project.get(name) and project[name] != entry.version:
            found.append(f"{source}: {name}=={entry.version} is locked but pyproject pins {project[name]}")
        if direct in entry.via and name not in wanted:
            found.append(f"{source}: {name} is locked as a requirement but requirements.txt no longer has it")
        # a constraint (uv's "-c <file>" note: every entry has "-c requirements-dev.lock", D427) only sets the
        # version of what something else wants: it keeps nothing locked
        reasons = [via for via in entry.via if not via.startswith("-c ")]
        if entry.via and not any(via.startswith("-r ") or normal(via) in lock for via in reasons):
            found.append(
                f"{source}: {name} is locked for {', '.join(reasons)}, none of which is locked"
                if reasons
                else f"{source}: {name} is locked only as a constraint ({', '.join(entry.via)}): nothing requires it"
            )
        for layer, layer_lock in layers.items():
            if name in layer_lock and layer_lock[name].version != entry.version:
                found.append(
                    f"{source}: {name}=={entry.version} but its layer {layer} locks {layer_lock[name].version}"
                )
    return found


def dev_problems(
    dev: Sequence[tuple[str, Locked]],
    project: dict[str, str],
    artifact_locks: dict[str, dict[str, Locked]],
    build: dict[str, str],
) -> list[str]:
    """Why the dev lock (``parse_entries``) does not cover pyproject's pins and its build backend (``build_pins``),
    or installs another version of a distribution than an artifact's lock (by its folder) deploys: every entry of
    that name counts, also one for another Python or platform (a test run there would run another version). Empty:
    the tests run what deploys."""
    source = _relative(DEV_LOCK)
    backend_via = f"-r {_relative(BUILD_REQUIRES)}"
    found = []
    locked: dict[str, list[str]] = {}
    for name, entry in dev:
        locked.setdefault(name, []).append(entry.version)
        if entry.hashes == 0:
            found.append(f"{source}: {name}=={entry.version} is locked without --hash")
        if PROJECT_VIA in entry.via and name not in project:
            found.append(f"{source}: {name} is locked as a requirement but pyproject no longer has it")
        if backend_via in entry.via and name not in build:
            found.append(f"{source}: {name} is locked as the build backend but pyproject no longer has it")
    for name, version in build.items():
        if name not in locked:
            found.append(f"{source}: {name}=={version} is pyproject's build backend but not locked")
        found += [
            f"{source}: {name}=={version} is pyproject's build backend but {other} is locked"
            for other in locked.get(name, [])
            if version and other != version
        ]
    for name, version in project.items():
        if not version:
            found.append(f"{source}: {name} is not pinned with == in pyproject")
        elif name not in locked:
            found.append(f"{source}: {name}=={version} is pinned in pyproject but not locked")
        found += [
            f"{source}: {name}=={version} is pinned in pyproject but {other} is locked"
            for other in locked.get(name, [])
            if version and other != version
        ]
    for folder, artifact_lock in artifact_locks.items():
        for name, entry in artifact_lock.items():
            found += [
                f"{folder}: {name}=={entry.version} is deployed but the tests run {other} ({source})"
                for other in locked.get(name, [])
                if other != entry.version
            ]
    return found


def _relative(path: Path) -> str:
    return str(path.relative_to(ROOT))


def _layer_sources(template: Template, artifact: Artifact) -> dict[str, Path]:
    by_name = {candidate.name: candidate.source for candidate in artifacts(template) if candidate.kind == "layer"}
    return {layer: by_name[layer] for layer in artifact.layers}


def check(template: Template) -> list[str]:
    """``problems`` of every artifact's lock (a missing lock is one) and ``dev_problems`` of the dev lock, from the
    files alone."""
    pyproject = (ROOT / "pyproject.toml").read_text()
    project = project_pins(pyproject)
    found = []
    deployed = {}
    for artifact in artifacts(template):
        requirements = requirement_lines(artifact.source)
        if not requirements:
            continue
        lock_file = artifact.source / LOCK
        if not lock_file.exists():
            found.append(f"{_relative(artifact.source)}: no {LOCK} (run {COMMAND})")
            continue
        layers = {
            layer: parse_lock((source / LOCK).read_text())
            for layer, source in _layer_sources(template, artifact).items()
            if (source / LOCK).exists()
        }
        lock = deployed[_relative(artifact.source)] = parse_lock(lock_file.read_text())
        found += problems(_relative(artifact.source), requirements, lock, project, layers)
    if not DEV_LOCK.exists():
        return [*found, f"no {_relative(DEV_LOCK)} (run {COMMAND})"]
    return found + dev_problems(parse_entries(DEV_LOCK.read_text()), project, deployed, build_pins(pyproject))


def tool_version() -> str:
    match = re.search(r"^uv==(\S+)", TOOL_REQUIREMENTS.read_text(), re.MULTILINE)
    if match is None:
        raise ValueError(f"{_relative(TOOL_REQUIREMENTS)} pins no uv")
    return match[1]


def uv() -> Path:
    """The pinned uv, installed (hash-checked) into ``.lock-tool/`` when missing or at another version."""
    binary = TOOL_VENV / "bin" / "uv"
    version = tool_version()
    if binary.exists():
        current = subprocess.run([binary, "--version"], capture_output=True, text=True, check=False).stdout  # noqa: S603
        if current.split()[1:2] == [version]:
            return binary
    subprocess.run([sys.executable, "-m", "venv", "--clear", str(TOOL_VENV)], check=True)  # noqa: S603
    subprocess.run(  # noqa: S603 - our own venv's pip, a hash-checked requirement
        [TOOL_VENV / "bin" / "python", "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
         "--require-hashes", "--no-deps", "--only-binary=:all:", "-r", str(TOOL_REQUIREMENTS)],
        check=True,
    )  # fmt: skip
    return binary


def dev_compile_command(tool: Path, upgrade: bool) -> list[str]:
    """uv locking the dev/test environment: pyproject with its ``dev`` extra and its build backend, for every
    platform and every Python from 3.11 (``--universal``)."""
    return [str(tool), "pip", "compile", "--no-config", "--quiet", "--universal", "--generate-hashes",
            "--python-version", DEV_PYTHON, "--extra", "dev",
            *(["--upgrade"] if upgrade else []),
            "pyproject.toml", _relative(BUILD_REQUIRES),
            "--output-file", _relative(DEV_LOCK)]  # fmt: skip


def compile_command(tool: Path, artifact: Artifact, layer_sources: Iterable[Path], upgrade: bool) -> list[str]:
    constraints = [_relative(PINS), _relative(DEV_LOCK), *(_relative(source / LOCK) for source in layer_sources)]
    return [str(tool), "pip", "compile", "--no-config", "--quiet", "--generate-hashes",
            "--python-version", ".".join(map(str, RUNTIME_PYTHON)), "--python-platform", LAMBDA_PLATFORM,
            "--only-binary", ":all:",
            *(["--upgrade"] if upgrade else []),
            *(argument for constraint in constraints for argument in ("--constraint", constraint)),
            _relative(artifact.source / "requirements.txt"),
            "--output-file", _relative(artifact.source / LOCK)]  # fmt: skip


def lock(template: Template, upgrade: bool = False) -> list[Path]:
    """Regenerate the dev lock, then every artifact's lock constrained by it (layers first: the functions' are
    constrained by them too); returns the locks."""
    tool = uv()
    PINS.parent.mkdir(parents=True, exist_ok=True)
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    project = project_pins((ROOT / "pyproject.toml").read_text())
    PINS.write_text("".join(f"{name}=={version}\n" for name, version in sorted(project.items()) if version))
    BUILD_REQUIRES.write_text("".join(f"{requirement}\n" for requirement in pyproject["build-system"]["requires"]))
    subprocess.run(dev_compile_command(tool, upgrade), cwd=ROOT, check=True)  # noqa: S603
    written = [DEV_LOCK]
    for artifact in artifacts(template):  # layers first
        if not requirement_lines(artifact.source):
            continue
        layers = _layer_sources(template, artifact).values()
        subprocess.run(compile_command(tool, artifact, layers, upgrade), cwd=ROOT, check=True)  # noqa: S603
        written.append(artifact.source / LOCK)
    return written


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=COMMAND, description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--upgrade", action="store_true", help="move every pin to the newest its inputs allow")
    parser.add_argument("--check", action="store_true", help="only check, offline, that the locks cover their inputs")
    args = parser.parse_args(argv)
    template = Template()
    if not args.check:
        for path in lock(template, upgrade=args.upgrade):
            print(f"locked {_relative(path)}")
    found = check(template)
    for problem in found:
        print(f"PROBLEM: {problem}", file=sys.stderr)
    return 1 if found else 0


if __name__ == "__main__":
    raise SystemExit(main())
