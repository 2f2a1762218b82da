"""Rated periods and invoices in the usage table: what invoicing reads of rating's storage and the fence it writes.

Partition ``ACCOUNT#<id>`` of the usage table (one strongly consistent Query reads an account's whole ledger):
- ``PROFILE``          the account profile (``kilo_billing.account_store``);
- ``PERIOD#<YYYY-MM>`` rating's aggregate: counters ``c#<segment start>#<meter>`` (rating ADDs them, never SETs);
  invoicing adds ``invoiced_at`` (rating then also keeps ``late#<meter>``, D19), the billed watermark
  ``b#<segment start>#<meter>`` and its revision ``billed_rev``;
- ``INVOICE#<YYYY-MM>[/part]`` our invoice (lines frozen at the close, status, transitions, links) and its
  ``revision`` (every update is conditioned on the revision read and adds one);
- ``CREDITNOTE#<YYYY-MM>/credit-<YYYY-MM>`` a credit note against an invoiced period (negative late usage, D51);
- ``BILLING``          invoice sequence, credit on account, the processor's customer id, dispute flag.
Plus ``GATEWAY#<processor invoice id>`` / ``INVOICE``: which of our invoices a processor id belongs to.

The fence (docs/decisions.md, "The close is fenced by a billed watermark"): the close writes, in one transaction, the
draft invoice (condition: none yet), the billed watermark of every period it bills (condition: the revision read) and
the next invoice number (condition: the number read). Rating's ADDs never conflict with it and never need to know it.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import replace
from datetime import datetime
from decimal import Decimal
from typing import Any, Final, Protocol

from kilo_billing.account_store import PROFILE_SORT_KEY, profile_from_item
from kilo_billing.aws import ConditionFailedError, call, paged_items
from kilo_billing.invoicing import (
    AccountLedger,
    BillingMethod,
    BillingState,
    CloseDraft,
    Counters,
    CreditNote,
    CreditNoteStatus,
    InvoiceRecord,
    InvoiceStatus,
    Line,
    PeriodLedger,
    RefundRequest,
)
from kilo_billing.items import Item, from_item, to_item
from kilo_billing.money import ZERO

KEY: Final = "pk"
SORT_KEY: Final = "sk"
COUNTER_PREFIX: Final = "c#"
BILLED_PREFIX: Final = "b#"
INVOICED_AT: Final = "invoiced_at"  # rating reads it (D19): the same attribute name as kilo_rate_usage.items
BILLING_SORT_KEY: Final = "BILLING"
INVOICE_PREFIX: Final = "INVOICE#"
PERIOD_PREFIX: Final = "PERIOD#"
CREDIT_NOTE_PREFIX: Final = "CREDITNOTE#"
ACCOUNTS_INDEX: Final = "accounts"  # sparse GSI on profiles' ``account_id``


class LedgerConflictError(Exception):
    """Someone else changed what the close read (another close, a concurrent update): re-read and retry."""


class LedgerStore(Protocol):
    """Invoicing's storage: an account's ledger, the close, invoice updates, the account list."""

    def ledger(self, account_id: str) -> AccountLedger: ...

    def create_invoice(self, draft: CloseDraft) -> None:
        """Write the close all or nothing; ``LedgerConflictError`` when the invoice or a read revision changed."""
        ...

    def update_invoice(self, invoice: InvoiceRecord, expected: InvoiceStatus) -> InvoiceRecord:
        """Replace the invoice if the stored one is still the one it was read from: its ``revision`` (a record
        written before revisions existed has none: read as 0), its status ``expected`` and its ``crypto_credit``
        (only ``update_invoice_with_credit`` moves it); ``LedgerConflictError`` otherwise (nothing written: re-read,
        re-apply). Returns the invoice as stored, its revision one more: a further update starts from it."""
        ...

    def update_invoice_with_credit(
        self, invoice: InvoiceRecord, expected: InvoiceStatus, credit_read: Decimal, added: Decimal
    ) -> InvoiceRecord:
        """``update_invoice`` and, in the same transaction, the account's credit from ``credit_read`` (what the caller
        read) to ``credit_read + added``, the invoice's ``crypto_credit`` having grown by ``added`` (its stored value
        must still be ``invoice.crypto_credit - added``); ``LedgerConflictError`` when the status, the invoice's
        crypto credit or the account's credit moved (nothing written)."""
        ...

    def update_invoice_and_credit(
        self,
        invoice: InvoiceRecord,
        expected: InvoiceStatus,
        credit_read: Decimal,
        added: Decimal,
        notes: Sequence[CreditNote] = (),
    ) -> InvoiceRecord:
        """``update_invoice`` and, in the same transaction, the account's credit from ``credit_read`` to
        ``credit_read + added`` (an invoice voided gives back the credit it consumed: the status condition makes it
        once) and the credit notes ``notes``, each over its stored version ``note.version - 1`` (a dispute's funds
        reinstated: what the notes credit again); ``LedgerConflictError`` when the status, the crypto credit, the
        account's credit or a note moved."""
        ...

    def update_credit_note(self, note: CreditNote, credit_read: Decimal | None = None, added: Decimal = ZERO) -> None:
        """Replace a credit note if its stored ``version`` is still ``note.version - 1`` and, with ``credit_read``,
        move the account's credit from it to ``credit_read + added`` in the same transaction;
        ``LedgerConflictError`` otherwise (nothing written)."""
        ...

    def save_billing(
        self,
        account_id: str,
        *,
        customer_id: str | None = None,
        disputed: bool | None = None,
        card_on_file: bool | None = None,
        customer_details: str | None = None,
    ) -> None:
        """Set only the fields given (None: left as stored) of the account's customer id, dispute flag, card flag and
        the digest of the details last given the customer (``invoicing.customer_details_digest``),
        so a writer never puts back another writer's field from an earlier read (sequence and credit are the close's,
        and a crypto overpayment's: ``update_invoice_with_credit``)."""
        ...

    def invoice_for_gateway(self, gateway_id: str) -> tuple[str, str] | None:
        """(account id, our invoice id) of a processor invoice id."""
        ...

    def accounts(self) -> Iterator[str]:
        """Every registered account (to fan the close out)."""
        ...


def account_pk(account_id: str) -> str:
    return f"ACCOUNT#{account_id}"


def invoice_sort_key(invoice_id: str) -> str:
    return INVOICE_PREFIX + invoice_id.split("/", 1)[1]


def _counters(values: Mapping[str, Any], prefix: str) -> dict[tuple[int, str], int]:
    found: dict[tuple[int, str], int] = {}
    for name, value in values.items():
        if name.startswith(prefix):
            _, segment, meter = name.split("#", 2)
            found[(int(segment), meter)] = int(value)
    return found


def period_from_values(values: Mapping[str, Any]) -> PeriodLedger:
    return PeriodLedger(
        period=str(values[SORT_KEY]).removeprefix(PERIOD_PREFIX),
        counters=_counters(values, COUNTER_PREFIX),
        billed=_counters(values, BILLED_PREFIX),
        invoiced=INVOICED_AT in values,
        billed_rev=int(values.get("billed_rev", 0)),
    )


def _money(value: Decimal | None) -> str | None:
    return None if value is None else str(value)


def _dec(value: Any) -> Decimal | None:
    return None if value is None else Decimal(str(value))


def _time(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


def line_to_json(line: Line) -> dict[str, Any]:
    return {
        "kind": line.kind,
        "description": line.description,
        "amount": str(line.amount),
        "period": line.period,
        "meter": line.meter,
        "tier": line.tier,
        "quantity": _money(line.quantity),
        "unit_price": _money(line.unit_price),
        "used": _money(line.used),
        "included": _money(line.included),
        "start": _time(line.start),
        "end": _time(line.end),
        **({"source": line.source} if line.source is not None else {}),
    }


def line_from_json(data: Mapping[str, Any]) -> Line:
    return Line(
        kind=str(data["kind"]),
        description=str(data["description"]),
        amount=Decimal(str(data["amount"])),
        period=str(data["period"]),
        meter=data.get("meter"),
        tier=data.get("tier"),
        quantity=_dec(data.get("quantity")),
        unit_price=_dec(data.get("unit_price")),
        used=_dec(data.get("used")),
        included=_dec(data.get("included")),
        start=datetime.fromisoformat(data["start"]) if data.get("start") else None,
        end=datetime.fromisoformat(data["end"]) if data.get("end") else None,
        source=data.get("source"),
    )


def invoice_to_item(invoice: InvoiceRecord) -> Item:
    return to_item(
        {
            KEY: account_pk(invoice.account_id),
            SORT_KEY: invoice_sort_key(invoice.invoice_id),
            "invoice_id": invoice.invoice_id,
            "period": invoice.period,
            "number": invoice.number,
            "seq": invoice.seq,
            "method": invoice.method.value,
            # lines are frozen at the close: one JSON text (sub-cent prices and None kept exactly as written)
            "lines": json.dumps([line_to_json(line) for line in invoice.lines], separators=(",", ":")),
            "status": invoice.status.value,
            "transitions": [[status, at] for status, at in invoice.transitions],
            "total": str(invoice.total),
            "cost_basis": str(invoice.cost_basis),
            "gateway_id": invoice.gateway_id,
            "gateway_refs": list(invoice.gateway_refs) or None,
            "hosted_url": invoice.hosted_url,
            "pdf_url": invoice.pdf_url,
            "refunded": str(invoice.refunded),
            "refund_owed": str(invoice.refund_owed),
            "crypto_credit": str(invoice.crypto_credit),
            "disputed": invoice.disputed or None,
            "charged_back": str(invoice.charged_back) if invoice.charged_back else None,
            "refunds_requested": invoice.refunds_requested or None,
            "refund_pending": _refund_request_json(invoice.refund_pending),
            "announced": set(invoice.announced) or None,
            "charge_refunds": {charge: str(amount) for charge, amount in invoice.charge_refunds} or None,
            "revision": invoice.revision,
        }
    )


def invoice_from_values(account_id: str, values: Mapping[str, Any]) -> InvoiceRecord:
    return InvoiceRecord(
        invoice_id=str(values["invoice_id"]),
        account_id=account_id,
        period=str(values["period"]),
        number=str(values["number"]),
        seq=int(values["seq"]),
        method=BillingMethod(values["method"]),
        lines=tuple(line_from_json(data) for data in json.loads(str(values["lines"]))),
        status=InvoiceStatus(values["status"]),
        transitions=tuple((str(s), str(at)) for s, at in values.get("transitions", [])),
        cost_basis=Decimal(str(values.get("cost_basis", "0"))),
        gateway_id=values.get("gateway_id"),
        gateway_refs=tuple(str(r) for r in values.get("gateway_refs", [])),
        hosted_url=values.get("hosted_url"),
        pdf_url=values.get("pdf_url"),
        refunded=Decimal(str(values.get("refunded", "0"))),
        refund_owed=Decimal(str(values.get("refund_owed", "0"))),
        crypto_credit=Decimal(str(values.get("crypto_credit", "0"))),
        disputed=bool(values.get("disputed", False)),
        charged_back=Decimal(str(values.get("charged_back", "0.00"))),
        refunds_requested=int(values.get("refunds_requested", 0)),
        refund_pending=_refund_request(values.get("refund_pending")),
        announced=frozenset(str(a) for a in values.get("announced", set())),
        charge_refunds=tuple(
            (str(charge), Decimal(str(amount)))
            for charge, amount in sorted((values.get("charge_refunds") or {}).items())
        ),
        revision=int(values.get("revision", 0)),  # none on records written before revisions: 0
    )


def _refund_request_json(request: RefundRequest | None) -> dict[str, str] | None:
    if request is None:
        return None
    return {
        "refund_id": request.refund_id,
        "amount": str(request.amount),
        "refunded_before": str(request.refunded_before),
    }


def _refund_request(values: Mapping[str, Any] | None) -> RefundRequest | None:
    if not values:
        return None
    return RefundRequest(
        str(values["refund_id"]), Decimal(str(values["amount"])), Decimal(str(values["refunded_before"]))
    )


def credit_note_sort_key(credit_id: str) -> str:
    return CREDIT_NOTE_PREFIX + credit_id.split("/", 1)[1]


def credit_note_to_item(note: CreditNote) -> Item:
    return to_item(
        {
            KEY: account_pk(note.account_id),
            SORT_KEY: credit_note_sort_key(note.credit_id),
            "credit_id": note.credit_id,
            "invoice_id": note.invoice_id,
            "found_by": note.found_by,
            "period": note.period,
            "lines": json.dumps([line_to_json(line) for line in note.lines], separators=(",", ":")),
            "to_due": str(note.to_due),
            "to_credit": str(note.to_credit),
            "processor": str(note.processor),
            "returned": str(note.returned) if note.returned else None,
            "out_of_band": note.out_of_band or None,
            "status": note.status.value,
            "gateway_note_id": note.gateway_note_id,
            "version": note.version,
            "history": [[what, at] for what, at in note.history] or None,
        }
    )


def credit_note_from_values(account_id: str, values: Mapping[str, Any]) -> CreditNote:
    return CreditNote(
        credit_id=str(values["credit_id"]),
        account_id=account_id,
        invoice_id=str(values["invoice_id"]),
        found_by=str(values["found_by"]),
        period=str(values["period"]),
        lines=tuple(line_from_json(data) for data in json.loads(str(values["lines"]))),
        to_due=Decimal(str(values["to_due"])),
        to_credit=Decimal(str(values["to_credit"])),
        processor=Decimal(str(values.get("processor", "0"))),
        returned=Decimal(str(values.get("returned", "0"))),
        out_of_band=bool(values.get("out_of_band", False)),
        status=CreditNoteStatus(values["status"]),
        gateway_note_id=values.get("gateway_note_id"),
        version=int(values.get("version", 1)),
        history=tuple((str(what), str(at)) for what, at in values.get("history", [])),
    )


def billing_from_values(values: Mapping[str, Any]) -> BillingState:
    return BillingState(
        seq=int(values.get("seq", 0)),
        credit=Decimal(str(values.get("credit", "0.00"))),
        customer_id=values.get("customer_id"),
        disputed=bool(values.get("disputed", False)),
        card_on_file=bool(values.get("card_on_file", False)),
        customer_details=values.get("customer_details"),
    )


def ledger_from_items(account_id: str, found: list[Mapping[str, Any]]) -> AccountLedger:
    profile = None
    periods: dict[str, PeriodLedger] = {}
    invoices: dict[str, InvoiceRecord] = {}
    notes: dict[str, CreditNote] = {}
    billing = BillingState()
    method = BillingMethod.CARD
    for item in found:
        values = from_item(item)
        sort_key = str(values[SORT_KEY])
        if sort_key == PROFILE_SORT_KEY:
            profile = profile_from_item(item)
            method = BillingMethod(profile.billing_method)
        elif sort_key.startswith(PERIOD_PREFIX):
            ledger = period_from_values(values)
            periods[ledger.period] = ledger
        elif sort_key.startswith(INVOICE_PREFIX):
            invoice = invoice_from_values(account_id, values)
            invoices[invoice.invoice_id] = invoice
        elif sort_key.startswith(CREDIT_NOTE_PREFIX):
            note = credit_note_from_values(account_id, values)
            notes[note.credit_id] = note
        elif sort_key == BILLING_SORT_KEY:
            billing = billing_from_values(values)
    return AccountLedger(account_id, profile, periods, invoices, billing, method, notes)


def watermark_update(
    table: str, account_id: str, period: str, billed: Counters, rev: int, now_ms: int
) -> dict[str, Any]:
    names = {"#rev": "billed_rev", "#inv": INVOICED_AT}
    values: dict[str, Any] = {":rev": rev, ":next": rev + 1, ":now": now_ms}
    sets = ["#rev = :next", "#inv = if_not_exists(#inv, :now)"]
    for index, ((segment, meter), quantity) in enumerate(sorted(billed.items())):
        names[f"#b{index}"] = f"{BILLED_PREFIX}{segment}#{meter}"
        values[f":b{index}"] = quantity
        sets.append(f"#b{index} = :b{index}")
    condition = "attribute_not_exists(#rev)" if rev == 0 else "#rev = :rev"
    if rev == 0:
        values.pop(":rev")
    return {
        "Update": {
            "TableName": table,
            "Key": to_item({KEY: account_pk(account_id), SORT_KEY: PERIOD_PREFIX + period}),
            "UpdateExpression": "SET " + ", ".join(sets),
            "ConditionExpression": condition,
            "ExpressionAttributeNames": names,
            "ExpressionAttributeValues": to_item(values),
        }
    }


def credit_condition(credit_read: Decimal) -> str:
    """The BILLING item's credit is still the one read (``:read``, its stored text): an account that never had one
    reads 0.00 with no attribute stored. Every writer stores ``str(Decimal)``, which reads back to the same text."""
    return "(attribute_not_exists(#credit) OR #credit = :read)" if credit_read == 0 else "#credit = :read"


class DynamoLedgerStore:
    """``LedgerStore`` on the usage table. Reads: one consistent Query per account. Writes: one transaction per close,
    one conditional put per invoice transition."""

    def __init__(self, client: Any, table: str, clock: Any = None) -> None:
        self._client = client
        self._table = table
        self._clock = clock

    def _now_ms(self) -> int:
        import time  # noqa: PLC0415

        return int((self._clock() if self._clock else time.time()) * 1000)

    def ledger(self, account_id: str) -> AccountLedger:
        found: list[Mapping[str, Any]] = []
        request: dict[str, Any] = {
            "TableName": self._table,
            "KeyConditionExpression": "#k = :pk",
            "ExpressionAttributeNames": {"#k": KEY},
            "ExpressionAttributeValues": to_item({":pk": account_pk(account_id)}),
            "ConsistentRead": True,
        }
        found.extend(paged_items(self._client.query, **request))
        return ledger_from_items(account_id, found)

    def create_invoice(self, draft: CloseDraft) -> None:
        invoice = draft.invoice
        now_ms = self._now_ms()
        writes: list[dict[str, Any]] = [
            {
                "Put": {
                    "TableName": self._table,
                    "Item": invoice_to_item(invoice),
                    "ConditionExpression": "attribute_not_exists(#k)",
                    "ExpressionAttributeNames": {"#k": KEY},
                }
            }
        ]
        writes += [
            watermark_update(self._table, invoice.account_id, move.period, move.billed, move.rev, now_ms)
            for move in draft.watermarks
        ]
        writes += [
            {
                "Put": {
                    "TableName": self._table,
                    "Item": credit_note_to_item(note),
                    "ConditionExpression": "attribute_not_exists(#k)",  # once: a rerun re-reads and finds it
                    "ExpressionAttributeNames": {"#k": KEY},
                }
            }
            for note in draft.credit_notes
        ]
        writes += [
            {
                "Update": {
                    "TableName": self._table,
                    "Key": to_item({KEY: account_pk(invoice.account_id), SORT_KEY: invoice_sort_key(credited)}),
                    "UpdateExpression": "SET #rev = :next",
                    "ConditionExpression": "attribute_exists(#k) AND "
                    + ("(attribute_not_exists(#rev) OR #rev = :rev)" if revision == 0 else "#rev = :rev"),
                    "ExpressionAttributeNames": {"#k": KEY, "#rev": "revision"},
                    "ExpressionAttributeValues": to_item({":rev": revision, ":next": revision + 1}),
                }
            }
            for credited, revision in draft.credited  # the credited invoices, as read: writers that read them re-read
        ]
        seq_values: dict[str, Any] = {
            ":seq": invoice.seq,
            ":credit": str(draft.credit),
            ":prev": draft.previous_seq,
            ":read": str(draft.previous_credit),
        }
        seq_condition = "(attribute_not_exists(#seq) OR #seq = :prev)" if draft.previous_seq == 0 else "#seq = :prev"
        writes.append(
            {
                "Update": {
                    "TableName": self._table,
                    "Key": to_item({KEY: account_pk(invoice.account_id), SORT_KEY: BILLING_SORT_KEY}),
                    "UpdateExpression": "SET #seq = :seq, #credit = :credit",
                    "ConditionExpression": f"{seq_condition} AND {credit_condition(draft.previous_credit)}",
                    "ExpressionAttributeNames": {"#seq": "seq", "#credit": "credit"},
                    "ExpressionAttributeValues": to_item(seq_values),
                }
            }
        )
        try:
            call(self._client.transact_write_items, TransactItems=writes)
        except ConditionFailedError as exc:
            raise LedgerConflictError(str(exc)) from exc

    def update_invoice(self, invoice: InvoiceRecord, expected: InvoiceStatus) -> InvoiceRecord:
        return self._update_invoice(invoice, expected, [], invoice.crypto_credit)

    def update_invoice_with_credit(
        self, invoice: InvoiceRecord, expected: InvoiceStatus, credit_read: Decimal, added: Decimal
    ) -> InvoiceRecord:
        credit = self._credit_update(invoice.account_id, credit_read, added)
        return self._update_invoice(invoice, expected, [credit], invoice.crypto_credit - added)

    def update_invoice_and_credit(
        self,
        invoice: InvoiceRecord,
        expected: InvoiceStatus,
        credit_read: Decimal,
        added: Decimal,
        notes: Sequence[CreditNote] = (),
    ) -> InvoiceRecord:
        credit = self._credit_update(invoice.account_id, credit_read, added)
        puts = [self._note_put(note) for note in notes]
        return self._update_invoice(invoice, expected, [credit, *puts], invoice.crypto_credit)

    def _note_put(self, note: CreditNote) -> dict[str, Any]:
        """Put a credit note over its stored version ``note.version - 1`` (a transaction's item)."""
        return {
            "Put": {
                "TableName": self._table,
                "Item": credit_note_to_item(note),
                "ConditionExpression": "#v = :read",
                "ExpressionAttributeNames": {"#v": "version"},
                "ExpressionAttributeValues": to_item({":read": note.version - 1}),
            }
        }

    def update_credit_note(self, note: CreditNote, credit_read: Decimal | None = None, added: Decimal = ZERO) -> None:
        writes: list[dict[str, Any]] = [self._note_put(note)]
        if credit_read is not None:
            writes.append(self._credit_update(note.account_id, credit_read, added))
        try:
            call(self._client.transact_write_items, TransactItems=writes)
        except ConditionFailedError as exc:
            raise LedgerConflictError(str(exc)) from exc

    def _credit_update(self, account_id: str, credit_read: Decimal, added: Decimal) -> dict[str, Any]:
        return {
            "Update": {
                "TableName": self._table,
                "Key": to_item({KEY: account_pk(account_id), SORT_KEY: BILLING_SORT_KEY}),
                "UpdateExpression": "SET #credit = :credit",
                "ConditionExpression": credit_condition(credit_read),
                "ExpressionAttributeNames": {"#credit": "credit"},
                "ExpressionAttributeValues": to_item({":credit": str(credit_read + added), ":read": str(credit_read)}),
            }
        }

    def _update_invoice(
        self, invoice: InvoiceRecord, expected: InvoiceStatus, more: list[dict[str, Any]], crypto_credit_read: Decimal
    ) -> InvoiceRecord:
        # the crypto credit this writer read must still be stored: a writer holding an older copy of the invoice (a
        # refund, a marker) must not put back a smaller crypto credit, or the next credit event would add it again
        if crypto_credit_read == 0:
            read = "(attribute_not_exists(#cc) OR #cc IN (:cc0, :cc00))"
            values: dict[str, Any] = {":cc0": "0", ":cc00": "0.00"}
        else:
            read, values = "#cc = :cc", {":cc": str(crypto_credit_read)}
        # the revision read must still be stored: two writers that read the same status (a webhook and a rerun of
        # the close, two webhooks) cannot put back each other's fields; a record from before revisions has none
        revised = "(attribute_not_exists(#rev) OR #rev = :rev)" if invoice.revision == 0 else "#rev = :rev"
        written = replace(invoice, revision=invoice.revision + 1)
        put: dict[str, Any] = {
            "TableName": self._table,
            "Item": invoice_to_item(written),
            "ConditionExpression": f"#s = :expected AND {read} AND {revised}",
            "ExpressionAttributeNames": {"#s": "status", "#cc": "crypto_credit", "#rev": "revision"},
            "ExpressionAttributeValues": to_item({":expected": expected.value, ":rev": invoice.revision} | values),
        }
        writes: list[dict[str, Any]] = [{"Put": put}]
        for ref in ([invoice.gateway_id] if invoice.gateway_id else []) + list(invoice.gateway_refs):
            pointer = {
                KEY: f"GATEWAY#{ref}",
                SORT_KEY: "INVOICE",
                "account_id": None,  # not a profile: stays out of the accounts index
                "owner": invoice.account_id,
                "invoice_id": invoice.invoice_id,
            }
            writes.append({"Put": {"TableName": self._table, "Item": to_item(pointer)}})
        writes += more
        try:
            call(self._client.transact_write_items, TransactItems=writes)
        except ConditionFailedError as exc:
            raise LedgerConflictError(str(exc)) from exc
        return written

    def save_billing(
        self,
        account_id: str,
        *,
        customer_id: str | None = None,
        disputed: bool | None = None,
        card_on_file: bool | None = None,
        customer_details: str | None = None,
    ) -> None:
        given = {
            "customer_id": customer_id or None,
            "disputed": disputed,
            "card_on_file": card_on_file,
            "customer_details": customer_details or None,
        }
        fields = [name for name, value in given.items() if value is not None]
        if not fields:
            return
        sets = [f"#{name} = :{name}" for name in fields]
        names = {f"#{name}": name for name in fields}
        values = {f":{name}": given[name] for name in fields}
        call(
            self._client.update_item,
            TableName=self._table,
            Key=to_item({KEY: account_pk(account_id), SORT_KEY: BILLING_SORT_KEY}),
            UpdateExpression="SET " + ", ".join(sets),
            ExpressionAttributeNames=names,
            ExpressionAttributeValues=to_item(values),
        )

    def invoice_for_gateway(self, gateway_id: str) -> tuple[str, str] | None:
        found = call(
            self._client.get_item,
            TableName=self._table,
            Key=to_item({KEY: f"GATEWAY#{gateway_id}", SORT_KEY: "INVOICE"}),
            ConsistentRead=True,
        )
        if "Item" not in found:
            return None
        values = from_item(found["Item"])
        return str(values["owner"]), str(values["invoice_id"])

    def accounts(self) -> Iterator[str]:
        for item in paged_items(self._client.scan, TableName=self._table, IndexName=ACCOUNTS_INDEX):
            yield str(from_item(item)["account_id"])
