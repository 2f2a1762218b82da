"""An invoice with more lines than one Stripe invoice holds (250 invoice items, Stripe's changelog 2016-02-22) is still
billed, to the cent, on one Stripe invoice (D187): each earlier period's late usage becomes one line, then
any tail beyond 249 lines one more. Through ``StripePaymentGateway`` on the emulator's recording ``http_client``
(every request checked against the SDK's typed params; the emulator refuses a 251st item as Stripe does).

What our invoices reach: 4 meters per tier segment (a month with an upgrade Personal -> Team -> Enterprise has 3
segments: 12 usage lines), the fees, and late usage of up to 24 earlier periods (``MAX_ADJUSTED_PERIODS``) with up to
12 adjustment lines each: 288 - over the limit before carried invoices are counted."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest
import stripe
from stripe.params import InvoiceAddLinesParamsLine

from kilo_billing.invoicing import BillingMethod, InvoiceRecord, Line
from kilo_dev.stripe_emulator import EmulatorHTTPClient
from kilo_invoice.logic import gateway_request
from kilo_invoice.ports import Customer, GatewayLine, GatewayRejectedError, InvoiceRequest
from kilo_invoice.stripe_adapter import StripePaymentGateway

METERS = ("video", "audio", "messages", "data_transfer")
SEGMENTS = (  # Personal until the 10th, Team until the 20th, Enterprise after: 3 segments
    (datetime(2028, 2, 1, tzinfo=UTC), datetime(2028, 2, 10, tzinfo=UTC)),
    (datetime(2028, 2, 10, tzinfo=UTC), datetime(2028, 2, 20, tzinfo=UTC)),
    (datetime(2028, 2, 20, tzinfo=UTC), datetime(2028, 3, 1, tzinfo=UTC)),
)


def _earlier(index: int) -> str:
    """The 24 periods before 2028-02: 2026-02 .. 2028-01."""
    month = 2026 * 12 + 1 + index  # 2026-02 is index 0
    return f"{month // 12}-{month % 12 + 1:02d}"


def _record(lines: list[Line], period: str = "2028-02") -> InvoiceRecord:
    return InvoiceRecord(
        invoice_id=f"acct-many/{period}",
        account_id="acct-many",
        period=period,
        number="KB-acct-many-0025",
        seq=25,
        method=BillingMethod.CARD,
        lines=tuple(lines),
    )


def _many_late_periods() -> InvoiceRecord:
    """12 usage lines (7.20 of video overage on Team, the rest 0.00), March's fee 99.00, and +1 minute of video late
    in each meter and segment of 24 earlier periods: 12 adjustment lines of 0.01 each per period - 301 lines."""
    lines = []
    for start, end in SEGMENTS:
        for meter in METERS:
            amount = Decimal("7.20") if (meter == "video" and start.day == 10) else Decimal("0.00")
            lines.append(Line("usage", f"{meter} {start:%d}", amount, "2028-02", meter, "team", start=start, end=end))
    lines.append(Line("fee", "Enterprise fee 2028-03", Decimal("99.00"), "2028-03", quantity=Decimal(1)))
    for index in range(24):
        period = _earlier(index)
        for segment in range(3):
            for meter in METERS:
                lines.append(
                    Line(
                        "adjustment",
                        f"Late {meter} usage for {period} segment {segment} (+1 minute)",
                        Decimal("0.01"),
                        period,
                        meter,
                        "personal",
                        quantity=Decimal(14),  # 14 x 0.00072 = 0.01008 -> 0.01
                        unit_price=Decimal("0.00072"),
                        start=datetime(2026, 1, 1, tzinfo=UTC),
                        end=datetime(2026, 2, 1, tzinfo=UTC),
                    )
                )
    return _record(lines)


def _gateway() -> tuple[StripePaymentGateway, EmulatorHTTPClient]:
    http = EmulatorHTTPClient()
    return StripePaymentGateway(stripe.StripeClient("sk_test_unit", http_client=http, max_network_retries=0)), http


def _sent_lines(http: EmulatorHTTPClient) -> list[dict[str, object]]:
    sent = [r for r in http.requests if r.path.endswith("/add_lines")]
    return [line for request in sent for line in request.params["lines"]]


def test_given_late_usage_of_24_periods_in_3_segments_then_one_stripe_invoice_bills_our_total() -> None:
    invoice = _many_late_periods()
    assert len(invoice.lines) == 301
    # 7.20 + 99.00 + 24 periods x 12 x 0.01 = 2.88: 109.08, by hand
    assert invoice.total == Decimal("109.08")
    request = gateway_request(invoice, "cus_x")
    # 12 usage lines and the fee as they are; then each period's 12 adjustments as one line of 0.12
    assert len(request.lines) == 12 + 1 + 24
    assert [line.amount for line in request.lines[13:]] == [Decimal("0.12")] * 24
    assert request.lines[13].description == (
        "Late usage for 2026-02, 12 lines (itemised on invoice KB-acct-many-0025): 0.12"
    )
    assert (request.lines[13].quantity, request.lines[13].unit_price) == (None, None)  # an amount, not a price
    assert request.lines[13].metadata == {"kind": "adjustment"}
    assert [line.description for line in request.lines[:13]] == [line.description for line in invoice.lines[:13]]

    gateway, http = _gateway()
    customer = gateway.ensure_customer(Customer("acct-many"))
    issued = gateway.issue_invoice(gateway_request(invoice, customer))
    assert issued.total == Decimal("109.08")
    sent = _sent_lines(http)
    assert len(sent) == 37
    assert sum(Decimal(str(line["amount"])) for line in sent[13:]) == Decimal(288)  # cents: 24 x 12
    assert http.emulator.refused_params == []


def test_given_251_items_then_the_emulator_refuses_them_as_stripe_does_and_the_adapter_never_sends_them() -> None:
    """The limit the fold keeps to is Stripe's, held by the emulator too (all or nothing), and the adapter refuses
    such a request before sending anything."""
    gateway, http = _gateway()
    customer = gateway.ensure_customer(Customer("acct-many"))
    client = stripe.StripeClient("sk_test_unit", http_client=http, max_network_retries=0)
    draft = client.v1.invoices.create({"customer": customer, "currency": "usd", "auto_advance": False})
    assert draft.id is not None
    items: list[InvoiceAddLinesParamsLine] = [{"amount": 1, "description": f"item {n}"} for n in range(251)]
    with pytest.raises(stripe.InvalidRequestError, match="at most 250"):
        client.v1.invoices.add_lines(draft.id, {"lines": items})
    assert client.v1.invoices.retrieve(draft.id).lines.data == []
    client.v1.invoices.add_lines(draft.id, {"lines": items[:250]})
    assert client.v1.invoices.retrieve(draft.id).subtotal == 250

    lines = [GatewayLine(f"item {n}", Decimal("0.01")) for n in range(251)]
    sent = len(http.requests)
    with pytest.raises(GatewayRejectedError, match="251 lines"):
        gateway.issue_invoice(InvoiceRequest("acct-many/2028-02", "KB-1", "acct-many", customer, lines))
    assert len(http.requests) == sent  # refused before asking Stripe anything


def test_given_more_lines_than_folding_periods_saves_then_the_tail_is_one_line() -> None:
    """300 carried invoices (before D165, early invoices below the card minimum were carried) of 0.30 each and the
    fee: 301 lines, no late usage to fold; the lines from the 250th on become one."""
    lines = [Line("fee", "Team fee 2028-03", Decimal("29.00"), "2028-03", quantity=Decimal(1))]
    lines += [Line("carried", f"Carried from invoice {n}: 0.30", Decimal("0.30"), "2028-01") for n in range(300)]
    invoice = _record(lines)
    assert invoice.total == Decimal("119.00")  # 29.00 + 300 x 0.30
    request = gateway_request(invoice, "cus_x")
    assert len(request.lines) == 250
    # fee + 248 carried lines as they are; 52 carried lines x 0.30 = 15.60 in the last
    assert request.lines[-1].amount == Decimal("15.60")
    assert request.lines[-1].description == "52 further lines (itemised on invoice KB-acct-many-0025): 15.60"
    assert request.lines[-1].metadata == {"kind": "folded"}
    assert request.total == Decimal("119.00")

    gateway, http = _gateway()
    customer = gateway.ensure_customer(Customer("acct-many"))
    issued = gateway.issue_invoice(gateway_request(invoice, customer))
    assert issued.total == Decimal("119.00")
    assert len(_sent_lines(http)) == 250


def test_given_250_lines_then_every_line_is_sent_as_it_is() -> None:
    lines = [Line("carried", f"Carried {n}", Decimal("0.30"), "2028-01") for n in range(250)]
    request = gateway_request(_record(lines), "cus_x")
    assert [line.description for line in request.lines] == [f"Carried {n}" for n in range(250)]
