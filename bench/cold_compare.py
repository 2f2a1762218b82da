"""Paired before/after cold starts: ``./dev bench --compare REV [--functions A,B] [--runs N]``.

The same whole fresh processes as ``bench/cold_start.py`` (same Lambda-shaped packages, first requests and canned AWS
endpoint), for two versions of the code: ``REV``'s layer and function code ("before") and the working tree's
("after"), each in its own copy of the package (the installed libraries are the same). Every round runs, in a rotating
order, the plain floor, each chosen function's own floor and each function before and after, so a busy moment of the
shared machine lands on both sides. Reported: median CPU (user + system of the child) of each, the median of the
per-round differences after - before, and the ratios to the plain floor and the function's own floor. Nothing is
written to docs/benchmarks.md: the figures are for a change's own before/after (its commit message, its report).
"""

from __future__ import annotations

import io
import os
import shutil
import statistics
import subprocess
import tarfile
import tempfile
from pathlib import Path

from bench import cold_start

DEFAULT_FUNCTIONS = ("StripeWebhookFunction",)


def _code_at(revision: str, folder: str, target: Path) -> None:
    """Copy ``folder``'s packages (directories with ``__init__.py``) as they are at ``revision`` into ``target``."""
    archive = subprocess.run(
        ["git", "-C", str(cold_start.ROOT), "archive", "--format=tar", revision, folder],
        check=True,
        capture_output=True,
    ).stdout
    with tempfile.TemporaryDirectory() as scratch, tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(scratch, filter="data")
        source = Path(scratch) / folder
        for package in source.iterdir():
            if package.is_dir() and (package / "__init__.py").exists():
                shutil.rmtree(target / package.name, ignore_errors=True)
                shutil.copytree(package, target / package.name)


def before_package(after: Path, folder: str, revision: str) -> Path:
    """A copy of ``after`` (the working tree's package) whose layer and function code are ``revision``'s."""
    from kilo_dev.package import compile_bytecode  # noqa: PLC0415

    target = after.with_name(after.name + "-before")
    shutil.rmtree(target, ignore_errors=True)
    shutil.copytree(after, target, symlinks=True)
    for code in ("layers/common", folder):
        _code_at(revision, code, target)
    for package in target.iterdir():
        if package.name.startswith("kilo_"):
            compile_bytecode(package)
    return target


def compare(revision: str, functions: tuple[str, ...], runs: int) -> str:
    stub_secrets: dict[str, str] = {cold_start.FLOOR_SECRET_NAME: "floor"}
    chosen = [subject for subject in cold_start.subjects(stub_secrets) if subject.name in functions]
    missing = set(functions) - {subject.name for subject in chosen}
    if missing:
        raise SystemExit(f"not functions of the template: {sorted(missing)}")
    layer = cold_start.ROOT / "layers/common"
    after = {s.folder: cold_start.package(s.folder, layer) for s in chosen}
    after.setdefault("functions/webhook_ingest", cold_start.package("functions/webhook_ingest", layer))
    before = {folder: before_package(path, folder, revision) for folder, path in after.items()}
    pairs = [(subject, replace_subject(subject)) for subject in chosen]
    with tempfile.TemporaryDirectory() as directory, cold_start.seeded_stub(stub_secrets) as stub:
        scratch = Path(directory)
        floor = cold_start.floor_subject(frozenset())
        for subject, _ in pairs:  # warm-up: bytecode, file cache; and each function's parts (its own floor)
            report = cold_start.run_cold(subject, after[subject.folder], stub.url, scratch)
            subject.parts = cold_start.parts_loaded(report["modules"])
            calls_before = dict(stub.calls)
            cold_start.run_cold(subject, after[subject.folder], stub.url, scratch)
            calls = {op: n - calls_before.get(op, 0) for op, n in stub.calls.items() if n - calls_before.get(op, 0)}
            subject.parts |= cold_start.parts_called(calls)
            cold_start.run_cold(subject, before[subject.folder], stub.url, scratch)
        own = {s.parts: cold_start.floor_subject(s.parts, after["functions/webhook_ingest"]) for s, _ in pairs}
        floors = [floor, *(own[parts] for parts in sorted(own, key=sorted) if parts)]
        for subject in floors:
            cold_start.run_cold(subject, after[subject.folder], stub.url, scratch)
        runs_of: list[tuple[str, cold_start.Subject, Path]] = [("floor", f, after[f.folder]) for f in floors]
        for subject, twin in pairs:
            runs_of += [("after", subject, after[subject.folder]), ("before", twin, before[subject.folder])]
        cpu: dict[tuple[str, str], list[float]] = {}
        loads = []
        for round_ in range(runs):
            order = runs_of[round_ % len(runs_of) :] + runs_of[: round_ % len(runs_of)]
            for side, subject, package_dir in order:
                if subject.sources:
                    subject.event, _ = cold_start.first_request(
                        subject.sources, subject.environment, stub_secrets, subject.name
                    )
                elif subject.name.startswith("floor"):
                    subject.event, _ = cold_start.floor_request(subject.parts)
                report = cold_start.run_cold(subject, package_dir, stub.url, scratch)
                cpu.setdefault((side, subject.name), []).append(report["cpu"])
            loads.append(os.getloadavg()[0])
    plain = statistics.median(cpu[("floor", "floor")])
    lines = [
        f"paired cold starts, {runs} rounds, before = {revision}, after = the working tree; load (1 min) during the"
        f" rounds {min(loads):.1f}-{max(loads):.1f}; CPU medians",
        f"  floor: {plain * 1000:.1f} ms",
    ]
    lines += [
        f"  {f.name}: {statistics.median(cpu[('floor', f.name)]) * 1000:.1f} ms"
        f" ({statistics.median(cpu[('floor', f.name)]) / plain:.2f}x)"
        for f in floors[1:]
    ]
    for subject, _ in pairs:
        after_cpu, before_cpu = cpu[("after", subject.name)], cpu[("before", subject.name)]
        diffs = [a - b for a, b in zip(after_cpu, before_cpu, strict=True)]
        own_cpu = statistics.median(cpu[("floor", own[subject.parts].name)])
        was, now, faster = statistics.median(before_cpu), statistics.median(after_cpu), sum(d < 0 for d in diffs)
        lines.append(
            f"  {subject.name}: before {was * 1000:.1f} ms ({was / plain:.3f}x floor, {was / own_cpu:.3f}x own),"
            f" after {now * 1000:.1f} ms ({now / plain:.3f}x floor, {now / own_cpu:.3f}x own); paired difference"
            f" median {statistics.median(diffs) * 1000:+.1f} ms (after < before in {faster} of {runs})"
        )
    return "\n".join(lines)


def replace_subject(subject: cold_start.Subject) -> cold_start.Subject:
    """The same function and first request, measured separately (its own lists)."""
    from dataclasses import replace  # noqa: PLC0415

    return replace(subject, cpu=[], wall=[], rss_kb=[], outcomes=set())


def run(revision: str, functions: tuple[str, ...] = DEFAULT_FUNCTIONS, runs: int = 11) -> None:
    print(compare(revision, functions, runs))
