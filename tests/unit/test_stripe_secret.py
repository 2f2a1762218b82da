"""The Stripe API key's secret, read the same way by invoicing's gateway and the account API's hosted pages
(``kilo_billing.stripe_key.stripe_secret``): ``{"api_key": "sk_...", "api_base": optional}``."""

from __future__ import annotations

import pytest

from kilo_billing.stripe_key import StripeSecret, stripe_secret


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ({"api_key": "sk_test_1"}, StripeSecret("sk_test_1", None)),
        (
            {"api_key": "rk_live_2", "api_base": "http://127.0.0.1:4242"},
            StripeSecret("rk_live_2", "http://127.0.0.1:4242"),
        ),
        ({"api_key": "sk_test_3", "api_base": ""}, StripeSecret("sk_test_3", None)),  # empty: Stripe's own address
        ({"api_key": "sk_test_4", "api_base": 4242}, StripeSecret("sk_test_4", None)),  # not a string: ignored
    ],
)
def test_given_a_stripe_secret_then_its_key_and_api_base_are_read(value: object, expected: StripeSecret) -> None:
    assert stripe_secret(value) == expected


@pytest.mark.parametrize("value", [["sk_test_1"], {"key": "sk_test_1"}, {"api_key": ""}, {"api_key": 1}, "sk_test_1"])
def test_given_a_malformed_stripe_secret_then_none_for_the_caller_to_refuse(value: object) -> None:
    assert stripe_secret(value) is None
