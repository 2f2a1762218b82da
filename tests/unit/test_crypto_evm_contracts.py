"""The committed test contracts cannot drift from their Vyper sources: recompiling with the pinned vyper gives the
committed bytecode and ABI (devtools/kilo_dev/contracts/)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from kilo_dev import contracts


@pytest.mark.parametrize("name", contracts.CONTRACTS)
def test_given_a_contract_source_when_recompiled_then_it_matches_the_committed_bytecode_and_abi(name: str) -> None:
    committed = contracts.load(name)

    fresh = contracts.compile_source(name)

    assert fresh["bytecode"] == committed["bytecode"]
    assert fresh["abi"] == committed["abi"]
    assert fresh["compiler"] == committed["compiler"] == "vyper 0.4.3"


def test_the_test_usdc_has_six_decimals_and_the_erc20_surface() -> None:
    abi = contracts.load("TestUSDC")["abi"]
    functions = {entry["name"] for entry in abi if entry["type"] == "function"}
    events = {entry["name"]: entry for entry in abi if entry["type"] == "event"}

    assert {"transfer", "transferFrom", "approve", "mint", "balanceOf", "allowance", "decimals"} <= functions
    assert [(i["name"], i["indexed"]) for i in events["Transfer"]["inputs"]] == [
        ("sender", True),
        ("receiver", True),
        ("value", False),
    ]
    assert "6" in (contracts.HERE / "TestUSDC.vy").read_text().split("self.decimals = ")[1][:2]


def test_given_a_contract_compiled_then_the_threads_decimal_context_is_the_one_it_had() -> None:
    """vyper sets a 78-digit context on the importing thread at import: before, every later Decimal in the test
    worker ran in it (the full suite let a 32-digit amount through ``money.two_places`` after this file). A fresh
    interpreter, as vyper changes the context only where it is first imported."""
    script = (
        "import decimal\n"
        "from kilo_dev import contracts\n"
        "before = decimal.getcontext()\n"
        "contracts.compile_source('TestUSDC')\n"
        "print(decimal.getcontext() is before, decimal.getcontext().prec)\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=True)

    assert done.stdout.split() == ["True", "28"]
