"""`kilo-billing crypto unattributed|assign|review|resolve` on moto (the template's crypto table and bus)."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import timedelta
from decimal import Decimal

import pytest

from kilo_billing_cli.main import main
from kilo_crypto_watch.history import account_history
from kilo_crypto_watch.model import BillStatus
from tests.conftest import Stack
from tests.crypto_core_fakes import (
    CHAINS,
    CUSTOMER_WALLET,
    STRANGER_WALLET,
    T0,
    Harness,
    bill,
    harness,
    quote,
    transfer,
)


@pytest.fixture
def table(stack: Stack) -> str:
    return stack.template.physical_name("CryptoTable")


def _stranger_paid_100_usdc(stack: Stack, *, clock_moved: bool = True) -> Harness:
    """Bill inv-1 (acct-1) with a 100 USDC quote at $1; 100 USDC (100,000,000 units) seen at T0 + 4 min from a
    wallet no quote names: unattributed (the clock moved on to T0 + 5 min unless ``clock_moved`` is False)."""
    h = harness(stack)
    h.store.create_bill(bill())
    h.store.add_quote(quote("q-usdc", "USDC", 100_000_000, "1"))
    if clock_moved:
        h.clock.now = T0 + timedelta(minutes=5)
    h.settlement.record_seen(transfer("0xabc", "USDC", 100_000_000, T0 + timedelta(minutes=4), sender=STRANGER_WALLET))
    return h


def _cli(capsys: pytest.CaptureFixture[str], *argv: str) -> object:
    assert main([*argv, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_given_an_unattributed_payment_then_listed_and_assigned_to_the_bill(
    stack: Stack, table: str, capsys: pytest.CaptureFixture[str]
) -> None:
    h = _stranger_paid_100_usdc(stack)
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
            "stray": False,
            "counted_in": None,
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


def test_given_a_stray_payment_then_listed_as_stray_beside_the_others(
    stack: Stack, table: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """D341. 7 USDC (7,000,000 units) paid into a token account of ours that is not the payment address:
    kept UNATTRIBUTED; the operator's list says so (``stray``), so that it is not taken for a payment nobody claims."""
    h = harness(stack)
    h.clock.now = T0 + timedelta(minutes=5)
    side = replace(transfer("sig-side", "USDC", 7_000_000, T0 + timedelta(minutes=4), chain="solana"), stray=True)
    h.settlement.record_seen(side)

    listed = _cli(capsys, "crypto", "unattributed", "--crypto-table", table)

    assert [(row["payment_id"], row["amount"], row["stray"]) for row in listed] == [  # type: ignore[union-attr]
        ("solana:sig-side:0", "7", True)
    ]


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
    h = _stranger_paid_100_usdc(stack, clock_moved=False)
    bus = ("--event-bus", stack.template.physical_name("BillingEventBus"))
    with pytest.raises(SystemExit) as exit_info:
        main(["crypto", "assign", *argv, "--crypto-table", table, *bus])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err
    assert [p.payment_id for p in h.store.unattributed()] == ["ethereum:0xabc:0"]


ETH_QUOTE = 40_000_000_000_000_000  # 0.04 ETH at the locked $2,500.00 = $100.00


def _in_review(stack: Stack, price_now: str) -> Harness:
    """A late ETH payment (2 h after the quote, which expired after 30 min) whose price moved 4 %: in review."""
    h = harness(stack)
    h.store.link_wallet("evm", CUSTOMER_WALLET, "acct-1", "ethereum", T0)
    h.store.create_bill(bill())
    h.store.add_quote(quote("q-eth", "ETH", ETH_QUOTE, "2500.00"))
    h.rates.prices["ETH"] = Decimal(price_now)
    h.clock.now = T0 + timedelta(hours=2)
    h.settlement.record_seen(transfer("0xlate", "ETH", ETH_QUOTE, T0 + timedelta(hours=2)))
    h.settlement.finalized("ethereum:0xlate:0")
    return h


def test_given_a_payment_in_review_then_listed_and_accepted_the_bill_is_paid(
    stack: Stack, table: str, capsys: pytest.CaptureFixture[str]
) -> None:
    h = _in_review(stack, "2600.00")  # up 4 %: valued at min(2500, 2600) = 2500 -> $100.00, held for review
    bus = ("--event-bus", stack.template.physical_name("BillingEventBus"))
    listed = _cli(capsys, "crypto", "review", "--crypto-table", table)
    assert listed == [
        {
            "payment_id": "ethereum:0xlate:0",
            "state": "in_review",
            "account_id": "acct-1",
            "invoice_id": "inv-1",
            "status": "FINALIZED",
            "asset": "ETH",
            "amount": "0.04",
            "rate_usd": "2500",
            "amount_usd": "100.00",
            "sender": CUSTOMER_WALLET,
            "seen_at": (T0 + timedelta(hours=2)).isoformat(),
        }
    ]
    resolved = _cli(capsys, "crypto", "resolve", "ethereum:0xlate:0", "--accept", "--crypto-table", table, *bus)
    assert resolved == {
        "payment_id": "ethereum:0xlate:0",
        "decision": "accepted",
        "invoice_id": "inv-1",
        "amount_usd": "100.00",
        "refund_owed": None,
        "bill_status": "PAID",
    }
    paid = h.store.bill("inv-1")
    assert paid is not None
    assert (paid.settled_usd, paid.settled_announced) == (Decimal("100.00"), True)
    assert _cli(capsys, "crypto", "review", "--crypto-table", table) == []


def test_given_a_payment_in_review_when_refused_then_a_refund_owed_is_listed_and_a_second_decision_exits_2(
    stack: Stack, table: str, capsys: pytest.CaptureFixture[str]
) -> None:
    h = _in_review(stack, "2400.00")  # down 4 %: $96.00 at 2400, held for review
    bus = ("--event-bus", stack.template.physical_name("BillingEventBus"))
    resolved = _cli(capsys, "crypto", "resolve", "ethereum:0xlate:0", "--refund-owed", "--crypto-table", table, *bus)
    assert resolved == {
        "payment_id": "ethereum:0xlate:0",
        "decision": "refund_owed",
        "invoice_id": "inv-1",
        "amount_usd": None,
        "refund_owed": f"0.04 ETH to {CUSTOMER_WALLET}",
        "bill_status": "OPEN",
    }
    [row] = _cli(capsys, "crypto", "review", "--crypto-table", table)  # type: ignore[misc]
    assert (row["payment_id"], row["state"]) == ("ethereum:0xlate:0", "refund_owed")
    for argv in (["ethereum:0xlate:0", "--accept"], ["ethereum:0xnope:0", "--accept"]):
        with pytest.raises(SystemExit) as exit_info:
            main(["crypto", "resolve", *argv, "--crypto-table", table, *bus])
        assert exit_info.value.code == 2
    errors = capsys.readouterr().err
    assert "payment ethereum:0xlate:0 is not in manual review" in errors
    assert "no payment 'ethereum:0xnope:0'" in errors
    still = h.store.bill("inv-1")
    assert still is not None
    assert (still.status, still.settled_usd) == (still.status.OPEN, Decimal("0.00"))


def test_given_an_unattributed_payment_orphaned_before_it_left_the_index_then_it_is_not_listed(
    stack: Stack, table: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """An item the version before this change wrote when it orphaned an unattributed payment (still on the
    UNATTRIBUTED index partition) is left out of the operator's list; a SEEN one beside it is listed."""
    from kilo_crypto_watch import items  # noqa: PLC0415

    h = harness(stack)
    h.clock.now = T0 + timedelta(minutes=5)
    h.settlement.record_seen(transfer("0xkept", "USDC", 5_000_000, T0 + timedelta(minutes=4), sender=STRANGER_WALLET))
    h.settlement.record_seen(transfer("0xgone", "USDC", 7_000_000, T0 + timedelta(minutes=4), sender=STRANGER_WALLET))
    gone = h.store.payment("ethereum:0xgone:0")
    assert gone is not None
    old_item = items.payment_to_item(gone) | {"status": {"S": "ORPHANED"}}  # as orphaned before: still indexed
    assert old_item["gsi2pk"] == {"S": "UNATTRIBUTED"}
    stack.clients["dynamodb"].put_item(TableName=table, Item=old_item)

    listed = _cli(capsys, "crypto", "unattributed", "--crypto-table", table)

    assert [row["payment_id"] for row in listed] == ["ethereum:0xkept:0"]  # type: ignore[attr-defined]


def test_given_a_stray_payment_refunded_on_chain_then_recorded_off_the_list_and_never_assigned(
    stack: Stack, table: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """D341, amended (a review). 7 USDC (7,000,000 units) paid into a side token account, listed stray;
    the operator sends the 7 USDC back on chain (signature ``sig-back``) and records it: it leaves the list and a
    later ``assign`` to the $7.00 bill is refused (exit 2), the bill still OPEN with 0.00 settled. Before: no
    command (``resolve --refund-owed`` refuses a payment not in review); it stayed listed and assign credited 7.00."""
    h = harness(stack)
    h.clock.now = T0 + timedelta(minutes=5)
    assert h.store.create_bill(bill("inv-1", "acct-1", "7.00"))
    h.store.add_quote(quote("q-1", "USDC", 7_000_000, "1", chain="solana", amount_usd="7.00"))
    side = replace(transfer("sig-side", "USDC", 7_000_000, T0 + timedelta(minutes=4), chain="solana"), stray=True)
    h.settlement.record_seen(side)
    bus = ("--event-bus", stack.template.physical_name("BillingEventBus"))

    recorded = _cli(
        capsys, "crypto", "refunded", "solana:sig-side:0", "--tx", "sig-back", "--crypto-table", table, *bus
    )

    assert recorded == [
        {
            "payment_id": "solana:sig-side:0",
            "status": "SEEN",
            "asset": "USDC",
            "amount": "7",  # 7,000,000 / 10^6
            "sender": side.sender,
            "refund_tx": "sig-back",
        }
    ]
    assert _cli(capsys, "crypto", "unattributed", "--crypto-table", table) == []
    with pytest.raises(SystemExit) as exit_info:
        main(["crypto", "assign", "solana:sig-side:0", "acct-1", "inv-1", "--crypto-table", table, *bus])
    assert exit_info.value.code == 2
    assert "was refunded by sig-back" in capsys.readouterr().err
    still = h.store.bill("inv-1")
    assert still is not None
    assert (still.status, still.settled_usd) == (BillStatus.OPEN, Decimal("0"))


def _bill_unreadable_after(monkeypatch: pytest.MonkeyPatch, method: str) -> None:
    """The display read of the bill fails once ``Settlement.<method>`` (the write) is done; reads before it work."""
    from kilo_billing.aws import StorageUnavailableError  # noqa: PLC0415
    from kilo_crypto_watch import adapters, settlement  # noqa: PLC0415

    written = {"done": False}
    write, read = getattr(settlement.Settlement, method), adapters.DynamoCryptoStore.bill

    def after_write(self: object, *args: object, **kwargs: object) -> object:
        out = write(self, *args, **kwargs)
        written["done"] = True
        return out

    def bill_read(self: adapters.DynamoCryptoStore, invoice_id: str) -> object:
        if written["done"]:
            raise StorageUnavailableError("ThrottlingException")
        return read(self, invoice_id)

    monkeypatch.setattr(settlement.Settlement, method, after_write)
    monkeypatch.setattr(adapters.DynamoCryptoStore, "bill", bill_read)


def test_given_the_bill_unreadable_after_an_assignment_then_the_result_with_bill_status_unknown_and_exit_0(
    stack: Stack, table: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Review v2c (4): the assignment was written, then the bill's read for display failed: exit 4 "rerun", and the
    rerun exited 2 "already attributed". The write stands: its row, bill_status "unknown", a note on stderr, exit 0."""
    _stranger_paid_100_usdc(stack)
    bus = ("--event-bus", stack.template.physical_name("BillingEventBus"))
    _bill_unreadable_after(monkeypatch, "assign")
    code = main(["crypto", "assign", "ethereum:0xabc:0", "acct-1", "inv-1", "--crypto-table", table, *bus, "--json"])
    out = capsys.readouterr()
    assert code == 0
    assert json.loads(out.out) == {
        "payment_id": "ethereum:0xabc:0",
        "account_id": "acct-1",
        "invoice_id": "inv-1",
        "quote_id": "q-usdc",
        "amount_usd": "100.00",  # 100 USDC (100,000,000 atomic, 6 decimals) x $1
        "late": False,
        "manual_review": False,
        "bill_status": "unknown",
    }
    assert out.err == (
        "kilo-billing: saved; reading the bill to show its status failed (ThrottlingException): bill_status unknown - "
        "do not rerun\n"
    )


def test_given_the_bill_unreadable_after_a_resolution_then_the_result_with_bill_status_unknown_and_exit_0(
    stack: Stack, table: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same for `crypto resolve --accept` (the payment in review: 0.04 ETH valued at min(2500, 2600) = $100.00)."""
    _in_review(stack, "2600.00")
    bus = ("--event-bus", stack.template.physical_name("BillingEventBus"))
    _bill_unreadable_after(monkeypatch, "resolve_review")
    code = main(["crypto", "resolve", "ethereum:0xlate:0", "--accept", "--crypto-table", table, *bus, "--json"])
    out = capsys.readouterr()
    assert code == 0
    assert json.loads(out.out)["bill_status"] == "unknown"
    assert json.loads(out.out)["amount_usd"] == "100.00"
    assert "do not rerun" in out.err


_TYPO_BUS_LINE = (
    "kilo-billing: the event bus 'kilo-typo-bus' was not found (ResourceNotFoundException): nothing was written; fix "
    "--event-bus 'kilo-typo-bus' (or EVENT_BUS_NAME), then rerun\n"
)


def test_given_an_event_bus_that_does_not_exist_then_assign_writes_nothing_and_exits_2_fix_the_bus(
    stack: Stack, table: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Review cl2 (4): ``--event-bus kilo-typo-bus`` saved the payment to the bill, then publishing failed - on moto.
    Real EventBridge has been reported to answer PutEvents to a bus that does not exist with success
    (``FailedEntryCount`` 0, an ``EventId``: aws/aws-cli#9186, aws/aws-sdk#186): the events lost without a word. The
    bus is now asked for (``DescribeEventBus``) before the write: exit 2 "fix --event-bus", nothing written."""
    h = _stranger_paid_100_usdc(stack)
    payment_before, bill_before = h.store.payment("ethereum:0xabc:0"), h.store.bill("inv-1")

    argv = ["crypto", "assign", "ethereum:0xabc:0", "acct-1", "inv-1", "--crypto-table", table]
    code = main([*argv, "--event-bus", "kilo-typo-bus", "--json"])

    out = capsys.readouterr()
    assert (code, out.out, out.err) == (2, "", _TYPO_BUS_LINE)
    stored = h.store.payment("ethereum:0xabc:0")
    assert stored is not None
    # read back: the payment still unattributed (no bill, SEEN) and as it was, the bill as it was (unpaid)
    assert (stored.invoice_id, stored.status.value) == (None, "SEEN")
    assert (stored, h.store.bill("inv-1")) == (payment_before, bill_before)
    assert [p.payment_id for p in h.store.unattributed()] == ["ethereum:0xabc:0"]


def test_given_an_event_bus_that_does_not_exist_then_resolve_writes_nothing_and_exits_2_fix_the_bus(
    stack: Stack, table: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """The same for ``crypto resolve --accept``: the payment stays in review, the bill not counted."""
    h = _in_review(stack, "2600.00")
    payment_before, bill_before = h.store.payment("ethereum:0xlate:0"), h.store.bill("inv-1")

    argv = ["crypto", "resolve", "ethereum:0xlate:0", "--accept", "--crypto-table", table]
    code = main([*argv, "--event-bus", "kilo-typo-bus", "--json"])

    out = capsys.readouterr()
    assert (code, out.out, out.err) == (2, "", _TYPO_BUS_LINE)
    stored = h.store.payment("ethereum:0xlate:0")
    assert stored is not None
    assert stored.review is True  # still in review: not decided
    assert (stored, h.store.bill("inv-1")) == (payment_before, bill_before)
    assert [p.payment_id for p in h.store.reviewed_payments()] == ["ethereum:0xlate:0"]


def _describe_event_bus_failing(monkeypatch: pytest.MonkeyPatch, failure: Exception) -> list[str]:
    """Every events client's ``DescribeEventBus`` raises ``failure`` (its other calls are moto's); returns the
    ``PutEvents`` calls' detail types, as they are made."""
    from kilo_billing import aws  # noqa: PLC0415

    made_by, puts = aws.client, []

    class _Events:
        def __init__(self, inner: object) -> None:
            self._inner = inner

        def describe_event_bus(self, **kwargs: object) -> object:
            raise failure

        def put_events(self, **kwargs: object) -> object:
            puts.append(kwargs["Entries"][0]["DetailType"])  # type: ignore[index]
            return self._inner.put_events(**kwargs)  # type: ignore[attr-defined]

        def __getattr__(self, name: str) -> object:
            return getattr(self._inner, name)

    def client(service: str, *args: object, **kwargs: object) -> object:
        made = made_by(service, *args, **kwargs)
        return _Events(made) if service == "events" else made

    monkeypatch.setattr(aws, "client", client)
    return puts


def _client_error(code: str) -> Exception:
    from botocore.exceptions import ClientError  # noqa: PLC0415

    return ClientError({"Error": {"Code": code, "Message": f"{code} message"}}, "DescribeEventBus")


def _endpoint_down() -> Exception:
    from botocore.exceptions import EndpointConnectionError  # noqa: PLC0415

    return EndpointConnectionError(endpoint_url="https://events.us-east-1.amazonaws.com")


_DENIED_LINE = (
    "kilo-billing: access denied asking for the event bus {bus!r} (AccessDeniedException): the credentials need "
    "events:DescribeEventBus on it (asked for before any write): nothing was written; fix the credentials' "
    "permissions, then rerun\n"
)


@pytest.mark.parametrize(
    ("failure", "status", "line"),
    [
        (lambda: _client_error("AccessDeniedException"), 2, _DENIED_LINE),
        (
            lambda: _client_error("ThrottlingException"),
            4,
            "kilo-billing: storage unavailable: ThrottlingException; rerun\n",
        ),
        (
            lambda: _client_error("InternalException"),
            4,
            "kilo-billing: storage unavailable: InternalException; rerun\n",
        ),
        (_endpoint_down, 4, "kilo-billing: storage unavailable: EndpointConnectionError; rerun\n"),
        (
            lambda: _client_error("ValidationException"),
            2,
            "kilo-billing: the event bus {bus!r} was not found (ValidationException): nothing was written; fix "
            "--event-bus {bus!r} (or EVENT_BUS_NAME), then rerun\n",
        ),
    ],
    ids=["access-denied", "throttled", "internal", "endpoint-down", "validation"],
)
def test_given_the_bus_check_failing_then_assign_writes_nothing_sends_nothing_and_exits_as_d362_says(
    stack: Stack,
    table: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    failure: object,
    status: int,
    line: str,
) -> None:
    """Review rclx (3): D362 (cl2) claims the check's own failures - access denied exit 2, throttled, internal or the
    endpoint down exit 4 "rerun", a ``ValidationException`` of the name exit 2 "not found" - write nothing and send
    nothing; untested until now. Review rclx (2): AWS's access-denied message is dropped (``aws.map_error`` keeps the
    code), so the line names the permission the check needs, ``events:DescribeEventBus`` (was the storage line
    "access denied to a table or event bus this command uses (...)": it named no permission)."""
    h = _stranger_paid_100_usdc(stack)
    payment_before, bill_before = h.store.payment("ethereum:0xabc:0"), h.store.bill("inv-1")
    puts = _describe_event_bus_failing(monkeypatch, failure())  # type: ignore[operator]
    bus = stack.template.physical_name("BillingEventBus")

    argv = ["crypto", "assign", "ethereum:0xabc:0", "acct-1", "inv-1", "--crypto-table", table, "--event-bus", bus]
    code = main([*argv, "--json"])

    out = capsys.readouterr()
    assert (code, out.out, out.err) == (status, "", line.format(bus=bus))
    assert puts == []  # no PutEvents call
    monkeypatch.undo()
    # read back: the payment still unattributed and as it was, the bill as it was (unpaid)
    assert (h.store.payment("ethereum:0xabc:0"), h.store.bill("inv-1")) == (payment_before, bill_before)
    assert [p.payment_id for p in h.store.unattributed()] == ["ethereum:0xabc:0"]


def test_given_the_bus_as_an_arn_in_the_callers_account_then_the_check_passes_and_assign_attributes(
    stack: Stack, table: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Review rclx: ``--event-bus`` takes a name or an ARN; ``DescribeEventBus`` answers for the ARN of a bus in the
    caller's account (moto's account 123456789012, us-east-1), so the check lets it through. (A bus in another
    account, by ARN, is refused by the check: D362's limit - not testable on moto.)"""
    h = _stranger_paid_100_usdc(stack)
    arn = f"arn:aws:events:us-east-1:123456789012:event-bus/{stack.template.physical_name('BillingEventBus')}"

    code = main(
        ["crypto", "assign", "ethereum:0xabc:0", "acct-1", "inv-1", "--crypto-table", table, "--event-bus", arn]
    )

    assert code == 0, capsys.readouterr().err
    stored = h.store.payment("ethereum:0xabc:0")
    assert stored is not None
    assert (stored.account_id, stored.invoice_id) == ("acct-1", "inv-1")


def test_given_only_the_bill_event_failing_then_assign_says_the_payment_event_was_sent_and_the_watcher_sends_the_bill(
    stack: Stack, table: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Review r2 (1): ``assign`` sends the payment's ``CryptoPaymentSeen.v1`` before the bill's event; with only the
    bill's failing, the line said "no command re-sends the CryptoPaymentSeen.v1 - tell the customer" though it was
    sent (the payment marked announced). D362 (amended): the line says which event was lost - the
    ``CryptoBillSettled.v1``, which the next crypto watcher run sends."""
    from kilo_billing.publisher import EventBridgePublisher, PublishError  # noqa: PLC0415

    h = _stranger_paid_100_usdc(stack)
    h.settlement.finalized("ethereum:0xabc:0")
    sent: list[str] = []

    def bill_event_failing(self: EventBridgePublisher, detail_type: str, detail: object) -> None:
        if detail_type != "CryptoPaymentSeen.v1":
            raise PublishError("InternalFailure")
        sent.append(detail_type)

    monkeypatch.setattr(EventBridgePublisher, "publish", bill_event_failing)
    bus = ("--event-bus", stack.template.physical_name("BillingEventBus"))
    code = main(["crypto", "assign", "ethereum:0xabc:0", "acct-1", "inv-1", "--crypto-table", table, *bus, "--json"])

    out = capsys.readouterr()
    assert code == 4
    assert sent == ["CryptoPaymentSeen.v1"]
    stored = h.store.payment("ethereum:0xabc:0")
    assert stored is not None
    assert stored.announced is True
    [line] = out.err.splitlines()
    assert line.startswith(
        "kilo-billing: crypto assign ethereum:0xabc:0: saved; its CryptoPaymentSeen.v1 was sent, the paid bill's "
        "event (CryptoBillSettled.v1 or CryptoCreditAdded.v1) was not (InternalFailure)"
    )
    assert "the next crypto watcher run sends it" in line
    assert "tell the customer" not in line
    assert "rerun" not in line.replace("a rerun is refused", "")
    paid = h.store.bill("inv-1")
    assert paid is not None
    # 100_000_000 atomic USDC / 10^6 = 100 USDC x $1 = $100.00 on the $100.00 bill: PAID, not announced yet
    assert (paid.status, paid.settled_usd, paid.settled_announced) == (BillStatus.PAID, Decimal("100.00"), False)


def _every_publish_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every EventBridge publish refused with a failed entry, ``InternalFailure`` (retryable: exit 4)."""
    from kilo_billing.publisher import EventBridgePublisher, PublishError  # noqa: PLC0415

    def failing(self: EventBridgePublisher, detail_type: str, detail: object) -> None:
        raise PublishError("InternalFailure")

    monkeypatch.setattr(EventBridgePublisher, "publish", failing)


def test_given_the_bus_failing_an_entry_then_resolve_saves_and_exits_4_without_rerun(
    stack: Stack, table: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A publishing failure that is not the setting (a failed entry, ``InternalFailure``): exit 4, and the line still
    says the decision is saved - not "rerun" (a second decision is refused: not in review)."""
    h = _in_review(stack, "2600.00")  # up 4 %: valued at min(2500, 2600) = 2500 -> $100.00, held for review

    _every_publish_fails(monkeypatch)
    bus = ("--event-bus", stack.template.physical_name("BillingEventBus"))
    code = main(["crypto", "resolve", "ethereum:0xlate:0", "--accept", "--crypto-table", table, *bus, "--json"])

    out = capsys.readouterr()
    assert code == 4
    [line] = out.err.splitlines()
    assert line.startswith(
        "kilo-billing: crypto resolve ethereum:0xlate:0: saved; its event was not sent (InternalFailure)"
    )
    assert "rerun" not in line.replace("a rerun is refused", "")
    stored = h.store.payment("ethereum:0xlate:0")
    assert stored is not None
    assert stored.review is False  # the decision is written
    paid = h.store.bill("inv-1")
    assert paid is not None
    # 0.04 ETH x $2,500.00 = $100.00 counted: the $100.00 bill PAID, its CryptoBillSettled.v1 not sent (the next
    # watcher run sends it: announce_due)
    assert (paid.status, paid.settled_usd, paid.settled_announced) == (BillStatus.PAID, Decimal("100.00"), False)


def test_given_the_payment_event_failing_then_the_assign_line_says_the_bill_event_was_not_sent_either(
    stack: Stack, table: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Review cl (c): the payment's ``CryptoPaymentSeen.v1`` goes before the bill's event, so when it fails the bill's
    (here ``CryptoBillSettled.v1``: the assignment pays the bill) is not sent either; the line said only that the
    payment's was not, adding nothing of the bill's. It says so now, and that the next watcher run sends it. (Every
    publish fails ``InternalFailure``: a missing bus no longer gets this far - asked for before the write.)"""
    h = _stranger_paid_100_usdc(stack)
    h.settlement.finalized("ethereum:0xabc:0")

    _every_publish_fails(monkeypatch)
    bus = ("--event-bus", stack.template.physical_name("BillingEventBus"))
    code = main(["crypto", "assign", "ethereum:0xabc:0", "acct-1", "inv-1", "--crypto-table", table, *bus, "--json"])

    out = capsys.readouterr()
    assert code == 4
    assert out.err == (
        "kilo-billing: crypto assign ethereum:0xabc:0: saved; its event was not sent (InternalFailure), nor the paid "
        "bill's (CryptoBillSettled.v1 or CryptoCreditAdded.v1) if it paid one: a rerun is refused (already "
        "attributed); no command re-sends the CryptoPaymentSeen.v1 - tell the customer; the next crypto watcher run "
        "sends the bill's - wait until the bus answers before the next command\n"
    )
    monkeypatch.undo()
    paid = h.store.bill("inv-1")
    assert paid is not None
    # 100_000_000 atomic USDC / 10^6 = 100 USDC x $1 = $100.00 on the $100.00 bill: PAID, its event not sent
    assert (paid.status, paid.settled_usd, paid.settled_announced) == (BillStatus.PAID, Decimal("100.00"), False)
    assert h.settlement.announce_due() == 1  # the next watcher run's announce_due sends it: 1 bill announced
    assert [detail["invoice_id"] for detail in h.events("CryptoBillSettled.v1")] == ["inv-1"]


def test_given_the_payment_unreadable_after_a_publish_failure_then_the_exit_4_line_says_what_is_known(
    stack: Stack, table: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Review (cx) of D362 cl3 (4), on the real path: every publish fails ``InternalFailure`` (retryable: exit 4), then
    ``crypto.run``'s read-back of the payment (``_seen_sent``) fails too, so ``AssignmentNotPublishedError`` carries
    ``seen_sent`` None. The line said "its event was not sent" and "no command re-sends the CryptoPaymentSeen.v1 -
    tell the customer", though the payment's event may have gone: it says what is known - saved; whether the
    CryptoPaymentSeen.v1 went is unknown; the bill's event, published last, was not sent either way."""
    from kilo_billing.aws import StorageUnavailableError  # noqa: PLC0415
    from kilo_billing.publisher import EventBridgePublisher, PublishError  # noqa: PLC0415
    from kilo_crypto_watch import adapters  # noqa: PLC0415

    h = _stranger_paid_100_usdc(stack)
    h.settlement.finalized("ethereum:0xabc:0")
    failed = {"publish": False}
    read = adapters.DynamoCryptoStore.payment

    def failing(self: EventBridgePublisher, detail_type: str, detail: object) -> None:
        failed["publish"] = True
        raise PublishError("InternalFailure")

    def payment_read(self: adapters.DynamoCryptoStore, payment_id: str) -> object:
        if failed["publish"]:  # the read-back after the failed publish; the assignment's own reads work
            raise StorageUnavailableError("ThrottlingException")
        return read(self, payment_id)

    monkeypatch.setattr(EventBridgePublisher, "publish", failing)
    monkeypatch.setattr(adapters.DynamoCryptoStore, "payment", payment_read)
    bus = ("--event-bus", stack.template.physical_name("BillingEventBus"))
    code = main(["crypto", "assign", "ethereum:0xabc:0", "acct-1", "inv-1", "--crypto-table", table, *bus, "--json"])

    out = capsys.readouterr()
    assert code == 4
    assert out.err == (
        "kilo-billing: crypto assign ethereum:0xabc:0: saved; an event was not sent (InternalFailure) and the payment "
        "could not be read back to say whether its CryptoPaymentSeen.v1 was sent: a rerun is refused (already "
        "attributed); if it was not, nothing re-sends it - tell the customer; the paid bill's event "
        "(CryptoBillSettled.v1 or CryptoCreditAdded.v1), if it paid one, was not sent either way (it goes last): the "
        "next crypto watcher run sends it - wait until the bus answers before the next command\n"
    )
    monkeypatch.undo()
    paid = h.store.bill("inv-1")
    assert paid is not None
    # 100_000_000 atomic USDC / 10^6 = 100 USDC x $1 = $100.00 on the $100.00 bill: PAID (saved), its event not sent
    assert (paid.status, paid.settled_usd, paid.settled_announced) == (BillStatus.PAID, Decimal("100.00"), False)


def _sibling_counted_in_a_net_credit(h: Harness) -> None:
    """0.5 SOL (500,000,000 lamports) at solana:sig-split:1, kept counted in solana:sig-split:0 - the net credit of
    1.5 SOL stored on inv-1 before the split (1.5 x $150 = $225.00; D91 amended (sp3))."""
    h.clock.now = T0 + timedelta(minutes=5)
    sibling = transfer("sig-split", "SOL", 500_000_000, T0 + timedelta(minutes=4), chain="solana", index=1)
    h.settlement.record_seen(sibling, counted_in="solana:sig-split:0")


def test_given_a_payment_counted_in_another_when_recorded_refunded_then_exit_2_and_still_listed(
    stack: Stack, table: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Review (rsp3) F1, D91 amended (sp4): refunding the 0.5 SOL counted in inv-1's 1.5 SOL net would leave
    1.5 - 0.5 = 1.0 SOL kept = $150.00 against $225.00 counted ($75.00 short). Refused (exit 2, as the CLI's other
    refusals), naming the payment it is counted in; it stays listed, no refund recorded. Before: recorded."""
    h = harness(stack)
    _sibling_counted_in_a_net_credit(h)
    bus = ("--event-bus", stack.template.physical_name("BillingEventBus"))

    with pytest.raises(SystemExit) as exit_info:
        main(["crypto", "refunded", "solana:sig-split:1", "--tx", "sig-back", "--crypto-table", table, *bus])

    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "already counted in solana:sig-split:0" in err
    assert "not refunded - to send this money back, act on the bill of solana:sig-split:0" in err
    assert [(p.payment_id, p.refund_tx) for p in h.store.unattributed()] == [("solana:sig-split:1", None)]


def test_given_a_plain_payment_listed_before_a_counted_in_one_then_the_table_has_a_counted_in_column(
    stack: Stack, table: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Review (rsp3) F3: the table's columns are the first row's keys; a first row without ``counted_in`` dropped
    the column for every row. Now every row has it (None when absent): 100 USDC from a stranger, then the 0.5 SOL
    counted in solana:sig-split:0."""
    h = _stranger_paid_100_usdc(stack)
    _sibling_counted_in_a_net_credit(h)

    assert main(["crypto", "unattributed", "--crypto-table", table]) == 0
    out = capsys.readouterr().out
    assert "counted_in" in out
    assert "solana:sig-split:0" in out
    listed = _cli(capsys, "crypto", "unattributed", "--crypto-table", table)
    assert sorted((row["payment_id"], row["counted_in"]) for row in listed) == [  # type: ignore[union-attr]
        ("ethereum:0xabc:0", None),
        ("solana:sig-split:1", "solana:sig-split:0"),
    ]


def test_given_a_bill_whose_payment_is_stuck_then_crypto_payments_shows_it_stalled_and_what_the_bill_asks(
    stack: Stack, table: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """D419, D434: the $100.00 bill paid 60 USDC (final) and 40 USDC its watcher named stuck - the operator's view
    of the bill shows the 40.00 ``stalled`` (the 60.00 not), the bill OPEN and PARTIAL (and MULTIPLE) asking
    100.00 - 60.00 = 40.00; the table form names both too. Before: no ``crypto payments`` view (exit 2, argparse),
    no way for the operator to see a payment stalled."""
    h = harness(stack)
    h.store.link_wallet("evm", CUSTOMER_WALLET, "acct-1", "ethereum", T0)
    h.store.create_bill(bill())
    h.store.add_quote(quote("q-usdc", "USDC", 100_000_000, "1"))
    h.clock.now = T0 + timedelta(minutes=5)
    h.settlement.record_seen(transfer("0xc1", "USDC", 60_000_000, T0 + timedelta(minutes=3)))
    h.settlement.record_seen(transfer("0xc2", "USDC", 40_000_000, T0 + timedelta(minutes=4)))
    h.settlement.finalized("ethereum:0xc1:0")
    h.settlement.stalled("ethereum:0xc2:0")

    shown = _cli(capsys, "crypto", "payments", "inv-1", "--crypto-table", table)

    line = {"asset": "USDC", "counted": True, "late": False, "review": False, "refund_owed": False}
    assert shown == {
        "invoice_id": "inv-1",
        "account_id": "acct-1",
        "status": "OPEN",
        "flags": ["MULTIPLE", "PARTIAL"],
        "total_usd": "100.00",
        "asked_usd": "40.00",
        "payments": [
            {"payment_id": "ethereum:0xc1:0", "tx_id": "0xc1", "status": "FINALIZED", "amount_usd": "60.00"}
            | line
            | {"stalled": False},
            {"payment_id": "ethereum:0xc2:0", "tx_id": "0xc2", "status": "SEEN", "amount_usd": "40.00"}
            | line
            | {"stalled": True},
        ],
    }
    assert main(["crypto", "payments", "inv-1", "--crypto-table", table]) == 0
    text = capsys.readouterr().out
    assert "OPEN (MULTIPLE, PARTIAL), total 100.00, asks 40.00" in " ".join(text.split())
    assert "stalled" in text


def test_given_two_sub_cent_payments_then_crypto_payments_shows_what_the_customer_was_told(
    stack: Stack, table: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """D435 amended (gcw): two 10.005 USDC payments (10,005,000 units at $1.00: 10.005 exact each) - the bill counts
    20.01 (their sum rounded once) and the customer's history shows it split to the cent, 10.01 and 10.00
    (``shown_usd``, D217). The operator's view shows the same figures, each payment's as the history does, adding up
    to 20.01. Before: each line's own USD rounded, both 10.00 or both 10.01 - a cent apart from the history."""
    h = harness(stack)
    h.store.link_wallet("evm", CUSTOMER_WALLET, "acct-1", "ethereum", T0)
    h.store.create_bill(bill())
    h.store.add_quote(quote("q-usdc", "USDC", 100_000_000, "1"))
    h.clock.now = T0 + timedelta(minutes=5)
    h.settlement.record_seen(transfer("0xd1", "USDC", 10_005_000, T0 + timedelta(minutes=3)))
    h.settlement.record_seen(transfer("0xd2", "USDC", 10_005_000, T0 + timedelta(minutes=4)))

    shown = _cli(capsys, "crypto", "payments", "inv-1", "--crypto-table", table)

    rows = {row["payment_id"]: row["amount_usd"] for row in shown["payments"]}
    history = account_history(*h.store.account_history("acct-1"), CHAINS, h.clock.now)
    told = {p["payment_id"]: p["amount_usd"] for p in history["payments"]}
    assert sorted(rows.values()) == ["10.00", "10.01"]  # 20.01 split to the cent
    assert rows == told
    assert shown["asked_usd"] == "79.99"  # 100.00 - 20.01


def test_given_no_such_bill_then_crypto_payments_exits_2_naming_it(
    stack: Stack, table: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["crypto", "payments", "inv-404", "--crypto-table", table])
    assert exit_info.value.code == 2
    assert "no crypto bill 'inv-404'" in capsys.readouterr().err
