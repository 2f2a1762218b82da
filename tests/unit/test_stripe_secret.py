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


@pytest.mark.parametrize(
    "key",
    [
        "sk_live_abc def",
        "sk_live_abc\ndef",
        "Bearer sk_live_abc",
        "pk_live_abc",  # the publishable key
        "whsec_abc",  # the webhook's signing secret
        "sk_prod_abc",
        "sk_live_",
        "sk_live_ab\u00e9",
    ],
)
def test_given_a_key_not_of_stripes_shape_then_the_secret_is_malformed(key: str) -> None:
    """Stripe's secret and restricted keys: ``sk_`` or ``rk_``, ``test`` or ``live``, ``_``, letters and digits
    (D328). Before: any non-empty string was a key."""
    assert stripe_secret({"api_key": key}) is None


@pytest.mark.parametrize("key", ["sk_test_unit", "rk_live_51Hx0ZkAbC9", "sk_test_localStandin", "sk_test_emulated"])
def test_given_keys_of_stripes_shape_then_read(key: str) -> None:
    assert stripe_secret({"api_key": key}) == StripeSecret(key, None)


@pytest.mark.parametrize(
    "pasted", ["sk_live_abc\n", "sk_live_abc\r\n", "sk_live_abc ", "sk_live_abc\t", " sk_live_abc"]
)
def test_given_a_key_pasted_with_whitespace_around_it_then_the_key_without_it_is_read(pasted: str) -> None:
    """A key that worked (the SDK sent a trailing space or tab, HTTP drops it) keeps working, and one pasted with its
    line end (the SDK's transport refused the header) now works: the whitespace around a key is no part of it. Before
    (D328 as first written): malformed - every card close and refund stopped at deploy."""
    assert stripe_secret({"api_key": pasted}) == StripeSecret("sk_live_abc", None)
