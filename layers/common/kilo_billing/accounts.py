"""Billing accounts: the one account-id grammar, reserved ids, the account profile (tier history, budget) and the port
through which ingest, rating, invoicing and the CLI read and register profiles.

An account *exists* once it has a profile: its tier history starts at signup. Ingest refuses usage for an account
without one (docs/decisions.md), rating still rates minutes of rooms whose account has no profile (LiveKit traffic
cannot be refused after the fact) as the free default, and reports them.
"""

from __future__ import annotations

import hashlib
import itertools
import re
import unicodedata
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING, Final, Protocol

from kilo_billing.catalog import Catalog, PriceBook
from kilo_billing.money import is_whole_cents, two_places
from kilo_billing.periods import Period, ensure_utc
from kilo_billing.rating import TierChange, TierSegment, effective_change, segments_for

if TYPE_CHECKING:
    from kilo_billing.month_to_date import MonthToDateSource  # month_to_date builds on this module

# One grammar everywhere an account id is read (usage API, room/participant attribution, CLI, account API): a letter or
# digit, then up to 127 of letters, digits and ``_ . : @ + = -``. No ``/`` (ids appear in keys and URL paths), no
# ``#`` (the key separator of the tables), no spaces.
ACCOUNT_ID_PATTERN: Final = r"[A-Za-z0-9][A-Za-z0-9_.:@+=-]{0,127}"
_ACCOUNT_ID = re.compile(ACCOUNT_ID_PATTERN)

UNATTRIBUTED: Final = "unattributed"  # minutes no account could be found for: kept, counted, alarmed
# Ids nobody may register or bill to: the unattributed bucket and names that read as something else in config or logs.
RESERVED_ACCOUNT_IDS: Final = frozenset({UNATTRIBUTED, "all", "any", "none", "null", "system", "kilo", "admin"})

DEFAULT_TIER: Final = "personal"
DEFAULT_BUDGET_THRESHOLDS: Final = (50, 80, 100)

# E.164: "+", a country code that does not start with 0, at most 15 digits in all (SNS sends SMS to nothing else)
E164_PATTERN: Final = r"\+[1-9][0-9]{6,14}"
_E164 = re.compile(E164_PATTERN)
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,62}[A-Za-z0-9])?"
_EMAIL = re.compile(rf"[^@\s<>\",;]{{1,64}}@{_LABEL}(?:\.{_LABEL})+")
ALERT_CHANNELS: Final = ("email", "sms")
# The alert kinds an account may choose channels for: the alerts function's catalogue (a test holds them equal)
ALERT_KINDS: Final = (
    "allowance_threshold",
    "budget_forecast",
    "budget_hard_limit",
    "budget_threshold",
    "crypto_bill_reopened",
    "crypto_bill_settled",
    "crypto_payment_seen",
    "crypto_quote_expiring",
    "dispute_opened",
    "invoice_issued",
    "payment_failed",
    "refund_failed",
)
# The alert kinds that must reach someone (calls stop at the hard limit; an unpaid invoice stops new calls): never
# set to no channel (a 400), and a stored empty choice goes by email (the alerts function; D180)
REQUIRED_ALERT_KINDS: Final = ("budget_hard_limit", "payment_failed")
# A bound on one save's work: kinds that are known or change; a stored unknown kind sent back unchanged is not counted
# (a profile the D171 bug bloated must still be savable from the form that returns what it read)
MAX_ALERT_KINDS: Final = 64
# What an account may be, besides active: each one refuses new calls at the entitlement check (its reason code)
ACCOUNT_STATUSES: Final = ("active", "suspended", "abuse_hold", "past_due")
# How an account pays its invoices: by card through the payment gateway (Stripe), or a USD bill settled in crypto
# (kilo_billing.invoicing.BillingMethod has the same values)
BILLING_METHODS: Final = ("card", "crypto")


PSEUDONYM_PREFIX: Final = "erased-"
# what ``pseudonym`` gives: the prefix and 16 lower-case hex digits of a sha256
PSEUDONYM_PATTERN: Final = rf"{PSEUDONYM_PREFIX}[0-9a-f]{{16}}"
_PSEUDONYM = re.compile(PSEUDONYM_PATTERN)


def is_pseudonym(value: str) -> bool:
    """Whether ``value`` has the exact shape of a pseudonym (``PSEUDONYM_PATTERN``): a value that only starts with
    ``erased-`` (an identity or an address chosen so) is personal data like any other (D239)."""
    return bool(_PSEUDONYM.fullmatch(value))


def pseudonym(account_id: str, value: str) -> str:
    """What an erased account's personal value becomes (docs/decisions.md D80): the same value of the same account
    always gets the same pseudonym (a participant keeps being one person in the per-meeting counts), which cannot be
    turned back into the value. A pseudonym (``is_pseudonym``) or an empty value stays as it is. The account API's
    erasure and rating (a session written again from the raw events) both use this one function."""
    if not value or is_pseudonym(value):
        return value
    return PSEUDONYM_PREFIX + hashlib.sha256(f"{account_id}\x00{value}".encode()).hexdigest()[:16]


def pseudonymised_in(account_id: str, text: str, contact: str) -> str:
    """``text`` (a provider's message kept with an alert's delivery record: SES names the addresses it refuses, SNS
    the number) with ``contact`` - in any case, a number also without its ``+`` - replaced by its ``pseudonym``
    (D203: the alerts function when it records, the account API's erasure for records written before)."""
    ref = pseudonym(account_id, contact)
    for shown in dict.fromkeys((contact, contact.removeprefix("+"))):
        if shown and shown != ref:
            text = re.sub(re.escape(shown), ref, text, flags=re.IGNORECASE)
    return text


class InvalidAccountIdError(ValueError):
    """Not an account id (grammar) or a reserved one; the message says which."""


def is_account_id(value: str) -> bool:
    """Well-formed and not reserved: what may be billed."""
    return bool(_ACCOUNT_ID.fullmatch(value)) and value.lower() not in RESERVED_ACCOUNT_IDS


def check_account_id(value: str) -> str:
    if not _ACCOUNT_ID.fullmatch(value):
        raise InvalidAccountIdError(
            f"account id {value!r} must be 1-128 characters: a letter or digit, then letters, digits or _ . : @ + = -"
        )
    if value.lower() in RESERVED_ACCOUNT_IDS:
        raise InvalidAccountIdError(f"account id {value!r} is reserved")
    return value


@dataclass(frozen=True, slots=True)
class AccountProfile:
    """Who an account is for billing: its tier history (the first change is the signup) and its budget."""

    account_id: str
    changes: tuple[TierChange, ...]
    budget_usd: Decimal | None = None
    budget_thresholds: tuple[int, ...] = DEFAULT_BUDGET_THRESHOLDS
    # who hears about it (alerts): a display name, an email address, an E.164 phone number; empty when not given
    name: str = ""
    email: str = ""
    phone: str = ""
    # the account proved it receives SMS at ``phone`` (a code sent there was confirmed, D160); alerts text only a
    # verified number. A changed or cleared number is unverified again.
    phone_verified: bool = False
    # per alert kind, the channels the account chose (("email", "sms"), ("email",), () for none); kinds not listed
    # follow the alert catalogue's default (low-severity alerts are quiet on SMS)
    alert_preferences: tuple[tuple[str, tuple[str, ...]], ...] = ()
    # the hard level of the budget: at or above it new calls are refused and running ones stopped (None: soft only)
    hard_limit_usd: Decimal | None = None
    status: str = "active"  # one of ACCOUNT_STATUSES
    # progressive billing (optional): when the period's unbilled overage reaches this amount, it is invoiced early
    # (kilo_billing.progressive); None: one invoice at the period end
    progressive_threshold_usd: Decimal | None = None
    billing_method: str = "card"  # one of BILLING_METHODS; the close issues the invoice this way
    # the account's personal data was last erased then (docs/decisions.md D80): rating writes a session that began
    # before it with its participant's pseudonym, also when it rates that session for the first time afterwards
    erased_at: datetime | None = None
    # how many times the budget's and the hard limit's amounts were changed (``budgets.apply_budget``; 0: never since
    # versions were kept): a crossing is scoped by the amount and this version, so a limit set again - also back to an
    # amount already announced that month - is announced (and enforced) again, once per setting (D124, D140)
    budget_version: int = 0
    hard_limit_version: int = 0
    # when a pending tier change was last cancelled by asking for the tier in effect (D118): the same request retried
    # is answered as that cancel, not as the upgrade before it (D118 amended (ex2)); None: never since it was kept, or
    # voided by a tier change recorded after it (``with_tier_change``, D373 amended (api3))
    tier_change_cancelled_at: datetime | None = None
    # the stored item's version when this profile was read (0: never saved since its registration); a save is written
    # only over that same version (``AccountDirectory.save``). Not part of the profile's value (equality ignores it).
    version: int = field(default=0, compare=False)

    def channels_chosen(self, kind: str) -> tuple[str, ...] | None:
        """The channels the account chose for an alert kind; ``None`` when it chose nothing (the default applies)."""
        for chosen_kind, channels in self.alert_preferences:
            if chosen_kind == kind:
                return channels
        return None

    @classmethod
    def default(cls, account_id: str) -> AccountProfile:
        """An account nobody registered: the free tier since forever (docs/decisions.md D18)."""
        return cls(account_id, (TierChange(datetime(1970, 1, 1, tzinfo=UTC), DEFAULT_TIER),))

    @property
    def signed_up_at(self) -> datetime:
        return min(change.at for change in self.changes)

    def segments(self, period: Period) -> list[TierSegment]:
        changes = self.changes
        if not any(change.at <= period.start for change in changes):
            # the account began inside this period: before its first tier it was on the free default (no fee)
            changes = (TierChange(period.start, DEFAULT_TIER), *changes)
        return segments_for(period, changes)

    def segment_start(self, at_ms: int) -> int:
        """Start (epoch seconds) of the tier segment containing ``at_ms``."""
        at = datetime.fromtimestamp(at_ms / 1000, tz=UTC)
        for segment in self.segments(Period.containing(at)):
            if segment.start <= at < segment.end:
                return int(segment.start.timestamp())
        raise AssertionError("segments cover their period")

    def segment_cuts(self, start_ms: int, end_ms: int) -> tuple[int, ...]:
        """The starts (epoch ms) of the account's tier segments strictly inside ``[start_ms, end_ms)``, which lies in
        one period: where a connection's part is shared out (``meters.minutes_by_segment``, D282)."""
        epoch = datetime(1970, 1, 1, tzinfo=UTC)

        def ms_up(instant: datetime) -> int:  # rounded up: the piece from a cut on lies in the segment starting there
            return -((epoch - instant) // timedelta(milliseconds=1))

        # a segment start inside the part is a change's instant, so without a change inside it there is no cut: the
        # usual case, cheaply, also for an account whose downgrade waits for the next period (review of D282)
        if not any(start_ms < ms_up(change.at) < end_ms for change in self.changes):
            return ()
        segments = self.segments(Period.containing(epoch + timedelta(milliseconds=start_ms)))
        return tuple(cut for cut in (ms_up(segment.start) for segment in segments) if start_ms < cut < end_ms)

    def tier_at(self, at: datetime) -> str:
        """The tier in effect at ``at``: the latest change at or before it; of several changes at one instant, the
        last one recorded, as ``segments_for`` rates them (so the fee in advance and the rating agree)."""
        known = sorted((change for change in self.changes if change.at <= at), key=lambda change: change.at)
        return known[-1].tier if known else DEFAULT_TIER


class AccountExistsError(Exception):
    """``register`` of an account that already has a profile."""


class UnknownAccountError(Exception):
    """An operation on an account that has no profile."""


class ProfileChangedError(Exception):
    """A save of a profile that another writer changed since it was read (its version moved on): nothing was written.
    ``update_profile`` reads again and re-applies the change; this escapes only after ``PROFILE_SAVE_ATTEMPTS``."""


IDEMPOTENCY_KEY_TTL: Final = timedelta(hours=24)  # a stored answer is replayed for its key this long (D377)


class AnswerExistsError(Exception):
    """An answer for this account and idempotency key is stored (and not expired) already: nothing was written."""


@dataclass(frozen=True, slots=True)
class StoredAnswer:
    """A request's answer kept under its ``Idempotency-Key`` (D377): the digest of the request body it answered,
    and the answer's status and body, replayed exactly for the same key until ``expires_at``."""

    account_id: str
    key: str
    digest: str
    status: int
    body: str
    answered_at: datetime

    @property
    def expires_at(self) -> datetime:
        return self.answered_at + IDEMPOTENCY_KEY_TTL


class AccountDirectory(Protocol):
    """Where account profiles live (the usage table, ``ACCOUNT#<id>`` / ``PROFILE``)."""

    def registered(self, account_ids: Iterable[str]) -> dict[str, AccountProfile]:
        """The profiles of those of ``account_ids`` that are registered (absent ids are not in the result)."""
        ...

    def register(self, profile: AccountProfile) -> None:
        """Create a profile; ``AccountExistsError`` if there is one."""
        ...

    def save(self, profile: AccountProfile) -> AccountProfile:
        """Replace a registered profile (tier change, budget) if it is still at ``profile.version`` (the version it
        was read at) and answer it as stored (its version moved on by one); ``ProfileChangedError`` if another writer
        saved it since, ``UnknownAccountError`` if there is none. Nothing is written when refused."""
        ...

    def save_status(self, profile: AccountProfile) -> AccountProfile:
        """``save`` for a change of ``profile.status`` alone (the abuse hold): only the status and the version are
        written - the rest stays as stored at ``profile.version``, which the condition makes the profile read - so a
        writer granted those two attributes may make it. Refused as ``save``."""
        ...

    def answer(self, account_id: str, key: str, now: datetime) -> StoredAnswer | None:
        """The answer stored for the account's idempotency ``key``, unless none or expired by ``now`` (D377)."""
        ...

    def save_answered(self, profile: AccountProfile, answer: StoredAnswer) -> AccountProfile:
        """``save`` the profile and store ``answer`` in ONE write (both or neither, D377). ``AnswerExistsError``
        when an answer for the key is stored and not expired at ``answer.answered_at``; ``save``'s errors for the
        profile. Nothing is written when refused."""
        ...

    def keep_answer(self, answer: StoredAnswer) -> None:
        """Store ``answer`` alone (a request that saved nothing); ``AnswerExistsError`` as ``save_answered``."""
        ...


def register_account(
    directory: AccountDirectory,
    account_id: str,
    tier: str,
    signed_up_at: datetime,
    known_tiers: Iterable[str],
    budget_usd: Decimal | None = None,
    billing_method: str = "card",
) -> AccountProfile:
    """Create an account's profile (the operator's ``kilo-billing account create``; later the account API)."""
    check_account_id(account_id)
    if billing_method not in BILLING_METHODS:
        raise ValueError(f"billing method {billing_method!r} is not one of {BILLING_METHODS}")
    if tier not in set(known_tiers):
        raise ValueError(f"unknown tier {tier!r}; the price book has {sorted(known_tiers)}")
    if signed_up_at.tzinfo is None:
        raise ValueError("signup time must carry a time zone")
    if budget_usd is not None and (not budget_usd.is_finite() or budget_usd < 0):
        raise ValueError(f"budget must be a non-negative amount, got {budget_usd}")
    profile = AccountProfile(
        account_id, (TierChange(signed_up_at.astimezone(UTC), tier),), budget_usd, billing_method=billing_method
    )
    directory.register(profile)
    return profile


class MidPeriodDowngradeError(ValueError):
    """A tier history that lowers the tier anywhere but at a period start (downgrades wait for the next period, D3)."""


def check_tier_history(changes: Iterable[TierChange], rank: Callable[[str], int]) -> None:
    """Refuse a history with a downgrade inside a period. Called where tier history is stored (the directory's
    adapter), so no path - CLI, account API, a script - can write one."""
    ordered = sorted(changes, key=lambda change: change.at)
    for before, after in itertools.pairwise(ordered):
        if rank(after.tier) < rank(before.tier) and Period.containing(after.at).start != after.at:
            raise MidPeriodDowngradeError(
                f"a downgrade from {before.tier} to {after.tier} at {after.at.isoformat()} is inside a period: "
                f"downgrades take effect at the next period start"
            )


def registered_profile(directory: AccountDirectory, account_id: str) -> AccountProfile:
    """The account's stored profile; ``UnknownAccountError`` when it is not registered."""
    found = directory.registered([account_id]).get(account_id)
    if found is None:
        raise UnknownAccountError(f"account {account_id!r} is not registered")
    return found


PROFILE_SAVE_ATTEMPTS: Final = 5  # reads and saves of one change before it gives up (ProfileChangedError)


def update_profile(
    directory: AccountDirectory,
    account_id: str,
    change: Callable[[AccountProfile], AccountProfile],
    attempts: int = PROFILE_SAVE_ATTEMPTS,
    save: Callable[[AccountProfile], AccountProfile] | None = None,
) -> AccountProfile:
    """Read the account's profile, apply ``change`` to it and save the result over the version read; when another
    writer saved the profile in between, read it again and apply ``change`` to what is stored now, up to ``attempts``
    times (docs/decisions.md D142). Every read-change-save of a profile goes through here, so no writer's change
    (a tier change, a budget, an abuse hold, an erasure mark) is overwritten by another's stale copy. ``change`` must
    be a function of the profile it is given (it may raise to refuse); answering the profile unchanged saves nothing.
    ``UnknownAccountError`` for an unregistered account, ``ProfileChangedError`` after ``attempts`` conflicts.
    ``save``: how a changed profile is saved (default ``directory.save``; the tier route saves its answer with it)."""
    write = directory.save if save is None else save
    for _ in range(attempts):
        found = registered_profile(directory, account_id)
        changed = change(found)
        if changed == found:
            return found
        try:
            return write(replace(changed, version=found.version))
        except ProfileChangedError:
            continue
    raise ProfileChangedError(f"account {account_id!r} changed meanwhile (tried {attempts} times); retry")


class InvoicedPeriodError(ValueError):
    """A tier change dated inside a period that has already been invoiced: that invoice's fees and allowances were
    worked from the tier history as it was, and no later invoice bills the difference."""


def check_not_invoiced(change: TierChange, invoiced_periods: Iterable[str]) -> None:
    """Refuse a change that takes effect in a period already closed by an invoice (or before one: periods close in
    order). ``invoiced_periods``: the ``YYYY-MM`` keys of the account's period-end invoices."""
    last = max(invoiced_periods, default=None)
    period = Period.containing(change.at)
    if last is not None and period.key <= last:
        raise InvoicedPeriodError(
            f"a tier change at {change.at.isoformat()} falls in {period}, which is already invoiced (the account is "
            f"invoiced through {last}): date it in {Period.parse(last).next()} or later"
        )


# how far back ``kilo-billing account change-tier --at`` may put a change in effect: at most this many months before
# the clock's month, each of which the limits' check re-rates (D150 amended (cx))
TIER_CHANGE_MONTHS_BACK = 2


class TierChangeTooFarBackError(ValueError):
    """A tier change (the CLI's ``--at``) taking effect more than ``TIER_CHANGE_MONTHS_BACK`` months before the
    clock's month."""


def check_not_too_far_back(change: TierChange, now: datetime, requested_at: datetime | None = None) -> None:
    """Refuse a change taking effect before the month ``TIER_CHANGE_MONTHS_BACK`` months before ``now``'s: the limits'
    check re-rates every month from the change's to the clock's, and an account never invoiced could otherwise date
    one back to its signup. On the change as it takes effect (a downgrade at the next period start); ``requested_at``
    (the CLI's ``--at``): a downgrade's message names it and the earliest ``--at`` accepted - the first instant of the
    month before the bound's, in effect at the bound's start (D150 amended (cx2))."""
    clock = Period.containing(now)
    earliest = clock
    for _ in range(TIER_CHANGE_MONTHS_BACK):
        earliest = earliest.previous()
    period = Period.containing(change.at)
    if period.key >= earliest.key:
        return
    bound = (
        f"more than {TIER_CHANGE_MONTHS_BACK} months before the clock's {clock}: the CLI dates a change back at most "
        f"to {earliest} (every month from the change on is re-rated for the hard limit)"
    )
    asked = ensure_utc(requested_at) if requested_at is not None else change.at
    if asked != change.at:  # a downgrade: in effect at the start of the month after the one asked in
        raise TierChangeTooFarBackError(
            f"a downgrade asked for at {asked.isoformat()} takes effect at the next period start, "
            f"{change.at.isoformat()}, in {period}, {bound}; ask for the downgrade at "
            f"{earliest.previous().start.isoformat()} or later (in effect from {earliest.start.isoformat()})"
        )
    raise TierChangeTooFarBackError(
        f"a tier change at {change.at.isoformat()} takes effect in {period}, {bound}; date it "
        f"{earliest.start.isoformat()} or later"
    )


def request_tier_change(
    directory: AccountDirectory,
    book: PriceBook,
    account_id: str,
    tier: str,
    requested_at: datetime,
    invoiced_periods: Iterable[str] | Callable[[], Iterable[str]] = (),
    *,
    month: MonthToDateSource,
    read_at: datetime | None = None,
    catalog: Catalog | None = None,
) -> AccountProfile:
    """The tier change ``kilo-billing account tier`` and ``change-tier`` (operators, ``--at``) call: an upgrade
    takes effect at ``requested_at`` (prorated), a downgrade at the next period start; a change behind a later one is
    refused (``with_tier_change``). The account API does not call it: its rules - a request for the tier in effect
    cancels the pending changes, the pending change asked again is a retried click, another request replaces them -
    are ``kilo_account_api.logic._tier_request`` (D118); both build on ``rating.effective_change``,
    ``with_tier_change`` and ``budgets.check_tier_change`` (D118 amended (api4) tabulates where their answers to the
    same request differ). ``invoiced_periods`` (the account's period-end invoices): a change taking effect in one of
    them is refused (``check_not_invoiced``); given as a function (the CLI's ledger read), it is called on each
    attempt of the profile's optimistic retry, so a period invoiced meanwhile is seen.
    ``month``: the account's month to date,
    re-rated with the change for the limits' check (``budgets.check_tier_change``, D150); ``read_at``: the clock
    when it is read (the CLI's now), open sessions counted up to the later of it and ``requested_at``; ``catalog``:
    the price books ``book`` comes from (the CLI's), which the limits are checked against (default: the shipped
    ones). With ``read_at``, a change taking effect more than ``TIER_CHANGE_MONTHS_BACK`` months before its month is
    refused (``check_not_too_far_back``) before any month is read."""
    invoiced = () if callable(invoiced_periods) else tuple(invoiced_periods)

    def changed(found: AccountProfile) -> AccountProfile:
        from kilo_billing.budgets import check_tier_change  # noqa: PLC0415 - budgets builds on this module

        change = effective_change(book, found.tier_at(requested_at), tier, requested_at)
        closed = tuple(invoiced_periods()) if callable(invoiced_periods) else invoiced
        after = with_tier_change(found, change, closed)
        if read_at is not None:
            check_not_too_far_back(change, read_at, requested_at)
        check_tier_change(found, after, requested_at, month, catalog, read_at=read_at)
        return after

    return update_profile(directory, account_id, changed)


def with_tier_change(found: AccountProfile, change: TierChange, invoiced_periods: Iterable[str]) -> AccountProfile:
    """``found`` with ``change`` appended, after the checks: not before the signup, not in an invoiced period, no
    later change already there. A change already recorded at the same instant is replaced (a downgrade asked again
    to another tier before it took effect): one tier per instant, the one asked last. A cancel kept for its retry
    (``tier_change_cancelled_at``) is voided: it is no longer the last tier request, and the tier it kept may no longer
    be the one in effect (an operator's change dated before it, D373 amended (api3))."""
    if change.at < found.signed_up_at:
        raise ValueError(f"a tier change at {change.at.isoformat()} precedes the signup")
    check_not_invoiced(change, invoiced_periods)
    later = [c for c in found.changes if c.at > change.at]
    if later:
        raise ValueError(f"account {found.account_id!r} already has a tier change after {change.at.isoformat()}")
    changes = (*(c for c in found.changes if c.at != change.at), change)
    return replace(found, changes=changes, tier_change_cancelled_at=None)


def change_tier(
    directory: AccountDirectory, account_id: str, change: TierChange, invoiced_periods: Iterable[str] = ()
) -> AccountProfile:
    """Append a tier change (its effective time decided by ``kilo_billing.rating.effective_change``)."""
    invoiced = tuple(invoiced_periods)
    return update_profile(directory, account_id, lambda found: with_tier_change(found, change, invoiced))


def set_status(directory: AccountDirectory, account_id: str, status: str) -> AccountProfile:
    """Suspend an account, hold it for abuse, mark it past due, or make it active again (operators, invoicing, the
    abuse signals). The entitlement check reads it from the profile (docs/alerts.md)."""
    if status not in ACCOUNT_STATUSES:
        raise ValueError(f"status {status!r} is not one of {ACCOUNT_STATUSES}")
    return update_profile(directory, account_id, lambda found: replace(found, status=status))


class InvalidContactError(ValueError):
    """A contact detail or alert preference that cannot be used; the message names it."""


# Characters refused in free text the API stores (D181): Unicode controls (Cc: C0, DEL, C1 - NUL, tab, CR, LF,
# ESC among them), line and paragraph separators, lone surrogates (not encodable: DynamoDB would refuse the item) and
# the bidirectional overrides and isolates (they reorder what a reader sees: a name could display as another)
_BIDI_CONTROLS: Final = frozenset("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")


def check_text(field_name: str, value: str) -> str:
    """``value`` unless it holds a control character (``InvalidContactError`` naming the field, the character and its
    position)."""
    for position, character in enumerate(value, start=1):
        if unicodedata.category(character) in ("Cc", "Cs", "Zl", "Zp") or character in _BIDI_CONTROLS:
            raise InvalidContactError(
                f"{field_name} contains the control character U+{ord(character):04X} at position {position}; "
                "only printable text is accepted"
            )
    return value


def check_phone(value: str) -> str:
    if not _E164.fullmatch(value):
        raise InvalidContactError(f"phone {value!r} must be an E.164 number: '+', country code, number (8-15 digits)")
    return value


def check_email(value: str) -> str:
    """An e-mail address the API stores (the alert contact's, a member's): no control character (``check_text``),
    an address like name@example.com, ASCII only (SES sends to 7-bit ASCII addresses only: D181,
    D204). ``InvalidContactError`` naming ``email``."""
    check_text("email", value)
    if len(value) > 254 or not _EMAIL.fullmatch(value):
        raise InvalidContactError(f"email {value!r} is not an address like name@example.com")
    if not value.isascii():  # mail to it would be refused by SES (every alert lost)
        raise InvalidContactError(f"email {value!r}: mail goes through SES, which takes ASCII addresses only")
    return value


def set_alert_contact(
    directory: AccountDirectory,
    account_id: str,
    *,
    name: str | None = None,
    email: str | None = None,
    phone: str | None = None,
    preferences: dict[str, tuple[str, ...]] | None = None,
    check_new_phone: Callable[[str], None] | None = None,
) -> AccountProfile:
    """Change who hears about an account's alerts and how (the account API; ``""`` clears a detail). Validated
    whole before anything is saved: a name and an email without control characters (D181), an E.164 phone,
    an email address, known channels for known kinds (a kind stored before kinds were checked may be sent back
    unchanged: a form returns what it read; ``[]`` for it removes it; a kind of ``REQUIRED_ALERT_KINDS`` gets at
    least one channel) -
    kinds not given keep their choice, so an unchecked kind would stay on the profile for good (D171). At most
    ``MAX_ALERT_KINDS`` kinds that are known or change per save. ``check_new_phone`` (it raises to refuse) is asked
    about a number other than the stored one (the account API's SMS regions); the stored number sent back
    unchanged is kept, as a name is."""
    if phone:
        check_phone(phone)
    if email:
        check_email(email)  # controls, the pattern, ASCII only (D181)
    for kind, channels in (preferences or {}).items():
        unknown = set(channels) - set(ALERT_CHANNELS)
        if unknown:
            raise InvalidContactError(f"alert {kind!r}: unknown channel(s) {sorted(unknown)}; use {ALERT_CHANNELS}")

    def changed(found: AccountProfile) -> AccountProfile:
        if name and name != found.name:  # one stored before the check may be sent back (the form returns it as read)
            check_text("name", name)
        chosen = dict(found.alert_preferences)
        counted = 0
        for kind, channels in (preferences or {}).items():
            wanted = tuple(c for c in ALERT_CHANNELS if c in channels)
            if kind not in ALERT_KINDS:
                if chosen.get(kind) == wanted:
                    continue  # a stored unknown kind sent back unchanged: kept, not counted
                if wanted:
                    raise InvalidContactError(f"alert {kind!r} is not an alert kind; use {', '.join(ALERT_KINDS)}")
                chosen.pop(kind, None)  # [] for an unknown kind: removed (none chosen is what it already did)
            elif not wanted and kind in REQUIRED_ALERT_KINDS and chosen.get(kind) != wanted:
                raise InvalidContactError(
                    f"alert {kind!r} must go by at least one channel (email or sms); the kinds that must reach "
                    f"someone: {', '.join(REQUIRED_ALERT_KINDS)}"
                )  # an empty choice stored before this check may be sent back unchanged (it goes by email)
            else:
                chosen[kind] = wanted
            counted += 1
            if counted > MAX_ALERT_KINDS:
                raise InvalidContactError(f"alert kinds: at most {MAX_ALERT_KINDS} known or changed kinds per save")
        number = found.phone if phone is None else phone
        if number and number != found.phone and check_new_phone is not None:
            check_new_phone(number)
        return replace(
            found,
            name=found.name if name is None else name,
            email=found.email if email is None else email,
            phone=number,
            phone_verified=found.phone_verified and number == found.phone,  # a new number is not verified yet
            alert_preferences=tuple(sorted(chosen.items())),
        )

    return update_profile(directory, account_id, changed)


def mark_phone_verified(directory: AccountDirectory, account_id: str, phone: str) -> AccountProfile:
    """The account confirmed the code sent to ``phone`` (the account API) - or an operator vouches for the number
    (the local demo): it is verified if it is still the account's number, else ``InvalidContactError`` (it changed
    since the code was sent) and nothing is saved."""

    def changed(found: AccountProfile) -> AccountProfile:
        if not phone or found.phone != phone:
            raise InvalidContactError(f"phone {phone!r} is no longer the account's number: save it again")
        return replace(found, phone_verified=True)

    return update_profile(directory, account_id, changed)


# The progressive billing threshold's range: below a dollar an early invoice would go out at nearly every hourly check
# (a crypto bill costing more gas than it collects; a card one held back by the card minimum anyway), and above a
# million dollars it is a typo (and past what DynamoDB's numbers hold, 9.99E+125, it would not even be stored)
PROGRESSIVE_MIN_USD: Final = Decimal("1.00")
PROGRESSIVE_MAX_USD: Final = Decimal("1000000.00")


def progressive_threshold_problem(threshold_usd: Decimal) -> str | None:
    """Why ``threshold_usd`` cannot be a progressive billing threshold (``None``: it can): a whole number of cents
    from ``PROGRESSIVE_MIN_USD`` to ``PROGRESSIVE_MAX_USD``."""
    if not threshold_usd.is_finite():
        return f"must be an amount in USD, got {threshold_usd}"
    if not PROGRESSIVE_MIN_USD <= threshold_usd <= PROGRESSIVE_MAX_USD:
        return f"must be from {PROGRESSIVE_MIN_USD} to {PROGRESSIVE_MAX_USD} USD, got {threshold_usd}"
    if not is_whole_cents(threshold_usd):
        return f"must be a whole number of cents, got {threshold_usd}"
    return None


def set_progressive_threshold(
    directory: AccountDirectory, account_id: str, threshold_usd: Decimal | None
) -> AccountProfile:
    """Turn progressive billing on (a threshold amount: ``progressive_threshold_problem``) or off (``None``) for an
    account."""
    problem = None if threshold_usd is None else progressive_threshold_problem(threshold_usd)
    if problem is not None:
        raise ValueError(f"the progressive billing threshold {problem}")
    cents = None if threshold_usd is None else two_places(threshold_usd)  # 1E+2 is stored as 100.00
    return update_profile(directory, account_id, lambda found: replace(found, progressive_threshold_usd=cents))
