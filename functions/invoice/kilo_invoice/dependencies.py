"""What the invoice handlers build once per container (on first use): settings, the ledger, the job queue, the run
markers, the bus, the stored Stripe events and - for the close worker when a card invoice is issued, and for the
payment-status handler when a Checkout completes - the Stripe gateway with its API key from Secrets Manager. Every
AWS client carries the settings' time budget.

``stripe`` is imported by ``kilo_invoice.stripe_adapter`` alone, and that module is imported here lazily (inside
``LazyGateway``): the starter never loads the Stripe SDK, the worker only when it has a card invoice to issue, and the
payment-status handler only for ``checkout.session.completed`` (tests/unit/test_import_graph.py)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from functools import cache, cached_property
from typing import TYPE_CHECKING, Any, Final

from kilo_billing.accounts import AccountDirectory
from kilo_billing.invoicing import LedgerStore
from kilo_billing.publisher import EventPublisher
from kilo_invoice.model import CloseDeps
from kilo_invoice.ports import (
    CloseJobQueue,
    Customer,
    GatewayInvoice,
    GatewayMisconfiguredError,
    GatewayUnavailableError,
    InvoiceRequest,
    PaymentGateway,
    PaymentInvoice,
    RunMarkers,
    StripeEvents,
)
from kilo_invoice.settings import InvoiceSettings, settings

if TYPE_CHECKING:
    from kilo_billing.stripe_key import StripeSecret


def stripe_http_client() -> Any:
    """The Stripe SDK's transport: ``None`` is the SDK's own. The integration tests put the Stripe emulator here."""
    return None


def parse_stripe_secret(value: Any, name: str) -> StripeSecret:
    """``{"api_key": "sk_...", "api_base": optional}`` -> its key and API address (``kilo_billing.stripe_key``); a
    malformed secret is refused by name (ours to fix: ``GatewayMisconfiguredError``)."""
    from kilo_billing.stripe_key import stripe_secret  # noqa: PLC0415 - only a gateway being built reads the secret

    secret = stripe_secret(value)
    if secret is None:
        raise GatewayMisconfiguredError(f'secret {name} must be JSON {{"api_key": "sk_..."}}')
    return secret


# Secrets Manager's answers that are ours to fix: the secret does not exist (a wrong name), is scheduled for deletion
# (``InvalidRequestException``: "marked for deletion"), or cannot be decrypted (its KMS key disabled or not granted)
_SECRET_OURS: Final = {
    "ResourceNotFoundException": "not found",
    "InvalidRequestException": "marked for deletion",
    "DecryptionFailure": "not decryptable (its KMS key)",
}


def _secret_missing(exc: BaseException) -> str | None:
    """What Secrets Manager said of the secret when it is ours to fix (``_SECRET_OURS``), anywhere in the chain:
    Powertools raises its own ``GetParameterError`` while handling the SDK's ``ClientError`` (``__context__``)."""
    seen: BaseException | None = exc
    for _ in range(5):  # a short chain; never a loop
        if seen is None:
            return None
        response = getattr(seen, "response", None)
        code = response.get("Error", {}).get("Code") if isinstance(response, dict) else None
        if code in _SECRET_OURS:
            return _SECRET_OURS[code]
        seen = seen.__cause__ or seen.__context__
    return None


class LazyGateway:
    """The Stripe gateway, built (SDK imported, API key read) on the first call that needs it."""

    def __init__(self, build: Callable[[], PaymentGateway]) -> None:
        self._build = build

    @cached_property
    def gateway(self) -> PaymentGateway:
        return self._build()

    def ensure_customer(self, customer: Customer) -> str:
        return self.gateway.ensure_customer(customer)

    def bring_details(self, customer_id: str, customer: Customer) -> None:
        self.gateway.bring_details(customer_id, customer)

    def forget_details(self, customer_id: str) -> None:
        self.gateway.forget_details(customer_id)

    def issue_invoice(self, request: InvoiceRequest) -> GatewayInvoice:
        return self.gateway.issue_invoice(request)

    def find_invoice(self, invoice_id: str) -> GatewayInvoice | None:
        return self.gateway.find_invoice(invoice_id)

    def credit_note(
        self, gateway_id: str, amount: Decimal, reason: str, credit_id: str, out_of_band: bool = False
    ) -> str:
        return self.gateway.credit_note(gateway_id, amount, reason, credit_id, out_of_band)

    def refund_note(self, gateway_id: str, amount: Decimal, reason: str, credit_id: str) -> str:
        return self.gateway.refund_note(gateway_id, amount, reason, credit_id)

    def refund(self, gateway_id: str, amount: Decimal | None, refund_id: str, to_failed_card: bool = False) -> str:
        return self.gateway.refund(gateway_id, amount, refund_id, to_failed_card)

    def payment_refs(self, gateway_id: str) -> tuple[str, ...]:
        return self.gateway.payment_refs(gateway_id)

    def invoice_for_payment(self, payment_ref: str) -> PaymentInvoice | None:
        return self.gateway.invoice_for_payment(payment_ref)

    def void(self, gateway_id: str) -> None:
        self.gateway.void(gateway_id)

    def delete_draft(self, gateway_id: str) -> bool:
        return self.gateway.delete_draft(gateway_id)

    def set_default_payment_method(self, customer_id: str, payment_method: str) -> str:
        return self.gateway.set_default_payment_method(customer_id, payment_method)

    def default_to_latest_card(self, customer_id: str) -> str | None:
        return self.gateway.default_to_latest_card(customer_id)

    def customer_account(self, customer_id: str) -> str | None:
        return self.gateway.customer_account(customer_id)


def stripe_gateway(config: InvoiceSettings, secrets_client: Any) -> PaymentGateway:
    """A ``LazyGateway`` over ``StripePaymentGateway`` with the API key from the secret ``config`` names."""

    def build() -> PaymentGateway:
        from aws_lambda_powertools.utilities.parameters import SecretsProvider  # noqa: PLC0415

        from kilo_invoice.stripe_adapter import StripePaymentGateway  # noqa: PLC0415 - the Stripe SDK loads here

        name = config.stripe_api_key_secret_name
        if not name:
            raise GatewayMisconfiguredError("no Stripe API key configured (STRIPE_API_KEY_SECRET_NAME)")
        try:
            value = SecretsProvider(boto3_client=secrets_client).get(
                name, transform="json", max_age=config.secret_max_age_seconds
            )
        except Exception as exc:  # Powertools wraps every failure (missing secret, AWS down, bad JSON)
            said = _secret_missing(exc)
            if said is not None:  # ours to fix (a wrong name, the secret deleted or undecryptable): D315, D316
                raise GatewayMisconfiguredError(
                    f"secret {name} {said}: the Stripe secret is ours to fix (--stripe-secret, "
                    "STRIPE_API_KEY_SECRET_NAME)"
                ) from exc
            raise GatewayUnavailableError(f"secret {name} could not be read: {type(exc).__name__}") from exc
        secret = parse_stripe_secret(value, name)
        return StripePaymentGateway.from_api_key(
            secret.api_key,
            max_network_retries=config.stripe_max_network_retries,
            timeout_seconds=config.stripe_timeout_seconds,
            api_base=secret.api_base,
            http_client=stripe_http_client(),
        )

    return LazyGateway(build)


def _ledger(config: InvoiceSettings, dynamodb: Any) -> LedgerStore:
    from kilo_billing.periods_store import DynamoLedgerStore  # noqa: PLC0415

    return DynamoLedgerStore(dynamodb, config.usage_table_name)


def _publisher(config: InvoiceSettings) -> EventPublisher:
    from kilo_billing.aws import client  # noqa: PLC0415
    from kilo_billing.contracts import SOURCE_INVOICING  # noqa: PLC0415
    from kilo_billing.publisher import EventBridgePublisher  # noqa: PLC0415

    return EventBridgePublisher(
        client("events", config.call_budget, lazy=True), config.event_bus_name, SOURCE_INVOICING
    )


@dataclass(frozen=True, slots=True)
class StarterDependencies:
    settings: InvoiceSettings
    store: LedgerStore
    queue: CloseJobQueue
    markers: RunMarkers
    directory: AccountDirectory  # profiles: which accounts have a progressive billing threshold


@dataclass(frozen=True, slots=True)
class PaymentDependencies:
    store: LedgerStore
    publisher: EventPublisher
    events: StripeEvents
    gateway: PaymentGateway  # lazy: Stripe loads only for an event that needs a call (a paid invoice's payments,
    # a saved card, a refund or dispute not matched yet)
    livemode: bool = False  # the stage's Stripe mode: other events are not applied (D349)


@cache
def starter() -> StarterDependencies:
    from kilo_billing.account_store import DynamoAccountDirectory  # noqa: PLC0415
    from kilo_billing.aws import client  # noqa: PLC0415
    from kilo_invoice.adapters import DynamoRunMarkers, SqsCloseJobQueue  # noqa: PLC0415

    config = settings()
    dynamodb = client("dynamodb", config.call_budget)
    return StarterDependencies(
        settings=config,
        store=_ledger(config, dynamodb),
        queue=SqsCloseJobQueue(client("sqs", config.call_budget, lazy=True), config.invoice_close_queue_url),
        markers=DynamoRunMarkers(dynamodb, config.usage_table_name),
        directory=DynamoAccountDirectory(dynamodb, config.usage_table_name),
    )


def _sleep(seconds: float) -> None:
    import time  # noqa: PLC0415

    time.sleep(seconds)


@cache
def closer() -> CloseDeps:
    return close_deps(settings())


def close_deps(config: InvoiceSettings) -> CloseDeps:
    """What a close needs, from settings (the worker's, or ``kilo-billing invoice run``'s options)."""
    from kilo_billing.aws import client  # noqa: PLC0415
    from kilo_billing.catalog import default_catalog  # noqa: PLC0415

    return CloseDeps(
        store=_ledger(config, client("dynamodb", config.call_budget)),
        gateway=stripe_gateway(config, client("secretsmanager", config.call_budget, lazy=True)),
        publisher=_publisher(config),
        catalog=default_catalog(),
        sleep=_sleep,
        automatic_tax=config.stripe_automatic_tax,
    )


@cache
def payments() -> PaymentDependencies:
    from kilo_billing.aws import client  # noqa: PLC0415
    from kilo_invoice.adapters import DynamoStripeEvents  # noqa: PLC0415

    config = settings()
    dynamodb = client("dynamodb", config.call_budget)
    return PaymentDependencies(
        store=_ledger(config, dynamodb),
        publisher=_publisher(config),
        events=DynamoStripeEvents(dynamodb, config.events_table_name),
        gateway=stripe_gateway(config, client("secretsmanager", config.call_budget, lazy=True)),
        livemode=config.stripe_livemode,
    )
