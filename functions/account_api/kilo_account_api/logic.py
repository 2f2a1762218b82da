"""The account API's logic: pure functions of the layer's ports and this function's ports (``ports``), returning domain
models (``model``) or raising domain errors. No status codes, no event shapes: ``handler`` maps both.

Who may call what is decided in the handler from the caller's claims (``kilo_billing.auth.Caller``) before any of
these run, so every function here acts for an account the caller may act for.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import json
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from itertools import groupby
from typing import Any, Final
from urllib.parse import urlsplit

from kilo_account_api.model import (
    BudgetStatus,
    ConflictError,
    DayUsage,
    EntitlementMissingError,
    Erasure,
    ExportPage,
    Forecast,
    InvalidRequestError,
    InvoiceView,
    Meeting,
    MeetingsPage,
    Member,
    MemberStatus,
    MeterSegment,
    MeterUsage,
    NotFoundError,
    SessionRecord,
    SubscriptionChangedError,
    SubscriptionState,
    UnavailableError,
    UsageReport,
    found_in_period,
)
from kilo_account_api.phone import check_sms_region
from kilo_account_api.ports import AlertRecords, MemberStore, PaymentPages, PhoneChallenges, SessionHistory
from kilo_billing.accounts import (
    AccountDirectory,
    AccountProfile,
    InvalidContactError,
    StoredAnswer,
    UnknownAccountError,
    check_email,
    check_text,
    pseudonym,
    registered_profile,
    set_alert_contact,
    update_profile,
    with_tier_change,
)
from kilo_billing.auth import Caller, Role
from kilo_billing.budgets import (
    BudgetChange,
    InvalidBudgetError,
    apply_budget,
    bill_reached_on,
    check_tier_change,
    projected_total,
    signed_up_at,
)
from kilo_billing.catalog import Catalog, PriceBook, UnknownTierError
from kilo_billing.entitlements import Entitlement, EntitlementPolicy, EntitlementSource, decide
from kilo_billing.invoicing import AccountLedger, InvoiceRecord, LedgerStore, amount_due, customer_details_digest
from kilo_billing.member_roles import require_stored_role
from kilo_billing.meters import METER_UNITS, Meter
from kilo_billing.money import ZERO, money_str, share_percent, total
from kilo_billing.month_to_date import MonthToDate, MonthToDateSource, month_to_date, open_session_extra
from kilo_billing.periods import Period
from kilo_billing.rating import RatedPeriod, RatingError, TierChange, effective_change
from kilo_billing.sms_regions import DEFAULT_SMS_REGIONS

MAX_PAGE = 100
# sessions on one export page at most (D372): ~331 bytes each in Lambda's answer for a typical one, but 3.9 KB and
# more with long names of quotes and control characters (and LiveKit's name caps are configurable), so a page is
# bounded by bytes too
EXPORT_PAGE: Final = 1000
# the encoded bytes of a page's sessions at most (as Lambda returns them, ``schemas.session_bytes``): a page stops
# before the group of sessions begun in one millisecond that would pass it, leaving ~2.2 MB of Lambda's 6,291,456 for
# the first page's other sections and the envelope; also the bound of a whole export asked without ?limit= (D372
# amended (ex2))
EXPORT_PAGE_BYTES: Final = 4_000_000
# the price book's entitlement that members need (D210): inviting and accepting are refused on a tier without it
TEAM_COLLABORATION: Final = "team_collaboration"


def _ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


def unregistered(account_id: str) -> NotFoundError:
    return NotFoundError(f"account {account_id!r} is not registered")


def profile_of(accounts: AccountDirectory, account_id: str) -> AccountProfile:
    try:
        return registered_profile(accounts, account_id)
    except UnknownAccountError as exc:
        raise unregistered(account_id) from exc


def period_of(key: str | None, now: datetime) -> Period:
    if key is None:
        return Period.containing(now)
    try:
        period = Period.parse(key)
    except ValueError as exc:
        raise InvalidRequestError("query.period", f"period {key!r} must be a month like 2026-11") from exc
    if period.start > now:
        raise InvalidRequestError("query.period", f"period {key} has not begun")
    return period


# --- usage ----------------------------------------------------------------------------------------------------------


def _share(used: Decimal, included: Decimal | None) -> Decimal | None:
    """The share of an allowance used, in percent: cut to two decimals, never rounded up to 100.00 nor down to 0.00
    once begun (``money.share_percent``, D371 amended (av2)); ``None`` without a positive allowance."""
    return share_percent(used, included)


def meter_usage(rated: RatedPeriod) -> tuple[MeterUsage, ...]:
    """Each meter over the period's tier segments (D369): used (all of it); included, the allowances of the segments
    that have one (``None`` only when every segment is unlimited); the share used of the one segment that has an
    allowance (what the overage is charged on; ``None`` with two or more, av2); overage and charge; and each segment's
    own figures. A month moved from Team to Enterprise
    shows Team's prorated allowance and its overage, not "unlimited" beside a charge."""
    per_meter = len(Meter)
    found = []
    for meter in Meter:
        # rating emits its usage lines segment by segment, one per meter (as ``invoicing.usage_lines`` reads them)
        lines = [(index, line) for index, line in enumerate(rated.usage_lines) if line.meter is meter]
        segments = tuple(
            MeterSegment(
                tier=str(line.tier),
                start=rated.segments[index // per_meter].segment.start,
                end=rated.segments[index // per_meter].segment.end,
                used=line.used,
                included=line.included,
                used_percent=_share(line.used, line.included),
                overage=line.billable,
                amount=line.amount,
            )
            for index, line in lines
        )
        limited = [segment for segment in segments if segment.included is not None]
        included = sum((segment.included for segment in limited if segment.included is not None), ZERO)
        found.append(
            MeterUsage(
                meter=meter.value,
                unit=METER_UNITS[meter].billing_unit,
                used=sum((segment.used for segment in segments), ZERO),
                included=included if limited else None,
                # one limited segment: its share (what the overage is charged on); two or more (Personal -> Team):
                # none - a combined share hides one segment's overage (10,000 of 2,500 + 25,000 = 36 % beside
                # $5.40); each segment's own is in ``segments`` (D369 amended (av2))
                used_percent=_share(limited[0].used, limited[0].included) if len(limited) == 1 else None,
                overage=sum((segment.overage for segment in segments), ZERO),
                amount=total([segment.amount for segment in segments]),
                segments=segments,
            )
        )
    return tuple(found)


def daily_series(
    sessions: Iterable[SessionRecord], mtd: MonthToDate, period: Period, now: datetime
) -> tuple[DayUsage, ...]:
    """Video and audio minutes per UTC day of the period up to today: a connection's minutes on the day it began in
    the period (max(its start, the period's start): all its parts there, as for an open session, even when D282 cut
    it at a tier change), open sessions' minutes so far on theirs. A session whose minutes in the period are the
    unattributed bucket's (an id unregistered when it was rated, D292; a period before the signup, D280) is left out,
    as the account's counters leave it out. Sums to the month to date."""
    last = min(now, period.end - timedelta(microseconds=1)).date()
    days: dict[date, list[int]] = {}
    day = period.start.date()
    while day <= last:
        days[day] = [0, 0]
        day += timedelta(days=1)

    def add(at_ms: int, video: int, audio: int) -> None:
        key = datetime.fromtimestamp(at_ms / 1000, tz=UTC).date()
        slot = days.setdefault(key, [0, 0])
        slot[0] += video
        slot[1] += audio

    start_ms = _ms(period.start)
    for session in sessions:
        if period.key in session.unattributed_periods:
            continue
        video, audio = session.minutes_in(period.key)
        if video or audio:
            add(max(session.start_ms, start_ms), video, audio)
    for figures in mtd.open:
        extra = open_session_extra([figures], mtd.profile, _ms(now), period.key)
        video = sum(q for (_, meter), q in extra.items() if meter == Meter.VIDEO.value)
        audio = sum(q for (_, meter), q in extra.items() if meter == Meter.AUDIO.value)
        if video or audio:
            add(max(figures.start_ms, start_ms), video, audio)
    return tuple(DayUsage(day, video, audio) for day, (video, audio) in sorted(days.items()))


def current_month(
    accounts: AccountDirectory, month: MonthToDateSource, catalog: Catalog, account_id: str, now: datetime
) -> MonthToDate:
    profile = profile_of(accounts, account_id)
    period = Period.containing(now)
    return month_to_date(month, account_id, period.key, _ms(now), catalog.for_period(period), profile=profile)


def usage_report(
    accounts: AccountDirectory,
    month: MonthToDateSource,
    history: SessionHistory,
    catalog: Catalog,
    account_id: str,
    now: datetime,
) -> UsageReport:
    mtd = current_month(accounts, month, catalog, account_id, now)
    period = Period.containing(now)
    daily = daily_series(history.sessions(account_id, period.key), mtd, period, now)
    state = subscription_state(mtd.profile, now)
    return UsageReport(
        account_id=account_id,
        period=period.key,
        tier=state.tier,
        as_of=now,
        open_sessions=mtd.open_sessions,
        meters=meter_usage(mtd.rated),
        rated=mtd.rated,
        daily=daily,
        scheduled=state.scheduled,
        subscription_tag=state.tag,
    )


def subscription_tag(profile: AccountProfile, now: datetime) -> str:
    """The subscription's version at ``now`` as an HTTP entity tag (``"<16 hex>"``, D441): the first 16 hex digits
    of the SHA-256 of the tier in effect and each change still to come (after ``now``) as ``|<at ISO>=<tier>`` in
    stored order. It moves with what a tier request is decided on - a tier change, a cancel, a scheduled change taking
    effect at its instant - and not with the profile's other writes (budget, contacts), which the stored version
    counts too. The same state reached again has the same tag (a click decided on it is decided as it was shown)."""
    pending = "".join(f"|{c.at.isoformat()}={c.tier}" for c in profile.changes if c.at > now)
    return '"' + hashlib.sha256(f"{profile.tier_at(now)}{pending}".encode()).hexdigest()[:16] + '"'


def subscription(accounts: AccountDirectory, account_id: str, now: datetime) -> SubscriptionState:
    """The registered account's subscription at ``now`` (D447): what ``GET .../subscription`` shows and a tier
    request's ``If-Match`` is checked against (``check_tag``)."""
    return subscription_state(profile_of(accounts, account_id), now)


def subscription_state(profile: AccountProfile, now: datetime) -> SubscriptionState:
    return SubscriptionState(profile.tier_at(now), scheduled_change(profile, now), subscription_tag(profile, now))


def tag_matches(if_match: str, tag: str) -> bool:
    """``If-Match`` (RFC 9110 13.1.1) against the current ``tag``: ``*`` (any), or a comma-separated list of entity
    tags compared strongly (a weak ``W/"..."`` never matches)."""
    candidates = [candidate.strip() for candidate in if_match.split(",")]
    return candidates == ["*"] or tag in candidates


def none_match_fails(if_none_match: str, tag: str) -> bool:
    """``If-None-Match`` (RFC 9110 13.1.2) against the current ``tag``: true - the condition fails, a GET answers 304
    - for ``*`` or a comma-separated list holding ``tag`` under weak comparison (``W/"x"`` and ``"x"`` match)."""
    candidates = [candidate.strip().removeprefix("W/") for candidate in if_none_match.split(",")]
    return candidates == ["*"] or tag in candidates


def scheduled_change(profile: AccountProfile, now: datetime) -> TierChange | None:
    """The tier change asked for that takes effect after ``now`` (a downgrade at the next period start, D118), the
    next one in date order (D370 amended (av2): a Personal downgrade on Dec 1 before an operator-dated Enterprise on
    Jan 15 is what the page's "Moving to ..." names), and of several at that instant the last recorded (D161)."""
    return min(reversed([c for c in profile.changes if c.at > now]), key=lambda c: c.at, default=None)


# --- meetings -------------------------------------------------------------------------------------------------------


def meetings_of(sessions: Iterable[SessionRecord], period: str) -> list[Meeting]:
    """Sessions grouped by room instance; newest first (start, then room sid, both descending)."""
    rooms: dict[str, list[SessionRecord]] = defaultdict(list)
    for session in sessions:
        if session.aborted:
            continue
        rooms[session.room_sid].append(session)
    found = []
    for room_sid, members in rooms.items():
        minutes = [session.minutes_in(period) for session in members]
        ends = [session.end_ms for session in members]
        found.append(
            Meeting(
                room_sid=room_sid,
                room_name=next((s.room_name for s in members if s.room_name), ""),
                start_ms=min(session.start_ms for session in members),
                end_ms=None if any(end is None for end in ends) else max(end for end in ends if end is not None),
                participants=len({session.identity for session in members}),
                sessions=len(members),
                video_minutes=sum(video for video, _ in minutes),
                audio_minutes=sum(audio for _, audio in minutes),
            )
        )
    return sorted(found, key=lambda m: (m.start_ms, m.room_sid), reverse=True)


def encode_cursor(meeting: Meeting, period: str) -> str:
    raw = json.dumps([period, meeting.start_ms, meeting.room_sid], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str, period: str) -> tuple[int, str]:
    try:
        data = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        cursor_period, start_ms, room_sid = data
        if cursor_period != period or not isinstance(start_ms, int) or not isinstance(room_sid, str):
            raise ValueError(cursor)
    except (ValueError, TypeError, binascii.Error) as exc:
        raise InvalidRequestError("query.cursor", "cursor is not one this API returned for this period") from exc
    return start_ms, room_sid


def meetings_page(
    accounts: AccountDirectory,
    history: SessionHistory,
    account_id: str,
    period_key: str | None,
    cursor: str | None,
    limit: int,
    now: datetime,
) -> MeetingsPage:
    """A page of the period's meetings, newest first; ``next_cursor`` continues after the page's last one (an
    opaque position: meetings that start later do not shift the pages already handed out)."""
    profile_of(accounts, account_id)
    period = period_of(period_key, now)
    if not 1 <= limit <= MAX_PAGE:
        raise InvalidRequestError("query.limit", f"limit must be 1 to {MAX_PAGE}, got {limit}")
    found = meetings_of(history.sessions(account_id, period.key), period.key)
    if cursor is not None:
        after = decode_cursor(cursor, period.key)
        found = [m for m in found if (m.start_ms, m.room_sid) < after]
    page = found[:limit]
    more = len(found) > limit
    return MeetingsPage(tuple(page), encode_cursor(page[-1], period.key) if more else None)


# --- forecast and budget ----------------------------------------------------------------------------------------------


def budget_status(profile: AccountProfile, spent: Decimal) -> BudgetStatus:
    if profile.hard_limit_usd is not None and spent >= profile.hard_limit_usd:
        return BudgetStatus.HARD_LIMIT_REACHED
    if profile.budget_usd is not None and spent >= profile.budget_usd:
        return BudgetStatus.OVER_BUDGET
    if profile.budget_usd is None and profile.hard_limit_usd is None:
        return BudgetStatus.NO_BUDGET
    return BudgetStatus.UNDER


def forecast(
    accounts: AccountDirectory,
    month: MonthToDateSource,
    catalog: Catalog,
    account_id: str,
    now: datetime,
    weights: Sequence[Decimal],
) -> Forecast:
    """The month's forecast: its quantities per meter extrapolated and rated (``kilo_billing.budgets``, D148): the
    month-end bill and the day each limit is reached, the layer's one forecast, shared with the forecast alert."""
    mtd = current_month(accounts, month, catalog, account_id, now)
    profile, rated, book = mtd.profile, mtd.rated, catalog.for_period(Period.containing(now))
    spent, since = rated.total, signed_up_at(profile)
    return Forecast(
        account_id=account_id,
        period=mtd.period,
        as_of=now,
        spent=spent,
        projected_total=projected_total(rated, book, now, weights, since),
        budget_usd=profile.budget_usd,
        hard_limit_usd=profile.hard_limit_usd,
        budget_reached_on=bill_reached_on(rated, book, profile.budget_usd, now, weights, since),
        hard_limit_reached_on=bill_reached_on(rated, book, profile.hard_limit_usd, now, weights, since),
        status=budget_status(profile, spent),
    )


@dataclass(frozen=True, slots=True)
class BudgetRequest:
    """A whole budget (PUT): ``None`` removes the soft budget or the hard limit."""

    budget_usd: Decimal | None
    alert_percentages: tuple[int, ...]
    hard_limit_usd: Decimal | None


def _budget_field(message: str) -> str:
    if "hard limit" in message:
        return "hard_limit_usd"
    if "percentage" in message:
        return "alert_percentages"
    return "budget_usd"


@dataclass(frozen=True, slots=True)
class BillSoFar:
    """What a new hard limit must be above (D368): the account's month to date at ``now``."""

    month: MonthToDateSource
    catalog: Catalog
    now: datetime


def _above_the_bill(current: AccountProfile, saved: AccountProfile, bill: BillSoFar | None) -> None:
    """D368: a hard limit set or changed now must be above this month's bill so far (open sessions as if they ended
    now), as D150 holds a tier change to it: at or below it, every call would be refused at once. The stored limit
    sent back unchanged is kept, reached or not (the form returns what it read; its other fields stay editable)."""
    limit = saved.hard_limit_usd
    if bill is None or limit is None or limit == current.hard_limit_usd:
        return
    period = Period.containing(bill.now)
    spent = month_to_date(
        bill.month, current.account_id, period.key, _ms(bill.now), bill.catalog.for_period(period), profile=current
    ).rated.total
    if limit <= spent:
        raise InvalidBudgetError(
            f"hard limit ${limit} is not above ${money_str(spent)}, this month's bill so far: every call would be"
            f" refused at once; set it above ${money_str(spent)}, or leave it empty"
        )


def set_budget(
    accounts: AccountDirectory, account_id: str, request: BudgetRequest, bill: BillSoFar | None = None
) -> AccountProfile:
    """Replace the account's budget, validated whole by the layer's rule before anything is saved (over the stored
    profile as it is then: ``update_profile``); with ``bill`` (the API's route), a new hard limit must also be above
    the month's bill so far (``_above_the_bill``, D368)."""
    change = BudgetChange(
        budget_usd=request.budget_usd,
        thresholds=request.alert_percentages,
        hard_limit_usd=request.hard_limit_usd,
        clear_budget=request.budget_usd is None,
        clear_hard_limit=request.hard_limit_usd is None,
    )

    def changed(found: AccountProfile) -> AccountProfile:
        saved = apply_budget(found, change)
        _above_the_bill(found, saved, bill)
        return saved

    try:
        return update_profile(accounts, account_id, changed)
    except UnknownAccountError as exc:
        raise unregistered(account_id) from exc
    except InvalidBudgetError as exc:
        raise InvalidRequestError(_budget_field(str(exc)), str(exc)) from exc


@dataclass(frozen=True, slots=True)
class AlertPreferencesRequest:
    name: str
    email: str
    phone: str
    channels: dict[str, tuple[str, ...]]  # alert kind -> channels


def set_alert_preferences(
    accounts: AccountDirectory,
    account_id: str,
    request: AlertPreferencesRequest,
    sms_regions: frozenset[str] = DEFAULT_SMS_REGIONS,
) -> AccountProfile:
    """Set who hears about alerts (name, email, phone: ``""`` clears one) and the channels of the alert kinds given
    (kinds not given keep their choice); validated whole by ``kilo_billing.accounts.set_alert_contact``, one save.
    A new number must be in one of ``sms_regions`` (ISO regions; 400 naming ``phone``, nothing saved: D221);
    the stored number sent back unchanged is kept (the form returns what it read), and gets no code outside them."""
    try:
        return set_alert_contact(
            accounts,
            account_id,
            name=request.name,
            email=request.email,
            phone=request.phone,
            preferences=dict(request.channels),
            check_new_phone=lambda number: check_sms_region(number, sms_regions),
        )
    except UnknownAccountError as exc:
        raise unregistered(account_id) from exc
    except InvalidContactError as exc:
        text = str(exc)
        field = next((name for name in ("phone", "email", "name") if text.startswith(name)), "channels")
        raise InvalidRequestError(field, text) from exc


def check_entitlement(
    source: EntitlementSource, account_id: str, now: datetime, policy: EntitlementPolicy
) -> Entitlement:
    profile, state = source.read(account_id)
    if profile is None:
        raise unregistered(account_id)
    return decide(account_id, profile, state, now, policy)


# --- invoices and subscription ------------------------------------------------------------------------------------


def _view(account: AccountLedger, record: InvoiceRecord) -> InvoiceView:
    notes = [note for note in account.credit_notes.values() if note.invoice_id == record.invoice_id]
    notes.sort(key=lambda note: (found_in_period(note), note.credit_id))
    return InvoiceView(record, tuple(notes), amount_due(record, notes))


def invoices(ledger: LedgerStore, account_id: str) -> list[InvoiceView]:
    """The account's invoices, newest first (period, then number), each with its credit notes."""
    account = ledger.ledger(account_id)
    found = sorted(account.invoices.values(), key=lambda invoice: (invoice.period, invoice.seq), reverse=True)
    return [_view(account, record) for record in found]


def invoice(ledger: LedgerStore, account_id: str, number: str) -> InvoiceView:
    account = ledger.ledger(account_id)
    for record in account.invoices.values():
        if record.number == number:
            return _view(account, record)
    raise NotFoundError(f"account {account_id!r} has no invoice {number!r}")


@dataclass(frozen=True, slots=True)
class TierChangeOutcome:
    profile: AccountProfile
    tier: str  # the tier asked for
    effective_at: datetime  # now for an upgrade, the next period start for a downgrade
    current_tier: str  # in effect now
    cancelled: bool = False  # the request cancelled a pending change (the tier asked for is the one in effect)


def change_tier(
    accounts: AccountDirectory,
    catalog: Catalog,
    account_id: str,
    tier: str,
    now: datetime,
    month: MonthToDateSource,
    answered: Callable[[TierChangeOutcome], StoredAnswer],
    if_match: str | None = None,
) -> TierChangeOutcome:
    """Ask for ``tier`` now: decided on the stored profile and saved over it (``update_profile``: decided again on
    what is stored when another writer saved it in between). ``month``: the account's month to date, which the hard
    limit must stay above once re-rated with the change (D150). ``answered`` (required: every tier request has its
    key, D436): the answer to keep for the request's idempotency key, given the outcome - stored in the
    profile's save (one write), or alone when nothing is saved (``AnswerExistsError`` when the key was answered
    meanwhile; a refusal stores nothing, D377). ``if_match``: the request's ``If-Match`` (optional, D441): each
    attempt checks it against the profile it decides on, so a stale one is ``SubscriptionChangedError`` and nothing
    is written (the save is conditional on the version read)."""
    book = catalog.for_period(Period.containing(now))
    decided: list[TierChangeOutcome] = []  # the last attempt's outcome (the profile in it is the one read)
    saved: list[AccountProfile] = []

    def changed(current: AccountProfile) -> AccountProfile:
        decided.clear()
        if if_match is not None:
            check_tag(current, if_match, now)
        profile, outcome = _tier_request(book, current, tier, now)
        check_tier_change(current, profile, now, month, catalog)  # above the new fee and re-rated bill (D150)
        decided.append(outcome)
        return profile

    def save(profile: AccountProfile) -> AccountProfile:
        stored = accounts.save_answered(profile, answered(decided[0]))
        saved.append(stored)
        return stored

    try:
        profile = update_profile(accounts, account_id, changed, save=save)
        if not saved:  # nothing to save (a retry by state): the answer alone
            accounts.keep_answer(answered(decided[0]))
    except UnknownAccountError as exc:
        raise unregistered(account_id) from exc
    except UnknownTierError as exc:
        raise InvalidRequestError("tier", str(exc)) from exc
    except RatingError as exc:  # already on that tier
        raise ConflictError(str(exc)) from exc
    except InvalidBudgetError as exc:  # a budget or hard limit the new tier's fee or re-rated bill would pass at once
        raise ConflictError(str(exc)) from exc
    except ValueError as exc:  # a change already pending after now
        raise ConflictError(str(exc)) from exc
    return replace(decided[0], profile=profile)


def check_tag(current: AccountProfile, if_match: str, now: datetime) -> None:
    """``SubscriptionChangedError`` unless ``if_match`` names ``current``'s subscription version (D441)."""
    state = subscription_state(current, now)
    if tag_matches(if_match, state.tag):
        return
    scheduled = state.scheduled
    moving = "" if scheduled is None else f", moving to {scheduled.tier} on {scheduled.at.date().isoformat()}"
    raise SubscriptionChangedError(
        f"the subscription changed since it was read (now on {state.tier}{moving}, version {state.tag}); nothing was "
        "changed: read it again and send the request with its new ETag",
        state,
    )


def _tier_request(
    book: PriceBook, current: AccountProfile, tier: str, now: datetime
) -> tuple[AccountProfile, TierChangeOutcome]:
    """The profile with ``tier`` asked for now, and the outcome. With changes pending (a downgrade at the next period
    start, an operator's dated change): the tier in effect now cancels them all; the pending change - the NEXT one,
    which ``GET /usage`` shows (``scheduled_change``) - is a retried click (nothing changes) only when it is exactly
    the change this request makes (``effective_change``: the same instant and tier, i.e. a downgrade asked again in
    its period); any other request replaces them all (an upgrade at once - never a retry, as a pending change is
    after now - a downgrade at the next period start). With none pending, the tier in effect asked again is a retried
    click too: of the cancel when that was the last request saved (``_retried_cancel``, answered as the cancel), else
    of an upgrade to it made in now's period and in force (``_retried_upgrade``, answered as that upgrade); otherwise
    "already on tier" (D118 amended (ex), (ex2), (api3), (api4))."""
    pending = scheduled_change(current, now)  # the page's "Moving to ..." (D370 amended (api3))
    in_effect = current.tier_at(now)
    if pending is not None and tier == in_effect:
        kept = tuple(c for c in current.changes if c.at <= now)
        cancelled = replace(current, changes=kept, tier_change_cancelled_at=now)
        return cancelled, TierChangeOutcome(current, tier, now, in_effect, cancelled=True)
    if pending is None and tier == in_effect:
        cancel = _retried_cancel(current, now)
        if cancel is not None:
            return current, TierChangeOutcome(current, tier, cancel, in_effect, cancelled=True)
        upgrade = _retried_upgrade(book, current, now)
        if upgrade is not None:
            return current, TierChangeOutcome(current, tier, upgrade.at, in_effect)
    change = effective_change(book, in_effect, tier, now)
    if change == pending:  # the same click again (an operator's Enterprise from Dec 15 is no Enterprise click now)
        return current, TierChangeOutcome(current, tier, change.at, in_effect)
    kept = tuple(c for c in current.changes if c.at <= now)
    profile = with_tier_change(replace(current, changes=kept), change, ())
    return profile, TierChangeOutcome(profile, tier, change.at, profile.tier_at(now))


def _retried_cancel(current: AccountProfile, now: datetime) -> datetime | None:
    """When the last tier request saved is a cancel of a pending change (made in now's period, at or after the change
    in force): its time - a request for the tier in effect repeats that cancel and is answered as it was, not as the
    upgrade in force before it (D118 amended (ex2)); ``None`` otherwise. A change recorded after the cancel (the
    API's or an operator's, also one dated before it) voids it (``accounts.with_tier_change``), so the tier in effect
    is the one the cancel kept (D373 amended (api3))."""
    cancelled = current.tier_change_cancelled_at
    if cancelled is None or not Period.containing(now).start <= cancelled <= now:
        return None
    in_force = [c.at for c in current.changes if c.at <= now]
    return cancelled if not in_force or cancelled >= max(in_force) else None


def _retried_upgrade(book: PriceBook, current: AccountProfile, now: datetime) -> TierChange | None:
    """The change in force at ``now`` when it is an upgrade (to a higher rank than the tier before it) made in now's
    period: the one a retried request for the tier in effect repeats (D118 amended (ex)); ``None`` otherwise (the
    tier held since the account began, a downgrade that took effect, an upgrade of an earlier period)."""
    # the last recorded of several changes at one instant is the one in force (D161)
    in_force = [c for c in current.changes if c.at <= now]
    if len(in_force) < 2:
        return None
    last = max(reversed(in_force), key=lambda c: c.at)
    if last.at < Period.containing(now).start:
        return None
    before = current.tier_at(last.at - timedelta(microseconds=1))
    try:
        raised = book.tier(last.tier).rank > book.tier(before).rank
    except UnknownTierError:  # a tier the book no longer sells: no upgrade to repeat
        return None
    return last if raised else None


# --- payment methods ------------------------------------------------------------------------------------------------


def _customer(ledger: LedgerStore, pages: PaymentPages, profile: AccountProfile) -> str:
    """The account's customer, given the profile's email and name when they changed since last given (D172: the
    digest on the billing item; a known customer with the same details costs no request)."""
    billing = ledger.ledger(profile.account_id).billing
    email, name = profile.email or None, profile.name or None
    details = customer_details_digest(email, name)
    if billing.customer_id is None:
        found = pages.customer(profile.account_id, email, name)
    elif billing.customer_details != details:
        found = billing.customer_id
        pages.bring_details(found, email, name)
    else:
        return billing.customer_id
    ledger.save_billing(profile.account_id, customer_details=details)  # only it: the customer id is the close's
    return found


LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})


def _origin(url: str) -> tuple[str, str, int | None]:
    """(scheme, host, port) with the scheme's default port; the host in its ASCII (IDNA) form, as the body's URL
    reaches here (pydantic writes an internationalised host as punycode), so a configured ``https://bücher.example``
    admits its own pages. Port 0 is no default port: it admits nothing (no page is served there)."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    try:
        port = parts.port if parts.port is not None else {"http": 80, "https": 443}.get(scheme)
    except ValueError:  # a port that is not a number
        port = None
    host = (parts.hostname or "").lower()
    with contextlib.suppress(UnicodeError):  # not a name IDNA can write (an empty label...): compared as it is
        host = host.encode("idna").decode("ascii")
    return scheme, host, None if port == 0 else port


STRIPE_URL_MAX = 5000  # Stripe's documented maxLength of success_url, cancel_url and return_url


def check_return_url(field: str, url: str, dashboard_origins: Sequence[str]) -> str:
    """Where Stripe's hosted page sends the customer back must be the dashboard (its origin: scheme, host, port), so
    the API cannot be used to send someone from Stripe's page to any site (an open redirect). A dashboard on a
    loopback host (the local stack serves it on a free port) admits every loopback port of its scheme. It must also
    be a URL Stripe takes - absolute http(s), at most 5,000 characters, no whitespace or control character - so that
    Stripe refusing a URL admitted here is ours to fix, never the customer's (D333)."""
    if len(url) > STRIPE_URL_MAX:
        raise InvalidRequestError(field, f"{field} must be at most {STRIPE_URL_MAX} characters, not {len(url)}")
    if any(c.isspace() or not c.isprintable() for c in url):
        raise InvalidRequestError(field, f"{field} must be a URL with no whitespace or control character: {url!r}")
    scheme, host, port = _origin(url)
    for allowed in dashboard_origins:
        allowed_scheme, allowed_host, allowed_port = _origin(allowed)
        if scheme != allowed_scheme or scheme not in ("http", "https") or not host:
            continue
        if (host, port) == (allowed_host, allowed_port) or {host, allowed_host} <= LOOPBACK_HOSTS:
            return url
    shown = ", ".join(
        f"{s}://{h}" + (f":{p}" if p not in (80, 443) else "") for s, h, p in map(_origin, dashboard_origins)
    )
    raise InvalidRequestError(field, f"{field} must be on the dashboard ({shown}), not {url!r}")


@dataclass(frozen=True, slots=True)
class CardPages:
    """What Stripe's hosted card pages are made with: the account's profile and ledger (its Stripe customer), the
    pages, the dashboard's URL (where a page sends the customer back when the request names no URL) and the origins
    a named URL may be on (``check_return_url``)."""

    accounts: AccountDirectory
    ledger: LedgerStore
    pages: PaymentPages
    dashboard_url: str
    dashboard_origins: Sequence[str]


def checkout_url(card: CardPages, account_id: str, success_url: str | None, cancel_url: str | None) -> str:
    """A Checkout page saving a card for an account paying by card; back to the dashboard by default."""
    home, origins = card.dashboard_url, card.dashboard_origins
    success_url = _page_url("success_url", success_url, f"{home}?checkout=done", origins)
    cancel_url = _page_url("cancel_url", cancel_url, f"{home}?checkout=cancelled", origins)
    profile = profile_of(card.accounts, account_id)
    if profile.billing_method != "card":
        raise ConflictError(f"account {account_id!r} pays in {profile.billing_method}, not by card")
    customer = _customer(card.ledger, card.pages, profile)
    with _refusal_is_ours():
        return card.pages.setup_url(customer, account_id, success_url, cancel_url)


def portal_url(card: CardPages, account_id: str, return_url: str | None) -> str:
    """A Billing Portal page of the account's customer; back to the dashboard by default."""
    return_url = _page_url("return_url", return_url, card.dashboard_url, card.dashboard_origins)
    profile = profile_of(card.accounts, account_id)
    customer = _customer(card.ledger, card.pages, profile)
    with _refusal_is_ours():
        return card.pages.portal_url(customer, return_url)


def _page_url(field: str, sent: str | None, default: str, origins: Sequence[str]) -> str:
    """The URL the body carried, checked (``check_return_url``: the customer's 400 naming it); left out, the
    server's default - the dashboard's - which the customer cannot fix: refused, ours (``UnavailableError``, a
    logged 503; D325)."""
    if sent:
        return check_return_url(field, sent, origins)
    try:
        return check_return_url(field, default, origins)
    except InvalidRequestError as refused:
        raise UnavailableError(f"the configured dashboard URL is refused as {field}: {refused}") from refused


@contextmanager
def _refusal_is_ours() -> Iterator[None]:
    """The pages' refusal naming a URL (``InvalidRequestError``, D297) is ours: every URL they get passed
    ``check_return_url``, which keeps Stripe's documented URL rules, so nothing the customer may send would be taken
    instead - an origin configured that Stripe refuses, say, is the operator's to fix: ``UnavailableError``, a logged
    503 with Stripe's message (D325, D333)."""
    try:
        yield
    except InvalidRequestError as refused:
        raise UnavailableError(f"the processor refused {refused.field}: {refused}") from refused


# --- members --------------------------------------------------------------------------------------------------------


def members(accounts: AccountDirectory, store: MemberStore, account_id: str, now: datetime) -> list[Member]:
    """The account's members and its open invitations (an expired invitation is left out: it grants nothing and can
    no longer be accepted), highest role first."""
    profile_of(accounts, account_id)
    found = [m for m in store.members(account_id) if m.active or m.invited_at(now)]
    return sorted(found, key=lambda m: (-m.role, m.user))


def current_role(store: MemberStore, caller: Caller, account_id: str, needed: Role) -> Role:
    """The caller's role in the account as stored now, when it is at least ``needed`` (D202). Membership changes
    are checked against the members table, not only the token: a token outlives a removal (its lifetime), and a
    removed admin must not use it to invite themselves back - a membership that would outlast the token."""
    stored = store.member(account_id, caller.user)
    return require_stored_role(stored.role if stored is not None and stored.active else None, account_id, needed)


def require_collaboration(
    profile: AccountProfile,
    catalog: Catalog,
    now: datetime,
    until: datetime | None = None,
    invitation_ends: datetime | None = None,
) -> None:
    """Members need the tier in effect at ``now`` (the price book of ``now``'s period) to include
    ``team_collaboration`` (D210), else ``EntitlementMissingError`` naming the tier, the entitlement and the
    tiers that include it. Only new members are refused: a downgrade keeps the members the account has.

    ``until``: the latest instant the request's write may land (the invocation's end; default ``now``). The write
    commits after ``now``, and DynamoDB's conditions have no clock: so the tier must include the entitlement at every
    instant up to ``until`` - a scheduled downgrade (or a new period's price book) taking effect in between refuses
    too, naming when (``moves_at``). ``invitation_ends``: an invitee's acceptance, the message addressed to them."""
    end = until if until is not None and until > now else now
    period_end = Period.containing(now).end
    starts = [period_end] if period_end <= end else []
    ahead = sorted({change.at for change in profile.changes if now < change.at <= end} | set(starts))
    for at in (now, *ahead):
        book = book_for(catalog, at)
        tier = profile.tier_at(at)
        if TEAM_COLLABORATION in book.tier(tier).entitlements:
            continue
        having = tuple(t for t in book.tier_ids if TEAM_COLLABORATION in book.tier(t).entitlements)
        raise EntitlementMissingError(
            profile.account_id,
            tier,
            TEAM_COLLABORATION,
            having,
            moves_at=at if at > now else None,
            invitation_ends=invitation_ends,
        )


def invite_member(
    accounts: AccountDirectory,
    catalog: Catalog,
    store: MemberStore,
    caller_role: Role,
    member: Member,
    lasts: timedelta,
) -> Member:
    """Adding a member invites them (D200): an invitation grants nothing - no claims at sign-in, so no access, and
    the account is not the user's - until the user accepts it (``accept_invitation``), within ``lasts``. Owners
    invite anyone; admins invite members and admins, never owners. ``member.added_at`` is now. The account's tier
    must include ``team_collaboration`` (D210): checked after the input, before anything is stored."""
    profile = profile_of(accounts, member.account_id)
    try:  # the free text the invitation stores: no control characters, an ASCII address (D204)
        check_text("user", member.user)
    except InvalidContactError as exc:
        raise InvalidRequestError("user", str(exc)) from exc
    if member.email:
        try:
            check_email(member.email)
        except InvalidContactError as exc:
            raise InvalidRequestError("email", str(exc)) from exc
    if member.role > caller_role:
        raise InvalidRequestError("role", f"a {caller_role.name.lower()} cannot add an {member.role.name.lower()}")
    require_collaboration(profile, catalog, member.added_at)
    invited = replace(member, status=MemberStatus.INVITED, expires_at=member.added_at.replace(microsecond=0) + lasts)
    store.add(invited)
    return invited


def remove_member(
    accounts: AccountDirectory, store: MemberStore, caller_role: Role, account_id: str, user: str
) -> None:
    """Admins remove members and admins (and withdraw their invitations); only owners remove owners, and never the
    last one - an invitation to be owner is no owner."""
    profile_of(accounts, account_id)
    current = {m.user: m for m in store.members(account_id)}
    target = current.get(user)
    if target is None:
        raise NotFoundError(f"{user!r} is not a member of account {account_id!r}")
    if target.role > caller_role:
        raise ConflictError(f"a {caller_role.name.lower()} cannot remove an {target.role.name.lower()}")
    if not target.active:  # withdrawn only while still an invitation: accepted meanwhile, it is a 409 (D207)
        store.withdraw(account_id, user)
        return
    others = sorted(m.user for m in current.values() if m.role is Role.OWNER and m.active and m.user != user)
    if target.role is Role.OWNER and not others:
        raise ConflictError("the account's last owner cannot be removed")
    # an owner goes only while another owner is still there at that moment (checked in the same atomic step)
    store.remove(account_id, user, keeping_owner=others[0] if target.role is Role.OWNER else None)


def invitations(store: MemberStore, user: str, now: datetime) -> list[Member]:
    """The signed-in user's open invitations, oldest first."""
    found = [m for m in store.accounts_of(user) if m.invited_at(now)]
    return sorted(found, key=lambda m: (m.added_at, m.account_id))


def accept_invitation(
    accounts: AccountDirectory,
    catalog: Catalog,
    store: MemberStore,
    user: str,
    account_id: str,
    now: datetime,
    until: datetime | None = None,
) -> Member:
    """The user becomes a member of ``account_id`` with the invitation's role, from now; their next sign-in may act
    for it (``sign_in``). ``NotFoundError`` without an open invitation (none, expired, or accepted already) - asked
    first, so nobody learns an account's tier without an invitation to it. ``EntitlementMissingError`` while the
    account's tier lacks ``team_collaboration`` (D210: a downgrade after the invitation): the invitation stays,
    acceptable again once the account is on a tier that includes it (until it ends); the message tells the invitee
    so. ``until``: the latest instant the acceptance's write may land (the invocation's end; ``now`` by default): a
    downgrade taking effect by then refuses it too (``require_collaboration``)."""
    found = store.member(account_id, user)
    if found is None or not found.invited_at(now):
        raise NotFoundError(f"{user!r} has no open invitation to account {account_id!r}")
    require_collaboration(profile_of(accounts, account_id), catalog, now, until, found.expires_at)
    return store.accept(account_id, user, now)


def decline_invitation(store: MemberStore, user: str, account_id: str) -> None:
    """The invitation goes (a later invitation may come); ``NotFoundError`` when the user holds none."""
    store.decline(account_id, user)


# --- privacy --------------------------------------------------------------------------------------------------------


__all__ = ["pseudonym"]  # moved to the layer (kilo_billing.accounts, rating uses it too); still importable here


_EXPORT_CURSOR: Final = "export"
# a cursor's start time is below 2**63 ms (a signed 64-bit milliseconds count, ~292 million years): a forged larger one
# is refused as the cursor it is not, before boto3's Decimal context (38 digits) fails on it with a 500
_EXPORT_CURSOR_END: Final = 2**63


def encode_export_cursor(start_ms: int) -> str:
    raw = json.dumps([_EXPORT_CURSOR, start_ms], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_export_cursor(cursor: str) -> int:
    try:
        data = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        kind, start_ms = data
        if (
            kind != _EXPORT_CURSOR
            or not isinstance(start_ms, int)
            or isinstance(start_ms, bool)
            or not 0 <= start_ms < _EXPORT_CURSOR_END
        ):
            raise ValueError(cursor)
    except (ValueError, TypeError, binascii.Error) as exc:
        raise InvalidRequestError("query.cursor", "cursor is not one this API returned for an export") from exc
    return start_ms


def export_sessions(
    accounts: AccountDirectory,
    history: SessionHistory,
    account_id: str,
    cursor: str | None,
    limit: int = EXPORT_PAGE,
    *,
    size: Callable[[SessionRecord], int],
) -> ExportPage:
    """A page of the export's sessions in start order (start, room, participant): at most ``limit`` and at most
    ``EXPORT_PAGE_BYTES`` of ``size`` (each session's bytes in the answer), never splitting the sessions begun in one
    millisecond: more than ``limit`` only to finish the last one's, and a millisecond's group whose bytes alone pass
    the bound is a page of its own, whole. ``next_cursor`` continues at the start time of the first left out (D372).
    A session that begins later goes on a later page, never a handed-out one; the pages together list each stored
    session once."""
    profile_of(accounts, account_id)
    _check_export_limit(limit)
    since = 0 if cursor is None else decode_export_cursor(cursor)
    page = _bounded_page(history, account_id, since, limit, size, EXPORT_PAGE_BYTES, at_least_one=True)
    return ExportPage(tuple(page.sessions), None if page.next_start is None else encode_export_cursor(page.next_start))


def _check_export_limit(limit: int) -> None:
    if not 1 <= limit <= EXPORT_PAGE:
        raise InvalidRequestError("query.limit", f"limit must be 1 to {EXPORT_PAGE}, got {limit}")


@dataclass(frozen=True, slots=True)
class _BoundedPage:
    sessions: list[SessionRecord]
    next_start: int | None  # where the next page begins (None: nothing left)
    used: int  # the sessions' bytes
    full: bool  # stopped before a millisecond's group that would pass the bytes


def _bounded_page(
    history: SessionHistory,
    account_id: str,
    since: int,
    limit: int,
    size: Callable[[SessionRecord], int],
    budget: int,
    *,
    at_least_one: bool,
) -> _BoundedPage:
    """The sessions from ``since`` on (``limit`` and the rest of the last one's millisecond, as the store lists
    them), kept by whole millisecond groups while their bytes stay within ``budget`` (the first group kept whatever
    its bytes when ``at_least_one``: a group cannot be split, and a page must move on)."""
    listed = history.sessions_from(account_id, since, limit)
    found = sorted(listed.sessions, key=lambda s: (s.start_ms, s.room_sid, s.participant_sid))
    taken: list[SessionRecord] = []
    used = 0
    for start, grouped in groupby(found, key=lambda s: s.start_ms):
        group = list(grouped)
        cost = sum(size(s) for s in group)
        if used + cost > budget and (taken or not at_least_one):
            return _BoundedPage(taken, start, used, full=True)
        taken += group
        used += cost
    return _BoundedPage(taken, listed.next_start_ms, used, full=False)


def _whole_sessions(
    history: SessionHistory, account_id: str, size: Callable[[SessionRecord], int]
) -> list[SessionRecord]:
    """Every session of the account, read page by page, when their bytes together stay within ``EXPORT_PAGE_BYTES``;
    else a 400 naming how to page (review ex2: an export is never silently incomplete). The reads stop as soon as
    the bound is passed."""
    found: list[SessionRecord] = []
    since: int | None = 0
    left = EXPORT_PAGE_BYTES
    while since is not None:
        page = _bounded_page(history, account_id, since, EXPORT_PAGE, size, left, at_least_one=False)
        if page.full:
            raise InvalidRequestError(
                "query.limit",
                f"the account's sessions pass the {EXPORT_PAGE_BYTES:,} bytes one answer carries: ask for them in "
                f"pages - ?limit={EXPORT_PAGE} (1 to {EXPORT_PAGE}) - and follow next_cursor "
                f"(?cursor=<next_cursor>&limit={EXPORT_PAGE}) until it is null",
            )
        found += page.sessions
        since, left = page.next_start, left - page.used
    return found


def export(
    accounts: AccountDirectory,
    store: MemberStore,
    history: SessionHistory,
    ledger: LedgerStore,
    account_id: str,
    now: datetime,
    phone_codes: PhoneChallenges | None = None,
    limit: int | None = None,
    *,
    size: Callable[[SessionRecord], int],
) -> dict[str, Any]:
    """Everything kept about the account: profile, members, rating's counters per period, invoices, the phone code's
    item (the number it was sent to, when codes were sent; D160), and its sessions (participants, rooms, minutes):
    with a ``limit``, the first page of them (``export_sessions``; ``next_cursor`` reads the rest, page by page);
    without one, every session when they fit one answer, else a 400 naming how to page (D372 amended (ex2))."""
    profile = profile_of(accounts, account_id)
    if limit is None:
        first = ExportPage(tuple(_whole_sessions(history, account_id, size)), None)
    else:
        first = export_sessions(accounts, history, account_id, None, limit, size=size)
    book = ledger.ledger(account_id)
    return {
        "account_id": account_id,
        "exported_at": now.isoformat(),
        "profile": profile,
        "phone_code": phone_codes.current(account_id) if phone_codes is not None else None,
        "members": sorted(store.members(account_id), key=lambda m: (-m.role, m.user)),  # invitations too
        "sessions": first.sessions,
        "next_cursor": first.next_cursor,
        "periods": {key: dict(period.counters) for key, period in sorted(book.periods.items())},
        "invoices": invoices(ledger, account_id),
    }


def erase(
    accounts: AccountDirectory,
    store: MemberStore,
    history: SessionHistory,
    account_id: str,
    now: datetime,
    phone_codes: PhoneChallenges | None = None,
    ledger: LedgerStore | None = None,
    alert_records: AlertRecords | None = None,
) -> Erasure:
    """Pseudonymise the account's personal data: contact details cleared from the profile (alerts then go nowhere),
    members' emails and participants' identities replaced by pseudonyms. Invoices, amounts and usage counters are
    kept (legal retention); raw events expire with the events table's TTL (docs/decisions.md D80).

    The profile is marked first (``erased_at``): from then on rating writes every session that began before the mark
    with its pseudonym, also one it rates for the first time (events still queued), so none is written back with its
    identity while or after the stored sessions are rewritten here. The phone code's item (``phone_codes``) loses
    its number and code hash. The billing item's digest of the details last given the Stripe customer (D172, an
    unsalted hash of email and name: a guessed address could be checked against it) becomes that of the erased
    profile's empty details, so nothing of the old ones is kept and no update is sent for them later. The alerts
    function's delivery records written before it kept only its pseudonym of the contact (``alert_records``) get
    that pseudonym too (D203); later ones never held the contact. Its records keyed by a participant's identity
    (enforcement actions, abuse flags) written before it kept only the pseudonym are deleted (D214)."""
    cleared = False

    def marked(profile: AccountProfile) -> AccountProfile:
        nonlocal cleared
        cleared = bool(profile.name or profile.email or profile.phone)
        mark = now if profile.erased_at is None else max(profile.erased_at, now)
        return replace(profile, name="", email="", phone="", phone_verified=False, erased_at=mark)

    try:
        saved = update_profile(accounts, account_id, marked)
    except UnknownAccountError as exc:
        raise unregistered(account_id) from exc
    if phone_codes is not None:  # the pending code's number and hash go; its send times stay (the rate limit)
        phone_codes.forget_phone(account_id)
    if ledger is not None and ledger.ledger(account_id).billing.customer_details is not None:
        ledger.save_billing(account_id, customer_details=customer_details_digest("", ""))
    # the members' and invitees' e-mails and the alert delivery records before the sessions: their queries are
    # strongly consistent (the account's own partition), while the sessions' passes may end in
    # ErasureIncompleteError (503) or the route's timeout - an incomplete erasure has still erased them (D205)
    changed = store.pseudonymise(account_id, lambda value: pseudonym(account_id, value))
    if alert_records is not None:
        alert_records.pseudonymise(account_id)
        alert_records.forget_identities(account_id)  # records keyed by a participant's identity (D214)
    # every session begun before the mark: rating's bound (it writes those with their pseudonym from now on)
    sessions = history.pseudonymise(account_id, lambda value: pseudonym(account_id, value), saved.erased_at or now)
    return Erasure(account_id, now, sessions, changed, cleared)


def operator_accounts(accounts: AccountDirectory, account_ids: Iterable[str], now: datetime) -> list[AccountProfile]:
    """Registered accounts (the operator's list), by id."""
    found = accounts.registered(list(account_ids))
    return [found[key] for key in sorted(found)]


def book_for(catalog: Catalog, now: datetime) -> PriceBook:
    return catalog.for_period(Period.containing(now))
