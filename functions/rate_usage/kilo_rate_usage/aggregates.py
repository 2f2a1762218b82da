"""The pure arithmetic on rating's models: what a session contributes, deltas between versions, rating month-to-date
counters under the account's tier segments, thresholds reached, and open sessions' minutes so far."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping

from kilo_billing.accounts import AccountProfile
from kilo_billing.catalog import PriceBook
from kilo_billing.contracts import limit_scope, segment_scope
from kilo_billing.meters import Meter
from kilo_billing.month_to_date import OpenSessionFigures, rate_with_extra
from kilo_billing.rating import InvoiceLine, RatedPeriod
from kilo_rate_usage.model import Aggregate, AggregateKey, ContributionKey, Crossing, Session, StoredSession

ALLOWANCE_THRESHOLDS = (50, 80, 100)


def session_contributions(session: Session, profile: AccountProfile) -> dict[ContributionKey, int]:
    result: dict[ContributionKey, int] = defaultdict(int)
    for part in session.parts:
        segment = profile.segment_start(part.start_ms)
        if part.video:
            result[(session.account, part.period, segment, Meter.VIDEO.value)] += part.video
        if part.audio:
            result[(session.account, part.period, segment, Meter.AUDIO.value)] += part.audio
    return dict(result)


def delta(old: Mapping[ContributionKey, int], new: Mapping[ContributionKey, int]) -> dict[ContributionKey, int]:
    changes = {key: new.get(key, 0) - old.get(key, 0) for key in set(old) | set(new)}
    return {key: value for key, value in changes.items() if value}


def by_aggregate(contributions: Mapping[ContributionKey, int]) -> dict[AggregateKey, dict[tuple[int, str], int]]:
    """Contributions grouped per (account, period): counters keyed by (segment start, meter)."""
    result: dict[AggregateKey, dict[tuple[int, str], int]] = {}
    for (account, period, segment, meter), quantity in contributions.items():
        counters = result.setdefault((account, period), {})
        counters[(segment, meter)] = counters.get((segment, meter), 0) + quantity
    return result


def rate_aggregate(
    aggregate: Aggregate, profile: AccountProfile, book: PriceBook, extra: Mapping[tuple[int, str], int] | None = None
) -> RatedPeriod:
    """Rate month-to-date counters (plus ``extra``: open sessions' elapsed minutes) under the account's segments
    (the arithmetic is the layer's, shared with the account API: ``kilo_billing.month_to_date``)."""
    return rate_with_extra(aggregate.period, aggregate.counters, profile, book, extra)


def crossings(
    rated: RatedPeriod, profile: AccountProfile, already: set[str], spend: RatedPeriod | None = None
) -> list[Crossing]:
    """Thresholds reached and not yet announced: 50/80/100 % of an included allowance, of the budget, and the hard
    limit (an account's spending cap: calls are stopped there).

    ``rated`` is the closed usage; ``spend`` (when given) the bill including open sessions as if they ended now, which
    the budget and the hard limit are checked against (a limit is reached during a call, not when it ends).

    Each crossing is scoped by what it was measured against, and ``already`` (the aggregate's markers) is checked per
    scope: allowances are per tier segment (prorated on a tier change) and overage is charged per segment, so each
    segment's allowance has its own 50/80/100 % - an overage is never charged without its 100 % alert, also after a
    mid-month upgrade; the budget and the hard limit are scoped by their amount and setting (``limit_scope``), so a
    limit set again - raised, lowered, or back to an amount already announced - is announced and enforced again when
    the bill reaches it, once per setting. A marker written before scopes existed
    (``<meter>#<threshold>``) stands for every scope of its month (docs/decisions.md, D124).
    """
    found: list[Crossing] = []
    scopes = [segment_scope(usage.segment.start) for usage in rated.segments]
    by_meter: dict[Meter, list[InvoiceLine]] = defaultdict(list)
    for line in rated.usage_lines:  # one line per meter per segment, in segment order (rating.rate_segments)
        assert line.meter is not None
        by_meter[line.meter].append(line)
    for meter, lines in by_meter.items():
        for scope, line in zip(scopes, lines, strict=True):
            if line.included is None or line.included <= 0:
                continue
            found.extend(
                Crossing(meter.value, threshold, line.used, line.included, scope)
                for threshold in ALLOWANCE_THRESHOLDS
                if line.used * 100 >= line.included * threshold
            )
    bill = (spend or rated).total
    budget = profile.budget_usd
    if budget is not None and budget > 0:
        found.extend(
            Crossing("budget", threshold, bill, budget, limit_scope(budget, profile.budget_version))
            for threshold in profile.budget_thresholds
            if bill * 100 >= budget * threshold
        )
    hard = profile.hard_limit_usd
    if hard is not None and hard > 0 and bill >= hard:
        # its own crossing (D47): enforcement must not depend on a budget percentage happening to equal the limit
        found.append(Crossing("hard_limit", 100, bill, hard, limit_scope(hard, profile.hard_limit_version)))
    return [crossing for crossing in found if not announced(crossing, already)]


def announced(crossing: Crossing, markers: set[str]) -> bool:
    """Recorded already: its own marker, or the unscoped marker of its meter and threshold written before scopes."""
    return crossing.marker in markers or crossing.legacy_marker in markers


def figures(session: Session) -> OpenSessionFigures:
    """An open session as the layer's month to date reads it."""
    return OpenSessionFigures(
        room_sid=session.room_sid,
        participant_sid=session.participant_sid,
        account=session.account,
        start_ms=session.start_ms,
        billing=session.billing.value,
        video_seconds=session.video_seconds,
        video_active=session.video_active,
        as_of_ms=session.as_of_ms,
        identity=session.identity,
        room_name=session.room_name,
    )


def open_figures(sessions: Iterable[StoredSession]) -> list[OpenSessionFigures]:
    """The sessions still open, as ``kilo_billing.month_to_date.open_session_extra`` reads them (the minutes they would
    bill if they ended now: month-to-date views and budget checks)."""
    return [figures(stored.session) for stored in sessions if stored.session.is_open]
