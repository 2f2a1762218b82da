"""The Stripe adapter against the Stripe stand-in over HTTP, end to end: customer -> card -> invoice -> signed webhooks
to a local receiver that verifies them with the Stripe SDK (``stripe.Webhook.construct_event``)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
import stripe

from kilo_dev.stripe_standin import StripeStandin
from kilo_invoice.ports import Customer, GatewayLine, GatewayRejectedError, InvoiceRequest
from kilo_invoice.stripe_adapter import StripePaymentGateway

SECRET = "whsec_test_standin"


class Receiver:
    """Our side of the webhook: 200 for a valid Stripe signature, 400 otherwise (what ingest does)."""

    def __init__(self) -> None:
        self.events: list[Any] = []
        self.refused = 0
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                try:
                    event = stripe.Webhook.construct_event(
                        body, self.headers["Stripe-Signature"], SECRET, tolerance=300
                    )
                except stripe.SignatureVerificationError:
                    receiver.refused += 1
                    self.send_response(400)
                else:
                    receiver.events.append(event)
                    self.send_response(200)
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                return None

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/webhooks/stripe"


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    receiver = Receiver()
    receiver.thread.start()
    yield receiver
    receiver.server.shutdown()
    receiver.server.server_close()


def _gateway(standin: StripeStandin) -> StripePaymentGateway:
    return StripePaymentGateway(
        stripe.StripeClient("sk_test_standin", base_addresses={"api": standin.url}, max_network_retries=0)
    )


def _invoice(customer: str, invoice_id: str) -> InvoiceRequest:
    lines = [
        GatewayLine("Team fee", Decimal("29.00")),
        GatewayLine("Video minutes", Decimal("7.20"), Decimal(10000), Decimal("0.00072")),
    ]
    return InvoiceRequest(invoice_id, f"KB-{invoice_id}", "acct-1", customer, lines)


def test_given_a_card_that_pays_then_the_invoice_is_paid_and_signed_webhooks_arrive(receiver: Receiver) -> None:
    with StripeStandin(receiver.url, SECRET) as standin:
        gateway = _gateway(standin)
        customer = gateway.ensure_customer(Customer("acct-1", "ops@example.com", "Acme"))
        gateway.set_default_payment_method(customer, "pm_card_visa")
        issued = gateway.issue_invoice(_invoice(customer, "inv-1"))
        standin.wait_for_deliveries()
        found = gateway.find_invoice("inv-1")
    assert issued.total == Decimal("36.20")
    assert found is not None
    assert found.status == "paid"
    assert [(e.type, e.data.object.id) for e in receiver.events] == [
        ("invoice.finalized", issued.gateway_id),
        ("invoice.paid", issued.gateway_id),
    ]
    assert receiver.events[1].data.object.metadata["kilo_invoice_id"] == "inv-1"
    assert receiver.refused == 0


def test_given_a_declined_card_then_payment_failed_arrives_and_the_invoice_stays_open(receiver: Receiver) -> None:
    with StripeStandin(receiver.url, SECRET) as standin:
        gateway = _gateway(standin)
        customer = gateway.ensure_customer(Customer("acct-2"))
        gateway.set_default_payment_method(customer, "pm_card_chargeCustomerFail")
        issued = gateway.issue_invoice(_invoice(customer, "inv-2"))
        standin.wait_for_deliveries()
        with pytest.raises(GatewayRejectedError):
            gateway.refund(issued.gateway_id, Decimal("1.00"), "rf-1")
    assert issued.status == "open"
    assert [e.type for e in receiver.events] == ["invoice.finalized", "invoice.payment_failed"]


def test_given_a_wrong_secret_then_the_receiver_refuses_the_webhooks(receiver: Receiver) -> None:
    with StripeStandin(receiver.url, "whsec_other") as standin:
        gateway = _gateway(standin)
        customer = gateway.ensure_customer(Customer("acct-3"))
        gateway.issue_invoice(_invoice(customer, "inv-3"))
        standin.wait_for_deliveries()
        assert [status for _, status in standin.delivered] == [400]
    assert receiver.events == []


def test_given_the_standin_as_a_process_then_it_serves_and_stops_by_pid() -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "kilo_dev.stripe_standin"], stdout=subprocess.PIPE, text=True, env=os.environ.copy()
    )
    try:
        assert process.stdout is not None
        port = int(process.stdout.readline())
        client = stripe.StripeClient("sk_test_standin", base_addresses={"api": f"http://127.0.0.1:{port}"})
        with pytest.raises(stripe.InvalidRequestError, match="unknown parameter"):
            client.v1.customers.create({"metadata": {"a": "b"}, "colour": "red"})  # type: ignore[typeddict-unknown-key]
        assert client.v1.customers.create({"metadata": {"a": "b"}}).id.startswith("cus_")
    finally:
        os.kill(process.pid, signal.SIGTERM)
        assert process.wait(timeout=10) == 0


def test_given_webhooks_not_delivered_in_time_then_waiting_for_them_fails_naming_how_many_are_left() -> None:
    """A receiver that does not answer (here: one that holds every request): the wait ends, naming what is left."""
    release = threading.Event()

    class Holding(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            release.wait(10)
            self.send_response(200)
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            return None

    server = ThreadingHTTPServer(("127.0.0.1", 0), Holding)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        with StripeStandin(f"http://127.0.0.1:{server.server_address[1]}/webhooks/stripe", SECRET) as standin:
            gateway = _gateway(standin)
            gateway.issue_invoice(_invoice(gateway.ensure_customer(Customer("acct-4")), "inv-4"))
            with pytest.raises(TimeoutError, match=r"still had \d+ webhooks to deliver to http://127\.0\.0\.1:"):
                standin.wait_for_deliveries(timeout=0.5)
            release.set()
            standin.wait_for_deliveries(timeout=30)
            assert [status for _, status in standin.delivered] == [200] * len(standin.delivered)
    finally:
        release.set()
        server.shutdown()
        server.server_close()


def test_given_a_draft_over_http_then_the_standin_deletes_it_and_finds_it_no_more(receiver: Receiver) -> None:
    """The SDK sends ``DELETE /v1/invoices/{id}`` (D338 amended): before, the stand-in had no DELETE handler
    (http.server answers 501). A customer balance (5.00 credit) makes the adapter leave Stripe's invoice a draft."""
    with StripeStandin(receiver.url, SECRET) as standin:
        gateway = _gateway(standin)
        customer = gateway.ensure_customer(Customer("acct-1"))
        standin.emulator.objects["customer"][customer]["balance"] = -500
        with pytest.raises(GatewayRejectedError, match="left as a draft"):
            gateway.issue_invoice(_invoice(customer, "inv-1"))
        found = gateway.find_invoice("inv-1")
        assert found is not None
        assert found.status == "draft"
        gateway.delete_draft(found.gateway_id)
        assert gateway.find_invoice("inv-1") is None
        assert standin.emulator.objects["invoice"] == {}
