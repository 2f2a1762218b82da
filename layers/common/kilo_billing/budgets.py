"""Budgets: an account's monthly spending limit - a soft level (alerts at chosen percentages of ``budget_usd``) and an
optional hard level (``hard_limit_usd``: new calls refused, running ones stopped) - how they are changed (the operator
CLI now, the account API later), and the weekday-aware forecast of the day the month's bill passes a limit.

Forecast rule (docs/decisions.md, budgets; D148): each day of the week has a weight (a business account spends on
weekdays, little at weekends). Each meter's month-to-date QUANTITY (minutes, messages, bytes) divided by the weight of
the time elapsed so far (whole days, plus the elapsed share of today) is its use per unit of weight; walking forward
day by day, each day adds its weight times that rate (today only its remaining share), and the month so far plus what
is projected is rated as the bill is (fees fixed, allowance first, overage at the price book's prices): the limit is
reached on the first day that bill reaches it. Dollars are never extrapolated - usage costs $0 until an allowance runs
out, so a dollar run rate misses the overage still to come. With equal weights this is the plain linear run rate. The
answer is the UTC day on which the limit is reached, or ``None`` when it is not reached inside the period.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from fractions import Fraction
from typing import Final

from kilo_billing.accounts import AccountDirectory, AccountProfile, update_profile
from kilo_billing.catalog import Catalog, PriceBook, default_catalog
from kilo_billing.invoicing import segment_usage
from kilo_billing.meters import Meter
from kilo_billing.money import money_str
from kilo_billing.month_to_date import MonthToDateSource, month_to_date
from kilo_billing.periods import Period, ensure_utc
from kilo_billing.rating import RatedPeriod, SegmentUsage, rate_segments

# Monday .. Sunday. Calls are a working-day activity: a weekend day counts for 0.4 of a weekday unless configured.
DEFAULT_WEEKDAY_WEIGHTS: Final[tuple[Decimal, ...]] = (
    Decimal(1),
    Decimal(1),
    Decimal(1),
    Decimal(1),
    Decimal(1),
    Decimal("0.4"),
    Decimal("0.4"),
)
MAX_THRESHOLDS: Final = 10
MAX_THRESHOLD_PERCENT: Final = 1000  # the threshold contract's bound
# the least weight elapsed (since the period's start or the sign-up) the forecast extrapolates from, in days of the
# heaviest weekday (scale-free: "10,...,4" and "1,...,0.4" give the same base, D148 amended (e3c)): one full such day
# (Mon 2 Nov 14:24 when a month starts on a Sunday), so no burst of a few minutes is multiplied into a month
MIN_FORECAST_BASE: Final = Fraction(1)
_DAY = timedelta(days=1)
_MICROSECOND = timedelta(microseconds=1)


class InvalidBudgetError(ValueError):
    """A budget that cannot be set; the message names the field and what is allowed."""


@dataclass(frozen=True, slots=True)
class BudgetChange:
    """What to change; ``None`` keeps the current value, ``clear_*`` removes it."""

    budget_usd: Decimal | None = None
    thresholds: tuple[int, ...] | None = None
    hard_limit_usd: Decimal | None = None
    clear_budget: bool = False
    clear_hard_limit: bool = False


def _amount(name: str, value: Decimal) -> Decimal:
    if not value.is_finite() or value <= 0:
        raise InvalidBudgetError(f"{name} must be a positive amount in USD, got {value}")
    if value.as_tuple().exponent < -2:  # type: ignore[operator]
        raise InvalidBudgetError(f"{name} must be whole cents, got {value}")
    return value


def check_thresholds(thresholds: Sequence[int]) -> tuple[int, ...]:
    """Alert percentages of the soft budget: 1 to 10 distinct whole percentages in 1..1000, kept in ascending order."""
    if not 1 <= len(thresholds) <= MAX_THRESHOLDS:
        raise InvalidBudgetError(f"alert percentages: give 1 to {MAX_THRESHOLDS}, got {len(thresholds)}")
    for value in thresholds:
        if isinstance(value, bool) or not 1 <= value <= MAX_THRESHOLD_PERCENT:
            raise InvalidBudgetError(f"alert percentage {value!r} must be a whole number from 1 to 1000")
    if len(set(thresholds)) != len(thresholds):
        raise InvalidBudgetError(f"alert percentages repeat: {list(thresholds)}")
    return tuple(sorted(thresholds))


def apply_budget(
    profile: AccountProfile, change: BudgetChange, now: datetime | None = None, catalog: Catalog | None = None
) -> AccountProfile:
    """The profile with the budget changed, validated whole (nothing is half-applied). A budget or hard limit must be
    above the fixed monthly fee (``fixed_fee`` at ``now``, the shipped catalogue by default): the bill starts at it,
    so a hard limit at or below it is reached at once and stops every call for the month."""
    budget = None if change.clear_budget else profile.budget_usd
    if change.budget_usd is not None:
        if change.clear_budget:
            raise InvalidBudgetError("give either a budget or no budget, not both")
        budget = _amount("budget", change.budget_usd)
    hard = None if change.clear_hard_limit else profile.hard_limit_usd
    if change.hard_limit_usd is not None:
        if change.clear_hard_limit:
            raise InvalidBudgetError("give either a hard limit or no hard limit, not both")
        hard = _amount("hard limit", change.hard_limit_usd)
    thresholds = profile.budget_thresholds if change.thresholds is None else check_thresholds(change.thresholds)
    if budget is not None and hard is not None and hard < budget:
        raise InvalidBudgetError(
            f"hard limit ${hard} is below the budget ${budget}: the hard level stops calls, so it must be at least the "
            "soft level (lower the budget, or raise the hard limit)"
        )
    changed = replace(
        profile,
        budget_usd=budget,
        budget_thresholds=thresholds,
        hard_limit_usd=hard,
        # a changed amount is a new setting: its crossings are scoped by this version too (an equal amount, only new
        # percentages, or nothing changed: the same setting, nothing announced twice)
        budget_version=profile.budget_version + (budget != profile.budget_usd),
        hard_limit_version=profile.hard_limit_version + (hard != profile.hard_limit_usd),
    )
    if budget is not None or hard is not None:
        _above_fees(changed, budget, hard, now, catalog)
    return changed


def fixed_fee(profile: AccountProfile, now: datetime, book: PriceBook) -> Decimal:
    """The fixed fees a month's bill starts at, for a limit set at ``now`` that stays in force: the largest of this
    month's fees as billed (``month_fee``: a mid-month change prorated) and the full monthly fee of the tier in force
    at ``now`` and of any tier change already scheduled after it (the next months)."""
    period = Period.containing(now)
    tiers = {profile.tier_at(now)} | {change.tier for change in profile.changes if change.at > now}
    return max([month_fee(profile, period.key, book), *(book.tier(tier).monthly_fee for tier in tiers)])


def check_tier_change(
    before: AccountProfile,
    after: AccountProfile,
    now: datetime,
    month: MonthToDateSource,
    catalog: Catalog | None = None,
    read_at: datetime | None = None,
) -> None:
    """D150 for a tier change: a change that raises the fixed fee (an upgrade; a pending downgrade cancelled keeps the
    fee in force) is refused while the account's budget or hard limit would no longer be above the new fee, or the
    hard limit would not be above this month's bill re-rated with the change (``month``: the account's month to date
    - rating's counters and open sessions - rated under ``after`` by the layer's own ``month_to_date``): an upgrade
    mid-month prorates the old tier's allowances and fee, so the usage so far is re-rated upward, and a limit the
    bill then reaches would stop every call at once. A change that does not raise it (a downgrade, which takes
    effect at the next period start) is refused only once in effect at ``read_at`` (an ``--at`` in an earlier month):
    then the bills of the months it re-rates, to the clock's, are checked (``_check_in_effect``, D150 amended).
    ``read_at``: the clock when the
    usage is read (default ``now``); open sessions count up to the later of the two: a past change (the CLI's
    ``--at``) to now, what enforcement reads once it is saved; a future one on to its date, since saving it shrinks
    the old tier's allowance at once and the bill must stay under the limit until it takes effect. A change dated in
    a month already over at ``read_at`` (over, not invoiced: ``check_not_invoiced`` refuses a change in an invoiced
    one first) is checked on every month it re-rates, from its own to the clock's, which it sets whole to the new
    tier: each bill to ``read_at`` re-rated with it, by the same rule, the refusal naming the month (D150 amended
    (up), (up3): the hard limit is the customer's maximum for a month's bill, invoiced or still running). With the
    limit already reached before the change (read at ``read_at``) a change is refused only when it makes the bill
    higher, the message saying the limit is reached already (calls are stopped), not that the change would reach
    it; one lowering or keeping that bill is accepted (``_reaches``, D150 amended (up2))."""
    if after.budget_usd is None and after.hard_limit_usd is None:
        return
    at = ensure_utc(now)
    period = Period.containing(at)
    book = (catalog or default_catalog()).for_period(period)
    if fixed_fee(after, at, book) <= fixed_fee(before, at, book):
        _check_in_effect(before, after, ensure_utc(read_at) if read_at is not None else at, month, catalog)
        return
    tier = after.tier_at(at)
    try:
        _above_fees(after, after.budget_usd, after.hard_limit_usd, at, catalog)
    except InvalidBudgetError as exc:
        raise InvalidBudgetError(f"changing to {tier}: {exc}, or clear it, before changing tier") from exc
    hard = after.hard_limit_usd
    if hard is None:
        return
    clock = ensure_utc(read_at) if read_at is not None else at
    if Period.containing(clock).key > period.key:
        # the change's month (and any between) is over, not invoiced: its bill is checked; the clock's month,
        # still open, is set whole to the new tier by it (its fee and allowances): checked too (D150 (up), (up3))
        _check_in_effect(before, after, clock, month, catalog, upgrade=True)
        return
    to_ms = int(max(at, clock).timestamp() * 1000)  # a past change: to now; a future one: on to its date
    bill = month_to_date(month, after.account_id, period.key, to_ms, book, profile=after).rated
    if bill.total >= hard:
        now_ms = int(clock.timestamp() * 1000)
        was = month_to_date(month, before.account_id, period.key, now_ms, book, profile=before).rated.total
        if not _reaches(was, bill.total, hard):
            return
        if was >= hard:
            reached = f"the limit is already reached (${money_str(was)} before the change) and every call stopped"
        elif at > clock:
            reached = (
                f"the limit would be reached by {at:%Y-%m-%d %H:%M} UTC, while still on {before.tier_at(at)}, "
                "and every call stopped (open sessions counted on to then)"
            )
        else:
            reached = "the limit would be reached at once and every call stopped"
        whose = "this month's" if period == Period.containing(clock) else f"{period.start:%B %Y}'s"
        span = "so far" if at <= clock else "up to the change"
        raise InvalidBudgetError(
            f"changing to {tier}: hard limit ${hard} is not above ${money_str(bill.total)}, {whose} bill {span} "
            f"re-rated with the change (the {before.tier_at(at)} allowances and fee prorated to the part of the "
            f"month before it): {reached}; raise the hard limit above ${money_str(bill.total)}, or clear it, before "
            "changing tier"
        )


def _check_in_effect(
    before: AccountProfile,
    after: AccountProfile,
    clock: datetime,
    month: MonthToDateSource,
    catalog: Catalog | None,
    *,
    upgrade: bool = False,
) -> None:
    """D150 amended (e2d) for a change that does not raise the fee: one already in effect at ``clock`` (a downgrade
    dated back with ``--at`` takes effect at a month start that may be past) re-rates the bills of the months from
    the one it takes effect in to the clock's, each read to ``clock``; refused when one of them reaches the hard limit
    while the bill without the change did not, or, the limit already reached, is higher than it (``_reaches``, D150
    amended (up2)), the earliest such month named. ``upgrade`` (D150 amended (up)): an upgrade dated into an earlier
    month, which sets the clock's month whole to the new tier. A month before the clock's is over but not invoiced
    (a change dated in an invoiced one is refused before, ``accounts.check_not_invoiced``, and periods are invoiced
    in order): its bill is checked all the same (D150 amended (up3)). The months read are those from the change to the
    clock's - the account's months since its last invoice, one or two - each by the same ``month_to_date`` re-rating
    under ``after`` and ``before``, the latter only when the former reaches the limit."""
    hard = after.hard_limit_usd
    added = [change.at for change in after.changes if change not in before.changes and change.at <= clock]
    if hard is None or not added:
        return
    current = Period.containing(clock)
    clock_ms = int(clock.timestamp() * 1000)
    period = Period.containing(min(added))
    while period.key <= current.key:
        book = (catalog or default_catalog()).for_period(period)
        bill = month_to_date(month, after.account_id, period.key, clock_ms, book, profile=after).rated.total
        if bill >= hard:
            was = month_to_date(month, before.account_id, period.key, clock_ms, book, profile=before).rated.total
            if _reaches(was, bill, hard):
                _refuse_in_effect(after, clock, period, hard, bill, was, upgrade=upgrade)
        period = period.next()


def _refuse_in_effect(
    after: AccountProfile,
    clock: datetime,
    period: Period,
    hard: Decimal,
    bill: Decimal,
    was: Decimal,
    *,
    upgrade: bool,
) -> None:
    """``_check_in_effect``'s refusal for ``period``'s bill, worded for the clock's month (calls stopped) or for a
    month already over (the month's bill at or past the limit)."""
    tier = after.tier_at(clock)
    raise_it = f"raise the hard limit above ${money_str(bill)}, or clear it, before changing tier"
    since_at = max(c.at for c in after.changes if c.at <= clock and c.at < period.end)
    since = f"in effect since {since_at:%Y-%m-%d %H:%M} UTC"
    if period != Period.containing(clock):
        # "the month's bill", not "its invoice": open sessions' minutes of a month over can reach a later invoice
        # as adjustments; at exactly the limit the bill "reaches" it (the check is >=)
        outcome = (
            "the month's bill would reach the limit"
            if was < hard
            else "the month's bill, over the limit already, would be raised"
        )
        raise InvalidBudgetError(
            f"changing to {tier}: hard limit ${hard} is not above ${money_str(bill)}, {period.start:%B %Y}'s bill "
            f"re-rated with the change ({since}; ${money_str(was)} before the change): the month is over, not yet "
            f"invoiced, and {outcome}; {raise_it}"
        )
    if upgrade:
        whose, since = f"{period.start:%B %Y}'s", f"{since}, {tier}'s fee and allowances for the whole month"
    else:
        whose = "this month's"
    reached = "is already reached" if was >= hard else "would be reached at once"
    raise InvalidBudgetError(
        f"changing to {tier}: hard limit ${hard} is not above ${money_str(bill)}, {whose} bill so far re-rated "
        f"with the change ({since}; ${money_str(was)} before the change): the limit {reached} and every call "
        f"stopped; {raise_it}"
    )


def _reaches(was: Decimal, bill: Decimal, hard: Decimal) -> bool:
    """D150's one rule for the bill a tier change re-rates, upgrade or downgrade (amended (up2)); ``bill``, with the
    change, is at or over ``hard`` (the caller's test), ``was`` is the bill without it. Refused when the change makes
    the bill reach the limit it did not reach, or makes an already-reached bill HIGHER; a change lowering or keeping
    an already-reached bill is accepted: calls are stopped either way (the spend item enforcement reads is never
    lowered within the month) and refusing would keep the customer billed the higher amount."""
    return was < hard or bill > was


def _above_fees(
    profile: AccountProfile, budget: Decimal | None, hard: Decimal | None, now: datetime | None, catalog: Catalog | None
) -> None:
    at = ensure_utc(now) if now is not None else datetime.now(UTC)
    fee = fixed_fee(profile, at, (catalog or default_catalog()).for_period(Period.containing(at)))
    for name, amount, outcome in (
        ("hard limit", hard, "reached at once and every call refused for the month"),
        ("budget", budget, "passed at once"),
    ):
        if amount is not None and amount <= fee:
            raise InvalidBudgetError(
                f"{name} ${amount} is not above the fixed monthly fee of ${money_str(fee)}: the bill starts at the "
                f"fee, so it would be {outcome}; set it above ${money_str(fee)}"
            )


def set_budget(
    directory: AccountDirectory,
    account_id: str,
    change: BudgetChange,
    *,
    now: datetime | None = None,
    catalog: Catalog | None = None,
) -> AccountProfile:
    """Change an account's budget (``kilo-billing account budget``; later the account API). Rating announces the soft
    percentages from its next batch on; the hard level is enforced from the next threshold event (docs/alerts.md).
    ``now`` and ``catalog`` as ``apply_budget``'s: the fees the limits must stay above are the caller's catalog's (the
    CLI's own, D150 amended (up3)), the shipped one by default."""
    return update_profile(directory, account_id, lambda profile: apply_budget(profile, change, now, catalog))


def _weight(day: date, weights: Sequence[Decimal]) -> Fraction:
    return Fraction(weights[day.weekday()])


def weighted_elapsed(now: datetime, weights: Sequence[Decimal]) -> tuple[Period, Fraction, Fraction]:
    """The forecast's clock (module docstring), shared by ``bill_reached_on`` and ``projected_total``: ``now``'s
    period, the share of ``now``'s UTC day elapsed (exact, in whole microseconds - no float on the way to a
    rounding), and the weighted days elapsed in the period (the earlier days' weights plus today's weight times that
    share). ``ValueError`` unless the weights are seven non-negative numbers, Monday first,
    not all zero."""
    if len(weights) != 7 or any(not w.is_finite() or w < 0 for w in weights) or not any(weights):
        raise ValueError("weekday weights: seven non-negative numbers, Monday first, not all zero")
    now = ensure_utc(now)
    period = Period.containing(now)
    today = now.date()
    midnight = datetime(today.year, today.month, today.day, tzinfo=now.tzinfo)
    share = Fraction((now - midnight) // _MICROSECOND, _DAY // _MICROSECOND)
    first = period.start.date()
    elapsed = sum((_weight(first + _DAY * i, weights) for i in range((today - first).days)), Fraction(0))
    return period, share, elapsed + _weight(today, weights) * share


def _days_ahead(now: datetime, weights: Sequence[Decimal]) -> Iterator[tuple[date, datetime, Fraction]]:
    """The rest of ``now``'s period, day by day: (the UTC day, the start of its part still to come - ``now`` today,
    midnight after - and that part's weight: today's weight times its remaining share, then each day's weight)."""
    period, elapsed_today, _ = weighted_elapsed(now, weights)
    start = ensure_utc(now)
    day, share = start.date(), 1 - elapsed_today
    last = (period.end - _DAY).date()
    while day <= last:
        yield day, start, _weight(day, weights) * share
        day, share = day + _DAY, Fraction(1)
        start = datetime(day.year, day.month, day.day, tzinfo=UTC)


def signed_up_at(profile: AccountProfile) -> datetime | None:
    """The account's sign-up: ``AccountProfile.signed_up_at``, its earliest tier change - not a later upgrade
    (``None`` without any)."""
    return profile.signed_up_at if profile.changes else None


def _segment_at(rated: RatedPeriod, at: datetime) -> int:
    """The index of the tier segment in force at ``at`` (the last one when ``at`` is at or past the period's end)."""
    for index, usage in enumerate(rated.segments):
        if usage.segment.start <= at < usage.segment.end:
            return index
    return len(rated.segments) - 1


def _with_added(rated: RatedPeriod, added: Sequence[Mapping[Meter, Fraction]], book: PriceBook) -> RatedPeriod:
    """``rated``'s period rated again with ``added`` base units per segment and meter on top of its own (each sum
    rounded down to a whole base unit: usage reached, not begun), by rating's own ``rate_segments``."""
    segments = [
        SegmentUsage(usage.segment, {meter: usage.totals.get(meter, 0) + math.floor(more[meter]) for meter in Meter})
        for usage, more in zip(rated.segments, added, strict=True)
    ]
    return rate_segments(rated.period, segments, book)


def forecast_base(weights: Sequence[Decimal]) -> Fraction:
    """The least weight elapsed the forecast extrapolates from: ``MIN_FORECAST_BASE`` days of the heaviest weekday
    (the weights' scale cancels out, as in the run rate itself)."""
    return MIN_FORECAST_BASE * Fraction(max(weights))


def base_reached_at(now: datetime, weights: Sequence[Decimal], signed_up: datetime | None = None) -> datetime | None:
    """The first instant of ``now``'s period at which the weight elapsed since its start or the sign-up, whichever
    is later, weighs ``forecast_base`` (rounded up to a whole second): from then on the forecast is the run rate
    itself, no longer the use spread over the base - the forecast alert's re-check is due then (D366). ``None``
    when that instant is not inside the period."""
    period, _, _ = weighted_elapsed(now, weights)
    start = period.start if signed_up is None else max(period.start, ensure_utc(signed_up))
    if start >= period.end:
        return None
    target = forecast_base(weights) + (weighted_elapsed(start, weights)[2] if start > period.start else Fraction(0))
    day, done, last = period.start.date(), Fraction(0), (period.end - _DAY).date()
    while day <= last:
        weight = _weight(day, weights)
        if weight and done + weight >= target:
            midnight = datetime(day.year, day.month, day.day, tzinfo=UTC)
            return midnight + timedelta(seconds=math.ceil((target - done) / weight * 86_400))
        day, done = day + _DAY, done + weight
    return None


def _elapsed(rated: RatedPeriod, now: datetime, weights: Sequence[Decimal], signed_up: datetime | None) -> Fraction:
    """The weight elapsed since the period's start or the account's sign-up (``signed_up``: its first tier change),
    whichever is later - the days before the account existed used nothing. ``ValueError`` when ``now`` is not in
    ``rated``'s period."""
    period, _, elapsed = weighted_elapsed(now, weights)
    if period != rated.period:
        raise ValueError(f"the forecast of {rated.period} needs a time inside it, not {ensure_utc(now).isoformat()}")
    if signed_up is not None and signed_up > period.start:  # signed up this month: the rate counts from then
        elapsed -= weighted_elapsed(min(ensure_utc(signed_up), ensure_utc(now)), weights)[2]
    return elapsed


def _run_rates(rated: RatedPeriod, over: Fraction) -> dict[Meter, Fraction]:
    """Base units per unit of weight, per meter, so far this month (all segments together), over the weight ``over``
    (D148)."""
    used = {meter: sum((usage.totals.get(meter, 0) for usage in rated.segments), 0) for meter in Meter}
    return {meter: Fraction(quantity) / over for meter, quantity in used.items()}


def bill_reached_on(
    rated: RatedPeriod,
    book: PriceBook,
    limit_usd: Decimal | None,
    now: datetime,
    weights: Sequence[Decimal],
    signed_up: datetime | None = None,
) -> date | None:
    """The UTC day the month's bill reaches ``limit_usd``. ``rated``: the month so far (``month_to_date``'s, its
    segments' quantities per meter), ``book``: its price book, ``signed_up``: the account's sign-up (``signed_up_at``;
    the rate counts from it when it is later than the period's start). Each meter's quantity is extrapolated at its
    weekday-weighted run rate (module docstring) and, at the end of each day ahead, the month so far plus what is
    projected by then is rated by rating's own ``rate_segments`` - fees fixed, each allowance first, the overage at
    the book's prices, each line rounded by ``round_money`` - until its total reaches the limit: a bill whose
    allowance covers the usage so far ($0 of usage) still reaches a limit once the allowance runs out (D148). Today
    when the bill is already there; ``None`` without a limit, without any use or when it is not reached within the
    month. Before ``forecast_base`` has elapsed the use so far is spread over that base (D148 amended (e3c)). The one
    forecast of a limit: the account API's and the forecast alert's."""
    if limit_usd is None:
        return None
    if rated.total >= limit_usd:
        return ensure_utc(now).date()
    # over at least the base (D148 amended (e3c)): the fee crosses the thresholds it covers with the month's first
    # calls, before the base has elapsed, and no later event may come - so a forecast is always computed; early use
    # is spread over the base as if it had elapsed (under-, never over-estimated: a burst counts as one day's use)
    rates = _run_rates(rated, max(_elapsed(rated, now, weights, signed_up), forecast_base(weights)))
    if not any(rates.values()):
        return None  # nothing to extrapolate from
    added = [dict.fromkeys(Meter, Fraction(0)) for _ in rated.segments]
    for day, start, weight in _days_ahead(now, weights):
        more = added[_segment_at(rated, start)]
        for meter, rate in rates.items():
            more[meter] += rate * weight
        if _with_added(rated, added, book).total >= limit_usd:
            return day
    return None


def month_fee(profile: AccountProfile, period_key: str, book: PriceBook) -> Decimal:
    """The fixed fees of the account's bill for the period: each tier segment's monthly fee, prorated as rating does
    (``rate_segments`` with no usage), so the same figure as the bill's fee lines."""
    period = Period.parse(period_key)
    return rate_segments(period, segment_usage(period, profile.segments(period), {}), book).fee


def projected_total(
    rated: RatedPeriod, book: PriceBook, now: datetime, weights: Sequence[Decimal], signed_up: datetime | None = None
) -> Decimal | None:
    """The month's bill at its end, as ``bill_reached_on`` forecasts it: each meter's quantity so far extrapolated to
    the end of the month at its weekday-weighted run rate (``quantity x weight of the rest of the month / weight
    elapsed``, added to the segment in force on each day) and the whole rated by ``rate_segments`` (fees fixed,
    allowances first, lines rounded by ``round_money``). ``None`` ("not enough data yet") until the time elapsed
    since the period's start or the sign-up weighs ``forecast_base`` (one day of the heaviest weekday)."""
    elapsed = _elapsed(rated, now, weights, signed_up)
    if elapsed < forecast_base(weights):
        return None  # not enough data yet: a few minutes of use would be multiplied by thousands
    rates = _run_rates(rated, elapsed)
    added = [dict.fromkeys(Meter, Fraction(0)) for _ in rated.segments]
    for _, start, weight in _days_ahead(now, weights):
        more = added[_segment_at(rated, start)]
        for meter, rate in rates.items():
            more[meter] += rate * weight
    return _with_added(rated, added, book).total
