"""The monthly close end to end in-process on moto, through the handlers and the template's resources: the hourly
schedule's starter -> one job per account on the close queue -> the worker closes each account (the real Stripe
adapter on the Stripe emulator, ``kilo_dev.stripe_emulator``, through the SDK's ``http_client``) -> Stripe's events
signed with the Stripe SDK -> the real ingest Stripe handler -> the billing bus -> ``PaymentEventsRule`` (as
CloudFormation creates it from the template) -> the payment events queue -> the payment-status handler.

Hand-worked figures (price book 2026-01; March 2026, every account signed up 2026-03-01T00:00Z):
- acct-a, Team, card (pm_card_visa): video 60,000 - 50,000 included = 10,000 x 0.00072 = 7.20; March fee true-up
  29.00 (nothing billed in advance); April's fee in advance 29.00 -> 65.20.
- acct-b, Personal, card that declines (pm_card_chargeCustomerFail): 6,000 - 5,000 = 1,000 x 0.00072 = 0.72.
- acct-c, Team, crypto: the same lines as acct-a -> 65.20, an open USD bill, never sent to Stripe.
- acct-d, Personal, no usage: 0.00, recorded open and paid at once, never sent to Stripe.
"""

from __future__ import annotations

import copy
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest
import stripe
import time_machine

from kilo_account_api.stripe_adapter import StripePaymentPages
from kilo_billing.account_store import DynamoAccountDirectory
from kilo_billing.accounts import AccountProfile
from kilo_billing.invoicing import AccountLedger, InvoiceRecord, InvoiceStatus
from kilo_billing.items import to_item
from kilo_billing.periods_store import DynamoLedgerStore
from kilo_billing.rating import TierChange
from kilo_dev.apigw import http_api_event
from kilo_dev.stripe_emulator import EmulatorHTTPClient, load_fixtures
from kilo_invoice import close_handler, dependencies, payment_handler, start_handler
from kilo_invoice.adapters import SqsCloseJobQueue
from kilo_invoice.ports import Customer
from kilo_invoice.stripe_adapter import StripePaymentGateway
from kilo_webhook_ingest import stripe_handler
from tests.conftest import STRIPE_SECRETS, LambdaContext, Stack, _clear_caches

SIGNUP = datetime(2026, 3, 1, tzinfo=UTC)
SEGMENT = int(SIGNUP.timestamp())
API_KEY = "sk_test_integration0123456789"  # Stripe's key shape (kilo_billing.stripe_key)
PROBE_RULE = "test-probe-invoicing"


@dataclass
class Invoicing:
    stack: Stack
    http: EmulatorHTTPClient
    probe_url: str
    context: LambdaContext

    @property
    def table(self) -> str:
        return self.stack.template.physical_name("UsageTable")

    @property
    def store(self) -> DynamoLedgerStore:
        return DynamoLedgerStore(self.stack.clients["dynamodb"], self.table)

    def invoice(self, account: str, period: str = "2026-03") -> InvoiceRecord:
        return self.store.ledger(account).invoices[f"{account}/{period}"]

    def register(self, account: str, tier: str, method: str = "card", progressive: Decimal | None = None) -> None:
        directory = DynamoAccountDirectory(self.stack.clients["dynamodb"], self.table)
        directory.register(
            AccountProfile(
                account, (TierChange(SIGNUP, tier),), billing_method=method, progressive_threshold_usd=progressive
            )
        )

    def rate(self, account: str, meter: str, quantity: int, period: str = "2026-03") -> None:
        self.stack.clients["dynamodb"].update_item(  # what rating's aggregate ADD does
            TableName=self.table,
            Key=to_item({"pk": f"ACCOUNT#{account}", "sk": f"PERIOD#{period}"}),
            UpdateExpression="ADD #c :q",
            ExpressionAttributeNames={"#c": f"c#{SEGMENT}#{meter}"},
            ExpressionAttributeValues=to_item({":q": quantity}),
        )

    def gateway(self) -> StripePaymentGateway:
        """The same Stripe (the emulator) as the worker's, as an operator's dashboard would be."""
        return StripePaymentGateway(stripe.StripeClient(API_KEY, http_client=self.http, max_network_retries=0))

    def card(self, account: str, payment_method: str) -> None:
        """The customer saved a card through Checkout before the close (the worker finds the customer by metadata)."""
        gateway = self.gateway()
        gateway.set_default_payment_method(gateway.ensure_customer(Customer(account)), payment_method)

    def start(self, scheduled_time: str) -> dict[str, Any]:
        return start_handler.lambda_handler({"scheduled_time": scheduled_time}, self.context)  # type: ignore[arg-type]

    def drain(self, queue: str, handler: Callable[[dict[str, Any], Any], dict[str, Any]]) -> list[str]:
        """Hand the queue's messages to the handler as Lambda's SQS event source does (batches of 10, partial
        failures left on the queue); returns the bodies handled."""
        sqs, url = self.stack.clients["sqs"], self.stack.template.ref(queue)
        arn = self.stack.template.get_att(queue, "Arn")
        handled: list[str] = []
        while messages := sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10).get("Messages", []):
            records = [
                {
                    "messageId": m["MessageId"],
                    "receiptHandle": m["ReceiptHandle"],
                    "body": m["Body"],
                    "attributes": {"ApproximateReceiveCount": "1"},
                    "messageAttributes": {},
                    "md5OfBody": m["MD5OfBody"],
                    "eventSource": "aws:sqs",
                    "eventSourceARN": arn,
                    "awsRegion": "us-east-1",
                }
                for m in messages
            ]
            answer = handler({"Records": records}, self.context)
            failed = {f["itemIdentifier"] for f in answer["batchItemFailures"]}
            assert not failed, f"{queue}: records failed"
            for message in messages:
                sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])
                handled.append(message["Body"])
        return handled

    def close_all(self) -> list[str]:
        return self.drain("InvoiceCloseQueue", close_handler.lambda_handler)

    def webhook(self, event: dict[str, Any]) -> int:
        """POST the Stripe event to the real ingest handler, signed with the Stripe SDK as Stripe signs it."""
        text = json.dumps(event)
        header = stripe.WebhookSignature.generate_signature_header(text, STRIPE_SECRETS[0])
        request = http_api_event(
            "POST", "/webhooks/stripe", text.encode(), {"content-type": "application/json", "stripe-signature": header}
        )
        response = stripe_handler.lambda_handler(request, self.context)
        return int(response["statusCode"])

    def payments(self) -> list[str]:
        return self.drain("PaymentEventsQueue", payment_handler.lambda_handler)

    def published(self) -> list[tuple[str, dict[str, Any]]]:
        sqs, found = self.stack.clients["sqs"], []
        while messages := sqs.receive_message(QueueUrl=self.probe_url, MaxNumberOfMessages=10).get("Messages", []):
            for message in messages:
                event = json.loads(message["Body"])
                found.append((event["detail-type"], event["detail"]))
                sqs.delete_message(QueueUrl=self.probe_url, ReceiptHandle=message["ReceiptHandle"])
        return found

    def stripe_posts(self, path: str = "/v1/invoices") -> int:
        return sum(1 for r in self.http.requests if r.method == "post" and r.path == path)


def _put_template_rule(stack: Stack, rule_id: str) -> None:
    props = stack.template.resolve(stack.template.resources[rule_id]["Properties"])
    events = stack.clients["events"]
    events.put_rule(Name=rule_id, EventBusName=props["EventBusName"], EventPattern=json.dumps(props["EventPattern"]))
    events.put_targets(
        Rule=rule_id,
        EventBusName=props["EventBusName"],
        Targets=[{"Id": target["Id"], "Arn": target["Arn"]} for target in props["Targets"]],
    )


@pytest.fixture
def invoicing(stack: Stack, monkeypatch: pytest.MonkeyPatch, lambda_context: LambdaContext) -> Invoicing:
    return invoicing_on(stack, monkeypatch, lambda_context)


def invoicing_on(stack: Stack, monkeypatch: pytest.MonkeyPatch, lambda_context: LambdaContext) -> Invoicing:
    """The invoicing functions' environment on the stack, Stripe on the emulator, a probe on invoicing's events."""
    template = stack.template
    for function in ("InvoiceStartFunction", "InvoiceCloseFunction", "PaymentStatusFunction"):
        for key, value in template.function_environment(function).items():
            if key != "POWERTOOLS_SERVICE_NAME":
                monkeypatch.setenv(key, value)
    stack.clients["secretsmanager"].create_secret(
        Name=template.parameters["StripeApiKeySecretName"], SecretString=json.dumps({"api_key": API_KEY})
    )
    http = EmulatorHTTPClient()
    monkeypatch.setattr(dependencies, "stripe_http_client", lambda: http)
    _put_template_rule(stack, "PaymentEventsRule")
    sqs, events = stack.clients["sqs"], stack.clients["events"]
    probe_url = sqs.create_queue(QueueName="test-invoicing-probe")["QueueUrl"]
    probe_arn = sqs.get_queue_attributes(QueueUrl=probe_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    bus = template.physical_name("BillingEventBus")
    events.put_rule(Name=PROBE_RULE, EventBusName=bus, EventPattern=json.dumps({"source": ["kilo.billing.invoicing"]}))
    events.put_targets(Rule=PROBE_RULE, EventBusName=bus, Targets=[{"Id": "probe", "Arn": probe_arn}])
    _clear_caches()
    # the handlers start a job of a batch only with 35 s of the invocation left (D403): the invocation as deployed,
    # 120 s (the timeout of both queue-driven handlers, close and payment status, D403), not the fixture's 10 s
    return Invoicing(stack, http, probe_url, replace(lambda_context, remaining_ms=120_000))


def _month(invoicing: Invoicing) -> None:
    invoicing.register("acct-a", "team")
    invoicing.register("acct-b", "personal")
    invoicing.register("acct-c", "team", method="crypto")
    invoicing.register("acct-d", "personal")
    invoicing.rate("acct-a", "video", 60_000)
    invoicing.rate("acct-b", "video", 6_000)
    invoicing.rate("acct-c", "video", 60_000)
    invoicing.card("acct-a", "pm_card_visa")
    invoicing.card("acct-b", "pm_card_chargeCustomerFail")


def test_given_a_month_when_the_schedule_runs_past_the_grace_window_then_each_account_is_closed_once(
    invoicing: Invoicing,
) -> None:
    _month(invoicing)
    # 05:00 on April 1st is inside the 6 h grace window: the latest due period is still February (nobody's: signed
    # up March 1st), fanned out once; its jobs close nothing.
    assert invoicing.start("2026-04-01T05:00:00Z") == {"period": "2026-02", "queued": 4, "early_checks": 0}
    assert len(invoicing.close_all()) == 4
    assert all(not invoicing.store.ledger(a).invoices for a in ("acct-a", "acct-b", "acct-c", "acct-d"))
    # 06:00: March is due - one job per registered account (paged from the accounts index), once
    assert invoicing.start("2026-04-01T06:00:00Z") == {"period": "2026-03", "queued": 4, "early_checks": 0}
    jobs = sorted(json.loads(body)["account_id"] for body in invoicing.close_all())
    assert jobs == ["acct-a", "acct-b", "acct-c", "acct-d"]
    assert invoicing.start("2026-04-01T07:00:00Z") == {"period": "2026-03", "queued": 0, "early_checks": 0}

    a, b, c, d = (invoicing.invoice(account) for account in ("acct-a", "acct-b", "acct-c", "acct-d"))
    assert (a.total, b.total, c.total, d.total) == (
        Decimal("65.20"),
        Decimal("0.72"),
        Decimal("65.20"),
        Decimal("0.00"),
    )
    assert (a.status, b.status, c.status, d.status) == (
        InvoiceStatus.OPEN,
        InvoiceStatus.OPEN,
        InvoiceStatus.OPEN,
        InvoiceStatus.PAID,
    )
    assert a.gateway_id
    assert b.gateway_id
    assert a.hosted_url
    assert (c.gateway_id, d.gateway_id) == (None, None)  # the crypto bill and the $0.00 invoice stay ours
    assert invoicing.stripe_posts() == 2
    stripe_invoice = invoicing.gateway().find_invoice("acct-a/2026-03")
    assert stripe_invoice is not None
    assert stripe_invoice.total == Decimal("65.20")
    issued = invoicing.published()
    assert sorted(d["invoice_id"] for t, d in issued if t == "InvoiceIssued.v1") == [
        "acct-a/2026-03",
        "acct-b/2026-03",
        "acct-c/2026-03",
        "acct-d/2026-03",
    ]


def test_given_a_closed_month_when_its_jobs_run_again_then_no_second_invoice_anywhere(invoicing: Invoicing) -> None:
    _month(invoicing)
    invoicing.start("2026-04-01T06:00:00Z")
    invoicing.close_all()
    before = {account: invoicing.invoice(account) for account in ("acct-a", "acct-b", "acct-c", "acct-d")}
    invoicing.published()
    posts = len([r for r in invoicing.http.requests if r.method == "post"])
    # an operator reruns the whole period (the same jobs, as `kilo-billing invoice run` or a redelivery would)
    queue = SqsCloseJobQueue(invoicing.stack.clients["sqs"], invoicing.stack.template.ref("InvoiceCloseQueue"))
    queue.send([(account, "2026-03") for account in before])
    assert len(invoicing.close_all()) == 4
    assert {account: invoicing.invoice(account) for account in before} == before
    assert len([r for r in invoicing.http.requests if r.method == "post"]) == posts  # Stripe not asked again
    assert invoicing.published() == []  # InvoiceIssued.v1 is announced once


def test_given_stripe_events_when_ingested_then_the_bus_and_rule_bring_our_invoices_to_paid_and_payment_failed(
    invoicing: Invoicing, caplog: pytest.LogCaptureFixture
) -> None:
    _month(invoicing)
    invoicing.start("2026-04-01T06:00:00Z")
    invoicing.close_all()
    invoicing.published()
    emitted = list(invoicing.http.emulator.events)
    # what Stripe sent for the two card invoices: finalized + paid (visa), finalized + payment_failed (declined)
    assert [e["type"] for e in emitted] == [
        "invoice.finalized",
        "invoice.paid",
        "invoice.finalized",
        "invoice.payment_failed",
    ]
    assert [invoicing.webhook(event) for event in emitted] == [200, 200, 200, 200]
    assert len(invoicing.payments()) == 4
    paid, failed = invoicing.invoice("acct-a"), invoicing.invoice("acct-b")
    assert paid.status is InvoiceStatus.PAID
    assert [status for status, _ in paid.transitions] == ["draft", "open", "paid"]
    assert failed.status is InvoiceStatus.PAYMENT_FAILED
    alerts = invoicing.published()
    assert [(t, d["invoice_id"], d["total"], d["reason"]) for t, d in alerts] == [
        ("PaymentFailed.v1", "acct-b/2026-03", "0.72", "payment_failed")
    ]

    # the same events again (Stripe retries), and acct-b paid later (the card updated) before its old failure
    # arrives once more out of order: nothing moves backwards, no alert twice
    later_paid = copy.deepcopy(emitted[3])
    later_paid["id"], later_paid["type"] = "evt_b_paid_after_retry", "invoice.paid"
    later_paid["data"]["object"]["status"] = "paid"
    # paid in full: 1,000 over x 0.00072 = 0.72, 72 cents (the failure's object says 0 paid; kept, it read as a 0.72
    # shortfall given back outside us)
    assert later_paid["data"]["object"]["amount_due"] == 72
    later_paid["data"]["object"]["amount_paid"] = 72
    caplog.clear()
    for event in [*emitted, later_paid, emitted[3]]:
        assert invoicing.webhook(event) == 200
    invoicing.payments()
    said = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert "Stripe event needs an operator" not in said  # no shortfall, nothing else to say
    assert invoicing.invoice("acct-a") == paid
    settled = invoicing.invoice("acct-b")
    assert settled.status is InvoiceStatus.PAID
    assert [status for status, _ in settled.transitions] == ["draft", "open", "payment_failed", "paid"]
    assert (settled.refunded, settled.kept, settled.outside_refunds) == (Decimal("0.00"), Decimal("0.72"), ())
    assert invoicing.published() == []


def test_given_a_card_saved_through_checkout_when_its_event_arrives_then_it_becomes_the_default_for_invoices(
    invoicing: Invoicing,
) -> None:
    """Checkout (setup mode) attaches the card but Stripe does not make it the customer's default: the payment-status
    handler does, on ``checkout.session.completed`` (Stripe -> signed webhook -> ingest -> bus -> queue -> handler),
    so the close's invoice is charged to it."""
    invoicing.register("acct-a", "team")
    invoicing.rate("acct-a", "video", 60_000)
    gateway = invoicing.gateway()
    customer = gateway.ensure_customer(Customer("acct-a"))
    pages = StripePaymentPages.from_api_key("sk_test_local", max_network_retries=0, http_client=invoicing.http)
    url = pages.setup_url(customer, "acct-a", "https://app.example/ok", "https://app.example/no")  # the account API's
    emulator = invoicing.http.emulator
    session = emulator.complete_setup(url.rsplit("/", 1)[1], "pm_card_visa")  # the customer fills in the page
    assert emulator.objects["customer"][customer]["invoice_settings"]["default_payment_method"] is None
    (completed,) = [event for event in emulator.events if event["type"] == "checkout.session.completed"]
    assert completed["data"]["object"]["id"] == session["id"]
    assert invoicing.webhook(completed) == 200
    assert len(invoicing.payments()) == 1
    (card,) = [pm for pm in emulator.objects["payment_method"].values() if pm["customer"] == customer]
    assert emulator.objects["customer"][customer]["invoice_settings"]["default_payment_method"] == card["id"]
    assert invoicing.store.ledger("acct-a").billing.card_on_file
    # the same event again (Stripe retries): nothing changes, no further Stripe write than the repeated default
    assert invoicing.webhook(completed) == 200
    invoicing.payments()
    assert emulator.objects["customer"][customer]["invoice_settings"]["default_payment_method"] == card["id"]
    # the close charges that card: March's invoice is paid
    invoicing.start("2026-04-01T06:00:00Z")
    invoicing.close_all()
    paid = [event for event in emulator.events if event["type"] == "invoice.paid"]
    assert [event["data"]["object"]["metadata"]["kilo_invoice_id"] for event in paid] == ["acct-a/2026-03"]


def test_given_a_progressive_threshold_when_the_hourly_run_finds_it_passed_then_an_early_invoice_is_issued_once(
    invoicing: Invoicing,
) -> None:
    """Progressive billing's trigger: the hourly starter queues an early-invoice check per account with a threshold;
    the worker issues the early invoice through Stripe like the close's; the close then bills only the rest.
    Hand figures: Team, threshold $5.00; 60,000 video minutes by March 20th -> 10,000 over the 50,000 included x
    0.00072 = $7.20 >= $5.00: an early invoice of $7.20 (every meter's line, $0.00 for the others). March's close:
    65.20 (as without progressive billing) - 7.20 billed early = $58.00."""
    invoicing.register("acct-p", "team", progressive=Decimal("5.00"))
    invoicing.register("acct-q", "team")  # no threshold: never checked
    invoicing.card("acct-p", "pm_card_visa")
    invoicing.rate("acct-p", "video", 60_000)
    invoicing.rate("acct-q", "video", 60_000)
    with time_machine.travel(datetime(2026, 3, 20, 10, tzinfo=UTC), tick=False):
        assert invoicing.start("2026-03-20T10:00:00Z") == {"period": "2026-02", "queued": 2, "early_checks": 1}
        assert [json.loads(body) for body in invoicing.close_all()][-1] == {
            "account_id": "acct-p",
            "period": "2026-03",
            "kind": "early",
        }
        early = invoicing.invoice("acct-p", "2026-03/early-1")
        assert early.total == Decimal("7.20")
        assert early.status is InvoiceStatus.OPEN  # issued; Stripe charged the card (its event brings it to paid)
        assert early.gateway_id
        paid = [e["data"]["object"]["id"] for e in invoicing.http.emulator.events if e["type"] == "invoice.paid"]
        assert paid == [early.gateway_id]
        # the next hour: checked again, nothing more is due (the rest unbilled is $0.00)
        assert invoicing.start("2026-03-20T11:00:00Z")["early_checks"] == 1
        invoicing.close_all()
    assert list(invoicing.store.ledger("acct-p").invoices) == ["acct-p/2026-03/early-1"]
    assert invoicing.stripe_posts() == 1
    assert "issued" in invoicing.invoice("acct-p", "2026-03/early-1").announced  # InvoiceIssued.v1, recorded once
    invoicing.start("2026-04-01T06:00:00Z")
    invoicing.close_all()
    assert invoicing.invoice("acct-p").total == Decimal("58.00")
    assert invoicing.invoice("acct-q").total == Decimal("65.20")


def test_given_negative_late_usage_when_the_next_month_closes_then_credit_notes_on_stripe_once(
    invoicing: Invoicing,
) -> None:
    _month(invoicing)
    invoicing.start("2026-04-01T06:00:00Z")
    invoicing.close_all()
    for event in list(invoicing.http.emulator.events):  # acct-a paid (visa), acct-b's payment failed
        assert invoicing.webhook(event) == 200
    invoicing.payments()
    assert invoicing.invoice("acct-a").status is InvoiceStatus.PAID
    assert invoicing.invoice("acct-b").status is InvoiceStatus.PAYMENT_FAILED
    # capped calls shortened by their real participant_left, rated after March's close:
    invoicing.rate("acct-a", "video", -5_000)  # 55,000: 5,000 over x 0.00072 = 3.60, was 7.20: -3.60 (paid)
    invoicing.rate("acct-b", "video", -2_000)  # 4,000: inside 5,000, was 0.72: -0.72 (unpaid)
    assert invoicing.start("2026-05-01T06:00:00Z")["queued"] == 4
    invoicing.close_all()

    a_note = invoicing.store.ledger("acct-a").credit_notes["acct-a/2026-03/credit-2026-04"]
    b_note = invoicing.store.ledger("acct-b").credit_notes["acct-b/2026-03/credit-2026-04"]
    assert (a_note.to_due, a_note.to_credit, a_note.gateway_note_id is not None) == (
        Decimal("0.00"),
        Decimal("3.60"),
        True,
    )
    assert (b_note.to_due, b_note.to_credit, b_note.gateway_note_id is not None) == (
        Decimal("0.72"),
        Decimal("0.00"),
        True,
    )
    # acct-a: April 0.00 usage + 29.00 - 29.00 true-up + May 29.00 in advance - 3.60 credit = 25.40, on Stripe too
    assert invoicing.invoice("acct-a", "2026-04").total == Decimal("25.40")
    april_a = invoicing.gateway().find_invoice("acct-a/2026-04")
    assert april_a is not None
    assert april_a.total == Decimal("25.40")
    march_b = invoicing.gateway().find_invoice("acct-b/2026-03")
    assert march_b is not None
    assert march_b.total == Decimal("0.00")  # 0.72 - 0.72: Stripe no longer asks for it
    notes = [r for r in invoicing.http.requests if r.method == "post" and r.path == "/v1/credit_notes"]
    assert sorted((r.headers["Idempotency-Key"], r.params.get("out_of_band_amount")) for r in notes) == [
        ("kilo:acct-a/2026-03/credit-2026-04/out-of-band:credit_note", "360"),
        ("kilo:acct-b/2026-03/credit-2026-04:credit_note", None),
    ]
    assert invoicing.store.ledger("acct-a").billing.credit == Decimal("0.00")

    queue = SqsCloseJobQueue(invoicing.stack.clients["sqs"], invoicing.stack.template.ref("InvoiceCloseQueue"))
    queue.send([(account, "2026-04") for account in ("acct-a", "acct-b")])  # the jobs again
    invoicing.close_all()
    assert invoicing.stripe_posts("/v1/credit_notes") == 2  # once


def _stripe_sends(invoicing: Invoicing, event_type: str, gateway_id: str, status: str, event_id: str) -> None:
    """An event the emulator does not make itself (an operator's action in Stripe's Dashboard: marking an invoice
    uncollectible; the void's event), shaped as Stripe sends it (its fixture, the invoice as the emulator now holds
    it, with the status that action gives) and signed with the Stripe SDK by ``webhook``."""
    client = stripe.StripeClient(API_KEY, http_client=invoicing.http, max_network_retries=0)
    retrieved = client.v1.invoices.retrieve(gateway_id).last_response
    assert retrieved is not None
    invoice = json.loads(retrieved.body)  # Stripe's JSON of the invoice, as the event carries it
    event = copy.deepcopy(load_fixtures()["event"]) | {
        "id": event_id,
        "type": event_type,
        "data": {"object": invoice | {"status": status}},
    }
    event.pop("previous_attributes", None)
    assert invoicing.webhook(event) == 200


def _post_new_events(invoicing: Invoicing, seen: int) -> int:
    events = invoicing.http.emulator.events
    for event in events[seen:]:
        assert invoicing.webhook(event) == 200
    invoicing.payments()
    return len(events)


def test_given_credit_overdrawn_by_a_void_when_an_early_invoice_bills_it_then_the_month_end_bills_only_the_rest(
    invoicing: Invoicing,
) -> None:
    """An account whose credit a voided invoice overdrew (D132) reaches its progressive threshold mid-month: the
    early invoice bills its usage to date and the overdraft; the month-end invoice bills only the usage since,
    neither the overdraft again nor the early usage. Since D193 a note on a written-off invoice credits
    only what paid for its usage, so only a note stored before that bound overdraws. Hand figures (Personal: 5,000
    video minutes included, 0.00072 each over; threshold $1.00):
    - March: 7,000 minutes -> 2,000 over = 1.44, the card declines, Stripe gives up on it (uncollectible);
    - March shortened by 2,000 minutes (5,000: 0.00): -1.44, a credit note against the written-off invoice: 0.00
      account credit, 1.44 never collected (nothing was paid); April 0.00. As stored before the bound, the note
      gave 1.44 of account credit; May 7,000 minutes = 1.44, paid by that credit: May's invoice 0.00;
    - March voided at Stripe: it collected nothing, the 1.44 of credit its note gave was spent: credit -1.44;
    - June 20th: 7,000 minutes = 1.44 >= 1.00: early invoice 1.44 usage + 1.44 overdraft = 2.88, credit back to 0;
    - June's close, 8,000 minutes by then: 3,000 over = 2.16 - 1.44 invoiced early = 0.72, no credit line.
    June billed 2.88 + 0.72 = 3.60 = its usage 2.16 + the overdraft 1.44."""
    invoicing.register("acct-o", "personal", progressive=Decimal("1.00"))
    invoicing.card("acct-o", "pm_card_chargeCustomerFail")
    invoicing.rate("acct-o", "video", 7_000)
    invoicing.start("2026-04-01T06:00:00Z")
    invoicing.close_all()
    seen = _post_new_events(invoicing, 0)
    march = invoicing.invoice("acct-o")
    assert (march.total, march.status) == (Decimal("1.44"), InvoiceStatus.PAYMENT_FAILED)
    assert march.gateway_id
    _stripe_sends(invoicing, "invoice.marked_uncollectible", march.gateway_id, "uncollectible", "evt_o_uncollectible")
    invoicing.payments()
    assert invoicing.invoice("acct-o").status is InvoiceStatus.UNCOLLECTIBLE

    invoicing.rate("acct-o", "video", -2_000)  # March's late usage
    invoicing.start("2026-05-01T06:00:00Z")
    invoicing.close_all()
    seen = _post_new_events(invoicing, seen)
    note = invoicing.store.ledger("acct-o").credit_notes["acct-o/2026-03/credit-2026-04"]
    assert (note.to_due, note.to_credit, note.uncollected) == (Decimal("0.00"), Decimal("0.00"), Decimal("1.44"))
    assert invoicing.invoice("acct-o", "2026-04").total == Decimal("0.00")
    assert invoicing.store.ledger("acct-o").billing.credit == Decimal("0.00")
    # the note as a close before the bound stored it: 1.44 of account credit, moved with it in one transaction
    old_way = replace(note, to_credit=Decimal("1.44"), uncollected=Decimal("0.00"), version=note.version + 1)
    invoicing.store.update_credit_note(old_way, credit_read=Decimal("0.00"), added=Decimal("1.44"))
    assert invoicing.store.ledger("acct-o").billing.credit == Decimal("1.44")

    invoicing.rate("acct-o", "video", 7_000, period="2026-05")
    invoicing.start("2026-06-01T06:00:00Z")
    invoicing.close_all()
    seen = _post_new_events(invoicing, seen)
    may_paid = invoicing.invoice("acct-o", "2026-05")
    assert (may_paid.amount_of("credit"), may_paid.total, may_paid.status) == (
        Decimal("-1.44"),
        Decimal("0.00"),
        InvoiceStatus.PAID,
    )
    invoicing.gateway().void(march.gateway_id)  # an operator voids March in Stripe
    _stripe_sends(invoicing, "invoice.voided", march.gateway_id, "void", "evt_o_void")
    invoicing.payments()
    assert invoicing.invoice("acct-o").status is InvoiceStatus.VOID
    assert invoicing.store.ledger("acct-o").billing.credit == Decimal("-1.44")

    invoicing.card("acct-o", "pm_card_visa")  # a working card for June
    invoicing.rate("acct-o", "video", 7_000, period="2026-06")
    with time_machine.travel(datetime(2026, 6, 20, 10, tzinfo=UTC), tick=False):
        invoicing.start("2026-06-20T10:00:00Z")
        invoicing.close_all()
    early = invoicing.invoice("acct-o", "2026-06/early-1")
    assert [(line.kind, line.amount) for line in early.lines if line.amount] == [
        ("usage", Decimal("1.44")),
        ("credit", Decimal("1.44")),  # "Account credit overdrawn by a voided invoice"
    ]
    assert early.total == Decimal("2.88")
    on_stripe = invoicing.gateway().find_invoice(early.invoice_id)
    assert on_stripe is not None
    assert on_stripe.total == Decimal("2.88")
    assert invoicing.store.ledger("acct-o").billing.credit == Decimal("0.00")
    seen = _post_new_events(invoicing, seen)
    assert invoicing.invoice("acct-o", "2026-06/early-1").status is InvoiceStatus.PAID

    invoicing.rate("acct-o", "video", 1_000, period="2026-06")  # after the early invoice: 8,000 in June
    invoicing.start("2026-07-01T06:00:00Z")
    invoicing.close_all()
    june = invoicing.invoice("acct-o", "2026-06")
    assert [(line.kind, line.amount) for line in june.lines if line.amount] == [
        ("usage", Decimal("2.16")),
        ("billed_early", Decimal("-1.44")),
    ]
    assert june.total == Decimal("0.72")
    june_on_stripe = invoicing.gateway().find_invoice(june.invoice_id)
    assert june_on_stripe is not None
    assert june_on_stripe.total == Decimal("0.72")
    assert invoicing.store.ledger("acct-o").billing.credit == Decimal("0.00")
    assert early.total + june.total == Decimal("3.60")  # June's usage 2.16 + the overdraft 1.44, each billed once


def _lowered_to_zero_on_stripe(invoicing: Invoicing, credit_id: str, invoice_id: str) -> AccountLedger:
    """The note ``credit_id`` took 7.20 off ``invoice_id`` with a Stripe credit note: Stripe asks 0.00 for it."""
    ledger = invoicing.store.ledger(invoice_id.split("/", 1)[0])
    lowered = ledger.credit_notes[credit_id]
    assert (lowered.invoice_id, lowered.to_due, lowered.gateway_note_id is not None) == (
        invoice_id,
        Decimal("7.20"),
        True,
    )
    on_stripe = invoicing.gateway().find_invoice(invoice_id)
    assert on_stripe is not None
    assert on_stripe.total == Decimal("0.00")  # 7.20 - 7.20: Stripe no longer asks for it
    return ledger


def test_given_late_usage_billed_on_an_unpaid_april_when_it_goes_away_then_stripe_lowers_april_to_zero(
    invoicing: Invoicing,
) -> None:
    """D306 on DynamoDB and the Stripe emulator: acct-b (Personal, a card that fails) March 6,000 video minutes:
    0.72, payment failed. 10,000 March minutes arrive late: April bills them, 10,000 x 0.00072 = 7.20, its payment
    fails too. The late minutes go away: May's close lowers April by 7.20 with a Stripe credit note on April's
    invoice, which then asks 0.00; March is not lowered (its 6,000 minutes stand) and no account credit is given."""
    _month(invoicing)
    for month in ("2026-04", "2026-05"):
        if month == "2026-05":
            invoicing.rate("acct-b", "video", 10_000)  # late, March's
        invoicing.start(f"{month}-01T06:00:00Z")
        invoicing.close_all()
        for event in list(invoicing.http.emulator.events):
            assert invoicing.webhook(event) == 200
        invoicing.payments()
    april = invoicing.invoice("acct-b", "2026-04")
    assert (april.total, april.status) == (Decimal("7.20"), InvoiceStatus.PAYMENT_FAILED)
    invoicing.rate("acct-b", "video", -10_000)
    invoicing.start("2026-06-01T06:00:00Z")
    invoicing.close_all()
    ledger = _lowered_to_zero_on_stripe(invoicing, "acct-b/2026-03/credit-2026-05/on-2026-04", "acct-b/2026-04")
    march = invoicing.gateway().find_invoice("acct-b/2026-03")
    assert march is not None
    assert march.total == Decimal("0.72")
    assert ledger.billing.credit == Decimal("0.00")


def test_given_usage_billed_early_on_an_unpaid_invoice_when_it_goes_away_then_stripe_lowers_the_early_invoice(
    invoicing: Invoicing,
) -> None:
    """D313 on DynamoDB and the Stripe emulator: acct-e (Personal, progressive at $5.00, a card that fails).
    15,000 video minutes by March 20th: 10,000 over x 0.00072 = 7.20 >= 5.00, invoiced early; its payment fails.
    March's close: 7.20 - 7.20 billed early = 0.00. A capped call shortened by its real participant_left: March
    5,000 minutes (inside the allowance), -7.20. April's close lowers the early invoice by 7.20 with a Stripe credit
    note on it, which then asks 0.00; no account credit, nothing recorded as not collected. Before: the early invoice
    still asked 7.20 (the note on March recorded 7.20 not collected)."""
    invoicing.register("acct-e", "personal", progressive=Decimal("5.00"))
    invoicing.card("acct-e", "pm_card_chargeCustomerFail")
    invoicing.rate("acct-e", "video", 15_000)
    with time_machine.travel(datetime(2026, 3, 20, 10, tzinfo=UTC), tick=False):
        invoicing.start("2026-03-20T10:00:00Z")
        invoicing.close_all()
    seen = _post_new_events(invoicing, 0)
    early = invoicing.invoice("acct-e", "2026-03/early-1")
    assert (early.total, early.status) == (Decimal("7.20"), InvoiceStatus.PAYMENT_FAILED)
    invoicing.start("2026-04-01T06:00:00Z")
    invoicing.close_all()
    seen = _post_new_events(invoicing, seen)
    assert invoicing.invoice("acct-e").total == Decimal("0.00")

    invoicing.rate("acct-e", "video", -10_000)  # March's usage withdrawn after its close: -7.20
    invoicing.start("2026-05-01T06:00:00Z")
    invoicing.close_all()
    _post_new_events(invoicing, seen)
    early = "acct-e/2026-03/early-1"
    ledger = _lowered_to_zero_on_stripe(invoicing, "acct-e/2026-03/credit-2026-04/on-2026-03/early-1", early)
    note = ledger.credit_notes["acct-e/2026-03/credit-2026-04"]
    assert (note.to_credit, note.uncollected) == (Decimal("0.00"), Decimal("0.00"))
    assert ledger.billing.credit == Decimal("0.00")


def test_given_a_catch_up_job_failing_after_storing_april_when_the_queue_redelivers_it_then_april_is_issued(
    invoicing: Invoicing,
) -> None:
    """acct-a (Team, card): March 65.20 (see the module's figures); the April job never ran. May's job catches up
    April (May's 29.00 in advance) then May (June's 29.00); Stripe answers 500 through April's issue, so the job fails
    with April stored a draft. The queue delivers it again: April is issued on Stripe (29.00), then May (D336)."""
    invoicing.register("acct-a", "team")
    invoicing.rate("acct-a", "video", 60_000)
    invoicing.card("acct-a", "pm_card_visa")
    queue = SqsCloseJobQueue(invoicing.stack.clients["sqs"], invoicing.stack.template.ref("InvoiceCloseQueue"))
    queue.send([("acct-a", "2026-03")])
    invoicing.close_all()
    assert invoicing.invoice("acct-a").total == Decimal("65.20")

    queue.send([("acct-a", "2026-05")])  # April's job never ran
    sqs, url = invoicing.stack.clients["sqs"], invoicing.stack.template.ref("InvoiceCloseQueue")
    (message,) = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10)["Messages"]
    record = {
        "messageId": message["MessageId"],
        "receiptHandle": message["ReceiptHandle"],
        "body": message["Body"],
        "attributes": {"ApproximateReceiveCount": "1"},
        "messageAttributes": {},
        "md5OfBody": message["MD5OfBody"],
        "eventSource": "aws:sqs",
        "eventSourceARN": invoicing.stack.template.get_att("InvoiceCloseQueue", "Arn"),
        "awsRegion": "us-east-1",
    }
    invoicing.http.faults = [500] * 200  # Stripe down through every retry of April's issue
    answer = close_handler.lambda_handler({"Records": [record]}, invoicing.context)
    assert [f["itemIdentifier"] for f in answer["batchItemFailures"]] == [message["MessageId"]]
    assert invoicing.invoice("acct-a", "2026-04").status is InvoiceStatus.DRAFT
    invoicing.http.faults = []
    sqs.change_message_visibility(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"], VisibilityTimeout=0)

    assert len(invoicing.close_all()) == 1  # the same job, delivered again

    april, may = invoicing.invoice("acct-a", "2026-04"), invoicing.invoice("acct-a", "2026-05")
    assert april.status is not InvoiceStatus.DRAFT
    assert may.status is not InvoiceStatus.DRAFT
    assert (april.total, may.total) == (Decimal("29.00"), Decimal("29.00"))
    on_stripe = invoicing.gateway().find_invoice("acct-a/2026-04")
    assert on_stripe is not None
    assert on_stripe.total == Decimal("29.00")
    issued = [d["invoice_id"] for kind, d in invoicing.published() if kind == "InvoiceIssued.v1"]
    assert issued[-2:] == ["acct-a/2026-04", "acct-a/2026-05"]
