"""A card refund over two payments that Stripe makes on the first and refuses on the second (D329): the part
Stripe refunded is money moved - recorded as refunded, never dropped - and the operator is told the rest was refused.

Through the Stripe SDK against the emulator. Figures worked by hand (price book 2026-01, Team $29/month, video
$0.00072 a minute, 50,000 included): Team card, March 60,000 minutes -> 10,000 x 0.00072 = 7.20 + March's fee 29.00
+ April's in advance 29.00 = 65.20, paid in two payments: 40.00 on one card, 25.20 on another (the emulator's
``split_payment``). The second card's charge was disputed: Stripe refuses its refund (400 ``charge_disputed``).
Before: the request was dropped as refused - 0.00 refunded while Stripe gave 40.00 back (and refundable stayed 65.20)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from decimal import Decimal
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import stripe

from kilo_billing.invoicing import InvoiceRecord, refundable
from kilo_invoice.logic import close_account, refund_invoice
from kilo_invoice.model import CloseDeps
from kilo_invoice.ports import GatewayMisconfiguredError, GatewayRejectedError, GatewayUnavailableError
from tests.contract.test_ledger_store import SEG, Ledger
from tests.unit.test_stripe_gateway_refusals import APR, NO_PERMISSION, NONE, Answering, _gateway, march_closed

CHARGE_DISPUTED = {  # docs.stripe.com/error-codes#charge-disputed
    "error": {
        "code": "charge_disputed",
        "doc_url": "https://stripe.com/docs/error-codes/charge-disputed",
        "message": "Charge ch_1Kilo has been charged back; cannot issue a refund.",
        "type": "invalid_request_error",
    }
}


class DisputedIntent(Answering):
    """The emulator, except that a refund on the payment intent ``disputed`` is refused with ``charge_disputed``;
    ``disputes_answer`` (a status and Stripe's error body), while set, answers ``GET /v1/disputes``, whose requests
    are counted in ``disputes_asked``."""

    def __init__(self) -> None:
        super().__init__()
        self.disputed: str | None = None
        self.disputes_answer: tuple[int, dict[str, Any]] | None = None
        self.disputes_asked = 0

    def request(
        self, method: str, url: str, headers: Mapping[str, str] | None, post_data: Any = None, **kwargs: Any
    ) -> tuple[str, int, Mapping[str, str]]:
        if method.lower() == "get" and urlsplit(url).path == "/v1/disputes":
            self.disputes_asked += 1
            if self.disputes_answer is not None:
                status, body = self.disputes_answer
                return json.dumps(body), status, {"request-id": "req_disputes"}
        if method.lower() == "post" and urlsplit(url).path == "/v1/refunds" and self.disputed is not None:
            params = parse_qs(post_data if isinstance(post_data, str) else (post_data or b"").decode())
            if params.get("payment_intent") == [self.disputed]:
                return json.dumps(CHARGE_DISPUTED), 400, {"request-id": "req_disputed"}
        return super().request(method, url, headers, post_data, **kwargs)


def _march_paid_on_two_cards(
    http: DisputedIntent, card: str | None = "pm_card_mastercard", declined: str | None = None
) -> tuple[Ledger, CloseDeps, InvoiceRecord, str, str]:
    """March's 65.20 paid 40.00 by the customer's visa (card 1) + 25.20 by ``card`` (card 2: another card, its own
    fingerprint; None: the same visa again); ``declined``: a test card whose attempt on payment 2 was declined
    before ``card`` paid it (its failed charge kept on payment 2's intent, as Stripe keeps it)."""
    ledger, deps, march = march_closed(http, card=True)
    assert march.gateway_id is not None
    first, second = http.emulator.split_payment(march.gateway_id, 4000, card, declined)  # 40.00 + 25.20
    return ledger, deps, march, first, second


def _stripe_refunds(http: DisputedIntent) -> list[tuple[str, int]]:
    return [(r["payment_intent"], r["amount"]) for r in http.emulator.objects.get("refund", {}).values()]


def test_given_a_refund_refused_on_the_second_payment_then_the_first_payments_refund_is_recorded() -> None:
    http = DisputedIntent()
    ledger, _deps, _march, first, second = _march_paid_on_two_cards(http)
    http.disputed = second
    with pytest.raises(GatewayRejectedError, match=r"40\.00 of 65\.20 refunded.*rest refused.*charge"):
        refund_invoice(ledger.store, _gateway(http), "acme", "acme/2026-03", None)
    assert _stripe_refunds(http) == [(first, 4000)]  # Stripe gave 40.00 back
    found = ledger.store.ledger("acme")
    march = found.invoices["acme/2026-03"]
    assert (march.refunded, march.refund_pending) == (Decimal("40.00"), None)  # before: 0.00 refunded
    assert found.billing.credit == NONE
    assert refundable(found, march) == Decimal("25.20")  # 65.20 - 40.00 (before: 65.20)


def test_given_the_first_part_made_with_its_answer_lost_and_a_note_meanwhile_then_both_are_counted_once() -> None:
    """The first run: Stripe refunds 40.00 on the first card, its answer lost - pending. 5,000 March minutes go away
    (-3.60): April's note counts the pending 65.20 as given back (D302): 0.00 credit, 3.60 returned. The rerun finds
    the 40.00 by its metadata; the second card's 25.20 is refused. March keeps 25.20, of which 3.60 the note took off:
    3.60 becomes account credit (D310's step, for the part not refunded), 40.00 refunded, 21.60 left to refund
    (25.20 - 3.60). Before: 0.00 refunded and 3.60 credit, leaving 61.60 refundable on 25.20 kept at Stripe."""
    http = DisputedIntent()
    ledger, deps, _march, first, second = _march_paid_on_two_cards(http)
    http.lost.add("/v1/refunds")
    with pytest.raises(GatewayUnavailableError):
        refund_invoice(ledger.store, _gateway(http), "acme", "acme/2026-03", None)
    assert _stripe_refunds(http) == [(first, 4000)]
    ledger.rate("acme", "2026-03", SEG, "video", -5_000)
    close_account(deps, "acme", APR, APR.end)
    note = ledger.store.ledger("acme").credit_notes["acme/2026-03/credit-2026-04"]
    assert (note.to_credit, note.returned) == (NONE, Decimal("3.60"))
    http.disputed = second
    with pytest.raises(GatewayRejectedError, match=r"40\.00 of 65\.20 refunded"):
        refund_invoice(ledger.store, _gateway(http), "acme", "acme/2026-03", None)
    assert _stripe_refunds(http) == [(first, 4000)]  # no second refund on the first card
    found = ledger.store.ledger("acme")
    march = found.invoices["acme/2026-03"]
    assert (march.refunded, march.refund_pending) == (Decimal("40.00"), None)
    assert found.billing.credit == Decimal("3.60")
    assert refundable(found, march) == Decimal("21.60")
    history = found.credit_notes["acme/2026-03/credit-2026-04"].history
    # the note's history names the part refused (before: "the refund of 65.20 refused", though 40.00 of it was made)
    assert (
        history[-1][0] == "3.60 kept again (25.20 of the refund of 65.20 refused by the card processor): account credit"
    )


def test_given_a_refund_refused_on_its_only_payment_then_it_is_dropped_as_before() -> None:
    """Nothing made: the refusal drops the request, 0.00 refunded (D119, D310 unchanged)."""
    http = DisputedIntent()
    ledger, _deps, _march, first, _second = _march_paid_on_two_cards(http)
    http.disputed = first
    with pytest.raises(GatewayRejectedError) as raised:
        refund_invoice(ledger.store, _gateway(http), "acme", "acme/2026-03", Decimal("30.00"))
    assert "refunded" not in str(raised.value)
    march = ledger.store.ledger("acme").invoices["acme/2026-03"]
    assert (march.refunded, march.refund_pending, _stripe_refunds(http)) == (NONE, None, [])


def test_given_a_part_made_then_failed_when_the_request_is_rerun_a_day_later_then_only_the_rest_is_refunded() -> None:
    """The first run refunds 40.00 on the first card, its answer lost (pending); the card's bank then returns that
    refund (Stripe: ``failed``, the charge's refunded total back to 0), and a day later (Stripe's idempotency keys
    expired) the operator reruns the request before the failure's event was processed. The rerun finds the failed
    40.00 by the request's id - made, then failed - and refunds only what it never made: 65.20 - 40.00 = 25.20 on
    the second card. Before: failed refunds were left out of what the request had made, so the rerun refunded the
    first card's 40.00 again on its own (and 25.20 on the second): 65.20 more. Whether to send the 40.00 again (or
    another way) is the operator's new request, told by ``RefundFailed`` (D340 amended)."""
    http = DisputedIntent()
    ledger, _deps, _march, first, second = _march_paid_on_two_cards(http)
    http.lost.add("/v1/refunds")
    with pytest.raises(GatewayUnavailableError):
        refund_invoice(ledger.store, _gateway(http), "acme", "acme/2026-03", None)
    assert _stripe_refunds(http) == [(first, 4000)]
    (made,) = http.emulator.objects["refund"]
    http.emulator.fail_refund(made)
    http.emulator.expire_idempotency_keys()
    refund_invoice(ledger.store, _gateway(http), "acme", "acme/2026-03", None)
    assert _stripe_refunds(http) == [(first, 4000), (second, 2520)]  # before: (first, 4000) a second time too
    assert [r["status"] for r in http.emulator.objects["refund"].values()] == ["failed", "succeeded"]


@pytest.mark.parametrize(
    ("reason", "where"),
    [
        ("expired_or_canceled_card", "at the card's bank"),
        ("insufficient_funds", "(Stripe: insufficient_funds)"),  # not the card's: said as Stripe said it (D356)
    ],
)
def test_given_a_part_made_then_failed_when_the_rest_is_refused_then_the_failed_part_is_not_called_refunded(
    reason: str, where: str
) -> None:
    """The first run refunds 40.00 on the first card, its answer lost; it fails (``reason``) and Stripe's idempotency
    keys expire; the rerun finds the failed 40.00 by the request's id (made, not made again) and the second card's
    25.20 is refused. The refusal says 0.00 of 65.20 refunded - 40.00 made then failed at the card's bank (or with
    Stripe's reason, when not the card's) (not sent again), the rest refused. Before: "40.00 of 65.20 refunded", the
    failed 40.00 counted as refunded; and any reason was said to be the card's bank."""
    http = DisputedIntent()
    ledger, _deps, _march, first, second = _march_paid_on_two_cards(http)
    http.lost.add("/v1/refunds")
    with pytest.raises(GatewayUnavailableError):
        refund_invoice(ledger.store, _gateway(http), "acme", "acme/2026-03", None)
    (made,) = http.emulator.objects["refund"]
    http.emulator.fail_refund(made, reason)
    http.emulator.expire_idempotency_keys()
    http.disputed = second
    with pytest.raises(GatewayRejectedError) as raised:
        refund_invoice(ledger.store, _gateway(http), "acme", "acme/2026-03", None)
    said = str(raised.value)
    assert "0.00 of 65.20 refunded" in said
    assert f"40.00 made then failed {where} (not sent again)" in said
    assert "the rest refused" in said
    assert _stripe_refunds(http) == [(first, 4000)]  # the first card is not refunded again


def test_given_a_requests_own_refund_canceled_then_the_partial_refusal_says_canceled_not_failed() -> None:
    """A request's own refunds undone (``_undone_said``): a canceled one is said as canceled - "made then canceled" -
    never "made then failed (Stripe: canceled)"; a failed one keeps Stripe's reason. 40.00 canceled + 5.00 failed
    (insufficient_funds) are said apart. Before: "45.00 made then failed (Stripe: canceled, insufficient_funds)"."""
    from kilo_invoice.stripe_adapter import _undone_said  # noqa: PLC0415

    canceled = stripe.Refund.construct_from(
        {"id": "re_c", "amount": 4000, "status": "canceled", "failure_reason": None}, "sk_test"
    )
    failed = stripe.Refund.construct_from(
        {"id": "re_f", "amount": 500, "status": "failed", "failure_reason": "insufficient_funds"}, "sk_test"
    )
    assert _undone_said([canceled]) == "; 40.00 made then canceled (not sent again)"
    assert _undone_said([canceled, failed]) == (
        "; 5.00 made then failed (Stripe: insufficient_funds) (not sent again); 40.00 made then canceled (not sent again)"
    )


def test_given_the_first_cards_payment_disputed_when_the_rest_is_refunded_then_it_goes_to_the_second_card() -> None:
    """March's 65.20 paid 40.00 by card A (visa) + 25.20 by card B (mastercard); the cardholder disputes A's charge
    (the emulator's ``open_dispute``: ``charge.disputed``, its 40.00 withdrawn - a chargeback). The operator refunds
    what is left, 25.20 (65.20 - 40.00 lost in the dispute). Stripe refuses a refund of a charged-back charge (400
    ``charge_disputed``), so the disputed payment is left out: 25.20 goes to B. Hand-worked: 40.00 + 25.20 = 65.20
    paid, 40.00 lost in the dispute, 25.20 refunded on B, 65.20 - 40.00 - 25.20 = 0.00 left to refund at Stripe.
    Before: the adapter took A first - the emulator gave 25.20 on A on top of its chargeback (real Stripe refused the
    whole request and B was never tried) (D359)."""
    http = DisputedIntent()  # no refusal injected: the emulator's own dispute
    ledger, _deps, march, first, second = _march_paid_on_two_cards(http)
    assert march.gateway_id is not None
    http.emulator.open_dispute(first)
    refund_invoice(ledger.store, _gateway(http), "acme", "acme/2026-03", Decimal("25.20"))
    assert _stripe_refunds(http) == [(second, 2520)]  # before: [(first, 2520)]
    assert ledger.store.ledger("acme").invoices["acme/2026-03"].refunded == Decimal("25.20")
    with pytest.raises(
        GatewayRejectedError,
        match=r"cannot refund 0\.01 more .*: 0\.00 of its payments is left to refund \(a disputed payment left out",
    ):
        _gateway(http).refund(march.gateway_id, Decimal("0.01"), "one-cent-more")
    assert _stripe_refunds(http) == [(second, 2520)]


def test_given_a_disputed_charge_when_refunded_at_the_emulator_then_it_refuses_with_charge_disputed() -> None:
    """Stripe refuses a refund of a charged-back charge: 400, ``charge_disputed`` (docs.stripe.com/error-codes).
    Before: the emulator refunded it (25.20 on a 40.00 chargeback). Through the Stripe SDK on the emulator."""
    http = DisputedIntent()
    _ledger, _deps, _march, first, _second = _march_paid_on_two_cards(http)
    http.emulator.open_dispute(first)
    client = stripe.StripeClient("sk_test_unit", max_network_retries=0, http_client=http)
    with pytest.raises(stripe.InvalidRequestError) as raised:
        client.v1.refunds.create({"payment_intent": first, "amount": 2520})
    assert (raised.value.http_status, raised.value.code) == (400, "charge_disputed")
    assert _stripe_refunds(http) == []  # before: [(first, 2520)]


def test_given_the_first_cards_charge_under_an_inquiry_when_all_65_20_is_refunded_then_both_cards_are_refunded() -> (
    None
):
    """An inquiry (``warning_needs_response``: the card network's pre-dispute, nothing withdrawn) on A's 40.00:
    Stripe still refunds the charge (``is_charge_refundable`` true, as Stripe's own fixture of an inquiry says).
    Hand-worked: 65.20 asked, nothing withdrawn: 4000 cents on A (its 40.00, oldest first) + 65.20 - 40.00 = 25.20 =
    2520 cents on B. Before: A left out as disputed, the request refused as a whole (25.20 left of 65.20)."""
    http = DisputedIntent()
    ledger, _deps, _march, first, second = _march_paid_on_two_cards(http)
    http.emulator.open_dispute(first, inquiry=True)
    refund_invoice(ledger.store, _gateway(http), "acme", "acme/2026-03", Decimal("65.20"))
    assert _stripe_refunds(http) == [(first, 4000), (second, 2520)]
    assert ledger.store.ledger("acme").invoices["acme/2026-03"].refunded == Decimal("65.20")


@pytest.mark.parametrize("won", [None, False, True], ids=["needs_response", "lost", "won"])
def test_given_the_first_cards_chargeback_open_lost_or_won_when_65_20_is_asked_then_it_is_refused_and_25_20_goes_to_b(
    won: bool | None,
) -> None:
    """A chargeback on A's 40.00, still open (``needs_response``), lost, or WON (the 40.00 reinstated): its dispute
    says the charge is not refundable (``is_charge_refundable`` false - for a won one, as in the one real payload of
    a won dispute found, Zulip's fixture, API 2016-07-06), so A stays left out (D359), though the ledger counts a won
    dispute's 40.00 as kept. Hand-worked: 65.20 asked, only B's 25.20 left to refund -> refused as a whole, nothing
    sent; then 65.20 - 40.00 = 25.20 asked -> 2520 cents on B. Won, before (D359 amended (wd)): 4000 on A + 2520 on
    B, the emulator agreeing with the adapter's reading of a won dispute's charge as refundable."""
    http = DisputedIntent()
    _ledger, _deps, march, first, second = _march_paid_on_two_cards(http)
    assert march.gateway_id is not None
    dispute = http.emulator.open_dispute(first)
    if won is not None:
        http.emulator.close_dispute(dispute, won=won)
    with pytest.raises(
        GatewayRejectedError,
        match=r"cannot refund 65\.20 more .*: 25\.20 of its payments is left to refund \(a disputed payment left out",
    ):
        _gateway(http).refund(march.gateway_id, Decimal("65.20"), "all-of-it")
    assert _stripe_refunds(http) == []  # won, before: [(first, 4000), (second, 2520)]
    _gateway(http).refund(march.gateway_id, Decimal("25.20"), "the-rest")
    assert _stripe_refunds(http) == [(second, 2520)]


def test_given_an_inquiry_when_disputes_cannot_be_read_then_nothing_is_sent_and_a_rerun_refunds_both_cards() -> None:
    """An inquiry on A's 40.00 (refundable); Stripe unreachable on ``GET /v1/disputes`` (503): the refund sends
    nothing (A's Disputes are read before any refund is made) and the request stays pending; the rerun, Stripe
    back, finishes it. Hand-worked: 65.20 asked -> 4000 cents on A (its whole 40.00, oldest first) + 65.20 - 40.00
    = 25.20 = 2520 cents on B, once; recorded 65.20 refunded."""
    http = DisputedIntent()
    ledger, _deps, _march, first, second = _march_paid_on_two_cards(http)
    http.emulator.open_dispute(first, inquiry=True)
    http.disputes_answer = (503, {"error": {"type": "api_error", "message": "down"}})
    with pytest.raises(GatewayUnavailableError):
        refund_invoice(ledger.store, _gateway(http), "acme", "acme/2026-03", Decimal("65.20"))
    assert _stripe_refunds(http) == []
    march = ledger.store.ledger("acme").invoices["acme/2026-03"]
    assert (march.refund_pending is not None, march.refunded) == (True, 0)
    http.disputes_answer = None
    refund_invoice(ledger.store, _gateway(http), "acme", "acme/2026-03", Decimal("65.20"))
    assert _stripe_refunds(http) == [(first, 4000), (second, 2520)]
    assert ledger.store.ledger("acme").invoices["acme/2026-03"].refunded == Decimal("65.20")


@pytest.mark.parametrize(
    ("inquiry", "won", "refused"),
    [(False, None, True), (False, False, True), (False, True, True), (True, None, False)],
    ids=["chargeback-open", "lost", "won", "inquiry"],
)
def test_given_a_disputed_charge_at_the_emulator_then_its_dispute_says_if_stripe_refunds_it(
    inquiry: bool, won: bool | None, refused: bool
) -> None:
    """The emulator's Dispute (listed by charge: ``disputes.list``) carries Stripe's ``status`` and
    ``is_charge_refundable``, and ``refunds.create`` refuses (``charge_disputed``) only a charge whose dispute says
    it is not refundable: an open chargeback (``needs_response``), a lost one or a won one (the 40.00 reinstated;
    ``is_charge_refundable`` false as in the one real payload of a won dispute found, Zulip's fixture, API
    2016-07-06 - not checked against a test-mode account); an inquiry (``warning_needs_response``, nothing
    withdrawn: refundable, Stripe's documented behaviour) is refunded - 2520 cents of A's 4000. Before (D359 as
    first made): every disputed charge refused; the open chargeback said ``is_charge_refundable`` true."""
    http = DisputedIntent()
    _ledger, _deps, _march, first, _second = _march_paid_on_two_cards(http)
    dispute = http.emulator.open_dispute(first, inquiry=inquiry)
    if won is not None:
        http.emulator.close_dispute(dispute, won=won)
    client = stripe.StripeClient("sk_test_unit", max_network_retries=0, http_client=http)
    charge = http.emulator.objects["payment_intent"][first]["latest_charge"]
    (listed,) = client.v1.disputes.list({"charge": charge}).data
    expected_status = {(False, None): "needs_response", (False, False): "lost", (False, True): "won"}.get(
        (inquiry, won), "warning_needs_response"
    )
    assert (listed.id, listed.charge, listed.status, listed.is_charge_refundable) == (
        dispute,
        charge,
        expected_status,
        not refused,
    )
    if refused:
        with pytest.raises(stripe.InvalidRequestError) as raised:
            client.v1.refunds.create({"payment_intent": first, "amount": 2520})
        assert (raised.value.http_status, raised.value.code) == (400, "charge_disputed")
        assert _stripe_refunds(http) == []
    else:
        client.v1.refunds.create({"payment_intent": first, "amount": 2520})
        assert _stripe_refunds(http) == [(first, 2520)]


def test_given_another_invoices_payment_disputed_when_march_is_refunded_then_no_dispute_is_read() -> None:
    """March's 65.20 paid in one payment by the visa; April closed (May's fee in advance charged to the same visa)
    and April's payment disputed (a chargeback, open). Refunding 10.00 of March reads no Dispute: only the charges
    paying March are looked up (none disputed), so a restricted key without Disputes read (``GET /v1/disputes``
    answering 403) does not block it. Hand-worked: 10.00 = 1000 cents on March's only payment; 0 Dispute lists;
    recorded 10.00 refunded. Before: April's disputed charge had its Disputes listed (1 call) and the 403 failed
    March's refund (``GatewayMisconfiguredError``, nothing refunded, the request pending)."""
    http = DisputedIntent()
    ledger, deps, _march = march_closed(http, card=True)
    (march_intent,) = [i["id"] for i in http.emulator.objects["payment_intent"].values() if i["status"] == "succeeded"]
    close_account(deps, "acme", APR, APR.end)
    (april_intent,) = [
        i["id"]
        for i in http.emulator.objects["payment_intent"].values()
        if i["status"] == "succeeded" and i["id"] != march_intent
    ]
    http.emulator.open_dispute(april_intent)
    http.disputes_answer = (403, NO_PERMISSION)
    refund_invoice(ledger.store, _gateway(http), "acme", "acme/2026-03", Decimal("10.00"))
    assert _stripe_refunds(http) == [(march_intent, 1000)]
    assert http.disputes_asked == 0  # before: 1 (April's charge)
    assert ledger.store.ledger("acme").invoices["acme/2026-03"].refunded == Decimal("10.00")


@pytest.mark.parametrize(
    ("asked", "expected"),
    [
        ("10.00", [("second", 1000)]),
        ("30.00", [("second", 2520), ("first", 480)]),
        ("50.00", [("first", 4000), ("second", 1000)]),
    ],
    ids=["B-alone-holds-it", "B-then-the-rest-on-A", "A-in-full-then-B"],
)
def test_given_the_first_cards_charge_under_an_inquiry_when_part_is_refunded_then_a_takes_only_the_rest_or_all_of_it(
    asked: str, expected: list[tuple[str, int]]
) -> None:
    """An inquiry on A's 40.00 (the oldest payment; refundable, nothing withdrawn). Stripe: only a FULL refund of the
    charge resolves an inquiry - a partial one leaves it open to escalate (a chargeback, with its fee) - so A is taken
    LAST, unless the request covers what is left of A in full. Hand-worked: 10.00 -> B's 25.20 holds it: 1000 on B,
    A untouched (before: 1000 on A, the inquiry left open with 30.00 still paid); 30.00 -> 2520 on B, then 30.00 -
    25.20 = 4.80 = 480 on A (B cannot hold it all); 50.00 >= A's 40.00 -> 4000 on A (its whole payment: the inquiry
    closes), then 50.00 - 40.00 = 10.00 = 1000 on B."""
    http = DisputedIntent()
    ledger, _deps, _march, first, second = _march_paid_on_two_cards(http)
    dispute = http.emulator.open_dispute(first, inquiry=True)
    refund_invoice(ledger.store, _gateway(http), "acme", "acme/2026-03", Decimal(asked))
    names = {"first": first, "second": second}
    assert _stripe_refunds(http) == [(names[which], cents) for which, cents in expected]
    closed = http.emulator.objects["dispute"][dispute]["status"] == "warning_closed"
    assert closed == (asked == "50.00")  # only A refunded in full closes its inquiry


DISPUTES_NO_PERMISSION = {  # 403: a restricted key made before Disputes read was listed for `invoice refund`
    "error": {
        "message": "The provided key 'rk_test_*********************perm' does not have the required permissions for "
        "this endpoint on account 'acct_1Kilo'. Having the 'rak_dispute_read' permission would allow this request "
        "to continue.",
        "type": "invalid_request_error",
    }
}


def test_given_a_key_without_disputes_read_when_an_invoice_with_a_chargeback_is_refunded_then_nothing_is_sent() -> None:
    """A chargeback on A's 40.00 (withdrawn); the operator's restricted key predates Disputes read (``GET
    /v1/disputes`` answers 403). 25.20 asked (65.20 - 40.00: all the ledger allows): A's refundability cannot be read,
    so nothing is sent - ``GatewayMisconfiguredError`` (the CLI's exit 4), the permission named, the request pending
    - where D359 as first made (``disputed`` alone) sent 2520 on B. Kept on purpose (D359 amended (wd3)): without the
    Dispute we cannot tell an inquiry (refundable) from a chargeback; README tells such keys to add Disputes read.
    With it added, the rerun: 2520 on B, once."""
    http = DisputedIntent()
    ledger, _deps, _march, first, second = _march_paid_on_two_cards(http)
    http.emulator.open_dispute(first)
    http.disputes_answer = (403, DISPUTES_NO_PERMISSION)
    with pytest.raises(GatewayMisconfiguredError, match=r"rak_dispute_read"):
        refund_invoice(ledger.store, _gateway(http), "acme", "acme/2026-03", Decimal("25.20"))
    assert _stripe_refunds(http) == []
    assert ledger.store.ledger("acme").invoices["acme/2026-03"].refund_pending is not None
    http.disputes_answer = None
    refund_invoice(ledger.store, _gateway(http), "acme", "acme/2026-03", Decimal("25.20"))
    assert _stripe_refunds(http) == [(second, 2520)]


def test_given_an_inquiry_at_the_emulator_when_its_charge_is_refunded_in_part_then_in_full_then_it_closes() -> None:
    """Stripe: refunding an inquiry's payment in full resolves it. A's 40.00 under an inquiry: 1000 refunded ->
    still ``warning_needs_response``, no event about the dispute; the other 40.00 - 10.00 = 30.00 = 3000 -> A's
    charge refunded in full: the inquiry ``warning_closed``, ``charge.dispute.closed`` sent after the refund's
    ``charge.refunded`` and ``refund.created``. Before: it stayed open (``warning_needs_response``) for ever."""
    http = DisputedIntent()
    _ledger, _deps, _march, first, _second = _march_paid_on_two_cards(http)
    dispute = http.emulator.open_dispute(first, inquiry=True)
    client = stripe.StripeClient("sk_test_unit", max_network_retries=0, http_client=http)
    seen = len(http.emulator.events)
    client.v1.refunds.create({"payment_intent": first, "amount": 1000})
    assert http.emulator.objects["dispute"][dispute]["status"] == "warning_needs_response"
    assert [e["type"] for e in http.emulator.events[seen:]] == ["charge.refunded", "refund.created"]
    seen = len(http.emulator.events)
    client.v1.refunds.create({"payment_intent": first, "amount": 3000})
    assert [e["type"] for e in http.emulator.events[seen:]] == [
        "charge.refunded",
        "refund.created",
        "charge.dispute.closed",
    ]
    closed = http.emulator.events[-1]["data"]["object"]
    assert (closed["id"], closed["status"], closed["is_charge_refundable"]) == (dispute, "warning_closed", True)
