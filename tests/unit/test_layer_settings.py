"""The layer's settings base (kilo_billing.settings): the environment only, the call budget, the weekday weights."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest
from pydantic import ValidationError

from kilo_billing.aws import CallBudget
from kilo_billing.budgets import DEFAULT_WEEKDAY_WEIGHTS
from kilo_billing.settings import DashboardSettings, ForecastSettings, FunctionSettings


class ProbeSettings(FunctionSettings):
    probe_table_name: str


def test_given_the_environment_when_settings_are_read_then_fields_come_from_it_by_name(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("PROBE_TABLE_NAME", "probe-table")
    monkeypatch.setenv("AWS_READ_TIMEOUT_SECONDS", "2.5")
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "4")
    config = ProbeSettings()
    assert config.probe_table_name == "probe-table"
    assert config.call_budget == CallBudget(connect_timeout=1.0, read_timeout=2.5, max_attempts=4)
    assert config.secret_max_age_seconds == 300


def test_given_a_dotenv_file_and_a_secrets_directory_then_neither_is_read(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Lambda has neither; only the environment (and values passed in) count."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("PROBE_TABLE_NAME", raising=False)
    (tmp_path / ".env").write_text("PROBE_TABLE_NAME=from-dotenv\n")
    (tmp_path / "secrets").mkdir()
    (tmp_path / "secrets" / "probe_table_name").write_text("from-secrets-dir")

    class DotenvProbe(ProbeSettings, env_file=".env", secrets_dir="secrets"):  # type: ignore[call-arg]
        pass

    with pytest.raises(ValidationError, match="probe_table_name"):
        DotenvProbe()
    assert DotenvProbe(probe_table_name="given").probe_table_name == "given"  # values passed in still count


def test_given_settings_then_they_are_frozen(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PROBE_TABLE_NAME", "probe-table")
    config = ProbeSettings()
    with pytest.raises(ValidationError):
        config.probe_table_name = "other"  # type: ignore[misc]


@pytest.mark.parametrize(
    ("variable", "value"),
    [("AWS_MAX_ATTEMPTS", "0"), ("AWS_MAX_ATTEMPTS", "6"), ("AWS_CONNECT_TIMEOUT_SECONDS", "0"),
     ("SECRET_MAX_AGE_SECONDS", "-1")],
)  # fmt: skip
def test_given_an_out_of_range_budget_then_reading_the_settings_names_the_variable(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str
) -> None:
    monkeypatch.setenv("PROBE_TABLE_NAME", "probe-table")
    monkeypatch.setenv(variable, value)
    with pytest.raises(ValidationError, match=variable.lower()):
        ProbeSettings()


def test_given_no_weights_configured_then_the_default_is_the_budgets_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FORECAST_WEEKDAY_WEIGHTS", raising=False)
    assert ForecastSettings().weekday_weights == DEFAULT_WEEKDAY_WEIGHTS
    # hand-written: five weekdays at 1, the weekend at 0.4
    assert (Decimal(1),) * 5 + (Decimal("0.4"),) * 2 == DEFAULT_WEEKDAY_WEIGHTS


def test_given_configured_weights_then_they_are_read_monday_first(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FORECAST_WEEKDAY_WEIGHTS", "2, 1,1,1,1,0,0.5")
    assert ForecastSettings().weekday_weights == (
        Decimal(2),
        Decimal(1),
        Decimal(1),
        Decimal(1),
        Decimal(1),
        Decimal(0),
        Decimal("0.5"),
    )


@pytest.mark.parametrize(
    "weights", ["1,1,1,1,1,1", "1,1,1,1,1,1,1,1", "1,1,1,1,1,x,1", "1,1,1,1,1,-1,1", "0,0,0,0,0,0,0"]
)
def test_given_malformed_weights_then_reading_the_settings_refuses_them(
    monkeypatch: pytest.MonkeyPatch, weights: str
) -> None:
    monkeypatch.setenv("FORECAST_WEEKDAY_WEIGHTS", weights)
    with pytest.raises(ValidationError, match="weekday weights"):
        ForecastSettings()


def test_given_both_functions_that_link_the_dashboard_then_each_reads_dashboard_url_through_the_one_setting(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The account API (Stripe's return pages) and the alerts (an email's page links) read ``DASHBOARD_URL`` through
    ``DashboardSettings``: the same default, the same check. An empty address is refused by both (the account API
    took it before, and sent Stripe an empty return URL)."""
    from kilo_account_api.settings import AccountApiSettings  # noqa: PLC0415
    from kilo_alerts.settings import AlertSettings  # noqa: PLC0415

    for name, value in {
        "USAGE_TABLE_NAME": "usage", "MEMBERS_TABLE_NAME": "members", "ALERTS_TABLE_NAME": "alerts",
        "ALERT_SENDER_EMAIL": "alerts@kilo.example", "ALERT_PREFERENCES_URL": "https://kilo.example/prefs",
    }.items():  # fmt: skip
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("DASHBOARD_URL", raising=False)
    for read in (AccountApiSettings, AlertSettings):
        assert issubclass(read, DashboardSettings)
        assert read().dashboard_url == "http://127.0.0.1:8000/"  # the local stack's, the template's default
    monkeypatch.setenv("DASHBOARD_URL", "https://dash.kilo.example/app/")
    assert (AccountApiSettings().dashboard_url, AlertSettings().dashboard_url) == (
        "https://dash.kilo.example/app/",
    ) * 2
    monkeypatch.setenv("DASHBOARD_URL", "")
    for read in (AccountApiSettings, AlertSettings):
        with pytest.raises(ValidationError, match="dashboard_url"):
            read()
