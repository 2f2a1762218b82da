"""`kilo-billing invoice preview --input FILE [--json]`: the invoice the rules give for a described account-period, with
no AWS. The description (README, "Invoice preview") is validated whole with pydantic; the invoice is composed by the
same function as the monthly close (``kilo_billing.invoicing.compose_close``) over an in-memory ledger built from it.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from rich.table import Table

from kilo_billing.accounts import AccountProfile, MidPeriodDowngradeError, check_account_id, check_tier_history
from kilo_billing.catalog import Catalog, UnknownTierError, default_catalog
from kilo_billing.invoicing import (
    CURRENCY,
    AccountLedger,
    BillingMethod,
    BillingState,
    CloseDraft,
    InvoiceRecord,
    InvoicingError,
    Line,
    PeriodLedger,
    compose_close,
    invoice_id,
)
from kilo_billing.money import ZERO, is_whole_cents, money_str, two_places
from kilo_billing.periods import Period
from kilo_billing.rating import LineKind, RatingError, TierChange
from kilo_billing_cli.console import make_console

EXIT_BAD_INPUT = 2
MeterName = Literal["video", "audio", "messages", "data_transfer"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TierEntry(_Strict):
    """From ``from`` on, ``tier`` is in effect (the first entry is the tier at signup)."""

    from_: AwareDatetime = Field(alias="from")
    tier: str


class UsageEntry(_Strict):
    """Usage in base units: minutes of one connection (video/audio), messages, or bytes (data_transfer)."""

    meter: MeterName
    quantity: Annotated[int, Field(strict=True, ge=0)]
    at: AwareDatetime


class LateUsageEntry(_Strict):
    """A late change: positive (a lengthened call, usage reported late) or negative (a capped call shortened)."""

    meter: MeterName
    quantity: Annotated[int, Field(strict=True)]
    at: AwareDatetime


class LateEntry(_Strict):
    """Late usage of an earlier, invoiced period: what its invoice billed, and what arrived since (either sign)."""

    period: str
    billed: list[UsageEntry] = []
    late: list[LateUsageEntry] = []

    @field_validator("period")
    @classmethod
    def _period(cls, value: str) -> str:
        Period.parse(value)
        return value


class PreviewInput(_Strict):
    account_id: str
    period: str
    signup: AwareDatetime
    tiers: list[TierEntry] = Field(min_length=1)
    usage: list[UsageEntry] = []
    fee_billed_in_advance: Decimal | None = None  # default: the fee our previous invoice billed (see README)
    late_usage: list[LateEntry] = []
    credit: Annotated[Decimal, Field(ge=0)] = ZERO

    @field_validator("account_id")
    @classmethod
    def _account(cls, value: str) -> str:
        return check_account_id(value)

    @field_validator("period")
    @classmethod
    def _period(cls, value: str) -> str:
        Period.parse(value)
        return value

    @field_validator("fee_billed_in_advance", "credit")
    @classmethod
    def _money(cls, value: Decimal | None) -> Decimal | None:
        if value is not None and (not is_whole_cents(value) or value < 0):  # NaN is not whole cents: never compared
            raise ValueError('must be a non-negative amount in dollars and cents, e.g. "29.00"')
        return None if value is None else two_places(value)  # ValueError: too large

    @model_validator(mode="after")
    def _consistent(self) -> PreviewInput:
        period = Period.parse(self.period)
        if self.tiers[0].from_ != self.signup:
            raise ValueError("tiers[0].from must equal signup (the first tier is the one chosen at signup)")
        if any(b.from_ <= a.from_ for a, b in zip(self.tiers, self.tiers[1:], strict=False)):
            raise ValueError("tiers must be in time order, one change per instant")
        if self.signup >= period.end:
            raise ValueError(f"signup {self.signup.isoformat()} is after the period {period}")
        for index, entry in enumerate(self.usage):
            if not period.contains(entry.at.astimezone(UTC)):
                raise ValueError(f"usage[{index}].at {entry.at.isoformat()} is outside the period {period}")
            if entry.at < self.signup:
                raise ValueError(f"usage[{index}].at {entry.at.isoformat()} is before the signup")
        seen: set[str] = set()
        for index, late in enumerate(self.late_usage):
            earlier = Period.parse(late.period)
            if late.period >= self.period:
                raise ValueError(f"late_usage[{index}].period {late.period} must be before {self.period}")
            if late.period in seen:
                raise ValueError(f"late_usage[{index}].period {late.period} appears twice")
            seen.add(late.period)
            if self.signup >= earlier.end:
                raise ValueError(f"late_usage[{index}].period {late.period} is before the signup")
            times: list[tuple[str, datetime]] = [(f"billed[{j}]", e.at) for j, e in enumerate(late.billed)]
            times += [(f"late[{j}]", e.at) for j, e in enumerate(late.late)]
            for name, instant in times:
                if not earlier.contains(instant.astimezone(UTC)):
                    raise ValueError(f"late_usage[{index}].{name}.at {instant.isoformat()} is outside {late.period}")
        return self


class PreviewError(ValueError):
    """A description the rules cannot compose (the message names the problem)."""


def _counters(profile: AccountProfile, entries: Sequence[UsageEntry | LateUsageEntry]) -> dict[tuple[int, str], int]:
    counters: dict[tuple[int, str], int] = {}
    for entry in entries:
        key = (profile.segment_start(int(entry.at.timestamp() * 1000)), entry.meter)
        counters[key] = counters.get(key, 0) + entry.quantity
    return counters


def _advance_invoice(account_id: str, period: Period, amount: Decimal) -> InvoiceRecord:
    """The previous period's invoice as far as the close reads it: the fee it billed for ``period`` in advance."""
    previous = period.previous()
    line = Line(LineKind.FEE.value, f"Monthly fee {period} (in advance)", amount, period.key)
    return InvoiceRecord(invoice_id(account_id, previous), account_id, previous.key, "", 0, BillingMethod.CARD, (line,))


def ledger_for(description: PreviewInput, catalog: Catalog) -> tuple[AccountLedger, Period]:
    """The in-memory ledger the close would read for the described account-period."""
    period = Period.parse(description.period)
    changes = tuple(TierChange(t.from_.astimezone(UTC), t.tier) for t in description.tiers)
    for change in changes:
        catalog.for_period(Period.containing(change.at)).tier(change.tier)  # an unknown tier is named
    check_tier_history(changes, lambda tier: catalog.for_period(period).tier(tier).rank)
    profile = AccountProfile(description.account_id, changes)
    periods = {period.key: PeriodLedger(period.key, _counters(profile, description.usage))}
    for late in description.late_usage:
        billed = _counters(profile, late.billed)
        current = dict(billed)
        for key, quantity in _counters(profile, late.late).items():
            current[key] = current.get(key, 0) + quantity
        negative = sorted(f"{meter} from {start}" for (start, meter), q in current.items() if q < 0)
        if negative:
            raise PreviewError(f"late_usage {late.period}: late usage takes {negative[0]} below zero")
        periods[late.period] = PeriodLedger(late.period, current, billed, invoiced=True)
    advance = description.fee_billed_in_advance
    if advance is None:  # what our previous invoice billed: the full fee of the tier in effect at the period start
        started = profile.signed_up_at < period.start
        advance = catalog.for_period(period).tier(profile.tier_at(period.start)).monthly_fee if started else ZERO
    invoices: dict[str, InvoiceRecord] = {}
    if profile.signed_up_at < period.start or advance:
        previous = _advance_invoice(description.account_id, period, advance)
        invoices[previous.invoice_id] = previous
    for late in description.late_usage:  # the invoice a credit note would be against (negative late usage, D51)
        earlier = invoice_id(description.account_id, Period.parse(late.period))
        invoices.setdefault(
            earlier, InvoiceRecord(earlier, description.account_id, late.period, "", 0, BillingMethod.CARD, ())
        )
    billing = BillingState(seq=0, credit=description.credit)
    return AccountLedger(description.account_id, profile, periods, invoices, billing), period


def compose_preview(description: PreviewInput, catalog: Catalog, now: datetime) -> CloseDraft:
    ledger, period = ledger_for(description, catalog)
    draft = compose_close(ledger, period, catalog, now)
    if draft is None:  # unreachable after validation (signup before the period end), kept for the type
        raise PreviewError(f"nothing to invoice for {period}")
    return draft


def preview_json(draft: CloseDraft) -> dict[str, object]:
    """The invoice, plus the credit notes negative late usage gives against earlier invoices (D51) and the account
    credit left after the close."""
    invoice = draft.invoice
    return {
        "account_id": invoice.account_id,
        "period": invoice.period,
        "lines": [line.as_json() for line in invoice.lines],
        "total": money_str(invoice.total),
        "currency": CURRENCY,
        "credit_notes": [note.as_json() for note in draft.credit_notes],
        "credit_after": money_str(draft.credit),
    }


def load(path: Path) -> PreviewInput:
    """Read and validate the description; ``PreviewError`` naming every problem."""
    try:
        raw = json.loads(path.read_text(encoding="utf-8"), parse_float=Decimal)
    except OSError as exc:
        raise PreviewError(f"cannot read {path}: {exc.strerror}") from None
    except json.JSONDecodeError as exc:
        raise PreviewError(f"{path}: not JSON ({exc.msg} at line {exc.lineno} column {exc.colno})") from None
    try:
        return PreviewInput.model_validate(raw)
    except ValidationError as exc:
        problems = []
        for error in exc.errors(include_url=False):
            where = ".".join(str(part) for part in error["loc"]) or "input"
            problems.append(f"{where}: {error['msg']}")
        raise PreviewError(f"{path}: " + "; ".join(problems)) from None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--input", required=True, type=Path, help="the account-period described as JSON (README)")
    parser.add_argument("--json", action="store_true", help="machine-readable output")


def _print(draft: CloseDraft) -> None:
    invoice = draft.invoice
    table = Table(title=f"Invoice preview: {invoice.account_id}, {invoice.period} ({CURRENCY})")
    for column in ("kind", "description", "quantity", "unit price", "amount"):
        table.add_column(column, justify="left" if column in ("kind", "description") else "right")
    for line in invoice.lines:
        view: dict[str, Any] = line.as_json()
        table.add_row(
            line.kind, line.description, view["quantity"] or "", view["unit_price"] or "", f"${view['amount']}"
        )
    table.add_section()
    table.add_row("[bold]total[/bold]", "", "", "", f"[bold]${money_str(invoice.total)}[/bold]")
    console = make_console()
    console.print(table)
    for note in draft.credit_notes:  # negative late usage: credited against its period's invoice, not a line here
        console.print(
            f"Credit note against {note.invoice_id}: ${money_str(note.amount)} "
            f"(off its amount due ${money_str(note.to_due)}, account credit ${money_str(note.to_credit)})"
        )
    if draft.credit:
        console.print(f"Account credit after this invoice: ${money_str(draft.credit)}")


def run(args: argparse.Namespace, catalog: Catalog | None = None) -> int:
    try:
        description = load(args.input)
        draft = compose_preview(description, catalog or default_catalog(), datetime.now(UTC))
    except (PreviewError, UnknownTierError, MidPeriodDowngradeError, RatingError, InvoicingError) as exc:
        sys.stderr.write(f"kilo-billing invoice preview: error: {exc}\n")
        return EXIT_BAD_INPUT
    if args.json:
        sys.stdout.write(json.dumps(preview_json(draft), indent=2) + "\n")
    else:
        _print(draft)
    return 0
