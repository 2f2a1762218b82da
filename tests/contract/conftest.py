"""Fixtures shared by the contract tests."""

from __future__ import annotations

import pytest

from tests.conftest import Stack
from tests.contract.ledger_harness import Ledger, _dynamo, _fake


@pytest.fixture(params=["fake", "dynamodb"])
def ledger(request: pytest.FixtureRequest) -> Ledger:
    """The invoicing ledger contract's two implementations (a module may define its own ``ledger``: the alerts ones do)."""
    if request.param == "fake":
        return _fake()
    stack: Stack = request.getfixturevalue("stack")
    return _dynamo(stack)
