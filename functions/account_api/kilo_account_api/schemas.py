"""The account API's HTTP shapes (pydantic): request bodies validated by Powertools, responses serialised from them,
and the OpenAPI document generated from both. Money is a string with two decimals and quantities are decimal
strings (D7: never floats); ``null`` allowances mean unlimited. Keep these shapes stable: the dashboard reads them.
"""

from __future__ import annotations

import json
from datetime import date, datetime
from decimal import Decimal
from typing import Annotated, Any, Final, Literal, Self

from pydantic import AfterValidator, AnyUrl, BaseModel, ConfigDict, Field, UrlConstraints

from kilo_account_api.model import (
    Erasure,
    ExportPage,
    Forecast,
    InvoiceView,
    Meeting,
    MeetingsPage,
    Member,
    MeterSegment,
    MeterUsage,
    PhoneChallenge,
    Recommendation,
    SessionRecord,
    SubscriptionState,
    UsageReport,
    found_in_period,
)
from kilo_account_api.phone import SavedNumberCode
from kilo_billing.accounts import ALERT_CHANNELS, E164_PATTERN, AccountProfile
from kilo_billing.budgets import MAX_THRESHOLD_PERCENT, MAX_THRESHOLDS
from kilo_billing.catalog import PriceBook
from kilo_billing.entitlements import Entitlement
from kilo_billing.invoicing import Line
from kilo_billing.money import ZERO, decimal_str, money_str, optional_money_str
from kilo_billing.rating import InvoiceLine, TierChange

Money = Annotated[str, Field(pattern=r"^-?[0-9]+\.[0-9]{2}$", examples=["29.00"])]
Quantity = Annotated[str, Field(pattern=r"^-?[0-9]+(\.[0-9]+)?$", examples=["1250"])]


class _Out(BaseModel):
    model_config = ConfigDict(frozen=True)


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _qty(value: Decimal | None) -> str | None:
    return decimal_str(value) if value is not None else None


# --- pricing --------------------------------------------------------------------------------------------------------


class MeterPriceOut(_Out):
    meter: str
    unit: str
    unit_price: Quantity = Field(description="Our price per unit: LiveKit's base price x markup, exact")
    base_price: Quantity


class TierOut(_Out):
    id: str
    name: str
    rank: int
    monthly_fee: Money
    included: dict[str, Quantity | None] = Field(description="Per-month allowance per meter; null = unlimited")
    overage: str
    entitlements: list[str]


class PricingOut(_Out):
    version: str
    effective_from: date
    currency: str
    markup: Quantity
    meters: list[MeterPriceOut]
    tiers: list[TierOut]

    @classmethod
    def of(cls, book: PriceBook) -> PricingOut:
        return cls(
            version=book.version,
            effective_from=book.effective_from,
            currency=book.currency,
            markup=decimal_str(book.markup),
            meters=[
                MeterPriceOut(
                    meter=meter.value,
                    unit=price.unit,
                    unit_price=decimal_str(book.unit_price(meter)),
                    base_price=decimal_str(price.base_price),
                )
                for meter, price in book.meters.items()
            ],
            tiers=[
                TierOut(
                    id=tier.id,
                    name=tier.name,
                    rank=tier.rank,
                    monthly_fee=money_str(tier.monthly_fee),
                    included={meter.value: _qty(value) for meter, value in tier.included.items()},
                    overage=tier.overage.value,
                    entitlements=list(tier.entitlements),
                )
                for tier in sorted(book.tiers, key=lambda t: t.rank)
            ],
        )


# --- usage ----------------------------------------------------------------------------------------------------------


class LineOut(_Out):
    kind: str
    description: str
    meter: str | None
    tier: str | None
    used: Quantity | None
    included: Quantity | None
    billable: Quantity | None
    unit_price: Quantity | None
    amount: Money

    @classmethod
    def of(cls, line: InvoiceLine) -> LineOut:
        usage = line.meter is not None
        return cls(
            kind=line.kind.value,
            description=line.description,
            meter=line.meter.value if line.meter is not None else None,
            tier=line.tier,
            used=_qty(line.used) if usage else None,
            included=_qty(line.included) if usage else None,
            billable=_qty(line.billable) if usage else None,
            unit_price=_qty(line.unit_price),
            amount=money_str(line.amount),
        )


class MeterSegmentOut(_Out):
    """The meter in one tier segment of the month: the tier in effect from ``start`` to ``end``."""

    tier: str
    start: datetime
    end: datetime
    used: Quantity
    included: Quantity | None = Field(description="The segment's allowance (prorated); null: unlimited")
    used_percent: Quantity | None = Field(
        description="Share of the segment's allowance used, 2 decimals cut; null if unlimited"
    )
    overage: Quantity
    amount: Money

    @classmethod
    def of(cls, segment: MeterSegment) -> MeterSegmentOut:
        return cls(
            tier=segment.tier,
            start=segment.start,
            end=segment.end,
            used=decimal_str(segment.used),
            included=_qty(segment.included),
            used_percent=str(segment.used_percent) if segment.used_percent is not None else None,
            overage=decimal_str(segment.overage),
            amount=money_str(segment.amount),
        )


class MeterUsageOut(_Out):
    meter: str
    unit: str
    used: Quantity = Field(description="All of the month's use, in every tier segment")
    included: Quantity | None = Field(
        description="The allowances of the month's segments that have one (prorated); null: every segment unlimited"
    )
    used_percent: Quantity | None = Field(
        description="The share used of the allowance of the one segment that has one: that segment's use over its"
        " allowance - its own used_percent in segments - not used over included when an unlimited segment's use is in"
        " used too (Team then Enterprise: 30,000 of Team's 25,000 = 120.00 while used is 40,000 with Enterprise's"
        " 10,000); 2 decimals cut (never 100.00 before it is used up, never 0.00 once begun); null if every segment"
        " is unlimited, or when two or more segments have an allowance (each segment's own share is in segments: a"
        " combined one hides a segment's overage)"
    )
    overage: Quantity
    amount: Money
    segments: list[MeterSegmentOut] = Field(description="Each tier segment of the month, oldest first")

    @classmethod
    def of(cls, usage: MeterUsage) -> MeterUsageOut:
        return cls(
            meter=usage.meter,
            unit=usage.unit,
            used=decimal_str(usage.used),
            included=_qty(usage.included),
            used_percent=str(usage.used_percent) if usage.used_percent is not None else None,
            overage=decimal_str(usage.overage),
            amount=money_str(usage.amount),
            segments=[MeterSegmentOut.of(segment) for segment in usage.segments],
        )


class DayOut(_Out):
    date: date
    video_minutes: int
    audio_minutes: int


class ScheduledChangeOut(_Out):
    tier: str = Field(description="The tier asked for")
    effective_at: datetime = Field(description="When it takes effect (a downgrade: the next period start)")


def scheduled_out(change: TierChange | None) -> ScheduledChangeOut | None:
    return None if change is None else ScheduledChangeOut(tier=change.tier, effective_at=change.at)


class SubscriptionStateOut(_Out):
    """The subscription now (D447): ``GET .../subscription``'s answer, and ``current`` in a tier request's 412."""

    tier: str = Field(description="The tier in effect now")
    scheduled_change: ScheduledChangeOut | None = Field(
        description="The next tier change asked for that takes effect later; null: none"
    )
    etag: str = Field(description="The subscription's version now (also the `ETag` header; D441)")

    @classmethod
    def of(cls, state: SubscriptionState) -> SubscriptionStateOut:
        return cls(tier=state.tier, scheduled_change=scheduled_out(state.scheduled), etag=state.tag)


class UsageOut(_Out):
    account_id: str
    period: str
    tier: str
    as_of: datetime
    open_sessions: int
    meters: list[MeterUsageOut]
    fee: Money
    usage: Money
    total: Money
    lines: list[LineOut]
    daily: list[DayOut]
    scheduled_change: ScheduledChangeOut | None = Field(
        description=(
            "A tier change asked for that takes effect later (a downgrade waits for the next period start); null:"
            " none. POST /subscription with the current tier cancels it"
        )
    )

    @classmethod
    def of(cls, report: UsageReport) -> UsageOut:
        return cls(
            account_id=report.account_id,
            period=report.period,
            tier=report.tier,
            as_of=report.as_of,
            open_sessions=report.open_sessions,
            meters=[MeterUsageOut.of(meter) for meter in report.meters],
            fee=money_str(report.rated.fee),
            usage=money_str(report.rated.usage_total),
            total=money_str(report.rated.total),
            lines=[LineOut.of(line) for line in report.rated.lines],
            daily=[
                DayOut(date=d.day, video_minutes=d.video_minutes, audio_minutes=d.audio_minutes) for d in report.daily
            ],
            scheduled_change=scheduled_out(report.scheduled),
        )


class MeetingOut(_Out):
    room_sid: str
    room_name: str
    started_at: datetime
    ended_at: datetime | None = Field(description="null while someone is still in the room")
    participants: int
    sessions: int
    video_minutes: int
    audio_minutes: int

    @classmethod
    def of(cls, meeting: Meeting) -> MeetingOut:
        return cls(
            room_sid=meeting.room_sid,
            room_name=meeting.room_name,
            started_at=_time(meeting.start_ms),
            ended_at=_time(meeting.end_ms) if meeting.end_ms is not None else None,
            participants=meeting.participants,
            sessions=meeting.sessions,
            video_minutes=meeting.video_minutes,
            audio_minutes=meeting.audio_minutes,
        )


def _time(ms: int) -> datetime:
    from datetime import UTC  # noqa: PLC0415

    return datetime.fromtimestamp(ms / 1000, tz=UTC)


class MeetingsOut(_Out):
    account_id: str
    period: str
    meetings: list[MeetingOut]
    next_cursor: str | None = Field(description="Pass as ?cursor= for the next page; null on the last page")

    @classmethod
    def of(cls, account_id: str, period: str, page: MeetingsPage) -> MeetingsOut:
        return cls(
            account_id=account_id,
            period=period,
            meetings=[MeetingOut.of(m) for m in page.meetings],
            next_cursor=page.next_cursor,
        )


class ForecastOut(_Out):
    account_id: str
    period: str
    as_of: datetime
    spent: Money
    projected_total: Money | None  # null: not enough data yet (D148)
    budget_usd: Money | None
    hard_limit_usd: Money | None
    budget_reached_on: date | None
    hard_limit_reached_on: date | None
    status: Literal["no_budget", "under_budget", "over_budget", "hard_limit_reached"]

    @classmethod
    def of(cls, forecast: Forecast) -> ForecastOut:
        return cls(
            account_id=forecast.account_id,
            period=forecast.period,
            as_of=forecast.as_of,
            spent=money_str(forecast.spent),
            projected_total=optional_money_str(forecast.projected_total),
            budget_usd=optional_money_str(forecast.budget_usd),
            hard_limit_usd=optional_money_str(forecast.hard_limit_usd),
            budget_reached_on=forecast.budget_reached_on,
            hard_limit_reached_on=forecast.hard_limit_reached_on,
            status=forecast.status.value,
        )


class RecommendationOut(_Out):
    kind: Literal["cheaper_tier", "audio_only_audiences", "lower_simulcast_layers", "idle_camera_minutes"]
    title: str
    detail: str
    saving_usd: Money
    current_usd: Money
    with_change_usd: Money
    tier: str | None
    rooms: list[str]

    @classmethod
    def of(cls, found: Recommendation) -> RecommendationOut:
        return cls(
            kind=found.kind.value,
            title=found.title,
            detail=found.detail,
            saving_usd=money_str(found.saving_usd),
            current_usd=money_str(found.current_usd),
            with_change_usd=money_str(found.with_change_usd),
            tier=found.tier,
            rooms=list(found.rooms),
        )


class RecommendationsOut(_Out):
    account_id: str
    period: str
    recommendations: list[RecommendationOut]


# --- budget, alerts, entitlement -------------------------------------------------------------------------------------

Amount = Annotated[Decimal, Field(gt=0, le=Decimal("1000000"), decimal_places=2, allow_inf_nan=False)]
Percent = Annotated[int, Field(ge=1, le=MAX_THRESHOLD_PERCENT, strict=True)]


class BudgetIn(_In):
    budget_usd: Amount | None = Field(description="Soft budget: alerts at the percentages; null: none")
    alert_percentages: list[Percent] = Field(default=[50, 80, 100], min_length=1, max_length=MAX_THRESHOLDS)
    hard_limit_usd: Amount | None = Field(default=None, description="Calls are refused at this bill; null: none")


class BudgetOut(_Out):
    account_id: str
    budget_usd: Money | None
    alert_percentages: list[int]
    hard_limit_usd: Money | None

    @classmethod
    def of(cls, profile: AccountProfile) -> BudgetOut:
        return cls(
            account_id=profile.account_id,
            budget_usd=optional_money_str(profile.budget_usd),
            alert_percentages=list(profile.budget_thresholds),
            hard_limit_usd=optional_money_str(profile.hard_limit_usd),
        )


Channel = Literal["email", "sms"]
assert set(ALERT_CHANNELS) == {"email", "sms"}


class AlertPreferencesIn(_In):
    name: Annotated[str, Field(max_length=200)] = ""
    email: Annotated[str, Field(max_length=254)] = Field(default="", description='"" clears it')
    phone: Annotated[str, Field(pattern=rf"^(|{E164_PATTERN})$")] = Field(default="", description="E.164")
    channels: dict[Annotated[str, Field(pattern=r"^[a-z_]{1,40}$")], list[Channel]] = Field(
        default_factory=dict,
        description=(
            "Per alert kind, the channels chosen ([] for none); kinds not given keep their choice. A kind that is not"
            " an alert kind may only be sent back as stored, or as [] to remove it; at most 64 known or changed kinds;"
            " budget_hard_limit and payment_failed need at least one channel"
        ),
    )


class AlertPreferencesOut(_Out):
    account_id: str
    name: str
    email: str
    phone: str
    phone_verified: bool = Field(description="A code sent to the number was confirmed; SMS alerts go only then")
    channels: dict[str, list[str]]

    @classmethod
    def of(cls, profile: AccountProfile) -> AlertPreferencesOut:
        return cls(
            account_id=profile.account_id,
            name=profile.name,
            email=profile.email,
            phone=profile.phone,
            phone_verified=bool(profile.phone and profile.phone_verified),
            channels={kind: list(channels) for kind, channels in profile.alert_preferences},
        )


class SavedNumberCodeOut(_Out):
    status: Literal["sent", "pending", "not_sent"] = Field(
        description="sent: a new code was texted; pending: the code texted before still works; not_sent: no code "
        "went out (reason), ask for one with POST .../alert-preferences/phone-code"
    )
    reason: str | None = Field(description="Why no code was sent (not_sent only)")


class AlertPreferencesSavedOut(AlertPreferencesOut):
    """The saved preferences (the save stands whatever happened to the code) and what became of the number's code."""

    phone_code: SavedNumberCodeOut | None = Field(
        description="The unverified number's code after the save; null without a number or when it is verified"
    )

    @classmethod
    def saved(cls, profile: AccountProfile, code: SavedNumberCode | None) -> AlertPreferencesSavedOut:
        found = None if code is None else SavedNumberCodeOut(status=code.status, reason=code.reason or None)
        return cls(**AlertPreferencesOut.of(profile).model_dump(), phone_code=found)


class PhoneCodeIn(_In):
    code: Annotated[str, Field(pattern=r"^[0-9]{6}$", description="The 6-digit code the SMS carried")]


class PhoneCodeRequestIn(_In):
    """The body of ``POST .../phone-code``: none, or an empty JSON object. The code goes to the account's saved number
    (``PUT .../alert-preferences`` sets it); any field is refused, so nothing sent here can look like it chose one."""


class PhoneCodeOut(_Out):
    phone: str
    code_expires_at: datetime
    tries: int


class EntitlementBudgetOut(_Out):
    period: str
    spent_usd: Money
    as_of: str | None
    budget_usd: Money | None
    hard_limit_usd: Money | None
    remaining_usd: Money | None


class EntitlementOut(_Out):
    account_id: str
    allowed: bool
    reason: str | None
    message: str
    max_token_ttl_seconds: int
    budget: EntitlementBudgetOut
    remaining_allowance: dict[str, Quantity]

    @classmethod
    def of(cls, found: Entitlement) -> EntitlementOut:
        """``Entitlement.as_json``: the same answer as the usage API's entitlement check."""
        return cls.model_validate(found.as_json())


class EntitlementIn(_In):
    """The body of ``POST .../entitlements/check``: none, or an empty JSON object (the account is the path's)."""


class ErasureIn(_In):
    """The body of ``POST .../erase``: none, or an empty JSON object (the account is the path's; nothing in a body
    can narrow or confirm an erasure, so a body that looks like it does is refused)."""


# --- invoices, subscription, payment methods --------------------------------------------------------------------------


class InvoiceLineOut(_Out):
    kind: str
    meter: str | None
    description: str
    quantity: Quantity | None = Field(description="Billed units (a usage line: billable); null: an amount line")
    unit_price: Quantity | None
    used: Quantity | None = Field(
        default=None, description="A usage line: the units used in its tier segment; else null (late usage too)"
    )
    included: Quantity | None = Field(
        default=None,
        description="A usage line: the allowance of its tier segment (null: unlimited); else null (late usage too)",
    )
    billable: Quantity | None = Field(
        default=None,
        description="A line with a meter: the units beyond the allowance billed (= quantity; late usage: the change"
        " billed, signed); else null",
    )
    amount: Money
    start: datetime | None
    end: datetime | None


class CreditNoteOut(_Out):
    """A credit note against the invoice (D131): negative late usage of its period, found by a later close."""

    credit_id: str
    found_in_period: str = Field(description="The period whose close found the late usage")
    found_by: str = Field(description="The invoice id of that close's invoice")
    amount: Money = Field(description="What the note gives back: to_amount_due + to_account_credit")
    to_amount_due: Money = Field(description="Taken off what this invoice asks for")
    to_account_credit: Money = Field(description="Added to the account's credit, applied to later invoices")
    already_returned: Money = Field(
        description="Late usage that was paid and already given back (refunded or charged back): not in amount"
    )
    not_collected: Money = Field(
        description=(
            "Late usage billed by an invoice of the period that was never paid (open, payment failed, written off):"
            " nothing to give back, not in amount. Before 2026-12 it was counted in already_returned"
        )
    )
    status: str = Field(description='"pending": the card processor\'s credit note is still being made; "done"')


class InvoiceSummaryOut(_Out):
    invoice_id: str  # the id the crypto routes take (a crypto bill is keyed by it)
    number: str
    method: str  # "card" | "crypto"
    period: str
    status: str
    total: Money
    hosted_url: str | None
    pdf_url: str | None
    amount_due: Money = Field(description="What the invoice asks for: total less its credit notes' to_amount_due")
    credit_notes: list[CreditNoteOut] = Field(description="Credit notes against this invoice, oldest first")

    @classmethod
    def of(cls, view: InvoiceView) -> Self:
        """The stored invoice's JSON (``InvoiceRecord.as_json``), as far as this model shows it, with its notes."""
        data: dict[str, Any] = view.record.as_json()
        # a line's usage figures (the policy: covered usage is shown, at $0.00, "so customers see what they used")
        data["lines"] = [line.as_json() | _usage_figures(line) for line in view.record.lines]
        data["amount_due"] = money_str(view.amount_due)
        # a shortfall (D344) is shown as its own figure, not as refunded: nothing was refunded of it
        data["short_paid"] = money_str(view.record.short_paid)
        data["refunded"] = money_str(max(ZERO, view.record.refunded - view.record.short_paid))
        data["credit_notes"] = [
            note.as_json() | {"found_in_period": found_in_period(note)} for note in view.credit_notes
        ]
        return cls.model_validate({name: data[name] for name in cls.model_fields})


def _usage_figures(line: Line) -> dict[str, str | None]:
    """Used, included and billable of a usage line; a late-usage (adjustment) line has only its billed change
    (``billable``, signed: +3,000 or -2,000) - its stored ``used`` is the change in use and ``included`` the whole
    allowance, which side by side read "5,000 used · 50,000 included" (D367 amended (av2)); its description names
    the change. None for fees, credits, carried totals."""
    if line.meter is None:
        return {"used": None, "included": None, "billable": None}
    if line.kind == "adjustment":
        return {"used": None, "included": None, "billable": _qty(line.quantity)}
    return {"used": _qty(line.used), "included": _qty(line.included), "billable": _qty(line.quantity)}


class InvoiceOut(InvoiceSummaryOut):
    """One invoice (receipt): the summary's fields, its lines and its status history."""

    currency: str
    refunded: Money = Field(description="Refunded of the payment (a shortfall is short_paid, not here)")
    short_paid: Money = Field(
        description="What the card processor collected less than the invoice asked (a credit note or discount made "
        "in its dashboard before payment): never charged, so not refunded"
    )
    charged_back: Money  # card disputes lost: the card's issuer took the payment back
    lines: list[InvoiceLineOut]
    transitions: list[dict[str, str]]


class InvoicesOut(_Out):
    account_id: str
    invoices: list[InvoiceSummaryOut]


class SubscriptionIn(_In):
    tier: Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]*$", examples=["team"])]


class SubscriptionOut(_Out):
    account_id: str
    current_tier: str
    requested_tier: str
    effective_at: datetime
    change: Literal["upgrade_now", "downgrade_at_period_end", "pending_change_cancelled"]


_ON_DASHBOARD = "On the dashboard's origin (any other site is refused: 400); default: the dashboard"
# an http(s) URL of at most Stripe's own limit for a page's return address (pydantic's ``HttpUrl`` stops at 2,083
# characters: a dashboard URL Stripe takes was refused; D333); ``logic.check_return_url`` checks the rest
PageUrl = Annotated[AnyUrl, UrlConstraints(max_length=5000, allowed_schemes=["http", "https"])]


class CheckoutIn(_In):
    success_url: Annotated[PageUrl | None, Field(description=_ON_DASHBOARD)] = None
    cancel_url: Annotated[PageUrl | None, Field(description=_ON_DASHBOARD)] = None


class PortalIn(_In):
    return_url: Annotated[PageUrl | None, Field(description=_ON_DASHBOARD)] = None


class UrlOut(_Out):
    url: str


# --- members, privacy, operator ---------------------------------------------------------------------------------------


USER_PATTERN: Final = r"^[^#\s/]{1,128}$"
NOT_USER_IDS: Final = frozenset({".", ".."})
NOT_A_USER_ID: Final = "'.' and '..' are not user ids: a browser rewrites them in a URL path (send another id)"


def user_id(value: str) -> str:
    """A user id the members routes take (their pattern, then this): not ``.`` or ``..`` - a browser resolves those
    path segments (``fetch(".../members/..")`` reaches ``.../accounts/<id>``), so such a member could not be
    removed from the page (D296)."""
    if value in NOT_USER_IDS:
        raise ValueError(NOT_A_USER_ID)
    return value


class MemberIn(_In):
    user: Annotated[
        str,
        Field(pattern=USER_PATTERN, description="1-128 characters, no #, / or whitespace; not '.' or '..'"),
        AfterValidator(user_id),
    ]
    email: Annotated[str, Field(max_length=254)] = ""
    role: Literal["owner", "admin", "member"] = "member"


class MemberOut(_Out):
    """A member (``status`` active) or an invitation not yet accepted (``invited``: it grants nothing until the user
    accepts it, by ``expires_at``). ``added_at``: when the user accepted; for an invitation, when invited."""

    user: str
    email: str
    role: str
    added_at: datetime
    status: Literal["active", "invited"]
    expires_at: datetime | None = None

    @classmethod
    def of(cls, member: Member) -> MemberOut:
        return cls(
            user=member.user,
            email=member.email,
            role=member.role.name.lower(),
            added_at=member.added_at,
            status="active" if member.active else "invited",
            expires_at=member.expires_at,
        )


class InvitationAnswerIn(_In):
    """The body of ``POST /v1/invitations/<account_id>/accept`` or ``.../decline``: none, or an empty JSON object."""


class InvitationOut(_Out):
    """An open invitation of the signed-in user to an account, with the role accepting it gives."""

    account_id: str
    role: str
    email: str
    invited_at: datetime
    expires_at: datetime

    @classmethod
    def of(cls, member: Member) -> InvitationOut:
        assert member.expires_at is not None  # an invitation always ends
        return cls(
            account_id=member.account_id,
            role=member.role.name.lower(),
            email=member.email,
            invited_at=member.added_at,
            expires_at=member.expires_at,
        )


class InvitationsOut(_Out):
    user: str
    invitations: list[InvitationOut]


class MembersOut(_Out):
    account_id: str
    members: list[MemberOut]


class ErasureOut(_Out):
    account_id: str
    erased_at: datetime
    sessions_pseudonymised: int
    members_pseudonymised: int
    profile_cleared: bool
    kept: list[str]

    @classmethod
    def of(cls, erasure: Erasure) -> ErasureOut:
        return cls(
            account_id=erasure.account_id,
            erased_at=erasure.erased_at,
            sessions_pseudonymised=erasure.sessions_pseudonymised,
            members_pseudonymised=erasure.members_pseudonymised,
            profile_cleared=erasure.profile_cleared,
            kept=list(erasure.kept),
        )


class OperatorAccountOut(_Out):
    account_id: str
    tier: str
    status: str
    billing_method: str
    signed_up_at: datetime

    @classmethod
    def of(cls, profile: AccountProfile, now: datetime) -> OperatorAccountOut:
        return cls(
            account_id=profile.account_id,
            tier=profile.tier_at(now),
            status=profile.status,
            billing_method=profile.billing_method,
            signed_up_at=profile.signed_up_at,
        )


class OperatorAccountsOut(_Out):
    accounts: list[OperatorAccountOut]


def _profile_json(profile: AccountProfile) -> dict[str, Any]:
    return {
        "account_id": profile.account_id,
        "name": profile.name,
        "email": profile.email,
        "phone": profile.phone,
        "status": profile.status,
        "billing_method": profile.billing_method,
        "tiers": [{"at": change.at.isoformat(), "tier": change.tier} for change in profile.changes],
        "budget_usd": optional_money_str(profile.budget_usd),
        "alert_percentages": list(profile.budget_thresholds),
        "hard_limit_usd": optional_money_str(profile.hard_limit_usd),
        "alert_channels": {kind: list(channels) for kind, channels in profile.alert_preferences},
    }


def _session_json(session: SessionRecord) -> dict[str, Any]:
    return {
        "room_sid": session.room_sid,
        "room_name": session.room_name,
        "participant_sid": session.participant_sid,
        "identity": session.identity,
        "started_at": _time(session.start_ms).isoformat(),
        "ended_at": _time(session.end_ms).isoformat() if session.end_ms is not None else None,
        "minutes": [  # per period: a call cut at a tier change (D282) is one entry, as the customer saw it
            {"period": period, "video_minutes": video, "audio_minutes": audio}
            for period, (video, audio) in session.minutes_by_period().items()
        ],
    }


def session_bytes(session: SessionRecord) -> int:
    """The bytes a session adds to an export answer as Lambda returns it (the export's bound is in these, D372
    amended (ex2)): its JSON as ``json_response`` writes it (compact, ASCII: non-ASCII as \\uXXXX), escaped again
    inside the response's JSON string body, and the comma before the next session."""
    body = json.dumps(_session_json(session), separators=(",", ":"))
    return len(json.dumps(body)) - 2 + 1  # ASCII: characters are bytes; less the string's own quotes, plus a comma


def _phone_code_json(challenge: PhoneChallenge | None) -> dict[str, Any] | None:
    """What the phone code's item keeps (never the code: its hash and salt are not personal data to hand out)."""
    if challenge is None:
        return None
    return {
        "phone": challenge.phone or None,
        "code_expires_at": challenge.code_expires_at.isoformat(),
        "sent_at": [at.isoformat() for at in challenge.sent_at],
    }


def export_json(data: dict[str, Any]) -> dict[str, Any]:
    """``logic.export``'s result as JSON (money as strings, counters per meter in base units)."""
    periods: dict[str, dict[str, int]] = {}
    for period, counters in data["periods"].items():
        totals: dict[str, int] = {}
        for (_, meter), quantity in counters.items():
            totals[meter] = totals.get(meter, 0) + quantity
        periods[period] = dict(sorted(totals.items()))
    return {
        "account_id": data["account_id"],
        "exported_at": data["exported_at"],
        "profile": _profile_json(data["profile"]),
        "phone_code": _phone_code_json(data.get("phone_code")),
        "members": [MemberOut.of(m).model_dump(mode="json") for m in data["members"]],
        "sessions": [_session_json(s) for s in data["sessions"]],
        "next_cursor": data["next_cursor"],
        "usage_by_period": periods,
        "invoices": [InvoiceOut.of(i).model_dump(mode="json") for i in data["invoices"]],
    }


def export_page_json(account_id: str, exported_at: datetime, page: ExportPage) -> dict[str, Any]:
    """A later page of the export (``?cursor=``): its sessions alone, as the first page lists them (D372)."""
    return {
        "account_id": account_id,
        "exported_at": exported_at.isoformat(),
        "sessions": [_session_json(s) for s in page.sessions],
        "next_cursor": page.next_cursor,
    }
