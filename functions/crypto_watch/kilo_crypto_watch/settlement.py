"""Settlement: chain payments matched to bills, the quote and bill state machines, tolerances and the money.

The watchers report through the ``PaymentSink`` port (``record_seen`` / ``finalized`` / ``orphaned``); settlement
matches each credit (Solana Pay reference; the sender's linked wallet plus an open quote; a transaction the customer
submitted for a bill; else UNATTRIBUTED, kept for an operator), values it in USD (the quote's locked rate, or the
late-payment policy), and moves the bill: OPEN -> PROCESSING (covered counting unfinalized payments) -> PAID (covered
by finalized ones, inside tolerance), exactly once - each step is one conditional transaction on the bill's version.
Events are published after the state is written and marked after publishing (a crash in between re-publishes the same
deterministic id; consumers dedupe), never lost.

Pure parts (``recompute``, ``quote_status``, ``value_payment``, ``match_quote``, ``tolerance``) take values and return
values; ``Settlement`` wires them to the ``SettlementStore`` port and the publisher.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from fractions import Fraction
from typing import Final, TypeVar, cast, get_args

from kilo_billing.contracts import (
    CryptoBillReopenedV1,
    CryptoBillSettledV1,
    CryptoCreditAddedV1,
    CryptoPaymentSeenV1,
    CryptoQuoteExpiringV1,
    CryptoSeenTransferV1,
    LostPayment,
    UnattributedCryptoPaymentV1,
)
from kilo_billing.money import (
    ZERO,
    allocate_cents,
    decimal_str,
    exact_amount,
    money_str,
    round_money,
    round_money_down,
    rounded_sum,
)
from kilo_billing.publisher import EventPublisher
from kilo_crypto_watch.model import (
    DECIMALS,
    Asset,
    Bill,
    BillFlag,
    BillPayment,
    BillStatus,
    ChainConfig,
    MatchedBy,
    ObservedTransfer,
    Payment,
    PaymentStatus,
    PendingPayment,
    Quote,
    QuoteStatus,
)
from kilo_crypto_watch.ports import (
    ChainBlock,
    ChangeRefusedError,
    ConflictError,
    RateRefusedError,
    Rates,
    SettlementChange,
    SettlementStore,
)

STABLECOINS: Final = frozenset({"USDC"})
_LOG = logging.getLogger(__name__)

COUNTED: Final = frozenset({PaymentStatus.SEEN, PaymentStatus.FINALIZED})
# a reopen notice's ``lost`` (the contract's ``LostPayment``), carried in its owed entry (D434 amended (hcw))
Lost = LostPayment
_LOST_CAUSES: Final = frozenset(get_args(LostPayment))
# A payment detected more than this before its quote was made was not sent for that quote: it is valued by the late
# rule (``value_payment``), never at the quote's lock. Detection is the block's time (the chain's clock), creation
# ours: an Ethereum block's timestamp is its slot's start, up to 12 s before a transaction it holds was sent, and
# Solana's block time is a stake-weighted estimate off by seconds; 60 s covers both with room for our clock, and is
# too short to sell a price option (D385).
QUOTE_CLOCK_MARGIN: Final = timedelta(seconds=60)
_T = TypeVar("_T")


@dataclass(frozen=True, slots=True)
class SettlementPolicy:
    """Tolerances and the late-payment policy (crypto.md; defaults from BTCPay / Coinbase Commerce)."""

    stable_tolerance_rate: Decimal = Decimal("0.005")  # stablecoins: min(0.5 % of the bill, $1)
    stable_tolerance_cap: Decimal = Decimal("1.00")
    volatile_tolerance_rate: Decimal = Decimal("0.01")  # ETH / SOL: 1 % of the bill
    late_review_move: Decimal = Decimal("0.02")  # late ETH/SOL whose price moved more than this: manual review
    # the payment lines a bill takes (one per credit matched to it); a credit beyond them is kept for an operator.
    # A line is about 300 bytes of the bill's item: 500 keep it far below DynamoDB's 400 KB, whatever the lines'
    # statuses grow to (D177)
    max_bill_lines: int = 500
    # a credit that moved to another id (re-mined at another log index, D155) keeps its bill above the cap, by at
    # most this many lines: its old line stays (ORPHANED, pointing at the new one), and a move is never a new credit
    move_margin: int = 20
    # how long after its quote's expiry a Solana reference is still queried on its own each run (D290)
    reference_margin: timedelta = timedelta(hours=2)
    # an UNATTRIBUTED credit worth less than this (rounded to the cent) is kept on the operator's list but raises no
    # alert, only a metric: address-poisoning dust (1 lamport, 1 wei) would otherwise page an operator per transfer.
    # 0: every one alerted (D364)
    unattributed_alert_min_usd: Decimal = Decimal("0.01")


class SettlementError(Exception):
    """Base of settlement's refusals (the API and the CLI map them to clear messages)."""


class BillNotFoundError(SettlementError, LookupError):
    pass


class PaymentNotFoundError(SettlementError, LookupError):
    pass


class AlreadyClaimedError(SettlementError):
    """The payment is attributed to another bill already."""


class ClaimRefusedError(SettlementError):
    """A customer claimed a transaction for a bill that it is not tied to (it names another bill's quote, or comes
    from a wallet linked to another account; or nothing ties it to this bill: not a linked wallet of the account, no
    reference of the bill's quotes, not a quote's amount while the bill is open): it is left to the watcher's
    matching and operators."""


class NoQuoteError(SettlementError):
    """The bill has no quote (inside its monitoring window) for the payment's chain and asset."""


class NotAssignableError(SettlementError):
    """The payment cannot be assigned (already attributed, failed, orphaned or refunded; the bill is another
    account's)."""


class NotRefundableError(SettlementError):
    """The payment cannot be recorded as refunded (attributed to a bill, failed, orphaned, or refunded by another
    transaction already)."""


class UnstorableError(SettlementError):
    """The store can never take the change (a bill holding too many payment lines to store one more): the watchers'
    report keeps the credit UNATTRIBUTED for an operator; the fast path and operators are refused."""


class NotUnderReviewError(SettlementError):
    """The payment is not waiting for an operator's decision (never in review, or resolved already)."""


def utc_now() -> datetime:
    return datetime.now(UTC)


# --- pure money and state ------------------------------------------------------------------------------------------


def asset_amount(atomic: int, asset: Asset) -> Decimal:
    """Atomic units as a whole-unit Decimal (exact): 1_500_000 USDC units -> 1.5."""
    return Decimal(atomic).scaleb(-DECIMALS[asset])


def usd_value(atomic: int, asset: Asset, rate: Decimal) -> Decimal:
    """A payment's USD value, exact: atomic / 10^decimals x rate, not rounded (0.005 USDC is $0.005). A bill rounds
    once, the sum of the credits it counts (``paid_usd``): rounded one by one, 1,000 credits of 0.005 USDC would count
    $10.00 for 5 USDC paid (D178)."""
    return exact_amount(Fraction(atomic, 10 ** DECIMALS[asset]), rate)


def paid_usd(lines: Iterable[BillPayment]) -> Decimal:
    """What payment lines count for on a bill: the exact sum of their USD, rounded once to the cent
    (``kilo_billing.money.rounded_sum``). Lines stored before D178 hold their value rounded to the cent:
    they count as stored."""
    return rounded_sum(line.usd for line in lines)


def shown_usd(credits: Iterable[tuple[str, Decimal]]) -> dict[str, Decimal]:
    """Each credit's USD to the cent as shown beside the credits it is counted with (``(payment id, exact USD)``):
    their sum as a bill counts it (exact, rounded once: ``rounded_sum``) split in proportion to each one's exact USD
    by ``kilo_billing.money.allocate_cents``, so the rows add up to it to the cent (D217). Rounded one by one,
    ten credits of $0.005 showed $0.01 each - $0.10 - beside a bill counting $0.05."""
    pairs = list(credits)
    if not pairs:
        return {}
    parts = allocate_cents(rounded_sum(usd for _, usd in pairs), [usd for _, usd in pairs])
    return {payment_id: part for (payment_id, _), part in zip(pairs, parts, strict=True)}


def counted_usd(payments: Iterable[Payment]) -> dict[str, Decimal]:
    """``shown_usd`` of the payments that count toward their bill (seen or final, valued, not in review or refused);
    the others are not part of a sum and are shown on their own."""
    return shown_usd(
        (payment.payment_id, payment.usd)
        for payment in payments
        if payment.usd is not None and payment.invoice_id is not None and counts(_line(payment))
    )


def exact_tolerance(total: Decimal, paid: Iterable[tuple[Asset, Decimal]], policy: SettlementPolicy) -> Fraction:
    """The tolerance band exactly, not rounded, from the payments counted (asset, USD): paid in stablecoins only (or
    nothing of value in ETH/SOL), min(0.5 %, $1) of the total; in ETH/SOL only, 1 %; both, the two bands weighted by
    the USD each paid - a dust ETH payment beside USDC must not open ETH's band for the whole bill. A claim by amount
    alone is tied to a quote within this band (``Settlement._check_claim``); what a bill writes off is ``tolerance``,
    this band rounded down to the cent. $1.99 in USDC: 0.00995 exactly; $12.34 in ETH: 0.1234."""
    stable = min(Fraction(total) * Fraction(policy.stable_tolerance_rate), Fraction(policy.stable_tolerance_cap))
    volatile = Fraction(total) * Fraction(policy.volatile_tolerance_rate)
    amounts = list(paid)
    whole = sum((Fraction(usd) for _, usd in amounts), Fraction(0))  # exact: credits are not rounded
    in_volatile = sum((Fraction(usd) for asset, usd in amounts if asset not in STABLECOINS), Fraction(0))
    if in_volatile <= 0:
        return stable
    if in_volatile >= whole:
        return volatile
    return (stable * (whole - in_volatile) + volatile * in_volatile) / whole


def tolerance(total: Decimal, paid: Iterable[tuple[Asset, Decimal]], policy: SettlementPolicy) -> Decimal:
    """The underpayment a bill writes off: ``exact_tolerance`` rounded DOWN to the cent
    (``kilo_billing.money.round_money_down``) - a write-off never exceeds its rule ($12.34 in ETH: 1 % = 0.1234 ->
    $0.12; weighted 0.745 -> $0.74, not 0.75). A bill's shortfall is whole cents, so it fits the band rounded down
    exactly when it fits the exact band (D176)."""
    return round_money_down(exact_tolerance(total, paid, policy))


def recompute(bill: Bill, policy: SettlementPolicy, now: datetime) -> Bill:
    """The bill's status, flags and settled/written-off/credit USD from its payment lines.

    PAID is final: later finalized payments first pay what it wrote off (never with money announced as credit
    already), then add account credit. Otherwise: PAID when the finalized payments cover the total inside tolerance
    - short of it (a write-off) only once no counted payment is still SEEN, which would pay the shortfall (D387),
    but for one its watcher named stuck (``stalled``: it no longer holds the write-off, D398);
    PROCESSING when the seen and finalized ones do, stuck ones left out (D419: a bill short beyond its band asks
    the customer for the rest rather than wait on a stuck payment); else OPEN (PARTIAL when any payment counts - a
    stuck one too, sent but not proven: a bill whose only payment is stuck is OPEN, PARTIAL, asking its whole total).
    Failed, orphaned and under-review payments do not count. So the result does not depend on which payment
    finalizes first, and no money is both written off and credited."""
    kept = bill.flags & {BillFlag.PAST_DUE, BillFlag.MARKED}
    counted = [line for line in bill.payments if counts(line)]
    final = [line for line in counted if line.status is PaymentStatus.FINALIZED]
    flags = set(kept)
    if len(counted) > 1:
        flags.add(BillFlag.MULTIPLE)
    if any(line.late for line in counted):
        flags.add(BillFlag.PAID_LATE)
    if bill.status is BillStatus.PAID:
        # later final payments add what they raise the rounded sum by: every final payment counted together is
        # rounded once (D178), so dust paid after PAID is neither lost nor counted a cent each
        settled = [line for line in final if line.payment_id in bill.settled_payment_ids]
        extra = paid_usd(final) - paid_usd(settled)
        # what the move to PAID wrote off is paid first: a customer never keeps both a write-off and a credit for
        # the same money (D387). Money announced as credit already is invoicing's (it never takes credit back), so
        # only the extra above the credit announced out of it pays the write-off: a bill PAID before D387 whose
        # later payment was credited in full keeps that credit and its write-off; on a newer bill the credit
        # announced is the extra less the write-off it paid, so netting it again gives the same figures (idempotent)
        shortfall = max(ZERO, bill.total_usd - bill.settled_usd)
        settlement_credit = max(ZERO, bill.settled_usd - bill.total_usd)
        credited = max(ZERO, bill.credit_announced_usd - settlement_credit)
        netted = min(shortfall, max(ZERO, extra - credited))
        credit = settlement_credit + extra - netted
        if credit > 0:
            flags.add(BillFlag.OVERPAID)
        flags |= bill.flags & {BillFlag.PAID_LATE, BillFlag.MULTIPLE}
        if shortfall > netted:
            flags |= bill.flags & {BillFlag.PARTIAL}  # still short: the rest stays written off
        return replace(bill, flags=frozenset(flags), credit_usd=credit, written_off_usd=shortfall - netted)
    total = bill.total_usd
    # a SEEN line its watcher named stuck holds nothing: not the write-off (D398), not the rest the customer is asked
    # for (D419) - it counts again once final, or as credit on a bill paid meanwhile
    live = [line for line in counted if holds(line)]
    allowed = tolerance(total, [(line.asset, line.usd) for line in live], policy)
    paid_all = paid_usd(live)
    paid_final = paid_usd(final)
    pending = any(line.status is not PaymentStatus.FINALIZED for line in live)  # SEEN: may pay the shortfall
    if final and paid_final >= total - allowed and (paid_final >= total or not pending):
        if paid_final > total:
            flags.add(BillFlag.OVERPAID)
        if paid_final < total:
            flags.add(BillFlag.PARTIAL)  # paid inside tolerance: the shortfall is written off
        return replace(
            bill,
            status=BillStatus.PAID,
            flags=frozenset(flags),
            settled_usd=paid_final,
            written_off_usd=max(ZERO, total - paid_final),
            credit_usd=max(ZERO, paid_final - total),
            settled_payment_ids=tuple(line.payment_id for line in final),
            paid_at=now,
        )
    if counted and paid_all < total - allowed:
        flags.add(BillFlag.PARTIAL)
    if paid_all > total:
        flags.add(BillFlag.OVERPAID)
    status = BillStatus.PROCESSING if live and paid_all >= total - allowed else BillStatus.OPEN
    return replace(bill, status=status, flags=frozenset(flags))


def counts(line: BillPayment) -> bool:
    """A payment line counts toward its bill: seen or finalized, not waiting in review, not refused (refund owed)."""
    return line.status in COUNTED and not line.review and not line.refund_owed


def holds(line: BillPayment) -> bool:
    """A payment line holds its unpaid bill's next step: it counts, and is final or seen but not named stuck by its
    watcher (``stalled``: final long since, neither outcome provable). A stalled line neither keeps the bill's
    shortfall from being written off (D398) nor covers the rest the customer is asked for (D419)."""
    return counts(line) and (line.status is PaymentStatus.FINALIZED or not line.stalled)


def remaining_usd(bill: Bill) -> Decimal:
    """What a new quote asks for: the total less what seen and finalized payments already cover (never below 0); a
    payment named stuck covers nothing (``holds``, D419)."""
    covered = paid_usd(line for line in bill.payments if holds(line))
    return max(ZERO, bill.total_usd - covered)


def owing_reopen(before: Bill, after: Bill, owed: str) -> Bill:
    """``after`` owing the reopen notice ``owed`` (``reopens_owed``, in the move's own write; ``reopen_entry``) when
    the move left the bill OPEN asking more than ``before``: named stuck (D434), orphaned or failed (D434 amended
    (hcw))."""
    if after.status is BillStatus.OPEN and remaining_usd(after) > remaining_usd(before):
        return replace(after, reopens_owed=(*after.reopens_owed, owed))
    return after


def reopen_entry(payment: Payment, block_hash: str, lost: Lost | None = None, at: datetime | None = None) -> str:
    """An owed reopen notice: ``<payment id>@<block hash>`` (a stall: the block it was named stuck in), the event id's
    tail - one notice per payment and block. A lost payment's (D434 amended (hcw)) adds ``;<lost>;<at>``: the cause
    and a time (ISO) - a failure's is when it is told (at once). A drop's ("dropped", "expired": its block orphaned)
    ``at`` is when it was dropped, and it adds ``;<chain>;<height>``, the block number (slot) ``payment`` was
    dropped from: it is told once its chain's watcher reads that height final (``OwedReopen.due``, D449)."""
    tail = f"{payment.payment_id}@{block_hash}"
    if lost is None:
        return tail
    entry = f"{tail};{lost};{(at or payment.seen_at).isoformat()}"
    if lost == "failed":
        return entry
    return f"{entry};{payment.transfer.chain};{payment.transfer.block_number}"


@dataclass(frozen=True, slots=True)
class OwedReopen:
    """One entry of a bill's ``reopens_owed``, read (``parse_reopen``): the payment, the event id's tail, the cause
    (None: a stall), and what it waits for - a dropped payment's chain and the height it was dropped from (D449), or,
    for an entry written before D449 (and a failure: that time is its writing), a time."""

    payment_id: str
    tail: str
    lost: Lost | None = None
    at: datetime | None = None
    chain: str | None = None
    height: int | None = None

    def due(self, now: datetime, final: Mapping[str, int]) -> bool:
        """Whether it may be told now: a drop once ``final`` (each chain's height its watcher read final this run,
        ``Settlement.announce_due``) has its chain at or past the height it was dropped from - not while that chain's
        height is unknown; an entry with a time once ``now`` is past it; a stall at once."""
        if self.height is not None:
            reached = final.get(self.chain or "")
            return reached is not None and reached >= self.height
        return self.at is None or now >= self.at


def parse_reopen(owed: str) -> OwedReopen:
    """``reopen_entry``'s parts. A lost payment's tail adds ``/<at, Unix seconds>``: lost from the same block again
    later (back in it meanwhile) is another notice, never taken for the first (D434 amended (hcw)). A drop's entry
    written before D449 (``<tail>;dropped;<due>``: no height, its time 768 s after the drop) is still due by that
    time, its id unchanged: such entries are told within 768 s of the deploy, as they were promised."""
    tail, _, rest = owed.partition(";")
    payment_id = tail.rpartition("@")[0]
    cause, _, more = rest.partition(";")
    if cause not in _LOST_CAUSES or not more:
        return OwedReopen(payment_id, tail)
    lost = cast(Lost, cause)
    stamp, _, where = more.partition(";")
    at = datetime.fromisoformat(stamp)
    told = f"{tail}/{int(at.timestamp())}"
    chain, _, height = where.partition(";")
    if chain and height:
        return OwedReopen(payment_id, told, lost, chain=chain, height=int(height))
    return OwedReopen(payment_id, told, lost, at=at)


def quote_status(quote: Quote, lines: Sequence[BillPayment], now: datetime) -> QuoteStatus:
    """The quote's state from its payments (crypto.md): a payment inside the quote's expiry -> DETECTED, COMPLETED
    when final, INVALID when still unfinalized after monitoring; only late payments -> LATE; none counting (never
    paid, or every payment orphaned or failed) -> ACTIVE until expiry, then EXPIRED."""
    counted = [line for line in lines if line.quote_id == quote.quote_id and line.status in COUNTED]
    on_time = [line for line in counted if not line.late]
    if on_time:
        if any(line.status is PaymentStatus.FINALIZED for line in on_time):
            return QuoteStatus.COMPLETED
        return QuoteStatus.INVALID if now > quote.monitor_until else QuoteStatus.DETECTED
    if counted:
        return QuoteStatus.LATE
    return QuoteStatus.EXPIRED if now > quote.expires_at else QuoteStatus.ACTIVE


def made_after(quote: Quote, detected_at: datetime, transfer: ObservedTransfer) -> bool:
    """The quote was made after the payment was detected (beyond ``QUOTE_CLOCK_MARGIN``): not what it was sent for.
    A transfer with no block time (Solana's getTransaction and getBlockTime both without one) was sent at some time
    up to ``detected_at`` (when we first saw it), maybe long before: it counts as sent before every quote (the late
    rule, never the lock), except one whose reference it carries - a key made with the quote, so the transfer cannot
    be older than the quote (D397)."""
    if transfer.block_time is None:
        return quote.reference is None or quote.reference not in transfer.references
    return detected_at < quote.created_at - QUOTE_CLOCK_MARGIN


def match_quote(transfer: ObservedTransfer, quotes: Iterable[Quote], detected_at: datetime) -> Quote | None:
    """The open quote a transfer pays: same chain and asset, still monitored at detection; among those made by then
    (``made_after``) if any, the one asking exactly this amount first, else the newest. A quote made after the
    payment is matched only when no other is, and ``value_payment`` values the payment by the late rule there."""
    candidates = [
        quote
        for quote in quotes
        if quote.chain == transfer.chain and quote.asset == transfer.asset and detected_at <= quote.monitor_until
    ]
    candidates = [quote for quote in candidates if not made_after(quote, detected_at, transfer)] or candidates
    if not candidates:
        return None
    exact = [quote for quote in candidates if quote.atomic_amount == transfer.atomic_amount]
    return max(exact or candidates, key=lambda quote: (quote.created_at, quote.quote_id))


@dataclass(frozen=True, slots=True)
class Valuation:
    rate: Decimal
    usd: Decimal
    late: bool
    review: bool


def value_payment(
    transfer: ObservedTransfer,
    quote: Quote,
    detected_at: datetime,
    policy: SettlementPolicy,
    rate_then: Callable[[], Decimal],
) -> Valuation:
    """USD of a payment toward ``quote``: the locked rate inside the quote's window (made by detection, give or take
    ``QUOTE_CLOCK_MARGIN``, and not expired); late - after expiry, or before the quote was made (D385) -
    stablecoins 1:1 and ETH/SOL at min(locked, ``rate_then``: the rate at the payment's block time, D218) - a move
    beyond ``late_review_move`` (or no rate at all) sends it to review."""
    locked = quote.rate.price
    # outside the quote's window either way: after its expiry, or before it was made (a price option, D385)
    late = detected_at > quote.expires_at or made_after(quote, detected_at, transfer)
    review = False
    rate = locked
    if late and transfer.asset in STABLECOINS:
        rate = Decimal(1)
    elif late:
        try:
            current = rate_then()
        except RateRefusedError:
            current = None
        if current is None:
            review = True
        else:
            review = abs(current - locked) > locked * policy.late_review_move
            rate = min(locked, current)
    return Valuation(rate, usd_value(transfer.atomic_amount, transfer.asset, rate), late, review)


def _same_credit(stored: ObservedTransfer, seen: ObservedTransfer) -> bool:
    """The same transfer of one transaction, whatever its index: asset, sender, recipient and amount."""
    return (stored.chain, stored.tx_id, stored.movement) == (seen.chain, seen.tx_id, seen.movement)


def _another_credit(stored: Payment, seen: ObservedTransfer) -> bool:
    """``seen`` is another credit than the one stored under its id, in another block: the transaction re-mined with
    its logs shifted (another transaction's logs before it), so another of its credits now has this log index. Not
    for a final payment (its block is final: the transaction is in no other) or one moved already (D155 decides)."""
    return (
        stored.status in (PaymentStatus.SEEN, PaymentStatus.ORPHANED)
        or (stored.status is PaymentStatus.FAILED and not stored.final)
    ) and (
        stored.moved_to is None
        and stored.transfer.block_hash != seen.block_hash
        and not _same_credit(stored.transfer, seen)
    )


def _failed_moved(stored: Payment, seen: ObservedTransfer) -> bool:
    """A FAILED payment whose block is not final yet, observed in another block or with another outcome: its
    transaction was re-included elsewhere (a reorg), where it may have succeeded - read again, never final before its
    block is."""
    return stored.status is PaymentStatus.FAILED and not stored.final and stored.transfer.inclusion != seen.inclusion


def _net_remedy(payment: Payment, net: Payment | None) -> str:
    """What the operator can do, with the CLI, about a payment kept ``counted_in`` ``net`` (its amount is ``net``'s):
    refunded, nothing; paying no bill, ``crypto assign`` or ``crypto refunded`` the net one; paying a bill, nothing
    (no command moves a payment between bills) - D91, amended (sp6)."""
    name = payment.counted_in
    if net is None or net.status in (PaymentStatus.FAILED, PaymentStatus.ORPHANED):
        state = "not stored" if net is None else net.status.value
        return f"payment {name} is {state}: nothing to assign or refund for {payment.payment_id} now"
    if net.refund_tx is not None:
        return (
            f"payment {name} was refunded by {net.refund_tx} already, this amount with it: {payment.payment_id}"
            " needs nothing"
        )
    if not net.attributed:
        return (
            f"payment {name} pays no bill: `crypto assign {name} <account> <invoice>` counts this amount with it, or"
            f" `crypto refunded {name} --tx <refund tx>` records it sent back; {payment.payment_id} needs nothing"
        )
    return (
        f"this amount counts for bill {net.invoice_id} already, with payment {name}; no command moves a payment to"
        f" another bill: {payment.payment_id} needs nothing"
    )


def _counted_in(payment: Payment) -> str:
    """Why a payment kept ``counted_in`` another is not claimed or assigned (D91, amended (sp3))."""
    return (
        f"payment {payment.payment_id} is already counted in {payment.counted_in} (its transaction was stored as one"
        " net credit there before the split)"
    )


def _not_refunded(payment: Payment) -> None:
    """A customer's claim of a payment an operator refunded is refused: it was sent back (D341)."""
    if payment.refund_tx is not None:
        raise ClaimRefusedError(f"payment {payment.payment_id} was refunded by {payment.refund_tx}: it pays no bill")


def next_generation(existing: Payment | None) -> int:
    """The generation of a payment recorded afresh over ``existing`` (the row stored at its id, if any)."""
    return existing.generation + 1 if existing is not None else 0


def payment_event_id(kind: str, payment: Payment) -> str:
    """``<kind>:<payment id>``, and ``#<generation>`` after it for a payment recorded afresh at an id used before:
    a new credit at a reused (re-mined) log index, or a payment back after its orphaning, is announced under its own
    id - consumers dedupe by id, so the earlier one's would swallow it - while a rerun of the same recording
    publishes the same id again."""
    base = f"{kind}:{payment.payment_id}"
    return base if payment.generation == 0 else f"{base}#{payment.generation}"


def seen_event_id(invoice_id: str, payments: Sequence[Payment]) -> str:
    """The ``CryptoPaymentSeen.v1`` id of ``payments`` announced together: one payment's own
    (``payment_event_id``, as before D216); several, the bill's and a digest of theirs. Taken for the payments not
    claimed by an event yet (``Settlement._announce_seen``): a rerun publishes a claimed one's event again under its
    own id, and consumers dedupe it."""
    if len(payments) == 1:
        return payment_event_id("crypto-seen", payments[0])
    ids = sorted(payment_event_id("crypto-seen", payment) for payment in payments)
    digest = hashlib.sha256("\n".join(ids).encode()).hexdigest()[:20]
    return f"crypto-seen:{invoice_id}:{digest}"


def _line(payment: Payment) -> BillPayment:
    return BillPayment(
        payment_id=payment.payment_id,
        tx_id=payment.transfer.tx_id,
        asset=payment.transfer.asset,
        usd=payment.usd if payment.usd is not None else ZERO,
        status=payment.status,
        quote_id=payment.quote_id,
        late=payment.late,
        review=payment.review,
        refund_owed=payment.refund_owed,
    )


def with_line(bill: Bill, payment: Payment) -> Bill:
    """The bill with ``payment``'s line added or replaced."""
    others = tuple(line for line in bill.payments if line.payment_id != payment.payment_id)
    return replace(bill, payments=(*others, _line(payment)))


def explorer_url(chain: ChainConfig | None, tx_id: str) -> str | None:
    if chain is None or not chain.explorer_tx_url:
        return None
    return chain.explorer_tx_url.format(tx=tx_id)


# --- the PaymentSink over the store --------------------------------------------------------------------------------


class Settlement:
    """``PaymentSink`` and ``ReferenceSource`` for the watchers; the fast path and the operator's assignment too."""

    def __init__(
        self,
        store: SettlementStore,
        publisher: EventPublisher,
        chains: Mapping[str, ChainConfig],
        rates: Rates | None = None,
        policy: SettlementPolicy | None = None,
        clock: Callable[[], datetime] = utc_now,
        attempts: int = 5,
    ) -> None:
        self._store = store
        self._publisher = publisher
        self._chains = chains
        self._rates = rates
        self._policy = policy or SettlementPolicy()
        self._clock = clock
        self._attempts = attempts
        # attributed payments to announce when the batch they were seen in ends (``seen_together``), by payment id
        self._together: dict[str, Payment] | None = None
        # unattributed credits kept without an alert (below ``unattributed_alert_min_usd``) since last taken
        self._unalerted = 0
        # the current rate per asset the alert floor values those credits at (None: refused), read once per run
        self._alert_rates: dict[Asset, Decimal | None] = {}

    def take_unalerted(self) -> int:
        """How many UNATTRIBUTED credits were kept without an operator alert (worth less than the policy's
        ``unattributed_alert_min_usd``) since the last call, and start again from 0: the handlers count them as the
        ``CryptoUnattributedUnalerted`` metric at the end of each run or request (D364). It ends the run for the
        floor's rates too: the next run reads each asset's current rate again (D364 amended)."""
        taken, self._unalerted = self._unalerted, 0
        self._alert_rates.clear()
        return taken

    # ReferenceSource
    def active_references(self, chain: str) -> Sequence[str]:
        return self._store.watched_references(chain, self._clock())

    def recent_references(self, chain: str) -> Sequence[str]:
        now = self._clock()
        return self._store.watched_references(chain, now, expired_after=now - self._policy.reference_margin)

    # PaymentSink
    def pending(self, chain: str) -> Sequence[PendingPayment]:
        return [
            PendingPayment.of(
                p.payment_id, p.transfer, failed=p.status is PaymentStatus.FAILED, invoice_id=p.invoice_id
            )
            for p in self._store.pending_payments(chain)
        ]

    def record_seen(self, transfer: ObservedTransfer, counted_in: str | None = None) -> None:
        """The watchers' report: never refused. A credit settlement cannot attribute (its bill gone, no quote) is
        kept UNATTRIBUTED for an operator, so that a watcher's run never stops on one payment. ``counted_in``: as
        ``record``'s."""
        try:
            self.record(transfer, counted_in=counted_in)
        except SettlementError:
            self._retried(transfer.payment_id, lambda: self._keep_unattributed(transfer, counted_in))

    def record_batch(self, transfers: Sequence[ObservedTransfer]) -> None:
        """The watchers' report of the credits one batch saw (an EVM scan batch, a Solana run): each recorded as by
        ``record_seen`` (a new sibling of a net credit stored before the split: ``counted_in``, see ``nets``); the
        customer is told once per bill (``seen_together``)."""
        counted = self.nets(transfers)
        with self.seen_together():
            for transfer in transfers:
                self.record_seen(transfer, counted.get(transfer.payment_id))

    def nets(self, transfers: Sequence[ObservedTransfer]) -> dict[str, str]:
        """The credits among ``transfers`` whose amount a stored payment counts already, by payment id -> that
        payment's id. A Solana transaction is a credit per identifiable transfer (D91, amended (sp)); one stored
        before that is one net credit (the merchant's whole delta, at its first transfer's index). Read again split
        (a run's batch written but not its cursor, retried after the deploy; an old fast-path claim the watcher
        lists), the stored credit of an asset in the same block with another amount than its own split credit is
        that net credit: it stays as it is (a same-block report changes nothing), and each of the transaction's
        credits of that asset not stored yet is its amount's part - recorded ``counted_in`` it (persisted: every
        later path reads it). Deterministic from the store and the transaction; EVM: a log's amount never changes,
        nothing. Reads one payment per Solana credit of a transaction with two or more credits of its asset (a net
        credit is some of them added up: a credit alone in its transaction and asset, the common case, reads
        nothing)."""
        by_tx: dict[tuple[str, str, str], list[ObservedTransfer]] = {}
        for transfer in transfers:
            chain = self._chains.get(transfer.chain)
            if chain is None or chain.kind != "solana" or not transfer.succeeded:
                continue
            by_tx.setdefault((transfer.chain, transfer.tx_id, transfer.asset), []).append(transfer)
        counted: dict[str, str] = {}
        for split in by_tx.values():
            if len(split) < 2:
                continue
            group = [(transfer, self._store.payment(transfer.payment_id)) for transfer in split]
            net = next(
                (
                    stored
                    for transfer, stored in group
                    if stored is not None
                    and stored.status in COUNTED
                    and stored.counted_in is None
                    and stored.transfer.block_hash == transfer.block_hash
                    and stored.transfer.asset == transfer.asset
                    and stored.transfer.atomic_amount != transfer.atomic_amount
                ),
                None,
            )
            if net is None:
                continue
            for transfer, stored in group:
                if stored is None or stored.status is PaymentStatus.ORPHANED:
                    counted[transfer.payment_id] = net.payment_id
        return counted

    @contextmanager
    def seen_together(self) -> Iterator[None]:
        """Inside it, the ``CryptoPaymentSeen.v1`` of attributed payments wait; when it ends each bill's are published
        as one event carrying all its transfers (D216), then marked. Settlement itself is unchanged: every
        payment is stored (and its bill moved) as it is recorded. Ended by an error, what was stored is announced
        still (a rerun would find it announced). Nested, the outermost one publishes."""
        if self._together is not None:
            yield
            return
        self._together = {}
        try:
            yield
        finally:
            waiting, self._together = self._together, None
            by_bill: dict[str, list[Payment]] = {}
            for payment in waiting.values():
                by_bill.setdefault(payment.invoice_id or "", []).append(payment)
            for payments in by_bill.values():
                self._announce_seen(payments)

    def _keep_unattributed(self, transfer: ObservedTransfer, counted_in: str | None = None) -> Payment:
        existing = self._store.payment(transfer.payment_id)
        if (
            existing is not None
            and existing.status is not PaymentStatus.ORPHANED
            and not _failed_moved(existing, transfer)
        ):
            return existing
        status = PaymentStatus.SEEN if transfer.succeeded else PaymentStatus.FAILED
        kept = Payment(
            transfer,
            status,
            self._clock(),
            announced=not transfer.succeeded,
            generation=next_generation(existing),
            counted_in=counted_in,
        )
        self._store.save(
            SettlementChange(
                kept,
                payment_expected=existing.status if existing else None,
                refund_read=existing.refund_tx if existing else None,
            )
        )
        self._announce(kept)
        return kept

    def finalized(self, payment_id: str, block_hash: str | None = None) -> None:
        self._move(payment_id, PaymentStatus.FINALIZED, block_hash)

    def orphaned(self, payment_id: str, block_hash: str | None = None, *, failed: bool = False) -> None:
        """Its block reorged away (``failed``: its transaction failed, a Solana status): the bill stops counting it -
        left OPEN asking more, it owes the customer ``CryptoBillReopened.v1`` (D434 amended (hcw)). A failure's is
        told at once (``lost`` "failed"); a drop's only by ``announce_due`` once the height it was dropped from is
        final on its chain (D449) and the payment still does not count (``lost`` "dropped", on Solana "expired"):
        mined again meanwhile, it is cleared silently."""
        self._move(payment_id, PaymentStatus.ORPHANED, block_hash, tell="failed" if failed else "dropped")

    # the fast path and the watchers' common entry
    def record(
        self, transfer: ObservedTransfer, claimed_for: str | None = None, counted_in: str | None = None
    ) -> Payment:
        """Record a credit (idempotent per payment id) and match it; ``claimed_for``: the bill a customer submitted
        the transaction for (the fast path). A payment re-seen after an orphaning counts again. ``counted_in``: the
        stored payment that counts this new credit's amount already (``nets``): it is kept UNATTRIBUTED with that
        mark, never matched; one stored with it is never claimed (``AlreadyClaimedError``)."""

        def attempt() -> Payment:
            existing = self._store.payment(transfer.payment_id)
            if existing is not None and _another_credit(existing, transfer):
                # its id taken by another credit of the transaction (re-mined with its logs shifted): the stored
                # credit is not at this index any more - orphaned first (its bill stops counting it), then this
                # credit is recorded afresh under the id
                if existing.status is not PaymentStatus.ORPHANED:
                    self._move(existing.payment_id, PaymentStatus.ORPHANED, existing.transfer.block_hash)
                    existing = self._store.payment(transfer.payment_id)
                if existing is not None and existing.status is PaymentStatus.ORPHANED:
                    if existing.attributed:
                        self._archive(existing)  # kept, so that at its own new index it keeps its bill
                    payment = self._record_new(transfer, claimed_for, existing)
                    self._announce(payment)
                    return payment
                raise ConflictError(f"payment {transfer.payment_id} changed while its id was taken over")
            if existing is not None and existing.status is not PaymentStatus.ORPHANED:
                if claimed_for is not None and existing.counted_in is not None:
                    raise AlreadyClaimedError(_counted_in(existing))
                if claimed_for is not None and existing.invoice_id not in (None, claimed_for):
                    raise AlreadyClaimedError(f"payment {transfer.payment_id} already pays another bill")
                if existing.status is PaymentStatus.SEEN and existing.transfer.inclusion != transfer.inclusion:
                    existing = self._rebased(existing, transfer)
                elif _failed_moved(existing, transfer):
                    if not transfer.succeeded:
                        return self._rebased(existing, transfer)  # failed again, in another block
                    payment = self._record_new(transfer, claimed_for, existing)  # it succeeded: read again
                    self._announce(payment)
                    return payment
                if claimed_for is not None and not existing.attributed:
                    _not_refunded(existing)
                    bill = self._store.bill(claimed_for)
                    if bill is None:
                        raise BillNotFoundError(f"no crypto bill {claimed_for!r}")
                    self._check_claim(existing.transfer, bill, self._store.quotes(bill.invoice_id))
                    return self._attribute(existing, bill, "fast_path")
                self._announce(existing)
                return existing
            if counted_in is not None:
                return self._keep_beside_net(transfer, counted_in)
            payment = self._record_new(transfer, claimed_for, existing)
            self._announce(payment)
            return payment

        return self._retried(transfer.payment_id, attempt)

    def _keep_beside_net(self, transfer: ObservedTransfer, counted_in: str) -> Payment:
        """A new credit of a Solana transaction stored as one net credit before the split (``nets``): its amount is
        in ``counted_in``'s already - kept UNATTRIBUTED with that mark (never matched, claimed or assigned, whatever
        its reference or the bill it is submitted for), the operator alerted with it (or counted below the alert
        floor) and a warning logged."""
        _LOG.warning(
            "crypto.net_before_split: %s kept unattributed - its amount is counted in %s (one net credit of %s)",
            transfer.payment_id,
            counted_in,
            transfer.tx_id,
        )
        return self._keep_unattributed(transfer, counted_in)

    def _archive(self, displaced: Payment) -> None:
        """Keep an attributed payment whose id another credit of its transaction takes over (D168) under its own id,
        ``<id>~<generation>`` (ORPHANED, with its transaction link), and rename its bill line to it, in one
        transaction conditional on the bill's version: reported later at its own new index, it is found as the
        credit it is (``_moved_from``) and keeps its bill, and the line the new credit gets at the id is not its
        line. Idempotent: an archive written by an earlier attempt is left as it is."""
        archived = replace(displaced, archived=True)
        if self._store.payment(archived.payment_id) is not None:
            return
        bill = self._store.bill(displaced.invoice_id) if displaced.invoice_id else None
        if bill is None:
            self._store.save(SettlementChange(archived, payment_expected=None))
            return
        renamed = replace(
            bill,
            payments=tuple(
                _line(archived) if line.payment_id == displaced.payment_id else line for line in bill.payments
            ),
            settled_payment_ids=tuple(
                archived.payment_id if payment_id == displaced.payment_id else payment_id
                for payment_id in bill.settled_payment_ids
            ),
            version=bill.version + 1,
        )
        self._store.save(SettlementChange(archived, payment_expected=None, bill=renamed))

    def _rebased(self, existing: Payment, transfer: ObservedTransfer) -> Payment:
        """A SEEN payment observed in another block (its block reorged away, its transaction re-included), or a FAILED
        one not final failed again in another block: the block it is in now is stored, so that finality checks that
        block (D87); one conditional write on its status.
        Reverted in its new block: FAILED, and its bill stops counting it - left OPEN asking more, the customer is
        told once (``lost`` "failed", D434 amended (hcw)). Its valuation stays as first seen. Named
        stuck at its old block (``stalled``), its line is rebuilt too: it is on its way again and holds its bill
        until named stuck in the new block (D419, amended (cw2)) - else an OPEN bill asks for money on its way."""
        moved_transfer = replace(
            existing.transfer,
            block_number=transfer.block_number,
            block_hash=transfer.block_hash,
            block_time=transfer.block_time or existing.transfer.block_time,
            succeeded=transfer.succeeded,
        )
        status = PaymentStatus.SEEN if transfer.succeeded else PaymentStatus.FAILED
        moved = replace(existing, transfer=moved_transfer, status=status)
        bill = self._store.bill(existing.invoice_id) if existing.invoice_id else None
        stalled = bill is not None and any(
            line.payment_id == existing.payment_id and line.stalled for line in bill.payments
        )
        if bill is None or (status is existing.status and not stalled):
            self._store.save(SettlementChange(moved, payment_expected=existing.status))
            return moved
        new_bill, changed = self._bill_after(bill, moved, self._store.quotes(bill.invoice_id))
        owed = reopen_entry(moved, transfer.block_hash, "failed", self._clock())
        new_bill = owing_reopen(bill, new_bill, owed)
        self._store.save(SettlementChange(moved, payment_expected=existing.status, bill=new_bill, quotes=changed))
        self._announce_bill(new_bill)
        return moved

    def check_claim(self, transfer: ObservedTransfer, invoice_id: str) -> None:
        """The fast path's check of one credit of a submitted transaction, before any of them is recorded (a refusal
        of one then leaves the others unwritten too): AlreadyClaimedError, BillNotFoundError or ClaimRefusedError as
        ``record(transfer, claimed_for=invoice_id)`` would raise them now, and NoQuoteError when the bill has no quote
        the credit can pay (a 409 after nothing was written). ``record`` checks again on its own reads."""
        if not transfer.succeeded:
            return  # recorded FAILED, for no bill
        existing = self._store.payment(transfer.payment_id)
        if existing is not None and _another_credit(existing, transfer):
            existing = None  # its id held another credit of the transaction: record takes it as a new one
        if (
            existing is not None
            and existing.status is PaymentStatus.ORPHANED
            and existing.attributed
            and existing.moved_to is None
        ):
            if existing.invoice_id != invoice_id:  # it keeps its bill, which is not the claimed one (D288)
                raise AlreadyClaimedError(f"payment {transfer.payment_id} already pays another bill")
            return  # re-seen after an orphaning: it keeps its bill
        if existing is None or existing.status is PaymentStatus.ORPHANED:
            moved_from = self._moved_from(transfer)
            if moved_from is not None:  # re-mined under another id: it keeps its bill
                if moved_from.invoice_id != invoice_id:
                    raise AlreadyClaimedError(f"payment {transfer.payment_id} already pays another bill")
                return
            refunded = self._refunded_sibling(transfer)
            if refunded is not None:  # re-mined under another id: still sent back
                _not_refunded(refunded)
        if existing is not None and existing.status is not PaymentStatus.ORPHANED:
            if existing.counted_in is not None:
                raise AlreadyClaimedError(_counted_in(existing))
            if existing.invoice_id not in (None, invoice_id):
                raise AlreadyClaimedError(f"payment {transfer.payment_id} already pays another bill")
            if existing.attributed:
                return  # this bill's already
        if existing is not None and _same_credit(existing.transfer, transfer):
            _not_refunded(existing)
        bill = self._store.bill(invoice_id)
        if bill is None:
            raise BillNotFoundError(f"no crypto bill {invoice_id!r}")
        quotes = self._store.quotes(invoice_id)
        self._check_claim(transfer, bill, quotes)
        # when record values it: a stored unattributed payment by its own detection, a new one by its block time
        detected = (
            existing.transfer.block_time or existing.seen_at
            if existing is not None and existing.status is not PaymentStatus.ORPHANED
            else transfer.block_time or self._clock()
        )
        if match_quote(transfer, quotes, detected) is None:
            raise NoQuoteError(f"bill {invoice_id} has no open {transfer.asset} quote on {transfer.chain}")

    def assign(self, payment_id: str, account_id: str, invoice_id: str) -> Payment:
        """The operator's assignment of an UNATTRIBUTED payment to an account's bill (valued at the newest quote of
        the bill for the payment's chain and asset, with the late policy as for any payment)."""

        def attempt() -> Payment:
            payment = self._stored(payment_id)
            if payment.attributed:
                raise NotAssignableError(f"payment {payment_id} already pays bill {payment.invoice_id}")
            if payment.status in (PaymentStatus.FAILED, PaymentStatus.ORPHANED):
                raise NotAssignableError(f"payment {payment_id} is {payment.status.value}: it pays nothing")
            if payment.refund_tx is not None:
                raise NotAssignableError(f"payment {payment_id} was refunded by {payment.refund_tx}: it pays nothing")
            if payment.counted_in is not None:
                # what the operator can do with the CLI: act on the net payment, or nothing (D91, amended (sp6))
                net = self._store.payment(payment.counted_in)
                raise NotAssignableError(
                    f"{_counted_in(payment)}: not assigned (it stays unattributed) - {_net_remedy(payment, net)}"
                )
            bill = self._store.bill(invoice_id)
            if bill is None:
                raise BillNotFoundError(f"no crypto bill {invoice_id!r}")
            if bill.account_id != account_id:
                raise NotAssignableError(f"bill {invoice_id} belongs to account {bill.account_id}, not {account_id}")
            return self._attribute(payment, bill, "operator")

        return self._retried(payment_id, attempt)

    def refunded(self, payment_id: str, refund_tx: str) -> Payment:
        """The operator's record that an UNATTRIBUTED payment (a stray one, say) was sent back on chain by
        ``refund_tx``: it leaves the unattributed list and is never assigned or claimed afterwards (it pays nothing;
        finalized or orphaned as before). The same refund recorded again returns it; a payment attributed, failed,
        orphaned, refunded by another transaction or ``counted_in`` another (its amount counted there already) is
        refused (``NotRefundableError``). One conditional update of the
        refund alone (``record_refund``): the payment must still be unattributed, unrefunded, in the status read; every
        other write of the payment is conditioned on the refund it read, so none drops it. Re-mined at another index,
        the credit keeps the refund (``_refunded_sibling``)."""
        refund = refund_tx.strip()
        if not refund:
            raise ValueError("the refund's transaction is required")

        def attempt() -> Payment:
            payment = self._stored(payment_id)
            if payment.refund_tx is not None:
                if payment.refund_tx == refund:
                    return payment
                raise NotRefundableError(f"payment {payment_id} was refunded by {payment.refund_tx} already")
            if payment.attributed:
                raise NotRefundableError(f"payment {payment_id} pays bill {payment.invoice_id}: not unattributed")
            if payment.status in (PaymentStatus.FAILED, PaymentStatus.ORPHANED):
                raise NotRefundableError(f"payment {payment_id} is {payment.status.value}: it paid nothing")
            if payment.counted_in is not None:
                # its amount is in that payment's already: sent back too, the bill would keep less than it counts;
                # that payment stored and paying no bill, it is the one to assign or refund (D91, amended (sp5))
                net = self._store.payment(payment.counted_in)
                if net is not None and net.refund_tx is not None:  # sent back with it already (D91, amended (sp6))
                    raise NotRefundableError(f"{_counted_in(payment)}: not refunded - {_net_remedy(payment, net)}")
                where = (
                    f"assign or refund payment {payment.counted_in} (it pays no bill)"
                    if net is not None and not net.attributed
                    else f"act on the bill of {payment.counted_in}"
                )
                raise NotRefundableError(f"{_counted_in(payment)}: not refunded - to send this money back, {where}")
            # the refund alone, conditioned on the status read, no bill and no refund: a writer holding a copy read
            # before it (an assign, a claim, finality) is refused and re-reads; it reverts none of theirs either
            done = replace(payment, refund_tx=refund)
            self._store.record_refund(done, payment.status)
            return done

        return self._retried(payment_id, attempt)

    def announce_expiring(self, chain: str, window: timedelta) -> int:
        """``CryptoQuoteExpiring.v1`` once per quote on ``chain`` that is still ACTIVE (nothing seen for it) and
        expires within ``window`` from now; event id ``quote-expiring:<quote id>``. Each quote is taken off the list
        after publishing (a crash in between re-publishes the same id; consumers dedupe), and so is one no longer
        to announce: paid or detected meanwhile, or past its expiry unannounced (a watcher that was down). Returns
        how many were published. Run by each watcher run for its chain, after the scan."""
        now = self._clock()
        published = 0
        for quote in self._store.expiring_quotes(chain, now + window):
            if quote.status is QuoteStatus.ACTIVE and quote.expires_at > now:
                bill = self._store.bill(quote.invoice_id)  # its number: the dashboard opens this bill by it
                expiring = CryptoQuoteExpiringV1(
                    event_id=f"quote-expiring:{quote.quote_id}",
                    account_id=quote.account_id,
                    invoice_id=quote.invoice_id,
                    quote_id=quote.quote_id,
                    chain=quote.chain,
                    asset=quote.asset,
                    amount=decimal_str(asset_amount(quote.atomic_amount, quote.asset)),
                    payment_uri=quote.payment_uri,
                    expires_at=quote.expires_at.isoformat(),
                    occurred_at=now.isoformat(),
                    number=bill.number if bill is not None and bill.number else None,
                )
                self._publisher.publish(expiring.DETAIL_TYPE, expiring.model_dump(mode="json"))
                published += 1
            self._store.retire_expiring(quote)
        return published

    def announce_due(self, final: Mapping[str, int] | None = None) -> int:
        """Publish what a crash between a bill's save and its event left out: ``CryptoBillSettled.v1`` of a PAID bill
        never announced, ``CryptoCreditAdded.v1`` of credit gained since the last announcement, each
        ``CryptoBillReopened.v1`` owed (same event ids as the first attempt; consumers apply each once) - a dropped
        payment's once ``final`` has its chain at or past the height it was dropped from: ``final`` is the height
        (slot) through which the run's watcher read its chain final (``RunReport.final_through``, chain key ->
        height); a chain not in it (another chain's run, or its height unread this run) leaves its drops owed (D449).
        Run by every watcher run. Returns how many bills it announced."""
        bills = self._store.bills_to_announce()
        for bill in bills:
            self._announce_bill(bill, final)
        return len(bills)

    def resolve_review(self, payment_id: str, accept: bool) -> Payment:
        """The operator's decision on a payment in manual review (a late ETH/SOL payment whose price moved beyond the
        review band). ``accept``: it counts at the rate the late-payment policy gave it (min(locked, rate at its
        block time); the locked rate when no such rate was available) and the bill moves as for any payment
        (PROCESSING, PAID once finalized, ``CryptoBillSettled.v1`` once). Refused: it never counts and its asset
        amount is recorded as a refund owed to the sender. One conditional transaction on the bill's version, as
        every settlement step."""

        def attempt() -> Payment:
            payment = self._stored(payment_id)
            if not payment.review or payment.invoice_id is None:
                raise NotUnderReviewError(f"payment {payment_id} is not in manual review")
            bill = self._store.bill(payment.invoice_id)
            if bill is None:
                raise BillNotFoundError(f"no crypto bill {payment.invoice_id!r}")
            resolved = replace(payment, review=False, refund_owed=not accept)
            new_bill, changed = self._bill_after(bill, resolved, self._store.quotes(bill.invoice_id))
            self._store.save(SettlementChange(resolved, payment_expected=payment.status, bill=new_bill, quotes=changed))
            self._announce_bill(new_bill)
            return resolved

        return self._retried(payment_id, attempt)

    def _attribute(self, payment: Payment, bill: Bill, how: MatchedBy) -> Payment:
        quotes = list(self._store.quotes(bill.invoice_id))
        detected = payment.transfer.block_time or payment.seen_at
        quote = match_quote(payment.transfer, quotes, detected)
        if quote is None and how == "operator":  # the operator decides past monitoring: the newest such quote
            quote = match_quote(payment.transfer, [replace(q, monitor_until=detected) for q in quotes], detected)
            quote = next((q for q in quotes if quote is not None and q.quote_id == quote.quote_id), None)
        if quote is None:
            raise NoQuoteError(
                f"bill {bill.invoice_id} has no {payment.transfer.asset} quote on {payment.transfer.chain}"
            )
        valued = self._valued(payment, bill, quote, how, detected)
        new_bill, changed = self._bill_after(bill, valued, quotes)
        self._store.save(
            SettlementChange(
                valued, payment_expected=payment.status, bill=new_bill, quotes=changed, was_unattributed=True
            )
        )
        self._announce(valued)
        self._announce_bill(new_bill)
        return valued

    def _record_new(self, transfer: ObservedTransfer, claimed_for: str | None, existing: Payment | None) -> Payment:
        now = self._clock()
        expected = existing.status if existing is not None else None
        dropped = existing.refund_tx if existing is not None else None  # another credit at its id: not its refund
        # the same credit seen again after its orphaning keeps its bill; another credit at its index (the
        # transaction re-mined with its logs shifted) is recorded afresh
        reseen = (
            existing
            if existing is not None
            and existing.attributed
            and existing.moved_to is None
            and _same_credit(existing.transfer, transfer)
            else None
        )
        if reseen is not None and claimed_for is not None and reseen.invoice_id != claimed_for:
            raise AlreadyClaimedError(f"payment {transfer.payment_id} already pays another bill")  # D288
        if not transfer.succeeded:
            if reseen is not None:
                return self._reseen(reseen, transfer)  # orphaned, then reverted in its new block: keeps its bill
            failed = Payment(transfer, PaymentStatus.FAILED, now, announced=True, generation=next_generation(existing))
            self._store.save(SettlementChange(failed, payment_expected=expected, refund_read=dropped))
            return failed
        if reseen is not None:
            return self._reseen(reseen, transfer)
        moved_from = self._moved_from(transfer)
        if moved_from is not None:
            if claimed_for is not None and moved_from.invoice_id != claimed_for:
                raise AlreadyClaimedError(f"payment {transfer.payment_id} already pays another bill")
            return self._carried(moved_from, transfer, existing)
        if existing is not None and existing.moved_to is not None and not self._beside_moved(existing, transfer):
            return existing  # its bill moved to the payment it was re-mined as: counted there, never twice
        refunded = (
            existing
            if existing is not None and existing.refund_tx is not None and _same_credit(existing.transfer, transfer)
            else self._refunded_sibling(transfer)
        )
        if refunded is not None:
            if claimed_for is not None:
                _not_refunded(refunded)
            # seen again after its orphaning, at its index or re-mined at another: still refunded, off the list,
            # not told again
            again = Payment(
                transfer,
                PaymentStatus.SEEN,
                now,
                announced=True,
                refund_tx=refunded.refund_tx,
                generation=next_generation(existing),
            )
            self._store.save(SettlementChange(again, payment_expected=expected, refund_read=dropped))
            return again
        detected = transfer.block_time or now
        found = self._match(transfer, claimed_for, detected)
        if found is None:
            unattributed = Payment(transfer, PaymentStatus.SEEN, now, generation=next_generation(existing))
            self._store.save(SettlementChange(unattributed, payment_expected=expected, refund_read=dropped))
            if transfer.stray:
                self._no_reminder(transfer)
            return unattributed
        bill, quote, quotes, how = found
        seen = Payment(transfer, PaymentStatus.SEEN, now, generation=next_generation(existing))
        valued = self._valued(seen, bill, quote, how, detected)
        new_bill, changed = self._bill_after(bill, valued, quotes)
        self._store.save(
            SettlementChange(valued, payment_expected=expected, bill=new_bill, quotes=changed, refund_read=dropped)
        )
        return valued

    def _no_reminder(self, stray: ObservedTransfer) -> None:
        """A stray credit carrying a quote's reference and covering its amount: that quote's "expiring, pay ..."
        reminder is not sent (the customer paid, into the wrong account: a reminder would have them pay twice;
        D341, amended). One short of it (dust with the reference, a part) leaves the reminder: the quote
        is still to pay (D341, amended in review 2)."""
        for reference in stray.references:
            quote = self._store.quote_by_reference(reference)
            if (
                quote is not None
                and quote.chain == stray.chain
                and quote.asset == stray.asset
                and self._stray_paid(stray, reference) >= quote.atomic_amount
            ):
                self._store.retire_expiring(quote)

    def _stray_paid(self, stray: ObservedTransfer, reference: str) -> int:
        """What ``stray`` and the stray credits of its transaction at lower indexes (recorded before it: a
        transaction's credits are reported in index order) carrying ``reference`` moved, in its asset: one payment
        split into several transfers (D91, amended (sp2)) covers the quote as it did as one net credit. Read by id
        (unattributed payments have no transaction link); a stray is rare and a transaction's instructions few."""
        paid = stray.atomic_amount
        for index in range(max(stray.index, 0)):
            sibling = self._store.payment(replace(stray, index=index).payment_id)
            if (
                sibling is not None
                and sibling.transfer.stray
                and sibling.transfer.asset == stray.asset
                and sibling.status is not PaymentStatus.ORPHANED
                and reference in sibling.transfer.references
            ):
                paid += sibling.transfer.atomic_amount
        return paid

    def _reseen(self, existing: Payment, transfer: ObservedTransfer) -> Payment:
        """An attributed payment seen again after its orphaning (its transaction re-included in another block; or
        recorded FAILED in a block that was not final and succeeding in another): the
        same payment, so it keeps its bill, quote and valuation - whatever the quote's monitoring window says now (an
        operator may have assigned it past monitoring) - and counts again from its new block. Reverted in its new
        block: FAILED, still on its bill (counting nothing), so that succeeding in yet another block counts (D156)."""
        bill = self._store.bill(existing.invoice_id) if existing.invoice_id else None
        if bill is None:
            raise BillNotFoundError(f"no crypto bill {existing.invoice_id!r}")
        status = PaymentStatus.SEEN if transfer.succeeded else PaymentStatus.FAILED
        again = replace(existing, transfer=transfer, status=status)
        new_bill, changed = self._bill_after(bill, again, self._store.quotes(bill.invoice_id))
        self._store.save(SettlementChange(again, payment_expected=existing.status, bill=new_bill, quotes=changed))
        self._announce_bill(new_bill)
        return again

    def _beside_moved(self, existing: Payment, transfer: ObservedTransfer) -> bool:
        """``transfer`` is in the block of the payment ``existing`` moved to (D155), at another index: a transaction
        is in one block, so it is another credit of the transaction there (two identical credits whose log indexes
        shifted when it was re-mined), not ``existing``'s credit seen again - matched as a new payment."""
        moved = self._store.payment(existing.moved_to) if existing.moved_to else None
        return moved is not None and moved.transfer.block_hash == transfer.block_hash

    def _moved_from(self, transfer: ObservedTransfer) -> Payment | None:
        """The attributed payment ``transfer`` is the same credit as, recorded under another id: the same
        transaction's credit with the same asset, sender, recipient and amount at another index (an EVM log index
        that changed when the transaction was re-mined in another block), ORPHANED, or SEEN in another block than
        ``transfer``'s (a transaction is in one canonical block), and not moved already. The lowest index first."""
        candidates = [
            payment
            for payment in self._store.transaction_payments(transfer.chain, transfer.tx_id)
            if payment.payment_id != transfer.payment_id
            and payment.attributed
            and payment.moved_to is None
            and _same_credit(payment.transfer, transfer)
            and (
                payment.status is PaymentStatus.ORPHANED
                or (payment.status is PaymentStatus.SEEN and payment.transfer.block_hash != transfer.block_hash)
            )
        ]
        return min(candidates, key=lambda payment: payment.transfer.index, default=None)

    def _refunded_sibling(self, transfer: ObservedTransfer) -> Payment | None:
        """The refunded payment ``transfer`` is the same credit as, recorded under another id (its transaction
        re-mined with the log at another index, D168): unattributed, refunded by an operator, ORPHANED or SEEN in
        another block - as ``_moved_from`` finds an attributed one. Its refund goes with the credit: it pays
        nothing at its new id either (D341, amended in review 2)."""
        return next(
            (
                payment
                for payment in self._store.transaction_payments(transfer.chain, transfer.tx_id)
                if payment.payment_id != transfer.payment_id
                and not payment.attributed
                and payment.refund_tx is not None
                and _same_credit(payment.transfer, transfer)
                and (
                    payment.status is PaymentStatus.ORPHANED
                    or (payment.status is PaymentStatus.SEEN and payment.transfer.block_hash != transfer.block_hash)
                )
            ),
            None,
        )

    def _carried(self, moved_from: Payment, transfer: ObservedTransfer, existing: Payment | None) -> Payment:
        """``transfer`` takes over the bill, quote, matching and valuation of ``moved_from`` (its same credit under
        another id): one transaction writes it SEEN, ``moved_from`` ORPHANED and moved to it (only if still in the
        status read and not moved already), and the bill counting it once (D155)."""
        bill = self._store.bill(moved_from.invoice_id) if moved_from.invoice_id else None
        if bill is None:
            raise BillNotFoundError(f"no crypto bill {moved_from.invoice_id!r}")
        kept = replace(transfer, block_time=transfer.block_time or moved_from.transfer.block_time)
        carried = replace(
            moved_from,
            transfer=kept,
            status=PaymentStatus.SEEN,
            moved_to=None,
            generation=next_generation(existing),
            archived=False,
        )
        left = replace(moved_from, status=PaymentStatus.ORPHANED, moved_to=carried.payment_id)
        new_bill, changed = self._bill_after(
            with_line(bill, left), carried, self._store.quotes(bill.invoice_id), moved_from=left.payment_id
        )
        self._store.save(
            SettlementChange(
                carried,
                payment_expected=existing.status if existing is not None else None,
                bill=new_bill,
                quotes=changed,
                moved=left,
                moved_expected=moved_from.status,
                refund_read=existing.refund_tx if existing is not None else None,
            )
        )
        self._announce_bill(new_bill)
        return carried

    def _match(
        self, transfer: ObservedTransfer, claimed_for: str | None, detected: datetime
    ) -> tuple[Bill, Quote, list[Quote], MatchedBy] | None:
        if claimed_for is not None:
            bill = self._store.bill(claimed_for)
            if bill is None:
                raise BillNotFoundError(f"no crypto bill {claimed_for!r}")
            quotes = list(self._store.quotes(bill.invoice_id))
            self._check_claim(transfer, bill, quotes)
            quote = match_quote(transfer, quotes, detected)
            if quote is None:
                raise NoQuoteError(f"bill {claimed_for} has no open {transfer.asset} quote on {transfer.chain}")
            return bill, quote, quotes, "fast_path"
        if transfer.stray:
            return None  # into an account that is not our payment address: an operator's (D341)
        for reference in transfer.references:
            quote = self._store.quote_by_reference(reference)
            if quote is None:
                continue
            if match_quote(transfer, [quote], detected) is None:
                continue
            bill = self._store.bill(quote.invoice_id)
            if bill is not None:
                return bill, quote, list(self._store.quotes(bill.invoice_id)), "reference"
        chain = self._chains.get(transfer.chain)
        owner = self._store.wallet_owner(chain.kind if chain else "evm", transfer.sender, transfer.chain)
        if owner is None:
            return None
        best: tuple[Bill, Quote, list[Quote]] | None = None
        for bill in sorted(self._store.unpaid_bills(owner), key=lambda b: (b.issued_at, b.invoice_id)):
            quotes = list(self._store.quotes(bill.invoice_id))
            quote = match_quote(transfer, quotes, detected)
            if quote is None:
                continue
            if quote.atomic_amount == transfer.atomic_amount:
                return bill, quote, quotes, "wallet"
            if best is None:
                best = (bill, quote, quotes)
        return (*best, "wallet") if best is not None else None

    def _check_claim(self, transfer: ObservedTransfer, bill: Bill, quotes: Sequence[Quote]) -> None:
        """A customer's claim counts only when nothing ties the transfer to someone else and something ties it to the
        bill (D112). Refused first: a reference naming another bill's quote, a sender linked to another account - the
        transfer is theirs, and the watcher's matching gives it to them. Then accepted: a reference naming one of the
        bill's quotes, a sender linked to the bill's account, or - while the bill is OPEN (nothing covers it yet) - the
        amount of one of its quotes within the settlement tolerance (a payment from an exchange, its fee taken).
        Otherwise anyone could claim another customer's public transaction, and on a bill already covered any payment
        would become their credit. A stray credit (paid into an account of ours that is not the payment address) is
        refused whatever ties it: an operator decides (D341)."""
        if transfer.stray:
            raise ClaimRefusedError(
                f"transaction {transfer.tx_id} paid into an account of ours that is not our payment address: it "
                f"pays no bill by itself; it is kept for an operator, who can assign it to bill {bill.invoice_id}"
            )
        for reference in transfer.references:
            named = self._store.quote_by_reference(reference)
            if named is not None and named.invoice_id != bill.invoice_id:
                raise ClaimRefusedError(
                    f"transaction {transfer.tx_id} carries the reference of another bill's quote, not of bill "
                    f"{bill.invoice_id}: it pays that bill (the watcher attributes it)"
                )
        chain = self._chains.get(transfer.chain)
        owner = self._store.wallet_owner(chain.kind if chain else "evm", transfer.sender, transfer.chain)
        if owner is not None and owner != bill.account_id:
            raise ClaimRefusedError(
                f"transaction {transfer.tx_id} was sent from a wallet linked to another account, not to bill "
                f"{bill.invoice_id}'s: it pays that account's bills (the watcher attributes it)"
            )
        own = [q for q in quotes if q.chain == transfer.chain and q.asset == transfer.asset]
        if any(q.reference is not None and q.reference in transfer.references for q in own):
            return
        if owner == bill.account_id:
            return
        if not self._open_but_for(bill, transfer.tx_id):
            raise ClaimRefusedError(
                f"transaction {transfer.tx_id} is not tied to bill {bill.invoice_id}, which is "
                f"{bill.status.value.lower()} already: not from a wallet linked to the account and no reference of "
                "its quotes (a quote's amount alone counts only while a bill is open); the watcher will match it if "
                "it is yours, or an operator can assign it"
            )
        for quote in own:  # the quote's amount, give or take its EXACT tolerance (an exchange's fee), D365
            if quote.amount_usd <= 0:
                continue
            # exact, not rounded down to the cent: the window only ties the transfer to the bill, recompute decides
            # what is written off ($1.99 in USDC: 0.00995 -> 9_950 units; rounded down it was 0 units)
            allowed = exact_tolerance(quote.amount_usd, [(quote.asset, quote.amount_usd)], self._policy)
            band = quote.atomic_amount * allowed / Fraction(quote.amount_usd)
            if abs(transfer.atomic_amount - quote.atomic_amount) <= band:
                return
        raise ClaimRefusedError(
            f"transaction {transfer.tx_id} is not tied to bill {bill.invoice_id}: not from a wallet linked to the "
            "account, no reference and not the amount of one of its quotes; the watcher will match it if it is "
            "yours, or an operator can assign it"
        )

    def _open_but_for(self, bill: Bill, tx_id: str) -> bool:
        """The bill is OPEN, or would be without the payments of transaction ``tx_id`` (a transaction's credits are
        claimed one after the other: the first must not shut out the rest of the same transaction)."""
        if bill.status is BillStatus.OPEN:
            return True
        if bill.status is BillStatus.PAID:
            return False
        others = tuple(line for line in bill.payments if line.tx_id != tx_id)
        return recompute(replace(bill, payments=others), self._policy, self._clock()).status is BillStatus.OPEN

    def _valued(self, payment: Payment, bill: Bill, quote: Quote, how: MatchedBy, detected: datetime) -> Payment:
        valuation = value_payment(payment.transfer, quote, detected, self._policy, self._rate_then(payment.transfer))
        return replace(
            payment,
            invoice_id=bill.invoice_id,
            account_id=bill.account_id,
            quote_id=quote.quote_id,
            matched_by=how,
            rate=valuation.rate,
            usd=valuation.usd,
            late=valuation.late,
            review=valuation.review,
            announced=False,
        )

    def _rate_then(self, transfer: ObservedTransfer) -> Callable[[], Decimal]:
        """The asset's rate when the transfer was included (D218): at its block time, read at its block where
        the feed is on its chain. A transfer with no block time (a Solana slot with none, D397) has no such rate:
        refused, so a late ETH/SOL payment goes to review - our clock is not when it was sent."""

        def read() -> Decimal:
            if self._rates is None:
                raise RateRefusedError("no rate sources configured")
            if transfer.block_time is None:
                raise RateRefusedError(f"{transfer.tx_id} has no block time: no rate when it was sent")
            when = transfer.block_time
            return self._rates.at(transfer.asset, when, ChainBlock(transfer.chain, transfer.block_number)).price

        return read

    def _bill_after(
        self, bill: Bill, payment: Payment, quotes: Sequence[Quote], *, moved_from: str | None = None
    ) -> tuple[Bill, tuple[Quote, ...]]:
        """``bill`` with ``payment``'s line, and its quotes whose status that line changes. A new line beyond
        ``max_bill_lines`` is refused (``UnstorableError``), but for a payment carrying the line of ``moved_from``
        (the same credit under its new id), allowed ``move_margin`` more: a bill never loses a credit it counted.

        Only a status the payment changes is written (its quote's, and its previous quote's: at most two quotes, so
        the step's transaction stays far below DynamoDB's 100 items whatever the bill's quotes number): a change time
        alone makes (ACTIVE -> EXPIRED, DETECTED -> INVALID) is left to the readers, which compute the status
        (``quote_status``) rather than trust the stored one (D285)."""
        limit = self._policy.max_bill_lines
        if moved_from is not None and any(line.payment_id == moved_from for line in bill.payments):
            limit += self._policy.move_margin
        if len(bill.payments) >= limit and all(line.payment_id != payment.payment_id for line in bill.payments):
            raise UnstorableError(
                f"bill {bill.invoice_id} holds {len(bill.payments)} payment lines, the most it takes: payment "
                f"{payment.payment_id} is left for an operator"
            )
        now = self._clock()
        moved = recompute(with_line(bill, payment), self._policy, now)
        new_bill = replace(moved, version=bill.version + 1)
        changed = []
        for quote in quotes:
            status = quote_status(quote, new_bill.payments, now)
            if status is not quote.status and status is not quote_status(quote, bill.payments, now):
                changed.append(replace(quote, status=status))
        return new_bill, tuple(changed)

    def _move(
        self, payment_id: str, status: PaymentStatus, block_hash: str | None = None, *, tell: Lost | None = None
    ) -> None:
        """FINALIZED / ORPHANED from SEEN (a FAILED payment not final: final / ORPHANED), in one conditional write
        on its status and, given ``block_hash`` (the block the watcher checked), on that still being its recorded
        block: a payment moved to another block meanwhile (a concurrent report of its re-inclusion) is left for the
        next check of its new block, never finalized or orphaned on a block nobody checked (D157). ``tell``: a bill
        the move leaves OPEN asking more owes its customer the reopen notice (``owing_reopen``) - not for a credit
        whose id another credit of its transaction takes over (``record``: the same money, found at its new index)."""

        def attempt() -> None:
            payment = self._store.payment(payment_id)
            if payment is not None and block_hash is not None and payment.transfer.block_hash != block_hash:
                return  # moved to another block since the watcher read it: that block is checked next run
            if payment is not None and payment.status is PaymentStatus.FAILED and not payment.final:
                # failed in a block now final: final; its block gone: orphaned (seen again if re-included)
                done = (
                    replace(payment, final=True)
                    if status is PaymentStatus.FINALIZED
                    else replace(payment, status=status)
                )
                self._store.save(
                    SettlementChange(done, payment_expected=PaymentStatus.FAILED, block_expected=block_hash)
                )
                return
            if payment is None or payment.status is not PaymentStatus.SEEN:
                if payment is not None and payment.invoice_id is not None:
                    bill = self._store.bill(payment.invoice_id)
                    if bill is not None:
                        self._announce_bill(bill)  # a rerun after a crash between the write and the event
                return
            moved = replace(payment, status=status)
            bill = self._store.bill(payment.invoice_id) if payment.invoice_id else None
            if bill is None:
                self._store.save(
                    SettlementChange(moved, payment_expected=PaymentStatus.SEEN, block_expected=block_hash)
                )
                return
            new_bill, changed = self._bill_after(bill, moved, self._store.quotes(bill.invoice_id))
            if tell is not None:
                new_bill = owing_reopen(bill, new_bill, self._lost_entry(payment, tell))
            change = SettlementChange(
                moved, payment_expected=PaymentStatus.SEEN, bill=new_bill, quotes=changed, block_expected=block_hash
            )
            self._store.save(change)
            self._announce_bill(new_bill)

        self._retried(payment_id, attempt)

    def stalled(self, payment_id: str, block_hash: str | None = None) -> None:
        """A SEEN payment its watcher named stuck (final block, neither finality nor loss proven): its line stops
        holding the bill (``holds``), and the bill is recomputed - PAID with the write-off if its final payments
        cover it inside tolerance (D398), else OPEN and PARTIAL, a new quote asking the rest (D419). The payment
        stays SEEN and pending: finalized later, it pays the write-off first (D387) or counts again (credit if the
        rest was paid meanwhile); orphaned, nothing changes. Idempotent (a line marked once is left). Only at the
        block the watcher named (``block_hash``; None: the block first read), written back only while still there:
        moved meanwhile (seen in another block by another run), the move stands and it is not stalled - that block
        is checked next run (review rcr)."""
        named: list[str] = [] if block_hash is None else [block_hash]  # the block named stuck

        def attempt() -> None:
            payment = self._store.payment(payment_id)
            if payment is None or payment.status is not PaymentStatus.SEEN or payment.invoice_id is None:
                return
            if named and payment.transfer.block_hash != named[0]:
                return  # moved to another block since: that block is checked by the next run
            named[:] = [payment.transfer.block_hash]
            bill = self._store.bill(payment.invoice_id)
            line = next((line for line in bill.payments if line.payment_id == payment_id), None) if bill else None
            if bill is None or line is None or line.stalled:
                if bill is not None:
                    self._announce_reopens(bill)  # a rerun after a failed publish or a crash before it
                return
            now = self._clock()
            marked = replace(bill, payments=tuple(replace(x, stalled=True) if x is line else x for x in bill.payments))
            new_bill = replace(recompute(marked, self._policy, now), version=bill.version + 1)
            # owed with the stall, in its write: said once published (a failed publish is told by the sweep)
            new_bill = owing_reopen(bill, new_bill, reopen_entry(payment, payment.transfer.block_hash))
            quotes = self._store.quotes(bill.invoice_id)
            changed = tuple(
                replace(quote, status=status)
                for quote in quotes
                if (status := quote_status(quote, new_bill.payments, now)) is not quote.status
                and status is not quote_status(quote, bill.payments, now)
            )
            self._store.save(
                SettlementChange(
                    payment,
                    payment_expected=PaymentStatus.SEEN,
                    bill=new_bill,
                    quotes=changed,
                    block_expected=payment.transfer.block_hash,
                )
            )
            self._announce_bill(new_bill)

        self._retried(payment_id, attempt)

    def _announce_reopens(self, bill: Bill, final: Mapping[str, int] | None = None) -> None:
        """``CryptoBillReopened.v1`` of each reopen ``bill`` owes (``reopens_owed``), then marked said: a stall, an
        orphaning or a failure in a new block left it OPEN asking more than before - the customer is asked again
        (D419, D434, amended (hcw)). Its id names the payment and the block it was named stuck in (orphaned from,
        failed in): a redelivery or a re-publish of the same move is the same event (consumers dedupe), the payment
        moved again in another block after being seen there is another reopen. Published late (the sweep, after a
        failed publish), it tells the bill as it is then; a bill no longer OPEN (paid, or covered again meanwhile),
        or whose payment holds it again (seen in another block since), is not told, its notice only marked said. A
        drop's notice is left owed until due (``OwedReopen.due``: the height it was dropped from final on its chain,
        ``final``, given by the sweep alone - D449): published by the sweep then, cleared by any write of the bill once
        its payment counts again (D434 amended (hcw))."""
        for owed in bill.reopens_owed:
            entry = parse_reopen(owed)
            line = next((line for line in bill.payments if line.payment_id == entry.payment_id), None)
            if bill.status is BillStatus.OPEN and (line is None or not holds(line)):
                if not entry.due(self._clock(), final or {}):
                    continue  # a drop not final yet: left owed, the sweep's once final (or cleared if mined again)
                self._publish_reopened(bill, entry.tail, line, entry.lost)
            self._store.mark_reopen_said(bill.invoice_id, owed)

    def _lost_entry(self, payment: Payment, lost: Lost) -> str:
        """The owed entry of ``payment`` lost from its block: a failure due at once; a drop once the height it was
        dropped from is final on its chain (D449; "expired" on Solana: a transaction whose blockhash is too old
        cannot land any more - its watcher's final slot says when, ``SolanaWatcher``)."""
        now = self._clock()
        if lost == "failed":
            return reopen_entry(payment, payment.transfer.block_hash, lost, now)
        chain = self._chains.get(payment.transfer.chain)
        cause: Lost = "expired" if chain is not None and chain.kind == "solana" else "dropped"
        return reopen_entry(payment, payment.transfer.block_hash, cause, now)

    def _publish_reopened(self, bill: Bill, tail: str, line: BillPayment | None, lost: Lost | None) -> None:
        stuck = [x for x in bill.payments if counts(x) and not holds(x)]
        reopened = CryptoBillReopenedV1(
            event_id=f"crypto-reopened:{bill.invoice_id}:{tail}",
            account_id=bill.account_id,
            invoice_id=bill.invoice_id,
            total=money_str(bill.total_usd),
            amount_usd=money_str(remaining_usd(bill)),
            stuck_usd=money_str(paid_usd(stuck)),
            stuck_tx_ids=tuple(dict.fromkeys(line.tx_id for line in stuck)),
            occurred_at=self._clock().isoformat(),
            number=bill.number or None,
            lost=lost,
            lost_usd=money_str(paid_usd([line])) if lost and line else None,
            lost_tx_id=line.tx_id if lost and line else None,
        )
        self._publisher.publish(reopened.DETAIL_TYPE, reopened.model_dump(mode="json"))

    def _stored(self, payment_id: str) -> Payment:
        """The stored payment an operator's command names, or ``PaymentNotFoundError``."""
        payment = self._store.payment(payment_id)
        if payment is None:
            raise PaymentNotFoundError(f"no payment {payment_id!r}")
        return payment

    def _retried(self, payment_id: str, attempt: Callable[[], _T]) -> _T:
        """Optimistic concurrency, the one loop every settlement step runs in: ``attempt`` reads, decides and writes
        one conditional transaction; when that write conflicts (``ConflictError``: another writer moved the payment
        or the bill first) it runs again on fresh reads, up to ``attempts`` times."""
        for _ in range(self._attempts):
            try:
                return attempt()
            except ConflictError:
                continue
            except ChangeRefusedError as exc:
                raise UnstorableError(f"payment {payment_id} cannot be stored as matched: {exc}") from exc
        raise ConflictError(f"payment {payment_id}: too many concurrent changes")

    # events: published after the state is stored, then marked (a rerun re-publishes the same id)
    def _announce(self, payment: Payment) -> None:
        if payment.announced or payment.status is PaymentStatus.FAILED:
            return
        if payment.invoice_id is not None and payment.account_id is not None:
            if self._together is not None:
                self._together[payment.payment_id] = payment  # announced with its bill's others when the batch ends
                return
            self._announce_seen([payment])
            return
        transfer = payment.transfer
        if self._below_alert(transfer):
            # kept UNATTRIBUTED (on the operator's list), marked so that a rerun neither alerts nor counts it again
            self._store.mark_payment_announced(payment.payment_id)
            self._unalerted += 1
            return
        alert = UnattributedCryptoPaymentV1(
            event_id=payment_event_id("crypto-unattributed", payment),
            chain=transfer.chain,
            asset=transfer.asset,
            amount=decimal_str(asset_amount(transfer.atomic_amount, transfer.asset)),
            tx_id=transfer.tx_id,
            sender=transfer.sender,
            occurred_at=self._clock().isoformat(),
            counted_in=payment.counted_in,
        )
        self._publisher.publish(alert.DETAIL_TYPE, alert.model_dump(mode="json", exclude_none=True))
        self._store.mark_payment_announced(payment.payment_id)

    def _below_alert(self, transfer: ObservedTransfer) -> bool:
        """An unattributed credit worth less than ``unattributed_alert_min_usd``: its USD at the asset's current
        rate (stablecoins 1:1; ETH / SOL at ``_alert_rate``), rounded to the cent by ``round_money`` - 1 lamport at
        $150/SOL is $0.00000015, $0.00: below $0.01. No rate (the feed refused): not below, alerted as before - an
        operator is told rather than a credit of unknown worth kept quiet (D364)."""
        floor = self._policy.unattributed_alert_min_usd
        if floor <= 0:
            return False
        rate = Decimal(1) if transfer.asset in STABLECOINS else self._alert_rate(transfer.asset)
        if rate is None:
            return False
        return round_money(usd_value(transfer.atomic_amount, transfer.asset, rate)) < floor

    def _alert_rate(self, asset: Asset) -> Decimal | None:
        """The asset's current feed rate for the alert floor only (None: refused), read once per run - not at each
        credit's block time, which costs a block search on the feed's chain per credit and a burst of poisoning dust
        would multiply (D364 amended). The refusal is kept for the run as well. A credit's recorded USD is not
        this: ``_rate_then``."""
        if asset not in self._alert_rates:
            try:
                if self._rates is None:
                    raise RateRefusedError("no rate sources configured")
                self._alert_rates[asset] = self._rates.at(asset, self._clock()).price
            except RateRefusedError:
                self._alert_rates[asset] = None
        return self._alert_rates[asset]

    def _announce_seen(self, payments: Sequence[Payment]) -> None:
        """One ``CryptoPaymentSeen.v1`` for ``payments`` (attributed to one bill, seen together), then each marked.
        Each is claimed for its event before that is published (``claim_seen``): one an earlier attempt claimed and
        died before marking (published or not) is told again in that event, under its id - consumers drop it if they
        had it - and only the others in a new one, so that a rerun whose batch has grown tells no credit twice."""
        first = payments[0] if payments else None
        if first is None or first.invoice_id is None or first.account_id is None:
            return  # only attributed payments are announced to a customer
        fresh = [payment for payment in payments if payment.seen_event is None]
        new_id = seen_event_id(first.invoice_id, fresh) if fresh else ""
        events: dict[str, list[Payment]] = {}
        for payment in payments:
            event_id = payment.seen_event or self._store.claim_seen(payment.payment_id, new_id)
            events.setdefault(event_id, []).append(payment)
        for event_id, told in events.items():
            self._publish_seen(event_id, first.account_id, first.invoice_id, told)

    def _publish_seen(self, event_id: str, account_id: str, invoice_id: str, payments: Sequence[Payment]) -> None:
        """``payments`` in the ``CryptoPaymentSeen.v1`` ``event_id``, then each marked."""
        # the counted ones split their counted sum (D217); one in review (or refused) is no part of it and shows
        # its own USD, as the history does (D226)
        counted = counted_usd(payments)
        shown = [counted.get(payment.payment_id, round_money(payment.usd or ZERO)) for payment in payments]
        amounts_usd = [money_str(usd) for usd in shown]
        transfers = tuple(
            CryptoSeenTransferV1(
                payment_id=payment.payment_id,
                quote_id=payment.quote_id,
                asset=payment.transfer.asset,
                amount=decimal_str(asset_amount(payment.transfer.atomic_amount, payment.transfer.asset)),
                amount_usd=usd,
                tx_id=payment.transfer.tx_id,
                explorer_url=explorer_url(self._chains.get(payment.transfer.chain), payment.transfer.tx_id),
            )
            for payment, usd in zip(payments, amounts_usd, strict=True)
        )
        head = transfers[0]
        seen = CryptoPaymentSeenV1(
            event_id=event_id,
            account_id=account_id,
            invoice_id=invoice_id,
            quote_id=head.quote_id,
            chain=payments[0].transfer.chain,
            asset=head.asset,
            amount=head.amount,
            amount_usd=head.amount_usd,
            tx_id=head.tx_id,
            explorer_url=head.explorer_url,
            occurred_at=self._clock().isoformat(),
            transfers=transfers,
            total_usd=money_str(sum(shown, ZERO)),  # what the transfers show, together
        )
        self._publisher.publish(seen.DETAIL_TYPE, seen.model_dump(mode="json"))
        for payment in payments:
            self._store.mark_payment_announced(payment.payment_id)

    def _announce_bill(self, bill: Bill, final: Mapping[str, int] | None = None) -> None:
        """``CryptoBillSettled.v1`` once the bill is PAID; afterwards ``CryptoCreditAdded.v1`` whenever a payment
        finalized on the paid bill raised its credit past what was announced (each carries the credit in all). First
        the reopens it owes (``_announce_reopens``, a drop's only given ``final``: the sweep's): every write of a bill
        settles them - one told, one its payment counting again cleared (D434 amended (hcw))."""
        self._announce_reopens(bill, final)
        if bill.status is not BillStatus.PAID:
            return
        if bill.settled_announced:
            if bill.credit_usd > bill.credit_announced_usd or bill.written_off_usd < bill.write_off_announced():
                self._announce_credit(bill)
            return
        tx_ids = tuple(line.tx_id for line in bill.payments if line.payment_id in bill.settled_payment_ids)
        settled = CryptoBillSettledV1(
            event_id=f"crypto-settled:{bill.invoice_id}",
            account_id=bill.account_id,
            invoice_id=bill.invoice_id,
            total=money_str(bill.total_usd),
            settled_usd=money_str(bill.settled_usd),
            written_off_usd=money_str(bill.written_off_usd),
            credit_usd=money_str(bill.credit_usd),
            flags=tuple(sorted(flag.value for flag in bill.flags)),
            tx_ids=tuple(dict.fromkeys(tx_ids)),
            occurred_at=(bill.paid_at or self._clock()).isoformat(),
        )
        self._publisher.publish(settled.DETAIL_TYPE, settled.model_dump(mode="json"))
        self._store.mark_bill_announced(bill.invoice_id, bill.credit_usd)

    def _announce_credit(self, bill: Bill) -> None:
        later = tuple(
            line.tx_id
            for line in bill.payments
            if line.status is PaymentStatus.FINALIZED
            and counts(line)
            and line.payment_id not in bill.settled_payment_ids
        )
        credit = money_str(bill.credit_usd)
        # a bill settled with a write-off tells what is still written off (a later payment pays it first, D387):
        # its events are told apart by both figures; a bill settled in full keeps the ids it always had
        written_off = money_str(bill.written_off_usd) if bill.settled_usd < bill.total_usd else None
        added = CryptoCreditAddedV1(
            event_id=f"crypto-credit:{bill.invoice_id}:{credit}" + (f":{written_off}" if written_off else ""),
            account_id=bill.account_id,
            invoice_id=bill.invoice_id,
            credit_usd=credit,
            written_off_usd=written_off,
            tx_ids=tuple(dict.fromkeys(later)),
            occurred_at=self._clock().isoformat(),
        )
        self._publisher.publish(added.DETAIL_TYPE, added.model_dump(mode="json"))
        self._store.mark_bill_announced(
            bill.invoice_id, bill.credit_usd, bill.written_off_usd if written_off is not None else None
        )
