"""A card refund Stripe made and then failed (``refund.failed``; ``refund.updated``/``charge.refund.updated`` with
status ``failed``): the money went back to our Stripe balance, the customer got nothing. It is recorded on the
invoice by refund id and no longer counted as given back - ours or one made in the dashboard, in any order, once -
what notes recorded as returned meanwhile becomes account credit, and the failure is announced once
(D340). Run on the fake and on DynamoDB (moto): the new field is stored and read back.

Team card, March 65.20 paid: 29.00 March fee + 10,000 video minutes over the 50,000 included x 0.00072 = 7.20 of usage
+ 29.00 April's fee in advance (``_team_march_paid``)."""

from __future__ import annotations

import copy
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest

from kilo_billing.contracts import RefundFailedV1
from kilo_billing.invoicing import refundable
from kilo_billing.periods_items import invoice_to_item
from kilo_invoice.logic import apply_stripe_event, close_account, refund_invoice
from kilo_invoice.model import EarlierRefundFinishedError
from kilo_invoice.ports import GatewayRejectedError
from tests.conftest import Stack
from tests.contract.ledger_harness import SEG, Ledger, _dynamo
from tests.contract.test_note_refund_race import (
    APR,
    NONE,
    _march_charge,
    _request_timing_out,
    _team_march_paid,
)
from tests.payment_fakes import InMemoryPaymentGateway
from tests.scenarios.test_card_payment_events import (
    FIXTURES,
    Events,
    _delivered_a_second_after_each,
    _marker_write_lost_after_the_first_alert,
)

MARCH = "acme/2026-03"
OURS = "acme/2026-03/refund/1"  # our first refund request's id, as the Stripe adapter puts it in the metadata


class _Recorded:
    """The bus: what was published, in order."""

    def __init__(self) -> None:
        self.published: list[tuple[str, dict[str, Any]]] = []

    def publish(self, detail_type: str, detail: Any) -> None:
        self.published.append((detail_type, dict(detail)))


def _refund(refund_id: str, intent: str | None, cents: int, status: str, ours: bool) -> dict[str, Any]:
    """A Refund of March's charge (Stripe's published fixture with this story's ids laid over it); ``ours``: made by
    the Stripe adapter (``kilo_refund_id``), else in the dashboard. Failed: Stripe's ``failure_reason`` set."""
    obj = copy.deepcopy(FIXTURES["refund"])
    obj.update(
        id=refund_id,
        amount=cents,
        charge="ch_mar",
        payment_intent=intent,
        metadata={"kilo_refund_id": OURS} if ours else {},
        status=status,
    )
    if status == "failed":
        obj["failure_reason"] = "expired_or_canceled_card"
    return obj


def _stripe(
    ledger: Ledger,
    gateway: InMemoryPaymentGateway,
    events: Events,
    name: str,
    kind: str,
    obj: Any,
    bus: Any = None,
    created: int | None = None,
    now: datetime = APR.start,
) -> Any:
    """One Stripe event stored under ``name`` (the same name again: a redelivery) and applied at ``now``;
    ``created``: when Stripe created it (None: the fixture's time, the same for every event)."""
    return apply_stripe_event(
        ledger.store, bus or _Recorded(), events, *events.add(name, kind, obj, created), now, gateway
    )


def _march(ledger: Ledger) -> Any:
    return ledger.store.ledger("acme").invoices[MARCH]


def _ours_of_20_made(ledger: Ledger) -> tuple[InMemoryPaymentGateway, str | None, Events]:
    """Our refund of 20.00 made and its ``charge.refunded`` (2000): 20.00 refunded, March keeps 45.20."""
    gateway, _deps, intent = _team_march_paid(ledger)
    refund_invoice(ledger.store, gateway, "acme", MARCH, Decimal("20.00"))
    events = Events()
    _stripe(ledger, gateway, events, "evt_cr", "charge.refunded", _march_charge(intent, 2000))
    assert (_march(ledger).refunded, _march(ledger).kept) == (Decimal("20.00"), Decimal("45.20"))
    return gateway, intent, events


@pytest.mark.parametrize(
    "kinds",
    [
        ("refund.failed",),
        ("refund.updated",),
        ("charge.refund.updated",),
        ("refund.failed", "refund.failed"),  # delivered again
        ("refund.updated", "refund.failed", "charge.refund.updated"),  # the same failure by each event: once
    ],
)
def test_given_our_refund_made_when_stripe_fails_it_then_the_invoice_keeps_it_again(
    ledger: Ledger, kinds: tuple[str, ...]
) -> None:
    """Ours of 20.00 made, then Stripe fails it: 20.00 - 20.00 = 0.00 refunded, March keeps 65.20 again and all 65.20
    is refundable again. Before: 20.00 refunded, 45.20 kept and refundable (the failure ignored)."""
    gateway, intent, events = _ours_of_20_made(ledger)
    for n, kind in enumerate(kinds):
        _stripe(ledger, gateway, events, f"evt_f{n}", kind, _refund("re_ours", intent, 2000, "failed", ours=True))
    march = _march(ledger)
    assert (march.refunded, march.kept, march.kept_less_pending) == (NONE, Decimal("65.20"), Decimal("65.20"))
    assert refundable(ledger.store.ledger("acme"), march) == Decimal("65.20")


def test_given_a_refund_updated_that_is_not_a_failure_then_nothing_changes(ledger: Ledger) -> None:
    """``refund.updated`` of ours with status ``succeeded`` (its other updates): still 20.00 refunded."""
    gateway, intent, events = _ours_of_20_made(ledger)
    outcome = _stripe(
        ledger, gateway, events, "evt_u", "refund.updated", _refund("re_ours", intent, 2000, "succeeded", ours=True)
    )
    assert (outcome.changed, _march(ledger).refunded) == (False, Decimal("20.00"))


@pytest.mark.parametrize(
    "order",
    [
        ("refund.created", "charge.refunded", "refund.failed"),
        ("refund.failed", "refund.created", "charge.refunded"),  # the failure first
        ("refund.created", "refund.failed", "charge.refunded"),  # the charge's total from before the failure, late
        ("charge.refunded", "refund.failed"),  # its refund.created not here
        ("refund.failed",),  # only the failure
        ("refund.created", "charge.refunded", "refund.failed", "refund.created", "charge.refunded"),  # again
    ],
)
def test_given_a_dashboard_refund_stripe_fails_in_any_order_then_it_is_not_given_back(
    ledger: Ledger, order: tuple[str, ...]
) -> None:
    """The dashboard refunds 10.00 (``refund.created`` 1000, ``charge.refunded`` 1000), Stripe fails it: in any
    order and repetition 0.00 refunded, March keeps 65.20. Before: 10.00 refunded, 55.20 kept."""
    gateway, _deps, intent = _team_march_paid(ledger)
    events = Events()
    objects = {
        "refund.created": _refund("re_dash", intent, 1000, "succeeded", ours=False),
        "charge.refunded": _march_charge(intent, 1000),
        "refund.failed": _refund("re_dash", intent, 1000, "failed", ours=False),
    }
    for n, kind in enumerate(order):
        _stripe(ledger, gateway, events, f"evt_{kind}_{n}", kind, objects[kind])
    march = _march(ledger)
    assert (march.refunded, march.kept) == (NONE, Decimal("65.20"))


def test_given_a_dashboard_refund_failed_and_another_made_then_only_the_other_is_given_back(ledger: Ledger) -> None:
    """The dashboard's 10.00 fails; then the dashboard refunds 5.00 (``refund.created`` 500; the charge's total
    after the failure: ``charge.refunded`` 500): 5.00 refunded, March keeps 65.20 - 5.00 = 60.20."""
    gateway, _deps, intent = _team_march_paid(ledger)
    events = Events()
    _stripe(ledger, gateway, events, "e1", "refund.created", _refund("re_dash", intent, 1000, "succeeded", False))
    _stripe(ledger, gateway, events, "e2", "charge.refunded", _march_charge(intent, 1000))
    _stripe(ledger, gateway, events, "e3", "refund.failed", _refund("re_dash", intent, 1000, "failed", False))
    _stripe(ledger, gateway, events, "e4", "refund.created", _refund("re_two", intent, 500, "succeeded", False))
    _stripe(ledger, gateway, events, "e5", "charge.refunded", _march_charge(intent, 500))
    march = _march(ledger)
    assert (march.refunded, march.kept) == (Decimal("5.00"), Decimal("60.20"))


def test_given_our_refund_failing_after_a_note_counted_it_then_the_note_credits_what_it_could_not(
    ledger: Ledger,
) -> None:
    """Ours refunds all 65.20 (made); 5,000 March minutes go away late (-5,000 x 0.00072 = -3.60): April's note finds
    March holding nothing - 0.00 credit, 3.60 returned. Stripe then fails the refund: March keeps 65.20 again, so the
    note's 3.60 becomes account credit (0.00 returned) and its history says why. Before: 0.00 credit, 3.60 returned -
    the customer got neither the refund nor the credit."""
    gateway, deps, intent = _team_march_paid(ledger)
    done = refund_invoice(ledger.store, gateway, "acme", MARCH, None)
    assert done.refunded == Decimal("65.20")
    ledger.rate("acme", "2026-03", SEG, "video", -5_000)
    close_account(deps, "acme", APR, APR.end)
    note = ledger.store.ledger("acme").credit_notes["acme/2026-03/credit-2026-04"]
    assert (note.to_credit, note.returned) == (NONE, Decimal("3.60"))
    events = Events()
    _stripe(ledger, gateway, events, "evt_f", "refund.failed", _refund("re_ours", intent, 6520, "failed", ours=True))
    found = ledger.store.ledger("acme")
    note = found.credit_notes["acme/2026-03/credit-2026-04"]
    assert (note.to_credit, note.returned) == (Decimal("3.60"), NONE)
    assert found.billing.credit == Decimal("3.60")
    assert note.history[-1][0] == "3.60 kept again (a refund of 65.20 failed at the card processor): account credit"
    assert found.invoices[MARCH].kept == Decimal("65.20")


def test_given_our_refund_pending_when_stripe_fails_it_then_the_request_ends_and_a_new_one_is_asked_anew(
    ledger: Ledger,
) -> None:
    """Ours of 20.00 recorded, Stripe's answer lost (pending: March keeps 65.20 - 20.00 = 45.20 less pending); its
    refund fails at Stripe before we hear back. The request ends (its refund was made, then failed): nothing
    pending, 0.00 refunded, March keeps 65.20. Before: still pending (45.20), and the rerun would record 20.00 as
    refunded. Refunding again is the operator's new request (``/refund/2``), not a silent retry to the same card:
    20.00 refunded, 45.20 kept."""
    gateway, _deps, intent = _team_march_paid(ledger)
    _request_timing_out(ledger, gateway, Decimal("20.00"))
    assert _march(ledger).kept_less_pending == Decimal("45.20")
    events = Events()
    _stripe(ledger, gateway, events, "evt_f", "refund.failed", _refund("re_ours", intent, 2000, "failed", ours=True))
    march = _march(ledger)
    assert (march.refund_pending, march.refunded, march.kept_less_pending) == (None, NONE, Decimal("65.20"))
    again = refund_invoice(ledger.store, gateway, "acme", MARCH, Decimal("20.00"))
    assert (again.refunds_requested, again.refunded, again.kept) == (2, Decimal("20.00"), Decimal("45.20"))


def test_given_a_refund_failed_then_it_is_announced_once(ledger: Ledger) -> None:
    """The failure of ours (20.00) is published once as ``RefundFailed.v1`` with Stripe's reason, whatever event
    says it and however often; the outcome names it."""
    gateway, intent, events = _ours_of_20_made(ledger)
    bus = _Recorded()
    failed = _refund("re_ours", intent, 2000, "failed", ours=True)
    first = _stripe(ledger, gateway, events, "evt_f", "refund.failed", failed, bus)
    _stripe(ledger, gateway, events, "evt_f", "refund.failed", failed, bus)
    _stripe(ledger, gateway, events, "evt_u", "refund.updated", failed, bus)
    assert first.published == ("refund-failed:re_ours",)
    assert [(kind, detail["event_id"]) for kind, detail in bus.published] == [
        (RefundFailedV1.DETAIL_TYPE, "refund-failed:re_ours")
    ]
    detail = bus.published[0][1]
    assert (detail["invoice_id"], detail["amount"], detail["reason"], detail["ours"]) == (
        MARCH,
        "20.00",
        "expired_or_canceled_card",
        True,
    )


def test_given_a_refund_failure_redelivered_across_month_end_after_its_marker_was_lost_then_one_text(
    ledger: Ledger,
) -> None:
    """D348 amended (dated by the event): ours of 20.00 made, then ``refund.failed`` created 23:59:50 on 30 April,
    handled at 23:59:55 (recorded, its alert published, the marker write lost), the message back at 00:00:30 on 1
    May: published again. The alerts ledger sends a key once per month of ``occurred_at``: the handler's clock put the
    two in April and May (two "did not reach your card" texts and emails); the event's own ``created`` puts both in
    April - one of each. The failure itself is recorded once: 20.00 - 20.00 = 0.00 refunded, March keeps 65.20."""
    gateway, intent, events = _ours_of_20_made(ledger)
    bus = _Recorded()
    failed = _refund("re_ours", intent, 2000, "failed", ours=True)
    created = int(datetime(2026, 4, 30, 23, 59, 50, tzinfo=UTC).timestamp())
    first, again = datetime(2026, 4, 30, 23, 59, 55, tzinfo=UTC), datetime(2026, 5, 1, 0, 0, 30, tzinfo=UTC)
    _marker_write_lost_after_the_first_alert(bus, ledger.store, RefundFailedV1.DETAIL_TYPE)
    with pytest.raises(TimeoutError):
        _stripe(ledger, gateway, events, "evt_f", "refund.failed", failed, bus, created, first)
    _stripe(ledger, gateway, events, "evt_f", "refund.failed", failed, bus, created, again)
    alerts = [detail for kind, detail in bus.published if kind == RefundFailedV1.DETAIL_TYPE]
    # published twice (the marker was lost), both as of the event's creation: 30 April 23:59:50 UTC
    assert [(a["event_id"], a["occurred_at"]) for a in alerts] == [
        ("refund-failed:re_ours", "2026-04-30T23:59:50+00:00")
    ] * 2
    march = _march(ledger)
    assert (march.refunded, march.kept, "refund_failed:re_ours" in march.announced) == (NONE, Decimal("65.20"), True)
    mailer, texter = _delivered_a_second_after_each(RefundFailedV1.DETAIL_TYPE, alerts, (first, again))
    # the refund's 2000 cents: "$20.00"; a HIGH alert goes by email and SMS
    assert [text for _, text in texter.sent] == [
        "Kilo: our refund of $20.00 did not reach your card; the money is back with Kilo. Contact us about it. "
        "Reply STOP to opt out"
    ]
    assert [subject for _, subject, _, _ in mailer.sent] == ["Your refund of $20.00 from Kilo did not reach your card"]


@pytest.mark.parametrize(
    ("kinds", "dated"),
    [
        # refund.updated created 23:59:59 on 30 April first: 1777593599 s (20,573 days x 86,400 + 86,399) is April
        (("refund.updated", "refund.failed"), "2026-04-30T23:59:59+00:00"),
        # refund.failed created 00:00:01 on 1 May first (1777593601 s): recorded with that time; the update created
        # 2 s before it then moves the failure's time back for the money (D340), not the alert's date
        (("refund.failed", "refund.updated"), "2026-05-01T00:00:01+00:00"),
    ],
)
def test_given_one_refund_failure_by_two_event_types_either_side_of_month_end_after_the_marker_was_lost_then_one_text(
    ledger: Ledger, kinds: tuple[str, str], dated: str
) -> None:
    """D348 amended (review g2): ours of 20.00 made, then Stripe says its failure twice - ``refund.updated`` created
    23:59:59 on 30 April and ``refund.failed`` created 00:00:01 on 1 May - both handled in May (00:00:05, 00:00:06),
    the first one's marker write lost. Each event's own ``created`` put the two alerts in April and May (two texts,
    two emails); the failure's time stored with the refund id by the first (``failed_refunds_at``, written before
    the publish) dates both: one text, one email. Recorded once: 20.00 - 20.00 = 0.00 refunded, March keeps 65.20."""
    gateway, intent, events = _ours_of_20_made(ledger)
    bus = _Recorded()
    failed = _refund("re_ours", intent, 2000, "failed", ours=True)
    created = {
        "refund.updated": int(datetime(2026, 4, 30, 23, 59, 59, tzinfo=UTC).timestamp()),
        "refund.failed": int(datetime(2026, 5, 1, 0, 0, 1, tzinfo=UTC).timestamp()),
    }
    handled = (datetime(2026, 5, 1, 0, 0, 5, tzinfo=UTC), datetime(2026, 5, 1, 0, 0, 6, tzinfo=UTC))
    _marker_write_lost_after_the_first_alert(bus, ledger.store, RefundFailedV1.DETAIL_TYPE)
    with pytest.raises(TimeoutError):
        _stripe(ledger, gateway, events, "evt_1", kinds[0], failed, bus, created[kinds[0]], handled[0])
    _stripe(ledger, gateway, events, "evt_2", kinds[1], failed, bus, created[kinds[1]], handled[1])
    alerts = [detail for kind, detail in bus.published if kind == RefundFailedV1.DETAIL_TYPE]
    # published twice (the first marker was lost), both as of the time the first event stored for re_ours
    assert [(a["event_id"], a["occurred_at"]) for a in alerts] == [("refund-failed:re_ours", dated)] * 2
    _recorded_once_then_one_text_and_one_email(ledger, alerts, handled)


def test_given_one_refund_failure_by_two_event_types_handled_concurrently_either_side_of_month_end_then_one_text(
    ledger: Ledger,
) -> None:
    """D348 amended (review rh3): ours of 20.00 made, then Stripe says its failure twice, handled concurrently:
    ``refund.failed`` (created 00:00:01 on 1 May) reads the invoice; before its write lands ``refund.updated``
    (created 23:59:59 on 30 April) records the failure with its time, publishes, and its marker write is lost. The
    first write then conflicts and is tried again on what is stored: the failure is known, nothing to write, and its
    alert goes out. Before: dated by the time stored as read BEFORE the conflict (none: its own 1 May), the two alerts
    fell in April and May - two texts, two emails. Now dated by the time on the invoice its winning attempt read
    (23:59:59 on 30 April): one text, one email. Recorded once: 20.00 - 20.00 = 0.00 refunded, March keeps 65.20."""
    gateway, intent, events = _ours_of_20_made(ledger)
    bus, other_bus = _Recorded(), _Recorded()
    failed = _refund("re_ours", intent, 2000, "failed", ours=True)
    updated_at = int(datetime(2026, 4, 30, 23, 59, 59, tzinfo=UTC).timestamp())  # 1777593599 s: April
    failed_at = int(datetime(2026, 5, 1, 0, 0, 1, tzinfo=UTC).timestamp())  # 1777593601 s: May
    handled = (datetime(2026, 5, 1, 0, 0, 5, tzinfo=UTC), datetime(2026, 5, 1, 0, 0, 6, tzinfo=UTC))
    store = ledger.store
    write = store.update_invoice
    _marker_write_lost_after_the_first_alert(other_bus, store, RefundFailedV1.DETAIL_TYPE)
    lost_marker_write = store.update_invoice
    first_write = [True]

    def the_other_event_lands_first(*args: Any, **kwargs: Any) -> Any:
        if first_write[0]:  # refund.failed's first write: refund.updated runs to its lost marker write before it
            first_write[0] = False
            store.update_invoice = lost_marker_write
            with pytest.raises(TimeoutError):
                _stripe(ledger, gateway, events, "evt_u", "refund.updated", failed, other_bus, updated_at, handled[0])
            store.update_invoice = the_other_event_lands_first
        return write(*args, **kwargs)

    store.update_invoice = the_other_event_lands_first
    _stripe(ledger, gateway, events, "evt_f", "refund.failed", failed, bus, failed_at, handled[1])
    alerts = [detail for kind, detail in (*other_bus.published, *bus.published) if kind == RefundFailedV1.DETAIL_TYPE]
    # published twice (the first marker was lost), both as of the time refund.updated stored for re_ours
    assert [(a["event_id"], a["occurred_at"]) for a in alerts] == [
        ("refund-failed:re_ours", "2026-04-30T23:59:59+00:00")
    ] * 2
    _recorded_once_then_one_text_and_one_email(ledger, alerts, handled)


@pytest.mark.parametrize(
    "created",
    [
        10**15,  # accepted by ingest (< 2**53 = 9,007,199,254,740,992) but in the year 31,690,708
        1_777_593_590_000,  # 30 April 23:59:50 in milliseconds (1,777,593,590 s x 1000): read as seconds, year 58,299
    ],
)
def test_given_a_refund_failure_created_past_year_9999_then_it_is_announced_as_of_the_handlers_clock(
    ledger: Ledger, created: int
) -> None:
    """D348 amended (review g2): ``created`` past 9999-12-31T23:59:59 (253,402,300,799 s) cannot be a datetime. Before:
    ``fromtimestamp`` raised ValueError after the failure was recorded, the alert was never published and the
    message went to the DLQ. Now the alert is dated by the handler's clock (00:00:00 on 1 May): published once;
    recorded once, 0.00 refunded, March keeps 65.20."""
    gateway, intent, events = _ours_of_20_made(ledger)
    bus = _Recorded()
    failed = _refund("re_ours", intent, 2000, "failed", ours=True)
    outcome = _stripe(
        ledger, gateway, events, "evt_f", "refund.failed", failed, bus, created, datetime(2026, 5, 1, tzinfo=UTC)
    )
    assert outcome.published == ("refund-failed:re_ours",)
    assert [(kind, detail["occurred_at"]) for kind, detail in bus.published] == [
        (RefundFailedV1.DETAIL_TYPE, "2026-05-01T00:00:00+00:00")
    ]
    march = _march(ledger)
    assert (march.refunded, march.kept, "refund_failed:re_ours" in march.announced) == (NONE, Decimal("65.20"), True)


def test_given_our_refund_failed_when_a_later_charge_total_is_net_of_it_then_the_failure_is_taken_off_once(
    ledger: Ledger,
) -> None:
    """Ours of 20.00 made (``charge.refunded`` 2000, sent at t=100), Stripe fails it (t=200: the charge's total back
    to 0). The dashboard then refunds all 65.20: the charge's total Stripe sends (t=300) is 2000 - 2000 + 6520 = 6520,
    net of the failure already; its ``refund.created`` lands later. In that gap 65.20 is given back and March keeps
    65.20 - 65.20 = 0.00, so April's close with 5,000 March minutes gone (-5,000 x 0.00072 = -3.60) credits 0.00 (3.60
    returned); after ``refund.created``: 65.20 refunded + 0.00 credit = 65.20 back on 65.20 paid. Before: the gap read
    max(0.00 + 20.00, 65.20 + 0.00, 20.00) - 20.00 = 45.20 refunded (the failure taken off a total net of it), March
    kept 20.00, the note credited 3.60: 65.20 + 3.60 = 68.80 back."""
    gateway, deps, intent = _team_march_paid(ledger)
    refund_invoice(ledger.store, gateway, "acme", MARCH, Decimal("20.00"))
    events = Events()
    _stripe(ledger, gateway, events, "e1", "charge.refunded", _march_charge(intent, 2000), created=100)
    _stripe(
        ledger, gateway, events, "e2", "refund.failed", _refund("re_ours", intent, 2000, "failed", True), created=200
    )
    _stripe(ledger, gateway, events, "e3", "charge.refunded", _march_charge(intent, 6520), created=300)
    assert (_march(ledger).refunded, _march(ledger).kept) == (Decimal("65.20"), NONE)
    ledger.rate("acme", "2026-03", SEG, "video", -5_000)
    close_account(deps, "acme", APR, APR.end)
    dashboard = _refund("re_dash", intent, 6520, "succeeded", ours=False)
    _stripe(ledger, gateway, events, "e4", "refund.created", dashboard, created=301)
    found = ledger.store.ledger("acme")
    note = found.credit_notes["acme/2026-03/credit-2026-04"]
    march = found.invoices[MARCH]
    assert (march.refunded, march.kept, note.to_credit, note.returned) == (
        Decimal("65.20"),
        NONE,
        NONE,
        Decimal("3.60"),
    )
    assert found.billing.credit == NONE


def test_given_a_dashboard_refund_failed_then_a_smaller_total_sent_later_then_the_later_total_is_read(
    ledger: Ledger,
) -> None:
    """The dashboard's 10.00 (``refund.created`` and ``charge.refunded`` 1000 at t=100) fails at t=200; a second
    dashboard refund of 5.00 follows, known only by its charge's total sent at t=300: 1000 - 1000 + 500 = 500 (its
    ``refund.created`` not here yet). 500 + the 1000 failed before it = 15.00 refunded at Stripe, less the 10.00
    failed: 5.00 refunded, March keeps 65.20 - 5.00 = 60.20. Before: the smaller total was read as an older event and
    dropped: 0.00 refunded, 65.20 kept."""
    gateway, _deps, intent = _team_march_paid(ledger)
    events = Events()
    made = _refund("re_dash", intent, 1000, "succeeded", ours=False)
    _stripe(ledger, gateway, events, "e1", "refund.created", made, created=100)
    _stripe(ledger, gateway, events, "e2", "charge.refunded", _march_charge(intent, 1000), created=100)
    failed = _refund("re_dash", intent, 1000, "failed", ours=False)
    _stripe(ledger, gateway, events, "e3", "refund.failed", failed, created=200)
    _stripe(ledger, gateway, events, "e4", "charge.refunded", _march_charge(intent, 500), created=300)
    assert (_march(ledger).refunded, _march(ledger).kept) == (Decimal("5.00"), Decimal("60.20"))
    _stripe(ledger, gateway, events, "e2", "charge.refunded", _march_charge(intent, 1000), created=100)  # again, late
    assert (_march(ledger).refunded, _march(ledger).kept) == (Decimal("5.00"), Decimal("60.20"))


def test_given_a_pending_request_when_one_payments_part_of_it_fails_then_only_that_part_counts_and_it_stays_pending(
    ledger: Ledger,
) -> None:
    """Ours of all 65.20 recorded, Stripe's answer lost (pending); the invoice was paid in two payments and the
    request's refund on the first (40.00) is made and then fails at the bank; the second's 25.20 was never made. 0.00
    refunded, March keeps 65.20; the request stays pending: once made it gives back 65.20 - 40.00 failed = 25.20,
    so March keeps 65.20 - 25.20 = 40.00 less pending. Its rerun (the same request) records 25.20 refunded, 40.00
    kept. Before: the request ended as made for all 65.20 - 65.20 - 40.00 = 25.20 recorded refunded that was never
    made, 40.00 kept instead of 65.20."""
    gateway, _deps, intent = _team_march_paid(ledger)
    _request_timing_out(ledger, gateway, None)
    events = Events()
    _stripe(ledger, gateway, events, "evt_f", "refund.failed", _refund("re_a", intent, 4000, "failed", ours=True))
    march = _march(ledger)
    assert march.refund_pending is not None
    assert (march.refund_pending.refund_id, march.refund_pending.amount) == (OURS, Decimal("65.20"))
    assert (march.refunded, march.kept, march.kept_less_pending) == (NONE, Decimal("65.20"), Decimal("40.00"))
    done = refund_invoice(ledger.store, gateway, "acme", MARCH, Decimal("65.20"))
    assert (done.refund_pending, done.refunded, done.kept) == (None, Decimal("25.20"), Decimal("40.00"))


def test_given_an_item_written_before_d331_when_its_dashboard_refund_fails_then_it_is_taken_back_once(
    stack: Stack,
) -> None:
    """An invoice item written before D331 (no ``refunds_made``, ``outside_refunds``, ``failed_refunds``): a 10.00
    dashboard refund known by ``charge.refunded`` (1000): 10.00 refunded, read as ``refunds_made`` (D331's legacy
    read). The refund then fails at the bank: 10.00 - 10.00 = 0.00 refunded, March keeps 65.20. Before: the failure
    recorded it among the outside refunds as well - 10.00 + 10.00 - 10.00 failed = 10.00 refunded, 55.20 kept."""
    ledger = _dynamo(stack)
    gateway, _deps, intent = _team_march_paid(ledger)
    events = Events()
    _stripe(ledger, gateway, events, "evt_crd", "charge.refunded", _march_charge(intent, 1000))
    item = invoice_to_item(_march(ledger))
    for newer in ("refunds_made", "outside_refunds", "failed_refunds"):
        item.pop(newer, None)
    stack.clients["dynamodb"].put_item(TableName=stack.template.physical_name("UsageTable"), Item=item)
    assert (_march(ledger).refunded, _march(ledger).refunds_made) == (Decimal("10.00"), Decimal("10.00"))
    _stripe(ledger, gateway, events, "evt_f", "refund.failed", _refund("re_dash", intent, 1000, "failed", ours=False))
    march = _march(ledger)
    assert (march.refunded, march.kept) == (NONE, Decimal("65.20"))
    assert refundable(ledger.store.ledger("acme"), march) == Decimal("65.20")


def test_given_a_dashboard_refund_failed_when_its_total_from_before_the_failure_lands_late_then_it_is_still_taken_back(
    ledger: Ledger,
) -> None:
    """Times laid over the late-total order: the dashboard's 10.00 (``refund.created`` t=100) fails (t=200); the
    charge's total Stripe sent with the refund (1000, t=100) lands after the failure. It was sent before the failure,
    so it includes it: 10.00 - 10.00 = 0.00 refunded, March keeps 65.20 (a total is read by when Stripe sent it, not
    by when it landed)."""
    gateway, _deps, intent = _team_march_paid(ledger)
    events = Events()
    made = _refund("re_dash", intent, 1000, "succeeded", ours=False)
    _stripe(ledger, gateway, events, "e1", "refund.created", made, created=100)
    failed = _refund("re_dash", intent, 1000, "failed", ours=False)
    _stripe(ledger, gateway, events, "e2", "refund.failed", failed, created=200)
    _stripe(ledger, gateway, events, "e3", "charge.refunded", _march_charge(intent, 1000), created=100)
    assert (_march(ledger).refunded, _march(ledger).kept) == (NONE, Decimal("65.20"))


def test_given_a_failures_later_update_processed_before_its_refund_failed_then_the_failure_keeps_its_earlier_time(
    ledger: Ledger,
) -> None:
    """The dashboard's 10.00 (``refund.created`` and ``charge.refunded`` 1000 at t=100) fails at t=200; a second
    dashboard refund of 5.00 is known only by its charge's total sent at t=300: 1000 - 1000 + 500 = 500. A later
    ``refund.updated`` of the failed Refund (t=400, still failed) is processed before the ``refund.failed`` (t=200).
    The failure is dated by the earliest event saying it (t=200 < t=300): the 500 is net of it, 5.00 + 10.00 = 15.00
    refunded at Stripe, less the 10.00 failed = 5.00 refunded, March keeps 65.20 - 5.00 = 60.20. Before: dated t=400
    (the first processed), the 500 read as still holding it - 500 - 1000 -> taken off twice: 0.00 refunded, 65.20
    kept. Redelivered, nothing changes."""
    gateway, _deps, intent = _team_march_paid(ledger)
    events = Events()
    made = _refund("re_dash", intent, 1000, "succeeded", ours=False)
    failed = _refund("re_dash", intent, 1000, "failed", ours=False)
    _stripe(ledger, gateway, events, "e1", "refund.created", made, created=100)
    _stripe(ledger, gateway, events, "e2", "charge.refunded", _march_charge(intent, 1000), created=100)
    _stripe(ledger, gateway, events, "e4", "charge.refunded", _march_charge(intent, 500), created=300)
    _stripe(ledger, gateway, events, "e5", "refund.updated", failed, created=400)
    _stripe(ledger, gateway, events, "e3", "refund.failed", failed, created=200)
    march = _march(ledger)
    assert march.failed_refunds_at == (("re_dash", ("ch_mar", 200)),)
    assert (march.refunded, march.kept) == (Decimal("5.00"), Decimal("60.20"))
    _stripe(ledger, gateway, events, "e5", "refund.updated", failed, created=400)  # again
    assert (_march(ledger).refunded, _march(ledger).kept) == (Decimal("5.00"), Decimal("60.20"))


def _dashboard_10_failed_then_5_made(ledger: Ledger) -> tuple[InMemoryPaymentGateway, Any, str | None, Events]:
    """The dashboard's 10.00 (``refund.created`` and ``charge.refunded`` 1000 at t=100) fails at t=200; a second
    dashboard refund of 5.00 is known only by its charge's total sent at t=300 (500): 5.00 refunded, 60.20 kept."""
    gateway, deps, intent = _team_march_paid(ledger)
    events = Events()
    _stripe(
        ledger,
        gateway,
        events,
        "e1",
        "refund.created",
        _refund("re_dash", intent, 1000, "succeeded", False),
        created=100,
    )
    _stripe(ledger, gateway, events, "e2", "charge.refunded", _march_charge(intent, 1000), created=100)
    _stripe(
        ledger, gateway, events, "e3", "refund.failed", _refund("re_dash", intent, 1000, "failed", False), created=200
    )
    _stripe(ledger, gateway, events, "e4", "charge.refunded", _march_charge(intent, 500), created=300)
    return gateway, deps, intent, events


def test_given_a_failure_known_when_our_refund_is_requested_then_the_pending_request_counts_it_once(
    ledger: Ledger,
) -> None:
    """``_dashboard_10_failed_then_5_made`` (5.00 refunded, 60.20 kept; ``refunded`` stored net of the 10.00 failed),
    then ours of all that is left (60.20) recorded and Stripe's answer lost (pending). Once made: 5.00 + 60.20 = 65.20
    given back - the figure from the request is 5.00 before + 10.00 failed before + 60.20 = 75.20 gross, less the
    10.00 failed = 65.20 - so March keeps 60.20 - (65.20 - 5.00) = 0.00 less pending, nothing refundable. Before: 5.00
    + 60.20 = 65.20 read as gross, less 10.00 again = 60.20 (the outside and ours' figure 10.00 + 60.20 - 10.00):
    5.00 kept less pending."""
    gateway, _deps, _intent, _events = _dashboard_10_failed_then_5_made(ledger)
    assert (_march(ledger).refunded, _march(ledger).kept) == (Decimal("5.00"), Decimal("60.20"))
    _request_timing_out(ledger, gateway, None)
    march = _march(ledger)
    assert march.refund_pending is not None
    assert (march.refund_pending.amount, march.refund_pending.failed_before) == (Decimal("60.20"), Decimal("10.00"))
    assert (march.given_back(march.refund_pending), march.kept_less_pending) == (Decimal("65.20"), NONE)
    assert refundable(ledger.store.ledger("acme"), march) == NONE


def test_given_a_failure_known_when_our_refund_is_requested_then_a_note_meanwhile_does_not_give_it_back_twice(
    ledger: Ledger,
) -> None:
    """As above, ours of 60.20 pending; April's close finds -5,000 March minutes (-5,000 x 0.00072 = -3.60): March
    keeps 0.00 less pending, so the note credits 0.00 and records 3.60 as returned; the rerun makes the 60.20 and its
    ``charge.refunded`` (500 + 6020 = 6520, t=500) lands: 65.20 + 10.00 failed before it = 75.20, less 10.00 = 65.20
    refunded, 0.00 kept, 0.00 credit: 65.20 back on 65.20 paid. Before: the note credited 3.60 - 65.20 + 3.60 = 68.80
    back."""
    gateway, deps, intent, events = _dashboard_10_failed_then_5_made(ledger)
    _request_timing_out(ledger, gateway, None)
    ledger.rate("acme", "2026-03", SEG, "video", -5_000)
    close_account(deps, "acme", APR, APR.end)
    refund_invoice(ledger.store, gateway, "acme", MARCH, Decimal("60.20"))
    _stripe(ledger, gateway, events, "e6", "charge.refunded", _march_charge(intent, 6520), created=500)
    found = ledger.store.ledger("acme")
    note = found.credit_notes["acme/2026-03/credit-2026-04"]
    march = found.invoices[MARCH]
    assert (march.refunded, march.kept) == (Decimal("65.20"), NONE)
    assert (note.to_credit, note.to_due, note.returned) == (NONE, NONE, Decimal("3.60"))
    assert found.billing.credit == NONE


def test_given_a_pending_request_whose_part_failed_when_refund_all_is_rerun_then_it_says_what_was_refunded_truthfully(
    ledger: Ledger,
) -> None:
    """As ``..._one_payments_part_of_it_fails_...``: ours of all 65.20 pending, its 40.00 on the first payment made
    then failed at the bank. The operator reruns "refund all" (no amount): the pending request is finished - 65.20
    made less 40.00 failed = 25.20 refunded, March keeps 40.00 - and the run stops there, saying so: 25.20 refunded,
    40.00 kept, of which 40.00 came back from a refund the card's bank returned; never "nothing more was refunded"
    (25.20 just was) and never "run again to refund more" (the new request would send the 40.00 to the same card)."""
    gateway, _deps, intent = _team_march_paid(ledger)
    _request_timing_out(ledger, gateway, None)
    events = Events()
    _stripe(ledger, gateway, events, "evt_f", "refund.failed", _refund("re_a", intent, 4000, "failed", ours=True))
    with pytest.raises(EarlierRefundFinishedError, match="it is now done") as raised:
        refund_invoice(ledger.store, gateway, "acme", MARCH, None)
    said = str(raised.value)
    assert "25.20 refunded and 40.00 kept" in said
    # what came back is said as part of what is kept (65.20 - 25.20 = 40.00), not of the amount asked (review 4)
    assert "Of the 40.00 kept, 40.00 came back from refunds that failed (the RefundFailed alarm names" in said
    assert "of it came back" not in said
    assert not isinstance(raised.value, ValueError)  # not bad input: money moved (the CLI's exit 3, not 2)
    assert "if the card's bank returned it, a new refund is not sent to that card (refused, unless" in said
    assert "nothing more was refunded" not in said
    assert "run again to refund more" not in said  # only for a failure not the card's (D356), said as such
    march = _march(ledger)
    assert (march.refund_pending, march.refunded, march.kept) == (None, Decimal("25.20"), Decimal("40.00"))
    # what it says of a new refund holds: the 40.00 is not sent to that card unless told to (D340 failed card). The
    # fake holds one payment: Stripe's 40.00 made then returned by the bank is laid on it as its request's refund
    # (65.20 made by the rerun) failing 40.00 of it - 65.20 - 40.00 = 25.20 refunded there too
    gateway.fail_refund(OURS, amount=Decimal("40.00"))
    with pytest.raises(GatewayRejectedError, match="would go back to a card whose bank returned a refund"):
        refund_invoice(ledger.store, gateway, "acme", MARCH, Decimal("40.00"))
    march = _march(ledger)
    assert (march.refund_pending, march.refunded, march.kept) == (None, Decimal("25.20"), Decimal("40.00"))
    refund_invoice(ledger.store, gateway, "acme", MARCH, Decimal("40.00"), to_failed_card=True)
    march = _march(ledger)
    assert (march.refund_pending, march.refunded, march.kept) == (None, Decimal("65.20"), NONE)  # 25.20 + 40.00


def test_given_a_pending_request_finished_by_a_run_asking_another_amount_then_it_still_invites_a_new_run(
    ledger: Ledger,
) -> None:
    """No failure: ours of 20.00 pending; a run asking 10.00 finishes the 20.00 (20.00 refunded, 65.20 - 20.00 = 45.20
    kept) and does not refund the 10.00: it says so and that running again refunds it (D340 amended,
    review 2: only a failure's money is never invited back to the card)."""
    gateway, _deps, _intent = _team_march_paid(ledger)
    _request_timing_out(ledger, gateway, Decimal("20.00"))
    with pytest.raises(EarlierRefundFinishedError, match="it is now done") as raised:
        refund_invoice(ledger.store, gateway, "acme", MARCH, Decimal("10.00"))
    said = str(raised.value)
    assert "20.00 refunded and 45.20 kept" in said
    assert "the 10.00 asked now was not refunded: run again to refund it" in said


def _recorded_once_then_one_text_and_one_email(
    ledger: Ledger, alerts: list[dict[str, Any]], handled: tuple[datetime, datetime]
) -> None:
    """The failure recorded once (20.00 - 20.00 = 0.00 refunded, March keeps 65.20, its marker written), and the two
    publishes of its alert, delivered a second after each handling, reach the customer once."""
    march = _march(ledger)
    assert (march.refunded, march.kept, "refund_failed:re_ours" in march.announced) == (NONE, Decimal("65.20"), True)
    mailer, texter = _delivered_a_second_after_each(RefundFailedV1.DETAIL_TYPE, alerts, handled)
    # the refund's 2000 cents: "$20.00"; a HIGH alert goes by email and SMS, once per key and month
    assert [text for _, text in texter.sent] == [
        "Kilo: our refund of $20.00 did not reach your card; the money is back with Kilo. Contact us about it. "
        "Reply STOP to opt out"
    ]
    assert [subject for _, subject, _, _ in mailer.sent] == ["Your refund of $20.00 from Kilo did not reach your card"]
