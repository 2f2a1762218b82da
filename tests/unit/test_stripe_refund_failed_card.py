"""A new refund after a refund the card's bank returned (D340 amended, failed card): Stripe's failed Refund no longer
counts on its charge, so the charge has room again and the adapter (oldest payment first) sent the new refund to
that same card - where it would bounce again. Now a payment with a failed refund gets no new money: the other
payments are taken, and what only the failed card's payment could hold is refused as a whole, nothing made, saying
to return it another way - unless the operator says so explicitly (``to_failed_card``, ``--to-failed-card``).

Through the Stripe SDK against the emulator (``tests/unit/test_stripe_refund_partly_refused.py``'s harness).
Figures worked by hand (price book 2026-01, Team $29/month, video $0.00072 a minute, 50,000 included): Team card,
March 60,000 minutes -> 10,000 x 0.00072 = 7.20 + March's fee 29.00 + April's in advance 29.00 = 65.20, paid in two
payments: 40.00 on card 1 (the older), 25.20 on card 2 (65.20 - 40.00). A first refund of 40.00 went to card 1
(oldest first) and its bank returned it: 40.00 - 40.00 = 0.00 refunded, 65.20 kept and refundable, card 1's charge
40.00 refundable again at Stripe, card 2's 25.20."""

from __future__ import annotations

import copy
import json
from decimal import Decimal
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from kilo_billing.invoicing import InvoiceRecord, refundable
from kilo_invoice.logic import apply_stripe_event, refund_invoice
from kilo_invoice.ports import GatewayRejectedError, GatewayUnavailableError
from tests.contract.test_ledger_store import Ledger
from tests.scenarios.test_card_payment_events import Events
from tests.unit.test_stripe_gateway_refusals import APR, NONE, _gateway, march_closed
from tests.unit.test_stripe_refund_partly_refused import DisputedIntent, _march_paid_on_two_cards, _stripe_refunds

MARCH = "acme/2026-03"


class _Bus:
    def __init__(self) -> None:
        self.published: list[tuple[str, Any]] = []

    def publish(self, detail_type: str, detail: Any) -> None:
        self.published.append((detail_type, detail))


def _first_refund_returned_by_card_1(
    http: DisputedIntent,
    card: str | None = "pm_card_mastercard",
    reason: str = "expired_or_canceled_card",
    declined: str | None = None,
) -> tuple[Ledger, str, str]:
    """65.20 paid 40.00 (card 1) + 25.20 (card 2: ``card``; None: card 1 again; ``declined``: a card whose attempt on
    payment 2 was declined first); ours of 40.00 made on payment 1, then failed with ``reason`` (default: card 1's
    bank returned it), the ``refund.failed`` event recorded: 0.00 refunded, 65.20 refundable."""
    ledger, _deps, _march, first, second = _march_paid_on_two_cards(http, card, declined)
    refund_invoice(ledger.store, _gateway(http), "acme", MARCH, Decimal("40.00"))
    assert _stripe_refunds(http) == [(first, 4000)]  # oldest first: card 1
    (made,) = http.emulator.objects["refund"]
    seen = len(http.emulator.events)
    http.emulator.fail_refund(made, reason)
    (failed,) = [e for e in http.emulator.events[seen:] if e["type"] == "refund.failed"]
    events = Events()
    key = events.add(failed["id"], failed["type"], failed["data"]["object"], failed["created"])
    apply_stripe_event(ledger.store, _Bus(), events, *key, APR.start, _gateway(http))
    found = ledger.store.ledger("acme")
    march = found.invoices[MARCH]
    assert (march.refunded, march.kept, refundable(found, march)) == (NONE, Decimal("65.20"), Decimal("65.20"))
    return ledger, first, second


def _march(ledger: Ledger) -> tuple[InvoiceRecord, Decimal]:
    found = ledger.store.ledger("acme")
    march = found.invoices[MARCH]
    return march, refundable(found, march)


def test_given_a_refund_card_1s_bank_returned_when_all_is_refunded_again_then_it_is_refused_and_nothing_sent() -> None:
    """Refund all (65.20): card 2 holds 25.20, the other 65.20 - 25.20 = 40.00 could only go to card 1 again -
    refused as a whole, nothing made at Stripe, the request dropped: 0.00 refunded, 65.20 still refundable. Before:
    40.00 sent to card 1 again (oldest first, its room back) and 25.20 to card 2."""
    http = DisputedIntent()
    ledger, first, _second = _first_refund_returned_by_card_1(http)
    with pytest.raises(GatewayRejectedError) as raised:
        refund_invoice(ledger.store, _gateway(http), "acme", MARCH, None)
    said = str(raised.value)
    assert "cannot refund 65.20 more" in said
    assert "40.00 of it would go back to a card whose bank returned a refund" in said
    assert "at most 25.20 can go to its other payments" in said
    assert "return the rest another way" in said
    assert _stripe_refunds(http) == [(first, 4000)]  # only the first, failed one
    march, left = _march(ledger)
    assert (march.refunded, march.refund_pending, left) == (NONE, None, Decimal("65.20"))


def test_given_a_refund_card_1s_bank_returned_when_part_fits_card_2_then_it_goes_to_card_2() -> None:
    """Refund 25.20: card 2's payment holds it all (2520 cents left) - made there, not on the older card 1.
    65.20 - 25.20 = 40.00 left to refund. Before: 25.20 sent to card 1 (the oldest, 40.00 room again)."""
    http = DisputedIntent()
    ledger, first, second = _first_refund_returned_by_card_1(http)
    refund_invoice(ledger.store, _gateway(http), "acme", MARCH, Decimal("25.20"))
    assert _stripe_refunds(http) == [(first, 4000), (second, 2520)]
    march, left = _march(ledger)
    assert (march.refunded, march.refund_pending, left) == (Decimal("25.20"), None, Decimal("40.00"))


def test_given_a_refund_card_1s_bank_returned_when_more_than_card_2_holds_then_none_of_it_is_sent() -> None:
    """Refund 30.00: 25.20 fits card 2, the other 30.00 - 25.20 = 4.80 only card 1 - refused as a whole before
    anything is made (not 25.20 made and 4.80 refused): 0.00 refunded, 65.20 refundable."""
    http = DisputedIntent()
    ledger, first, _second = _first_refund_returned_by_card_1(http)
    with pytest.raises(GatewayRejectedError, match=r"4\.80 of it would go back.*at most 25\.20"):
        refund_invoice(ledger.store, _gateway(http), "acme", MARCH, Decimal("30.00"))
    assert _stripe_refunds(http) == [(first, 4000)]
    march, left = _march(ledger)
    assert (march.refunded, march.refund_pending, left) == (NONE, None, Decimal("65.20"))


def test_given_a_refund_card_1s_bank_returned_when_the_operator_says_to_failed_card_then_it_goes_there_last() -> None:
    """Refund all with ``to_failed_card``: card 2 first (25.20), then card 1 (65.20 - 25.20 = 40.00) - the operator's
    explicit word. 25.20 + 40.00 = 65.20 refunded, 0.00 left to refund."""
    http = DisputedIntent()
    ledger, first, second = _first_refund_returned_by_card_1(http)
    refund_invoice(ledger.store, _gateway(http), "acme", MARCH, None, to_failed_card=True)
    assert _stripe_refunds(http) == [(first, 4000), (second, 2520), (first, 4000)]
    march, left = _march(ledger)
    assert (march.refunded, march.refund_pending, left) == (Decimal("65.20"), None, NONE)


def test_given_both_payments_made_by_one_card_when_its_bank_returned_a_refund_then_none_goes_to_the_second() -> None:
    """Payment 2 (25.20) was made by card 1 too (the same payment method and fingerprint): card 1's bank returned the
    40.00 of payment 1, so a 25.20 refund - it fits payment 2 - would go back to that same card. Refused as a whole,
    nothing sent: 0.00 refunded, 65.20 refundable, the refusal saying the invoice has no payment by another card
    (not "at most 0.00 can go to its other payments"). Before: 25.20 sent to payment 2 (the rule read the payment,
    not the card)."""
    http = DisputedIntent()
    ledger, first, second = _first_refund_returned_by_card_1(http, card=None)
    charges = {c["payment_intent"]: c for c in http.emulator.objects["charge"].values()}
    assert charges[first]["payment_method"] == charges[second]["payment_method"]  # the same card paid both
    with pytest.raises(GatewayRejectedError) as raised:
        refund_invoice(ledger.store, _gateway(http), "acme", MARCH, Decimal("25.20"))
    said = str(raised.value)
    assert "25.20 of it would go back to a card whose bank returned a refund" in said
    assert f"paying {first}, {second}" in said  # the card's payments, named as payments
    assert "expired_or_canceled_card" in said  # why its bank returned it
    assert "the invoice has no payment by another card" in said
    assert "at most 0.00" not in said
    assert _stripe_refunds(http) == [(first, 4000)]  # only the first, failed one
    march, left = _march(ledger)
    assert (march.refunded, march.refund_pending, left) == (NONE, None, Decimal("65.20"))


@pytest.mark.parametrize("reason", ["lost_or_stolen_card", "declined", "unknown"])
def test_given_card_1s_bank_returned_it_for_any_card_reason_when_all_is_refunded_then_refused(reason: str) -> None:
    """Stripe's reasons that are the card's (lost or stolen, declined, unknown; expired_or_canceled_card above):
    refund all (65.20) -> card 2 holds 25.20, 65.20 - 25.20 = 40.00 only card 1: refused, nothing sent."""
    http = DisputedIntent()
    ledger, first, _second = _first_refund_returned_by_card_1(http, reason=reason)
    with pytest.raises(GatewayRejectedError, match=rf"40\.00 of it would go back.*{reason}.*at most 25\.20"):
        refund_invoice(ledger.store, _gateway(http), "acme", MARCH, None)
    assert _stripe_refunds(http) == [(first, 4000)]


@pytest.mark.parametrize("reason", ["insufficient_funds", "merchant_request", "charge_for_pending_refund_disputed"])
def test_given_a_refund_failed_for_a_reason_not_the_cards_when_all_is_refunded_then_each_payment_gets_its_own(
    reason: str,
) -> None:
    """Payment 1's 40.00 refund failed for a reason that is not its card's bank (our Stripe balance short, our own
    request, a dispute pending): it still came back (0.00 refunded, 65.20 refundable, D340) but the card is not
    suspect. Refund all: 40.00 to payment 1 again + 25.20 to payment 2 = 65.20 refunded, 0.00 refundable. Before:
    refused, saying the card's bank returned it and it would likely bounce again."""
    http = DisputedIntent()
    ledger, first, second = _first_refund_returned_by_card_1(http, reason=reason)
    refund_invoice(ledger.store, _gateway(http), "acme", MARCH, None)
    assert _stripe_refunds(http) == [(first, 4000), (first, 4000), (second, 2520)]
    march, left = _march(ledger)
    assert (march.refunded, march.refund_pending, left) == (Decimal("65.20"), None, NONE)


def _pending_10_after_the_return(http: DisputedIntent) -> tuple[Ledger, str]:
    """One payment of 65.20 (card 1); ours of 40.00 made, then returned by card 1's bank (0.00 refunded, 65.20
    refundable); a 10.00 request recorded, its processor call timing out before Stripe was asked: pending."""
    ledger, _deps, _march0 = march_closed(http, card=True)
    refund_invoice(ledger.store, _gateway(http), "acme", MARCH, Decimal("40.00"))
    (made,) = http.emulator.objects["refund"]
    seen = len(http.emulator.events)
    http.emulator.fail_refund(made)
    (failed,) = [e for e in http.emulator.events[seen:] if e["type"] == "refund.failed"]
    events = Events()
    key = events.add(failed["id"], failed["type"], failed["data"]["object"], failed["created"])
    apply_stripe_event(ledger.store, _Bus(), events, *key, APR.start, _gateway(http))
    unreachable = _gateway(http)

    def timeout(*_args: Any) -> Any:
        raise GatewayUnavailableError("timeout")

    unreachable._retrieve = timeout  # type: ignore[method-assign]  # Stripe unreachable: nothing asked
    with pytest.raises(GatewayUnavailableError):
        refund_invoice(ledger.store, unreachable, "acme", MARCH, Decimal("10.00"))
    march, _left = _march(ledger)
    assert march.refund_pending is not None
    assert march.refund_pending.amount == Decimal("10.00")
    return ledger, str(http.emulator.objects["refund"][made]["payment_intent"])


def test_given_a_pending_request_when_to_failed_card_is_given_for_another_amount_then_it_is_not_used_on_the_pending() -> (
    None
):
    """Pending 10.00 (asked without the flag); the operator runs ``--amount 5.00 --to-failed-card``. The flag is for
    the 5.00: the pending 10.00 is finished without it - only card 1 could take it, so it is refused, nothing sent,
    the request dropped - and the run says so: 0.00 refunded, 65.20 kept, the 5.00 not refunded, run again. Then
    ``--amount 5.00 --to-failed-card`` again: 500 cents to card 1, 5.00 refunded, 65.20 - 5.00 = 60.20 refundable.
    Before: the pending 10.00 went to card 1 on the 5.00's flag and the 5.00 was never refunded."""
    http = DisputedIntent()
    ledger, intent = _pending_10_after_the_return(http)
    with pytest.raises(GatewayRejectedError) as raised:
        refund_invoice(ledger.store, _gateway(http), "acme", MARCH, Decimal("5.00"), to_failed_card=True)
    said = str(raised.value)
    assert "an earlier refund of 10.00" in said
    assert "--to-failed-card was given for the 5.00 asked now, not for it" in said
    assert "10.00 of it would go back to a card whose bank returned a refund" in said
    assert "Now 0.00 refunded and 65.20 kept, nothing pending; the 5.00 asked now was not refunded" in said
    assert _stripe_refunds(http) == [(intent, 4000)]  # nothing sent: only the first, failed one
    march, left = _march(ledger)
    assert (march.refunded, march.refund_pending, left) == (NONE, None, Decimal("65.20"))
    refund_invoice(ledger.store, _gateway(http), "acme", MARCH, Decimal("5.00"), to_failed_card=True)
    assert _stripe_refunds(http) == [(intent, 4000), (intent, 500)]
    march, left = _march(ledger)
    assert (march.refunded, march.refund_pending, left) == (Decimal("5.00"), None, Decimal("60.20"))


def test_given_a_pending_request_when_to_failed_card_is_given_for_the_same_amount_then_it_is_sent() -> None:
    """Pending 10.00; the operator runs ``--amount 10.00 --to-failed-card`` (the same request): it is finished with
    the flag - 1000 cents to card 1 - 10.00 refunded, 65.20 - 10.00 = 55.20 refundable."""
    http = DisputedIntent()
    ledger, intent = _pending_10_after_the_return(http)
    refund_invoice(ledger.store, _gateway(http), "acme", MARCH, Decimal("10.00"), to_failed_card=True)
    assert _stripe_refunds(http) == [(intent, 4000), (intent, 1000)]
    march, left = _march(ledger)
    assert (march.refunded, march.refund_pending, left) == (Decimal("10.00"), None, Decimal("55.20"))


def test_given_the_visa_paid_payment_2_after_a_declined_mastercard_attempt_when_25_20_is_refunded_then_refused() -> (
    None
):
    """Both payments paid by card 1 (the visa, whose bank returned the 40.00); payment 2's intent first had a
    mastercard attempt, declined - Stripe keeps that failed charge on the intent, older than the visa's that paid.
    25.20 fits payment 2 (2520 cents left), but the visa paid it: refused as a whole, nothing sent - 0.00 refunded,
    65.20 refundable. Before: the customer's charges were read newest first and every charge set its intent's card,
    so the older failed mastercard attempt stood for payment 2 and 25.20 went back to the visa."""
    http = DisputedIntent()
    ledger, first, second = _first_refund_returned_by_card_1(http, card=None, declined="pm_card_mastercard")
    on_second = sorted(
        (c["created"], c["status"], c["payment_method_details"]["card"]["fingerprint"])
        for c in http.emulator.objects["charge"].values()
        if c["payment_intent"] == second
    )
    visa = on_second[-1][2]
    assert [(status, print_) for _, status, print_ in on_second] == [
        ("failed", "EmuMastercard4444"),
        ("succeeded", visa),
    ]
    with pytest.raises(
        GatewayRejectedError, match=r"25\.20 of it would go back to a card whose bank returned a refund"
    ):
        refund_invoice(ledger.store, _gateway(http), "acme", MARCH, Decimal("25.20"))
    assert _stripe_refunds(http) == [(first, 4000)]  # only the first, failed one
    march, left = _march(ledger)
    assert (march.refunded, march.refund_pending, left) == (NONE, None, Decimal("65.20"))


@pytest.mark.parametrize("to_failed_card", [False, True])
def test_given_the_mastercard_paid_payment_2_after_a_declined_visa_attempt_when_25_20_is_refunded_then_it_goes_there(
    to_failed_card: bool,
) -> None:
    """Payment 2 paid by the mastercard; its intent first had an attempt by the visa (card 1, the card whose bank
    returned the 40.00), declined. The mastercard paid payment 2: 25.20 fits it (2520 cents) and is made there, with
    or without ``to_failed_card`` (the flag only takes the visa's payments last): 25.20 refunded, 65.20 - 25.20 =
    40.00 left. Before: the declined visa attempt stood for payment 2 - refused without the flag, and with it sent to
    payment 1 (the visa, 40.00 room) while the mastercard could take it all."""
    http = DisputedIntent()
    ledger, first, second = _first_refund_returned_by_card_1(http, declined="pm_card_visa")
    refund_invoice(ledger.store, _gateway(http), "acme", MARCH, Decimal("25.20"), to_failed_card=to_failed_card)
    assert _stripe_refunds(http) == [(first, 4000), (second, 2520)]
    march, left = _march(ledger)
    assert (march.refunded, march.refund_pending, left) == (Decimal("25.20"), None, Decimal("40.00"))


class _Page2RateLimited(DisputedIntent):
    """The emulator, except that a page after the first of the customer's charges is answered 429 (rate limited)."""

    def request(self, method: str, url: str, headers: Any, post_data: Any = None, **kwargs: Any) -> Any:
        parts = urlsplit(url)
        if parts.path == "/v1/charges" and "starting_after" in parse_qs(parts.query):
            return json.dumps({"error": {"type": "api_error", "message": "rate limited"}}), 429, {"request-id": "r"}
        return super().request(method, url, headers, post_data, **kwargs)


def _older_charges_of_the_customer(http: DisputedIntent, count: int) -> None:
    """``count`` paid charges of the customer, each its own intent and card, newer than March's: the March charges
    fall on page 2 of ``charges.list`` (100 a page)."""
    charges = http.emulator.objects["charge"]
    model = next(iter(charges.values()))
    newest = max(c["created"] for c in charges.values())
    for n in range(count):
        charge = copy.deepcopy(model) | {
            "id": f"ch_other{n:04d}",
            "created": newest + 1 + n,
            "payment_intent": f"pi_other{n:04d}",
            "payment_method": f"pm_other{n:04d}",
            "amount_refunded": 0,
            "refunded": False,
        }
        charge["payment_method_details"] = {"type": "card", "card": {"fingerprint": f"Other{n:04d}"}}
        charges[charge["id"]] = charge


def test_given_stripe_rate_limits_page_2_of_the_customers_charges_when_refunded_then_unavailable_and_pending() -> None:
    """120 newer charges put March's on page 2 of the customer's charges; Stripe answers that page 429. The refund
    (25.20) stops before anything is made as Stripe unavailable - the request pending, for a rerun - never a raw SDK
    error. Before: the first page's call was mapped, the later pages' (``auto_paging_iter``) escaped as
    ``RateLimitError``."""
    http = _Page2RateLimited()
    ledger, first, _second = _first_refund_returned_by_card_1(http)
    _older_charges_of_the_customer(http, 120)
    with pytest.raises(GatewayUnavailableError, match=r"Stripe unavailable \(429\)"):
        refund_invoice(ledger.store, _gateway(http), "acme", MARCH, Decimal("25.20"))
    assert _stripe_refunds(http) == [(first, 4000)]  # nothing made
    march, _left = _march(ledger)
    assert march.refund_pending is not None
    assert march.refund_pending.amount == Decimal("25.20")
