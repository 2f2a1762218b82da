"""``./dev package``: build every Lambda artifact of ``template.yaml`` for python3.13 on arm64, without Docker.

For each layer (``AWS::Serverless::LayerVersion``) and each function code folder (``CodeUri``; functions sharing a
folder share one artifact) it installs the folder's hashed lock, ``requirements.lock`` (``./dev lock`` makes it from
the folder's ``requirements.txt``, D420), with pip for the Lambda platform (``--platform manylinux2014_aarch64
--platform manylinux_2_28_aarch64 --implementation cp --abi cp313 --python-version 3.13 --only-binary=:all:
--require-hashes --no-deps``) into ``.build/<name>/``, checks that every dependency the installed wheels declare for
Lambda's environment markers is installed (``unmet_dependencies``, D428), copies the code, drops what the
runtime or the layer already ships (boto3/botocore, the layer's own distributions) and what its functions do not use
(``NOT_SHIPPED``), compiles the bytecode the runtime will load (``compile_bytecode``: unchecked hash-based ``.pyc``,
Python 3.13 only), zips it deterministically and checks:
- sizes against Lambda's limits: a zip uploaded directly <= 50 MB; function + its layers unzipped <= 250 MB;
- every module the code imports (also inside functions: the lazy imports) is shipped: the standard library, the
  artifact itself, its layers, or the runtime's boto3/botocore (a layer module may borrow an SDK its functions ship,
  ``LAYER_BORROWED``, and then every function importing it must ship that SDK);
- no test or development distribution is shipped (pytest, moto, hypothesis, mypy, ruff, cfn-lint ...).
The template stays valid for ``sam build``/``sam deploy``; this is the same result without SAM's Docker images.
"""

from __future__ import annotations

import argparse
import ast
import compileall
import email.parser
import hashlib
import json
import platform
import py_compile
import re
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from packaging.requirements import Requirement

from kilo_dev.template import ROOT, TEMPLATE_PATH, Template

BUILD = ROOT / ".build"
RUNTIME_PYTHON = (3, 13)  # template.yaml's Runtime: python3.13
# Lambda's python3.13 runtime is Amazon Linux 2023 (glibc 2.34): manylinux 2.17 (2014) and 2.28 wheels both run there
# (solders, for one, ships its aarch64 wheels for 2.28 only)
PLATFORM = (
    "--platform",
    "manylinux2014_aarch64",
    "--platform",
    "manylinux_2_28_aarch64",
    "--implementation",
    "cp",
    "--abi",
    "cp{}{}".format(*RUNTIME_PYTHON),
    "--python-version",
    ".".join(map(str, RUNTIME_PYTHON)),
)
# The environment markers of Lambda's python3.13 on arm64 (PEP 508): a distribution's dependencies are the ones its
# markers give there, not on the machine that builds (D428). Not the exact patch release (python_full_version).
LAMBDA_MARKERS = {
    "implementation_name": "cpython",
    "implementation_version": "{}.{}.0".format(*RUNTIME_PYTHON),
    "os_name": "posix",
    "platform_machine": "aarch64",
    "platform_python_implementation": "CPython",
    "platform_release": "",
    "platform_system": "Linux",
    "platform_version": "",
    "python_full_version": "{}.{}.0".format(*RUNTIME_PYTHON),
    "python_version": "{}.{}".format(*RUNTIME_PYTHON),
    "sys_platform": "linux",
}
# Each code folder's hashed lock beside its requirements.txt: what ./dev package installs (kilo_dev.lock, D420)
LOCK = "requirements.lock"
ZIP_LIMIT = 50 * 1024 * 1024  # direct upload
UNZIPPED_LIMIT = 250 * 1024 * 1024  # function + all its layers
RUNTIME_PROVIDED = frozenset({"boto3", "botocore", "s3transfer", "jmespath", "dateutil", "six", "urllib3"})
DEV_ONLY = frozenset(
    {"pytest", "_pytest", "hypothesis", "moto", "mypy", "ruff", "cfnlint", "samtranslator", "time_machine", "xdist"}
)
# Layer modules that use an SDK the layer does not ship (it is heavy and only some functions need it): the layer may
# import it there, and every function whose code imports such a module must ship the SDK itself.
LAYER_BORROWED: dict[str, tuple[str, ...]] = {
    "kilo_billing.stripe_calls": ("stripe",),
    "kilo_billing.livekit_rooms": ("livekit", "aiohttp"),  # the sweeper's and the alerts' RoomService call
    "kilo_billing.sms_regions": ("phonenumbers",),  # the account API's and the alerts' SMS regions (D221)
}
# The runtime's boto3 and what it needs, left out of every artifact: AWS's copies run, also under what else uses them
# (requests' urllib3 for Stripe and web3, arrow's python-dateutil, Powertools' jmespath). Shipping ours would put
# them first on sys.path, under the runtime's own boto3 too (D420, amended).
DROPPED_DISTRIBUTIONS = ("boto3", "botocore", "s3transfer", "jmespath", "python_dateutil", "six", "urllib3")
# Distributions a code folder's requirements pull in that none of its functions uses, left out of its artifact
# (docs/decisions.md D113): the ingest functions only verify Stripe's signatures, never call Stripe's API, so the
# Stripe SDK's HTTP library does not ship (without it the SDK picks urllib, and stops loading requests on import:
# ~40 ms of the Stripe webhook's cold start). Checked: no shipped code of ours imports them, and the import-graph
# test serves the Stripe webhook's first request with them unimportable.
NOT_SHIPPED: dict[str, dict[str, str]] = {
    "webhook_ingest": {
        "requests": "the Stripe SDK's HTTP client for API calls, which ingest never makes",
        "charset_normalizer": "requests' own dependency",
        "idna": "requests' own dependency",
    },
}


@dataclass
class Artifact:
    name: str  # logical id of the layer, or the code folder's name
    source: Path  # the folder in the repository
    kind: str  # "layer" or "function"
    functions: list[str] = field(default_factory=list)  # logical ids using it
    handlers: list[str] = field(default_factory=list)
    layers: list[str] = field(default_factory=list)

    @property
    def root(self) -> Path:
        return BUILD / self.name

    @property
    def site(self) -> Path:
        """Where packages go: a layer's ``python/`` (Lambda puts it on ``/opt/python``), a function's root."""
        return self.root / "python" if self.kind == "layer" else self.root

    @property
    def lambda_path(self) -> str:
        """Where Lambda puts ``site``: the name its bytecode gives each file (not the build folder, D420)."""
        return "/opt/python" if self.kind == "layer" else "/var/task"


def artifacts(template: Template) -> list[Artifact]:
    layers = {
        name: Artifact(name, ROOT / spec["Properties"]["ContentUri"], "layer")
        for name, spec in template.of_type("AWS::Serverless::LayerVersion").items()
    }
    globals_layers = [ref.get("Ref") for ref in template.body.get("Globals", {}).get("Function", {}).get("Layers", [])]
    by_folder: dict[str, Artifact] = {}
    for name, spec in template.of_type("AWS::Serverless::Function").items():
        properties = spec["Properties"]
        folder = properties["CodeUri"].rstrip("/")
        artifact = by_folder.setdefault(folder, Artifact(Path(folder).name, ROOT / folder, "function"))
        artifact.functions.append(name)
        artifact.handlers.append(properties["Handler"])
        own = [ref.get("Ref") for ref in properties.get("Layers", []) if isinstance(ref, dict)]
        artifact.layers = sorted({str(layer) for layer in [*globals_layers, *own] if layer in layers})
    return [*layers.values(), *by_folder.values()]


def requirement_lines(folder: Path) -> list[str]:
    """The requirements of a code folder's ``requirements.txt`` (comments and blank lines left out)."""
    path = folder / "requirements.txt"
    if not path.exists():
        return []
    lines = [line.split("#", 1)[0].strip() for line in path.read_text().splitlines()]
    return [line for line in lines if line]


def install_command(artifact: Artifact, pip: Sequence[str]) -> list[str]:
    """pip installing the artifact's lock as it is: every file checked against the lock's hashes (D420), Lambda's
    wheels (``PLATFORM``), nothing resolved (``--no-deps``). pip would evaluate the wheels' dependency markers for
    the machine that builds, not for Lambda: ``unmet_dependencies`` checks them after, for Lambda (D428)."""
    lock = artifact.source / LOCK
    return [*pip, "install", "--quiet", "--disable-pip-version-check", "--no-compile", "--no-deps",
            *PLATFORM, "--only-binary=:all:", "--require-hashes", "--target", str(artifact.site),
            "--requirement", str(lock)]  # fmt: skip


def unmet_dependencies(site: Path, environment: dict[str, str] = LAMBDA_MARKERS) -> list[str]:
    """What the distributions installed in ``site`` declare they need (``Requires-Dist``, with the extras others ask
    of them) in ``environment`` - Lambda's by default - and is not installed there, or at a version they exclude.
    Empty: the lock is the whole closure, for Lambda (D428)."""
    installed: dict[str, tuple[str, list[Requirement]]] = {}
    for info in site.glob("*.dist-info"):
        metadata = email.parser.Parser().parsestr((info / "METADATA").read_text())
        requirements = [Requirement(line) for line in metadata.get_all("Requires-Dist") or []]
        installed[normal(metadata["Name"])] = (metadata["Version"], requirements)
    found: set[str] = set()
    pending = [(name, "") for name in installed]
    seen: set[tuple[str, str]] = set()
    while pending:
        name, extra = pending.pop()
        if (name, extra) in seen or name not in installed:
            continue
        seen.add((name, extra))
        for requirement in installed[name][1]:
            if requirement.marker is not None and not requirement.marker.evaluate({**environment, "extra": extra}):
                continue
            if requirement.marker is None and extra:
                continue  # a base requirement: checked with ""
            needed = normal(requirement.name)
            if needed not in installed:
                found.add(f"{name} needs {requirement}, which is not locked")
            elif not requirement.specifier.contains(installed[needed][0], prereleases=True):
                found.add(f"{name} needs {requirement}, {installed[needed][0]} is locked")
            else:
                pending.extend((needed, wanted) for wanted in requirement.extras)
    return sorted(found)


def normal(name: str) -> str:
    """A distribution's name as PEP 503 compares them."""
    return re.sub(r"[-_.]+", "-", name).lower()


def install(artifact: Artifact, pip: Sequence[str]) -> None:
    if artifact.root.exists():
        shutil.rmtree(artifact.root)
    artifact.site.mkdir(parents=True)
    if requirement_lines(artifact.source):
        if not (artifact.source / LOCK).exists():
            raise RuntimeError(f"{artifact.name} has requirements.txt but no {LOCK}: run ./dev lock")
        command = install_command(artifact, pip)
        result = subprocess.run(command, capture_output=True, text=True, check=False)  # noqa: S603 - our own pip
        if result.returncode:
            raise RuntimeError(f"pip could not build {artifact.name}:\n{result.stdout}{result.stderr}")
        unmet = unmet_dependencies(artifact.site)
        if unmet:
            needs = "; ".join(unmet)
            raise RuntimeError(f"{artifact.name}: its lock misses what its distributions need on Lambda: {needs} "
                               "(run ./dev lock)")  # fmt: skip
    for package in sorted(artifact.source.iterdir()):
        if package.is_dir() and (package / "__init__.py").exists():
            shutil.copytree(package, artifact.site / package.name, ignore=shutil.ignore_patterns("__pycache__"))


def _distributions(site: Path) -> dict[str, list[str]]:
    """Installed distributions in ``site`` -> the top-level names they own (from their RECORD)."""
    found: dict[str, list[str]] = {}
    for info in site.glob("*.dist-info"):
        name = info.name.split("-")[0].lower()
        tops: set[str] = set()
        record = info / "RECORD"
        for line in record.read_text().splitlines() if record.exists() else []:
            first = line.split(",", 1)[0].split("/", 1)[0]
            if first and not first.endswith((".dist-info", ".data")) and first != "..":
                tops.add(first)
        found[name] = sorted(tops | {info.name})
    return found


def remove_distributions(site: Path, dropped: Callable[[str], bool]) -> list[str]:
    """Delete from ``site`` every installed distribution whose (lower-case) name ``dropped`` accepts, with all its
    files; returns their names, sorted."""
    removed = []
    for name, owned in _distributions(site).items():
        if dropped(name):
            for entry in owned:
                path = site / entry
                if path.is_dir():
                    shutil.rmtree(path)
                elif path.exists():
                    path.unlink()
            removed.append(name)
    return sorted(removed)


def prune(artifact: Artifact, layer_distributions: Iterable[str]) -> list[str]:
    """Remove what the runtime (boto3, botocore ...) or the artifact's layers already ship, and what its functions do
    not use (``NOT_SHIPPED``); returns the removed."""
    shipped_by_layers = set(layer_distributions)
    unused = NOT_SHIPPED.get(artifact.name, {}) if artifact.kind == "function" else {}

    def dropped(name: str) -> bool:
        by_layers = artifact.kind == "function" and name in shipped_by_layers
        return name in DROPPED_DISTRIBUTIONS or by_layers or name in unused

    removed = remove_distributions(artifact.site, dropped)
    remove_scripts(artifact.site)
    for cache in artifact.root.rglob("__pycache__"):
        shutil.rmtree(cache, ignore_errors=True)
    return removed


def remove_scripts(site: Path) -> None:
    """Delete the console scripts pip writes into ``site/bin`` and their RECORD lines: Lambda never runs them, and
    their first line names the Python that built them, so the zip would differ from one checkout to another (D420).
    """
    shutil.rmtree(site / "bin", ignore_errors=True)
    for record in site.glob("*.dist-info/RECORD"):
        lines = record.read_text().splitlines(keepends=True)
        kept = [line for line in lines if not line.startswith(("../", "bin/"))]
        if kept != lines:
            record.write_text("".join(kept))


def compile_bytecode(site: Path, lambda_path: str | None = None) -> bool:
    """Compile every module under ``site`` for the runtime's Python, as unchecked hash-based ``.pyc`` files (PEP 552):
    Lambda's code folders are read-only, so a module shipped without bytecode is compiled again on every cold start
    (+26-54 % of a cold start, measured: docs/benchmarks.md), and timestamp-based bytecode would be stale (the zip's
    entries carry a fixed date). Unchecked: the artifact is immutable, its bytecode is never compared with the source
    (tracebacks still name the file where it is: the import system sets code objects' file names). ``lambda_path``,
    where Lambda puts ``site``, is the folder the bytecode names instead of ``site``: the same sources give the same
    bytes in any checkout (D420). Only the runtime's Python version writes bytecode the runtime reads: returns
    False, compiling nothing, on another."""
    if sys.version_info[:2] != RUNTIME_PYTHON:
        return False
    compileall.compile_dir(
        site, quiet=2, workers=1, ddir=lambda_path, invalidation_mode=py_compile.PycInvalidationMode.UNCHECKED_HASH
    )  # a file that does not compile (a vendored test for another Python) is left as source: never imported
    return True


def zip_artifact(artifact: Artifact) -> Path:
    """A deterministic zip (sorted entries, fixed timestamps): the same code gives the same bytes and hash."""
    target = BUILD / f"{artifact.name}.zip"
    files = sorted(path for path in artifact.root.rglob("*") if path.is_file())
    with zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as archive:
        for path in files:
            info = zipfile.ZipInfo(str(path.relative_to(artifact.root)), date_time=(1980, 1, 1, 0, 0, 0))
            info.external_attr = 0o644 << 16
            archive.writestr(info, path.read_bytes(), zipfile.ZIP_DEFLATED)
    return target


def unzipped_size(root: Path) -> int:
    return sum(path.stat().st_size for path in root.rglob("*") if path.is_file())


def _type_checking(node: ast.AST) -> bool:
    """``if TYPE_CHECKING:`` / ``if typing.TYPE_CHECKING:``: its body never runs (imports for the type checker only)."""
    if not isinstance(node, ast.If):
        return False
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _runtime_nodes(source: Path) -> Iterator[ast.AST]:
    """Every node of a module that can run: ``ast.walk`` without the bodies of ``if TYPE_CHECKING:`` blocks (their
    ``else`` branches run)."""
    pending: list[ast.AST] = [ast.parse(source.read_text(), str(source))]
    while pending:
        node = pending.pop()
        yield node
        if isinstance(node, ast.If) and _type_checking(node):
            pending.extend(node.orelse)
            continue
        pending.extend(ast.iter_child_nodes(node))


def imported_modules(package_dir: Path) -> set[str]:
    """Top-level names of every absolute import in a package's modules (also inside functions; not the imports only
    the type checker sees, under ``if TYPE_CHECKING:``)."""
    names: set[str] = set()
    for source in package_dir.rglob("*.py"):
        for node in _runtime_nodes(source):
            if isinstance(node, ast.Import):
                names.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module.split(".")[0])
    return names


def importing_modules(package_dir: Path, top_level: str) -> set[str]:
    """Dotted names of the package's modules that import ``top_level`` (or something below it)."""
    found = set()
    for source in package_dir.rglob("*.py"):
        module = ".".join((package_dir.name, *source.relative_to(package_dir).with_suffix("").parts))
        for node in _runtime_nodes(source):
            names = (
                [alias.name for alias in node.names]
                if isinstance(node, ast.Import)
                else [node.module]
                if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module
                else []
            )
            if any(name.split(".")[0] == top_level for name in names):
                found.add(module.removesuffix(".__init__"))
    return found


def imported_names(package_dir: Path) -> set[str]:
    """Every dotted name a package's modules import absolutely (``from a.b import c``: ``a.b`` and ``a.b.c``)."""
    names: set[str] = set()
    for source in package_dir.rglob("*.py"):
        for node in _runtime_nodes(source):
            if isinstance(node, ast.Import):
                names.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module)
                names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def borrowing_problems(
    kind: str, code_dirs: Iterable[Path], shipped: set[str], missing: dict[str, set[str]]
) -> list[str]:
    """A layer: its missing imports that only ``LAYER_BORROWED`` modules make are fine (taken out of ``missing``). A
    function: importing such a module without shipping its SDK is a problem."""
    problems = []
    for directory in code_dirs:
        if kind == "layer":
            for sdk in {sdk for sdks in LAYER_BORROWED.values() for sdk in sdks}:
                allowed = {module for module, sdks in LAYER_BORROWED.items() if sdk in sdks}
                if sdk in missing.get(directory.name, set()) and importing_modules(directory, sdk) <= allowed:
                    missing[directory.name].discard(sdk)
            if directory.name in missing and not missing[directory.name]:
                del missing[directory.name]
        else:
            used = imported_names(directory)
            problems += [
                f"{directory.name} imports {module}, which needs {sdk}, but does not ship {sdk}"
                for module, sdks in LAYER_BORROWED.items()
                for sdk in sdks
                if module in used and sdk not in shipped
            ]
    return problems


def top_level_names(site: Path) -> set[str]:
    names = set()
    for entry in site.iterdir():
        if entry.name.endswith((".dist-info", ".data")) or entry.name == "bin":
            continue
        names.add(entry.name.split(".")[0] if entry.is_file() else entry.name)
    return names


def missing_imports(code_dirs: Iterable[Path], shipped: set[str]) -> dict[str, set[str]]:
    """Per package: what it imports that neither the standard library, the runtime nor ``shipped`` provides."""
    available = shipped | set(sys.stdlib_module_names) | RUNTIME_PROVIDED | {"__future__"}
    return {
        directory.name: missing
        for directory in code_dirs
        if (missing := imported_modules(directory) - available - {directory.name})
    }


@dataclass(frozen=True)
class Report:
    name: str
    kind: str
    functions: tuple[str, ...]
    zipped: int
    unzipped: int
    with_layers: int
    sha256: str
    removed: tuple[str, ...]
    problems: tuple[str, ...]


def check(
    artifact: Artifact, reports: dict[str, Report], zipped: Path, removed: list[str], compiled: bool = True
) -> Report:
    problems: list[str] = []
    if not compiled:
        runtime = ".".join(map(str, RUNTIME_PYTHON))
        problems.append(f"no bytecode: build with Python {runtime}, the runtime's, or every cold start compiles it")
    unzipped = unzipped_size(artifact.root)
    with_layers = unzipped + sum(reports[layer].unzipped for layer in artifact.layers if layer in reports)
    if zipped.stat().st_size > ZIP_LIMIT:
        problems.append(f"zip is {zipped.stat().st_size:,} bytes, over the 50 MB direct-upload limit")
    if with_layers > UNZIPPED_LIMIT:
        problems.append(f"{with_layers:,} bytes unzipped with its layers, over Lambda's 250 MB")
    shipped = top_level_names(artifact.site)
    for layer in artifact.layers:
        shipped |= top_level_names(BUILD / layer / "python")
    dev = sorted(shipped & DEV_ONLY)
    if dev:
        problems.append(f"ships development packages: {', '.join(dev)}")
    code = [directory for directory in artifact.source.iterdir() if (directory / "__init__.py").exists()]
    missing_by_package = missing_imports(code, shipped)
    problems += borrowing_problems(artifact.kind, code, shipped, missing_by_package)
    for package, missing in missing_by_package.items():
        problems.append(f"{package} imports what is not shipped: {', '.join(sorted(missing))}")
    digest = hashlib.sha256(zipped.read_bytes()).hexdigest()[:16]
    return Report(artifact.name, artifact.kind, tuple(artifact.functions), zipped.stat().st_size, unzipped,
                  with_layers, digest, tuple(removed), tuple(problems))  # fmt: skip


def build(template: Template, pip: Sequence[str]) -> list[Report]:
    BUILD.mkdir(exist_ok=True)
    reports: dict[str, Report] = {}
    layer_distributions: dict[str, set[str]] = {}
    for artifact in artifacts(template):  # layers first: a function's pruning needs its layers' distributions
        install(artifact, pip)
        inherited = set().union(*(layer_distributions.get(layer, set()) for layer in artifact.layers))
        removed = prune(artifact, inherited)
        if artifact.kind == "layer":
            layer_distributions[artifact.name] = set(_distributions(artifact.site))
        compiled = compile_bytecode(artifact.site, artifact.lambda_path)
        reports[artifact.name] = check(artifact, reports, zip_artifact(artifact), removed, compiled)
    return list(reports.values())


_CODE_LOCATION = re.compile(r"^(?P<indent>\s+)(?P<key>CodeUri|ContentUri): (?P<path>\S+)$", re.MULTILINE)


def deploy_template(text: str, built: Sequence[Artifact]) -> str:
    """``template.yaml`` with every ``CodeUri``/``ContentUri`` pointing at its artifact's zip (relative to ``BUILD``,
    where it is written): ``sam deploy --template-file .build/template.yaml`` uploads those zips as they are, with
    their bytecode and without what they leave out; the rest of the template is unchanged."""
    zips = {str(artifact.source.relative_to(ROOT)): f"{artifact.name}.zip" for artifact in built}

    def located(match: re.Match[str]) -> str:
        path = match["path"].rstrip("/")
        if path not in zips:
            raise ValueError(f"{match['key']} {match['path']} is not an artifact ./dev package builds")
        return f"{match['indent']}{match['key']}: {zips[path]}"

    return _CODE_LOCATION.sub(located, text)


def build_tools(pip: Sequence[str]) -> str:
    """The Python and the pip that build the artifacts, as ``./dev package`` prints them beside the zips' hashes: the
    same commit gives the same zips only with the same two (pip writes each distribution's ``RECORD`` and
    ``INSTALLER``; the bytecode is the running Python's, which may differ from one 3.13 patch release to another)."""
    result = subprocess.run([*pip, "--version"], capture_output=True, text=True, check=True)  # noqa: S603 - our pip
    return f"Python {platform.python_version()}, pip {result.stdout.split()[1]}"


def _mb(size: int) -> str:
    return f"{size / 1024 / 1024:.1f} MB"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="./dev package", description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--json", action="store_true", help="machine-readable report")
    args = parser.parse_args(argv)
    template = Template()
    pip = [sys.executable, "-m", "pip"]
    reports = build(template, pip)
    tools = build_tools(pip)
    (BUILD / "template.yaml").write_text(deploy_template(TEMPLATE_PATH.read_text(), artifacts(template)))
    if args.json:
        listed = [{**report.__dict__, "built_with": tools} for report in reports]
        sys.stdout.write(json.dumps(listed, indent=2) + "\n")
    else:
        print(f"built with {tools} (the same commit gives the same sha256 with the same Python and pip)")
        for report in reports:
            used_by = f" ({', '.join(report.functions)})" if report.functions else ""
            print(f"{report.kind:8} {report.name}{used_by}: zip {_mb(report.zipped)}, unzipped {_mb(report.unzipped)}"
                  f", with layers {_mb(report.with_layers)}, sha256 {report.sha256}")  # fmt: skip
            if report.removed:
                print(f"         left out (the runtime's, the layer's, or unused): {', '.join(report.removed)}")
            for problem in report.problems:
                print(f"         PROBLEM: {problem}")
        print(f"artifacts in {BUILD.relative_to(ROOT)}/ (limits: zip {_mb(ZIP_LIMIT)}, unzipped {_mb(UNZIPPED_LIMIT)})")
        print(f"deploy them with: sam deploy --template-file {BUILD.relative_to(ROOT)}/template.yaml --guided ...")
    return 1 if any(report.problems for report in reports) else 0


if __name__ == "__main__":
    raise SystemExit(main())
