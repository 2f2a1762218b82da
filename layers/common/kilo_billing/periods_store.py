"""Rated periods and invoices in the usage table: what invoicing reads of rating's storage and the fence it writes.

Partition ``ACCOUNT#<id>`` of the usage table (one strongly consistent Query reads an account's whole ledger):
- ``PROFILE``          the account profile (``kilo_billing.account_items``);
- ``PERIOD#<YYYY-MM>`` rating's aggregate: counters ``c#<segment start>#<meter>`` (rating ADDs them, never SETs);
  invoicing adds ``invoiced_at`` (rating then also keeps ``late#<meter>``, D19), the billed watermark
  ``b#<segment start>#<meter>`` and its revision ``billed_rev``;
- ``INVOICE#<YYYY-MM>[/part]`` our invoice (lines frozen at the close, status, transitions, links) and its
  ``revision`` (every update is conditioned on the revision read and adds one);
- ``CREDITNOTE#<YYYY-MM>/credit-<YYYY-MM>`` a credit note against an invoiced period (negative late usage, D51);
- ``BILLING``          invoice sequence, credit on account, the processor's customer id, dispute flag, and
  ``refund_rev`` (money given back or taken: a refund or a dispute's funds move it on the sequence read, a close
  with notes and a dispute's reinstated notes wait on it, D283, D308).
Plus ``GATEWAY#<processor invoice id>`` / ``INVOICE``: which of our invoices a processor id belongs to.

This module is the DynamoDB adapter of ``kilo_billing.invoicing.LedgerStore``; the item mapping is
``kilo_billing.periods_items``.

The fence (docs/decisions.md, "The close is fenced by a billed watermark"): the close writes, in one transaction, the
draft invoice (condition: none yet), the billed watermark of every period it bills (condition: the revision read) and
the next invoice number (condition: the number read). Rating's ADDs never conflict with it and never need to know it.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import replace
from decimal import Decimal
from typing import Any, Unpack

from kilo_billing.aws import ConditionFailedError, call, paged_items
from kilo_billing.invoicing import (
    AccountLedger,
    BillingFields,
    CloseDraft,
    Counters,
    CreditMove,
    CreditNote,
    InvoiceRecord,
    InvoiceStatus,
    LedgerConflictError,
    billing_changes,
)
from kilo_billing.items import from_item, to_item
from kilo_billing.money import ZERO
from kilo_billing.periods_items import (
    ACCOUNTS_INDEX,
    BILLED_PREFIX,
    BILLING_SORT_KEY,
    INVOICED_AT,
    KEY,
    PERIOD_PREFIX,
    SORT_KEY,
    account_pk,
    credit_note_to_item,
    invoice_sort_key,
    invoice_to_item,
    ledger_from_items,
)


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


def seq_condition(seq_read: int) -> str:
    """The BILLING item's invoice sequence is still the one read (``:prev``): none stored reads 0."""
    return "(attribute_not_exists(#seq) OR #seq = :prev)" if seq_read == 0 else "#seq = :prev"


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
        names = {"#seq": "seq", "#credit": "credit"}
        conditions = [seq_condition(draft.previous_seq), credit_condition(draft.previous_credit)]
        if draft.refunds_read is not None:  # no refund recorded since the notes' bound was read (D283)
            names["#refunds"] = "refund_rev"
            seq_values[":refunds"] = draft.refunds_read
            unwritten = "attribute_not_exists(#refunds) OR " if draft.refunds_read == 0 else ""
            conditions.append(f"({unwritten}#refunds = :refunds)")
        writes.append(
            {
                "Update": {
                    "TableName": self._table,
                    "Key": to_item({KEY: account_pk(invoice.account_id), SORT_KEY: BILLING_SORT_KEY}),
                    "UpdateExpression": "SET #seq = :seq, #credit = :credit",
                    "ConditionExpression": " AND ".join(conditions),
                    "ExpressionAttributeNames": names,
                    "ExpressionAttributeValues": to_item(seq_values),
                }
            }
        )
        try:
            call(self._client.transact_write_items, TransactItems=writes)
        except ConditionFailedError as exc:
            raise LedgerConflictError(str(exc)) from exc

    def update_invoice(
        self, invoice: InvoiceRecord, expected: InvoiceStatus, seq_read: int | None = None
    ) -> InvoiceRecord:
        more = [] if seq_read is None else [self._refund_fence(invoice.account_id, seq_read)]
        return self._update_invoice(invoice, expected, more, invoice.crypto_credit)

    def _refund_fence(self, account_id: str, seq_read: int) -> dict[str, Any]:
        """A refund's mark on the BILLING item (a transaction's item): its ``refund_rev`` one more, if the invoice
        sequence is still ``seq_read`` - no close (or early invoice) since the refund's bound was read (D283)."""
        return {
            "Update": {
                "TableName": self._table,
                "Key": to_item({KEY: account_pk(account_id), SORT_KEY: BILLING_SORT_KEY}),
                "UpdateExpression": "ADD #refunds :one",
                "ConditionExpression": seq_condition(seq_read),
                "ExpressionAttributeNames": {"#refunds": "refund_rev", "#seq": "seq"},
                "ExpressionAttributeValues": to_item({":one": 1, ":prev": seq_read}),
            }
        }

    def update_invoice_with_credit(
        self, invoice: InvoiceRecord, expected: InvoiceStatus, credit_read: Decimal, added: Decimal
    ) -> InvoiceRecord:
        credit = self._credit_update(invoice.account_id, CreditMove(credit_read, added))
        return self._update_invoice(invoice, expected, [credit], invoice.crypto_credit - added)

    def update_invoice_and_credit(
        self, invoice: InvoiceRecord, expected: InvoiceStatus, move: CreditMove, crypto_added: Decimal = ZERO
    ) -> InvoiceRecord:
        credit = self._credit_update(invoice.account_id, move)
        puts = [self._note_put(note) for note in move.notes]
        return self._update_invoice(invoice, expected, [credit, *puts], invoice.crypto_credit - crypto_added)

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
            writes.append(self._credit_update(note.account_id, CreditMove(credit_read, added)))
        try:
            call(self._client.transact_write_items, TransactItems=writes)
        except ConditionFailedError as exc:
            raise LedgerConflictError(str(exc)) from exc

    def _credit_update(self, account_id: str, move: CreditMove) -> dict[str, Any]:
        """The BILLING item's credit moved by ``move`` (a transaction's item), if it is still the one read; with
        ``move.refunds_read``, also if ``refund_rev`` is still the one read, adding one to it (D308); with
        ``move.seq_read``, also if the invoice sequence is still the one read (D346)."""
        names = {"#credit": "credit"}
        values: dict[str, Any] = {":credit": str(move.credit), ":read": str(move.credit_read)}
        update, condition = "SET #credit = :credit", credit_condition(move.credit_read)
        if move.seq_read is not None:  # no close since the notes were read (D339 amended)
            names["#seq"] = "seq"
            values[":prev"] = move.seq_read
            condition = f"{condition} AND {seq_condition(move.seq_read)}"
        if move.refunds_read is not None:
            names["#refunds"] = "refund_rev"
            values |= {":refunds": move.refunds_read, ":one": 1}
            unwritten = "attribute_not_exists(#refunds) OR " if move.refunds_read == 0 else ""
            update, condition = update + " ADD #refunds :one", f"{condition} AND ({unwritten}#refunds = :refunds)"
        return {
            "Update": {
                "TableName": self._table,
                "Key": to_item({KEY: account_pk(account_id), SORT_KEY: BILLING_SORT_KEY}),
                "UpdateExpression": update,
                "ConditionExpression": condition,
                "ExpressionAttributeNames": names,
                "ExpressionAttributeValues": to_item(values),
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

    def save_billing(self, account_id: str, **fields: Unpack[BillingFields]) -> None:
        given = billing_changes(fields)
        if not given:
            return
        sets = [f"#{name} = :{name}" for name in given]
        names = {f"#{name}": name for name in given}
        values = {f":{name}": value for name, value in given.items()}
        call(
            self._client.update_item,
            TableName=self._table,
            Key=to_item({KEY: account_pk(account_id), SORT_KEY: BILLING_SORT_KEY}),
            UpdateExpression="SET " + ", ".join(sets),
            ExpressionAttributeNames=names,
            ExpressionAttributeValues=to_item(values),
        )

    def save_dispute_flag(self, account_id: str, disputed: bool, revision_read: int) -> None:
        unwritten = "attribute_not_exists(#rev) OR " if revision_read == 0 else ""
        try:
            call(
                self._client.update_item,
                TableName=self._table,
                Key=to_item({KEY: account_pk(account_id), SORT_KEY: BILLING_SORT_KEY}),
                UpdateExpression="SET #disputed = :disputed, #rev = :next",
                ConditionExpression=f"{unwritten}#rev = :read",
                ExpressionAttributeNames={"#disputed": "disputed", "#rev": "dispute_revision"},
                ExpressionAttributeValues=to_item(
                    {":disputed": disputed, ":read": revision_read, ":next": revision_read + 1}
                ),
            )
        except ConditionFailedError as exc:
            raise LedgerConflictError(f"{account_id}: dispute flag written since read") from exc

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
        """Each account of the `accounts` index once: a spend item written before D430 carries `account_id` too
        (its account then has two keys in the index)."""
        seen: set[str] = set()
        for item in paged_items(self._client.scan, TableName=self._table, IndexName=ACCOUNTS_INDEX):
            account = str(from_item(item)["account_id"])
            if account not in seen:
                seen.add(account)
                yield account
