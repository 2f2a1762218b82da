"""`kilo-billing crypto unattributed|assign` on moto (the template's crypto table and bus)."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest

from kilo_billing_cli.main import main
from kilo_crypto_watch.model import BillStatus
from tests.conftest import Stack
from tests.crypto_core_fakes import STRANGER_WALLET, T0, bill, harness, quote, transfer


@pytest.fixture
def table(stack: Stack) -> str:
    return stack.template.physical_name("CryptoTable")


def _cli(capsys: pytest.CaptureFixture[str], *argv: str) -> object:
    assert main([*argv, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_given_an_unattributed_payment_then_listed_and_assigned_to_the_bill(
    stack: Stack, table: str, capsys: pytest.CaptureFixture[str]
) -> None:
    h = harness(stack)
    h.store.create_bill(bill())
    h.store.add_quote(quote("q-usdc", "USDC", 100_000_000, "1"))
    h.clock.now = T0 + timedelta(minutes=5)
    h.settlement.record_seen(transfer("0xabc", "USDC", 100_000_000, T0 + timedelta(minutes=4), sender=STRANGER_WALLET))
    bus = ("--event-bus", stack.template.physical_name("BillingEventBus"))

    listed = _cli(capsys, "crypto", "unattributed", "--crypto-table", table)
    assert listed == [
        {
            "payment_id": "ethereum:0xabc:0",
            "status": "SEEN",
            "asset": "USDC",
            "amount": "100",
            "sender": STRANGER_WALLET,
            "seen_at": (T0 + timedelta(minutes=5)).isoformat(),
        }
    ]
    assigned = _cli(capsys, "crypto", "assign", "ethereum:0xabc:0", "acct-1", "inv-1", "--crypto-table", table, *bus)
    assert assigned == {
        "payment_id": "ethereum:0xabc:0",
        "account_id": "acct-1",
        "invoice_id": "inv-1",
        "quote_id": "q-usdc",
        "amount_usd": "100.00",
        "late": False,
        "manual_review": False,
        "bill_status": "PROCESSING",
    }
    assert _cli(capsys, "crypto", "unattributed", "--crypto-table", table) == []
    stored = h.store.bill("inv-1")
    assert stored is not None
    assert stored.status is BillStatus.PROCESSING


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["ethereum:0xnope:0", "acct-1", "inv-1"], "no payment 'ethereum:0xnope:0'"),
        (["ethereum:0xabc:0", "acct-2", "inv-1"], "belongs to account acct-1, not acct-2"),
        (["ethereum:0xabc:0", "acct-1", "inv-9"], "no crypto bill 'inv-9'"),
    ],
)
def test_given_a_bad_assignment_then_exit_2_naming_the_problem(
    stack: Stack, table: str, capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    h = harness(stack)
    h.store.create_bill(bill())
    h.store.add_quote(quote("q-usdc", "USDC", 100_000_000, "1"))
    h.settlement.record_seen(transfer("0xabc", "USDC", 100_000_000, T0 + timedelta(minutes=4), sender=STRANGER_WALLET))
    bus = ("--event-bus", stack.template.physical_name("BillingEventBus"))
    with pytest.raises(SystemExit) as exit_info:
        main(["crypto", "assign", *argv, "--crypto-table", table, *bus])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err
    assert [p.payment_id for p in h.store.unattributed()] == ["ethereum:0xabc:0"]
