"""The SAM template: it lints clean, targets the agreed runtime, and the layer ships the pins pyproject declares."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest
from cfnlint.decode import decode

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = ROOT / "template.yaml"


@pytest.fixture(scope="module")
def template() -> dict[str, Any]:
    parsed, matches = decode(str(TEMPLATE))
    assert not matches, matches
    assert parsed is not None
    return dict(parsed)


def test_given_the_template_when_cfn_lint_runs_then_it_reports_nothing() -> None:
    result = subprocess.run(
        [str(Path(sys.executable).with_name("cfn-lint")), str(TEMPLATE)],
        capture_output=True,
        text=True,
        check=False,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_given_globals_then_functions_run_python313_on_arm64_with_tracing(template: dict[str, Any]) -> None:
    function = template["Globals"]["Function"]
    assert function["Runtime"] == "python3.13"
    assert function["Architectures"] == ["arm64"]
    assert function["Tracing"] == "Active"
    assert "POWERTOOLS_METRICS_NAMESPACE" in function["Environment"]["Variables"]


def test_given_the_common_layer_then_it_is_built_from_layers_common_for_the_function_runtime(
    template: dict[str, Any],
) -> None:
    layer = template["Resources"]["CommonLayer"]
    assert layer["Type"] == "AWS::Serverless::LayerVersion"
    assert layer["Properties"]["ContentUri"].rstrip("/") == "layers/common"
    assert layer["Metadata"]["BuildMethod"] == template["Globals"]["Function"]["Runtime"]
    assert (ROOT / "layers/common/kilo_billing/__init__.py").exists()


def _pins(lines: list[str]) -> dict[str, str]:
    pins = {}
    for line in lines:
        match = re.fullmatch(r"\s*([A-Za-z0-9_.\-\[\]]+)==([^\s;]+)\s*", line)
        if match:
            pins[match.group(1).lower()] = match.group(2)
    return pins


def test_given_the_layer_requirements_then_each_is_pinned_as_in_pyproject() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    declared = _pins(project["project"]["dependencies"])
    layer_lines = (ROOT / "layers/common/requirements.txt").read_text().splitlines()
    requested = [line for line in layer_lines if line.strip() and not line.startswith("#")]
    layer = _pins(requested)
    assert len(layer) == len(requested), "every layer requirement must be pinned with =="
    for name, version in layer.items():
        assert declared.get(name) == version, f"{name}=={version} in the layer but {declared.get(name)} in pyproject"


def test_given_pyproject_then_every_dependency_is_pinned() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    requirements = list(project["project"]["dependencies"])
    for extra in project["project"]["optional-dependencies"].values():
        requirements.extend(extra)
    unpinned = [req for req in requirements if "==" not in req]
    assert not unpinned
