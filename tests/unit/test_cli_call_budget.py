"""Every CLI command's AWS clients read with one budget from the environment (D413 amended (ops3)): before, only
`rating replay` read ``AWS_READ_TIMEOUT_SECONDS`` (10 s unless set); every other command read with the layer's 2 s
default (``CallBudget``), the invoice commands closing through the invoice function's settings with its 3 s - so on
the local stack (``AWS_READ_TIMEOUT_SECONDS`` 60, moto ~2.2 s a page) an `account show` or a `report revenue` of a
busy account timed out where the replay did not. Through ``main``: ``boto3.client`` recorded, the command stopped at
its first client (no AWS call is made)."""

from __future__ import annotations

from typing import Any

import pytest

from kilo_billing_cli.main import main

BUDGET_VARIABLES = ("AWS_READ_TIMEOUT_SECONDS", "AWS_CONNECT_TIMEOUT_SECONDS", "AWS_MAX_ATTEMPTS", "MOTO_CALL_BUDGET")
TABLES = ["--usage-table", "u"]

# one command per place in the CLI that makes a client (accounts, alerts, crypto, invoices, reports, replay)
COMMANDS = {
    "account show": ["account", "show", "--account", "acct-1", *TABLES],
    "alerts clear-mark": ["alerts", "clear-mark", "acct-1", "a@example.com", "--alerts-table", "a"],
    "crypto unattributed": ["crypto", "unattributed", "--crypto-table", "c"],
    "invoice show": ["invoice", "show", "--account", "acct-1", *TABLES],
    "invoice run": ["invoice", "run", "--period", "2026-11", *TABLES, "--event-bus", "b", "--stripe-secret", "s"],
    "invoice void-draft": [
        "invoice",
        "void-draft",
        "acct-1",
        "2026-11",
        "--reason",
        "r",
        "--yes",
        *TABLES,
        "--stripe-secret",
        "s",
    ],
    "invoice refund": [
        "invoice",
        "refund",
        "--account",
        "acct-1",
        "--invoice",
        "KB-1",
        *TABLES,
        "--stripe-secret",
        "s",
    ],
    "invoice crypto-refund-sent": [
        "invoice",
        "crypto-refund-sent",
        "--account",
        "acct-1",
        "--invoice",
        "KB-1",
        "--transaction",
        "0xabc",
        *TABLES,
    ],
    "report revenue": ["report", "revenue", "--period", "2026-11", *TABLES],
    "rating replay": ["rating", "replay", "--queue-url", "https://sqs.local/q", *TABLES, "--events-table", "e"],
    "rating replay --requeue": ["rating", "replay", "--queue-url", "https://sqs.local/q", "--requeue", "12"],
}


class FirstClient(Exception):  # noqa: N818 - a stop, not an error
    def __init__(self, service: str, config: Any) -> None:
        super().__init__(service)
        self.service, self.config = service, config


def _first_client(monkeypatch: pytest.MonkeyPatch, argv: list[str]) -> Any:
    """The botocore config of the first client the command makes."""
    import boto3  # noqa: PLC0415

    def recorded(service: str, config: Any = None, **_: Any) -> Any:
        raise FirstClient(service, config)

    monkeypatch.setattr(boto3, "client", recorded)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    with pytest.raises(FirstClient) as made:
        main(argv)
    return made.value.config


@pytest.mark.parametrize("command", COMMANDS)
def test_given_no_setting_then_every_command_reads_with_10_seconds(
    command: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in BUDGET_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    config = _first_client(monkeypatch, COMMANDS[command])
    # D413's operator budget: 10 s read, the layer's 1 s connect and 3 attempts
    assert (config.read_timeout, config.connect_timeout, config.retries["total_max_attempts"]) == (10.0, 1.0, 3)


@pytest.mark.parametrize("command", COMMANDS)
def test_given_the_budget_in_the_environment_then_every_command_reads_with_it(
    command: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_READ_TIMEOUT_SECONDS", "60")  # the local stack's (kilo_dev.localstack.MOTO_CALL_BUDGET)
    monkeypatch.setenv("AWS_CONNECT_TIMEOUT_SECONDS", "4")
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "2")
    config = _first_client(monkeypatch, COMMANDS[command])
    assert (config.read_timeout, config.connect_timeout, config.retries["total_max_attempts"]) == (60.0, 4.0, 2)


@pytest.mark.parametrize("command", ["account show", "invoice void-draft"])
def test_given_a_read_timeout_that_is_not_a_positive_number_then_the_command_is_refused_before_any_client(
    command: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("AWS_READ_TIMEOUT_SECONDS", "0")
    import boto3  # noqa: PLC0415

    made: list[str] = []
    monkeypatch.setattr(boto3, "client", lambda service, **_: made.append(service))
    with pytest.raises(SystemExit) as exited:
        main(COMMANDS[command])
    assert (exited.value.code, made) == (2, [])
    assert "AWS_READ_TIMEOUT_SECONDS" in capsys.readouterr().err


def test_given_a_bad_secret_max_age_then_a_command_reading_no_secret_still_runs(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """D413 amended (gops): the budget validated every ``FunctionSettings`` variable, so `account show` - no secret
    read - failed on ``SECRET_MAX_AGE_SECONDS``. Only the budget's variables are read for it."""
    for name in BUDGET_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("SECRET_MAX_AGE_SECONDS", "-1")
    config = _first_client(monkeypatch, COMMANDS["account show"])
    assert (config.read_timeout, config.connect_timeout, config.retries["total_max_attempts"]) == (10.0, 1.0, 3)


def test_given_a_bad_stripe_timeout_then_the_invoice_command_exits_2_with_one_line_naming_it(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """D413 amended (gops): a value the invoice settings refuse printed pydantic's raw, multi-line error."""
    monkeypatch.setenv("STRIPE_TIMEOUT_SECONDS", "0")
    import boto3  # noqa: PLC0415

    made: list[str] = []
    monkeypatch.setattr(boto3, "client", lambda service, **_: made.append(service))
    with pytest.raises(SystemExit) as exited:
        main(COMMANDS["invoice void-draft"])
    assert (exited.value.code, made) == (2, [])
    [said] = [line for line in capsys.readouterr().err.splitlines() if "error:" in line]
    assert "STRIPE_TIMEOUT_SECONDS: Input should be greater than 0" in said
    assert "validation error" not in said
