"""The account API's Stripe pages and phone verification under its generated role (AccountApiFunctionRole), moto
enforcing IAM: a Checkout page and a Billing Portal page (the Stripe key read from Secrets Manager; Stripe is the
emulator), and a phone number saved, texted its code (SNS) and confirmed (the code's item: GetItem, PutItem,
UpdateItem). The account API has no refund route (refunds are the Stripe webhook's and invoicing's, D151's tier covers
them there). Negative controls: without ``secretsmanager:GetSecretValue`` on the Stripe key the page is a 503 and
Stripe is never called; without ``sns:Publish`` no code is texted (503) and the number stays unverified."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest

from kilo_dev.stripe_emulator import EmulatorHTTPClient
from tests.account_api_support import api_environment, call, claims
from tests.iam.conftest import Roles
from tests.infra.test_generated_iam import PHONE_CODE_KEY, STRIPE_API_KEY, USAGE_TABLE
from tests.integration.test_account_api import frozen, register

__all__ = ["frozen"]
FUNCTION = "AccountApiFunction"
ADMIN, MEMBER = claims("acct_a", "admin"), claims("acct_a", "member")
PREFERENCES = "/v1/accounts/acct_a/alert-preferences"
PHONE = "+14155550166"
pytestmark = pytest.mark.usefixtures("frozen")


@pytest.fixture
def account_api(stack: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    yield from api_environment(stack, monkeypatch, {"acct_a": {"user-1": "admin"}})


@pytest.fixture
def stripe(account_api: Any, monkeypatch: pytest.MonkeyPatch) -> tuple[EmulatorHTTPClient, str]:
    """The Stripe emulator as the SDK's transport, and the key's secret (its ARN: what IAM is asked about)."""
    from kilo_account_api import dependencies  # noqa: PLC0415

    http = EmulatorHTTPClient()
    monkeypatch.setattr(dependencies, "stripe_http_client", lambda: http)
    name = account_api.template.parameters["StripeApiKeySecretName"]
    created = account_api.clients["secretsmanager"].create_secret(
        Name=name, SecretString='{"api_key": "sk_test_emulated"}'
    )
    return http, str(created["ARN"])


def phone_code_key_arn(stack: Any) -> str:
    name = stack.template.parameters["PhoneCodeKeySecretName"]
    return str(stack.clients["secretsmanager"].describe_secret(SecretId=name)["ARN"])


def texts(stack: Any) -> list[tuple[str, str]]:
    from moto.sns.models import sns_backends  # noqa: PLC0415

    return [(to, text) for to, text in sns_backends[stack.template.account]["us-east-1"].sms_messages.values()]


def test_given_the_generated_role_then_checkout_and_the_billing_portal_pages_are_made(
    account_api: Any, roles: Roles, stripe: tuple[EmulatorHTTPClient, str]
) -> None:
    http, secret_arn = stripe
    register(account_api, "acct_a", email="ops@a.example")
    with roles.acting_as(FUNCTION) as enforcement:
        checkout = call("POST", "/v1/accounts/acct_a/payment-methods/checkout", ADMIN)
        portal = call("POST", "/v1/accounts/acct_a/billing-portal", ADMIN)
    assert enforcement.denied == []
    assert (checkout.status, portal.status) == (200, 200), (checkout.body, portal.body)
    assert checkout.body["url"].startswith("http")
    assert portal.body["url"].startswith("http")
    assert ("secretsmanager:GetSecretValue", secret_arn) in enforcement.allowed
    assert [r.path for r in http.requests if r.method == "post"].count("/v1/checkout/sessions") == 1


def test_given_the_stripe_key_taken_from_the_role_then_the_pages_are_503_and_stripe_is_never_called(
    account_api: Any, roles: Roles, stripe: tuple[EmulatorHTTPClient, str]
) -> None:
    http, secret_arn = stripe
    register(account_api, "acct_a", email="ops@a.example")
    without = {("secretsmanager:GetSecretValue", STRIPE_API_KEY)}
    with roles.acting_as(FUNCTION, without=without) as enforcement:
        checkout = call("POST", "/v1/accounts/acct_a/payment-methods/checkout", ADMIN)
    assert enforcement.denied == [("secretsmanager:GetSecretValue", secret_arn)]
    assert (checkout.status, checkout.body["code"]) == (503, "unavailable")
    assert http.requests == []


def test_given_the_generated_role_then_a_saved_number_is_texted_its_code_and_confirmed(
    account_api: Any, roles: Roles
) -> None:
    register(account_api, "acct_a")
    with roles.acting_as(FUNCTION) as enforcement:
        saved = call("PUT", PREFERENCES, ADMIN, {"phone": PHONE})
        [(to, text)] = texts(account_api)
        code = re.search(r"your code is (\d{6})", text)
        assert code is not None
        confirmed = call("POST", f"{PREFERENCES}/phone-code/confirm", ADMIN, {"code": code.group(1)})
        read = call("GET", PREFERENCES, MEMBER)
    assert enforcement.denied == []
    assert (saved.status, to, confirmed.status, read.body["phone_verified"]) == (200, PHONE, 200, True)
    assert {
        ("sns:CheckIfPhoneNumberIsOptedOut", "*"),
        ("sns:Publish", "*"),
        ("secretsmanager:GetSecretValue", phone_code_key_arn(account_api)),
        ("dynamodb:GetItem", USAGE_TABLE),
        ("dynamodb:PutItem", USAGE_TABLE),
        ("dynamodb:UpdateItem", USAGE_TABLE),
    } <= enforcement.allowed


def test_given_sns_publish_taken_from_the_role_then_no_code_is_texted_and_the_number_stays_unverified(
    account_api: Any, roles: Roles
) -> None:
    register(account_api, "acct_a", phone=PHONE)
    with roles.acting_as(FUNCTION, without={("sns:Publish", "*")}) as enforcement:
        sent = call("POST", f"{PREFERENCES}/phone-code", ADMIN)
    assert enforcement.denied == [("sns:Publish", "*")]
    assert (sent.status, sent.body["code"]) == (503, "unavailable")
    assert texts(account_api) == []
    assert call("GET", PREFERENCES, MEMBER).body["phone_verified"] is False


def test_given_sns_refusing_the_save_s_code_then_the_save_is_200_not_sent_and_a_later_save_texts_it(
    account_api: Any, roles: Roles
) -> None:
    """The preferences are stored before the code is texted: SNS failing (here: the role without sns:Publish, a real
    refusal from moto) is not the save's error (D160). Nothing counts: saving again with SNS back texts the code."""
    register(account_api, "acct_a")
    body = {"email": "ops@a.example", "phone": PHONE}
    with roles.acting_as(FUNCTION, without={("sns:Publish", "*")}) as enforcement:
        saved = call("PUT", PREFERENCES, ADMIN, body)
    assert enforcement.denied == [("sns:Publish", "*")]
    assert (saved.status, saved.body["phone"], saved.body["email"], saved.body["phone_code"]) == (
        200,
        PHONE,
        "ops@a.example",
        {"status": "not_sent", "reason": "the SMS service could not be reached; ask for a new code later"},
    )
    assert texts(account_api) == []
    read = call("GET", PREFERENCES, MEMBER).body
    assert (read["phone"], read["email"], read["phone_verified"]) == (PHONE, "ops@a.example", False)
    with roles.acting_as(FUNCTION) as enforcement:
        again = call("PUT", PREFERENCES, ADMIN, body)  # the code never sent is not "still pending"
    assert enforcement.denied == []
    assert (again.status, again.body["phone_code"]) == (200, {"status": "sent", "reason": None})
    assert [to for to, _ in texts(account_api)] == [PHONE]


def test_given_a_texted_code_when_a_new_one_cannot_be_sent_then_the_texted_one_still_works_and_nothing_counts(
    account_api: Any, roles: Roles
) -> None:
    register(account_api, "acct_a")
    with roles.acting_as(FUNCTION):
        assert call("PUT", PREFERENCES, ADMIN, {"phone": PHONE}).body["phone_code"]["status"] == "sent"
    [(_, text)] = texts(account_api)
    with roles.acting_as(FUNCTION, without={("sns:Publish", "*")}):
        for _ in range(3):  # three failed asks: none of them is one of the 3 codes an hour
            assert call("POST", f"{PREFERENCES}/phone-code", ADMIN).status == 503
    with roles.acting_as(FUNCTION):
        assert call("POST", f"{PREFERENCES}/phone-code", ADMIN).status == 200  # the 2nd code sent this hour
        assert call("POST", f"{PREFERENCES}/phone-code", ADMIN).status == 200  # the 3rd
        assert call("POST", f"{PREFERENCES}/phone-code", ADMIN).status == 409
    assert next(sms for _, sms in texts(account_api)) == text
    assert len(texts(account_api)) == 3


def test_given_a_failed_send_then_the_code_texted_before_it_still_confirms(account_api: Any, roles: Roles) -> None:
    register(account_api, "acct_a")
    with roles.acting_as(FUNCTION):
        call("PUT", PREFERENCES, ADMIN, {"phone": PHONE})
    [(_, text)] = texts(account_api)
    code = re.search(r"your code is (\d{6})", text)
    assert code is not None
    with roles.acting_as(FUNCTION, without={("sns:Publish", "*")}):
        assert call("POST", f"{PREFERENCES}/phone-code", ADMIN).status == 503
    with roles.acting_as(FUNCTION):
        confirmed = call("POST", f"{PREFERENCES}/phone-code/confirm", ADMIN, {"code": code.group(1)})
    assert (confirmed.status, confirmed.body["phone_verified"]) == (200, True)


def test_given_the_generated_role_then_it_cannot_publish_to_a_topic(account_api: Any, roles: Roles) -> None:
    """sns:Publish is allowed on "*" for SMS only: a Deny on topic ARNs beside it (D160)."""
    import boto3  # noqa: PLC0415

    topic = account_api.clients["sns"].create_topic(Name="someone-elses-topic")["TopicArn"]
    with roles.acting_as(FUNCTION) as enforcement:
        sns = boto3.client("sns", region_name="us-east-1")
        with pytest.raises(sns.exceptions.ClientError) as refused:
            sns.publish(TopicArn=topic, Message="not for the account API")
        assert sns.check_if_phone_number_is_opted_out(phoneNumber=PHONE)["isOptedOut"] is False
    assert refused.value.response["Error"]["Code"] in {"AuthorizationError", "AccessDenied", "AccessDeniedException"}
    assert enforcement.denied == [("sns:Publish", topic)]


def test_given_the_phone_code_key_taken_from_the_role_then_no_code_is_made_or_checked_and_no_try_is_spent(
    account_api: Any, roles: Roles
) -> None:
    register(account_api, "acct_a")
    with roles.acting_as(FUNCTION):
        call("PUT", PREFERENCES, ADMIN, {"phone": PHONE})
    [(_, text)] = texts(account_api)
    code = re.search(r"your code is (\d{6})", text)
    assert code is not None
    without = {("secretsmanager:GetSecretValue", PHONE_CODE_KEY)}
    with roles.acting_as(FUNCTION, without=without) as enforcement:
        asked = call("POST", f"{PREFERENCES}/phone-code", ADMIN)
        guessed = call("POST", f"{PREFERENCES}/phone-code/confirm", ADMIN, {"code": code.group(1)})
    assert enforcement.denied == [("secretsmanager:GetSecretValue", phone_code_key_arn(account_api))] * 2
    assert (asked.status, guessed.status) == (503, 503)
    assert len(texts(account_api)) == 1
    with roles.acting_as(FUNCTION):  # the key back: the texted code still has its 5 tries, and confirms
        confirmed = call("POST", f"{PREFERENCES}/phone-code/confirm", ADMIN, {"code": code.group(1)})
    assert (confirmed.status, confirmed.body["phone_verified"]) == (200, True)


def test_given_the_generated_role_then_a_tier_change_with_an_idempotency_key_is_saved_and_replayed(
    account_api: Any, roles: Roles
) -> None:
    """D377: the answer's item and the profile are one ``TransactWriteItems`` in the usage table - authorized as a
    ``PutItem`` per item - and the replay reads the answer (``GetItem``): the role's usage-table statement covers
    both, nothing added."""
    register(account_api, "acct_a")  # team
    key = {"idempotency-key": "0b7e2a4c-click-1"}
    with roles.acting_as(FUNCTION) as enforcement:
        first = call("POST", "/v1/accounts/acct_a/subscription", ADMIN, {"tier": "enterprise"}, headers=key)
        again = call("POST", "/v1/accounts/acct_a/subscription", ADMIN, {"tier": "enterprise"}, headers=key)
    assert enforcement.denied == []
    assert (first.status, again.status, again.body) == (200, 200, first.body)
    assert {("dynamodb:GetItem", USAGE_TABLE), ("dynamodb:PutItem", USAGE_TABLE)} <= enforcement.allowed
