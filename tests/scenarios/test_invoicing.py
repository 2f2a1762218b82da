"""Billing stories for the monthly close (Given/When/Then), against the in-memory ledger and payment gateway.
Every expected figure is worked by hand in the comments (price book 2026-01: video $0.00072, Team $29, Enterprise $99;
March 2026 has 31 days)."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest

from kilo_billing.accounts import AccountProfile
from kilo_billing.catalog import default_catalog
from kilo_billing.invoicing import BillingMethod, InvoiceRecord, InvoiceStatus
from kilo_billing.periods import Period
from kilo_billing.rating import TierChange
from kilo_invoice.logic import close_account
from kilo_invoice.model import CloseDeps
from kilo_invoice.ports import Customer
from tests.invoice_fakes import InMemoryLedgerStore
from tests.payment_fakes import InMemoryPaymentGateway

FEB, MAR, APR, MAY = Period(2026, 2), Period(2026, 3), Period(2026, 4), Period(2026, 5)


def at(day: int, month: int = 3) -> datetime:
    return datetime(2026, month, day, tzinfo=UTC)


def seg(instant: datetime) -> int:
    return int(instant.timestamp())


@dataclass
class Recorder:
    events: list[tuple[str, dict[str, Any]]] = field(default_factory=list)

    def publish(self, detail_type: str, detail: Any) -> None:
        self.events.append((detail_type, dict(detail)))


@dataclass
class World:
    store: InMemoryLedgerStore = field(default_factory=InMemoryLedgerStore)
    gateway: InMemoryPaymentGateway = field(default_factory=InMemoryPaymentGateway)
    bus: Recorder = field(default_factory=Recorder)

    @property
    def deps(self) -> CloseDeps:
        return CloseDeps(self.store, self.gateway, self.bus, default_catalog(), lambda _s: None)

    def signup(self, account: str, *changes: tuple[datetime, str], method: BillingMethod = BillingMethod.CARD) -> None:
        self.store.profiles[account] = AccountProfile(account, tuple(TierChange(a, t) for a, t in changes))
        self.store.methods[account] = method

    def close(self, account: str, period: Period) -> InvoiceRecord:
        outcome = close_account(self.deps, account, period, period.end)
        assert outcome.invoice is not None
        return outcome.invoice


def team_with_march_overage() -> World:
    """acme on Team by card from March 1, 60,000 March video minutes: 10,000 over x 0.00072 = 7.20 beside March's
    29.00 fee and April's 29.00 in advance - the card stories' shared start."""
    w = World()
    w.signup("acme", (at(1), "team"))
    w.store.rate("acme", "2026-03", seg(at(1)), "video", 60_000)
    return w


def amounts(invoice: InvoiceRecord, kind: str) -> list[str]:
    return [str(line.amount) for line in invoice.lines if line.kind == kind]


def usage(invoice: InvoiceRecord, meter: str, tier: str | None = None) -> Decimal:
    found = [
        ln for ln in invoice.lines if ln.kind == "usage" and ln.meter == meter and (tier is None or ln.tier == tier)
    ]
    assert len(found) == 1
    return found[0].amount


@pytest.fixture
def world() -> World:
    return World()


def test_given_team_whole_month_with_overage_when_closed_then_arrears_true_up_and_advance(world: World) -> None:
    world.signup("acme", (at(1), "team"))
    world.store.rate("acme", "2026-03", seg(at(1)), "video", 60_000)
    invoice = world.close("acme", MAR)
    # video 60,000 - 50,000 included = 10,000 x 0.00072 = 7.20; other meters $0.00 lines shown
    assert usage(invoice, "video") == Decimal("7.20")
    assert [usage(invoice, m) for m in ("audio", "messages", "data_transfer")] == [Decimal("0.00")] * 3
    # nothing billed in advance for March (first invoice): first-month fee 29.00; April's fee in advance 29.00
    assert amounts(invoice, "fee_first_month") == ["29.00"]
    assert amounts(invoice, "fee") == ["29.00"]
    assert invoice.total == Decimal("65.20")  # 7.20 + 29.00 + 29.00
    assert invoice.status is InvoiceStatus.OPEN
    assert invoice.number == "KB-acme-00001"
    assert world.gateway.find_invoice(invoice.invoice_id) is not None
    assert world.gateway.invoices[invoice.invoice_id].request.total == Decimal("65.20")
    april = world.close("acme", APR)  # no usage: the fee billed in advance was right, May's fee in advance
    assert amounts(april, "fee_proration") == []
    assert april.total == Decimal("29.00")
    assert april.number == "KB-acme-00002"


def test_given_personal_month_with_overage_then_only_overage(world: World) -> None:
    world.signup("solo", (at(1), "personal"))
    world.store.rate("solo", "2026-03", seg(at(1)), "video", 6_000)
    invoice = world.close("solo", MAR)
    assert invoice.total == Decimal("0.72")  # 1,000 x 0.00072; fee 0, advance 0


def test_given_personal_month_within_allowance_then_paid_at_once_without_the_gateway(world: World) -> None:
    world.signup("solo", (at(1), "personal"))
    world.store.rate("solo", "2026-03", seg(at(1)), "audio", 9_000)
    invoice = world.close("solo", MAR)
    assert invoice.total == Decimal("0.00")
    assert invoice.status is InvoiceStatus.PAID
    assert [s for s, _ in invoice.transitions] == ["draft", "open", "paid"]
    assert world.gateway.calls == []


def test_given_enterprise_month_then_fees_only_whatever_the_usage(world: World) -> None:
    world.signup("big", (at(1), "enterprise"))
    world.store.rate("big", "2026-03", seg(at(1)), "video", 5_000_000)
    invoice = world.close("big", MAR)
    assert invoice.total == Decimal("198.00")  # March 99 (true-up) + April 99 in advance; no overage


def test_given_signup_mid_month_then_fee_and_allowance_prorated_from_signup(world: World) -> None:
    world.signup("late", (at(17), "team"))  # 15 of 31 days on Team, before that the free default
    world.store.rate("late", "2026-03", seg(at(17)), "video", 30_000)
    invoice = world.close("late", MAR)
    # fee 29 x 15/31 = 14.0322.. -> 14.03; allowance 50,000 x 15/31 = 24,193.5 -> 24,194 (rounded up)
    # 30,000 - 24,194 = 5,806 x 0.00072 = 4.18032 -> 4.18
    assert amounts(invoice, "fee_first_month") == ["14.03"]
    assert usage(invoice, "video", "team") == Decimal("4.18")
    assert usage(invoice, "video", "personal") == Decimal("0.00")
    assert invoice.total == Decimal("47.21")  # 4.18 + 14.03 + 29.00


def test_given_upgrade_mid_month_then_both_segments_prorated_against_the_advance(world: World) -> None:
    world.signup("grow", (at(1, 2), "team"), (at(11), "enterprise"))
    assert world.close("grow", FEB).total == Decimal("58.00")  # Feb true-up 29 + March 29 in advance
    world.store.rate("grow", "2026-03", seg(at(1)), "video", 20_000)
    world.store.rate("grow", "2026-03", seg(at(11)), "video", 100_000)
    invoice = world.close("grow", MAR)
    # fees due: team 29 x 10/31 = 9.354.. -> 9.35; enterprise 99 x 21/31 = 67.064.. -> 67.06; 76.41 - 29.00 = 47.41
    assert amounts(invoice, "fee_proration") == ["47.41"]
    # team allowance 50,000 x 10/31 = 16,129.03 -> 16,130; 3,870 x 0.00072 = 2.7864 -> 2.79
    assert usage(invoice, "video", "team") == Decimal("2.79")
    assert usage(invoice, "video", "enterprise") == Decimal("0.00")
    assert amounts(invoice, "fee") == ["99.00"]  # April at Enterprise, in advance
    assert invoice.total == Decimal("149.20")


def test_given_downgrade_requested_mid_month_then_it_starts_next_period(world: World) -> None:
    # requested on March 15: effective April 1 (rating.effective_change), so March stays Team
    world.signup("calm", (at(1, 2), "team"), (at(1, 4), "personal"))
    world.close("calm", FEB)
    world.store.rate("calm", "2026-03", seg(at(1)), "video", 50_100)
    invoice = world.close("calm", MAR)
    assert amounts(invoice, "fee_proration") == []  # 29 due, 29 billed in advance
    assert amounts(invoice, "fee") == ["0.00"]  # April at Personal
    assert invoice.total == Decimal("0.07")  # 100 x 0.00072 = 0.072 -> 0.07


def test_given_late_usage_after_the_close_then_an_adjustment_next_month(world: World) -> None:
    world.signup("acme", (at(1), "team"))
    world.store.rate("acme", "2026-03", seg(at(1)), "video", 60_000)
    assert world.close("acme", MAR).total == Decimal("65.20")
    world.store.rate("acme", "2026-03", seg(at(1)), "video", 5_000)  # a late participant_left lengthens a call
    april = world.close("acme", APR)
    # March as billed: 10,000 over -> 7.20; with the late minutes 15,000 over -> 10.80; adjustment +3.60
    assert amounts(april, "adjustment") == ["3.60"]
    assert april.total == Decimal("32.60")  # 29.00 (May in advance) + 3.60
    assert world.close("acme", MAY).total == Decimal("29.00")  # adjusted once, never again


def test_given_late_usage_inside_the_allowance_then_a_zero_adjustment_shows_it(world: World) -> None:
    world.signup("acme", (at(1), "team"))
    world.store.rate("acme", "2026-03", seg(at(1)), "video", 40_000)
    world.close("acme", MAR)
    world.store.rate("acme", "2026-03", seg(at(1)), "video", 5_000)
    april = world.close("acme", APR)
    [line] = [ln for ln in april.lines if ln.kind == "adjustment"]
    assert (line.amount, line.used) == (Decimal("0.00"), Decimal(5000))


def test_given_a_crypto_account_then_the_same_invoice_open_as_a_usd_bill(world: World) -> None:
    world.signup("coin", (at(1), "team"), method=BillingMethod.CRYPTO)
    world.store.rate("coin", "2026-03", seg(at(1)), "video", 60_000)
    invoice = world.close("coin", MAR)
    assert invoice.total == Decimal("65.20")
    assert invoice.status is InvoiceStatus.OPEN
    assert world.gateway.calls == []
    assert world.bus.events[0][1]["method"] == "crypto"


def test_given_a_period_closed_out_of_order_then_refused(world: World) -> None:
    world.signup("acme", (at(1, 2), "team"))
    world.close("acme", FEB)
    with pytest.raises(ValueError, match="close 2026-03 before 2026-04"):
        world.close("acme", APR)


def test_given_the_profile_email_changed_once_a_customer_is_known_then_the_next_close_gives_it_once(
    world: World,
) -> None:
    """D172: the profile's email and name reach the processor's customer at the next close even once its id is
    stored - and only when they changed since last given (no request per close for nothing)."""
    world.signup("acme", (at(1), "team"))
    world.store.profiles["acme"] = replace(world.store.profiles["acme"], email="a@acme.example", name="Acme")
    world.close("acme", MAR)
    customer = world.gateway.customers["acme"]
    assert world.gateway.details[customer] == ("a@acme.example", "Acme")
    world.close("acme", APR)  # the same details: nothing sent
    assert world.gateway.calls.count("ensure_customer") == 1
    assert "bring_details" not in world.gateway.calls

    world.store.profiles["acme"] = replace(world.store.profiles["acme"], email="b@acme.example")
    world.close("acme", MAY)
    assert world.gateway.details[customer] == ("b@acme.example", "Acme")
    assert world.gateway.calls.count("bring_details") == 1
    assert world.gateway.calls.count("ensure_customer") == 1  # the known customer, not found again


def test_given_a_customer_id_stored_before_details_were_tracked_then_the_first_close_gives_them(world: World) -> None:
    world.signup("acme", (at(1), "team"))
    world.store.profiles["acme"] = replace(world.store.profiles["acme"], email="new@acme.example")
    known = world.gateway.ensure_customer(Customer("acme", "old@acme.example"))
    world.store.save_billing("acme", customer_id=known)  # what a card saved through Checkout leaves (no digest)
    world.close("acme", MAR)
    world.close("acme", APR)
    assert world.gateway.details[known] == ("new@acme.example", None)
    assert world.gateway.calls.count("bring_details") == 1
