"""A credit note and a refund at once (D279's open race): the note's bound (``period_held``) and the refund's
(``refundable``) read the same money - here a later invoice that paid a period's late usage - so whichever lands
second must see the first. Run against the in-memory fake and DynamoDB (moto, the template's usage table), the
second writer's read and write split by a hook that lands the first writer in between.

Figures worked by hand (price book 2026-01: video $0.00072 a minute, Personal includes 5,000 and has no fee):
March 5,000 minutes -> 0.00, paid; 10,000 more arrive late -> April's bill is 10,000 x 0.00072 = 7.20 of March's
late usage, paid; the late minutes go away -> May's close finds March at -7.20 and writes a credit note on it. The
7.20 was paid once, so a refund of April's bill and the note's account credit together give back at most 7.20."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest

from kilo_billing.accounts import AccountProfile
from kilo_billing.catalog import default_catalog
from kilo_billing.invoicing import (
    AccountLedger,
    CloseDraft,
    CreditMove,
    CreditNoteStatus,
    InvoiceRecord,
    InvoiceStatus,
    LedgerStore,
    compose_close,
    refundable,
)
from kilo_billing.periods import Period
from kilo_billing.periods_items import invoice_to_item
from kilo_billing.progressive import invoice_early
from kilo_billing.rating import TierChange
from kilo_invoice.logic import apply_stripe_event, close_account, refund_invoice
from kilo_invoice.model import CloseDeps
from kilo_invoice.ports import GatewayRejectedError, GatewayUnavailableError
from tests.conftest import Stack
from tests.contract.ledger_harness import SEG, START, Ledger, _Bus, _dynamo, team_march_closed
from tests.payment_fakes import InMemoryPaymentGateway
from tests.scenarios.test_card_payment_events import Events, _dispute

MAR, APR, MAY = Period(2026, 3), Period(2026, 4), Period(2026, 5)
NOTE = "solo/2026-03/credit-2026-05"
NONE = Decimal("0.00")


class _Interleaved:
    """The store, with one writer landed just before the next close's transaction or invoice update (once each)."""

    def __init__(self, store: LedgerStore) -> None:
        self._store = store
        self.before_create: Callable[[], Any] | None = None
        self.before_update: Callable[[], Any] | None = None
        self.before_credit: Callable[[], Any] | None = None

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    def create_invoice(self, draft: CloseDraft) -> None:
        hook, self.before_create = self.before_create, None
        if hook is not None:
            hook()
        self._store.create_invoice(draft)

    def update_invoice(
        self, invoice: InvoiceRecord, expected: InvoiceStatus, seq_read: int | None = None
    ) -> InvoiceRecord:
        hook, self.before_update = self.before_update, None
        if hook is not None:
            hook()
        return self._store.update_invoice(invoice, expected, seq_read)

    def update_invoice_and_credit(
        self, invoice: InvoiceRecord, expected: InvoiceStatus, move: CreditMove, crypto_added: Decimal = Decimal(0)
    ) -> Any:
        hook, self.before_credit = self.before_credit, None
        if hook is not None:
            hook()
        return self._store.update_invoice_and_credit(invoice, expected, move, crypto_added)


def _deps(store: Any) -> CloseDeps:
    return CloseDeps(store, InMemoryPaymentGateway(), _Bus(), default_catalog(), lambda _s: None)


def _closed_and_paid(ledger: Ledger, period: Period) -> InvoiceRecord:
    draft = compose_close(ledger.store.ledger("solo"), period, default_catalog(), period.end)
    assert draft is not None
    ledger.store.create_invoice(draft)
    opened = ledger.store.update_invoice(draft.invoice.moved(InvoiceStatus.OPEN, period.end), InvoiceStatus.DRAFT)
    return ledger.store.update_invoice(opened.moved(InvoiceStatus.PAID, period.end), InvoiceStatus.OPEN)


def _april_paid_for_march_late_usage_that_went_away(ledger: Ledger, method: str = "crypto") -> None:
    ledger.register(AccountProfile("solo", (TierChange(START, "personal"),), billing_method=method))
    ledger.rate("solo", "2026-03", SEG, "video", 5_000)  # inside the 5,000 included
    assert _closed_and_paid(ledger, MAR).total == Decimal("0.00")
    ledger.rate("solo", "2026-03", SEG, "video", 10_000)  # late: 10,000 x 0.00072 = 7.20, billed by April
    april = _closed_and_paid(ledger, APR)
    assert (april.total, april.kept) == (Decimal("7.20"), Decimal("7.20"))
    ledger.rate("solo", "2026-03", SEG, "video", -10_000)  # the late minutes go away: March -7.20


def _may_closed_after(ledger: Ledger, landed: Callable[[], Any], method: str = "crypto") -> AccountLedger:
    """April paid for March's late usage that went away; May's close with ``landed`` written just before its
    transaction (so the close composes again); the account as found after."""
    _april_paid_for_march_late_usage_that_went_away(ledger, method)
    store = _Interleaved(ledger.store)
    store.before_create = landed
    close_account(_deps(store), "solo", MAY, MAY.end)
    assert store.before_create is None  # it landed in between
    return ledger.store.ledger("solo")


def test_given_a_refund_landing_between_the_closes_read_and_its_write_then_the_note_credits_only_what_is_left(
    ledger: Ledger,
) -> None:
    """May's close reads the ledger (April holds March's 7.20: the note may credit 7.20); April's 7.20 is refunded
    (owed: a crypto bill) before the close writes. The close's write conflicts - April, whose money the note's bound
    read, moved - and it composes again: April holds 0.00 of March's usage, so the note credits 0.00 and records
    the 7.20 as returned. Before: the note credited 7.20 on top of the 7.20 refund, 14.40 back on 7.20 paid."""
    found = _may_closed_after(
        ledger, lambda: refund_invoice(ledger.store, InMemoryPaymentGateway(), "solo", "solo/2026-04", Decimal("7.20"))
    )
    note = found.credit_notes[NOTE]
    assert (note.to_credit, note.returned) == (Decimal("0.00"), Decimal("7.20"))
    assert found.invoices["solo/2026-04"].refund_owed == Decimal("7.20")
    assert found.billing.credit == Decimal("0.00")
    assert [line.amount for line in found.invoices["solo/2026-05"].lines if line.kind == "credit"] == []


def _dashboard_refund_of_april(ledger: Ledger) -> Any:
    """April's 7.20 refunded at the processor's dashboard, not by us: only its ``charge.refunded`` (720) tells."""
    events = Events()
    obj = {
        "id": "ch_apr",
        "payment_intent": "pi_apr",
        "amount_refunded": 720,
        "metadata": {"invoice_id": "solo/2026-04"},
    }
    key = events.add("evt_refunded", "charge.refunded", obj)
    return apply_stripe_event(ledger.store, _Bus(), events, *key, MAY.end, None)


def test_given_a_dashboard_refund_landing_between_the_closes_read_and_its_write_then_the_note_credits_only_whats_left(
    ledger: Ledger,
) -> None:
    """Card: May's close reads the ledger (April holds March's 7.20); April's 7.20 is refunded out of band (the
    dashboard: ``charge.refunded`` 720) before the close writes. The refund lowers what April keeps, so it moves the
    fence the close waits on (D309) and the close composes again: the note credits 0.00 and records the 7.20 as
    returned. Before: the webhook's write did not move the fence and the note credited 7.20 on top of the 7.20
    refunded - 14.40 back on 7.20 paid."""
    found = _may_closed_after(ledger, lambda: _dashboard_refund_of_april(ledger), "card")
    note = found.credit_notes[NOTE]
    assert (note.to_credit, note.returned) == (Decimal("0.00"), Decimal("7.20"))
    assert found.invoices["solo/2026-04"].refunded == Decimal("7.20")
    assert found.billing.credit == Decimal("0.00")


def test_given_a_note_landing_between_a_refunds_read_and_its_write_then_the_refund_is_refused(
    ledger: Ledger,
) -> None:
    """The other order: the refund of April's 7.20 reads (7.20 refundable); May's close lands its note (7.20 of
    account credit, out of April's money) before the refund writes. The refund's write conflicts (the close moved
    April's revision) and is bounded again with the notes as stored: 7.20 - 7.20 credited = 0.00, refused, nothing
    written. Before: 7.20 owed on top of the note's 7.20 credit."""
    _april_paid_for_march_late_usage_that_went_away(ledger)
    store = _Interleaved(ledger.store)
    store.before_update = lambda: close_account(_deps(ledger.store), "solo", MAY, MAY.end)
    with pytest.raises(ValueError, match=r"^refund must be at most 0\.00, got 7\.20$"):
        refund_invoice(store, InMemoryPaymentGateway(), "solo", "solo/2026-04", Decimal("7.20"))
    found = ledger.store.ledger("solo")
    assert (found.credit_notes[NOTE].to_credit, found.credit_notes[NOTE].returned) == (Decimal("7.20"), NONE)
    assert (found.invoices["solo/2026-04"].refund_owed, found.invoices["solo/2026-04"].refunded) == (NONE, NONE)


def test_given_a_note_whose_reduction_becomes_account_credit_while_a_refund_is_in_flight_then_nothing_goes_back_twice(
    ledger: Ledger,
) -> None:
    """The note's other write, its step (``update_credit_note``), is not conditioned on the invoice: shown harmless.
    Team, March 65.20 (7.20 usage + 29.00 first-month fee + 29.00 April in advance), open; 5,000 minutes go away
    (-3.60): April's close writes a note lowering March's amount due by 3.60, but the processor is down, so it stays
    pending. March is paid in full (65.20) meanwhile. A refund of all that is refundable reads 65.20 - 3.60 = 61.60
    (the note's reduction is held back); before it writes, the close runs again: the processor refuses the reduction
    (paid) and the 3.60 becomes account credit. 61.60 refunded + 3.60 credit = 65.20, what was paid: the step only
    turns the reduction the refund already held back into credit, so it never gives money back twice."""
    gateway, deps, march = team_march_closed(ledger)  # 60,000 minutes: 10,000 over x 0.00072 = 7.20
    assert (march.total, march.status) == (Decimal("65.20"), InvoiceStatus.OPEN)
    ledger.rate("acme", "2026-03", SEG, "video", -5_000)  # 5,000 over: 3.60, so -3.60
    gateway.fail_next = [GatewayUnavailableError("timeout")] * 4  # every retry of this run
    with pytest.raises(GatewayUnavailableError):
        close_account(deps, "acme", APR, APR.end)
    note = ledger.store.ledger("acme").credit_notes["acme/2026-03/credit-2026-04"]
    assert (note.to_due, note.to_credit, note.status) == (Decimal("3.60"), NONE, CreditNoteStatus.PENDING)
    gateway.settle("acme/2026-03", paid=True)  # 65.20 paid at the processor, the reduction never made
    opened = ledger.store.ledger("acme").invoices["acme/2026-03"]
    ledger.store.update_invoice(opened.moved(InvoiceStatus.PAID, APR.end), InvoiceStatus.OPEN)  # its webhook
    store = _Interleaved(ledger.store)
    store.before_update = lambda: close_account(deps, "acme", APR, APR.end)
    refunded = refund_invoice(store, gateway, "acme", "acme/2026-03", None)
    found = ledger.store.ledger("acme")
    note = found.credit_notes["acme/2026-03/credit-2026-04"]
    assert (note.to_due, note.to_credit, note.status) == (NONE, Decimal("3.60"), CreditNoteStatus.DONE)
    assert (refunded.refunded, found.billing.credit) == (Decimal("61.60"), Decimal("3.60"))
    assert refunded.refunded + found.billing.credit == march.total


def test_given_a_pending_refund_the_processor_refuses_for_good_then_the_notes_returned_becomes_account_credit(
    ledger: Ledger,
) -> None:
    """Team card, March 65.20 (7.20 usage + 29.00 first-month fee + 29.00 April in advance), paid. A refund of all
    65.20 is recorded, the processor times out: pending, so March keeps 0.00 less pending (D302). 5,000 March minutes
    go away (-3.60): April's note credits 0.00 and records 3.60 as returned (the pending refund gives it back). The
    processor then refuses the refund for good: nothing went back, March keeps 65.20, so the 3.60 the note recorded
    as returned is account credit, as a won dispute's reinstatement gives it (D310): 3.60 credit, 0.00 returned.
    Before: 0.00 credit and 3.60 returned on money we still hold."""
    gateway, deps, march = team_march_closed(ledger)  # 60,000 minutes: 10,000 over x 0.00072 = 7.20
    assert march.total == Decimal("65.20")
    gateway.settle("acme/2026-03", paid=True)
    ledger.store.update_invoice(march.moved(InvoiceStatus.PAID, MAR.end), InvoiceStatus.OPEN)  # its webhook
    gateway.fail_next = [GatewayUnavailableError("timeout")]
    with pytest.raises(GatewayUnavailableError):
        refund_invoice(ledger.store, gateway, "acme", "acme/2026-03", None)
    assert ledger.store.ledger("acme").invoices["acme/2026-03"].kept_less_pending == NONE
    ledger.rate("acme", "2026-03", SEG, "video", -5_000)  # 5,000 over: 3.60, so -3.60
    close_account(deps, "acme", APR, APR.end)
    note = ledger.store.ledger("acme").credit_notes["acme/2026-03/credit-2026-04"]
    assert (note.to_credit, note.returned) == (NONE, Decimal("3.60"))
    gateway.fail_next = [GatewayRejectedError("refused for good")]
    with pytest.raises(GatewayRejectedError):
        refund_invoice(ledger.store, gateway, "acme", "acme/2026-03", None)
    found = ledger.store.ledger("acme")
    march = found.invoices["acme/2026-03"]
    assert (march.refund_pending, march.kept_less_pending) == (None, Decimal("65.20"))
    note = found.credit_notes["acme/2026-03/credit-2026-04"]
    assert (note.to_credit, note.returned) == (Decimal("3.60"), NONE)
    assert found.billing.credit == Decimal("3.60")


def _team_march_paid(ledger: Ledger) -> tuple[InMemoryPaymentGateway, CloseDeps, str | None]:
    """Team card, March 65.20 (29.00 March + 10,000 minutes over x 0.00072 = 7.20 + 29.00 April in advance) paid.
    Returns the gateway, the close's dependencies and the payment intent."""
    gateway, deps, _ = team_march_closed(ledger)
    intent = gateway.settle("acme/2026-03", paid=True)
    march = ledger.store.ledger("acme").invoices["acme/2026-03"]
    ledger.store.update_invoice(march.moved(InvoiceStatus.PAID, MAR.end), InvoiceStatus.OPEN)
    return gateway, deps, intent


def _request_timing_out(ledger: Ledger, gateway: InMemoryPaymentGateway, amount: Decimal | None) -> None:
    """A refund of March of ``amount`` (None: all) recorded, the processor timing out: pending."""
    gateway.fail_next = [GatewayUnavailableError("timeout")]
    with pytest.raises(GatewayUnavailableError):
        refund_invoice(ledger.store, gateway, "acme", "acme/2026-03", amount)


def _team_march_paid_with_a_refund_pending(
    ledger: Ledger, amount: Decimal | None
) -> tuple[InMemoryPaymentGateway, CloseDeps, str | None]:
    """``_team_march_paid``, then a refund of ``amount`` (None: all) pending."""
    gateway, deps, intent = _team_march_paid(ledger)
    _request_timing_out(ledger, gateway, amount)
    return gateway, deps, intent


def test_given_a_pending_refund_the_processor_refuses_for_good_then_the_notes_history_says_so_not_a_dispute(
    ledger: Ledger,
) -> None:
    """D310's story (Team card, March 65.20 paid, its refund pending, April's note 0.00 credit and 3.60 returned, the
    refund refused for good): the note's history - what the account's stored record of the credit says, read back
    from the store - names the refusal as the reason the 3.60 became account credit; no dispute was ever opened.
    Before: "3.60 kept again (a dispute's funds reinstated): account credit" (D317)."""
    gateway, deps, _intent = _team_march_paid_with_a_refund_pending(ledger, None)
    ledger.rate("acme", "2026-03", SEG, "video", -5_000)
    close_account(deps, "acme", APR, APR.end)
    gateway.fail_next = [GatewayRejectedError("refused for good")]
    with pytest.raises(GatewayRejectedError):
        refund_invoice(ledger.store, gateway, "acme", "acme/2026-03", None)
    note = ledger.store.ledger("acme").credit_notes["acme/2026-03/credit-2026-04"]
    assert note.version == 2
    assert [what for what, _at in note.history] == [
        "3.60 kept again (the refund of 65.20 refused by the card processor): account credit"
    ]


def _dashboard_refund(intent: str | None, cents: int) -> dict[str, Any]:
    """A Refund of March's charge made in Stripe's dashboard (no ``kilo_refund_id``), as ``refund.created`` sends it."""
    return {
        "id": "re_dash",
        "object": "refund",
        "amount": cents,
        "charge": "ch_mar",
        "payment_intent": intent,
        "metadata": {},
        "status": "succeeded",
    }


def _march_charge(intent: str | None, refunded_cents: int) -> dict[str, Any]:
    """March's Charge as ``charge.refunded`` sends it: its running ``amount_refunded``."""
    return {
        "id": "ch_mar",
        "object": "charge",
        "payment_intent": intent,
        "amount": 6520,
        "amount_refunded": refunded_cents,
        "metadata": {},
    }


def _dashboard_refund_while_ours_is_pending(ledger: Ledger, order: tuple[str, ...]) -> InMemoryPaymentGateway:
    """Team card, March 65.20 (58.00 of fees, 7.20 of usage) paid; our refund of 55.00 is recorded, the processor
    times out: pending. A 10.00 refund made in Stripe's dashboard lands: its ``refund.created`` (a Refund without our
    ``kilo_refund_id``) and ``charge.refunded`` (the charge's total, 1000), in ``order``; then 10,000 March minutes
    go away late (-7.20) and April closes."""
    gateway, deps, intent = _team_march_paid_with_a_refund_pending(ledger, Decimal("55.00"))
    events = Events()
    objects = {"refund.created": _dashboard_refund(intent, 1000), "charge.refunded": _march_charge(intent, 1000)}
    for n, kind in enumerate(order):
        apply_stripe_event(
            ledger.store, _Bus(), events, *events.add(f"evt_{n}", kind, objects[kind]), APR.start, gateway
        )
    ledger.rate("acme", "2026-03", SEG, "video", -10_000)  # -7.20
    close_account(deps, "acme", APR, APR.end)
    return gateway


@pytest.mark.parametrize(
    "order",
    [
        ("refund.created", "charge.refunded"),
        ("charge.refunded", "refund.created"),
        ("refund.created", "refund.created", "charge.refunded"),  # delivered twice: counted once
        ("refund.created",),  # its charge.refunded not here yet
    ],
)
def test_given_a_dashboard_refund_landing_while_ours_is_pending_then_both_count_as_given_back(
    ledger: Ledger, order: tuple[str, ...]
) -> None:
    """55.00 (ours, pending) + 10.00 (the dashboard's) = 65.00 given back of 65.20: the fees' 58.00 first, then 7.00
    of March's 7.20 of usage - 0.20 of it held. April's note on -7.20 credits 0.20 and records 7.00 as returned;
    ours is then made: 65.00 refunded + 0.20 credit = 65.20 back in all (D302's limit, D319). Before: the
    dashboard's 10.00 was read as part of ours (55.00 - 10.00 still pending), 55.00 gone, the 7.20 held: 7.20
    credit, then 65.00 refunded - 72.20 back on 65.20 paid."""
    gateway = _dashboard_refund_while_ours_is_pending(ledger, order)
    found = ledger.store.ledger("acme")
    assert found.invoices["acme/2026-03"].kept_less_pending == Decimal("0.20")
    note = found.credit_notes["acme/2026-03/credit-2026-04"]
    assert (note.to_credit, note.returned) == (Decimal("0.20"), Decimal("7.00"))
    done = refund_invoice(ledger.store, gateway, "acme", "acme/2026-03", Decimal("55.00"))  # finishes ours
    assert (done.refund_pending, done.refunded) == (None, Decimal("65.00"))
    assert done.refunded + note.to_credit == Decimal("65.20")  # back in all: what was paid


def test_given_a_dashboard_refund_known_while_ours_was_pending_when_ours_is_refused_then_the_dashboards_stays_given_back(
    ledger: Ledger,
) -> None:
    """The same, only the dashboard's ``refund.created`` here; then the processor refuses ours for good. The 10.00
    was refunded all the same: March records 10.00 refunded (its charge.refunded may come later), keeps 55.20 - the
    fees pay the 10.00, March's 7.20 of usage is held again - so the 7.00 the note recorded as returned becomes
    account credit (D310): 7.20 credit, 0.00 returned, and the history says why (D317)."""
    gateway = _dashboard_refund_while_ours_is_pending(ledger, ("refund.created",))
    gateway.fail_next = [GatewayRejectedError("refused for good")]
    with pytest.raises(GatewayRejectedError):
        refund_invoice(ledger.store, gateway, "acme", "acme/2026-03", Decimal("55.00"))
    found = ledger.store.ledger("acme")
    march = found.invoices["acme/2026-03"]
    assert (march.refund_pending, march.refunded, march.kept_less_pending) == (None, Decimal("10.00"), Decimal("55.20"))
    note = found.credit_notes["acme/2026-03/credit-2026-04"]
    assert (note.to_credit, note.returned) == (Decimal("7.20"), NONE)
    assert note.history[-1][0] == "7.00 kept again (the refund of 55.00 refused by the card processor): account credit"


def test_given_our_own_refunds_webhook_while_it_is_pending_then_it_is_not_counted_as_another(ledger: Ledger) -> None:
    """Our 55.00's ``refund.created`` (``kilo_refund_id`` set, as the Stripe adapter sets it) lands while the request
    is still pending on our side: it is ours, not a refund made outside - 55.00 gone, not 110.00: March keeps 10.20,
    the 7.20 of usage held whole, April's note credits 7.20."""
    gateway, deps, intent = _team_march_paid_with_a_refund_pending(ledger, Decimal("55.00"))
    events = Events()
    ours = {
        "id": "re_ours",
        "object": "refund",
        "amount": 5500,
        "charge": "ch_mar",
        "payment_intent": intent,
        "metadata": {"kilo_refund_id": "acme/2026-03/refund/1"},
        "status": "succeeded",
    }
    apply_stripe_event(
        ledger.store, _Bus(), events, *events.add("evt_ours", "refund.created", ours), APR.start, gateway
    )
    assert ledger.store.ledger("acme").invoices["acme/2026-03"].kept_less_pending == Decimal("10.20")
    ledger.rate("acme", "2026-03", SEG, "video", -10_000)
    close_account(deps, "acme", APR, APR.end)
    note = ledger.store.ledger("acme").credit_notes["acme/2026-03/credit-2026-04"]
    assert (note.to_credit, note.returned) == (Decimal("7.20"), NONE)


def _stripe(ledger: Ledger, gateway: InMemoryPaymentGateway, events: Events, name: str, kind: str, obj: Any) -> None:
    """One Stripe event stored under ``name`` (the same name again: a redelivery) and applied."""
    apply_stripe_event(ledger.store, _Bus(), events, *events.add(name, kind, obj), APR.start, gateway)


def _dashboard_refund_around_our_request(
    ledger: Ledger, first: str, amount: Decimal, *, then: bool = True
) -> tuple[InMemoryPaymentGateway, CloseDeps, str | None, Events]:
    """``_team_march_paid``; the dashboard's 10.00 lands by one event (``first``: ``refund.created`` or
    ``charge.refunded`` 1000), we request ``amount`` (pending), then (``then``) the other event lands."""
    gateway, deps, intent = _team_march_paid(ledger)
    events = Events()
    objects = {"refund.created": _dashboard_refund(intent, 1000), "charge.refunded": _march_charge(intent, 1000)}
    _stripe(ledger, gateway, events, "evt_first", first, objects.pop(first))
    _request_timing_out(ledger, gateway, amount)
    [(other, obj)] = objects.items()
    if then:
        _stripe(ledger, gateway, events, "evt_then", other, obj)
    return gateway, deps, intent, events


def test_given_a_dashboard_refund_created_before_our_request_and_its_charge_refunded_after_then_it_is_not_read_as_ours(
    ledger: Ledger,
) -> None:
    """D319's mirror order (F1): the dashboard's 10.00 ``refund.created`` lands before we request 55.00 (pending),
    its ``charge.refunded`` (1000) after. 10.00 + 55.00 = 65.00 given back of 65.20: March keeps 0.20; 10,000 March
    minutes go away (-7.20): April's note credits 0.20 and records 7.00 as returned; ours made: 65.00 refunded +
    0.20 = 65.20. Before: the 10.00 read as part of ours (45.00 still pending): keeps 10.20, note 7.20 credit, then
    65.00 refunded - 72.20 back on 65.20 paid."""
    gateway, deps, intent, events = _dashboard_refund_around_our_request(ledger, "refund.created", Decimal("55.00"))
    assert ledger.store.ledger("acme").invoices["acme/2026-03"].kept_less_pending == Decimal("0.20")
    ledger.rate("acme", "2026-03", SEG, "video", -10_000)
    close_account(deps, "acme", APR, APR.end)
    note = ledger.store.ledger("acme").credit_notes["acme/2026-03/credit-2026-04"]
    assert (note.to_credit, note.returned) == (Decimal("0.20"), Decimal("7.00"))
    done = refund_invoice(ledger.store, gateway, "acme", "acme/2026-03", Decimal("55.00"))
    _stripe(ledger, gateway, events, "evt_ours", "charge.refunded", _march_charge(intent, 6500))
    march = ledger.store.ledger("acme").invoices["acme/2026-03"]
    assert (done.refunded, march.refunded) == (Decimal("65.00"), Decimal("65.00"))
    assert march.refunded + note.to_credit == Decimal("65.20")


def test_given_a_dashboard_refunds_created_redelivered_while_ours_is_pending_then_it_counts_once(
    ledger: Ledger,
) -> None:
    """F2: the dashboard's 10.00 is recorded (``refund.created`` + ``charge.refunded`` 1000: refunded 10.00); we
    request 20.00 (pending: keeps 65.20 - 30.00 = 35.20); the same ``refund.created`` is delivered again (SQS at
    least once, Stripe's retries): still 35.20, and ours made records 30.00 refunded, 35.20 still refundable.
    Before: 25.20 kept while pending, then 40.00 refunded for good and 25.20 refundable."""
    gateway, _deps, intent = _team_march_paid(ledger)
    events = Events()
    _stripe(ledger, gateway, events, "evt_rc", "refund.created", _dashboard_refund(intent, 1000))
    _stripe(ledger, gateway, events, "evt_cr", "charge.refunded", _march_charge(intent, 1000))
    _request_timing_out(ledger, gateway, Decimal("20.00"))
    _stripe(ledger, gateway, events, "evt_rc", "refund.created", _dashboard_refund(intent, 1000))
    assert ledger.store.ledger("acme").invoices["acme/2026-03"].kept_less_pending == Decimal("35.20")
    done = refund_invoice(ledger.store, gateway, "acme", "acme/2026-03", Decimal("20.00"))
    assert (done.refunded, refundable(ledger.store.ledger("acme"), done)) == (Decimal("30.00"), Decimal("35.20"))


def test_given_a_dashboard_refund_known_on_one_request_when_redelivered_on_the_next_then_it_counts_once(
    ledger: Ledger,
) -> None:
    """The dashboard's 10.00 lands while our 20.00 is pending; ours made: 30.00 refunded. We request 5.00 (pending)
    and the dashboard's ``refund.created`` is delivered again: ours made, 35.00 refunded. Before: 45.00."""
    gateway, _deps, intent = _team_march_paid_with_a_refund_pending(ledger, Decimal("20.00"))
    events = Events()
    _stripe(ledger, gateway, events, "evt_rc", "refund.created", _dashboard_refund(intent, 1000))
    _stripe(ledger, gateway, events, "evt_cr", "charge.refunded", _march_charge(intent, 1000))
    first = refund_invoice(ledger.store, gateway, "acme", "acme/2026-03", Decimal("20.00"))
    assert first.refunded == Decimal("30.00")
    _request_timing_out(ledger, gateway, Decimal("5.00"))
    _stripe(ledger, gateway, events, "evt_rc", "refund.created", _dashboard_refund(intent, 1000))
    done = refund_invoice(ledger.store, gateway, "acme", "acme/2026-03", Decimal("5.00"))
    assert done.refunded == Decimal("35.00")


@pytest.mark.parametrize("then", [True, False])  # False: its refund.created not here (late, or not sent)
def test_given_a_dashboard_refunds_charge_refunded_before_our_request_and_its_refund_created_after_then_it_counts_once(
    ledger: Ledger, then: bool
) -> None:
    """D319's named limit: the dashboard's ``charge.refunded`` (1000) lands before we request 20.00 (pending),
    its ``refund.created`` after (or not): 30.00 given back, March keeps 35.20; ours made: 30.00 refunded. Before:
    keeps 25.20, 40.00 refunded (its ``refund.created`` not here: as now; counting only ours made, the refunds known
    by id and the pending amount it would be 45.20, then 20.00)."""
    gateway, _deps, _intent, _events = _dashboard_refund_around_our_request(
        ledger, "charge.refunded", Decimal("20.00"), then=then
    )
    assert ledger.store.ledger("acme").invoices["acme/2026-03"].kept_less_pending == Decimal("35.20")
    done = refund_invoice(ledger.store, gateway, "acme", "acme/2026-03", Decimal("20.00"))
    assert done.refunded == Decimal("30.00")


def _ours_of_20_made(ledger: Ledger) -> tuple[InMemoryPaymentGateway, str | None, Events]:
    """``_team_march_paid``, then our refund of 20.00 made and its ``charge.refunded`` (2000): 20.00 refunded."""
    gateway, _deps, intent = _team_march_paid(ledger)
    refund_invoice(ledger.store, gateway, "acme", "acme/2026-03", Decimal("20.00"))
    events = Events()
    _stripe(ledger, gateway, events, "evt_ours", "charge.refunded", _march_charge(intent, 2000))
    assert ledger.store.ledger("acme").invoices["acme/2026-03"].refunded == Decimal("20.00")
    return gateway, intent, events


def test_given_a_refund_of_ours_made_then_a_dashboard_refund_then_another_of_ours_pending_then_each_counts_once(
    ledger: Ledger,
) -> None:
    """Ours of 20.00 made (its ``charge.refunded`` 2000); the dashboard's 10.00 ``refund.created`` lands (nothing
    pending); we request 5.00 (pending); the dashboard's ``charge.refunded`` (3000) lands: 20.00 + 10.00 + 5.00 =
    35.00 given back, March keeps 30.20; ours made: 35.00 refunded. (Ours made not kept apart: the 10.00 read as part
    of the 5.00 pending - 35.20.)"""
    gateway, intent, events = _ours_of_20_made(ledger)
    _stripe(ledger, gateway, events, "evt_rc", "refund.created", _dashboard_refund(intent, 1000))
    _request_timing_out(ledger, gateway, Decimal("5.00"))
    _stripe(ledger, gateway, events, "evt_cr", "charge.refunded", _march_charge(intent, 3000))
    assert ledger.store.ledger("acme").invoices["acme/2026-03"].kept_less_pending == Decimal("30.20")
    done = refund_invoice(ledger.store, gateway, "acme", "acme/2026-03", Decimal("5.00"))
    assert done.refunded == Decimal("35.00")


def test_given_the_dashboard_refunds_everything_while_ours_is_pending_then_march_keeps_nothing_not_less(
    ledger: Ledger,
) -> None:
    """F3: ours 55.00 pending (not made); the dashboard refunds all 65.20 (``refund.created`` 6520, ``charge.
    refunded`` 6520): March keeps 0.00 - ours cannot give back what is no longer there. Before: -55.00."""
    gateway, _deps, intent = _team_march_paid_with_a_refund_pending(ledger, Decimal("55.00"))
    events = Events()
    _stripe(ledger, gateway, events, "evt_rc", "refund.created", _dashboard_refund(intent, 6520))
    _stripe(ledger, gateway, events, "evt_cr", "charge.refunded", _march_charge(intent, 6520))
    march = ledger.store.ledger("acme").invoices["acme/2026-03"]
    assert (march.kept, march.kept_less_pending) == (NONE, NONE)


def test_given_an_invoice_stored_before_outside_refunds_were_kept_then_its_own_refunds_read_as_ours(
    stack: Stack,
) -> None:
    """An item written before ``refunds_made`` and ``outside_refunds`` existed (moto): March 65.20 paid, our first
    refund of 20.00 made (its ``charge.refunded`` 2000), a second of 5.00 pending (``refunded_before`` 20.00) whose
    ``charge.refunded`` (2500) came first (``refunded`` 25.00). The dashboard's 10.00 ``refund.created`` then lands:
    20.00 + 5.00 + 10.00 = 35.00 given back, March keeps 30.20; ours made: 35.00 refunded. (Ours made read as
    nothing: 40.20 kept; as ``refunded``: 25.20.)"""
    ledger = _dynamo(stack)
    gateway, intent, events = _ours_of_20_made(ledger)
    _request_timing_out(ledger, gateway, Decimal("5.00"))
    _stripe(ledger, gateway, events, "evt_ours_2", "charge.refunded", _march_charge(intent, 2500))
    stored = ledger.store.ledger("acme").invoices["acme/2026-03"]
    assert (stored.refunded, stored.kept_less_pending) == (Decimal("25.00"), Decimal("40.20"))
    item = invoice_to_item(stored)
    for newer in ("refunds_made", "outside_refunds"):
        item.pop(newer, None)
    client, table = stack.clients["dynamodb"], stack.template.physical_name("UsageTable")
    client.put_item(TableName=table, Item=item)
    _stripe(ledger, gateway, events, "evt_rc", "refund.created", _dashboard_refund(intent, 1000))
    assert ledger.store.ledger("acme").invoices["acme/2026-03"].kept_less_pending == Decimal("30.20")
    finished = refund_invoice(ledger.store, gateway, "acme", "acme/2026-03", Decimal("5.00"))
    assert finished.refunded == Decimal("35.00")


def test_given_an_item_stored_before_with_a_dashboard_refund_and_no_request_then_a_new_one_adds_to_it(
    stack: Stack,
) -> None:
    """A review of D331 (moto): an item written before outside refunds were kept by id, March 65.20 paid, a 10.00
    dashboard refund known by its ``charge.refunded`` only (``refunded`` 10.00, no request of ours ever). After the
    deploy ours of 45.00 is pending (``refunded_before`` 10.00) and another dashboard refund of 5.00 lands (its
    ``refund.created``, then ``charge.refunded`` 1500): 10 + 45 + 5 = 60.00 given back, March keeps 5.20. 10,000 March
    minutes go away (-7.20): April's note credits 5.20 (on April's invoice) and records 2.00 returned; ours made:
    60.00 refunded + 5.20 = 65.20. Before (the old refunds read as none of the per-id sum): kept 10.20, the note credited 7.20 - 67.20 back
    on 65.20 paid."""
    ledger = _dynamo(stack)
    gateway, deps, intent = _team_march_paid(ledger)
    events = Events()
    _stripe(ledger, gateway, events, "evt_crd", "charge.refunded", _march_charge(intent, 1000))
    item = invoice_to_item(ledger.store.ledger("acme").invoices["acme/2026-03"])
    for newer in ("refunds_made", "outside_refunds"):
        item.pop(newer, None)
    stack.clients["dynamodb"].put_item(TableName=stack.template.physical_name("UsageTable"), Item=item)
    _request_timing_out(ledger, gateway, Decimal("45.00"))
    _stripe(ledger, gateway, events, "evt_rce", "refund.created", dict(_dashboard_refund(intent, 500), id="re_e"))
    _stripe(ledger, gateway, events, "evt_cre", "charge.refunded", _march_charge(intent, 1500))
    assert ledger.store.ledger("acme").invoices["acme/2026-03"].kept_less_pending == Decimal("5.20")
    ledger.rate("acme", "2026-03", SEG, "video", -10_000)
    close_account(deps, "acme", APR, APR.end)
    note = ledger.store.ledger("acme").credit_notes["acme/2026-03/credit-2026-04"]
    assert (note.to_credit, note.returned) == (Decimal("5.20"), Decimal("2.00"))
    refund_invoice(ledger.store, gateway, "acme", "acme/2026-03", Decimal("45.00"))
    _stripe(ledger, gateway, events, "evt_crr", "charge.refunded", _march_charge(intent, 6000))
    found = ledger.store.ledger("acme")
    april_credit = [line.amount for line in found.invoices["acme/2026-04"].lines if line.kind == "credit"]
    assert (found.invoices["acme/2026-03"].refunded, april_credit) == (Decimal("60.00"), [Decimal("-5.20")])


EARLY_RUNS = 100


def test_given_over_100_early_invoices_in_a_period_when_its_late_usage_goes_away_then_the_next_close_lands(
    stack: Stack,
) -> None:
    """D283's condition put every invoice that paid for the credited period in the close's transaction: 100 early
    invoices of March made April's close 1 invoice + 2 watermarks + 1 note + 101 invoice conditions + BILLING =
    106 items, past DynamoDB's 100 (moto: ValidationException, not a conflict, so every rerun failed the same way).
    Personal, crypto, threshold $1.00: 5,000 minutes (included), then 100 x 2,000 minutes, an early invoice after
    each: 2,000 x 0.00072 = 1.44 each (144.00 early). March's close: 144.00 usage - 144.00 billed early = 0.00 (a
    draft). 2,000 minutes go away: April's close finds March at -1.44, a note on a draft crypto bill = 1.44 of
    account credit; April bills 0.00, so the credit stays on the account."""
    ledger = _dynamo(stack)
    profile = AccountProfile("solo", (TierChange(START, "personal"),), billing_method="crypto")
    ledger.register(replace(profile, progressive_threshold_usd=Decimal("1.00")))
    ledger.rate("solo", "2026-03", SEG, "video", 5_000)
    for _ in range(EARLY_RUNS):
        ledger.rate("solo", "2026-03", SEG, "video", 2_000)
        early = invoice_early(ledger.store, "solo", MAR, default_catalog(), lambda: MAR.start + timedelta(days=10))
        assert early is not None
        assert early.total == Decimal("1.44")
    march = compose_close(ledger.store.ledger("solo"), MAR, default_catalog(), MAR.end)
    assert march is not None
    assert march.invoice.total == Decimal("0.00")
    ledger.store.create_invoice(march)
    ledger.rate("solo", "2026-03", SEG, "video", -2_000)
    close_account(_deps(ledger.store), "solo", APR, APR.end)
    found = ledger.store.ledger("solo")
    note = found.credit_notes["solo/2026-03/credit-2026-04"]
    assert (note.to_credit, found.billing.credit) == (Decimal("1.44"), Decimal("1.44"))
    assert found.invoices["solo/2026-04"].total == Decimal("0.00")
    assert len([invoice for invoice in found.invoices.values() if invoice.period == "2026-03"]) == EARLY_RUNS + 1


def _lost_dispute_of_april(ledger: Ledger) -> Any:
    """April's 7.20 disputed and lost: the customer's bank withdraws the funds (``charged_back``)."""
    events = Events()
    obj = _dispute("pi_lost", "lost") | {"id": "dp_lost", "amount": 720, "metadata": {"invoice_id": "solo/2026-04"}}
    key = events.add("evt_lost", "charge.dispute.funds_withdrawn", obj)
    return apply_stripe_event(ledger.store, _Bus(), events, *key, MAY.end, None)


def test_given_a_dispute_lost_between_the_closes_read_and_its_write_then_the_note_credits_only_what_is_left(
    ledger: Ledger,
) -> None:
    """May's close reads the ledger (April holds March's 7.20: the note may credit 7.20); April's dispute is lost
    (its 7.20 withdrawn) before the close writes. The chargeback moves the fence the close waits on, so the close
    composes again: April holds 0.00 of March's usage, the note credits 0.00 and records the 7.20 as returned.
    Before: the note credited 7.20 of money the chargeback had already taken back (14.40 back on 7.20 paid)."""
    found = _may_closed_after(ledger, lambda: _lost_dispute_of_april(ledger))
    note = found.credit_notes[NOTE]
    assert (note.to_credit, note.returned) == (Decimal("0.00"), Decimal("7.20"))
    assert found.invoices["solo/2026-04"].charged_back == Decimal("7.20")
    assert found.billing.credit == Decimal("0.00")


def _dispute_of_march(store: Any, event_type: str) -> Any:
    """March's 3.60 disputed: its funds withdrawn (lost) or reinstated (won), dispute ``dp_march``."""
    events = Events()
    obj = _dispute("pi_march", "lost") | {"id": "dp_march", "amount": 360, "metadata": {"invoice_id": "solo/2026-03"}}
    key = events.add("evt_" + event_type, event_type, obj)
    return apply_stripe_event(store, _Bus(), events, *key, MAY.end, None)


def _march_charged_back_and_credited_by_may(ledger: Ledger) -> None:
    """March 10,000 minutes -> 5,000 over x 0.00072 = 3.60, paid; 10,000 late March minutes (7.20) and April's own
    10,000 (3.60) -> April 10.80, paid; March's 3.60 is charged back; 15,000 March minutes go away (March 5,000:
    0.00, so -10.80) -> May's note on March: March holds 0.00 and April 7.20 of March's usage, so 7.20 account
    credit and 3.60 returned. April's own 3.60 is the only money a refund may give back (no note on April)."""
    ledger.register(AccountProfile("solo", (TierChange(START, "personal"),), billing_method="crypto"))
    ledger.rate("solo", "2026-03", SEG, "video", 10_000)
    assert _closed_and_paid(ledger, MAR).total == Decimal("3.60")
    ledger.rate("solo", "2026-03", SEG, "video", 10_000)
    ledger.rate("solo", "2026-04", SEG, "video", 10_000)
    assert _closed_and_paid(ledger, APR).total == Decimal("10.80")
    _dispute_of_march(ledger.store, "charge.dispute.funds_withdrawn")
    ledger.rate("solo", "2026-03", SEG, "video", -15_000)
    close_account(_deps(ledger.store), "solo", MAY, MAY.end)
    note = ledger.store.ledger("solo").credit_notes[NOTE]
    assert (note.to_credit, note.returned) == (Decimal("7.20"), Decimal("3.60"))
    assert refundable_now(ledger, "solo/2026-04") == Decimal("3.60")


def refundable_now(ledger: Ledger, invoice_id: str) -> Decimal:
    found = ledger.store.ledger("solo")
    return refundable(found, found.invoices[invoice_id])


def _given_back_once(ledger: Ledger) -> None:
    """14.40 paid (March 3.60 kept again, April 10.80): the note credits 10.80 (all of March's usage, its 3.60
    reinstated), the refund owes April's own 3.60 - 14.40 back, never more."""
    found = ledger.store.ledger("solo")
    note = found.credit_notes[NOTE]
    assert (note.to_credit, note.returned) == (Decimal("10.80"), NONE)
    assert found.billing.credit == Decimal("10.80")
    assert found.invoices["solo/2026-04"].refund_owed == Decimal("3.60")
    march, april = found.invoices["solo/2026-03"], found.invoices["solo/2026-04"]
    paid = march.kept + april.kept + april.refund_owed
    assert (paid, found.billing.credit + found.invoices["solo/2026-04"].refund_owed) == (Decimal("14.40"),) * 2


def test_given_a_refund_of_another_paying_invoice_between_a_reinstatements_read_and_write_then_nothing_goes_twice(
    ledger: Ledger,
) -> None:
    """March's dispute is won (3.60 reinstated: the note may credit its 3.60 returned) while April's own 3.60 is
    refunded (all a refund may give) between the reinstatement's read and write. The refund moves ``refund_rev``, so the reinstatement
    re-reads (D308); either way the refund takes only April's own money, which no note credited, and the
    reinstatement only March's: 10.80 credit + 3.60 owed = 14.40 on 14.40 paid."""
    _march_charged_back_and_credited_by_may(ledger)
    store = _Interleaved(ledger.store)
    store.before_credit = lambda: refund_invoice(ledger.store, InMemoryPaymentGateway(), "solo", "solo/2026-04", None)
    _dispute_of_march(store, "charge.dispute.funds_reinstated")
    assert store.before_credit is None  # the refund landed in between
    _given_back_once(ledger)


def test_given_a_reinstatement_between_a_refunds_read_and_write_then_the_refund_still_takes_only_free_money(
    ledger: Ledger,
) -> None:
    """The other order: the refund of April's own 3.60 reads (3.60 refundable), March's 3.60 is reinstated into
    the note before the refund writes. The refund's write does not wait on ``refund_rev``, and needs not: the note
    credits March's reinstated money, not April's own, so the refund's bound is the same after - 3.60 owed, 10.80
    credit, 14.40 on 14.40 paid. A reinstatement that could take money a refund may give back would fail here."""
    _march_charged_back_and_credited_by_may(ledger)
    store = _Interleaved(ledger.store)
    store.before_update = lambda: _dispute_of_march(ledger.store, "charge.dispute.funds_reinstated")
    refund_invoice(store, InMemoryPaymentGateway(), "solo", "solo/2026-04", None)  # all it may: bounded again
    assert store.before_update is None
    _given_back_once(ledger)
