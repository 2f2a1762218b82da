"""STRIPE_LIVEMODE: the stage's Stripe mode, one value for the two functions that read it (ingest refuses the other
mode's events, the payment-status handler applies none of them: D349), read by one parser
(``kilo_billing.events.stage_livemode``) - test mode unless set; a value that is neither true nor false (the
template's AllowedValues) stops both functions rather than guessing a mode."""

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


@pytest.mark.parametrize(("value", "expected"), [(None, False), ("", False), ("false", False), ("true", True)])
def test_given_the_stages_mode_then_ingest_and_payments_read_the_same(
    monkeypatch: pytest.MonkeyPatch, value: str | None, expected: bool
) -> None:
    assert _both(value, monkeypatch) == (expected, expected)


# exactly the template's AllowedValues ("true", "false"): before, the invoice settings read pydantic's bool (1/0,
# yes/no, on/off, any case) where ingest refused all of them but the case - the two functions of one stage could
# start in different modes, or one of them not at all
@pytest.mark.parametrize("value", ["live", "2", "1", "0", "yes", "no", "on", "off", "True", "FALSE", " true"])
def test_given_anything_but_true_or_false_then_both_refuse_to_start(
    monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    with pytest.raises(SettingsError, match="STRIPE_LIVEMODE must be true or false"):
        IngestSettings.from_env({"EVENTS_TABLE_NAME": "events", "STRIPE_LIVEMODE": value})
    monkeypatch.setenv("STRIPE_LIVEMODE", value)
    with pytest.raises(ValidationError, match="STRIPE_LIVEMODE must be true or false"):
        InvoiceSettings(usage_table_name="usage")
