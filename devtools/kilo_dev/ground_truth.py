"""What an account's month to date should say in money, worked out from the simulator's truth with this module's own
arithmetic - never with the product's rating, money or meters code - so the demo can check the product against it.

It reads only the published numbers of the price book (``pricebooks/*.json``: base prices, markup, fees, allowances)
and applies the billing policy (billing-policy.md) and docs/decisions.md D2/D3 as written there:

- a period is cut into tier segments at each change of tier in the account's (effective) tier history; a change at or
  before the period's start gives the tier the period starts with;
- a segment's fee = monthly fee x segment seconds / period seconds, rounded half-up to the cent;
- a segment's allowance = allowance x the same fraction, rounded **up** to the meter's step (1 minute, 1 message,
  0.01 GB); unlimited stays unlimited (no overage at all);
- a report belongs to the segment holding its timestamp; a connection's part in a period (rounded once: minutes =
  ceil(seconds / 60), video = min(minutes, ceil(video seconds / 60)), audio = the rest) is shared out to the segments
  it overlaps (D282): its video minutes in proportion to its video seconds in each segment, its audio
  minutes in proportion to its audio seconds (connected - video) there, each by the largest remainder, a tie to the
  later segment (no weight at all for a kind with minutes: by connected seconds); data transfer is summed in bytes
  per segment and billed as ceil(bytes / 10^7) hundredths of a GB;
- a usage line = max(0, used - included) x (base x markup), rounded half-up to the cent; overage = the sum of the
  lines, fee = the sum of the fee lines, bill so far = fee + overage;
- LiveKit's cost = every unit used x base price, summed exactly, rounded half-up to the cent once;
- a participant whose ``participant_joined`` and ``participant_left`` were both lost is not billed (D375: his kind
  cannot be told; he left before any sweep, so RoomService never told it either): the simulator's truth leaves his
  minutes out (``simulator._account_truth``), so every figure here does too.

Everything is integer or :class:`fractions.Fraction` arithmetic; Decimals appear only in the result.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from decimal import Decimal
from fractions import Fraction
from pathlib import Path

from kilo_dev.simulator import Truth, UsageAt
from kilo_dev.template import ROOT

PRICEBOOKS = ROOT / "layers" / "common" / "kilo_billing" / "pricebooks"
METERS = ("video", "audio", "messages", "data_transfer")  # the price book's meter names
_METER_OF = {"video": "video", "audio": "audio", "messages": "messages", "data_transfer_bytes": "data_transfer"}
_STEPS_PER_UNIT = {"video": 1, "audio": 1, "messages": 1, "data_transfer": 100}  # GB are counted in hundredths


@dataclass(frozen=True)
class PriceSheet:
    """The published numbers of one price book."""

    version: str
    markup: Fraction
    base: dict[str, Fraction]  # meter -> LiveKit's price per billing unit (minute, message, GB)
    fees: dict[str, Fraction]  # tier -> monthly fee
    included: dict[str, dict[str, Fraction | None]]  # tier -> meter -> allowance per period (None: unlimited)


def price_sheet(period_start: datetime, directory: Path = PRICEBOOKS) -> PriceSheet:
    """The book in effect for a period: the latest ``effective_from`` on or before the period's first day."""
    books = [json.loads(path.read_text()) for path in sorted(directory.glob("*.json"))]
    eligible = [book for book in books if date.fromisoformat(book["effective_from"]) <= period_start.date()]
    if not eligible:
        raise ValueError(f"no price book in effect on {period_start:%Y-%m-%d}")
    book = max(eligible, key=lambda b: b["effective_from"])
    return PriceSheet(
        version=book["version"],
        markup=Fraction(book["markup"]),
        base={meter: Fraction(spec["base_price"]) for meter, spec in book["meters"].items()},
        fees={tier["id"]: Fraction(tier["monthly_fee"]) for tier in book["tiers"]},
        included={
            tier["id"]: {m: None if q is None else Fraction(q) for m, q in tier["included"].items()}
            for tier in book["tiers"]
        },
    )


@dataclass(frozen=True)
class ExpectedBill:
    """An account's month to date as the policy says it should be."""

    tiers: tuple[str, ...]  # the tier of each segment, in order
    used: dict[str, Decimal]  # meter -> minutes / messages / GB (GB summed over segments, each rounded)
    fee: Decimal
    overage: Decimal
    total: Decimal
    livekit_cost: Decimal


def _half_up_cents(amount: Fraction) -> int:
    """Whole cents of a non-negative amount in dollars, half-up."""
    if amount < 0:
        raise ValueError(f"negative amount {amount}")
    cents = amount * 100
    return (2 * cents.numerator + cents.denominator) // (2 * cents.denominator)


def _dollars(cents: int) -> Decimal:
    return (Decimal(cents) / 100).quantize(Decimal("0.01"))


def period_bounds(period: str) -> tuple[int, int]:
    """(first second, first second of the next month) of ``"YYYY-MM"``, epoch seconds."""
    year, month = (int(part) for part in period.split("-"))
    start = datetime(year, month, 1, tzinfo=UTC)
    end = datetime(year + month // 12, month % 12 + 1, 1, tzinfo=UTC)
    return int(start.timestamp()), int(end.timestamp())


def segments(period: str, history: Sequence[tuple[int, str]]) -> list[tuple[int, int, str]]:
    """``[(start s, end s, tier)]`` covering the period, from a tier history ``[(from epoch s, tier)]``."""
    start, end = period_bounds(period)
    ordered = sorted(history)
    before = [tier for at, tier in ordered if at <= start]
    if not before:
        raise ValueError(f"no tier in effect at the start of {period}")
    cuts: list[tuple[int, int, str]] = []
    tier, cursor = before[-1], start
    for at, new in ordered:
        if start < at < end and new != tier:
            cuts.append((cursor, at, tier))
            tier, cursor = new, at
    cuts.append((cursor, end, tier))
    return cuts


def _overlap_ms(a: int, b: int, spans: Sequence[tuple[int, int]]) -> int:
    return sum(max(0, min(b, y) - max(a, x)) for x, y in spans)


def _shares(quantity: int, weights: Sequence[int]) -> list[int]:
    """``quantity`` in proportion to ``weights`` (integers, not all zero): floors, then one more to each largest
    remainder (a tie: the later one) until the sum is ``quantity``. Remainders compared as fractions of the sum."""
    whole = sum(weights)
    floors = [quantity * w // whole for w in weights]
    remainders = [quantity * w % whole for w in weights]  # numerators over ``whole``
    order = sorted(range(len(weights)), key=lambda i: (-remainders[i], -i))
    for i in order[: quantity - sum(floors)]:
        floors[i] += 1
    return floors


def _piece_in_segments(piece: UsageAt, cuts: Sequence[tuple[int, int, str]]) -> list[int]:
    """How much of ``piece`` each segment ``[start s, end s)`` holds: a report (or an unspanned piece) wholly the
    segment of its instant; a connection's part shared out by its video (or audio) milliseconds in each segment."""
    if piece.end_ms is None or piece.meter not in ("video", "audio"):
        return [piece.quantity if a * 1000 <= piece.at_ms < b * 1000 else 0 for a, b, _ in cuts]
    windows = [(max(piece.at_ms, a * 1000), min(piece.end_ms, b * 1000)) for a, b, _ in cuts]
    connected = [max(0, y - x) for x, y in windows]
    video = [_overlap_ms(x, y, piece.video_ms) if y > x else 0 for x, y in windows]
    weights = video if piece.meter == "video" else [c - v for c, v in zip(connected, video, strict=True)]
    if not piece.quantity:
        return [0] * len(cuts)
    return _shares(piece.quantity, weights if any(weights) else connected)


def _steps_by_segment(
    truth: Truth,
    account_id: str,
    period: str,
    cuts: Sequence[tuple[int, int, str]],
    exclude: Sequence[UsageAt] = (),
) -> list[dict[str, int]]:
    """The account's usage of ``period`` in each tier segment of ``cuts``, per meter in billing steps (data transfer:
    bytes rounded up to the 0.01 GB step, once per segment). ``exclude``: pieces left out (late usage)."""
    left_out = {id(piece) for piece in exclude}
    found = [dict.fromkeys(METERS, 0) for _ in cuts]
    for piece in truth.usage:
        if piece.account_id == account_id and piece.period == period and id(piece) not in left_out:
            for quantities, share in zip(found, _piece_in_segments(piece, cuts), strict=True):
                quantities[_METER_OF[piece.meter]] += share
    for quantities in found:
        quantities["data_transfer"] = -(-quantities["data_transfer"] // 10**7)
    return found


def expected_bill(
    truth: Truth, account_id: str, period: str, history: Sequence[tuple[int, str]], sheet: PriceSheet
) -> ExpectedBill:
    start, end = period_bounds(period)
    parts = segments(period, history)
    fee_cents = overage_cents = 0
    cost = Fraction(0)
    used_steps = dict.fromkeys(METERS, 0)
    by_segment = _steps_by_segment(truth, account_id, period, parts)
    for (seg_start, seg_end, tier), steps in zip(parts, by_segment, strict=True):
        fraction = Fraction(seg_end - seg_start, end - start)
        fee_cents += _half_up_cents(sheet.fees[tier] * fraction)
        for meter in METERS:
            per_unit = _STEPS_PER_UNIT[meter]
            used = steps[meter]
            used_steps[meter] += used
            cost += Fraction(used, per_unit) * sheet.base[meter]
            allowance = sheet.included[tier][meter]
            if allowance is None:
                continue  # unlimited: no overage
            included = math.ceil(allowance * per_unit * fraction)  # prorated, rounded up to the step
            billable = max(0, used - included)
            overage_cents += _half_up_cents(Fraction(billable, per_unit) * sheet.base[meter] * sheet.markup)
    return ExpectedBill(
        tiers=tuple(tier for _, _, tier in parts),
        used={meter: Decimal(used_steps[meter]).scaleb(-2 if meter == "data_transfer" else 0) for meter in METERS},
        fee=_dollars(fee_cents),
        overage=_dollars(overage_cents),
        total=_dollars(fee_cents + overage_cents),
        livekit_cost=_dollars(_half_up_cents(cost)),
    )


# --- the invoice closing a month (billing-policy.md, issue 11; restated here, not imported) --------------------------

# (kind, tier, meter): "usage" per tier segment and meter, "fee_first_month" or "fee_proration", "fee"
LineKey = tuple[str, str, str]


@dataclass(frozen=True)
class ExpectedInvoice:
    """The invoice that closes a month as the policy says it should be: amount per line, the total, and the payment
    status the card (or crypto) should leave it in."""

    lines: dict[LineKey, Decimal]
    total: Decimal
    status: str
    # what each usage line used in its segment (minutes, messages, GB): a minute in the wrong segment shows here even
    # when both segments' allowances cover it
    used: dict[LineKey, Decimal] = field(default_factory=dict)


def effective_history(requests: Sequence[tuple[int, str, str]], ranks: Sequence[str]) -> list[tuple[int, str]]:
    """A tier history from tier change *requests* ``[(requested at epoch s, from tier, to tier)]`` (the first entry is
    the signup: from == to): an upgrade (a tier later in ``ranks``) takes effect when requested, a downgrade at the
    start of the next month (the policy, restated: no mid-month downgrade)."""
    history: list[tuple[int, str]] = []
    for at, old, new in requests:
        if old == new or ranks.index(new) > ranks.index(old):
            history.append((at, new))
        else:
            moment = datetime.fromtimestamp(at, tz=UTC)
            history.append((period_bounds(f"{moment:%Y-%m}")[1], new))
    return sorted(history)


def expected_invoice(
    truth: Truth,
    account_id: str,
    period: str,
    history: Sequence[tuple[int, str]],
    sheet: PriceSheet,
    next_sheet: PriceSheet,
    *,
    billed_in_advance: Decimal = Decimal("0.00"),
    first_month: bool = True,
    method: str = "card",
    card_pays: bool = True,
    exclude: Sequence[UsageAt] = (),
) -> ExpectedInvoice:
    """The invoice closing ``period`` (the account's first invoice unless ``billed_in_advance`` says what the previous
    one billed for this month): usage in arrears per tier segment and meter (a $0.00 line for each meter without
    overage), the month's fees by segment minus what was billed in advance (no line when that is zero), and the next
    month's fee in advance at the tier in effect when it starts. The fee of the account's first month (``first_month``,
    nothing billed in advance) is a ``fee_first_month`` line; a later month's difference a ``fee_proration`` line.
    Status: a crypto bill stays open; a $0.00 invoice is paid at once; a card invoice is paid, or payment_failed when
    the card is declined. ``exclude``: pieces of usage that reached the product only after the close (late usage: the
    next invoice's adjustment)."""
    start, end = period_bounds(period)
    lines: dict[LineKey, Decimal] = {}
    used_by_line: dict[LineKey, Decimal] = {}
    fee_cents = 0
    cuts = segments(period, history)
    for (seg_start, seg_end, tier), steps in zip(
        cuts, _steps_by_segment(truth, account_id, period, cuts, exclude), strict=True
    ):
        fraction = Fraction(seg_end - seg_start, end - start)
        fee_cents += _half_up_cents(sheet.fees[tier] * fraction)
        for meter in METERS:
            per_unit = _STEPS_PER_UNIT[meter]
            used = steps[meter]
            allowance = sheet.included[tier][meter]
            billable = 0 if allowance is None else max(0, used - math.ceil(allowance * per_unit * fraction))
            cents = _half_up_cents(Fraction(billable, per_unit) * sheet.base[meter] * sheet.markup)
            lines[("usage", tier, meter)] = _dollars(cents)
            used_by_line[("usage", tier, meter)] = Decimal(used).scaleb(-2 if meter == "data_transfer" else 0)
    advance_cents = int(billed_in_advance * 100)
    if fee_cents != advance_cents:
        kind = "fee_first_month" if first_month else "fee_proration"
        lines[(kind, "", "")] = _dollars(fee_cents - advance_cents)
    next_tier = [tier for at, tier in sorted(history) if at <= end][-1]
    lines[("fee", next_tier, "")] = _dollars(_half_up_cents(next_sheet.fees[next_tier]))
    total = sum(lines.values(), Decimal("0.00"))
    # a card invoice above $0 but under Stripe's $0.50 minimum charge is kept and carried to the next (D126)
    below_minimum = method != "crypto" and Decimal("0.00") < total < Decimal("0.50")
    status = (
        "open"
        if method == "crypto"
        else "carried"
        if below_minimum
        else "paid"
        if total == 0 or card_pays
        else "payment_failed"
    )
    return ExpectedInvoice(lines, total, status, used_by_line)


# --- the alerts an account's month should cause (docs/alerts.md, restated here, not imported) -----------------------

ALLOWANCE_PERCENTS = (50, 80, 100)  # rating announces these shares of each included allowance
SMS_FROM_PERCENT = 80  # allowance and budget alerts go by SMS too from 80 % (email always)


@dataclass(frozen=True)
class Budget:
    """An account's budget as the demo sets it: the soft level and its percentages, the hard level."""

    budget_usd: Fraction
    percents: tuple[int, ...]
    hard_limit_usd: Fraction | None = None


ExpectedAlert = tuple[str, str, str, str]  # (period, kind, key, channel)


def expected_alerts(
    truth: Truth,
    account_id: str,
    period: str,
    history: Sequence[tuple[int, str]],
    sheet: PriceSheet,
    budget: Budget | None = None,
) -> Counter[ExpectedAlert]:
    """What the account should have been told about ``period`` by the end of it so far, on which channel (an account
    with an email address and a phone number, no preferences set), each with how many times.

    Each tier segment's allowance counts on its own (each segment's used steps over its prorated allowance, rounded up
    to the step as in ``expected_bill``): each of 50/80/100 % a segment reached is one ``allowance_threshold``, so an
    upgrade's allowance has its own (the texts name the meter and percentage, not the segment: two segments reaching
    the same percentage are the same text twice). The bill so far against the budget's percentages gives
    ``budget_threshold`` (in a month with some usage: rating announces them as it rates it); a bill at or above the
    hard limit gives one ``budget_hard_limit``. Both thresholds only ever
    rise during a month, so what was crossed at some point is what the end of the month shows."""
    start, end = period_bounds(period)
    crossed: Counter[tuple[str, int]] = Counter()
    cuts = segments(period, history)
    for (seg_start, seg_end, tier), steps in zip(cuts, _steps_by_segment(truth, account_id, period, cuts), strict=True):
        fraction = Fraction(seg_end - seg_start, end - start)
        for meter in METERS:
            allowance = sheet.included[tier][meter]
            if allowance is None:
                continue
            per_unit = _STEPS_PER_UNIT[meter]
            used = steps[meter]
            included = math.ceil(allowance * per_unit * fraction)
            crossed.update((meter, p) for p in ALLOWANCE_PERCENTS if included > 0 and used * 100 >= included * p)
    alerts: Counter[ExpectedAlert] = Counter()
    for (meter, percent), times in crossed.items():
        for alert in _channels(period, "allowance_threshold", f"{meter}:{percent}", percent):
            alerts[alert] += times
    # rating announces the budget's percentages when it rates the account's usage: a month without any (a fee alone
    # over a percentage) says nothing
    used = any(piece.account_id == account_id and piece.period == period for piece in truth.usage)
    if budget is not None and used:
        total = Fraction(int(expected_bill(truth, account_id, period, history, sheet).total * 100), 100)
        for percent in budget.percents:
            if total * 100 >= budget.budget_usd * percent:
                alerts.update(_channels(period, "budget_threshold", f"budget:{percent}", percent))
        if budget.hard_limit_usd is not None and total >= budget.hard_limit_usd:
            alerts.update(_channels(period, "budget_hard_limit", "hard_limit:100", 100))
    return alerts


def _channels(period: str, kind: str, key: str, percent: int) -> set[ExpectedAlert]:
    channels = ("email", "sms") if percent >= SMS_FROM_PERCENT else ("email",)
    return {(period, kind, key, channel) for channel in channels}


# --- crypto bills (issue 13): what paying a USD bill on chain should settle to ---------------------------------------
# From crypto.md's policies, with this module's own integer arithmetic (never the crypto function's code):
# - a quote locks the on-chain feed's price (USDC at exactly 1 inside its band) and asks ceil(total / price x 10^dp)
#   atomic units (rounded UP, so paying it exactly covers the bill);
# - a payment is worth atomic / 10^dp x the locked price, half-up to the cent;
# - an underpayment inside tolerance (stablecoins min(0.5 %, $1); ETH/SOL 1 %) is written off: PAID, flag PARTIAL;
#   a shortfall is whole cents, compared with the band exactly: one beyond it leaves the bill OPEN, flag PARTIAL,
#   nothing settled or written off (under $2 a USDC band is under a cent: $1.50 x 0.5 % = 0.0075, so 1 cent short
#   is outside it);
# - a late USDC payment (after the quote's expiry, inside its monitoring window) counts 1:1: PAID, flag PAID_LATE.
CRYPTO_DECIMALS = {"USDC": 6, "ETH": 18, "SOL": 9}
CRYPTO_SCENARIOS = ("usdc", "eth", "sol", "underpay", "late")


@dataclass(frozen=True)
class CryptoExpectation:
    scenario: str
    chain: str
    asset: str
    rate: Decimal  # the locked USD price
    quoted_atomic: int  # what the quote asks
    paid_atomic: int  # what the customer sends
    settled_usd: Decimal  # what the bill settled: the payment's USD value when PAID, 0.00 while OPEN
    written_off_usd: Decimal
    status: str  # the bill's final status
    flags: frozenset[str]
    late: bool


def _cents(value: Fraction) -> int:
    """Half-up to whole cents (value >= 0)."""
    return math.floor(value * 100 + Fraction(1, 2))


def expected_crypto(scenario: str, total_usd: Decimal, feed_prices: dict[str, Decimal]) -> CryptoExpectation:
    """The outcome of paying a ``total_usd`` bill in ``scenario`` (``CRYPTO_SCENARIOS``) at the feeds' prices."""
    chain, asset = {"eth": ("ethereum", "ETH"), "sol": ("solana", "SOL")}.get(scenario, ("ethereum", "USDC"))
    total = Fraction(total_usd)
    rate = Fraction(1) if asset == "USDC" else Fraction(feed_prices[asset])
    scale = 10 ** CRYPTO_DECIMALS[asset]
    quoted = math.ceil(total / rate * scale)
    paid, flags = quoted, set()
    # the tolerance band, exact: stablecoins min(0.5 %, $1), ETH/SOL 1 %
    band = min(total * Fraction(5, 1000), Fraction(1)) if asset == "USDC" else total / 100
    if scenario == "underpay":  # half the stablecoin band short, in whole cents (at least one)
        shortfall_cents = max(1, math.floor(band * 100) // 2)
        paid = math.ceil((total - Fraction(shortfall_cents, 100)) * scale)
        flags.add("PARTIAL")
    if scenario == "late":
        flags.add("PAID_LATE")
    settled_cents = _cents(Fraction(paid, scale) * rate)
    short_cents = max(0, math.floor(total * 100) - settled_cents)
    paid_off = Fraction(short_cents, 100) <= band  # the shortfall against the exact band
    return CryptoExpectation(
        scenario=scenario,
        chain=chain,
        asset=asset,
        rate=Decimal(rate.numerator) / Decimal(rate.denominator),
        quoted_atomic=quoted,
        paid_atomic=paid,
        settled_usd=Decimal(settled_cents if paid_off else 0) / 100,
        written_off_usd=Decimal(short_cents if paid_off else 0) / 100,
        status="PAID" if paid_off else "OPEN",
        flags=frozenset(flags),
        late=scenario == "late",
    )


# --- the budget forecast and its re-check (docs/decisions.md D45, D148, D366; restated here, not imported) -----------
# - each weekday has a weight (Monday first; default weekdays 1, Saturday and Sunday 0.4); the weight elapsed from a
#   period's start to an instant is the earlier days' weights plus the instant's day's weight x its elapsed share;
# - the forecast's base is one day of the heaviest weekday; the re-check is due at the first whole second at which the
#   weight elapsed since the period's start (or a later sign-up) reaches the base;
# - the forecast at an instant: each meter's quantity so far over the weight elapsed - but never less than the base
#   (a burst early in the month counts as one day's use) - is its rate; walking ahead day by day (today its remaining
#   share), each day adds rate x its weight to the quantity, rounded down to whole units, and the month's bill is rated
#   as ``expected_bill`` does (the fee, each allowance first, each overage line half-up to the cent): the day the bill
#   reaches the limit is the forecast's day (today when it is already there; none when not within the month);
# - a budget event below 100 % before the base says the day it forecasts (if any) on the month's key and plans the
#   re-check; the re-check at its run after the base says the day it forecasts on the month's key when the early event
#   said none, or on a second key when the early one said a later day; else nothing (the bill already at the limit:
#   nothing either).
DEFAULT_WEEKDAY_WEIGHTS = (Fraction(1),) * 5 + (Fraction(2, 5),) * 2
DAY_S = 86_400


def weight_elapsed(period: str, at_s: int, weights: Sequence[Fraction] = DEFAULT_WEEKDAY_WEIGHTS) -> Fraction:
    """The weight elapsed from ``period``'s start to ``at_s`` (epoch s, inside the period)."""
    start, _ = period_bounds(period)
    whole, part = divmod(at_s - start, DAY_S)
    first = datetime.fromtimestamp(start, tz=UTC).weekday()
    done = sum((weights[(first + i) % 7] for i in range(whole)), Fraction(0))
    return done + weights[(first + whole) % 7] * Fraction(part, DAY_S)


def recheck_due_s(period: str, weights: Sequence[Fraction] = DEFAULT_WEEKDAY_WEIGHTS) -> int:
    """When the forecast's re-check of an account signed up by the period's start is due: the first whole second
    at which the weight elapsed reaches one day of the heaviest weekday."""
    start, end = period_bounds(period)
    target, day, done = max(weights), start, Fraction(0)
    while day < end:
        weight = weights[datetime.fromtimestamp(day, tz=UTC).weekday()]
        if weight and done + weight >= target:
            return day + math.ceil((target - done) / weight * DAY_S)
        day, done = day + DAY_S, done + weight
    raise ValueError(f"the base is not reached within {period}")


def forecast_day(
    used: dict[str, int],
    tier: str,
    sheet: PriceSheet,
    limit_usd: Fraction,
    period: str,
    now_s: int,
    weights: Sequence[Fraction] = DEFAULT_WEEKDAY_WEIGHTS,
) -> date | None:
    """The day a whole month at one ``tier`` reaches ``limit_usd`` at the rate of ``used`` (meter -> minutes or
    messages so far; data transfer not forecast here) as of ``now_s``, the floor of the base included."""
    start, end = period_bounds(period)

    def bill(quantities: dict[str, int]) -> Fraction:
        cents = _half_up_cents(sheet.fees[tier])
        for meter, quantity in quantities.items():
            allowance = sheet.included[tier][meter]
            if allowance is not None:
                billable = max(0, quantity - math.ceil(allowance))
                cents += _half_up_cents(billable * sheet.base[meter] * sheet.markup)
        return Fraction(cents, 100)

    today = datetime.fromtimestamp(now_s, tz=UTC).date()
    if bill(used) >= limit_usd:
        return today
    over = max(weight_elapsed(period, now_s, weights), *weights)
    rates = {meter: Fraction(quantity) / over for meter, quantity in used.items()}
    if not any(rates.values()):
        return None
    midnight = now_s - (now_s - start) % DAY_S
    share, added = Fraction(midnight + DAY_S - now_s, DAY_S), Fraction(0)
    while midnight < end:
        day = datetime.fromtimestamp(midnight, tz=UTC).date()
        added += weights[day.weekday()] * share
        if bill({meter: used[meter] + math.floor(rate * added) for meter, rate in rates.items()}) >= limit_usd:
            return day
        midnight, share = midnight + DAY_S, Fraction(1)
    return None


def day_label(day: date) -> str:
    """How an alert names a day: "Wednesday 25 November"."""
    return f"{day:%A} {day.day} {day:%B}"


def expected_forecasts(period: str, early: date | None, recheck: date | None) -> Counter[ExpectedAlert]:
    """The forecast alerts of a month whose budget event before the base forecast ``early`` and whose re-check
    forecast ``recheck`` (each ``None``: no day): email and SMS each (the forecast's severity sends both), keyed by
    the day they say."""
    days = [early] if early is not None else []
    if recheck is not None and (early is None or recheck < early):
        days.append(recheck)
    return Counter((period, "budget_forecast", day_label(day), channel) for day in days for channel in ("email", "sms"))
