"""The invoice schedule's pure parts: which period is due at a run (hand-worked dates, grace window across month and
year ends, leap February), the fan-out once per period, catching up missed periods, and the worker's lazy gateway."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import pytest

from kilo_billing.accounts import AccountProfile
from kilo_billing.catalog import default_catalog
from kilo_billing.periods import Period
from kilo_billing.rating import TierChange
from kilo_invoice.dependencies import LazyGateway, parse_stripe_secret
from kilo_invoice.logic import close_account, close_through, due_period, start_run
from kilo_invoice.model import CloseDeps
from kilo_invoice.ports import Customer, GatewayMisconfiguredError, PaymentGateway
from tests.invoice_fakes import InMemoryLedgerStore
from tests.payment_fakes import InMemoryPaymentGateway

SIX_HOURS = timedelta(hours=6)


def utc(*parts: int) -> datetime:
    return datetime(*parts, tzinfo=UTC)  # type: ignore[misc]


@pytest.mark.parametrize(
    ("now", "grace", "due"),
    [
        # April 1st 05:59: minus 6 h is March 31st 23:59, still March -> the period before it, February
        (utc(2026, 4, 1, 5, 59), SIX_HOURS, "2026-02"),
        # April 1st 06:00: minus 6 h is April 1st 00:00 -> April -> March is due
        (utc(2026, 4, 1, 6, 0), SIX_HOURS, "2026-03"),
        # mid-April: still March (until May 1st 06:00)
        (utc(2026, 4, 17, 12, 0), SIX_HOURS, "2026-03"),
        (utc(2026, 5, 1, 5, 0), SIX_HOURS, "2026-03"),
        # across the year end: January 1st 06:00 closes December of the year before
        (utc(2027, 1, 1, 5, 59), SIX_HOURS, "2026-11"),
        (utc(2027, 1, 1, 6, 0), SIX_HOURS, "2026-12"),
        # no grace: due at midnight exactly
        (utc(2026, 3, 1, 0, 0), timedelta(0), "2026-02"),
        (utc(2026, 2, 28, 23, 59), timedelta(0), "2026-01"),
        # a 3-day grace across a short month: March 3rd 23:00 - 72 h = February 28th 23:00 (2026 is not a leap
        # year) -> February -> January; March 4th 00:00 - 72 h = March 1st -> February is due
        (utc(2026, 3, 3, 23, 0), timedelta(hours=72), "2026-01"),
        (utc(2026, 3, 4, 0, 0), timedelta(hours=72), "2026-02"),
        # 2028 is a leap year: February 29th exists, so March 3rd 23:00 - 72 h = February 29th 23:00 -> January
        (utc(2028, 3, 3, 23, 0), timedelta(hours=72), "2028-01"),
        # a grace longer than the shortest month never skips one: 240 h after the end of February
        (utc(2026, 3, 11, 0, 0), timedelta(hours=240), "2026-02"),
    ],
)
def test_given_a_run_time_and_grace_then_the_due_period_is_the_hand_worked_one(
    now: datetime, grace: timedelta, due: str
) -> None:
    assert due_period(now, grace).key == due


@dataclass
class RecordingQueue:
    batches: list[list[tuple[str, str]]] = field(default_factory=list)

    def send(self, jobs: Sequence[tuple[str, str]]) -> None:
        self.batches.append(list(jobs))


@dataclass
class Markers:
    done: dict[str, tuple[int, int]] = field(default_factory=dict)

    def fanned_out(self, period: str) -> bool:
        return period in self.done

    def mark_fanned_out(self, period: str, accounts: int, at_ms: int) -> None:
        self.done[period] = (accounts, at_ms)


def _store(*accounts: str) -> InMemoryLedgerStore:
    store = InMemoryLedgerStore()
    for account in accounts:
        store.profiles[account] = AccountProfile(account, (TierChange(utc(2026, 1, 1), "team"),))
    return store


def test_given_1203_accounts_when_started_then_one_job_each_in_batches_and_marked_once() -> None:
    accounts = [f"acct-{i:04d}" for i in range(1203)]
    queue, markers = RecordingQueue(), Markers()
    assert start_run(_store(*accounts), queue, markers, Period(2026, 3), 1_000, batch=500) == 1203
    assert [len(batch) for batch in queue.batches] == [500, 500, 203]
    assert sorted(job for batch in queue.batches for job in batch) == [(a, "2026-03") for a in accounts]
    assert markers.done == {"2026-03": (1203, 1_000)}
    # every later hourly run of the same period: nothing queued
    assert start_run(_store(*accounts), queue, markers, Period(2026, 3), 2_000) == 0
    assert len(queue.batches) == 3


def test_given_no_accounts_then_the_period_is_still_marked() -> None:
    markers = Markers()
    assert start_run(_store(), RecordingQueue(), markers, Period(2026, 3), 5) == 0
    assert markers.done == {"2026-03": (0, 5)}


def _deps(store: InMemoryLedgerStore, gateway: PaymentGateway | None = None) -> CloseDeps:
    class Bus:
        def publish(self, detail_type: str, detail: object) -> None:
            pass

    return CloseDeps(store, gateway or InMemoryPaymentGateway(), Bus(), default_catalog(), lambda _s: None)


def test_given_a_missed_month_when_a_later_one_is_closed_then_the_missed_one_is_closed_first() -> None:
    store = _store("acme")
    deps = _deps(store)
    close_account(deps, "acme", Period(2026, 1), utc(2026, 2, 1, 6))
    # the schedule was down all of March 1st..April 1st: the April 1st run closes March, February comes first
    outcomes = close_through(deps, "acme", Period(2026, 3), utc(2026, 4, 1, 6))
    assert [(o.period, o.created) for o in outcomes] == [("2026-02", True), ("2026-03", True)]
    assert sorted(store.invoices) == ["acme/2026-01", "acme/2026-02", "acme/2026-03"]
    # Team, no usage: each month's fee was billed in advance, so each invoice is the next month's fee, 29.00
    assert [str(store.invoices[f"acme/2026-0{m}"].total) for m in (2, 3)] == ["29.00", "29.00"]
    again = close_through(deps, "acme", Period(2026, 3), utc(2026, 4, 1, 7))
    assert [(o.period, o.created) for o in again] == [("2026-03", False)]  # rerun: found, nothing new


def test_given_no_invoice_yet_then_every_period_from_the_signup_month_is_closed_in_order() -> None:
    store = _store("acme")  # Team since January 1st, never invoiced: March's close bills January and February first
    outcomes = close_through(_deps(store), "acme", Period(2026, 3), utc(2026, 4, 1, 6))
    assert [o.period for o in outcomes] == ["2026-01", "2026-02", "2026-03"]
    # January: true-up 29.00 (nothing billed in advance) + February's fee 29.00; then each month's fee in advance
    assert [str(store.invoices[f"acme/2026-0{m}"].total) for m in (1, 2, 3)] == ["58.00", "29.00", "29.00"]


def test_given_the_lazy_gateway_then_it_is_built_on_first_use_only_once() -> None:
    built: list[int] = []
    inner = InMemoryPaymentGateway()

    def build() -> PaymentGateway:
        built.append(1)
        return inner

    lazy = LazyGateway(build)
    assert built == []  # a worker with only crypto or $0.00 invoices never loads Stripe
    customer = lazy.ensure_customer(Customer("acct-1"))
    assert lazy.ensure_customer(Customer("acct-1")) == customer
    assert built == [1]


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ({"api_key": "sk_test_1"}, ("sk_test_1", None)),
        ({"api_key": "rk_live_2", "api_base": "http://127.0.0.1:4242"}, ("rk_live_2", "http://127.0.0.1:4242")),
    ],
)
def test_given_a_stripe_secret_then_key_and_base_are_read(value: object, expected: tuple[str, str | None]) -> None:
    assert parse_stripe_secret(value, "kilo-billing/stripe-api-key") == expected


@pytest.mark.parametrize("value", [["sk_test_1"], {"key": "sk_test_1"}, {"api_key": ""}, "sk_test_1"])
def test_given_a_malformed_stripe_secret_then_refused_naming_the_secret(value: object) -> None:
    with pytest.raises(GatewayMisconfiguredError, match="kilo-billing/stripe-api-key"):
        parse_stripe_secret(value, "kilo-billing/stripe-api-key")


def test_given_no_stripe_secret_configured_then_a_card_close_fails_as_ours_to_fix_not_retried_in_process(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from kilo_invoice import dependencies  # noqa: PLC0415
    from kilo_invoice.settings import InvoiceSettings  # noqa: PLC0415

    monkeypatch.setenv("USAGE_TABLE_NAME", "t")
    gateway = dependencies.stripe_gateway(InvoiceSettings(stripe_api_key_secret_name=""), secrets_client=None)
    # ours to fix (D315): an outage to every caller (a refund stays pending), raised at once by ``_with_retries``
    with pytest.raises(GatewayMisconfiguredError, match="STRIPE_API_KEY_SECRET_NAME"):
        gateway.ensure_customer(Customer("acct-1"))
