"""The item mapping of invoicing's ledger in the usage table (``kilo_billing.invoicing`` <-> DynamoDB items): keys,
attribute names, invoices, credit notes, the billing item, an account's partition read back as its ledger. The DynamoDB
adapter is ``kilo_billing.periods_store``; the port, ``kilo_billing.invoicing.LedgerStore``."""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import datetime
from decimal import Decimal
from typing import Any, Final

from kilo_billing.account_items import PROFILE_SORT_KEY, profile_from_item
from kilo_billing.invoicing import (
    AccountLedger,
    BillingMethod,
    BillingState,
    CreditNote,
    CreditNoteStatus,
    InvoiceRecord,
    InvoiceStatus,
    Line,
    PeriodLedger,
    RefundRequest,
)
from kilo_billing.items import Item, from_item, to_item

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


def _lines_text(lines: tuple[Line, ...]) -> str:
    """An invoice's or a credit note's lines as stored: frozen at the close, one compact JSON text (sub-cent prices
    and None kept exactly as written)."""
    return json.dumps([line_to_json(line) for line in lines], separators=(",", ":"))


def _lines_from_text(text: Any) -> tuple[Line, ...]:
    return tuple(line_from_json(data) for data in json.loads(str(text)))


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
            "lines": _lines_text(invoice.lines),
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
            "written_off": str(invoice.written_off) if invoice.written_off else None,
            "disputed": invoice.disputed or None,
            "charged_back": str(invoice.charged_back) if invoice.charged_back else None,
            "refunds_requested": invoice.refunds_requested or None,
            "refund_pending": _refund_request_json(invoice.refund_pending),
            "announced": set(invoice.announced) or None,
            "charge_refunds": {charge: str(amount) for charge, amount in invoice.charge_refunds} or None,
            "outside_refunds": {refund: str(amount) for refund, amount in invoice.outside_refunds} or None,
            "refunds_made": str(invoice.refunds_made),  # always: its absence marks an item written before it
            "void_reason": invoice.void_reason,
            "failed_refunds": {refund: str(amount) for refund, amount in invoice.failed_refunds} or None,
            "charge_refunds_at": dict(invoice.charge_refunds_at) or None,
            "failed_refunds_at": {refund: [charge, at] for refund, (charge, at) in invoice.failed_refunds_at} or None,
            "taxed": list(invoice.taxed) if invoice.taxed else None,
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
        lines=_lines_from_text(values["lines"]),
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
        written_off=Decimal(str(values.get("written_off", "0"))),
        disputed=bool(values.get("disputed", False)),
        charged_back=Decimal(str(values.get("charged_back", "0.00"))),
        refunds_requested=int(values.get("refunds_requested", 0)),
        refund_pending=_refund_request(values.get("refund_pending")),
        announced=frozenset(str(a) for a in values.get("announced", set())),
        charge_refunds=_amounts_by_id(values.get("charge_refunds")),
        outside_refunds=_amounts_by_id(values.get("outside_refunds")),
        refunds_made=_refunds_made(values),
        void_reason=values.get("void_reason"),
        failed_refunds=_amounts_by_id(values.get("failed_refunds")),
        charge_refunds_at=tuple((str(k), int(v)) for k, v in sorted((values.get("charge_refunds_at") or {}).items())),
        failed_refunds_at=tuple(
            (str(k), (str(v[0]), int(v[1]))) for k, v in sorted((values.get("failed_refunds_at") or {}).items())
        ),
        taxed=_taxed(values.get("taxed")),
        revision=int(values.get("revision", 0)),  # none on records written before revisions: 0
    )


def _taxed(values: Any) -> tuple[int, int] | None:
    """A card invoice's Stripe Tax figures (``total``, ``total_excluding_tax``, cents); none stored: no tax."""
    if not values:
        return None
    whole, net = values
    return int(whole), int(net)


def _amounts_by_id(values: Mapping[str, Any] | None) -> tuple[tuple[str, Decimal], ...]:
    return tuple((str(key), Decimal(str(amount))) for key, amount in sorted((values or {}).items()))


def _refund_request_json(request: RefundRequest | None) -> dict[str, Any] | None:
    if request is None:
        return None
    return {
        "refund_id": request.refund_id,
        "amount": str(request.amount),
        "refunded_before": str(request.refunded_before),
        "failed_before": str(request.failed_before),
        **({"whole": True} if request.whole else {}),
    }


def _refunds_made(values: Mapping[str, Any]) -> Decimal:
    """What our own card refunds gave back; an item written before it was kept (D331) had none recorded
    outside us: ``refunded`` (with a request pending, what was refunded when it was asked). Without a request ever
    made, ``refunded`` is what ``charge.refunded`` said of refunds made outside us, whose ``refund.created`` came
    before outside refunds were kept by id: read here too, so the per-id sum counts them once beside a new refund
    (read as none, a new dashboard refund known by id hid them: more given back than kept; a review of D331)."""
    if "refunds_made" in values:
        return Decimal(str(values["refunds_made"]))
    pending = values.get("refund_pending")
    return Decimal(str(pending["refunded_before"] if pending else values.get("refunded", "0")))


def _refund_request(values: Mapping[str, Any] | None) -> RefundRequest | None:
    if not values:
        return None
    return RefundRequest(
        str(values["refund_id"]),
        Decimal(str(values["amount"])),
        Decimal(str(values["refunded_before"])),
        Decimal(str(values.get("failed_before", "0"))),  # none on requests stored before it was kept
        bool(values.get("whole", False)),
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
            "lines": _lines_text(note.lines),
            "to_due": str(note.to_due),
            "to_credit": str(note.to_credit),
            "processor": str(note.processor),
            "returned": str(note.returned) if note.returned else None,
            "uncollected": str(note.uncollected) if note.uncollected else None,
            "out_of_band": note.out_of_band or None,
            "to_card": note.to_card or None,
            "status": note.status.value,
            "gateway_note_id": note.gateway_note_id,
            "asked_on": note.asked_on,
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
        lines=_lines_from_text(values["lines"]),
        to_due=Decimal(str(values["to_due"])),
        to_credit=Decimal(str(values["to_credit"])),
        processor=Decimal(str(values.get("processor", "0"))),
        returned=Decimal(str(values.get("returned", "0"))),
        uncollected=Decimal(str(values.get("uncollected", "0"))),
        out_of_band=bool(values.get("out_of_band", False)),
        to_card=bool(values.get("to_card", False)),
        status=CreditNoteStatus(values["status"]),
        gateway_note_id=values.get("gateway_note_id"),
        asked_on=values.get("asked_on"),
        version=int(values.get("version", 1)),
        history=tuple((str(what), str(at)) for what, at in values.get("history", [])),
    )


def billing_from_values(values: Mapping[str, Any]) -> BillingState:
    return BillingState(
        seq=int(values.get("seq", 0)),
        credit=Decimal(str(values.get("credit", "0.00"))),
        customer_id=values.get("customer_id"),
        disputed=bool(values.get("disputed", False)),
        dispute_revision=int(values.get("dispute_revision", 0)),
        refund_rev=int(values.get("refund_rev", 0)),
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
