"""`kilo-billing crypto backfill-links` on moto (the template's crypto table): payments attributed before D155 have no
transaction link (``TXN#<chain>#<tx>`` / ``PAY#<payment id>``), so a transaction re-mined at another log index loses
their bill; the backfill writes the missing links - a dry run unless --apply, a page at a time, resumable, once.

The old items are made as the code before D155 left them: the payment and its bill as settlement writes them, and no
link (the link settlement puts beside them is deleted)."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import timedelta
from decimal import Decimal

import pytest

from kilo_billing.items import to_item
from kilo_billing_cli.main import main
from kilo_crypto_watch import items
from kilo_crypto_watch.model import BillStatus, PaymentStatus
from tests.conftest import Stack
from tests.crypto_core_fakes import CUSTOMER_WALLET, STRANGER_WALLET, T0, Harness, bill, harness, quote, transfer


@pytest.fixture
def table(stack: Stack) -> str:
    return stack.template.physical_name("CryptoTable")


def _cli(capsys: pytest.CaptureFixture[str], *argv: str) -> dict[str, object]:
    assert main([*argv, "--json"]) == 0
    found: dict[str, object] = json.loads(capsys.readouterr().out)
    return found


def _unlink(stack: Stack, table: str, tx: str, payment_id: str) -> None:
    """The state before D155: the payment without its transaction link."""
    stack.clients["dynamodb"].delete_item(
        TableName=table, Key=items.key(items.transaction_pk("ethereum", tx), f"PAY#{payment_id}")
    )


def _links(stack: Stack, table: str, tx: str) -> list[str]:
    found = stack.clients["dynamodb"].query(
        TableName=table,
        KeyConditionExpression="pk = :t",
        ExpressionAttributeValues=to_item({":t": items.transaction_pk("ethereum", tx)}),
        ConsistentRead=True,
    )
    return [item["payment_id"]["S"] for item in found["Items"]]


def _old_claim(stack: Stack, table: str) -> Harness:
    """A customer's fast-path claim of 100 USDC from an unlinked wallet (index 0 of block 0xblock), as stored before
    D155: payment and bill, no link."""
    h = harness(stack)
    h.store.create_bill(bill())
    h.store.add_quote(quote("q-usdc", "USDC", 100_000_000, "1"))
    h.clock.now = T0 + timedelta(minutes=5)
    claimed = transfer("0xclaim", "USDC", 100_000_000, T0 + timedelta(minutes=4), sender=STRANGER_WALLET)
    h.settlement.check_claim(claimed, "inv-1")
    h.settlement.record(claimed, claimed_for="inv-1")
    _unlink(stack, table, "0xclaim", "ethereum:0xclaim:0")
    assert _links(stack, table, "0xclaim") == []
    return h


def test_given_a_claim_stored_before_d155_when_backfilled_then_its_re_mined_transfer_keeps_the_bill(
    stack: Stack, table: str, capsys: pytest.CaptureFixture[str]
) -> None:
    h = _old_claim(stack, table)

    report = _cli(capsys, "crypto", "backfill-links", "--apply", "--crypto-table", table)

    assert (report["applied"], report["linked"], report["attributed_payments"]) == (True, ["ethereum:0xclaim:0"], 1)
    assert report["next_start_after"] is None
    assert _links(stack, table, "0xclaim") == ["ethereum:0xclaim:0"]
    # the block is reorged away and the transaction re-mined after another transfer: its log is index 1 there,
    # reported while the old payment is still SEEN in its dropped block (finality reports the new block before
    # orphaning the old: no write since the deploy has put its link back)
    h.clock.now = T0 + timedelta(minutes=6)
    old = transfer("0xclaim", "USDC", 100_000_000, T0 + timedelta(minutes=4), sender=STRANGER_WALLET)
    h.settlement.record_seen(replace(old, index=1, block_number=101, block_hash="0xblock-b"))

    new = h.store.payment("ethereum:0xclaim:1")
    left = h.store.payment("ethereum:0xclaim:0")
    assert new is not None
    assert left is not None
    assert (new.status, new.invoice_id, new.matched_by, new.usd) == (
        PaymentStatus.SEEN,
        "inv-1",
        "fast_path",
        Decimal("100.00"),
    )
    assert (left.status, left.moved_to) == (PaymentStatus.ORPHANED, "ethereum:0xclaim:1")
    assert [p.payment_id for p in h.store.unattributed()] == []
    processing = h.store.bill("inv-1")
    assert processing is not None
    assert processing.status is BillStatus.PROCESSING


def test_given_payments_without_links_then_a_dry_run_writes_nothing_pages_resume_and_apply_writes_each_once(
    stack: Stack, table: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Three payments matched by the linked wallet (40 USDC each; two stored before D155, one after) and one from a
    stranger (unattributed: no link to write)."""
    h = harness(stack)
    h.store.link_wallet("evm", CUSTOMER_WALLET, "acct-1", "ethereum", T0)
    h.store.create_bill(bill())
    h.store.add_quote(quote("q-usdc", "USDC", 100_000_000, "1"))
    h.clock.now = T0 + timedelta(minutes=5)
    for tx in ("0xa", "0xb", "0xc"):
        h.settlement.record_seen(transfer(tx, "USDC", 40_000_000, T0 + timedelta(minutes=4)))
    h.settlement.record_seen(transfer("0xs", "USDC", 40_000_000, T0 + timedelta(minutes=4), sender=STRANGER_WALLET))
    _unlink(stack, table, "0xa", "ethereum:0xa:0")
    _unlink(stack, table, "0xb", "ethereum:0xb:0")
    missing = ["ethereum:0xa:0", "ethereum:0xb:0"]
    base = ("crypto", "backfill-links", "--crypto-table", table)

    whole = _cli(capsys, *base)
    assert (whole["applied"], sorted(whole["to_link"]), whole["attributed_payments"], whole["already_linked"]) == (  # type: ignore[arg-type]
        False,
        missing,
        3,
        1,
    )
    assert _links(stack, table, "0xa") == []
    assert _links(stack, table, "0xb") == []

    first = _cli(capsys, *base, "--page-size", "1", "--max-pages", "2")
    assert first["pages"] == 2
    assert first["next_start_after"] is not None
    rest = _cli(capsys, *base, "--page-size", "1", "--start-after", json.dumps(first["next_start_after"]))
    assert rest["next_start_after"] is None
    assert sorted([*first["to_link"], *rest["to_link"]]) == missing  # type: ignore[misc]
    assert first["attributed_payments"] + rest["attributed_payments"] == 3  # type: ignore[operator]
    assert _links(stack, table, "0xa") == []

    applied = _cli(capsys, *base, "--apply", "--page-size", "2")
    assert (sorted(applied["linked"]), applied["already_linked"]) == (missing, 1)  # type: ignore[arg-type]
    assert _links(stack, table, "0xa") == ["ethereum:0xa:0"]
    assert _links(stack, table, "0xb") == ["ethereum:0xb:0"]
    assert _links(stack, table, "0xs") == []

    again = _cli(capsys, *base, "--apply")
    assert (again["linked"], again["already_linked"]) == ([], 3)


def test_given_a_bad_start_key_then_exit_2_naming_the_option(
    stack: Stack, table: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["crypto", "backfill-links", "--crypto-table", table, "--start-after", "PAY#x"])
    assert exit_info.value.code == 2
    assert "--start-after must be a JSON object" in capsys.readouterr().err
