"""`kilo-billing account create --billing` and `kilo-billing invoice run|show` on moto (the template's usage table and
bus) with the real Stripe adapter on the Stripe emulator. Figures as in test_invoice_close.py: Team with 60,000 video
minutes in March 2026 -> 7.20 + 29.00 + 29.00 = 65.20; Personal with 6,000 -> 0.72."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import pytest
from botocore.exceptions import ClientError

from kilo_billing.invoicing import InvoiceStatus
from kilo_billing.periods_store import DynamoLedgerStore
from kilo_billing_cli.main import main
from kilo_invoice.dependencies import LazyGateway
from kilo_invoice.logic import gateway_request
from kilo_invoice.ports import Customer
from tests.integration.test_invoice_close import Invoicing, invoicing

__all__ = ["invoicing"]  # the fixture, shared with the close's integration tests


def _cli(capsys: pytest.CaptureFixture[str], *argv: str) -> dict[str, object]:
    assert main([*argv, "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert isinstance(result, dict)
    return result


def _refused(capsys: pytest.CaptureFixture[str], *argv: str, code: int = 3) -> tuple[str, dict[str, Any]]:
    """``argv`` refused by the card processor: exit 3 (its own code, not a typo's 2: D358) - or ``code``: 4 when
    Stripe is unavailable (D358 amended) - no usage text; what it said (stderr) and its JSON (what was refunded, as
    stored now)."""
    with pytest.raises(SystemExit) as exit_info:
        main(list(argv))
    assert exit_info.value.code == code
    out = capsys.readouterr()
    assert "usage:" not in out.err
    shown = json.loads(out.out)
    assert isinstance(shown, dict)
    return out.err, shown


def _accounts(invoicing: Invoicing, capsys: pytest.CaptureFixture[str]) -> None:
    table = invoicing.table
    signup = ("--signup", "2026-03-01T00:00:00Z", "--usage-table", table)
    created = _cli(capsys, "account", "create", "--account", "acct-c", "--tier", "team", "--billing", "crypto", *signup)
    assert created["billing_method"] == "crypto"
    assert _cli(capsys, "account", "create", "--account", "acct-b", "--tier", "personal", *signup)[
        "billing_method"
    ] == ("card")
    invoicing.rate("acct-c", "video", 60_000)
    invoicing.rate("acct-b", "video", 6_000)
    invoicing.card("acct-b", "pm_card_visa")


def test_given_accounts_when_invoice_run_twice_then_closed_once_and_shown_with_links(
    invoicing: Invoicing, capsys: pytest.CaptureFixture[str]
) -> None:
    _accounts(invoicing, capsys)
    run = ("invoice", "run", "--period", "2026-03", "--usage-table", invoicing.table)
    first = _cli(capsys, *run)
    rows = {row["account_id"]: row for row in first["closed"]}  # type: ignore[attr-defined]
    assert sorted(rows) == ["acct-b", "acct-c"]
    assert (rows["acct-b"]["created"], rows["acct-b"]["invoice"]["total"]) == (True, "0.72")
    assert (rows["acct-c"]["invoice"]["total"], rows["acct-c"]["invoice"]["status"]) == ("65.20", "open")
    assert rows["acct-c"]["invoice"]["method"] == "crypto"
    posts = invoicing.stripe_posts()
    assert posts == 1  # the card invoice only

    again = _cli(capsys, *run, "--account", "acct-b")
    [row] = again["closed"]  # type: ignore[misc]
    assert (row["created"], row["invoice"]["total"]) == (False, "0.72")
    assert invoicing.stripe_posts() == posts  # rerun: Stripe not asked again

    shown = _cli(capsys, "invoice", "show", "--account", "acct-b", "--usage-table", invoicing.table)
    [summary] = shown["invoices"]  # type: ignore[misc]
    assert (summary["number"], summary["status"], summary["total"]) == ("KB-acct-b-00001", "open", "0.72")
    assert summary["hosted_url"].startswith("https://")
    assert summary["pdf_url"].startswith("https://")
    one = _cli(
        capsys, "invoice", "show", "--account", "acct-c", "--period", "2026-03", "--usage-table", invoicing.table
    )
    [detail] = one["invoices"]  # type: ignore[misc]
    assert detail["total"] == "65.20"
    assert [line["amount"] for line in detail["lines"] if line["kind"] == "fee"] == ["29.00"]  # April, in advance
    # the human tables: the rerun says what it found, the invoice shows its lines
    assert main([*run]) == 0
    assert "already closed" in capsys.readouterr().out
    assert (
        main(["invoice", "show", "--account", "acct-c", "--period", "2026-03", "--usage-table", invoicing.table]) == 0
    )
    shown_text = capsys.readouterr().out
    assert "KB-acct-c-00001" in shown_text
    assert "65.20" in shown_text


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["invoice", "run", "--period", "2026-13"], "month must be 1..12"),
        (["invoice", "run", "--period", "2099-01"], "has not ended"),
        (["invoice", "run", "--period", "2026-03", "--account", "admin"], "reserved"),
        (["invoice", "show", "--account", "ghost"], "not registered"),
        (["invoice", "show", "--account", "acct-c", "--period", "2026-02"], "no invoice for 2026-02"),
        (["account", "create", "--account", "acct-z", "--tier", "team", "--billing", "paypal"], "invalid choice"),
    ],
)
def test_given_bad_invoice_cli_input_then_exit_2_naming_the_problem(
    invoicing: Invoicing, capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    invoicing.register("acct-c", "team", method="crypto")
    with pytest.raises(SystemExit) as exit_info:
        main([*argv, "--usage-table", invoicing.table])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err
    assert invoicing.store.ledger("acct-c").invoices == {}


def test_given_an_event_bus_that_does_not_exist_then_invoice_run_closes_nothing_and_exits_2_fix_the_bus(
    invoicing: Invoicing, capsys: pytest.CaptureFixture[str]
) -> None:
    """Review cl2 (4): real EventBridge has been reported to answer PutEvents to a bus that does not exist with success
    (aws/aws-cli#9186, aws/aws-sdk#186): ``--event-bus <typo>`` would close the period and lose its InvoiceIssued.v1.
    The bus is asked for (``DescribeEventBus``) before any close: exit 2, no invoice, Stripe not asked."""
    _accounts(invoicing, capsys)
    posts = invoicing.stripe_posts()

    code = main(["invoice", "run", "--period", "2026-03", "--usage-table", invoicing.table, "--event-bus",
                 "kilo-typo-bus"])  # fmt: skip

    out = capsys.readouterr()
    assert (code, out.out) == (2, "")
    assert out.err == (
        "kilo-billing: the event bus 'kilo-typo-bus' was not found (ResourceNotFoundException): nothing was written; "
        "fix --event-bus 'kilo-typo-bus' (or EVENT_BUS_NAME), then rerun\n"
    )
    # read back: neither account's March closed, Stripe not asked (0 more posts)
    assert (invoicing.store.ledger("acct-b").invoices, invoicing.store.ledger("acct-c").invoices) == ({}, {})
    assert invoicing.stripe_posts() == posts


def _march_paid(invoicing: Invoicing, capsys: pytest.CaptureFixture[str]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """acct-a's March invoice KB-acct-a-00001 paid by its card (visa): 65.20, nothing refunded. Returns the refund
    command's arguments and the table option."""
    from tests.integration.test_invoice_close import _month  # noqa: PLC0415

    _month(invoicing)  # acct-a: team, 60,000 video minutes in March, card that pays -> 7.20 + 29.00 + 29.00 = 65.20
    invoicing.start("2026-04-01T06:00:00Z")
    invoicing.close_all()
    for event in list(invoicing.http.emulator.events):
        assert invoicing.webhook(event) == 200
    invoicing.payments()
    capsys.readouterr()  # the handlers' log lines so far
    secret = ("--stripe-secret", invoicing.stack.template.parameters["StripeApiKeySecretName"])
    refund = ("invoice", "refund", "--account", "acct-a", "--invoice", "KB-acct-a-00001", *secret)
    return refund, ("--usage-table", invoicing.table)


def test_given_a_paid_card_invoice_when_refunded_in_two_parts_then_stripe_refunds_and_our_record_follows(
    invoicing: Invoicing, capsys: pytest.CaptureFixture[str]
) -> None:
    refund, table = _march_paid(invoicing, capsys)
    secret = refund[-2:]  # --stripe-secret NAME
    part = _cli(capsys, *refund, "--amount", "10.00", *table)
    assert (part["status"], part["total"], part["refunded"]) == ("paid", "65.20", "10.00")
    rest = _cli(capsys, *refund, *table)  # the rest: 65.20 - 10.00
    assert rest["refunded"] == "65.20"
    assert invoicing.stripe_posts("/v1/refunds") == 2

    for argv, message in (
        ([*refund, *table], "at most 0.00"),  # nothing left to refund
        (["invoice", "refund", "--account", "acct-c", "--invoice", "KB-acct-c-00001", *secret, *table], "open"),
        ([*refund, "--amount", "1.005", *table], "whole cents"),
        (
            [
                "invoice",
                "crypto-refund-sent",
                "--account",
                "acct-c",
                "--invoice",
                "KB-acct-c-00001",
                "--transaction",
                "0xabc",
                *table,
            ],
            "owes no refund",
        ),
    ):
        with pytest.raises(SystemExit) as exit_info:
            main(argv)
        assert exit_info.value.code == 2
        assert message in capsys.readouterr().err
    assert invoicing.stripe_posts("/v1/refunds") == 2


def _march_card_1s_refund_returned(
    invoicing: Invoicing, capsys: pytest.CaptureFixture[str]
) -> tuple[str, str, tuple[str, ...], tuple[str, ...]]:
    """acct-a's March 65.20 paid 40.00 (card 1) + 25.20 (card 2, another card); a refund of 40.00 made on card 1 and
    returned by its bank, the events delivered: 0.00 refunded. Returns the two payment intents and the refund
    command's arguments."""
    from tests.integration.test_invoice_close import _month  # noqa: PLC0415

    _month(invoicing)  # acct-a: team, 60,000 video minutes in March, card that pays -> 7.20 + 29.00 + 29.00 = 65.20
    invoicing.start("2026-04-01T06:00:00Z")
    invoicing.close_all()
    seen = len(invoicing.http.emulator.events)
    for event in invoicing.http.emulator.events[:seen]:
        assert invoicing.webhook(event) == 200
    invoicing.payments()
    gateway_id = invoicing.invoice("acct-a").gateway_id
    assert gateway_id is not None
    first, second = invoicing.http.emulator.split_payment(gateway_id, 4000, "pm_card_mastercard")
    capsys.readouterr()
    secret = ("--stripe-secret", invoicing.stack.template.parameters["StripeApiKeySecretName"])
    refund = ("invoice", "refund", "--account", "acct-a", "--invoice", "KB-acct-a-00001", *secret)
    table = ("--usage-table", invoicing.table)
    assert _cli(capsys, *refund, "--amount", "40.00", *table)["refunded"] == "40.00"
    (made,) = invoicing.http.emulator.objects["refund"]
    invoicing.http.emulator.fail_refund(made)
    for event in invoicing.http.emulator.events[seen:]:
        assert invoicing.webhook(event) == 200
    invoicing.payments()
    capsys.readouterr()
    assert invoicing.invoice("acct-a").refunded == Decimal("0.00")  # 40.00 - 40.00 returned

    return first, second, refund, table


def test_given_a_refund_the_cards_bank_returned_when_refunded_again_then_refused_unless_to_failed_card(
    invoicing: Invoicing, capsys: pytest.CaptureFixture[str]
) -> None:
    """acct-a's March 65.20 paid in two payments, 40.00 (card 1, the older) + 25.20 (card 2: 65.20 - 40.00). A refund
    of 40.00 goes to card 1 and its bank returns it (0.00 refunded, 65.20 refundable again). Refunding all again:
    only 25.20 fits card 2, the other 40.00 would go to card 1 - refused, exit 3, nothing sent, saying to return it
    another way (before: 40.00 to card 1 again + 25.20). With ``--to-failed-card``: 25.20 + 40.00 = 65.20 refunded.
    Card 2 is another card (its own fingerprint): the rule reads the card, not the payment (D355)."""
    first, second, refund, table = _march_card_1s_refund_returned(invoicing, capsys)
    said, shown = _refused(capsys, *refund, *table, "--json")
    assert "40.00 of it would go back to a card whose bank returned a refund" in said
    assert "--to-failed-card" in said
    assert (shown["refunded"], shown["refunded_by_this_run"]) == ("0.00", "0.00")  # nothing by this run
    assert "40.00 of it would go back" in shown["refused"]
    refunds = [(r["payment_intent"], r["amount"]) for r in invoicing.http.emulator.objects["refund"].values()]
    assert refunds == [(first, 4000)]  # nothing sent
    assert _cli(capsys, *refund, "--to-failed-card", *table)["refunded"] == "65.20"
    refunds = [(r["payment_intent"], r["amount"]) for r in invoicing.http.emulator.objects["refund"].values()]
    assert refunds == [(first, 4000), (second, 2520), (first, 4000)]  # card 2 first, then card 1 as told


def _card_1s_refund_answered(
    invoicing: Invoicing, monkeypatch: pytest.MonkeyPatch, first: str, body: object, status: int, request_id: str = "r"
) -> Any:
    """Stripe answers ``body`` with ``status`` to every refund on card 1's payment ``first`` (its retries too); the
    rest answered. Returns the real answer, to put back."""
    answer = invoicing.http.request

    def card_1s_refund_answered(method: str, url: str, headers: Any, post_data: Any = None, **kwargs: Any) -> Any:
        if method.lower() == "post" and url.endswith("/v1/refunds") and f"payment_intent={first}" in str(post_data):
            return json.dumps(body), status, {"request-id": request_id}
        return answer(method, url, headers, post_data, **kwargs)

    monkeypatch.setattr(invoicing.http, "request", card_1s_refund_answered)
    return answer


def test_given_a_refund_refused_after_part_was_made_then_the_cli_exits_3_and_says_what_was_refunded(
    invoicing: Invoicing, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """As above, then refund all with ``--to-failed-card --json`` while Stripe refuses refunds on card 1's payment
    (400 ``charge_disputed``): card 2's 25.20 is made first, card 1's 40.00 refused. Exit 3 (not the usage error's
    2, no usage text), the refusal on stderr, and the JSON says what is refunded: 25.20 by this run, 25.20 in all
    (65.20 - 25.20 = 40.00 left). Before: parser.error - usage text, exit 2, no JSON."""
    from tests.unit.test_stripe_refund_partly_refused import CHARGE_DISPUTED  # noqa: PLC0415

    first, second, refund, table = _march_card_1s_refund_returned(invoicing, capsys)
    _card_1s_refund_answered(invoicing, monkeypatch, first, CHARGE_DISPUTED, 400, "req_disputed")
    said, shown = _refused(capsys, *refund, "--to-failed-card", "--json", *table)
    assert "25.20 of 65.20 refunded" in said
    assert (shown["refunded"], shown["refunded_by_this_run"]) == ("25.20", "25.20")
    assert "charged back" in shown["refused"]
    refunds = [(r["payment_intent"], r["amount"]) for r in invoicing.http.emulator.objects["refund"].values()]
    assert refunds == [(first, 4000), (second, 2520)]


def test_given_an_account_created_with_a_past_signup_when_a_later_month_is_run_then_its_first_month_is_billed_first(
    invoicing: Invoicing, capsys: pytest.CaptureFixture[str]
) -> None:
    """Crypto Team from March 1st, 60,000 video minutes in March, never invoiced; the operator runs April: March is
    closed first (7.20 + 29.00 March + 29.00 April ahead = 65.20), then April (29.00: May ahead) - D51 amended."""
    signup = ("--signup", "2026-03-01T00:00:00Z", "--usage-table", invoicing.table)
    _cli(capsys, "account", "create", "--account", "acct-c", "--tier", "team", "--billing", "crypto", *signup)
    invoicing.rate("acct-c", "video", 60_000)
    run = ("invoice", "run", "--period", "2026-04", "--account", "acct-c", "--usage-table", invoicing.table)
    rows = _cli(capsys, *run)["closed"]
    assert [(r["period"], r["created"], r["invoice"]["total"]) for r in rows] == [  # type: ignore[attr-defined]
        ("2026-03", True, "65.20"),
        ("2026-04", True, "29.00"),
    ]
    assert sorted(invoicing.store.ledger("acct-c").invoices) == ["acct-c/2026-03", "acct-c/2026-04"]


def _acct_a_status_and_total(invoicing: Invoicing) -> tuple[InvoiceStatus, str]:
    """acct-a's invoice as we hold it: its status and total."""
    ours = invoicing.invoice("acct-a")
    return ours.status, str(ours.total)


def _march_draft(invoicing: Invoicing, capsys: pytest.CaptureFixture[str], card: bool = True) -> tuple[str, ...]:
    """acct-a, Team, card: 60,000 video minutes in March -> 7.20 + 29.00 (March) + 29.00 (April in advance) = 65.20.
    Its stored customer is one Stripe does not know: the close stores March's draft, Stripe refuses its issue, and
    every later month's close fails behind it (D336). Returns the table option."""
    invoicing.register("acct-a", "team")
    invoicing.rate("acct-a", "video", 60_000)
    if card:
        invoicing.card("acct-a", "pm_card_visa")
    invoicing.store.save_billing("acct-a", customer_id="cus_unknown0000000")
    table = ("--usage-table", invoicing.table)
    for period in ("2026-03", "2026-04"):
        with pytest.raises(SystemExit) as exit_info:
            main(["invoice", "run", "--period", period, "--account", "acct-a", *table])
        assert exit_info.value.code == 1
    assert "not closed" in capsys.readouterr().out
    ledger = invoicing.store.ledger("acct-a")
    assert [(i.period, i.status.value, str(i.total)) for i in ledger.invoices.values()] == [
        ("2026-03", "draft", "65.20")
    ]
    return table


def test_given_a_draft_stripe_refused_when_void_draft_then_ours_is_void_and_april_closes(
    invoicing: Invoicing, capsys: pytest.CaptureFixture[str]
) -> None:
    """Before: no ``void-draft`` command (argparse exit 2) - April stayed behind March's draft. Now: without --yes
    nothing is done; with it March is void (Stripe holds nothing for it), 36.20 of it (usage 7.20 + March's fee 29.00)
    is not billed again (the watermarks stay), April's fee it billed ahead (29.00) is; April then closes:
    April's fee again 29.00 + May's in advance 29.00 = 58.00."""
    table = _march_draft(invoicing, capsys)
    void = ("invoice", "void-draft", "acct-a", "2026-03", "--reason", "Stripe refuses the customer", *table)
    with pytest.raises(SystemExit) as exit_info:
        main([*void])
    assert exit_info.value.code == 2
    assert "--yes" in capsys.readouterr().err
    assert invoicing.invoice("acct-a").status is InvoiceStatus.DRAFT

    done = _cli(capsys, *void, "--yes")
    assert (done["number"], done["status"], done["total"]) == ("KB-acct-a-00001", "void", "65.20")
    assert (done["not_billed_again"], done["billed_again"], done["processor"]) == ("36.20", "29.00", None)
    assert done["reason"] == "Stripe refuses the customer"
    stored = invoicing.invoice("acct-a")  # read back from the table: the reason is kept on the invoice
    assert (stored.status, stored.void_reason) == (InvoiceStatus.VOID, "Stripe refuses the customer")
    assert invoicing.http.emulator.objects.get("invoice", {}) == {}

    customer = invoicing.gateway().ensure_customer(Customer("acct-a"))  # the operator fixed the customer
    invoicing.store.save_billing("acct-a", customer_id=customer)
    april = _cli(capsys, "invoice", "run", "--period", "2026-04", "--account", "acct-a", *table)
    [row] = april["closed"]  # type: ignore[misc]
    assert (row["period"], row["created"], row["invoice"]["total"]) == ("2026-04", True, "58.00")
    assert row["invoice"]["status"] == "open"
    with pytest.raises(SystemExit) as exit_info:
        main([*void, "--yes"])
    assert exit_info.value.code == 2
    assert "KB-acct-a-00001 is void: only a draft" in capsys.readouterr().err


def test_given_a_draft_stripe_holds_open_when_void_draft_then_stripe_voids_it_first(
    invoicing: Invoicing, capsys: pytest.CaptureFixture[str]
) -> None:
    """Stripe issued March (open, 65.20) but our record stayed a draft: ``void-draft`` voids Stripe's invoice, then
    ours (naming it); Stripe's ``invoice.voided`` arriving later moves nothing (its links only). (No card saved: Stripe's invoice stays open.)"""
    table = _march_draft(invoicing, capsys, card=False)
    gateway = invoicing.gateway()
    customer = gateway.ensure_customer(Customer("acct-a"))
    at_stripe = gateway.issue_invoice(gateway_request(invoicing.invoice("acct-a"), customer))
    assert at_stripe.status == "open"
    done = _cli(capsys, "invoice", "void-draft", "acct-a", "2026-03", "--reason", "duplicate", "--yes", *table)
    assert (done["status"], done["processor"]) == ("void", f"Stripe invoice {at_stripe.gateway_id} voided")
    assert invoicing.http.emulator.objects["invoice"][at_stripe.gateway_id]["status"] == "void"
    before = invoicing.invoice("acct-a")
    assert (before.status, before.gateway_id) == (InvoiceStatus.VOID, at_stripe.gateway_id)
    for event in list(invoicing.http.emulator.events):
        assert invoicing.webhook(event) == 200
    invoicing.payments()
    after = invoicing.invoice("acct-a")
    assert (after.status, after.transitions) == (InvoiceStatus.VOID, before.transitions)
    assert invoicing.store.ledger("acct-a").billing.credit == 0


def _march_left_a_draft_at_stripe(
    invoicing: Invoicing, capsys: pytest.CaptureFixture[str]
) -> tuple[dict[str, Any], tuple[str, ...]]:
    """acct-a, Team, card, March 65.20; a 5.00 Stripe balance in the way: Stripe's invoice left a draft, ours a draft
    (the run exits 1). Returns Stripe's invoice and the table option."""
    invoicing.register("acct-a", "team")
    invoicing.rate("acct-a", "video", 60_000)
    invoicing.card("acct-a", "pm_card_visa")
    customer = invoicing.gateway().ensure_customer(Customer("acct-a"))  # the one the card was saved on
    invoicing.http.emulator.objects["customer"][customer]["balance"] = -500
    table = ("--usage-table", invoicing.table)
    with pytest.raises(SystemExit) as exit_info:
        main(["invoice", "run", "--period", "2026-03", "--account", "acct-a", *table])
    assert exit_info.value.code == 1
    capsys.readouterr()
    [at_stripe] = invoicing.http.emulator.objects["invoice"].values()
    assert (at_stripe["status"], invoicing.invoice("acct-a").status) == ("draft", InvoiceStatus.DRAFT)
    return at_stripe, table


def test_given_stripe_left_its_invoice_a_draft_when_void_draft_then_stripe_deletes_it_and_ours_is_void(
    invoicing: Invoicing, capsys: pytest.CaptureFixture[str]
) -> None:
    """acct-a, Team, card, March 65.20 (7.20 + 29.00 + 29.00 April ahead). The customer has a Stripe balance (a 5.00
    credit made in the dashboard) that Stripe would apply: the adapter leaves Stripe's invoice a draft and refuses to
    finalize it, ours stays a draft. Before (D338 as first written): void-draft refused ("delete it in Stripe").
    Now: Stripe's draft is deleted (a DELETE on the emulator behind the SDK), ours is void with the reason kept."""
    at_stripe, table = _march_left_a_draft_at_stripe(invoicing, capsys)
    void = ("invoice", "void-draft", "acct-a", "2026-03", "--reason", "Stripe balance in the way", "--yes", *table)
    done = _cli(capsys, *void)
    assert (done["status"], done["processor"]) == ("void", f"Stripe draft invoice {at_stripe['id']} deleted")
    assert invoicing.http.emulator.objects["invoice"] == {}
    assert [r.method for r in invoicing.http.requests if r.path == f"/v1/invoices/{at_stripe['id']}"][-1] == "delete"
    stored = invoicing.invoice("acct-a")
    assert (stored.status, stored.void_reason, stored.gateway_id) == (
        InvoiceStatus.VOID,
        "Stripe balance in the way",
        None,
    )


def test_given_a_note_stripe_refuses_as_ours_to_fix_when_invoice_run_then_it_shows_the_note_waiting(
    invoicing: Invoicing, capsys: pytest.CaptureFixture[str]
) -> None:
    """March 65.20 open at Stripe; Stripe no longer knows that invoice (404); 5,000 March minutes go away (-3.60):
    April's close issues April and the note lowering March waits (D330). Before: ``invoice run`` did not say so."""
    invoicing.register("acct-a", "team")
    invoicing.rate("acct-a", "video", 60_000)
    invoicing.card("acct-a", "pm_card_visa")
    table = ("--usage-table", invoicing.table)
    _cli(capsys, "invoice", "run", "--period", "2026-03", "--account", "acct-a", *table)
    march = invoicing.invoice("acct-a")
    assert march.gateway_id is not None
    invoicing.http.emulator.objects["invoice"].pop(march.gateway_id)
    invoicing.rate("acct-a", "video", -5_000)
    run = ("invoice", "run", "--period", "2026-04", "--account", "acct-a", *table)
    [row] = _cli(capsys, *run)["closed"]  # type: ignore[misc]
    [waiting] = row["notes_waiting"]
    assert waiting["credit_id"] == "acct-a/2026-03/credit-2026-04"
    assert waiting["why"].startswith("Stripe refused (404): No such invoice")
    assert main([*run]) == 0
    text = capsys.readouterr().out
    assert "acct-a/2026-03/credit-2026-04" in text
    assert "waiting" in text


def test_given_a_pending_refund_when_a_run_asks_another_amount_then_it_finishes_it_and_exits_3_saying_so(
    invoicing: Invoicing, capsys: pytest.CaptureFixture[str]
) -> None:
    """As above (0.00 refunded after card 1's bank returned the 40.00); a 10.00 refund is asked while Stripe is
    unreachable: pending. A run asking 5.00 finishes the pending 10.00 (it fits card 2's 25.20 - 1000 cents there)
    and does not refund the 5.00: exit 3 (money moved: never the usage error's 2), no usage text, the JSON says what
    is refunded - 10.00, all by this run, 65.20 - 10.00 = 55.20 kept - and why the 5.00 was not. Before: ValueError
    -> parser.error: usage text, exit 2, empty stdout, after 10.00 was refunded."""
    first, second, refund, table = _march_card_1s_refund_returned(invoicing, capsys)
    invoicing.http.faults[:0] = [503] * 20  # Stripe unreachable, its retries too: the 10.00 request stays pending
    _refused(capsys, *refund, "--amount", "10.00", *table, "--json", code=4)  # said, exit 4: D358 amended
    invoicing.http.faults.clear()
    pending = invoicing.invoice("acct-a").refund_pending
    assert pending is not None
    assert pending.amount == Decimal("10.00")
    capsys.readouterr()
    said, shown = _refused(capsys, *refund, "--amount", "5.00", *table, "--json")
    assert "an earlier refund of 10.00" in said
    assert (shown["refunded"], shown["refunded_by_this_run"]) == ("10.00", "10.00")
    assert "10.00 refunded and 55.20 kept; the 5.00 asked now was not refunded" in shown["refused"]
    assert "Of the 55.20 kept, 40.00 came back from refunds that failed" in shown["refused"]
    refunds = [(r["payment_intent"], r["amount"]) for r in invoicing.http.emulator.objects["refund"].values()]
    assert refunds == [(first, 4000), (second, 1000)]  # the pending 10.00 made by this run, on card 2


@pytest.mark.parametrize(
    ("stripe", "what"),
    [
        ("unreachable", "Stripe could not be reached"),  # 503 on every call and every retry
        ("restricted key", "our Stripe setting is wrong"),  # 403: a restricted key without a permission (ours)
    ],
)
def test_given_stripe_unavailable_when_invoice_refund_then_exit_4_saying_the_request_is_pending_and_a_rerun_finishes_it(
    invoicing: Invoicing, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, stripe: str, what: str
) -> None:
    """acct-a's March 65.20 paid by card. 10.00 asked while Stripe is unreachable (or refuses our key): the request
    is recorded first (pending), Stripe makes nothing. Before: the GatewayUnavailableError traceback (exit 1). Now:
    exit 4, one line on stderr saying what happened and that a rerun finishes the pending 10.00 (the same request:
    nothing sent twice), and the refusal's JSON: 0.00 refunded, 0.00 by this run, 10.00 pending. Stripe back, the
    rerun refunds 10.00 once: one Stripe refund of 1000 cents (10.00 x 100), nothing pending."""
    from tests.unit.test_stripe_gateway_refusals import NO_PERMISSION  # noqa: PLC0415

    refund, table = _march_paid(invoicing, capsys)
    answer = invoicing.http.request
    if stripe == "unreachable":
        invoicing.http.faults[:0] = [503] * 20  # its retries too
    else:
        monkeypatch.setattr(
            invoicing.http, "request", lambda *args, **kwargs: (json.dumps(NO_PERMISSION), 403, {"request-id": "r"})
        )
    said, shown = _refused(capsys, *refund, "--amount", "10.00", *table, "--json", code=4)
    assert said.count("\n") == 1  # one line, no traceback
    assert "Traceback" not in said
    assert said.startswith(f"kilo-billing: {what}")
    assert "the refund of 10.00 is pending" in said
    assert "run again to finish it" in said
    assert "nothing is sent twice" in said
    assert shown["unavailable"] == said.removeprefix("kilo-billing: ").strip()
    assert (shown["refunded"], shown["refunded_by_this_run"], shown["refund_pending"]) == ("0.00", "0.00", "10.00")
    assert invoicing.http.emulator.objects.get("refund", {}) == {}  # Stripe made nothing

    invoicing.http.faults.clear()
    monkeypatch.setattr(invoicing.http, "request", answer)  # Stripe back (the key fixed)
    done = _cli(capsys, *refund, "--amount", "10.00", *table)
    assert (done["refunded"], done["status"]) == ("10.00", "paid")
    assert [r["amount"] for r in invoicing.http.emulator.objects["refund"].values()] == [1000]  # once
    pending = invoicing.invoice("acct-a").refund_pending
    assert pending is None


def test_given_the_stripe_secret_name_wrong_when_invoice_refund_then_exit_4_saying_it_is_our_setting_to_fix(
    invoicing: Invoicing, capsys: pytest.CaptureFixture[str]
) -> None:
    """acct-a's March 65.20 paid by card; 10.00 asked with ``--stripe-secret`` naming no secret (a typo): Secrets
    Manager answers ResourceNotFoundException. Before: "Stripe could not be reached (secret ... could not be read)",
    as if Stripe were down, nothing to fix. Now: our setting (``GatewayMisconfiguredError``, D315): exit 4, one line
    saying so and to fix it, the 10.00 request pending; Stripe asked nothing. With the right secret the same command
    refunds 10.00 once: one Stripe refund of 1000 cents (10.00 x 100)."""
    refund, table = _march_paid(invoicing, capsys)
    wrong = (*refund[:-1], "kilo-billing/no-such-secret")  # --stripe-secret's value
    said, shown = _refused(capsys, *wrong, "--amount", "10.00", *table, "--json", code=4)
    assert said.count("\n") == 1  # one line, no traceback
    assert said.startswith("kilo-billing: our Stripe setting is wrong (secret kilo-billing/no-such-secret not found")
    assert "could not be reached" not in said
    assert "fix it (the Stripe secret's name or value, the key's permissions), then run again to finish it" in said
    assert "the refund of 10.00 is pending" in said
    assert (shown["refunded"], shown["refunded_by_this_run"], shown["refund_pending"]) == ("0.00", "0.00", "10.00")
    assert invoicing.http.emulator.objects.get("refund", {}) == {}  # Stripe asked nothing

    done = _cli(capsys, *refund, "--amount", "10.00", *table)  # the name fixed
    assert (done["refunded"], done["status"]) == ("10.00", "paid")
    assert [r["amount"] for r in invoicing.http.emulator.objects["refund"].values()] == [1000]


def test_given_a_refund_over_two_cards_when_stripe_fails_after_the_first_then_exit_4_says_what_stripe_made(
    invoicing: Invoicing, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """acct-a's March 65.20 paid 40.00 (card 1) + 25.20 (card 2); card 1's earlier 40.00 returned by its bank: 0.00
    refunded. All of it asked with ``--to-failed-card``: card 2 first, 25.20 (2520 cents) made; card 1's 40.00 then
    meets 503 on every try. Before: exit 4 saying only "the refund of 65.20 is pending", as if nothing were sent.
    Now: the line and the JSON say 25.20 of it was made at Stripe (``made_at_stripe``); our record is unchanged
    (0.00 refunded, 65.20 pending). Stripe back, the same command finishes it: the 25.20 made is counted, card 1
    gets 65.20 - 25.20 = 40.00 (4000 cents), 65.20 refunded, nothing sent twice."""
    first, second, refund, table = _march_card_1s_refund_returned(invoicing, capsys)
    answer = _card_1s_refund_answered(invoicing, monkeypatch, first, {"error": {"message": "down"}}, 503)
    said, shown = _refused(capsys, *refund, "--to-failed-card", *table, "--json", code=4)
    assert said.count("\n") == 1
    assert said.startswith("kilo-billing: Stripe could not be reached (25.20 of 65.20 refunded on")
    assert "the refund of 65.20 is pending (Stripe made 25.20 of it before the failure)" in said
    assert "so what Stripe made of it is counted and nothing is sent twice" in said
    assert (shown["refunded"], shown["refund_pending"], shown["made_at_stripe"]) == ("0.00", "65.20", "25.20")
    made = [(r["payment_intent"], r["amount"]) for r in invoicing.http.emulator.objects["refund"].values()]
    assert made == [(first, 4000), (second, 2520)]  # the bank-returned 40.00, then card 2's 25.20

    monkeypatch.setattr(invoicing.http, "request", answer)  # Stripe back
    done = _cli(capsys, *refund, "--to-failed-card", *table)
    assert (done["refunded"], done["status"]) == ("65.20", "paid")  # 25.20 + 40.00
    made = [(r["payment_intent"], r["amount"]) for r in invoicing.http.emulator.objects["refund"].values()]
    assert made == [(first, 4000), (second, 2520), (first, 4000)]  # card 2 not refunded again
    assert invoicing.invoice("acct-a").refund_pending is None


def test_given_the_invoice_unreadable_after_stripe_failed_when_invoice_refund_then_exit_4_pending_unknown(
    invoicing: Invoicing, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """acct-a's March 65.20 paid by card; 10.00 asked while Stripe answers 503, and the table throttles every read
    after Stripe was asked. Before: the ClientError traceback chained over Stripe's (exit 1). Now: exit 4, one
    line saying Stripe could not be reached and that whether a refund is pending is unknown (the read's error named);
    the JSON has ``refund_pending`` and ``refunded_by_this_run`` "unknown"."""
    refund, table = _march_paid(invoicing, capsys)
    invoicing.http.faults[:0] = [503] * 20  # its retries too
    asked = {"stripe": False}
    stripe_refund, ledger = LazyGateway.refund, DynamoLedgerStore.ledger

    def refund_(self: LazyGateway, *args: Any, **kwargs: Any) -> str:
        asked["stripe"] = True
        return stripe_refund(self, *args, **kwargs)

    def ledger_(self: DynamoLedgerStore, *args: Any, **kwargs: Any) -> Any:
        if asked["stripe"]:
            error = {"Error": {"Code": "ProvisionedThroughputExceededException", "Message": "slow down"}}
            raise ClientError(error, "Query")  # type: ignore[arg-type]
        return ledger(self, *args, **kwargs)

    monkeypatch.setattr(LazyGateway, "refund", refund_)
    monkeypatch.setattr(DynamoLedgerStore, "ledger", ledger_)
    said, shown = _refused(capsys, *refund, "--amount", "10.00", *table, "--json", code=4)
    assert said.count("\n") == 1
    assert "Traceback" not in said
    assert said.startswith("kilo-billing: Stripe could not be reached (Stripe unavailable (503)")
    assert "whether a refund is pending is unknown - the invoice could not be read back (ClientError: " in said
    assert "ProvisionedThroughputExceededException" in said
    assert (shown["refund_pending"], shown["refunded_by_this_run"], shown["made_at_stripe"]) == (
        "unknown",
        "unknown",
        None,
    )


def test_given_stripe_unreachable_when_void_draft_then_exit_4_one_line_and_the_draft_unchanged(
    invoicing: Invoicing, capsys: pytest.CaptureFixture[str]
) -> None:
    """acct-a's March draft (65.20) Stripe refused to issue; void-draft asks Stripe first (an invoice of it held
    there?) and Stripe answers 503 to every try. Before: the GatewayUnavailableError traceback (exit 1). Now: exit
    4, one line saying ours is not voided and to run again, the JSON with it; our draft unchanged. Stripe back, the
    same command voids it."""
    table = _march_draft(invoicing, capsys)
    void = ("invoice", "void-draft", "acct-a", "2026-03", "--reason", "dup", "--yes", *table)
    invoicing.http.faults[:0] = [503] * 20
    said, shown = _refused(capsys, *void, "--json", code=4)
    assert said == (
        "kilo-billing: Stripe could not be reached (Stripe unavailable (503): emulated 503): acct-a's 2026-03 draft "
        "is not voided (ours unchanged); run again\n"
    )
    assert shown == {"unavailable": said.removeprefix("kilo-billing: ").strip()}
    assert _acct_a_status_and_total(invoicing) == (InvoiceStatus.DRAFT, "65.20")  # our draft unchanged

    invoicing.http.faults.clear()
    done = _cli(capsys, *void)
    assert (done["status"], done["total"]) == ("void", "65.20")


def test_given_stripe_deleted_its_draft_but_the_answer_was_lost_when_void_draft_then_ours_is_void_saying_so(
    invoicing: Invoicing, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Review rh2 1. Stripe's March draft deleted, the DELETE's answer lost: the SDK sends the DELETE again and Stripe
    answers 404 ``resource_missing``. Before: "our Stripe setting is wrong ... fix it", exit 4 (nothing to fix), and
    the rerun voided ours saying ``processor`` null (Stripe's draft unmentioned). Now: the 404 on the draft this run
    just found is its deletion - ours is void in the same run, ``processor`` says Stripe no longer held it."""
    at_stripe, table = _march_left_a_draft_at_stripe(invoicing, capsys)
    answer = invoicing.http.request
    lost = {"done": False}

    def lose_the_delete(method: str, url: str, headers: Any, post_data: Any = None, **kwargs: Any) -> Any:
        if method.lower() == "delete" and not lost["done"]:
            lost["done"] = True
            invoicing.http.faults[:0] = ["lost"]  # Stripe deletes it; its answer never arrives
        return answer(method, url, headers, post_data, **kwargs)

    monkeypatch.setattr(invoicing.http, "request", lose_the_delete)
    void = ("invoice", "void-draft", "acct-a", "2026-03", "--reason", "dup", "--yes", *table)
    done = _cli(capsys, *void)
    assert (done["status"], done["processor"]) == (
        "void",
        f"Stripe draft invoice {at_stripe['id']} deleted (Stripe no longer held it: an earlier try's answer lost)",
    )
    assert invoicing.http.emulator.objects["invoice"] == {}
    deletes = [r.method for r in invoicing.http.requests if r.path == f"/v1/invoices/{at_stripe['id']}"]
    assert deletes.count("delete") == 2  # the lost one, then the SDK's retry meeting 404
    assert invoicing.invoice("acct-a").status is InvoiceStatus.VOID


def test_given_stripe_refuses_to_delete_its_draft_when_void_draft_then_exit_3_one_line_and_ours_unchanged(
    invoicing: Invoicing, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Review rh2 6. Stripe's March draft; its DELETE refused (400 ``invoice_not_editable``: a refusal of the request
    itself, ``GatewayRejectedError``). Before: the traceback (exit 1). Now: exit 3 (refused, as refund's refusal), one
    line naming Stripe's refusal, ours still the draft (65.20) and Stripe's draft kept."""
    at_stripe, table = _march_left_a_draft_at_stripe(invoicing, capsys)
    answer = invoicing.http.request
    refusal = {"error": {"type": "invalid_request_error", "code": "invoice_not_editable", "message": "not editable"}}

    def refuse_the_delete(method: str, url: str, headers: Any, post_data: Any = None, **kwargs: Any) -> Any:
        if method.lower() == "delete":
            return json.dumps(refusal), 400, {"request-id": "r"}
        return answer(method, url, headers, post_data, **kwargs)

    monkeypatch.setattr(invoicing.http, "request", refuse_the_delete)
    void = ("invoice", "void-draft", "acct-a", "2026-03", "--reason", "dup", "--yes", *table)
    said, shown = _refused(capsys, *void, "--json")
    assert said == (
        "kilo-billing: Stripe's invoice is not voided or deleted (Stripe refused (400): not editable): acct-a's "
        "2026-03 draft is not voided (ours unchanged)\n"
    )
    assert shown == {"refused": said.removeprefix("kilo-billing: ").strip()}
    assert _acct_a_status_and_total(invoicing) == (InvoiceStatus.DRAFT, "65.20")  # our draft unchanged
    assert list(invoicing.http.emulator.objects["invoice"]) == [at_stripe["id"]]


@pytest.mark.parametrize(
    ("status", "why"),
    [
        # Stripe's own state refuses it (it collected, or wrote it off): not the operator's input, so 3, not 2
        ("paid", "Stripe's invoice {id} for KB-acct-a-00001 is paid; `kilo-billing invoice run` records it"),
        (
            "uncollectible",
            "Stripe's invoice {id} for KB-acct-a-00001 is uncollectible; `kilo-billing invoice run` records it",
        ),
        # a status the adapter does not know: nothing was asked of Stripe, so nothing "refused" it
        ("in_review", "Stripe invoice {id} has an unknown status 'in_review'"),
    ],
)
def test_given_stripe_holds_its_invoice_in_a_state_that_cannot_be_voided_when_void_draft_then_exit_3_one_true_line(
    invoicing: Invoicing, capsys: pytest.CaptureFixture[str], status: str, why: str
) -> None:
    """Review rh3. Stripe's March invoice (65.20) held ``status`` while ours is the draft. Before: paid and
    uncollectible raised ValueError - exit 2 "bad input", where the README says a Stripe refusal exits 3; an unknown
    status said "the card processor refused it" (nothing was asked of it). Now exit 3, one line saying Stripe's
    invoice was not voided or deleted and why; ours still the draft (65.20), Stripe's invoice kept."""
    at_stripe, table = _march_left_a_draft_at_stripe(invoicing, capsys)
    at_stripe["status"] = status  # as Stripe would hold it now
    void = ("invoice", "void-draft", "acct-a", "2026-03", "--reason", "dup", "--yes", *table)
    said, shown = _refused(capsys, *void, "--json")
    assert said == (
        f"kilo-billing: Stripe's invoice is not voided or deleted ({why.format(id=at_stripe['id'])}): acct-a's "
        "2026-03 draft is not voided (ours unchanged)\n"
    )
    assert shown == {"refused": said.removeprefix("kilo-billing: ").strip()}
    assert _acct_a_status_and_total(invoicing) == (InvoiceStatus.DRAFT, "65.20")  # our draft unchanged
    assert list(invoicing.http.emulator.objects["invoice"]) == [at_stripe["id"]]


def test_given_the_webhook_recorded_the_made_part_when_a_rerun_meets_stripe_down_then_it_is_not_said_unrecorded(
    invoicing: Invoicing, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Review rh2 3. 65.20 paid 40.00 (card 1) + 25.20 (card 2), all asked with ``--to-failed-card``: card 2's 25.20
    made, card 1 down (exit 4). The charge.refunded webhook then records the 25.20 (refunded 25.20, the 65.20 request
    still pending). A rerun, card 1 still down: before, "25.20 of it made at Stripe before the failure, not recorded
    yet" - false, it is recorded. Now (review rh3) neither line says whether it is recorded: "Stripe made 25.20 of it
    before the failure", both times. Stripe back: 25.20 + 40.00 = 65.20."""
    first, second, refund, table = _march_card_1s_refund_returned(invoicing, capsys)
    seen = len(invoicing.http.emulator.events)
    answer = _card_1s_refund_answered(invoicing, monkeypatch, first, {"error": {"message": "down"}}, 503)
    said, shown = _refused(capsys, *refund, "--to-failed-card", *table, "--json", code=4)
    assert "(Stripe made 25.20 of it before the failure)" in said
    for event in invoicing.http.emulator.events[seen:]:  # card 2's refund's events delivered meanwhile
        assert invoicing.webhook(event) == 200
    invoicing.payments()
    capsys.readouterr()
    assert str(invoicing.invoice("acct-a").refunded) == "25.20"

    said, shown = _refused(capsys, *refund, "--to-failed-card", *table, "--json", code=4)
    assert "not recorded yet" not in said
    assert "the refund of 65.20 is pending (Stripe made 25.20 of it before the failure); run again to finish it" in said
    assert (shown["refunded"], shown["refunded_by_this_run"], shown["made_at_stripe"]) == ("25.20", "0.00", "25.20")

    monkeypatch.setattr(invoicing.http, "request", answer)  # Stripe back
    done = _cli(capsys, *refund, "--to-failed-card", *table)
    assert done["refunded"] == "65.20"  # 25.20 + 40.00
    made = [(r["payment_intent"], r["amount"]) for r in invoicing.http.emulator.objects["refund"].values()]
    assert made == [(first, 4000), (second, 2520), (first, 4000)]  # card 2 not refunded again


def test_given_the_made_part_failed_at_the_bank_when_a_rerun_meets_stripe_down_then_it_is_not_said_made(
    invoicing: Invoicing, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Review rh2 4. As above: card 2's 25.20 made, card 1 down (exit 4). Card 2's bank then returns the 25.20 (its
    refund ``failed``). A rerun, card 1 still down: before, made_at_stripe 25.20 - money Stripe did not give back. Now:
    6520 asked - 4000 wanted (card 2's 2520 counted for the request: never sent again) - 2520 failed = 0 cents made:
    made_at_stripe 0.00, the line naming the 25.20 made then failed at the card's bank, as a refusal does."""
    first, second, refund, table = _march_card_1s_refund_returned(invoicing, capsys)
    _card_1s_refund_answered(invoicing, monkeypatch, first, {"error": {"message": "down"}}, 503)
    _refused(capsys, *refund, "--to-failed-card", *table, "--json", code=4)
    [card_2s] = [rid for rid, r in invoicing.http.emulator.objects["refund"].items() if r["payment_intent"] == second]
    invoicing.http.emulator.fail_refund(card_2s)  # card 2's bank returns the 25.20

    said, shown = _refused(capsys, *refund, "--to-failed-card", *table, "--json", code=4)
    assert said.startswith("kilo-billing: Stripe could not be reached (0.00 of 65.20 refunded on")
    assert "; 25.20 made then failed at the card's bank (not sent again) before the next payment's refund" in said
    assert shown["made_at_stripe"] == "0.00"
    assert "25.20 of it made at Stripe" not in said
    assert "the refund of 65.20 is pending; run again to finish it" in said  # 0.00 made: no made part named (rh3)


def test_given_our_key_refused_after_part_of_a_refund_was_made_then_a_caller_sees_it_as_misconfigured(
    invoicing: Invoicing, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Review rh2 5. As above, card 2's 25.20 made, then card 1's refund refused 403 (a restricted key without the
    permission: ours to fix). Before: ``GatewayPartlyUnavailableError(misconfigured=True)``, not an instance of
    ``GatewayMisconfiguredError`` - a caller catching that (a future Lambda) would retry and never alarm. Now: it is
    both (``GatewayPartlyMisconfiguredError``), 25.20 made said; the CLI still says our setting is wrong, exit 4."""
    from kilo_invoice.logic import refund_invoice  # noqa: PLC0415
    from kilo_invoice.ports import GatewayMisconfiguredError, GatewayPartlyUnavailableError  # noqa: PLC0415
    from tests.unit.test_stripe_gateway_refusals import NO_PERMISSION  # noqa: PLC0415

    first, _second, refund, table = _march_card_1s_refund_returned(invoicing, capsys)
    _card_1s_refund_answered(invoicing, monkeypatch, first, NO_PERMISSION, 403)
    with pytest.raises(GatewayMisconfiguredError) as info:
        refund_invoice(invoicing.store, invoicing.gateway(), "acct-a", "acct-a/2026-03", None, to_failed_card=True)
    assert isinstance(info.value, GatewayPartlyUnavailableError)
    assert info.value.refunded == Decimal("25.20")  # card 2's 2520 cents
    said, shown = _refused(capsys, *refund, "--to-failed-card", *table, "--json", code=4)  # the same request again
    assert said.startswith("kilo-billing: our Stripe setting is wrong (25.20 of 65.20 refunded on")
    assert "fix it (the Stripe secret's name or value, the key's permissions), then run again to finish it" in said
    assert shown["made_at_stripe"] == "25.20"


# values the invoice settings refuse, of variables the invoice commands never read: the queue handlers' job reserve
# (gt 0), the starter's grace window (ge 0), the payment-status handler's Stripe mode ("true" or "false") and, for a
# refund or a void, the close's Stripe Tax switch (a boolean)
UNREAD_BY_REFUND = {
    "JOB_RESERVE_SECONDS": "0",
    "INVOICE_GRACE_HOURS": "-1",
    "STRIPE_LIVEMODE": "maybe",
    "STRIPE_AUTOMATIC_TAX": "maybe",
}


def test_given_no_stripe_secret_when_invoice_run_then_bad_stripe_settings_are_not_read_and_a_crypto_account_closes(
    invoicing: Invoicing, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """D413 amended (hops): `invoice run` validated every invoice setting, so a crypto-only run (no Stripe secret: no
    Stripe call can be made) exited 2 on ``STRIPE_TIMEOUT_SECONDS=0``. acct-c: team, 60,000 video minutes in March ->
    7.20 + 29.00 + 29.00 = 65.20 (as test_invoice_close.py), by crypto."""
    invoicing.register("acct-c", "team", method="crypto")
    invoicing.rate("acct-c", "video", 60_000)
    bad = {"STRIPE_TIMEOUT_SECONDS": "0", "STRIPE_MAX_NETWORK_RETRIES": "9", "SECRET_MAX_AGE_SECONDS": "-1"}
    for name, value in (bad | UNREAD_BY_REFUND).items():
        monkeypatch.setenv(name, value)
    run = ("invoice", "run", "--period", "2026-03", "--account", "acct-c", "--stripe-secret", "")
    shown = _cli(capsys, *run, "--usage-table", invoicing.table)
    [row] = shown["closed"]  # type: ignore[misc]
    assert (row["invoice"]["method"], row["invoice"]["total"], row["created"]) == ("crypto", "65.20", True)
    assert invoicing.stripe_posts() == 0


def test_given_a_stripe_secret_when_invoice_run_then_a_bad_stripe_timeout_exits_2_naming_it_and_nothing_closes(
    invoicing: Invoicing, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The other side: named a Stripe secret, a run may call Stripe, so its Stripe settings are read - and refused
    before any close."""
    invoicing.register("acct-c", "team", method="crypto")
    invoicing.rate("acct-c", "video", 60_000)
    monkeypatch.setenv("STRIPE_TIMEOUT_SECONDS", "0")
    secret = ("--stripe-secret", invoicing.stack.template.parameters["StripeApiKeySecretName"])
    with pytest.raises(SystemExit) as exit_info:
        main(["invoice", "run", "--period", "2026-03", *secret, "--usage-table", invoicing.table])
    assert exit_info.value.code == 2
    [said] = [line for line in capsys.readouterr().err.splitlines() if "error:" in line]
    assert "STRIPE_TIMEOUT_SECONDS: Input should be greater than 0" in said
    assert invoicing.store.ledger("acct-c").invoices == {}


def test_given_bad_values_of_settings_a_refund_does_not_read_when_invoice_refund_then_it_refunds(
    invoicing: Invoicing, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """D413 amended (hops): `invoice refund` exited 2 on a bad ``JOB_RESERVE_SECONDS`` (and the rest of
    ``UNREAD_BY_REFUND``), none of which it reads. KB-acct-a-00001: 65.20 paid; 10.00 refunded."""
    refund, table = _march_paid(invoicing, capsys)
    for name, value in UNREAD_BY_REFUND.items():
        monkeypatch.setenv(name, value)
    part = _cli(capsys, *refund, "--amount", "10.00", *table)
    assert (part["status"], part["total"], part["refunded"]) == ("paid", "65.20", "10.00")
    assert invoicing.stripe_posts("/v1/refunds") == 1


def test_given_a_stripe_secret_and_stripe_automatic_tax_when_invoice_run_then_the_card_invoice_is_taxed_by_stripe(
    invoicing: Invoicing, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Review hops2 1: a run must read ``STRIPE_AUTOMATIC_TAX`` (a card invoice sent with
    ``automatic_tax[enabled]=false`` is not taxed). acct-b: personal, 6,000 video minutes in March -> 0.72, by card;
    the invoice the emulator holds has automatic tax enabled."""
    invoicing.register("acct-b", "personal")
    invoicing.rate("acct-b", "video", 6_000)
    invoicing.card("acct-b", "pm_card_visa")
    monkeypatch.setenv("STRIPE_AUTOMATIC_TAX", "true")
    secret = ("--stripe-secret", invoicing.stack.template.parameters["StripeApiKeySecretName"])
    shown = _cli(capsys, "invoice", "run", "--period", "2026-03", *secret, "--usage-table", invoicing.table)
    [row] = shown["closed"]  # type: ignore[misc]
    assert (row["invoice"]["method"], row["invoice"]["total"]) == ("card", "0.72")
    [at_stripe] = invoicing.http.emulator.objects["invoice"].values()
    assert at_stripe["automatic_tax"]["enabled"] is True


def test_given_a_stripe_secret_when_invoice_run_then_a_bad_stripe_max_network_retries_exits_2_naming_it(
    invoicing: Invoicing, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Review hops2 1: ``STRIPE_MAX_NETWORK_RETRIES`` (0..5) is read with a secret named; 9 is refused, nothing
    closed."""
    invoicing.register("acct-c", "team", method="crypto")
    invoicing.rate("acct-c", "video", 60_000)
    monkeypatch.setenv("STRIPE_MAX_NETWORK_RETRIES", "9")
    secret = ("--stripe-secret", invoicing.stack.template.parameters["StripeApiKeySecretName"])
    with pytest.raises(SystemExit) as exit_info:
        main(["invoice", "run", "--period", "2026-03", *secret, "--usage-table", invoicing.table])
    assert exit_info.value.code == 2
    [said] = [line for line in capsys.readouterr().err.splitlines() if "error:" in line]
    assert "STRIPE_MAX_NETWORK_RETRIES: Input should be less than or equal to 5" in said
    assert invoicing.store.ledger("acct-c").invoices == {}
