"""What the account API builds once per container (on first use): settings, the AWS clients with the settings' time
budget, the layer's adapters (account directory, month to date, ledger, entitlements, the account list) and this
function's (sessions, members), and the Stripe pages - built lazily: the SDK is imported and the API key read only
by the first request for a Checkout or Billing Portal page."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from functools import cache
from typing import Any

from kilo_account_api.adapters import (
    DynamoAlertRecords,
    DynamoMembers,
    DynamoPhoneChallenges,
    DynamoSessionHistory,
    SnsCodeSender,
)
from kilo_account_api.model import UnavailableError
from kilo_account_api.phone import PhoneCodes, PhoneVerificationPolicy
from kilo_account_api.ports import AlertRecords, MemberStore, PaymentPages, SessionHistory
from kilo_account_api.settings import AccountApiSettings, settings
from kilo_billing.account_store import DynamoAccountDirectory
from kilo_billing.accounts import AccountDirectory
from kilo_billing.aws import client
from kilo_billing.catalog import Catalog, default_catalog
from kilo_billing.entitlement_store import DynamoEntitlements
from kilo_billing.entitlements import EntitlementSource
from kilo_billing.invoicing import LedgerStore
from kilo_billing.month_to_date import MonthToDateSource
from kilo_billing.month_to_date_store import DynamoMonthToDate
from kilo_billing.periods_store import DynamoLedgerStore
from kilo_billing.usage_signals import UsageSignals
from kilo_billing.usage_signals_store import DynamoUsageSignals


def stripe_http_client() -> Any:
    """The Stripe SDK's transport: ``None`` is the SDK's own. Tests put the Stripe emulator here."""
    return None


class LazyPaymentPages:
    """``PaymentPages`` built on the first call that needs Stripe (SDK import, API key from Secrets Manager)."""

    def __init__(self, build: Callable[[], PaymentPages]) -> None:
        self._pages = cache(build)  # kept once built; a build that raised is tried again by the next call

    def customer(self, account_id: str, email: str | None, name: str | None) -> str:
        return self._pages().customer(account_id, email, name)

    def bring_details(self, customer_id: str, email: str | None, name: str | None) -> None:
        self._pages().bring_details(customer_id, email, name)

    def setup_url(self, customer_id: str, account_id: str, success_url: str, cancel_url: str) -> str:
        return self._pages().setup_url(customer_id, account_id, success_url, cancel_url)

    def portal_url(self, customer_id: str, return_url: str) -> str:
        return self._pages().portal_url(customer_id, return_url)


def _stripe_pages(config: AccountApiSettings) -> PaymentPages:
    from aws_lambda_powertools.utilities.parameters import SecretsProvider  # noqa: PLC0415

    from kilo_account_api.stripe_adapter import StripePaymentPages  # noqa: PLC0415 - the SDK only when needed
    from kilo_billing.stripe_key import stripe_secret  # noqa: PLC0415

    if not config.stripe_api_key_secret_name:
        raise UnavailableError("no Stripe API key is configured")
    provider = SecretsProvider(boto3_client=client("secretsmanager", config.call_budget))
    try:
        value = provider.get(config.stripe_api_key_secret_name, max_age=config.secret_max_age_seconds, transform="json")
    except Exception as exc:  # unreadable or malformed: the page cannot be made now
        raise UnavailableError("the Stripe API key cannot be read") from exc
    secret = stripe_secret(value)
    if secret is None:
        raise UnavailableError("the Stripe API key secret is malformed")
    return StripePaymentPages.from_api_key(
        secret.api_key,
        api_base=secret.api_base,
        max_network_retries=config.stripe_max_network_retries,
        timeout_seconds=config.stripe_timeout_seconds,
        http_client=stripe_http_client(),
    )


MIN_PHONE_CODE_KEY_CHARS = 32  # the template generates 64


class PhoneCodeKey:
    """The phone codes' HMAC key from Secrets Manager (Powertools, reused ``secret_max_age_seconds``), read on the
    first code sent or checked. ``UnavailableError`` when it cannot be read or is malformed (no code now)."""

    def __init__(self, config: AccountApiSettings) -> None:
        self._config = config
        self._provider: Any = None

    def __call__(self) -> bytes:
        from aws_lambda_powertools.utilities.parameters import SecretsProvider  # noqa: PLC0415

        name = self._config.phone_code_key_secret_name
        if not name:
            raise UnavailableError("no phone code key is configured")
        if self._provider is None:
            self._provider = SecretsProvider(boto3_client=client("secretsmanager", self._config.call_budget))
        try:
            value = self._provider.get(name, max_age=self._config.secret_max_age_seconds, transform="json")
        except Exception as exc:  # unreadable or not JSON: no code can be made or checked now
            raise UnavailableError("the phone code key cannot be read") from exc
        key = value.get("key") if isinstance(value, dict) else None
        if not isinstance(key, str) or len(key) < MIN_PHONE_CODE_KEY_CHARS:
            raise UnavailableError("the phone code key secret is malformed")
        return key.encode()


@dataclass(frozen=True)
class AccountApiDependencies:
    settings: AccountApiSettings
    catalog: Catalog
    accounts: AccountDirectory
    month: MonthToDateSource
    sessions: SessionHistory
    ledger: LedgerStore
    entitlements: EntitlementSource
    members: MemberStore
    signals: UsageSignals
    payments: PaymentPages
    phone_codes: PhoneCodes  # SNS's client made on the first code sent, the key read on the first code
    alert_records: AlertRecords | None = None  # the alerts table's delivery records (erasure), when configured


@cache
def dependencies() -> AccountApiDependencies:
    config = settings()
    dynamodb = client("dynamodb", config.call_budget)
    table = config.usage_table_name
    accounts = DynamoAccountDirectory(dynamodb, table)
    signals = DynamoUsageSignals(dynamodb, table)
    phone_policy = PhoneVerificationPolicy(regions=config.sms_region_set)
    return AccountApiDependencies(
        settings=config,
        catalog=default_catalog(),
        accounts=accounts,
        month=DynamoMonthToDate(dynamodb, table, accounts, signals),
        sessions=DynamoSessionHistory(dynamodb, table, timedelta(days=config.session_lookback_days)),
        ledger=DynamoLedgerStore(dynamodb, table),
        entitlements=DynamoEntitlements(dynamodb, table),
        members=DynamoMembers(dynamodb, config.members_table_name),
        signals=signals,
        payments=LazyPaymentPages(lambda: _stripe_pages(config)),
        phone_codes=PhoneCodes(
            challenges=DynamoPhoneChallenges(dynamodb, table, phone_policy.day),
            sender=SnsCodeSender(client("sns", config.call_budget, lazy=True)),
            key=PhoneCodeKey(config),
            policy=phone_policy,
        ),
        alert_records=DynamoAlertRecords(dynamodb, config.alerts_table_name) if config.alerts_table_name else None,
    )


@dataclass(frozen=True)
class SignInDependencies:
    members: MemberStore
    operator_group: str


@cache
def sign_in_dependencies() -> SignInDependencies:
    """The pre-token trigger's: the members table alone (no Stripe, no usage reads on the sign-in path)."""
    config = settings()
    return SignInDependencies(
        members=DynamoMembers(client("dynamodb", config.call_budget), config.members_table_name),
        operator_group=config.operator_group,
    )
