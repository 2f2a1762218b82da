"""The committed test contracts cannot drift from their Vyper sources: recompiling with the pinned vyper gives the
committed bytecode and ABI (devtools/kilo_dev/contracts/)."""

from __future__ import annotations

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
