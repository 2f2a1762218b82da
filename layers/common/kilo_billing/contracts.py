"""Versioned event contracts published on the billing bus (EventBridge ``detail``), shared by producers and consumers.

A contract's ``detail-type`` carries its major version (``UsageThresholdCrossed.v1``). Adding an optional field keeps
the version; changing or removing one publishes a new version alongside the old until every consumer has moved.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any, ClassVar, Final, Literal

from pydantic import BaseModel, ConfigDict, Field, SerializerFunctionWrapHandler, model_serializer, model_validator

SOURCE_RATING: Final = "kilo.billing.rating"


class ContractV1(BaseModel):
    """What every version-1 contract shares: immutable, no unknown fields, ``schema_version`` first in the detail.

    Each contract's validator is built when the contract is first used, not at import (``defer_build``): a function
    imports every contract its logic may publish or read, and uses one or two of them on a request, if any."""

    model_config = ConfigDict(frozen=True, extra="forbid", defer_build=True)

    schema_version: Literal[1] = 1


class InvoiceEventV1(ContractV1):
    """What every contract about one of an account's invoices starts with (in this order in the detail); each
    contract's docstring says how its ``event_id`` is made."""

    event_id: str
    account_id: str
    invoice_id: str


CryptoAsset = Literal["ETH", "USDC", "SOL"]
# why a seen crypto payment stopped counting, as a reopen notice tells it (D434 amended (hcw)): dropped with its block
# (EVM: it may be mined again), expired (Solana: it cannot land any more) or failed
LostPayment = Literal["dropped", "expired", "failed"]
"""The assets a crypto bill can be paid in."""


class UsageThresholdCrossedV1(ContractV1):
    """Month-to-date usage reached a share of an included allowance, or of the budget the account set.

    Published once per (account, period, meter, scope, threshold); ``event_id`` is deterministic, so a consumer that
    sees the same id twice (a retry after a crash) treats it as one. ``scope`` is what the share was measured against
    (``limit_scope``: the budget or hard limit in force; ``segment_scope``: the tier segment whose prorated allowance
    it is), so a raised limit or a new tier segment is a new crossing with an id of its own. Events published before
    the field existed have none (one crossing per meter and threshold a month).
    """

    DETAIL_TYPE: ClassVar[str] = "UsageThresholdCrossed.v1"

    event_id: str
    account_id: str
    period: str = Field(pattern=r"^\d{4}-\d{2}$")
    # "budget": a percentage of the soft budget; "hard_limit": the bill so far reached the hard limit (percent 100)
    meter: Literal["video", "audio", "messages", "data_transfer", "budget", "hard_limit"]
    threshold_percent: int = Field(gt=0, le=1000)
    used: str  # decimal string: minutes, messages, GB, or USD for the budget
    limit: str  # the included allowance (prorated, of the segment), the budget or the hard limit, same unit
    occurred_at: str  # ISO-8601 UTC, when rating saw the crossing
    scope: str | None = Field(default=None, pattern=r"^[0-9.]{1,40}(v[0-9]{1,12})?$")

    @staticmethod
    def make_id(account_id: str, period: str, meter: str, threshold: int, scope: str | None = None) -> str:
        scoped = f"{meter}@{scope}" if scope else meter
        return f"threshold:{account_id}:{period}:{scoped}:{threshold}"

    @property
    def key(self) -> str:
        """What a consumer records it under (the alerts ledger): ``<meter>@<scope>:<percent>``; unscoped (older
        events) ``<meter>:<percent>``."""
        scoped = f"{self.meter}@{self.scope}" if self.scope else self.meter
        return f"{scoped}:{self.threshold_percent}"


def limit_scope(amount: Decimal, version: int = 0) -> str:
    """The scope of a budget or hard-limit crossing: the amount in force, canonical (``10``, ``12.5``), so the same
    limit written ``10`` or ``10.00`` is one scope, and the setting's version (``AccountProfile.budget_version`` /
    ``hard_limit_version``): ``10v3``, so the same amount set again is a new scope. Version 0 (a limit not changed
    since versions were kept) is the amount alone, the scope its crossings had before (D124)."""
    amount_part = format(amount.normalize(), "f")
    return f"{amount_part}v{version}" if version else amount_part


def segment_scope(start: datetime) -> str:
    """The scope of an allowance crossing: its tier segment's start, whole seconds since the epoch."""
    return str(int(start.timestamp()))


class HardLimitStillReachedV1(ContractV1):
    """The sweeper's run found a hard limit already announced (its ``UsageThresholdCrossed.v1`` markers recorded)
    still reached while the account has calls going on: whoever joined after the enforcement (a token minted before
    the limit, an app skipping the entitlement check) is enforced too (D71 amended). Enforcement only: no alert (the
    crossing's alert was sent once). ``scope`` is the hard limit's ``limit_scope``; ``used`` the bill so far (USD,
    open calls counted), ``limit`` the hard limit. ``event_id``: ``still_reached:<account>:<period>:hard_limit@<scope>:
    <epoch ms of the run>`` (one per run: each run asks again, nothing to treat as one)."""

    DETAIL_TYPE: ClassVar[str] = "HardLimitStillReached.v1"

    event_id: str
    account_id: str
    period: str = Field(pattern=r"^\d{4}-\d{2}$")
    used: str
    limit: str
    occurred_at: str  # ISO-8601 UTC, the sweeper's run
    scope: str = Field(pattern=r"^[0-9.]{1,40}(v[0-9]{1,12})?$")

    @staticmethod
    def make_id(account_id: str, period: str, scope: str, now_ms: int) -> str:
        return f"still_reached:{account_id}:{period}:hard_limit@{scope}:{now_ms}"


class UnattributedUsageV1(ContractV1):
    """Usage that no billing account could be found for (kept, reported, never dropped)."""

    DETAIL_TYPE: ClassVar[str] = "UnattributedUsage.v1"

    room_sid: str
    participant_sid: str
    identity: str
    period: str
    minutes: int
    # the account id the room's or participant's metadata named, when it was not registered for the period (nobody
    # registered it, or it signed up after the period: no close bills it; else None: no account found); the operator
    # registers it or fixes the app's metadata (D276, D280)
    unregistered_account: str | None = None


class UnattributedAppUsageV1(ContractV1):
    """App-reported usage (messages, data-transfer bytes) of an account dated in a period no close of it invoices -
    before its signup's period: kept in the unattributed bucket and reported, never billed (D291). One per
    account, period and meter of a rating batch: ``quantity`` in the meter's base unit (messages, bytes)."""

    DETAIL_TYPE: ClassVar[str] = "UnattributedAppUsage.v1"

    account_id: str
    period: str
    meter: str  # messages | data_transfer
    quantity: int


SOURCE_INVOICING: Final = "kilo.billing.invoicing"


class InvoiceIssuedV1(InvoiceEventV1):
    """Our invoice for an account and period left draft (open, or paid at once when it asks for nothing).
    ``event_id``: ``invoice-issued:<invoice id>``."""

    DETAIL_TYPE: ClassVar[str] = "InvoiceIssued.v1"

    number: str
    period: str = Field(pattern=r"^\d{4}-\d{2}$")
    total: str  # USD, two decimals
    method: Literal["card", "crypto"]
    status: str
    hosted_url: str | None = None
    occurred_at: str


class PaymentFailedV1(InvoiceEventV1):
    """The processor could not collect an invoice (declined card, or a payment needing the customer's action).
    ``event_id``: ``payment-failed:<processor invoice id>:<attempt_count>`` for a declined attempt and
    ``...:<attempt_count>:action_required`` for one needing the customer's action - at most one of each per payment
    attempt, however many events Stripe sends for it (none declined after the action-required one was marked);
    ``payment-failed:<processor event id>`` when the event names no attempt."""

    DETAIL_TYPE: ClassVar[str] = "PaymentFailed.v1"

    total: str
    reason: Literal["payment_failed", "action_required"]
    hosted_url: str | None = None
    occurred_at: str  # when the processor's event was created (the handler's clock if it says not): D348 amended


DisputeKind = Literal["chargeback", "inquiry", "escalation"]
"""What a dispute is: a chargeback (the payment's funds withdrawn), an inquiry (the bank asked; nothing withdrawn), or
an inquiry that became a chargeback under the same dispute id."""


class DisputeOpenedV1(InvoiceEventV1):
    """A customer disputed a payment: the account is flagged until the dispute closes. ``event_id``:
    ``dispute-opened:<dispute id>``, or ``dispute-escalated:<dispute id>`` when an inquiry escalates under the same id
    (closed ``warning_closed`` first or not; alerted under its own key, D359 amended (wd7, dk2)). ``kind`` says which
    (D359 amended (dk)); an event published before the field existed has none: read as ``escalation`` when its id is
    ``dispute-escalated:...``, else ``chargeback`` (the old layer did not say, and worded both alike)."""

    DETAIL_TYPE: ClassVar[str] = "DisputeOpened.v1"

    dispute_id: str
    amount: str
    # when the processor's event was created (the handler's clock if it says not): D348 amended; an escalation: the
    # Dispute's own ``created``, the same on each event that may publish it (D359 amended (dk))
    occurred_at: str
    kind: DisputeKind = "chargeback"

    @model_validator(mode="before")
    @classmethod
    def _kind_of_an_old_event(cls, data: Any) -> Any:
        """The event id's prefix, read only for an event without ``kind`` (published by the old layer)."""
        if isinstance(data, dict) and "kind" not in data:
            escalated = str(data.get("event_id", "")).startswith("dispute-escalated:")
            return {**data, "kind": "escalation" if escalated else "chargeback"}
        return data


class RefundFailedV1(InvoiceEventV1):
    """A card refund the processor made and then failed (the customer's bank returned it: card closed, expired ...):
    the money is back in our processor balance and the customer got nothing. Ours (an operator's ``invoice refund``)
    or one made in the processor's dashboard (``ours`` False). ``reason``: the processor's ``failure_reason``
    (``unknown`` when it gives none). ``event_id``: ``refund-failed:<processor refund id>`` (D340)."""

    DETAIL_TYPE: ClassVar[str] = "RefundFailed.v1"

    refund_id: str
    number: str
    amount: str  # USD, two decimals
    reason: str
    ours: bool
    occurred_at: str  # when the processor's event was created (the handler's clock if it says not): D348 amended


class PaymentMethodAttachedV1(ContractV1):
    """An account attached a payment method: a card (the processor's card ``fingerprint``, the same for the same card
    number across customers) or a crypto wallet (its address). The abuse signals count free accounts per
    fingerprint; nothing else is kept of the method."""

    DETAIL_TYPE: ClassVar[str] = "PaymentMethodAttached.v1"

    event_id: str  # payment-method:<processor or chain id>
    account_id: str
    method: Literal["card", "wallet"]
    fingerprint: str = Field(min_length=1, max_length=200, pattern=r"^[^#\s]+$")
    occurred_at: str


SOURCE_CRYPTO: Final = "kilo.billing.crypto"


class CryptoSeenTransferV1(BaseModel):
    """One chain transfer a ``CryptoPaymentSeen.v1`` covers."""

    model_config = ConfigDict(frozen=True, extra="forbid", defer_build=True)

    payment_id: str  # <chain>:<tx id>:<index>
    quote_id: str | None = None
    asset: CryptoAsset
    amount: str  # in the asset, decimal string (e.g. "12.5" USDC)
    # two decimals: a credit that counts toward the bill, its share of their counted sum split by each one's exact USD
    # (D217); one in review (or refused), its own USD rounded, as the history shows it (D226)
    amount_usd: str
    tx_id: str
    explorer_url: str | None = None


class CryptoPaymentSeenV1(InvoiceEventV1):
    """Chain payments toward an account's bill were seen on chain (included, not yet final): the bill shows
    PROCESSING. Published once per bill per watcher batch (or fast-path submission), carrying every transfer to that
    bill it saw (``transfers``), so that several transfers seen in one poll make one alert (D216).

    The one-transfer fields (``quote_id`` .. ``explorer_url``) are the first transfer's, as in events published before
    ``transfers`` existed (which cover that one transfer alone: ``transfers`` empty, ``total_usd`` None).

    ``event_id``: one transfer, ``crypto-seen:<payment id>[#<generation>]`` (payment id: ``<chain>:<tx id>:<index>``;
    D167); several, ``crypto-seen:<invoice id>:<digest of their payment event ids>``."""

    DETAIL_TYPE: ClassVar[str] = "CryptoPaymentSeen.v1"

    quote_id: str | None = None  # None: matched by a linked wallet or the fast path without a quote
    chain: str  # configured chain key: "ethereum", "base", "solana"
    asset: CryptoAsset
    amount: str  # in the asset, decimal string (e.g. "12.5" USDC)
    amount_usd: str  # at the quote's locked rate, two decimals
    tx_id: str
    explorer_url: str | None = None
    occurred_at: str
    transfers: tuple[CryptoSeenTransferV1, ...] = ()  # every transfer covered, the first one first
    total_usd: str | None = None  # the transfers' ``amount_usd`` together (the counted ones' exact sum rounded once,
    # D178, plus any in review at their own USD, D226)


class CryptoBillSettledV1(InvoiceEventV1):
    """An account's crypto bill is paid: its payments are final and the settled USD covers the bill (inside
    tolerance). Published once per bill; invoicing marks the invoice paid on it, alerts tell the customer.
    ``event_id``: ``crypto-settled:<invoice id>``."""

    DETAIL_TYPE: ClassVar[str] = "CryptoBillSettled.v1"

    total: str  # the bill, USD
    settled_usd: str  # what the final payments are worth in USD (locked or late-policy rates)
    written_off_usd: str = "0.00"  # shortfall inside tolerance
    credit_usd: str = "0.00"  # overpayment kept as account credit
    flags: tuple[str, ...] = ()  # PARTIAL, OVERPAID, PAID_LATE, MULTIPLE
    tx_ids: tuple[str, ...] = ()
    occurred_at: str


class CryptoCreditAddedV1(InvoiceEventV1):
    """A crypto bill already paid gained account credit, or paid part of what it wrote off: a payment finalized
    after the bill became PAID (a second payment, a late one accepted by the late policy). ``credit_usd`` is the
    bill's whole credit so far, not the increase: invoicing adds what it has not added yet for this invoice, so a
    repeated or older event adds nothing. ``event_id``: ``crypto-credit:<invoice id>:<credit_usd>``, and
    ``:<written_off_usd>`` when that is given."""

    DETAIL_TYPE: ClassVar[str] = "CryptoCreditAdded.v1"

    credit_usd: str  # the bill's credit in all, USD
    tx_ids: tuple[str, ...] = ()  # the payments counted after PAID
    occurred_at: str
    # a bill settled short (inside tolerance): what is still written off, USD - a later payment pays the write-off
    # before it becomes credit, so this only falls; invoicing lowers the invoice's to it. None: a bill settled in
    # full (or an event from before the field). ``event_id`` then ends ``:<written_off_usd>`` (D387)
    written_off_usd: str | None = None


class CryptoQuoteExpiringV1(InvoiceEventV1):
    """A quote the customer asked for expires soon and nothing has been seen for it yet. ``event_id``:
    ``quote-expiring:<quote id>``. ``number``: the invoice's number (``InvoiceIssuedV1.number``), what the
    dashboard's Pay with crypto page opens one bill by; events published before the field existed have none."""

    DETAIL_TYPE: ClassVar[str] = "CryptoQuoteExpiring.v1"

    quote_id: str
    chain: str
    asset: CryptoAsset
    amount: str
    payment_uri: str
    expires_at: str
    occurred_at: str
    number: str | None = None


class CryptoBillReopenedV1(InvoiceEventV1):
    """An account's crypto bill is open again: a payment of it its watcher named stuck (final block long since,
    neither finality nor loss provable) stopped covering it, and the bill asks the customer for ``amount_usd`` - the
    rest, or the whole ``total`` when the stuck payments were all it had (D419, D434). Published once per reopen:
    when a stuck payment's release leaves the bill OPEN asking more than before. ``event_id``:
    ``crypto-reopened:<invoice id>:<payment id>@<block hash>`` (the payment released, the block it was named stuck
    in: the same payment seen again elsewhere and stuck there again is another reopen). ``number``: the invoice's
    number, what the dashboard's Pay with crypto page opens one bill by (None: a bill without one).
    Also published when a seen payment stops counting at all and leaves the bill OPEN asking more (D434 amended
    (hcw)): ``lost`` "dropped" (its block reorged away, EVM: it may be mined again), "expired" (the same on Solana:
    it cannot land any more) or "failed" (its transaction reverted or failed); the id names the block it left (or
    failed in) and ends ``/<due, Unix seconds>``; ``lost_usd`` and ``lost_tx_id`` that payment's; absent (None) for
    a stall - a stall's notice leaves the three fields out of its detail."""

    DETAIL_TYPE: ClassVar[str] = "CryptoBillReopened.v1"

    total: str  # the bill, USD
    amount_usd: str  # what a new quote asks now, USD (``remaining_usd``, as the quote API asks it)
    stuck_usd: str  # what the bill's stuck payments are worth at their quotes' rates, USD, rounded once
    stuck_tx_ids: tuple[str, ...] = ()  # the stuck payments' transactions
    occurred_at: str
    number: str | None = None
    lost: LostPayment | None = None  # the move told, when not a stall
    lost_usd: str | None = None  # the dropped or failed payment, USD at its quote's rate
    lost_tx_id: str | None = None  # its transaction

    @model_serializer(mode="wrap")
    def _stall_as_before(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        """A stall's detail without the three ``lost`` fields, as before them: an alerts function not yet updated
        (``extra="forbid"``) still reads every stall's notice."""
        dumped: dict[str, Any] = handler(self)
        if self.lost is None:
            for name in ("lost", "lost_usd", "lost_tx_id"):
                dumped.pop(name, None)
        return dumped


class UnattributedCryptoPaymentV1(ContractV1):
    """A payment to a merchant address that matches no bill: kept in the UNATTRIBUTED list for an operator."""

    DETAIL_TYPE: ClassVar[str] = "UnattributedCryptoPayment.v1"

    event_id: str  # crypto-unattributed:<payment id>[#<generation>] (a reused id's new payment: D167)
    chain: str
    asset: CryptoAsset
    amount: str
    tx_id: str
    sender: str
    occurred_at: str
    # its amount is counted in that payment already (a Solana transaction stored as one net credit before the split,
    # D91 amended (sp3)): nothing to assign - absent otherwise
    counted_in: str | None = None
