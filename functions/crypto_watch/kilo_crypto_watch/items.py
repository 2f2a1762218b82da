"""The crypto table (one table, single-table design; docs/decisions.md): domain values <-> DynamoDB items through the
layer's TypeSerializer helpers.

Keys (``pk`` / ``sk``), and the two sparse indexes:
- bill ``BILL#<invoice>`` / ``BILL``; its quotes ``BILL#<invoice>`` / ``QUOTE#<quote>`` (one Query reads a bill and
  its quotes);
- Solana Pay reference ``REF#<reference>`` / ``REF`` -> the quote, indexed ``watch`` while monitored;
- chain payment ``PAY#<payment id>`` / ``PAY``, indexed ``pending`` while SEEN (or FAILED, not final); an
  attributed payment's link ``TXN#<chain>#<transaction>`` / ``PAY#<payment id>`` (one Query finds a transaction's
  attributed payments); an archived payment (displaced from its id by another credit of its transaction, D168) is
  ``PAY#<payment id>~<generation>``;
- linked wallet ``WALLET#<evm|solana>#<address>`` / ``WALLET`` (EVM addresses lower-cased; a key's wallet, the same
  address on every chain of its kind), or ``/ WALLET#<chain>`` for an ERC-1271 contract wallet (verified on that chain
  only: the same address elsewhere may be another contract, or none), sign-in nonce
  ``NONCE#<nonce>`` / ``NONCE`` (TTL), watcher cursor ``CURSOR#<chain>`` / ``CURSOR``.
Indexes: ``watch`` (``gsi1pk`` / ``gsi1sk``): ``WATCH#<chain>`` / ``<monitor until>#<reference>`` for references,
``PENDING#<chain>`` / ``<payment id>`` for SEEN (and not final FAILED) payments, ``EXPIRING#<chain>`` /
``<expires at>#<quote id>`` for quotes made ACTIVE and not yet announced as expiring (removed once announced or
passed), ``ANNOUNCE#BILL`` / ``<invoice id>`` for PAID bills whose settlement or credit invoicing has not been told
of; ``account`` (``gsi2pk`` / ``gsi2sk``): ``ACCOUNT#<id>`` (or ``UNATTRIBUTED`` for payments nobody claims, while
not ORPHANED) / ``BILL#...``, ``QUOTE#...``, ``PAY#...``, ``WALLET#...`` - the history and the operator's list.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, Final, cast

from kilo_billing.items import Item, from_item, to_item
from kilo_crypto_watch.model import (
    Asset,
    Bill,
    BillFlag,
    BillPayment,
    BillStatus,
    Cursor,
    LockedRate,
    MatchedBy,
    ObservedTransfer,
    Payment,
    PaymentStatus,
    Quote,
    QuoteStatus,
    RateReading,
)

UNATTRIBUTED: Final = "UNATTRIBUTED"
NUMBER_DIGITS: Final = 38  # a DynamoDB number's precision
NONCE_TTL_GRACE_SECONDS: Final = 86_400


def key(pk: str, sk: str) -> Item:
    return to_item({"pk": pk, "sk": sk})


def bill_pk(invoice_id: str) -> str:
    return f"BILL#{invoice_id}"


def account_pk(account_id: str) -> str:
    return f"ACCOUNT#{account_id}"


def payment_pk(payment_id: str) -> str:
    return f"PAY#{payment_id}"


def wallet_pk(kind: str, address: str) -> str:
    return f"WALLET#{kind}#{normal_address(kind, address)}"


def wallet_sk(chain: str | None = None) -> str:
    """The link of a key's wallet (``None``: every chain of its kind), or of a contract wallet on ``chain``."""
    return "WALLET" if chain is None else f"WALLET#{chain}"


def normal_address(kind: str, address: str) -> str:
    return address.lower() if kind == "evm" else address


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def _time(value: Any) -> datetime:
    return datetime.fromisoformat(str(value))


def _maybe_time(value: Any) -> datetime | None:
    return _time(value) if value else None


# --- bills ---------------------------------------------------------------------------------------------------------


ANNOUNCE_PK: Final = "ANNOUNCE#BILL"


def announcement_due(bill: Bill) -> bool:
    """A PAID bill whose settlement, part of whose credit, or a cut of whose write-off (D387), invoicing has not
    been told of; or a bill whose reopen the customer has not been told of (D434)."""
    return bool(bill.reopens_owed) or (
        bill.status is BillStatus.PAID
        and (
            not bill.settled_announced
            or bill.credit_usd > bill.credit_announced_usd
            or bill.written_off_usd < bill.write_off_announced()
        )
    )


def exact_usd(value: Decimal) -> Decimal | str:
    """A credit's exact USD (token amount x rate, not rounded; D178) as stored: a number when its digits fit
    DynamoDB's 38, else its plain string (a whale's wei at an 18-decimal feed's rate), which reads back the same
    (``Decimal(stored)``) - the serializer would refuse it as a number, and the write with it."""
    return value if len(value.as_tuple().digits) <= NUMBER_DIGITS else format(value, "f")


def bill_to_item(bill: Bill) -> Item:
    return to_item(
        {
            "pk": bill_pk(bill.invoice_id),
            "sk": "BILL",
            "gsi2pk": account_pk(bill.account_id),
            "gsi2sk": f"BILL#{bill.issued_at.isoformat()}#{bill.invoice_id}",
            # on the watch index while invoicing has not been told all of it (PAID unannounced, or credit gained
            # since): the watcher runs' sweep publishes what a crash between the save and the publish left out
            "gsi1pk": ANNOUNCE_PK if announcement_due(bill) else None,
            "gsi1sk": bill.invoice_id if announcement_due(bill) else None,
            "kind": "bill",
            "invoice_id": bill.invoice_id,
            "account_id": bill.account_id,
            "number": bill.number,
            "period": bill.period,
            "total_usd": bill.total_usd,
            "issued_at": bill.issued_at.isoformat(),
            "status": bill.status.value,
            "flags": sorted(flag.value for flag in bill.flags),
            "payments": [_line_to_map(line) for line in bill.payments],
            "settled_usd": bill.settled_usd,
            "written_off_usd": bill.written_off_usd,
            "credit_usd": bill.credit_usd,
            "settled_payment_ids": list(bill.settled_payment_ids),
            "paid_at": _iso(bill.paid_at),
            "settled_announced": bill.settled_announced,
            "credit_announced_usd": bill.credit_announced_usd,
            "written_off_announced_usd": bill.written_off_announced_usd,
            "reopens_owed": list(bill.reopens_owed) or None,
            "version": bill.version,
        }
    )


def _line_to_map(line: BillPayment) -> dict[str, Any]:
    values: dict[str, Any] = {
        "payment_id": line.payment_id,
        "tx_id": line.tx_id,
        "asset": line.asset,
        "usd": exact_usd(line.usd),
        "status": line.status.value,
        "late": line.late,
        "review": line.review,
    }
    if line.refund_owed:
        values["refund_owed"] = True
    if line.stalled:
        values["stalled"] = True
    if line.quote_id:
        values["quote_id"] = line.quote_id
    return values


def bill_from_item(item: Mapping[str, Any]) -> Bill:
    values = from_item(item)
    return Bill(
        invoice_id=str(values["invoice_id"]),
        account_id=str(values["account_id"]),
        number=str(values.get("number", "")),
        period=str(values.get("period", "")),
        total_usd=Decimal(values["total_usd"]),
        issued_at=_time(values["issued_at"]),
        status=BillStatus(str(values["status"])),
        flags=frozenset(BillFlag(str(flag)) for flag in values.get("flags", [])),
        payments=tuple(
            BillPayment(
                payment_id=str(line["payment_id"]),
                tx_id=str(line["tx_id"]),
                asset=cast(Asset, str(line["asset"])),
                usd=Decimal(line["usd"]),
                status=PaymentStatus(str(line["status"])),
                quote_id=str(line["quote_id"]) if line.get("quote_id") else None,
                late=bool(line.get("late", False)),
                review=bool(line.get("review", False)),
                refund_owed=bool(line.get("refund_owed", False)),
                stalled=bool(line.get("stalled", False)),
            )
            for line in values.get("payments", [])
        ),
        settled_usd=Decimal(values.get("settled_usd", "0.00")),
        written_off_usd=Decimal(values.get("written_off_usd", "0.00")),
        credit_usd=Decimal(values.get("credit_usd", "0.00")),
        settled_payment_ids=tuple(str(pid) for pid in values.get("settled_payment_ids", [])),
        paid_at=_maybe_time(values.get("paid_at")),
        settled_announced=bool(values.get("settled_announced", False)),
        credit_announced_usd=Decimal(values.get("credit_announced_usd", "0.00")),
        written_off_announced_usd=(
            Decimal(values["written_off_announced_usd"])
            if values.get("written_off_announced_usd") is not None
            else None
        ),
        reopens_owed=tuple(str(owed) for owed in values.get("reopens_owed", [])),
        version=int(values.get("version", 0)),
    )


# --- quotes --------------------------------------------------------------------------------------------------------


def _reading_to_map(reading: RateReading) -> dict[str, Any]:
    return {
        "source": reading.source,
        "asset": reading.asset,
        "price": reading.price,
        "updated_at": reading.updated_at.isoformat(),
        "heartbeat_seconds": reading.heartbeat_seconds,
        "round_id": reading.round_id,
    }


def _reading_from_map(values: Mapping[str, Any]) -> RateReading:
    heartbeat = values.get("heartbeat_seconds")
    round_id = values.get("round_id")
    return RateReading(
        source=str(values["source"]),
        asset=cast(Asset, str(values["asset"])),
        price=Decimal(values["price"]),
        updated_at=_time(values["updated_at"]),
        heartbeat_seconds=int(heartbeat) if heartbeat is not None else None,
        round_id=int(round_id) if round_id is not None else None,
    )


def quote_to_item(quote: Quote) -> Item:
    return to_item(
        {
            "pk": bill_pk(quote.invoice_id),
            "sk": f"QUOTE#{quote.quote_id}",
            "gsi1pk": expiring_pk(quote.chain) if quote.status is QuoteStatus.ACTIVE else None,
            "gsi1sk": expiring_sk(quote) if quote.status is QuoteStatus.ACTIVE else None,
            "gsi2pk": account_pk(quote.account_id),
            "gsi2sk": f"QUOTE#{quote.created_at.isoformat()}#{quote.quote_id}",
            "kind": "quote",
            "quote_id": quote.quote_id,
            "invoice_id": quote.invoice_id,
            "account_id": quote.account_id,
            "chain": quote.chain,
            "asset": quote.asset,
            "amount_usd": quote.amount_usd,
            "rate": quote.rate.price,
            "rate_locked_at": quote.rate.locked_at.isoformat(),
            # every reading as a map; None fields are dropped by DynamoDB's NULL-free shape below
            "readings": [
                {name: value for name, value in _reading_to_map(r).items() if value is not None}
                for r in quote.rate.readings
            ],
            "atomic_amount": quote.atomic_amount,
            "pay_to": quote.pay_to,
            "created_at": quote.created_at.isoformat(),
            "expires_at": quote.expires_at.isoformat(),
            "monitor_until": quote.monitor_until.isoformat(),
            "payment_uri": quote.payment_uri,
            "reference": quote.reference,
            "memo": quote.memo,
            "status": quote.status.value,
        }
    )


def expiring_pk(chain: str) -> str:
    return f"EXPIRING#{chain}"


def expiring_sk(quote: Quote) -> str:
    return f"{quote.expires_at.astimezone(UTC).isoformat()}#{quote.quote_id}"


def quote_from_item(item: Mapping[str, Any]) -> Quote:
    values = from_item(item)
    asset = cast(Asset, str(values["asset"]))
    return Quote(
        quote_id=str(values["quote_id"]),
        invoice_id=str(values["invoice_id"]),
        account_id=str(values["account_id"]),
        chain=str(values["chain"]),
        asset=asset,
        amount_usd=Decimal(values["amount_usd"]),
        rate=LockedRate(
            asset=asset,
            price=Decimal(values["rate"]),
            readings=tuple(_reading_from_map(r) for r in values.get("readings", [])),
            locked_at=_time(values["rate_locked_at"]),
        ),
        atomic_amount=int(values["atomic_amount"]),
        pay_to=str(values["pay_to"]),
        created_at=_time(values["created_at"]),
        expires_at=_time(values["expires_at"]),
        monitor_until=_time(values["monitor_until"]),
        payment_uri=str(values["payment_uri"]),
        reference=str(values["reference"]) if values.get("reference") else None,
        memo=str(values["memo"]) if values.get("memo") else None,
        status=QuoteStatus(str(values.get("status", "ACTIVE"))),
    )


def reference_to_item(quote: Quote) -> Item:
    if quote.reference is None:
        raise ValueError("quote has no reference")
    return to_item(
        {
            "pk": f"REF#{quote.reference}",
            "sk": "REF",
            "gsi1pk": f"WATCH#{quote.chain}",
            "gsi1sk": f"{quote.monitor_until.isoformat()}#{quote.reference}",
            "expires_at": quote.expires_at.astimezone(UTC).isoformat(),  # the watcher's recent ones (D290)
            "kind": "reference",
            "reference": quote.reference,
            "quote_id": quote.quote_id,
            "invoice_id": quote.invoice_id,
            "chain": quote.chain,
        }
    )


# --- payments ------------------------------------------------------------------------------------------------------


def pending(payment: Payment) -> bool:
    """Indexed ``pending`` for the watcher's finality check: SEEN, or FAILED while its block is not final."""
    return payment.status is PaymentStatus.SEEN or (payment.status is PaymentStatus.FAILED and not payment.final)


def listed_for(payment: Payment) -> str | None:
    """The ``account`` index's partition of a payment: its account's history; else the operator's UNATTRIBUTED list
    while it is on chain - an unattributed payment ORPHANED (its block reorged away) leaves the list, in the write
    that orphans it (conditional on its block, D157), and is back when its transaction is seen again; one an
    operator refunded (``refund_tx``) leaves it for good (D341, amended)."""
    if payment.account_id:
        return account_pk(payment.account_id)
    if payment.refund_tx is not None:  # sent back by an operator: nothing left to decide
        return None
    return None if payment.status is PaymentStatus.ORPHANED else UNATTRIBUTED


def payment_to_item(payment: Payment) -> Item:
    transfer = payment.transfer
    listed = listed_for(payment)
    return to_item(
        {
            "pk": payment_pk(payment.payment_id),
            "sk": "PAY",
            "gsi1pk": f"PENDING#{transfer.chain}" if pending(payment) else None,
            "gsi1sk": payment.payment_id if pending(payment) else None,
            "gsi2pk": listed,
            "gsi2sk": f"PAY#{payment.seen_at.isoformat()}#{payment.payment_id}" if listed else None,
            "kind": "payment",
            "payment_id": payment.payment_id,
            "chain": transfer.chain,
            "asset": transfer.asset,
            "tx_id": transfer.tx_id,
            "log_index": transfer.index,
            "block_number": transfer.block_number,
            "block_hash": transfer.block_hash,
            "sender": transfer.sender,
            "recipient": transfer.recipient,
            "atomic_amount": transfer.atomic_amount,
            "succeeded": transfer.succeeded,
            "references": list(transfer.references) or None,
            "memo": transfer.memo,
            "block_time": _iso(transfer.block_time),
            "stray": transfer.stray or None,
            "status": payment.status.value,
            "seen_at": payment.seen_at.isoformat(),
            "invoice_id": payment.invoice_id,
            "account_id": payment.account_id,
            "quote_id": payment.quote_id,
            "matched_by": payment.matched_by,
            "rate": payment.rate,
            "usd": None if payment.usd is None else exact_usd(payment.usd),
            "late": payment.late,
            "review": payment.review,
            "announced": payment.announced,
            "refund_owed": payment.refund_owed or None,
            "refund_tx": payment.refund_tx,
            "moved_to": payment.moved_to,
            "final": payment.final or None,
            "generation": payment.generation or None,
            "archived": payment.archived or None,
            "seen_event": payment.seen_event,
            "counted_in": payment.counted_in,
        }
    )


def transaction_pk(chain: str, tx_id: str) -> str:
    return f"TXN#{chain}#{tx_id}"


def transaction_link_to_item(payment: Payment) -> Item:
    """The transaction's index of its attributed payments (one item per payment id): a transfer re-mined under
    another id (an EVM log index that changed with the block) finds the payment whose bill it keeps (D155)."""
    transfer = payment.transfer
    return to_item(
        {
            "pk": transaction_pk(transfer.chain, transfer.tx_id),
            "sk": f"PAY#{payment.payment_id}",
            "kind": "transaction-link",
            "payment_id": payment.payment_id,
        }
    )


def payment_from_item(item: Mapping[str, Any]) -> Payment:
    values = from_item(item)
    transfer = ObservedTransfer(
        chain=str(values["chain"]),
        asset=cast(Asset, str(values["asset"])),
        tx_id=str(values["tx_id"]),
        index=int(values["log_index"]),
        block_number=int(values["block_number"]),
        block_hash=str(values["block_hash"]),
        sender=str(values["sender"]),
        recipient=str(values["recipient"]),
        atomic_amount=int(values["atomic_amount"]),
        succeeded=bool(values.get("succeeded", True)),
        references=tuple(str(r) for r in values.get("references", [])),
        memo=str(values["memo"]) if values.get("memo") else None,
        block_time=_maybe_time(values.get("block_time")),
        stray=bool(values.get("stray", False)),
    )
    return Payment(
        transfer=transfer,
        status=PaymentStatus(str(values["status"])),
        seen_at=_time(values["seen_at"]),
        invoice_id=str(values["invoice_id"]) if values.get("invoice_id") else None,
        account_id=str(values["account_id"]) if values.get("account_id") else None,
        quote_id=str(values["quote_id"]) if values.get("quote_id") else None,
        matched_by=cast(MatchedBy, str(values["matched_by"])) if values.get("matched_by") else None,
        rate=Decimal(values["rate"]) if values.get("rate") is not None else None,
        usd=Decimal(values["usd"]) if values.get("usd") is not None else None,
        late=bool(values.get("late", False)),
        review=bool(values.get("review", False)),
        announced=bool(values.get("announced", False)),
        refund_owed=bool(values.get("refund_owed", False)),
        refund_tx=str(values["refund_tx"]) if values.get("refund_tx") else None,
        moved_to=str(values["moved_to"]) if values.get("moved_to") else None,
        final=bool(values.get("final", False)),
        generation=int(values.get("generation", 0)),
        archived=bool(values.get("archived", False)),
        seen_event=str(values["seen_event"]) if values.get("seen_event") else None,
        counted_in=str(values["counted_in"]) if values.get("counted_in") else None,
    )


# --- wallets, nonces, cursors --------------------------------------------------------------------------------------


def wallet_to_item(
    kind: str, address: str, account_id: str, chain: str, linked_at: datetime, contract: bool = False
) -> Item:
    """``contract``: an ERC-1271 wallet, linked for ``chain`` only (a key's wallet is linked for every chain of its
    kind; ``chain`` is then where it signed in)."""
    scope = f"#{chain}" if contract else ""
    return to_item(
        {
            "pk": wallet_pk(kind, address),
            "sk": wallet_sk(chain if contract else None),
            "gsi2pk": account_pk(account_id),
            "gsi2sk": f"WALLET#{kind}#{normal_address(kind, address)}{scope}",
            "kind": "wallet",
            "wallet_kind": kind,
            "address": address,
            "account_id": account_id,
            "chain": chain,
            "contract": contract,
            "linked_at": linked_at.isoformat(),
        }
    )


def nonce_to_item(nonce: str, account_id: str, expires_at: datetime) -> Item:
    return to_item(
        {
            "pk": f"NONCE#{nonce}",
            "sk": "NONCE",
            "kind": "nonce",
            "account_id": account_id,
            "expires_at": expires_at.isoformat(),
            "ttl": int(expires_at.timestamp()) + NONCE_TTL_GRACE_SECONDS,
        }
    )


def cursor_to_item(cursor: Cursor) -> Item:
    return to_item(
        {
            "pk": f"CURSOR#{cursor.chain}",
            "sk": "CURSOR",
            "kind": "cursor",
            "chain": cursor.chain,
            "block_number": cursor.block_number,
            "block_hash": cursor.block_hash,
            "last_signature": cursor.last_signature,
            "updated_at": _iso(cursor.updated_at),
            "first_block": cursor.first_block,
        }
    )


def cursor_from_item(item: Mapping[str, Any]) -> Cursor:
    values = from_item(item)
    return Cursor(
        chain=str(values["chain"]),
        block_number=int(values["block_number"]),
        block_hash=str(values["block_hash"]),
        last_signature=str(values["last_signature"]) if values.get("last_signature") else None,
        updated_at=_maybe_time(values.get("updated_at")),
        first_block=int(values["first_block"]) if values.get("first_block") is not None else None,
    )
