"""`./dev package`'s checks: what the template's artifacts are, what a package imports that is not shipped, limits."""

from __future__ import annotations

import sys
from importlib import metadata
from pathlib import Path

import pytest

from kilo_dev import package
from kilo_dev.template import Template


def test_given_the_template_then_one_artifact_per_layer_and_per_code_folder() -> None:
    built = {artifact.name: artifact for artifact in package.artifacts(Template())}
    assert built["CommonLayer"].kind == "layer"
    assert next(iter(built)) == "CommonLayer"  # layers first: functions are pruned against them
    assert sorted(built["webhook_ingest"].functions) == [
        "LiveKitWebhookFunction",
        "StripeWebhookFunction",
        "UsageApiFunction",
    ]
    assert sorted(built["rate_usage"].functions) == ["RateUsageFunction", "SweeperFunction"]
    assert all(built[name].layers == ["CommonLayer"] for name in ("webhook_ingest", "rate_usage", "alerts"))


def _package(root: Path, name: str, source: str) -> Path:
    directory = root / name
    directory.mkdir(parents=True)
    (directory / "__init__.py").write_text("")
    (directory / "logic.py").write_text(source)
    return directory


def test_given_lazy_and_top_level_imports_then_only_unshipped_ones_are_reported(tmp_path: Path) -> None:
    code = _package(
        tmp_path,
        "kilo_demo_fn",
        "from __future__ import annotations\nimport json\nimport boto3\nfrom pydantic import BaseModel\n"
        "from kilo_demo_fn import logic\nfrom . import sibling\n\n"
        "def later():\n    import stripe\n    from pydantic_settings import BaseSettings\n",
    )
    assert package.missing_imports([code], shipped={"pydantic"}) == {"kilo_demo_fn": {"stripe", "pydantic_settings"}}
    assert package.missing_imports([code], shipped={"pydantic", "stripe", "pydantic_settings"}) == {}


def test_given_imports_only_the_type_checker_sees_then_they_are_not_missing(tmp_path: Path) -> None:
    """``kilo_billing.stripe_customers`` names Stripe's parameter types under ``if TYPE_CHECKING:``: never imported at
    run time, so the layer does not need stripe for it; an ``else`` branch and anything outside still count."""
    code = tmp_path / "kilo_demo_layer"
    code.mkdir()
    (code / "customers.py").write_text(
        "from __future__ import annotations\nimport typing\nfrom typing import TYPE_CHECKING\n\n"
        "if TYPE_CHECKING:\n    from stripe.params import CustomerCreateParams\nelse:\n    import orjson\n"
        "if typing.TYPE_CHECKING:\n    import web3\n"
        "if True:\n    import solders\n",
    )
    assert package.missing_imports([code], shipped=set()) == {"kilo_demo_layer": {"orjson", "solders"}}
    assert package.imported_names(code) == {
        "__future__",
        "__future__.annotations",
        "typing",
        "typing.TYPE_CHECKING",
        "orjson",
        "solders",
    }


def test_given_a_site_folder_then_top_level_names_skip_metadata(tmp_path: Path) -> None:
    for name in ("stripe", "jwt", "stripe-16.1.0.dist-info", "bin"):
        (tmp_path / name).mkdir()
    (tmp_path / "six.py").write_text("")
    (tmp_path / "_cffi_backend.cpython-313-aarch64-linux-gnu.so").write_text("")
    assert package.top_level_names(tmp_path) == {"stripe", "jwt", "six", "_cffi_backend"}


def test_given_the_same_files_then_the_zip_is_byte_identical(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(package, "BUILD", tmp_path)
    artifact = package.Artifact("fn", tmp_path / "src", "function")
    (artifact.root / "pkg").mkdir(parents=True)
    (artifact.root / "pkg" / "a.py").write_text("x = 1\n")
    first = package.zip_artifact(artifact).read_bytes()
    (artifact.root / "pkg" / "a.py").touch()  # a new mtime must not change the archive
    assert package.zip_artifact(artifact).read_bytes() == first


def test_given_an_oversized_artifact_then_the_limits_are_reported(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(package, "BUILD", tmp_path)
    monkeypatch.setattr(package, "UNZIPPED_LIMIT", 1000)
    source = tmp_path / "src"
    _package(source, "kilo_fn", "import pytest\n")
    artifact = package.Artifact("fn", source, "function")
    artifact.site.mkdir(parents=True)
    (artifact.site / "pytest").mkdir()
    (artifact.site / "big.bin").write_bytes(b"x" * 2000)
    report = package.check(artifact, {}, package.zip_artifact(artifact), [])
    assert report.problems == (
        "2,000 bytes unzipped with its layers, over Lambda's 250 MB",
        "ships development packages: pytest",
    )


def test_given_a_layer_module_borrowing_an_sdk_then_only_functions_that_ship_it_may_import_it(tmp_path: Path) -> None:
    """``kilo_billing.stripe_calls`` may import stripe, which the layer does not ship; another layer module may not;
    a function importing ``stripe_calls`` must ship stripe itself."""
    layer = tmp_path / "layer" / "kilo_billing"
    layer.mkdir(parents=True)
    (layer / "__init__.py").write_text("")
    (layer / "stripe_calls.py").write_text("import stripe\n")
    (layer / "money.py").write_text("from decimal import Decimal\n")
    missing = package.missing_imports([layer], shipped=set())
    assert missing == {"kilo_billing": {"stripe"}}
    assert package.borrowing_problems("layer", [layer], set(), missing) == []
    assert missing == {}  # borrowed by the one module allowed to
    (layer / "money.py").write_text("import stripe\n")  # a second module borrowing it is not allowed
    missing = package.missing_imports([layer], shipped=set())
    package.borrowing_problems("layer", [layer], set(), missing)
    assert missing == {"kilo_billing": {"stripe"}}

    function = _package(tmp_path / "fn", "kilo_demo_fn", "from kilo_billing.stripe_calls import stripe_call\n")
    assert package.borrowing_problems("function", [function], {"kilo_billing"}, {}) == [
        "kilo_demo_fn imports kilo_billing.stripe_calls, which needs stripe, but does not ship stripe"
    ]
    assert package.borrowing_problems("function", [function], {"kilo_billing", "stripe"}, {}) == []
    other = _package(tmp_path / "other", "kilo_other_fn", "from kilo_billing import stripe_calls\n")
    assert package.borrowing_problems("function", [other], set(), {}) == [
        "kilo_other_fn imports kilo_billing.stripe_calls, which needs stripe, but does not ship stripe"
    ]


def _installed(site: Path, distribution: str, module: str) -> None:
    """A distribution as pip --target leaves it: its package and a dist-info whose RECORD lists its files."""
    (site / module).mkdir(parents=True)
    (site / module / "__init__.py").write_text("")
    info = site / f"{distribution}-1.0.dist-info"
    info.mkdir()
    (info / "RECORD").write_text(f"{module}/__init__.py,,\n{info.name}/RECORD,,\n")


def test_given_the_ingest_artifact_when_pruned_then_the_runtimes_and_the_unused_distributions_are_left_out(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(package, "BUILD", tmp_path)
    artifact = package.Artifact("webhook_ingest", tmp_path / "source", "function")
    for distribution, module in [("stripe", "stripe"), ("requests", "requests"), ("idna", "idna"),
                                 ("boto3", "boto3"), ("pyjwt", "jwt")]:  # fmt: skip
        _installed(artifact.site, distribution, module)
    assert package.prune(artifact, layer_distributions=[]) == ["boto3", "idna", "requests"]
    assert sorted(path.name for path in artifact.site.iterdir()) == [
        "jwt",
        "pyjwt-1.0.dist-info",
        "stripe",
        "stripe-1.0.dist-info",
    ]
    # another function's artifact keeps them: what is unused is declared per code folder
    other = package.Artifact("account_api", tmp_path / "source", "function")
    _installed(other.site, "requests", "requests")
    assert package.prune(other, layer_distributions=[]) == []


def test_given_a_site_when_compiled_then_the_runtime_loads_its_bytecode_without_comparing_the_source(
    tmp_path: Path,
) -> None:
    """The artifact's bytecode is used as shipped: the source is never compared (an edited source is not seen), and a
    traceback still names the module's file."""
    import subprocess  # noqa: PLC0415
    import sys  # noqa: PLC0415

    site = tmp_path / "site"
    _package(site, "kilo_demo_fn", "def answer():\n    return 'from the bytecode'\n\ndef fail():\n    raise KeyError\n")
    assert package.compile_bytecode(site) is True
    (site / "kilo_demo_fn" / "logic.py").write_text("def answer():\n    return 'from the source'\n")
    probe = (
        "import traceback\nfrom kilo_demo_fn import logic\nprint(logic.answer())\n"
        "try:\n    logic.fail()\nexcept KeyError as exc:\n    print(traceback.extract_tb(exc.__traceback__)[-1].filename)\n"
    )
    result = subprocess.run(
        [sys.executable, "-S", "-B", "-c", probe], cwd=tmp_path, env={"PYTHONPATH": str(site)},
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert result.stdout.splitlines() == ["from the bytecode", str(site / "kilo_demo_fn" / "logic.py")]
    # control: without bytecode, the same probe reads the (edited) source
    for cache in site.rglob("__pycache__"):
        for compiled in cache.iterdir():
            compiled.unlink()
    rerun = subprocess.run(
        [sys.executable, "-S", "-B", "-c", "from kilo_demo_fn import logic\nprint(logic.answer())"], cwd=tmp_path,
        env={"PYTHONPATH": str(site)}, capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert rerun.stdout.strip() == "from the source"


def test_given_another_python_than_the_runtimes_then_no_bytecode_and_the_check_names_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(package, "RUNTIME_PYTHON", (3, 99))
    site = tmp_path / "site"
    _package(site, "kilo_demo_fn", "x = 1\n")
    assert package.compile_bytecode(site) is False
    assert not list(site.rglob("*.pyc"))


def test_given_the_template_then_the_deploy_template_points_every_function_and_layer_at_its_zip() -> None:
    """``.build/template.yaml``: the same template, every code location replaced by its artifact's zip (relative to
    .build/, where it is written), so ``sam deploy`` uploads the checked zips as they are."""
    import re  # noqa: PLC0415

    from kilo_dev.template import TEMPLATE_PATH  # noqa: PLC0415

    source = TEMPLATE_PATH.read_text()
    deployed = package.deploy_template(source, package.artifacts(Template()))
    locations = re.findall(r"^\s+(CodeUri|ContentUri): (\S+)$", deployed, re.MULTILINE)
    assert ("ContentUri", "CommonLayer.zip") in locations
    assert {path for key, path in locations if key == "CodeUri"} == {
        "webhook_ingest.zip", "rate_usage.zip", "alerts.zip", "invoice.zip", "account_api.zip", "crypto_watch.zip",
    }  # fmt: skip
    assert len(locations) == len(re.findall(r"^\s+(?:CodeUri|ContentUri): ", source, re.MULTILINE))
    changed = [(old, new) for old, new in zip(source.splitlines(), deployed.splitlines(), strict=True) if old != new]
    assert len(changed) == len(locations)
    assert all(re.match(r"\s+(CodeUri|ContentUri): ", old) for old, _ in changed)
    with pytest.raises(ValueError, match="functions/unknown/"):
        package.deploy_template("      CodeUri: functions/unknown/\n", package.artifacts(Template()))


def test_given_the_common_layer_then_it_imports_only_what_its_requirements_ship() -> None:
    """The real layer's code against its own requirements (``./dev package``'s check, without the pip build): only
    ``LAYER_BORROWED`` modules may import an SDK the layer does not ship. (``stripe_customers``' type-only import of
    stripe once failed ``./dev package`` while every test passed.)"""
    from importlib.metadata import packages_distributions  # noqa: PLC0415

    root = Path(__file__).resolve().parents[2] / "layers" / "common"
    wanted = {
        line.split("==")[0].strip().lower().replace("_", "-")
        for line in (root / "requirements.txt").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    shipped = {
        module
        for module, distributions in packages_distributions().items()
        if any(d.lower().replace("_", "-") in wanted for d in distributions)
    }
    missing = package.missing_imports([root / "kilo_billing"], shipped)
    assert package.borrowing_problems("layer", [root / "kilo_billing"], shipped, missing) == []
    assert missing == {}


def test_given_the_functions_code_then_each_importing_a_borrowing_layer_module_ships_its_sdk() -> None:
    """``./dev package``'s borrowing check on the real code folders, against what each folder's requirements bring
    (transitively, as pip installs them): the account API and alerts import ``kilo_billing.sms_regions`` and must
    ship libphonenumber (D221); the sweeper and alerts ``livekit_rooms`` and livekit-api with aiohttp."""
    import re  # noqa: PLC0415
    from importlib.metadata import packages_distributions, requires  # noqa: PLC0415

    from packaging.requirements import Requirement  # noqa: PLC0415

    def normal(name: str) -> str:
        return re.sub(r"[-_.]+", "-", name).lower()

    modules_of: dict[str, set[str]] = {}
    for module, distributions in packages_distributions().items():
        for distribution in distributions:
            modules_of.setdefault(normal(distribution), set()).add(module)
    root = Path(__file__).resolve().parents[2]
    checked = []
    for folder in sorted((root / "functions").iterdir()):
        if not (folder / "requirements.txt").exists():
            continue
        lines = [line.split("#")[0].strip() for line in (folder / "requirements.txt").read_text().splitlines()]
        pending, found = [Requirement(line) for line in lines if line], set[str]()
        while pending:
            requirement = pending.pop()
            name = normal(requirement.name)
            if name in found or (requirement.marker is not None and not requirement.marker.evaluate({"extra": ""})):
                continue
            found.add(name)
            pending.extend(Requirement(text) for text in requires(requirement.name) or [])
        shipped = set().union(*(modules_of.get(name, set()) for name in found))
        code = [path for path in folder.iterdir() if path.is_dir() and path.name.startswith("kilo_")]
        assert package.borrowing_problems("function", code, shipped, {}) == [], folder.name
        checked.append(folder.name)
    assert {"account_api", "alerts", "rate_usage"} <= set(checked)


def test_given_one_artifact_built_in_two_checkouts_then_its_files_are_byte_identical(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same commit gives the same zip wherever it is checked out (D420): the bytecode names the file where
    Lambda has it (``/var/task``, ``/opt/python``), not the build folder, and the console scripts pip writes (their
    first line names the builder's Python; Lambda never runs them) are left out, with their RECORD lines."""
    import marshal  # noqa: PLC0415

    sites = []
    for checkout in ("one", "elsewhere/two"):
        monkeypatch.setattr(package, "BUILD", tmp_path / checkout / ".build")
        artifact = package.Artifact("invoice", tmp_path / checkout / "source", "function")
        _installed(artifact.site, "charset_normalizer", "charset_normalizer")
        (artifact.site / "charset_normalizer" / "api.py").write_text("def detect():\n    return 1\n")
        (artifact.site / "bin").mkdir()
        (artifact.site / "bin" / "normalizer").write_text(f"#!{tmp_path / checkout}/.venv/bin/python\nmain()\n")
        record = artifact.site / "charset_normalizer-1.0.dist-info" / "RECORD"
        record.write_text(f"../../bin/normalizer,sha256={checkout},40\n{record.read_text()}")
        assert package.prune(artifact, layer_distributions=[]) == []
        assert package.compile_bytecode(artifact.site, artifact.lambda_path) is True
        sites.append(artifact.site)
    files = [
        {str(path.relative_to(site)): path.read_bytes() for path in site.rglob("*") if path.is_file()} for site in sites
    ]
    assert files[0] == files[1]
    assert "bin/normalizer" not in files[0]
    assert files[0]["charset_normalizer-1.0.dist-info/RECORD"] == (
        b"charset_normalizer/__init__.py,,\ncharset_normalizer-1.0.dist-info/RECORD,,\n"
    )
    compiled = files[0]["charset_normalizer/__pycache__/api.cpython-313.pyc"]
    assert marshal.loads(compiled[16:]).co_filename == "/var/task/charset_normalizer/api.py"
    assert package.Artifact("CommonLayer", tmp_path, "layer").lambda_path == "/opt/python"


def test_given_the_venv_then_the_build_tools_printed_beside_the_hashes_are_its_python_and_pip() -> None:
    """The zips' hashes hold for one Python patch release and one pip: ``./dev package`` names both (D420)."""
    python = ".".join(map(str, sys.version_info[:3]))
    assert package.build_tools([sys.executable, "-m", "pip"]) == f"Python {python}, pip {metadata.version('pip')}"
