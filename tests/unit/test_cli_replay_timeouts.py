"""`rating replay`'s AWS calls take their read timeout from the environment, as the functions' do (D413): on the
local stack a stream read of 1,000 records takes moto ~2.2 s, and the CLI read with the layer's 2 s default - the
stack's ``AWS_READ_TIMEOUT_SECONDS`` (``kilo_dev.localstack.MOTO_CALL_BUDGET``) never reached it. Through ``main``
with the replay itself recorded (no AWS call is made)."""

from __future__ import annotations

from typing import Any

import pytest

from kilo_billing_cli.main import main
from kilo_dev.localstack import MOTO_CALL_BUDGET

ARGS = ["rating", "replay", "--queue-url", "https://sqs.local/q", "--usage-table", "u", "--events-table", "e"]


def _clients_replayed_with(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """Run the dry run, the replay recorded: the botocore config of each client it was given."""
    import kilo_rate_usage.replay  # noqa: PLC0415

    given: dict[str, Any] = {}

    def recorded(**kwargs: Any) -> list[Any]:
        given.update(kwargs)
        return []

    monkeypatch.setattr(kilo_rate_usage.replay, "replay", recorded)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    assert main(ARGS) == 0
    return {
        "streams": given["streams"]._client.meta.config,
        "events": given["events"]._client.meta.config,
        "queue": given["queue"]._client.meta.config,
    }


def test_given_the_local_stack_s_read_timeout_in_the_environment_then_every_replay_call_reads_with_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name, value in MOTO_CALL_BUDGET.items():  # what the local stack sets (60 s)
        monkeypatch.setenv(name, value)
    configs = _clients_replayed_with(monkeypatch)
    assert {name: config.read_timeout for name, config in configs.items()} == dict.fromkeys(configs, 60.0)


def test_given_no_setting_then_the_replay_reads_with_10_seconds_and_the_other_variables_apply_too(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in ("AWS_READ_TIMEOUT_SECONDS", "AWS_CONNECT_TIMEOUT_SECONDS", "AWS_MAX_ATTEMPTS"):
        monkeypatch.delenv(name, raising=False)
    streams = _clients_replayed_with(monkeypatch)["streams"]
    # 10 s: a GetRecords page (up to 1,000 records, 1 MB) with room to spare; the layer's 1 s connect, 3 attempts
    assert (streams.read_timeout, streams.connect_timeout, streams.retries["total_max_attempts"]) == (10.0, 1.0, 3)
    monkeypatch.setenv("AWS_CONNECT_TIMEOUT_SECONDS", "4")
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "2")
    streams = _clients_replayed_with(monkeypatch)["streams"]
    assert (streams.read_timeout, streams.connect_timeout, streams.retries["total_max_attempts"]) == (10.0, 4.0, 2)


def test_given_a_read_timeout_that_is_not_a_positive_number_then_the_replay_is_refused_before_any_call(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("AWS_READ_TIMEOUT_SECONDS", "0")
    with pytest.raises(SystemExit) as exited:
        _clients_replayed_with(monkeypatch)
    assert exited.value.code == 2
    assert "AWS_READ_TIMEOUT_SECONDS" in capsys.readouterr().err


def test_given_the_exports_keep_running_prints_for_another_shell_then_the_replay_reads_with_the_stack_s_timeout(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`./dev demo --keep-running` prints the line an operator's shell exports to run the CLI against the stack (the
    README's runbooks): it carries the stack's read timeout, which the replay then reads with (before: the CLI got
    the endpoint and credentials alone - the printout named no environment - and read with 2 s)."""
    from kilo_dev.demo import operator_exports  # noqa: PLC0415

    line = operator_exports("http://127.0.0.1:5123")
    assert line.startswith("export ")
    exported = dict(pair.split("=", 1) for pair in line.removeprefix("export ").split())
    assert exported["AWS_ENDPOINT_URL"] == "http://127.0.0.1:5123"
    monkeypatch.delenv("AWS_READ_TIMEOUT_SECONDS", raising=False)
    for name, value in exported.items():
        monkeypatch.setenv(name, value)
    assert _clients_replayed_with(monkeypatch)["streams"].read_timeout == 60.0


def test_the_apply_visibility_outlasts_25_calls_at_the_replay_s_worst_case_and_no_more(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """D413, amended (sw2): the written limit's figures. One call at its worst, the budget's variables unset: 3 attempts
    x (1 s connect + 10 s read) + backoff 1 s + 2 s = 36 s; 900 s of visibility / 36 s = 25 calls - a replay making
    more such slow calls sees the messages it has not reached visible again (README, the replay runbook)."""
    from kilo_billing_cli import clients, replay  # noqa: PLC0415

    for name in ("AWS_READ_TIMEOUT_SECONDS", "AWS_CONNECT_TIMEOUT_SECONDS", "AWS_MAX_ATTEMPTS", "MOTO_CALL_BUDGET"):
        monkeypatch.delenv(name, raising=False)
    worst = clients.call_budget().worst_case_seconds
    assert (worst, replay.APPLY_VISIBILITY_SECONDS // worst) == (36, 25)
