"""Least privilege as deployed: the IAM that SAM generates from ``template.yaml`` (execution roles with the statements
we wrote, the policies SAM adds for event sources and destinations, AWS managed policies, the scheduler's role, the
API's invoke permissions) is exactly what each function needs: exact actions on exact ARNs, one secret each."""

from __future__ import annotations

import fnmatch
import json
import re
from dataclasses import dataclass
from typing import Any

import pytest
from cfnlint.api import ManualArgs, lint

from kilo_alerts.rechecks import RUN_INTERVAL_SECONDS
from tests.infra.conftest import ACCOUNT, REGION, Transformed

ARN = f"{REGION}:{ACCOUNT}"
EVENTS_TABLE = f"arn:aws:dynamodb:{ARN}:table/kilo-billing-events-test"
USAGE_TABLE = f"arn:aws:dynamodb:{ARN}:table/kilo-billing-usage-test"
OPEN_SESSIONS_INDEX = f"{USAGE_TABLE}/index/open_sessions"
ROOM_EVENTS_BY_TIME_INDEX = f"{EVENTS_TABLE}/index/room_events_by_time"
BILLING_BUS = f"arn:aws:events:{ARN}:event-bus/kilo-billing-test"
POISON_QUEUE = f"arn:aws:sqs:{ARN}:kilo-billing-rating-poison-test"
RATING_DLQ = f"arn:aws:sqs:{ARN}:kilo-billing-rating-dlq-test"
SWEEPER_DLQ = f"arn:aws:sqs:{ARN}:kilo-billing-sweeper-dlq-test"
SWEEPER_FUNCTION = f"arn:aws:lambda:{ARN}:function:kilo-billing-sweeper-test"
ACCOUNTS_INDEX = f"{USAGE_TABLE}/index/accounts"
ACCOUNT_SESSIONS_INDEX = f"{USAGE_TABLE}/index/account_sessions"
OPERATOR_TOPIC = f"arn:aws:sns:{ARN}:kilo-billing-alarms-test"
OPERATOR_CHECKS_FUNCTION = f"arn:aws:lambda:{ARN}:function:kilo-billing-operator-checks-test"
OPERATOR_CHECKS_DLQ = f"arn:aws:sqs:{ARN}:kilo-billing-operator-checks-dlq-test"
# Secrets Manager appends "-" and six random characters to a secret's name: "-??????" matches that secret only,
# where "-*" would also match "kilo-billing/livekit-webhook-keys-old" and any other name sharing the prefix.
LIVEKIT_KEYS = f"arn:aws:secretsmanager:{ARN}:secret:kilo-billing/livekit-webhook-keys-??????"
USAGE_CLIENTS = f"arn:aws:secretsmanager:{ARN}:secret:kilo-billing/usage-clients-??????"
STRIPE_WEBHOOK = f"arn:aws:secretsmanager:{ARN}:secret:kilo-billing/stripe-webhook-??????"

STRIPE_API_KEY = f"arn:aws:secretsmanager:{ARN}:secret:kilo-billing/stripe-api-key-??????"
PHONE_CODE_KEY = f"arn:aws:secretsmanager:{ARN}:secret:kilo-billing/phone-code-key-??????"
ACCOUNTS_INDEX = f"{USAGE_TABLE}/index/accounts"
MEMBERS_TABLE = f"arn:aws:dynamodb:{ARN}:table/kilo-billing-members-test"
MEMBERS_BY_USER_INDEX = f"{MEMBERS_TABLE}/index/members_by_user"
INVOICE_CLOSE_QUEUE = f"arn:aws:sqs:{ARN}:kilo-billing-invoice-close-test"
INVOICE_START_DLQ = f"arn:aws:sqs:{ARN}:kilo-billing-invoice-start-dlq-test"
INVOICE_START_FUNCTION = f"arn:aws:lambda:{ARN}:function:kilo-billing-invoice-start-test"
CRYPTO_TABLE = f"arn:aws:dynamodb:{ARN}:table/kilo-billing-crypto-test"
CRYPTO_RPC = f"arn:aws:secretsmanager:{ARN}:secret:kilo-billing/crypto-rpc-??????"
CRYPTO_EVM_WATCHER = f"arn:aws:lambda:{ARN}:function:kilo-billing-crypto-evm-watcher-test"
CRYPTO_EVM_WATCHER_DLQ = f"arn:aws:sqs:{ARN}:kilo-billing-crypto-evm-watcher-dlq-test"
SOLANA_WATCH_DLQ = f"arn:aws:sqs:{ARN}:kilo-billing-solana-watch-dlq-test"
SOLANA_WATCH_FUNCTION = f"arn:aws:lambda:{ARN}:function:kilo-billing-solana-watch-test"

# AWS managed policies SAM attaches; their resources are "*" (AWS's own documents), accepted in docs/decisions.md.
BASIC_EXECUTION = "arn:aws:iam::aws:policy/service-role/AWSLambdaBasicExecutionRole"  # logs:CreateLogGroup/Stream/Put
XRAY_WRITE = "arn:aws:iam::aws:policy/AWSXrayWriteOnlyAccess"  # Tracing: Active
DYNAMODB_STREAM_READ = "arn:aws:iam::aws:policy/service-role/AWSLambdaDynamoDBExecutionRole"  # stream event source
SQS_QUEUE_READ = "arn:aws:iam::aws:policy/service-role/AWSLambdaSQSQueueExecutionRole"  # SQS event source
ALERTS_TABLE = f"arn:aws:dynamodb:{ARN}:table/kilo-billing-alerts-test"
RATE_LIMIT_TABLE = f"arn:aws:dynamodb:{ARN}:table/kilo-billing-rate-limits-test"
ALERTS_QUEUE = f"arn:aws:sqs:{ARN}:kilo-billing-alerts-test"
FORECAST_RECHECKS_QUEUE = f"arn:aws:sqs:{ARN}:kilo-billing-forecast-rechecks-test"
FORECAST_RECHECKS_INDEX = f"{ALERTS_TABLE}/index/forecast_rechecks_due"
SES_SENDER = f"arn:aws:ses:{ARN}:identity/kilo.example"
SES_CONFIGURATION_SET = f"arn:aws:ses:{ARN}:configuration-set/kilo-billing-alerts-test"
# SMS straight to a phone number: IAM knows no resource for it, these actions exist only on "*"; and SES's
# account-level suppression list, read by its address (D381)
RESOURCELESS = frozenset(
    {("sns:Publish", "*"), ("sns:CheckIfPhoneNumberIsOptedOut", "*"), ("ses:GetSuppressedDestination", "*")}
)
# the only Deny statements: a role allowed sns:Publish on "*" for SMS may not publish to any topic (D160)
DENIED: dict[str, frozenset[tuple[str, str]]] = {
    "AccountApiFunctionRole": frozenset({("sns:Publish", "arn:aws:sns:*:*:*")}),
}


@dataclass(frozen=True)
class Role:
    principal: str
    managed: frozenset[str]
    grants: frozenset[tuple[str, str]]  # (action, resource)


def role(principal: str, managed: set[str], *grants: tuple[str, str]) -> Role:
    return Role(principal, frozenset(managed), frozenset(grants))


LAMBDA, SCHEDULER = "lambda.amazonaws.com", "scheduler.amazonaws.com"
ROLES = {
    "LiveKitWebhookFunctionRole": role(
        LAMBDA,
        {BASIC_EXECUTION, XRAY_WRITE},
        ("dynamodb:PutItem", EVENTS_TABLE),
        ("secretsmanager:GetSecretValue", LIVEKIT_KEYS),
    ),
    "UsageApiFunctionRole": role(
        LAMBDA,
        {BASIC_EXECUTION, XRAY_WRITE},
        ("dynamodb:PutItem", EVENTS_TABLE),
        ("dynamodb:BatchGetItem", USAGE_TABLE),  # account registrations (profiles): usage only for registered ones
        ("dynamodb:UpdateItem", RATE_LIMIT_TABLE),  # the per-client request counter of /v1/usage
        ("secretsmanager:GetSecretValue", USAGE_CLIENTS),
    ),
    "StripeWebhookFunctionRole": role(
        LAMBDA,
        {BASIC_EXECUTION, XRAY_WRITE},
        ("dynamodb:PutItem", EVENTS_TABLE),
        ("secretsmanager:GetSecretValue", STRIPE_WEBHOOK),
        ("events:PutEvents", BILLING_BUS),
    ),
    "RateUsageFunctionRole": role(
        LAMBDA,
        {BASIC_EXECUTION, XRAY_WRITE, DYNAMODB_STREAM_READ},
        ("dynamodb:Query", EVENTS_TABLE),  # a room's events, strongly consistent
        ("dynamodb:BatchGetItem", EVENTS_TABLE),
        ("dynamodb:UpdateItem", EVENTS_TABLE),  # usage events marked rated (in the transaction)
        ("dynamodb:Query", USAGE_TABLE),
        ("dynamodb:GetItem", USAGE_TABLE),  # a room's state (D151: was missing)
        ("dynamodb:BatchGetItem", USAGE_TABLE),
        ("dynamodb:PutItem", USAGE_TABLE),
        ("dynamodb:UpdateItem", USAGE_TABLE),
        ("dynamodb:DeleteItem", USAGE_TABLE),  # a retired participant's state item, in the commit (D151)
        ("dynamodb:BatchWriteItem", USAGE_TABLE),  # the room state's items in chunks, an old generation deleted (D151)
        ("dynamodb:ConditionCheckItem", USAGE_TABLE),  # the profile's erasure mark, in the commit's transactions (D80)
        ("dynamodb:Query", OPEN_SESSIONS_INDEX),  # open calls of accounts with a budget or hard limit
        ("events:PutEvents", BILLING_BUS),
        ("sqs:SendMessage", POISON_QUEUE),
        ("sqs:SendMessage", RATING_DLQ),  # added by SAM for the stream's OnFailure destination
    ),
    "SweeperFunctionRole": role(
        LAMBDA,
        {BASIC_EXECUTION, XRAY_WRITE},
        ("dynamodb:Scan", OPEN_SESSIONS_INDEX),
        ("dynamodb:BatchGetItem", USAGE_TABLE),  # the rooms' listings (and confirmations written before them)
        ("dynamodb:PutItem", USAGE_TABLE),  # a room's listing, conditional (its attributes only: a condition)
        ("dynamodb:PutItem", USAGE_TABLE),  # a swept room's mark (its attributes only: a condition)
        ("dynamodb:PutItem", USAGE_TABLE),  # a quiet swept room's header, version-only (its attributes: a condition)
        ("dynamodb:Query", USAGE_TABLE),  # the marks; a dropped state's participant items (keys)
        ("dynamodb:DeleteItem", USAGE_TABLE),  # ... deleted, and the mark
        ("dynamodb:PutItem", EVENTS_TABLE),
        ("dynamodb:Query", EVENTS_TABLE),  # an unreadable room's events, for its video (D198)
        ("dynamodb:Query", ROOM_EVENTS_BY_TIME_INDEX),  # a room's latest event, before a close is dated back (D197)
        ("secretsmanager:GetSecretValue", LIVEKIT_KEYS),
        ("events:PutEvents", BILLING_BUS),  # a budget or hard limit reached during a call, announced
        ("dynamodb:UpdateItem", USAGE_TABLE),  # ... and its markers recorded (that attribute only: a condition)
        ("sqs:SendMessage", SWEEPER_DLQ),  # added by SAM for the asynchronous invocation's OnFailure
    ),
    "AlertsFunctionRole": role(
        LAMBDA,
        {BASIC_EXECUTION, XRAY_WRITE, SQS_QUEUE_READ},
        ("dynamodb:UpdateItem", ALERTS_TABLE),  # the claim (conditional)
        ("dynamodb:PutItem", ALERTS_TABLE),  # the outcome
        ("dynamodb:Query", ALERTS_TABLE),  # an account's delivery records
        ("dynamodb:GetItem", ALERTS_TABLE),  # a claim that failed its condition: pending (retry) or decided
        ("dynamodb:DeleteItem", ALERTS_TABLE),  # the end of the enforcement's turn (its holder's only)
        ("dynamodb:BatchGetItem", USAGE_TABLE),  # profiles: name, email, phone, preferences; the spend item
        ("dynamodb:UpdateItem", USAGE_TABLE),  # the entitlement spend item (conditional, never lowered)
        ("dynamodb:UpdateItem", USAGE_TABLE),  # an abuse hold (the profile's status and version: a condition)
        ("dynamodb:Query", OPEN_SESSIONS_INDEX),  # the account's participants in a call
        ("sqs:SendMessage", ALERTS_QUEUE),  # the delayed removal step of an enforcement
        ("sqs:ChangeMessageVisibility", ALERTS_QUEUE),  # a delivery that found the turn held: back sooner
        ("secretsmanager:GetSecretValue", LIVEKIT_KEYS),  # RoomService
        ("ses:SendEmail", SES_SENDER),  # only from the configured identity ...
        ("ses:SendEmail", SES_CONFIGURATION_SET),  # ... through the alerts configuration set
        ("ses:GetSuppressedDestination", "*"),  # a required alert's address suppressed? (D381)
        ("sns:Publish", "*"),  # SMS to a number; and so every topic of the account: OperatorAlarmTopic (D382)
        ("sns:CheckIfPhoneNumberIsOptedOut", "*"),
    ),
    # the bounce handler marks an address SES reported undeliverable (D400)
    "AlertsBouncesFunctionRole": role(
        LAMBDA,
        {BASIC_EXECUTION, XRAY_WRITE, SQS_QUEUE_READ},
        ("dynamodb:PutItem", ALERTS_TABLE),  # the mark (conditional)
        # the bounced email's record (conditional, D408); its required alert's SMS reopened (conditional, D422)
        ("dynamodb:UpdateItem", ALERTS_TABLE),
        ("sqs:SendMessage", ALERTS_QUEUE),  # its event sent again (D408): a required alert's only (D422)
    ),
    # Invoicing: the hourly starter reads the run marker and the accounts index and queues close jobs ...
    "InvoiceStartFunctionRole": role(
        LAMBDA,
        {BASIC_EXECUTION, XRAY_WRITE},
        ("dynamodb:GetItem", USAGE_TABLE),  # the run marker of the period (CLOSE_RUN#<period>)
        ("sqs:SendMessage", INVOICE_START_DLQ),  # added by SAM for the asynchronous invocation's OnFailure
        ("dynamodb:PutItem", USAGE_TABLE),
        ("dynamodb:BatchGetItem", USAGE_TABLE),  # profiles: which accounts have a progressive billing threshold
        ("dynamodb:Scan", ACCOUNTS_INDEX),  # registered accounts only (the sparse index), never the sessions
        ("sqs:SendMessage", INVOICE_CLOSE_QUEUE),
    ),
    # ... the worker closes one account: its partition, the close's transaction, invoice updates, the Stripe key
    "InvoiceCloseFunctionRole": role(
        LAMBDA,
        {BASIC_EXECUTION, XRAY_WRITE, SQS_QUEUE_READ},
        ("dynamodb:Query", USAGE_TABLE),
        ("dynamodb:PutItem", USAGE_TABLE),  # the draft invoice and its updates (in transactions)
        ("dynamodb:UpdateItem", USAGE_TABLE),  # billed watermarks, invoice number, BILLING
        ("secretsmanager:GetSecretValue", STRIPE_API_KEY),
        ("events:PutEvents", BILLING_BUS),  # InvoiceIssued.v1
    ),
    # ... and the payment-status function reads the stored Stripe event and moves our invoice
    "PaymentStatusFunctionRole": role(
        LAMBDA,
        {BASIC_EXECUTION, XRAY_WRITE, SQS_QUEUE_READ},
        ("dynamodb:GetItem", EVENTS_TABLE),  # the verified Stripe event ingest stored
        ("dynamodb:Query", USAGE_TABLE),
        ("dynamodb:GetItem", USAGE_TABLE),  # GATEWAY#<stripe id> -> our invoice
        ("dynamodb:PutItem", USAGE_TABLE),
        ("dynamodb:UpdateItem", USAGE_TABLE),  # BILLING: card on file, dispute flag
        ("secretsmanager:GetSecretValue", STRIPE_API_KEY),  # a completed Checkout: the default card
        ("events:PutEvents", BILLING_BUS),  # PaymentFailed.v1, DisputeOpened.v1
    ),
    "InvoiceStartFunctionHourlyRole": role(
        SCHEDULER,
        set(),
        ("lambda:InvokeFunction", INVOICE_START_FUNCTION),
        ("sqs:SendMessage", INVOICE_START_DLQ),
    ),
    # the scheduled operator checks: abuse scan, daily margin, the forecast's re-checks due (D366)
    "OperatorChecksFunctionRole": role(
        LAMBDA,
        {BASIC_EXECUTION, XRAY_WRITE},
        ("dynamodb:PutItem", ALERTS_TABLE),  # claims and outcomes of operator alerts, margin snapshots
        ("sqs:SendMessage", OPERATOR_CHECKS_DLQ),  # added by SAM for the asynchronous invocation's OnFailure
        ("dynamodb:Query", ALERTS_TABLE),  # the latest margin snapshot
        ("dynamodb:BatchGetItem", USAGE_TABLE),  # profiles, month-to-date aggregates
        ("dynamodb:UpdateItem", USAGE_TABLE),  # an abuse hold (the profile's status and version: a condition)
        ("dynamodb:Scan", OPEN_SESSIONS_INDEX),  # concurrent sessions per identity
        ("dynamodb:Scan", ACCOUNTS_INDEX),  # the registered accounts
        ("dynamodb:Query", ACCOUNT_SESSIONS_INDEX),  # an account's connections since the storm window
        ("sns:Publish", OPERATOR_TOPIC),  # the operator topic only
        ("dynamodb:Query", FORECAST_RECHECKS_INDEX),  # the re-checks due (the sparse index)
        ("dynamodb:UpdateItem", ALERTS_TABLE),  # a re-check marked queued (its attributes only)
        ("sqs:SendMessage", FORECAST_RECHECKS_QUEUE),  # the re-check, onto its own queue (not the alerts queue)
    ),
    "OperatorChecksFunctionAbuseScanRole": role(
        SCHEDULER,
        set(),
        ("lambda:InvokeFunction", OPERATOR_CHECKS_FUNCTION),
        ("sqs:SendMessage", OPERATOR_CHECKS_DLQ),
    ),
    "OperatorChecksFunctionMarginCheckRole": role(
        SCHEDULER,
        set(),
        ("lambda:InvokeFunction", OPERATOR_CHECKS_FUNCTION),
        ("sqs:SendMessage", OPERATOR_CHECKS_DLQ),
    ),
    "OperatorChecksFunctionForecastRechecksRole": role(
        SCHEDULER,
        set(),
        ("lambda:InvokeFunction", OPERATOR_CHECKS_FUNCTION),
        ("sqs:SendMessage", OPERATOR_CHECKS_DLQ),
    ),
    "AccountApiFunctionRole": role(
        LAMBDA,
        {BASIC_EXECUTION, XRAY_WRITE},
        ("dynamodb:BatchGetItem", USAGE_TABLE),  # profiles, counters, the spend item, sessions by key
        ("dynamodb:Query", USAGE_TABLE),  # the ledger (invoices)
        ("dynamodb:PutItem", USAGE_TABLE),  # profiles saved (budget, alert contacts, tier)
        ("dynamodb:UpdateItem", USAGE_TABLE),  # participants' identities pseudonymised on erasure; a code's try
        ("dynamodb:GetItem", USAGE_TABLE),  # the pending phone code (D160)
        ("dynamodb:DeleteItem", USAGE_TABLE),  # erasure: a running room state's participant items (D220)
        ("dynamodb:Query", OPEN_SESSIONS_INDEX),
        ("dynamodb:Query", ACCOUNT_SESSIONS_INDEX),
        ("dynamodb:Scan", ACCOUNTS_INDEX),  # the operator's account list
        ("sns:Publish", "*"),  # the phone verification code: SMS to a number has no resource (topics denied)
        ("sns:CheckIfPhoneNumberIsOptedOut", "*"),  # no code to a number that replied STOP
        ("dynamodb:Query", MEMBERS_TABLE),
        ("dynamodb:PutItem", MEMBERS_TABLE),
        ("dynamodb:DeleteItem", MEMBERS_TABLE),
        ("dynamodb:UpdateItem", MEMBERS_TABLE),
        ("dynamodb:ConditionCheckItem", MEMBERS_TABLE),  # removing an owner: another owner must remain
        ("dynamodb:Query", MEMBERS_BY_USER_INDEX),  # the signed-in user's invitations
        ("dynamodb:Query", ALERTS_TABLE),  # erasure: old delivery records' contact (D203) ...
        ("dynamodb:UpdateItem", ALERTS_TABLE),  # ... given its pseudonym (key, recipient and detail only)
        ("dynamodb:DeleteItem", ALERTS_TABLE),  # ... and old records keyed by a participant's identity (D214)
        ("secretsmanager:GetSecretValue", STRIPE_API_KEY),  # Checkout and Billing Portal pages
        ("secretsmanager:GetSecretValue", PHONE_CODE_KEY),  # the phone codes' HMAC key (D160)
    ),
    # Cognito's pre-token trigger: a user's memberships, nothing else (no usage, no Stripe)
    "AccountSignInClaimsFunctionRole": role(
        LAMBDA, {BASIC_EXECUTION, XRAY_WRITE}, ("dynamodb:Query", MEMBERS_BY_USER_INDEX)
    ),
    # EventBridge Scheduler's role for the sweeper's schedule, generated by SAM from the ScheduleV2 event.
    "SweeperFunctionEvery5MinutesRole": role(
        SCHEDULER,
        set(),
        ("lambda:InvokeFunction", SWEEPER_FUNCTION),
        ("sqs:SendMessage", SWEEPER_DLQ),
    ),
    # crypto: issued crypto invoices become OPEN bills (one conditional put each)
    "CryptoBillsFunctionRole": role(
        LAMBDA,
        {BASIC_EXECUTION, XRAY_WRITE, SQS_QUEUE_READ},
        ("dynamodb:PutItem", CRYPTO_TABLE),
    ),
    # crypto routes: quotes, the fast path (settlement's transactions), wallet links and nonces, history
    "CryptoApiFunctionRole": role(
        LAMBDA,
        {BASIC_EXECUTION, XRAY_WRITE},
        ("dynamodb:GetItem", CRYPTO_TABLE),
        ("dynamodb:PutItem", CRYPTO_TABLE),
        ("dynamodb:UpdateItem", CRYPTO_TABLE),
        ("dynamodb:DeleteItem", CRYPTO_TABLE),  # a nonce is taken (single use)
        ("dynamodb:Query", CRYPTO_TABLE),
        ("dynamodb:ConditionCheckItem", CRYPTO_TABLE),  # a quote needs its bill
        ("dynamodb:Query", f"{CRYPTO_TABLE}/index/account"),  # history, the linked wallet's unpaid bills
        ("dynamodb:Query", f"{CRYPTO_TABLE}/index/watch"),  # the Solana fast path's active references
        ("secretsmanager:GetSecretValue", CRYPTO_RPC),  # keyed RPC URLs
        ("events:PutEvents", BILLING_BUS),  # CryptoPaymentSeen.v1, CryptoBillSettled.v1
        ("dynamodb:Query", MEMBERS_TABLE),  # the caller's stored role before an admin write (D208), nothing else
    ),
    # the EVM watcher: settlement's reads and transactions, its cursor; a failed run to its DLQ (on-failure destination)
    "CryptoEvmWatcherFunctionRole": role(
        LAMBDA,
        {BASIC_EXECUTION, XRAY_WRITE},
        ("dynamodb:GetItem", CRYPTO_TABLE),
        ("dynamodb:PutItem", CRYPTO_TABLE),
        ("dynamodb:UpdateItem", CRYPTO_TABLE),
        ("dynamodb:Query", CRYPTO_TABLE),
        ("dynamodb:ConditionCheckItem", CRYPTO_TABLE),
        ("dynamodb:Query", f"{CRYPTO_TABLE}/index/watch"),  # SEEN payments pending finality
        ("dynamodb:Query", f"{CRYPTO_TABLE}/index/account"),  # the linked wallet's unpaid bills
        ("secretsmanager:GetSecretValue", CRYPTO_RPC),
        ("events:PutEvents", BILLING_BUS),
        ("sqs:SendMessage", CRYPTO_EVM_WATCHER_DLQ),
    ),
    **{
        f"CryptoEvmWatcherFunctionWatch{chain}Role": role(
            SCHEDULER,
            set(),
            ("lambda:InvokeFunction", CRYPTO_EVM_WATCHER),
            ("sqs:SendMessage", CRYPTO_EVM_WATCHER_DLQ),
        )
        for chain in ("Ethereum", "Base")
    },
    # invoicing marks a crypto invoice paid on CryptoBillSettled.v1
    "InvoiceCryptoSettledFunctionRole": role(
        LAMBDA,
        {BASIC_EXECUTION, XRAY_WRITE, SQS_QUEUE_READ},
        ("dynamodb:Query", USAGE_TABLE),
        ("dynamodb:PutItem", USAGE_TABLE),
        ("dynamodb:UpdateItem", USAGE_TABLE),  # the account's credit, with the invoice (D151: was missing)
    ),
    # the Solana watcher: settlement's reads and one-transaction writes on the crypto table, its events, the RPC secret
    "SolanaWatchFunctionRole": role(
        LAMBDA,
        {BASIC_EXECUTION, XRAY_WRITE},
        ("dynamodb:GetItem", CRYPTO_TABLE),
        ("dynamodb:PutItem", CRYPTO_TABLE),
        ("dynamodb:UpdateItem", CRYPTO_TABLE),
        ("dynamodb:ConditionCheckItem", CRYPTO_TABLE),  # TransactWriteItems: the bill's version with the payment
        ("dynamodb:Query", CRYPTO_TABLE),  # a bill's quotes
        ("dynamodb:Query", f"{CRYPTO_TABLE}/index/watch"),  # watched references, SEEN payments
        ("dynamodb:Query", f"{CRYPTO_TABLE}/index/account"),  # a linked wallet's unpaid bills
        ("events:PutEvents", BILLING_BUS),  # CryptoPaymentSeen, CryptoBillSettled, UnattributedCryptoPayment
        ("secretsmanager:GetSecretValue", CRYPTO_RPC),
        ("sqs:SendMessage", SOLANA_WATCH_DLQ),  # added by SAM for the asynchronous invocation's OnFailure
    ),
    "SolanaWatchFunctionEveryMinuteRole": role(
        SCHEDULER,
        set(),
        ("lambda:InvokeFunction", SOLANA_WATCH_FUNCTION),
        ("sqs:SendMessage", SOLANA_WATCH_DLQ),
    ),
}
ROUTES = {
    "LiveKitWebhookFunction": {"<IngestApi>/*/POST/webhooks/livekit"},
    "UsageApiFunction": {"<IngestApi>/*/POST/v1/usage", "<IngestApi>/*/POST/v1/entitlements/check"},
    "StripeWebhookFunction": {"<IngestApi>/*/POST/webhooks/stripe"},
    # the crypto function's routes on the account API (same JWT authorizer)
    "CryptoApiFunction": {
        "<AccountApi>/*/POST/v1/accounts/*/crypto/bills/*/quotes",
        "<AccountApi>/*/POST/v1/accounts/*/crypto/bills/*/transactions",
        "<AccountApi>/*/POST/v1/accounts/*/crypto/wallets/nonce",
        "<AccountApi>/*/POST/v1/accounts/*/crypto/wallets",
        "<AccountApi>/*/GET/v1/accounts/*/crypto/history",
    },
}
IAM_TYPES = {"AWS::IAM::Role", "AWS::IAM::Policy", "AWS::IAM::ManagedPolicy"}


def _listed(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def _attached_to(spec: dict[str, Any], role_id: str) -> bool:
    return {"Ref": role_id} in _listed(spec["Properties"].get("Roles", []))


def role_statements(transformed: Transformed, role_id: str) -> list[dict[str, Any]]:
    """Every statement that applies to a role: its inline policies and the policies created for it (connectors)."""
    properties = transformed.resources[role_id]["Properties"]
    documents = [policy["PolicyDocument"] for policy in properties.get("Policies", [])]
    for spec in transformed.resources.values():
        if spec["Type"] in {"AWS::IAM::Policy", "AWS::IAM::ManagedPolicy"} and _attached_to(spec, role_id):
            documents.append(spec["Properties"]["PolicyDocument"])
    return [transformed.resolve(statement) for document in documents for statement in document["Statement"]]


def grants(statements: list[dict[str, Any]], effect: str = "Allow") -> set[tuple[str, str]]:
    return {
        (action, resource)
        for statement in statements
        if statement["Effect"] == effect
        for action in _listed(statement["Action"])
        for resource in _listed(statement["Resource"])
    }


def statement_problems(statement: dict[str, Any], secret_names: set[str]) -> list[str]:
    """What makes a statement broader than "exact actions on exact ARNs" (empty list: nothing)."""
    problems = [
        f"{key} widens the statement" for key in ("NotAction", "NotResource", "NotPrincipal") if key in statement
    ]
    if statement.get("Effect") == "Deny":
        denied = grants([statement], "Deny")
        if not denied <= frozenset().union(*DENIED.values()):
            problems.append(f"Deny of {sorted(denied)}: only the declared Deny statements are expected")
        return problems  # a Deny only narrows: its wildcards grant nothing
    if statement.get("Effect") != "Allow":
        problems.append(f"Effect {statement.get('Effect')!r}: only Allow statements are expected")
    for action in _listed(statement.get("Action", [])):
        if "*" in action or "?" in action:
            problems.append(f"wildcard action {action}")
    for resource in _listed(statement.get("Resource", [])):
        if all((action, resource) in RESOURCELESS for action in _listed(statement.get("Action", []))):
            continue
        if "*" in resource:
            problems.append(f"wildcard resource {resource}")
        if ":secretsmanager:" in resource:
            name = re.fullmatch(rf"arn:aws:secretsmanager:{REGION}:{ACCOUNT}:secret:(.+)-\?{{6}}", resource)
            if name is None or name.group(1) not in secret_names:
                problems.append(f"{resource} is not one declared secret with its six-character suffix")
    return problems


def declared_secret_names(transformed: Transformed) -> set[str]:
    return {value for name, value in transformed.parameters.items() if name.endswith("SecretName")}


def test_given_the_sam_transform_then_the_template_becomes_cloudformation_that_cfn_lint_accepts(
    transformed: Transformed,
) -> None:
    matches = lint(json.dumps(transformed.body), config=ManualArgs(regions=[REGION]))
    # SAM itself writes the layer's name as a Fn::Sub without variables once parameters are resolved (W1020).
    problems = [
        match
        for match in matches
        if not (match.rule.id == "W1020" and match.path[:2] == ["Resources", _layer_id(transformed)])
    ]
    assert not problems, "\n".join(str(match) for match in problems)


def _layer_id(transformed: Transformed) -> str:
    (layer_id,) = transformed.of_type("AWS::Lambda::LayerVersion")
    return layer_id


def test_given_the_sam_transform_then_the_iam_roles_are_exactly_the_expected_ones(transformed: Transformed) -> None:
    iam = {name: spec["Type"] for name, spec in transformed.resources.items() if spec["Type"] in IAM_TYPES}
    roles = {name for name, kind in iam.items() if kind == "AWS::IAM::Role"}
    assert roles == set(ROLES)
    stray = {name for name, kind in iam.items() if kind != "AWS::IAM::Role"}
    attached = {name for name in stray if any(_attached_to(transformed.resources[name], r) for r in ROLES)}
    assert stray == attached, f"IAM policies attached to no known role: {sorted(stray - attached)}"


@pytest.mark.parametrize("role_id", sorted(ROLES))
def test_given_each_generated_role_then_it_grants_exactly_these_actions_on_these_resources(
    transformed: Transformed, role_id: str
) -> None:
    expected = ROLES[role_id]
    properties = transformed.resources[role_id]["Properties"]
    [trust] = properties["AssumeRolePolicyDocument"]["Statement"]
    assert (trust["Effect"], _listed(trust["Action"]), trust["Principal"]) == (
        "Allow",
        ["sts:AssumeRole"],
        {"Service": [expected.principal]},
    )
    assert set(transformed.resolve(properties.get("ManagedPolicyArns", []))) == expected.managed
    granted = grants(role_statements(transformed, role_id))
    assert granted == expected.grants, (
        f"{role_id}: unexpected {sorted(granted - expected.grants)}, missing {sorted(expected.grants - granted)}"
    )
    assert grants(role_statements(transformed, role_id), "Deny") == DENIED.get(role_id, frozenset())


def test_given_every_generated_statement_then_it_names_exact_actions_on_exact_resources(
    transformed: Transformed,
) -> None:
    secrets = declared_secret_names(transformed)
    assert secrets == {
        "kilo-billing/livekit-webhook-keys",
        "kilo-billing/usage-clients",
        "kilo-billing/stripe-webhook",
        "kilo-billing/stripe-api-key",
        "kilo-billing/crypto-rpc",
        "kilo-billing/phone-code-key",
    }
    for role_id in ROLES:
        for statement in role_statements(transformed, role_id):
            assert not statement_problems(statement, secrets), (role_id, statement)


@pytest.mark.parametrize(
    ("statement", "problem"),
    [
        pytest.param(
            {"Effect": "Allow", "Action": "secretsmanager:GetSecretValue", "Resource": LIVEKIT_KEYS[:-6] + "*"},
            "wildcard resource",
            id="secret_name_prefix_star",
        ),
        pytest.param(
            {
                "Effect": "Allow",
                "Action": "secretsmanager:GetSecretValue",
                "Resource": f"arn:aws:secretsmanager:{ARN}:secret:kilo-billing/livekit-??????",
            },
            "not one declared secret",
            id="secret_not_declared",
        ),
        pytest.param(
            {"Effect": "Allow", "Action": "dynamodb:*", "Resource": EVENTS_TABLE}, "wildcard action", id="action_star"
        ),
        pytest.param(
            {"Effect": "Allow", "Action": "dynamodb:PutItem", "Resource": "*"}, "wildcard resource", id="resource_star"
        ),
        pytest.param({"Effect": "Allow", "NotAction": "iam:*", "Resource": EVENTS_TABLE}, "NotAction", id="not_action"),
    ],
)
def test_given_a_broad_statement_when_checked_then_the_rule_names_the_problem(
    transformed: Transformed, statement: dict[str, Any], problem: str
) -> None:
    """Negative controls: the rule above trips on each way a statement can be broader than exact."""
    problems = statement_problems(statement, declared_secret_names(transformed))
    assert any(problem in text for text in problems), problems


def test_given_the_http_api_then_each_invoke_permission_is_limited_to_its_own_route(transformed: Transformed) -> None:
    permissions = transformed.of_type("AWS::Lambda::Permission")
    by_function: dict[str, set[str]] = {}
    account_api: set[str] = set()
    cognito: list[tuple[str | None, dict[str, Any]]] = []
    for spec in permissions.values():
        properties = transformed.resolve(spec["Properties"])
        assert properties["Action"] == "lambda:InvokeFunction"
        if properties["Principal"] == "cognito-idp.amazonaws.com":
            cognito.append((spec.get("Condition"), properties))
            continue
        assert properties["Principal"] == "apigateway.amazonaws.com"
        if properties["FunctionName"] == "kilo-billing-account-api-test":
            account_api.add(properties["SourceArn"])
            continue
        by_function.setdefault(properties["FunctionName"], set()).add(properties["SourceArn"])
    # Cognito: only the sign-in claims function, only from the configured user pool, only when one is configured
    assert [(condition, props["FunctionName"], props["SourceArn"]) for condition, props in cognito] == [
        (
            "HasCognitoUserPool",
            f"arn:aws:lambda:{ARN}:function:kilo-billing-account-sign-in-test",
            transformed.parameters["CognitoUserPoolArn"],
        )
    ]
    # the account API: one permission per route of its own API (path parameters as "*"), nothing else
    events = transformed_events(transformed, "AccountApiFunction")
    assert account_api == {
        f"arn:aws:execute-api:{ARN}:<AccountApi>/*/{method}{re.sub(r'[{][^}]+[}]', '*', path)}"
        for method, path in events
    }
    # any stage ("*") of this API, one method and path: no other API or route can invoke the function
    assert by_function == {
        f"kilo-billing-{slug}-test": {f"arn:aws:execute-api:{ARN}:{route}" for route in ROUTES[function]}
        for function, slug in (
            ("LiveKitWebhookFunction", "livekit-webhook"),
            ("UsageApiFunction", "usage-api"),
            ("StripeWebhookFunction", "stripe-webhook"),
            ("CryptoApiFunction", "crypto-api"),
        )
    }


def test_given_the_sweeper_role_then_its_only_usage_table_update_is_the_threshold_markers(
    transformed: Transformed,
) -> None:
    updates = [
        statement
        for statement in role_statements(transformed, "SweeperFunctionRole")
        if "dynamodb:UpdateItem" in _listed(statement["Action"])
    ]
    assert [(s["Resource"], s.get("Condition")) for s in updates] == [
        (
            USAGE_TABLE,
            {
                "ForAllValues:StringEquals": {"dynamodb:Attributes": ["pk", "sk", "thresholds"]},
                "ForAllValues:StringLike": {"dynamodb:LeadingKeys": ["ACCOUNT#*"]},  # the aggregate's (fiam)
            },
        )
    ]


def test_given_the_rating_role_then_its_only_events_table_update_marks_a_usage_event_rated(
    transformed: Transformed,
) -> None:
    """D407: rating's UpdateItem on the events table was unconditioned (a stored event's quantity could be
    rewritten); its one update there is the mark `SET rated_at`, conditional on the key."""
    updates = [
        statement
        for statement in role_statements(transformed, "RateUsageFunctionRole")
        if statement["Resource"] == EVENTS_TABLE and "dynamodb:UpdateItem" in _listed(statement["Action"])
    ]
    assert [(_listed(s["Action"]), s.get("Condition")) for s in updates] == [
        (
            ["dynamodb:UpdateItem"],
            {
                "ForAllValues:StringEquals": {"dynamodb:Attributes": ["pk", "sk", "rated_at"]},
                "StringEqualsIfExists": {"dynamodb:ReturnValues": ["NONE", "UPDATED_OLD", "UPDATED_NEW"]},
            },
        )
    ]


RECHECK_MARK_WRITES = ["pk", "sk", "status", "queued_at_ms", "recheck_period", "recheck_due_ms"]
RECHECK_MARK_CONDITION_READS = ["limit_name", "limit", "forecast_day"]  # fb3: the row read, not one replaced since


def test_given_the_operator_checks_role_then_its_only_alerts_table_update_marks_a_forecast_recheck_queued(
    transformed: Transformed,
) -> None:
    """D366: the run queuing the forecast's re-checks sets a row's status and time and removes the sparse index's
    keys (its condition names `recheck_due_ms`), nothing else; it reads the index only by Query. fb3: the mark's
    condition also reads the row's limit and day (the row read, not one replaced since) - named in the grant, as a
    request's attributes include its condition's (D223)."""
    statements = role_statements(transformed, "OperatorChecksFunctionRole")
    updates = [s for s in statements if "dynamodb:UpdateItem" in _listed(s["Action"]) and s["Resource"] != USAGE_TABLE]
    assert [(s["Resource"], s.get("Condition")) for s in updates] == [
        (
            ALERTS_TABLE,
            {
                "ForAllValues:StringEquals": {
                    "dynamodb:Attributes": [*RECHECK_MARK_WRITES, *RECHECK_MARK_CONDITION_READS]
                }
            },
        )
    ]
    on_index = [s for s in statements if s.get("Resource") == FORECAST_RECHECKS_INDEX]
    assert [_listed(s["Action"]) for s in on_index] == [["dynamodb:Query"]]


def test_given_the_alerts_table_then_the_forecast_rechecks_due_index_is_keyed_by_month_and_due_time(
    transformed: Transformed,
) -> None:
    """D366: the sparse index the operator checks' 15-minute run reads; the run's schedule names the check."""
    table = transformed.resources["AlertsTable"]["Properties"]
    assert [(i["IndexName"], i["KeySchema"]) for i in table["GlobalSecondaryIndexes"]] == [
        (
            "forecast_rechecks_due",
            [
                {"AttributeName": "recheck_period", "KeyType": "HASH"},
                {"AttributeName": "recheck_due_ms", "KeyType": "RANGE"},
            ],
        )
    ]
    schedule = transformed.resources["OperatorChecksFunctionForecastRechecks"]["Properties"]
    assert schedule["ScheduleExpression"] == "rate(15 minutes)"
    # the run's own idea of its interval (the month's last run, its spread's cap) is the schedule's
    assert schedule["ScheduleExpression"] == f"rate({RUN_INTERVAL_SECONDS // 60} minutes)"
    assert '"check": "forecast"' in schedule["Target"]["Input"]
    # the run's bound (100 a run: at most 4 x 100 = 400 an hour) and the spread over its 15 minutes (900 s)
    variables = transformed.resources["OperatorChecksFunction"]["Properties"]["Environment"]["Variables"]
    assert variables["FORECAST_RECHECKS_PER_RUN"] == "100"
    assert variables["FORECAST_RECHECK_SPREAD_SECONDS"] == {"Ref": "ForecastRecheckSpreadSeconds"}


def test_given_the_forecast_rechecks_queue_then_the_alerts_function_takes_it_as_it_takes_the_alerts_queue(
    transformed: Transformed,
) -> None:
    """D366 amended (fq): the operator checks' run sends its re-checks to a queue of their own (its role may not send
    to the alerts queue: SQS cannot condition a send on the body). The alerts function consumes it as it consumes the
    alerts queue - the same batch, window, partial failures and concurrency - and the queue has the alerts queue's
    visibility timeout (360 s, past the claims' lease) and receives (5: the handler's last receive), then a
    dead-letter queue alarmed as the alerts one is (one message visible in a minute)."""
    resources = transformed.resources
    alerts, rechecks = resources["AlertsQueue"]["Properties"], resources["ForecastRechecksQueue"]["Properties"]
    dlq = resources["ForecastRechecksDeadLetterQueue"]["Properties"]
    assert (rechecks["VisibilityTimeout"], rechecks["RedrivePolicy"]["maxReceiveCount"]) == (360, 5)
    assert {k: v for k, v in rechecks.items() if k not in ("QueueName", "RedrivePolicy")} == {
        k: v for k, v in alerts.items() if k not in ("QueueName", "RedrivePolicy")
    }
    assert transformed.resolve(rechecks["RedrivePolicy"]["deadLetterTargetArn"]) == (
        f"arn:aws:sqs:{ARN}:kilo-billing-forecast-rechecks-dlq-test"
    )
    assert dlq == {**resources["AlertsDeadLetterQueue"]["Properties"], "QueueName": dlq["QueueName"]}

    def alarm(name: str) -> dict[str, Any]:
        return {k: v for k, v in resources[name]["Properties"].items() if k not in ("AlarmDescription", "Dimensions")}

    assert alarm("ForecastRechecksDeadLetterAlarm") == alarm("AlertsDeadLetterAlarm")
    assert transformed.resolve(resources["ForecastRechecksDeadLetterAlarm"]["Properties"]["Dimensions"]) == [
        {"Name": "QueueName", "Value": "kilo-billing-forecast-rechecks-dlq-test"}
    ]
    mappings = {
        transformed.resolve(spec["Properties"]["EventSourceArn"]): spec["Properties"]
        for spec in transformed.of_type("AWS::Lambda::EventSourceMapping").values()
        if spec["Properties"]["FunctionName"] == {"Ref": "AlertsFunction"}
    }
    assert sorted(mappings) == sorted([ALERTS_QUEUE, FORECAST_RECHECKS_QUEUE])
    assert {k: v for k, v in mappings[FORECAST_RECHECKS_QUEUE].items() if k != "EventSourceArn"} == {
        k: v for k, v in mappings[ALERTS_QUEUE].items() if k != "EventSourceArn"
    }
    # the operator checks know the re-checks' queue only; the alerts function its own queue (the removal step's) and
    # the re-checks' queue, the one it refuses all but BudgetForecastDue.v1 from (D366 amended (fq2)): both URLs
    operator = resources["OperatorChecksFunction"]["Properties"]["Environment"]["Variables"]
    assert operator["FORECAST_RECHECKS_QUEUE_URL"] == {"Ref": "ForecastRechecksQueue"}
    assert "ALERTS_QUEUE_URL" not in operator
    alerts_function = resources["AlertsFunction"]["Properties"]["Environment"]["Variables"]
    assert alerts_function["ALERTS_QUEUE_URL"] == {"Ref": "AlertsQueue"}
    assert alerts_function["FORECAST_RECHECKS_QUEUE_URL"] == {"Ref": "ForecastRechecksQueue"}


def test_given_the_sweeper_role_then_each_of_its_usage_table_puts_names_the_attributes_it_may_write(
    transformed: Transformed,
) -> None:
    """A room's listing (D125), a swept room's mark (D219; the drop's version, D222) and a quiet room's
    version-only header (D219) with its count of events rated from (D273), whose condition names `pending`
    (D223), and a join-less room's renewed mark, conditional on its ``marked_at_ms`` (D393, D394): the
    attributes a request names include its condition's. The renewed mark and a give-up's claim (D412; ``said``,
    D421) only in their own partitions; the listing and the dropped state only in a room's, the swept mark only in
    its own (D429 amended by fiam: before, a put of `pk, sk, version` could replace a profile)."""
    puts = [
        statement
        for statement in role_statements(transformed, "SweeperFunctionRole")
        if "dynamodb:PutItem" in _listed(statement["Action"]) and statement["Resource"] == USAGE_TABLE
    ]
    assert sorted(s["Condition"]["ForAllValues:StringEquals"]["dynamodb:Attributes"] for s in puts) == [
        ["pk", "sk", "answered_at_ms", "participants", "expires_at"],
        ["pk", "sk", "closed_at_ms", "expires_at", "dropped_version"],
        ["pk", "sk", "marked_at_ms", "expires_at"],
        ["pk", "sk", "marked_at_ms", "expires_at", "said"],
        ["pk", "sk", "version", "delivered_ms", "events", "generation", "pending"],
    ]
    partitions = {
        tuple(s["Condition"]["ForAllValues:StringEquals"]["dynamodb:Attributes"]): s["Condition"][
            "ForAllValues:StringEquals"
        ].get("dynamodb:LeadingKeys")
        or s["Condition"].get("ForAllValues:StringLike", {}).get("dynamodb:LeadingKeys")
        for s in puts
    }
    assert partitions == {
        ("pk", "sk", "answered_at_ms", "participants", "expires_at"): ["ROOM#*"],
        ("pk", "sk", "closed_at_ms", "expires_at", "dropped_version"): ["SWEPT_ROOMS"],
        ("pk", "sk", "version", "delivered_ms", "events", "generation", "pending"): ["ROOM#*"],
        ("pk", "sk", "marked_at_ms", "expires_at"): ["JOINLESS_ROOMS"],
        ("pk", "sk", "marked_at_ms", "expires_at", "said"): ["JOINLESS_GIVEN_UP"],
    }
    from kilo_rate_usage import items  # noqa: PLC0415

    # the keys the adapter builds for these puts fall in their partitions (IAM's `*`: fnmatch's, no `[`/`?` here)
    written = {
        "ROOM#*": [items.listing_key("RM_abc"), items.state_key("RM_abc")],
        "SWEPT_ROOMS": [items.swept_room_key("RM_abc")],
    }
    for pattern, keys in written.items():
        assert all(fnmatch.fnmatchcase(key["pk"]["S"], pattern) for key in keys), keys


def test_given_the_account_api_role_then_the_alerts_table_is_read_and_written_by_key_recipient_and_detail_only(
    transformed: Transformed,
) -> None:
    """D203: the erasure's grant on the alerts table names the attributes it may read and write; D214: it
    deletes (by key: no other attribute) the records keyed by a participant's identity."""
    on_alerts = [
        statement
        for statement in role_statements(transformed, "AccountApiFunctionRole")
        if statement.get("Resource") == ALERTS_TABLE
    ]
    assert [(sorted(_listed(s["Action"])), s.get("Condition")) for s in on_alerts] == [
        (
            ["dynamodb:DeleteItem", "dynamodb:Query", "dynamodb:UpdateItem"],
            {
                "ForAllValues:StringEquals": {"dynamodb:Attributes": ["pk", "sk", "recipient", "detail"]},
                "StringEqualsIfExists": {
                    "dynamodb:Select": "SPECIFIC_ATTRIBUTES",
                    "dynamodb:ReturnValues": ["NONE", "UPDATED_OLD", "UPDATED_NEW"],
                },
            },
        )
    ]


def transformed_events(transformed: Transformed, function: str) -> set[tuple[str, str]]:
    """(method, path) of a function's HttpApi events, from the template before the transform."""
    from kilo_dev.template import Template  # noqa: PLC0415

    spec = Template(parameters={"Stage": "test"}).resources[function]
    return {
        (event["Properties"]["Method"], event["Properties"]["Path"])
        for event in spec["Properties"]["Events"].values()
        if event["Type"] == "HttpApi"
    }


# The partition keys of the items the sweeper queries and deletes on the usage table: a room's partition (its dropped
# state's participant items: `ROOM#<sid>`) and the two partitions of marks (D219, D375). An invoice, a profile, an
# aggregate (`ACCOUNT#<id>`) matches none of them.
SWEEPER_PARTITIONS = ["ROOM#*", "SWEPT_ROOMS", "JOINLESS_ROOMS"]


def test_given_the_sweeper_role_then_it_queries_and_deletes_only_in_room_and_mark_partitions(
    transformed: Transformed,
) -> None:
    """pi: the sweeper's DeleteItem was granted on every item of the usage table (invoices included) with no
    condition; `dynamodb:LeadingKeys` (the whole partition key value; `StringLike` takes the `*`) limits its Query and
    DeleteItem to a room's partition and the marks' partitions."""
    statements = [
        statement
        for statement in role_statements(transformed, "SweeperFunctionRole")
        if "dynamodb:DeleteItem" in _listed(statement["Action"])
    ]
    assert [(s["Resource"], sorted(_listed(s["Action"])), s.get("Condition")) for s in statements] == [
        (
            USAGE_TABLE,
            ["dynamodb:DeleteItem", "dynamodb:Query"],
            {"ForAllValues:StringLike": {"dynamodb:LeadingKeys": SWEEPER_PARTITIONS}},
        )
    ]


def test_given_the_keys_the_sweeper_deletes_then_each_matches_its_grant_and_an_invoice_key_none(
    transformed: Transformed,
) -> None:
    """The keys the sweeper's adapter builds for what it deletes fall in the granted partitions (IAM's `StringLike`:
    `*` any run of characters, as fnmatch without its `[`/`?` - none in these keys); an invoice's partition does not."""
    from kilo_rate_usage import items  # noqa: PLC0415

    deleted = [
        items.swept_room_key("RM_abc"),
        items.joinless_room_key("RM_abc"),
        items.participant_key("RM_abc", "3.0123456789ab", "PA_x"),
        items.participant_key("RM_abc", "2.ba9876543210", "PA_y"),  # an old generation's
    ]
    assert [item["pk"]["S"] for item in deleted] == ["SWEPT_ROOMS", "JOINLESS_ROOMS", "ROOM#RM_abc", "ROOM#RM_abc"]
    for item in deleted:
        assert any(fnmatch.fnmatchcase(item["pk"]["S"], pattern) for pattern in SWEEPER_PARTITIONS), item
    assert not any(fnmatch.fnmatchcase("ACCOUNT#acc_1", pattern) for pattern in SWEEPER_PARTITIONS)


def test_given_the_alerts_role_then_it_sends_email_only_from_the_configured_sender(transformed: Transformed) -> None:
    """pi: `ses:SendEmail` was granted on the sender identity (a domain: any address of it) with no condition on the
    From address; `ses:FromAddress` pins it to the AlertSenderEmail parameter (alerts@kilo.example by default), the
    address the mailer sends from (FromEmailAddress)."""
    sends = [
        statement
        for statement in role_statements(transformed, "AlertsFunctionRole")
        if "ses:SendEmail" in _listed(statement["Action"])
    ]
    assert [s.get("Condition") for s in sends] == [{"StringEquals": {"ses:FromAddress": "alerts@kilo.example"}}]
    variables = transformed.resources["AlertsFunction"]["Properties"]["Environment"]["Variables"]
    assert transformed.resolve(variables["ALERT_SENDER_EMAIL"]) == "alerts@kilo.example"


HOLD_WRITES = ["pk", "sk", "status", "version"]  # the abuse hold: the profile's status, over the version read (D142)
# the hold's item is the account's profile: only in an account's partition (D431)
HOLD = {
    "ForAllValues:StringEquals": {"dynamodb:Attributes": HOLD_WRITES},
    "ForAllValues:StringLike": {"dynamodb:LeadingKeys": ["ACCOUNT#*"]},
}


@pytest.mark.parametrize("role_id", ["AlertsFunctionRole", "OperatorChecksFunctionRole"])
def test_given_the_alerts_and_operator_checks_roles_then_they_put_no_usage_table_item_and_a_hold_writes_the_status(
    transformed: Transformed, role_id: str
) -> None:
    """pi: both roles could PutItem any usage-table item (an invoice replaced, an aggregate wiped) for the one write
    they make there, an abuse hold; the hold is an UpdateItem of the profile's status and version
    (DynamoAccountDirectory.save_status), granted on those attributes only."""
    statements = role_statements(transformed, role_id)
    assert ("dynamodb:PutItem", USAGE_TABLE) not in grants(statements)
    holds = [
        s
        for s in statements
        if s["Resource"] == USAGE_TABLE and "dynamodb:UpdateItem" in _listed(s["Action"]) and s.get("Condition")
    ]
    spend = [SPEND_READING] if role_id == "AlertsFunctionRole" else []  # D406: its other update there
    assert [(_listed(s["Action"]), s["Condition"]) for s in holds] == [
        *spend,
        (["dynamodb:UpdateItem"], HOLD),
    ]


# D406: the spend item's reading (DynamoEntitlements.record) - its key and the meter's attribute; no `account_id`,
# the `accounts` index's key (D430)
SPEND_WRITES = [
    "pk",
    "sk",
    "spend",
    "allowance_video",
    "allowance_audio",
    "allowance_messages",
    "allowance_data_transfer",
    "period",  # the condition's names nested in the reading (counted: pi2, D405 amended)
    "used",
]
SPEND_READING = (
    ["dynamodb:UpdateItem"],
    {
        "ForAllValues:StringEquals": {"dynamodb:Attributes": SPEND_WRITES},
        "ForAllValues:StringLike": {"dynamodb:LeadingKeys": ["ACCOUNT#*"]},  # the spend item's partition (pi2)
        "StringEqualsIfExists": {"dynamodb:ReturnValues": ["NONE", "UPDATED_OLD", "UPDATED_NEW"]},
    },
)


def test_given_the_alerts_role_then_its_usage_table_updates_are_all_conditioned_the_spend_reading_on_every_meter(
    transformed: Transformed,
) -> None:
    """D406: the alerts role's UpdateItem on the usage table was unconditioned (any attribute of any item) for the
    spend item's reading; the reading's attribute is one per meter of the threshold event - a closed list: each
    meter's attribute (`attribute_for`) is granted, and no unconditioned update is left."""
    from typing import get_args  # noqa: PLC0415

    from kilo_billing.contracts import UsageThresholdCrossedV1  # noqa: PLC0415
    from kilo_billing.entitlement_items import attribute_for  # noqa: PLC0415

    meters = get_args(UsageThresholdCrossedV1.model_fields["meter"].annotation)
    assert set(meters) == {"video", "audio", "messages", "data_transfer", "budget", "hard_limit"}
    nested = {"period", "used"}  # the condition's `#r.#p`, `#r.#u` (DynamoEntitlements.record)
    assert {attribute_for(meter) for meter in meters} | {"pk", "sk"} | nested == set(SPEND_WRITES)
    updates = [
        s
        for s in role_statements(transformed, "AlertsFunctionRole")
        if s["Resource"] == USAGE_TABLE and "dynamodb:UpdateItem" in _listed(s["Action"])
    ]
    assert [s.get("Condition") for s in updates] == [
        SPEND_READING[1],
        HOLD,
    ]


def test_given_the_account_api_role_then_it_deletes_usage_table_items_only_in_a_rooms_partition(
    transformed: Transformed,
) -> None:
    """pi: the account API's one DeleteItem on the usage table, an erased account's running room state's participant
    items (D220: `ROOM#<sid>` / `PART#...`), was granted on every item (invoices included); `dynamodb:LeadingKeys`
    limits it to a room's partition."""
    deletes = [
        s
        for s in role_statements(transformed, "AccountApiFunctionRole")
        if s["Resource"] == USAGE_TABLE and "dynamodb:DeleteItem" in _listed(s["Action"])
    ]
    assert [(_listed(s["Action"]), s.get("Condition")) for s in deletes] == [
        (["dynamodb:DeleteItem"], {"ForAllValues:StringLike": {"dynamodb:LeadingKeys": ["ROOM#*"]}})
    ]


def _item_names(module: Any, function: str) -> set[str]:
    """The attribute names of the dict literal an item builder passes to ``to_item`` (string keys, and module
    constants such as ``KEY``/``SORT_KEY`` resolved): read from its source, so a new attribute shows up here."""
    import ast  # noqa: PLC0415
    import inspect  # noqa: PLC0415

    tree = ast.parse(inspect.getsource(getattr(module, function)))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Dict):
            for key in node.keys:
                if isinstance(key, ast.Constant) and isinstance(key.value, str):
                    names.add(key.value)
                elif isinstance(key, ast.Name):
                    names.add(str(getattr(module, key.id)))
    return names


def _usage_writes(transformed: Transformed, role_id: str) -> list[tuple[list[str], dict[str, Any] | None]]:
    return [
        (_listed(s["Action"]), s.get("Condition"))
        for s in role_statements(transformed, role_id)
        if s["Resource"] == USAGE_TABLE
        and {"dynamodb:PutItem", "dynamodb:UpdateItem", "dynamodb:DeleteItem", "dynamodb:BatchWriteItem"}
        & set(_listed(s["Action"]))
    ]


@pytest.mark.parametrize(
    "role_id", ["InvoiceCloseFunctionRole", "PaymentStatusFunctionRole", "InvoiceCryptoSettledFunctionRole"]
)
def test_given_a_ledger_role_then_its_usage_table_writes_are_the_ledger_s_items_in_their_partitions(
    transformed: Transformed, role_id: str
) -> None:
    """D429: the ledger's roles (DynamoLedgerStore) put and updated any item of the usage table. Their puts are
    the invoice, the credit note (their builders' attributes, read from the source) and the GATEWAY# pointer, with
    their conditions' names; their updates the watermark, a credited invoice's revision and the BILLING item (its
    `BillingFields`, the dispute flag's revision). Neither lists `account_id`, the `accounts` index's key."""
    from kilo_billing import invoicing, periods_items  # noqa: PLC0415

    puts = (
        _item_names(periods_items, "invoice_to_item")
        | _item_names(periods_items, "credit_note_to_item")
        | {"owner", "invoice_id"}  # the GATEWAY# pointer (its `account_id` None: not written)
        | {"status", "crypto_credit", "revision", "version"}  # the puts' conditions
    )
    updates = {"pk", "sk", "billed_rev", "invoiced_at", "b#*", "revision", "seq", "credit", "refund_rev"}
    updates |= set(invoicing.BillingFields.__annotations__) | {"dispute_revision"}
    writes = _usage_writes(transformed, role_id)
    assert [actions for actions, _ in writes] == [["dynamodb:PutItem"], ["dynamodb:UpdateItem"]]
    (_, put), (_, update) = writes
    assert put is not None
    assert update is not None
    assert put["ForAllValues:StringLike"] == {"dynamodb:LeadingKeys": ["ACCOUNT#*", "GATEWAY#*"]}
    assert set(put["ForAllValues:StringEquals"]["dynamodb:Attributes"]) == puts
    assert update["ForAllValues:StringLike"]["dynamodb:LeadingKeys"] == ["ACCOUNT#*"]
    assert set(update["ForAllValues:StringLike"]["dynamodb:Attributes"]) == updates
    assert "account_id" not in puts | updates


def test_given_the_rating_role_then_its_usage_table_writes_are_its_rooms_aggregates_and_marks(
    transformed: Transformed,
) -> None:
    """D429: rating's role put, updated and deleted any item of the usage table. Its writes are a room's items
    (sessions, the state header, participant items: their builders' attributes), an aggregate's counters and
    thresholds, the profile's erasure mark checked, the join-less mark - each in its partition."""
    from kilo_billing import room_state_items  # noqa: PLC0415
    from kilo_rate_usage import items  # noqa: PLC0415

    room = (
        _item_names(items, "session_to_item")
        | _item_names(items, "state_to_item")
        | _item_names(items, "participant_to_item")
        | {room_state_items.STATE_PENDING}  # a chunked write's mark
    )
    writes = _usage_writes(transformed, "RateUsageFunctionRole")
    checks = [
        s.get("Condition")
        for s in role_statements(transformed, "RateUsageFunctionRole")
        if s["Resource"] == USAGE_TABLE and _listed(s["Action"]) == ["dynamodb:ConditionCheckItem"]
    ]
    returns = {"StringEqualsIfExists": {"dynamodb:ReturnValues": ["NONE", "UPDATED_OLD", "UPDATED_NEW"]}}
    (_, rooms), aggregate, joinless = writes
    assert rooms is not None
    assert rooms["ForAllValues:StringLike"] == {"dynamodb:LeadingKeys": ["ROOM#*"]}
    assert set(rooms["ForAllValues:StringEquals"]["dynamodb:Attributes"]) == room
    assert aggregate == (
        ["dynamodb:UpdateItem"],
        {
            "ForAllValues:StringLike": {
                "dynamodb:LeadingKeys": ["ACCOUNT#*"],
                "dynamodb:Attributes": ["pk", "sk", "c#*", "late#*", "thresholds"],
            },
            **returns,
        },
    )
    assert joinless[0] == ["dynamodb:PutItem"]
    assert joinless[1] is not None
    assert joinless[1]["ForAllValues:StringLike"] == {"dynamodb:LeadingKeys": ["JOINLESS_ROOMS"]}
    marks = joinless[1]["ForAllValues:StringEquals"]["dynamodb:Attributes"]
    assert set(marks) == _item_names(items, "joinless_room_item")
    assert checks == [
        {
            "ForAllValues:StringLike": {"dynamodb:LeadingKeys": ["ACCOUNT#*"]},
            "ForAllValues:StringEquals": {"dynamodb:Attributes": ["pk", "sk", "erased_at"]},
        }
    ]
    assert "account_id" not in room


def test_given_the_account_api_role_then_its_usage_table_writes_are_in_their_partitions(
    transformed: Transformed,
) -> None:
    """D429 amended by giam: the account API's usage-table PutItem/UpdateItem had no condition. Its puts are in an
    account's partition only; its updates name the BILLING digest and the phone code's (`ACCOUNT#`), a number's codes
    of a day (`PHONE#`, `take_counted`'s counter and TTL), and the erasure's session and state header (`ROOM#`)."""
    from kilo_billing import room_state_items as state  # noqa: PLC0415

    def update(partition: str, *names: str) -> tuple[list[str], dict[str, Any]]:
        return (
            ["dynamodb:UpdateItem"],
            {
                "ForAllValues:StringLike": {"dynamodb:LeadingKeys": [partition]},
                "ForAllValues:StringEquals": {"dynamodb:Attributes": ["pk", "sk", *names]},
            },
        )

    from kilo_account_api import items  # noqa: PLC0415
    from kilo_billing import account_items  # noqa: PLC0415

    room = ("identity", "registers", "account", state.STATE_VERSION, state.STATE_BLOB, state.STATE_PENDING)
    writes = _usage_writes(transformed, "AccountApiFunctionRole")
    (actions, put), *updates = writes
    assert put is not None
    assert (actions, put["ForAllValues:StringLike"]) == (["dynamodb:PutItem"], {"dynamodb:LeadingKeys": ["ACCOUNT#*"]})
    assert set(put["ForAllValues:StringEquals"]["dynamodb:Attributes"]) == (
        _item_names(account_items, "profile_to_item")
        | _item_names(account_items, "answer_to_item")
        | _item_names(items, "phone_challenge_to_item")
    )
    assert updates == [
        update("ACCOUNT#*", "customer_details", "phone", "code_hash", "tries_left", "salt"),
        update("PHONE#*", "codes", "expires_at"),
        update("ROOM#*", *room),
        (["dynamodb:DeleteItem"], {"ForAllValues:StringLike": {"dynamodb:LeadingKeys": ["ROOM#*"]}}),
    ]
