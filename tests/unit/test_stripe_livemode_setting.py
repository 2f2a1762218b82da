"""STRIPE_LIVEMODE: the stage's Stripe mode, one value for the two functions that read it (ingest refuses the other
mode's events, the payment-status handler applies none of them: D349) - test mode unless set; a value that is
neither true nor false stops the Stripe webhook rather than guessing a mode."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from kilo_invoice.settings import InvoiceSettings
from kilo_webhook_ingest.settings import IngestSettings, SettingsError


def _both(value: str | None, monkeypatch: pytest.MonkeyPatch) -> tuple[bool, bool]:
    env = {"EVENTS_TABLE_NAME": "events"} | ({} if value is None else {"STRIPE_LIVEMODE": value})
    if value is None:
        monkeypatch.delenv("STRIPE_LIVEMODE", raising=False)
    else:
        monkeypatch.setenv("STRIPE_LIVEMODE", value)
    return IngestSettings.from_env(env).stripe_livemode, InvoiceSettings(usage_table_name="usage").stripe_livemode


@pytest.mark.parametrize(("value", "expected"), [(None, False), ("false", False), ("true", True)])
def test_given_the_stages_mode_then_ingest_and_payments_read_the_same(
    monkeypatch: pytest.MonkeyPatch, value: str | None, expected: bool
) -> None:
    assert _both(value, monkeypatch) == (expected, expected)


@pytest.mark.parametrize("value", ["live", "yes-please", "2"])
def test_given_neither_true_nor_false_then_both_refuse_to_start(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    with pytest.raises(SettingsError, match="STRIPE_LIVEMODE must be true or false"):
        IngestSettings.from_env({"EVENTS_TABLE_NAME": "events", "STRIPE_LIVEMODE": value})
    monkeypatch.setenv("STRIPE_LIVEMODE", value)
    with pytest.raises(ValidationError):
        InvoiceSettings(usage_table_name="usage")
