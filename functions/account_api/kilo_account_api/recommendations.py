"""Recommendations with the money they save, derived from the account's own month so far (pure).

Every saving is exact and honest about allowances: this period's bill is rated twice with the layer's rating
(``kilo_billing.month_to_date.rate_with_extra``) - once as observed, once with the change applied to the same
counters - and the saving is the difference, so minutes still inside an allowance save nothing.

- a cheaper tier: the observed usage priced for a whole period on each tier against the current tier (the same
  basis for both); a tier that includes less and charges no overage (none does today) would not fit and is skipped;
- audio-only rooms for large audiences: rooms with at least ``audience_min_participants`` people, their video minutes
  billed as audio;
- idle camera minutes: a camera on while alone in a room (a meeting with one participant) - video billed as audio;
- lower simulcast layers: subscribers on a lower layer receive fewer bytes; the data transfer counters reduced by
  ``simulcast_data_saving`` (a stated assumption; LiveKit's medium layer is about half the high layer's bitrate).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from decimal import ROUND_FLOOR, Decimal

from kilo_account_api.model import Recommendation, RecommendationKind, SessionRecord
from kilo_billing.accounts import AccountProfile
from kilo_billing.catalog import OveragePolicy, PriceBook
from kilo_billing.meters import Meter
from kilo_billing.month_to_date import MonthToDate, rate_with_extra
from kilo_billing.periods import Period
from kilo_billing.rating import TierChange

Counters = dict[tuple[int, str], int]
MIN_SAVING = Decimal("0.01")


@dataclass(frozen=True, slots=True)
class RecommendationPolicy:
    audience_min_participants: int = 10
    simulcast_data_saving: Decimal = Decimal("0.5")


def _combined(mtd: MonthToDate) -> Counters:
    combined: Counters = defaultdict(int)
    for source in (mtd.counters, mtd.extra):
        for key, quantity in source.items():
            combined[key] += quantity
    return dict(combined)


def _bill(period: str, counters: Mapping[tuple[int, str], int], profile: AccountProfile, book: PriceBook) -> Decimal:
    return rate_with_extra(period, counters, profile, book).total


def _video_as_audio(
    counters: Counters, sessions: Iterable[SessionRecord], profile: AccountProfile, period: str
) -> Counters:
    """The counters with these sessions' video minutes in ``period`` billed as audio (same tier segment)."""
    moved = dict(counters)
    for session in sessions:
        for part in session.parts_in(period):
            if not part.video_minutes:
                continue
            segment = profile.segment_start(part.start_ms)
            moved[(segment, Meter.VIDEO.value)] = moved.get((segment, Meter.VIDEO.value), 0) - part.video_minutes
            moved[(segment, Meter.AUDIO.value)] = moved.get((segment, Meter.AUDIO.value), 0) + part.video_minutes
    return moved


def _rooms(sessions: Iterable[SessionRecord]) -> dict[str, list[SessionRecord]]:
    rooms: dict[str, list[SessionRecord]] = defaultdict(list)
    for session in sessions:
        if not session.aborted:
            rooms[session.room_sid].append(session)
    return rooms


def cheaper_tier(mtd: MonthToDate, book: PriceBook, now: datetime) -> Recommendation | None:
    period = Period.parse(mtd.period)
    start = int(period.start.timestamp())
    usage: Counters = defaultdict(int)
    for (_, meter), quantity in _combined(mtd).items():
        usage[(start, meter)] += quantity
    used = {Meter(meter): quantity for (_, meter), quantity in usage.items()}
    current = mtd.profile.tier_at(now)
    prices: dict[str, Decimal] = {}
    for tier in book.tiers:
        if tier.overage is OveragePolicy.NONE and any(
            tier.allowance(meter) is not None and Decimal(quantity) > (tier.allowance(meter) or 0)
            for meter, quantity in used.items()
        ):
            continue
        whole = AccountProfile(mtd.account_id, (TierChange(period.start, tier.id),))
        prices[tier.id] = _bill(mtd.period, usage, whole, book)
    if current not in prices:
        return None
    best = min(prices, key=lambda tier_id: (prices[tier_id], book.tier(tier_id).rank))
    saving = prices[current] - prices[best]
    if best == current or saving < MIN_SAVING:
        return None
    lost = sorted(set(book.tier(current).entitlements) - set(book.tier(best).entitlements))
    detail = (
        f"This month's usage so far costs ${prices[current]} on {book.tier(current).name} and ${prices[best]} on "
        f"{book.tier(best).name} (a whole month on each)."
    )
    if lost:
        detail += f" {book.tier(best).name} does not include: {', '.join(lost)}."
    return Recommendation(
        kind=RecommendationKind.CHEAPER_TIER,
        title=f"Switch to {book.tier(best).name}",
        detail=detail,
        saving_usd=saving,
        current_usd=prices[current],
        with_change_usd=prices[best],
        tier=best,
    )


def _lever(
    kind: RecommendationKind,
    title: str,
    detail: str,
    mtd: MonthToDate,
    book: PriceBook,
    changed: Counters,
    rooms: tuple[str, ...] = (),
) -> Recommendation | None:
    current = _bill(mtd.period, _combined(mtd), mtd.profile, book)
    after = _bill(mtd.period, changed, mtd.profile, book)
    if current - after < MIN_SAVING:
        return None
    return Recommendation(kind, title, detail, current - after, current, after, rooms=rooms)


def _room_lever(
    kind: RecommendationKind,
    title: str,
    what: str,
    mtd: MonthToDate,
    book: PriceBook,
    chosen: list[list[SessionRecord]],
) -> Recommendation | None:
    if not chosen:
        return None
    sessions = [session for room in chosen for session in room]
    minutes = sum(session.minutes_in(mtd.period)[0] for session in sessions)
    if not minutes:
        return None
    names = tuple(dict.fromkeys(room[0].room_name or room[0].room_sid for room in chosen))
    detail = f"{len(chosen)} {what} billed {minutes} video minutes this month; as audio they would cost less."
    changed = _video_as_audio(_combined(mtd), sessions, mtd.profile, mtd.period)
    return _lever(kind, title, detail, mtd, book, changed, names)


def recommend(
    mtd: MonthToDate,
    sessions: list[SessionRecord],
    book: PriceBook,
    now: datetime,
    policy: RecommendationPolicy,
) -> list[Recommendation]:
    """Every recommendation that saves at least a cent this period, largest saving first. Sessions whose minutes of
    the period are the unattributed bucket's (D292, D322) are not the account's to save on."""
    rooms = _rooms(session for session in sessions if mtd.period not in session.unattributed_periods)
    audiences = [room for room in rooms.values() if len({s.identity for s in room}) >= policy.audience_min_participants]
    alone = [room for room in rooms.values() if len({s.identity for s in room}) == 1]
    found = [
        cheaper_tier(mtd, book, now),
        _room_lever(
            RecommendationKind.AUDIO_ONLY_AUDIENCES,
            "Make large audiences audio-only",
            f"rooms with {policy.audience_min_participants} or more participants",
            mtd,
            book,
            sorted(audiences, key=lambda room: -sum(s.minutes_in(mtd.period)[0] for s in room)),
        ),
        _room_lever(
            RecommendationKind.IDLE_CAMERA,
            "Turn cameras off when nobody is watching",
            "rooms where one person was alone with the camera on",
            mtd,
            book,
            sorted(alone, key=lambda room: -sum(s.minutes_in(mtd.period)[0] for s in room)),
        ),
        _simulcast(mtd, book, policy),
    ]
    return sorted((r for r in found if r is not None), key=lambda r: (-r.saving_usd, r.kind.value))


def _simulcast(mtd: MonthToDate, book: PriceBook, policy: RecommendationPolicy) -> Recommendation | None:
    counters = _combined(mtd)
    keep = 1 - policy.simulcast_data_saving
    changed = {
        key: int((Decimal(quantity) * keep).to_integral_value(ROUND_FLOOR))
        if key[1] == Meter.DATA_TRANSFER.value
        else quantity
        for key, quantity in counters.items()
    }
    if changed == counters:
        return None
    share = (policy.simulcast_data_saving * 100).normalize()
    detail = (
        f"Subscribing to a lower simulcast layer where full resolution is not needed cuts data transfer by about "
        f"{share} % (assumed)."
    )
    return _lever(RecommendationKind.LOWER_SIMULCAST, "Use lower simulcast layers", detail, mtd, book, changed)
