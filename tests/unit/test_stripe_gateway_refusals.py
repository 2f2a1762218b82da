"""Whose fault a Stripe 4xx is, for invoicing's gateway (D315): our own key, permissions, objects and
idempotency keys, and Stripe's object locks, are *unavailable* (retried; the close and payment queues dead-letter and
alarm what keeps failing); only a refusal of the payment itself - a card declined, an amount Stripe's rules refuse -
is *refused* (the logic acts on it for good: a refund dropped, a note's reduction turned into account credit).

Through the Stripe SDK against the Stripe emulator (``kilo_dev.stripe_emulator``) answering the error bodies Stripe
publishes (type, code, message, param as its API reference and error-code pages give them); the SDK builds its own
error classes from them (401 ``AuthenticationError``, 403 ``PermissionError``, ``IdempotencyError``, 402
``CardError``, 409 ``APIError``...).

The worst case found (figures worked by hand; price book 2026-01, Team $29/month, video $0.00072 a minute, 50,000
included): Team card, March 60,000 minutes -> 10,000 x 0.00072 = 7.20 + March's fee 29.00 + April's in advance 29.00
= 65.20, paid. A refund of all 65.20 is made by Stripe but its answer is lost: pending (D302). 5,000 March minutes go
away (-3.60): April's note credits 0.00 and records 3.60 as returned (the pending refund gives it back). Our API key
is then rolled; the rerun's first call gets 401. Before: 401 was a refusal "for good", so the request was dropped and
D310 credited the 3.60 as account credit - while Stripe had refunded 65.20: 68.80 given back on 65.20 paid, and the
operator told "Stripe refused". Now: unavailable, the request stays pending; with the key fixed the rerun finds
Stripe's refund by its metadata: 65.20 refunded, 0.00 credit."""

from __future__ import annotations

import json
from collections.abc import Mapping
from decimal import Decimal
from typing import Any
from urllib.parse import urlsplit

import pytest

from kilo_account_api.model import UnavailableError
from kilo_billing.accounts import AccountProfile
from kilo_billing.catalog import default_catalog
from kilo_billing.invoicing import CreditNoteStatus, InvoiceRecord, InvoiceStatus
from kilo_billing.periods import Period
from kilo_billing.rating import TierChange
from kilo_dev.stripe_emulator import EmulatorHTTPClient
from kilo_invoice.logic import close_account, refund_invoice
from kilo_invoice.model import CloseDeps
from kilo_invoice.ports import Customer, GatewayMisconfiguredError, GatewayRejectedError, GatewayUnavailableError
from kilo_invoice.stripe_adapter import StripePaymentGateway
from tests.contract.ledger_harness import SEG, START, Ledger, _Bus, _fake
from tests.unit.test_stripe_pages_refusals import pages

MAR, APR = Period(2026, 3), Period(2026, 4)
NONE = Decimal("0.00")

# Stripe's published error bodies (API reference "Errors" and docs.stripe.com/error-codes)
INVALID_API_KEY = {  # 401: a rolled or revoked secret key
    "error": {"message": "Invalid API Key provided: sk_test_****************oked", "type": "invalid_request_error"}
}
NO_PERMISSION = {  # 403: a restricted key without the endpoint's permission
    "error": {
        "message": "The provided key 'rk_test_*********************perm' does not have the required permissions for "
        "this endpoint on account 'acct_1Kilo'. Having the 'rak_invoice_read' permission would allow this request "
        "to continue.",
        "type": "invalid_request_error",
    }
}
NO_SUCH_INVOICE = {  # 404 on our own object (a test-mode object asked for with the live key, or deleted)
    "error": {
        "code": "resource_missing",
        "doc_url": "https://stripe.com/docs/error-codes/resource-missing",
        "message": "No such invoice: 'in_1Gone'",
        "param": "invoice",
        "type": "invalid_request_error",
    }
}
KEY_REUSED = {  # 400 idempotency_error: our key sent again with other parameters
    "error": {
        "message": "Keys for idempotent requests can only be used with the same parameters they were first used with. "
        "Try using a key other than 'kilo:acme/2026-03/refund/1:refund' if you meant to execute a different request.",
        "type": "idempotency_error",
    }
}
KEY_IN_USE = {  # 409: the first request with this key is still being processed
    "error": {
        "code": "idempotency_key_in_use",
        "doc_url": "https://stripe.com/docs/error-codes/idempotency-key-in-use",
        "message": "There is currently another in-progress request using this Idempotent Key (that probably means you "
        "submitted twice, and the other request is still going through): kilo:acme/2026-03/refund/1:refund. Please "
        "try again later.",
        "type": "invalid_request_error",
    }
}
LOCK_TIMEOUT = {  # 409 (or 429): another request or Stripe process holds the object
    "error": {
        "code": "lock_timeout",
        "doc_url": "https://stripe.com/docs/error-codes/lock-timeout",
        "message": "This object cannot be accessed right now because another API request or Stripe process is "
        "currently accessing it. If you see this error intermittently, retry the request.",
        "type": "invalid_request_error",
    }
}
CARD_DECLINED = {  # 402: the customer's card
    "error": {
        "code": "card_declined",
        "decline_code": "generic_decline",
        "doc_url": "https://stripe.com/docs/error-codes/card-declined",
        "message": "Your card was declined.",
        "type": "card_error",
    }
}
AMOUNT_TOO_LARGE = {  # 400: Stripe's amount rule for a refund
    "error": {
        "code": "amount_too_large",
        "doc_url": "https://stripe.com/docs/error-codes/amount-too-large",
        "message": "Refund amount ($65.21) is greater than unrefunded amount on charge ($65.20)",
        "param": "amount",
        "type": "invalid_request_error",
    }
}
ALREADY_REFUNDED = {
    "error": {
        "code": "charge_already_refunded",
        "doc_url": "https://stripe.com/docs/error-codes/charge-already-refunded",
        "message": "Charge ch_1Kilo has already been refunded.",
        "type": "invalid_request_error",
    }
}


UNRECOGNIZED_URL = {  # 404 with no code: a request to an address Stripe has no endpoint at (our api_base wrong)
    "error": {
        "message": "Unrecognized request URL (POST: /v1/v1/invoices/in_1Kilo/void). Please see https://stripe.com/docs "
        "or we can help at https://support.stripe.com/.",
        "type": "invalid_request_error",
    }
}
NOT_STRIPES = "<html><head><title>403 Forbidden</title></head><body>Request blocked</body></html>"  # a proxy's page
NOT_STRIPES_JSON = {"message": "Forbidden"}  # JSON, but not Stripe's error body


class Answering(EmulatorHTTPClient):
    """The emulator, except that ``refusal`` (a status and Stripe's error body) answers every request while set, and
    the next POST to a path in ``lost`` is made by the emulator but its answer lost (a timeout)."""

    def __init__(self) -> None:
        super().__init__()
        self.refusal: tuple[int, dict[str, Any] | str] | None = None
        self.lost: set[str] = set()

    def request(
        self, method: str, url: str, headers: Mapping[str, str] | None, post_data: Any = None, **kwargs: Any
    ) -> tuple[str, int, Mapping[str, str]]:
        if self.refusal is not None:
            status, body = self.refusal
            return (body if isinstance(body, str) else json.dumps(body)), status, {"request-id": "req_refused"}
        path = urlsplit(url).path
        if method.lower() == "post" and path in self.lost:
            self.lost.discard(path)
            self.faults.insert(0, "lost")
        return super().request(method, url, headers, post_data, **kwargs)


def _gateway(http: EmulatorHTTPClient) -> StripePaymentGateway:
    return StripePaymentGateway.from_api_key("sk_test_unit", max_network_retries=0, http_client=http)


def march_closed(http: EmulatorHTTPClient, *, card: bool) -> tuple[Ledger, CloseDeps, InvoiceRecord]:
    """Team, March 60,000 video minutes (10,000 over x 0.00072 = 7.20 + March's fee 29.00 + April's 29.00 = 65.20),
    closed through the emulator. ``card``: a card saved, charged at finalization and recorded paid (its webhook);
    else open at Stripe."""
    ledger = _fake()
    gateway = _gateway(http)
    ledger.register(AccountProfile("acme", (TierChange(START, "team"),)))
    if card:
        customer = gateway.ensure_customer(Customer("acme"))
        gateway.set_default_payment_method(customer, "pm_card_visa")
        ledger.store.save_billing("acme", customer_id=customer)
    ledger.rate("acme", "2026-03", SEG, "video", 60_000)
    deps = CloseDeps(ledger.store, gateway, _Bus(), default_catalog(), lambda _s: None)
    march = close_account(deps, "acme", MAR, MAR.end).invoice
    assert march is not None
    assert march.gateway_id is not None
    assert (march.total, march.status) == (Decimal("65.20"), InvoiceStatus.OPEN)
    if card:
        assert http.emulator.objects["invoice"][march.gateway_id]["status"] == "paid"  # charged at finalization
        ledger.store.update_invoice(march.moved(InvoiceStatus.PAID, MAR.end), InvoiceStatus.OPEN)  # its webhook
    return ledger, deps, march


def _note_waits(ledger: Ledger) -> None:
    """April's note lowering March by 3.60: still pending, nothing credited."""
    found = ledger.store.ledger("acme")
    note = found.credit_notes["acme/2026-03/credit-2026-04"]
    assert (note.to_due, note.to_credit, note.status) == (Decimal("3.60"), NONE, CreditNoteStatus.PENDING)
    assert found.billing.credit == NONE


def _note_lowered_march(ledger: Ledger, http: EmulatorHTTPClient, march: InvoiceRecord) -> None:
    """The note made at Stripe: March's amount due 6,520 - 360 = 6,160 cents."""
    note = ledger.store.ledger("acme").credit_notes["acme/2026-03/credit-2026-04"]
    assert (note.to_due, note.status) == (Decimal("3.60"), CreditNoteStatus.DONE)
    assert march.gateway_id is not None
    assert http.emulator.objects["invoice"][march.gateway_id]["amount_due"] == 6160


CONTENTION = [
    pytest.param(409, KEY_IN_USE, id="409-idempotency-key-in-use"),
    pytest.param(409, LOCK_TIMEOUT, id="409-lock-timeout"),
    pytest.param(429, LOCK_TIMEOUT, id="429-lock-timeout"),
]
OURS = [
    pytest.param(401, INVALID_API_KEY, id="401-key-revoked"),
    pytest.param(403, NO_PERMISSION, id="403-restricted-key"),
    pytest.param(404, NO_SUCH_INVOICE, id="404-resource-missing"),
    pytest.param(400, KEY_REUSED, id="400-idempotency-error"),
    pytest.param(404, UNRECOGNIZED_URL, id="404-unrecognized-url"),
    pytest.param(400, NOT_STRIPES, id="400-not-stripes-body"),
    pytest.param(413, NOT_STRIPES_JSON, id="413-not-stripes-error-body"),
]
THE_PAYMENTS = [
    pytest.param(402, CARD_DECLINED, id="402-card-declined"),
    pytest.param(400, AMOUNT_TOO_LARGE, id="400-amount-too-large"),
    pytest.param(400, ALREADY_REFUNDED, id="400-charge-already-refunded"),
]


@pytest.mark.parametrize(("status", "body"), CONTENTION)
def test_given_a_request_meeting_another_on_the_same_object_or_key_then_the_gateway_is_unavailable(
    status: int, body: dict[str, Any] | str
) -> None:
    http = Answering()
    http.refusal = (status, body)
    with pytest.raises(GatewayUnavailableError, match=rf"Stripe unavailable \({status}\)") as raised:
        _gateway(http).void("in_1Kilo")
    assert not isinstance(raised.value, GatewayMisconfiguredError)  # it passes by itself: nothing to fix


@pytest.mark.parametrize(("status", "body"), OURS)
def test_given_a_refusal_of_our_own_key_objects_or_idempotency_keys_then_misconfigured_not_refused(
    status: int, body: dict[str, Any] | str
) -> None:
    http = Answering()
    http.refusal = (status, body)
    with pytest.raises(GatewayMisconfiguredError, match=rf"Stripe refused \({status}\): .* \[ours to fix\]$"):
        _gateway(http).void("in_1Gone")


@pytest.mark.parametrize(("status", "body"), THE_PAYMENTS)
def test_given_a_refusal_of_the_payment_itself_then_the_gateway_refuses(status: int, body: dict[str, Any]) -> None:
    http = Answering()
    http.refusal = (status, body)
    with pytest.raises(GatewayRejectedError, match=rf"Stripe refused \({status}\)"):
        _gateway(http).void("in_1Kilo")


@pytest.mark.parametrize(("status", "body"), [*CONTENTION, *OURS])
def test_given_the_account_apis_pages_then_a_refusal_of_ours_is_still_unavailable(
    status: int, body: dict[str, Any] | str
) -> None:
    """D297 kept: the account API's pages answer 503 for every refusal that is not of a field the customer sent."""
    with pytest.raises(UnavailableError):
        pages("/v1/billing_portal/sessions", status, body).portal_url("cus_1", "https://app.example/b")


def test_given_a_refund_stripe_made_when_the_rerun_meets_a_revoked_key_then_it_stays_pending_not_given_twice() -> None:
    http = Answering()
    ledger, deps, _march = march_closed(http, card=True)
    gateway = deps.gateway

    http.lost.add("/v1/refunds")  # Stripe refunds 65.20; its answer is lost
    with pytest.raises(GatewayUnavailableError):
        refund_invoice(ledger.store, gateway, "acme", "acme/2026-03", None)
    assert [r["amount"] for r in http.emulator.objects["refund"].values()] == [6520]
    ledger.rate("acme", "2026-03", SEG, "video", -5_000)  # 5,000 over: 3.60, so -3.60
    close_account(deps, "acme", APR, APR.end)
    note = ledger.store.ledger("acme").credit_notes["acme/2026-03/credit-2026-04"]
    assert (note.to_credit, note.returned) == (NONE, Decimal("3.60"))

    http.refusal = (401, INVALID_API_KEY)  # the key rolled; the rerun's first call
    with pytest.raises(GatewayUnavailableError, match=r"\(401\)"):
        refund_invoice(ledger.store, gateway, "acme", "acme/2026-03", None)
    found = ledger.store.ledger("acme")
    assert found.invoices["acme/2026-03"].refund_pending is not None  # before: dropped
    assert found.billing.credit == NONE  # before: 3.60, on top of Stripe's 65.20

    http.refusal = None  # the key fixed: the rerun finds Stripe's refund by its metadata
    refunded = refund_invoice(ledger.store, gateway, "acme", "acme/2026-03", None)
    found = ledger.store.ledger("acme")
    assert (refunded.refunded, refunded.refund_pending, found.billing.credit) == (Decimal("65.20"), None, NONE)
    assert [r["amount"] for r in http.emulator.objects["refund"].values()] == [6520]  # no second refund


def test_given_a_restricted_key_when_a_note_lowers_an_open_invoice_then_the_note_waits_not_credited_for_good() -> None:
    """Team card, no card saved: March 65.20 stays open at Stripe. 5,000 March minutes go away (-3.60): April's close
    makes a note lowering March's amount due by 3.60. Stripe answers 403 (a restricted key without the credit-note
    permission). Before: refused "for good" - the reduction became 3.60 of account credit as if March had been paid
    there, and the note was given up (done, nothing at Stripe), while Stripe still asks 65.20. Now: the close fails
    for now (the queue delivers it again), the note stays pending; with the key fixed it lowers March to 61.60."""
    http = Answering()
    ledger, deps, march = march_closed(http, card=False)
    ledger.rate("acme", "2026-03", SEG, "video", -5_000)  # 5,000 over: 3.60, so -3.60
    http.refusal = (403, NO_PERMISSION)
    with pytest.raises(GatewayMisconfiguredError, match=r"\(403\)"):
        close_account(deps, "acme", APR, APR.end)
    _note_waits(ledger)
    http.refusal = None
    close_account(deps, "acme", APR, APR.end)
    _note_lowered_march(ledger, http, march)


def _wrong_base(http: EmulatorHTTPClient) -> StripePaymentGateway:
    """The secret's ``api_base`` with Stripe's version path in it (``https://api.stripe.com/v1``): every request goes
    to ``/v1/v1/...``, which Stripe answers 404 "Unrecognized request URL", with no code."""
    return StripePaymentGateway.from_api_key(
        "sk_test_unit", max_network_retries=0, http_client=http, api_base="https://api.stripe.com/v1"
    )


def test_given_a_wrong_api_base_when_a_note_lowers_an_open_invoice_then_the_note_waits_not_credited_for_good() -> None:
    """March 65.20 open at Stripe (no card); 5,000 March minutes go away (-3.60); April's close runs with a secret
    whose ``api_base`` doubles ``/v1``. Before: Stripe's 404 with no code was "refused": the note became 3.60 of
    account credit, done, while Stripe still asked 65.20. Now: ours to fix - the note stays pending, no credit; with
    the address fixed it lowers March to 61.60 (6,520 - 360 cents)."""
    http = Answering()
    ledger, deps, march = march_closed(http, card=False)
    assert march.gateway_id is not None
    ledger.rate("acme", "2026-03", SEG, "video", -5_000)
    wrong = CloseDeps(ledger.store, _wrong_base(http), _Bus(), default_catalog(), lambda _s: None)
    with pytest.raises(GatewayMisconfiguredError, match=r"\(404\): GET /v1/v1/invoices"):
        close_account(wrong, "acme", APR, APR.end)
    _note_waits(ledger)
    close_account(deps, "acme", APR, APR.end)
    _note_lowered_march(ledger, http, march)


def test_given_a_wrong_api_base_when_a_refund_is_asked_then_it_stays_pending_and_is_made_once_fixed() -> None:
    """Before: the 404 dropped the request as refused (refunded 0.00, nothing pending). Now: pending; with the address
    fixed the rerun refunds the 65.20 once."""
    http = Answering()
    ledger, deps, _march = march_closed(http, card=True)
    gateway = deps.gateway
    with pytest.raises(GatewayMisconfiguredError, match=r"\(404\)"):
        refund_invoice(ledger.store, _wrong_base(http), "acme", "acme/2026-03", None)
    pending = ledger.store.ledger("acme").invoices["acme/2026-03"].refund_pending
    assert pending is not None
    assert pending.amount == Decimal("65.20")
    refunded = refund_invoice(ledger.store, gateway, "acme", "acme/2026-03", None)
    assert (refunded.refunded, refunded.refund_pending) == (Decimal("65.20"), None)
    assert [r["amount"] for r in http.emulator.objects["refund"].values()] == [6520]


def test_given_a_note_on_an_invoice_stripe_does_not_know_then_the_close_issues_and_the_note_waits() -> None:
    """March 65.20 open at Stripe; its Stripe invoice unknown to the key in use (made with another key, or deleted):
    404 ``resource_missing``. 5,000 March minutes go away (-3.60): April's close makes a note lowering March by 3.60.
    Before (D315): the note's ``GatewayMisconfiguredError`` failed every close - April a draft for ever, the note
    pending, every redelivery and later month the same. Now (D330): April is issued, the note waits (pending,
    no credit) and the outcome names it for the handler's alarm; once Stripe knows March again a later run makes it:
    March's amount due 6,520 - 360 = 6,160 cents."""
    http = Answering()
    ledger, deps, march = march_closed(http, card=False)
    assert march.gateway_id is not None
    hidden = http.emulator.objects["invoice"].pop(march.gateway_id)
    ledger.rate("acme", "2026-03", SEG, "video", -5_000)
    outcome = close_account(deps, "acme", APR, APR.end)
    assert outcome.invoice is not None
    assert (outcome.invoice.status, outcome.invoice.gateway_id is not None) == (InvoiceStatus.OPEN, True)
    [waiting] = outcome.notes_waiting
    assert f"{waiting.credit_id}: {waiting.why}".startswith(
        "acme/2026-03/credit-2026-04: Stripe refused (404): No such invoice"
    )
    _note_waits(ledger)
    http.emulator.objects["invoice"][march.gateway_id] = hidden  # the right key again
    again = close_account(deps, "acme", APR, APR.end)
    assert again.notes_waiting == ()
    _note_lowered_march(ledger, http, march)


def test_given_a_revoked_key_then_a_note_waiting_does_not_hide_it_the_close_still_fails() -> None:
    """The key itself refused: the invoice's own issue meets it too, and the close fails as before (redelivered,
    dead-lettered, alarmed) - the invoice a draft, the note pending."""
    http = Answering()
    ledger, deps, _march = march_closed(http, card=False)
    ledger.rate("acme", "2026-03", SEG, "video", -5_000)
    http.refusal = (401, INVALID_API_KEY)
    with pytest.raises(GatewayMisconfiguredError, match=r"\(401\)"):
        close_account(deps, "acme", APR, APR.end)
    found = ledger.store.ledger("acme")
    assert found.invoices["acme/2026-04"].status is InvoiceStatus.DRAFT
    assert found.credit_notes["acme/2026-03/credit-2026-04"].status is CreditNoteStatus.PENDING
