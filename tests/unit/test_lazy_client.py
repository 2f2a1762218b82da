"""``kilo_billing.aws.client(..., lazy=True)``: a client made on its first use, with the same budget, then reused."""

from __future__ import annotations

import pytest

from kilo_billing.aws import CallBudget, LazyClient, client


@pytest.fixture(autouse=True)
def _region(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-west-1")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")


def test_given_a_lazy_client_then_nothing_is_made_until_its_first_use_and_then_once() -> None:
    made: list[str] = []

    class Made:
        region = "here"

    def make() -> Made:
        made.append("made")
        return Made()

    lazy = LazyClient(make)
    assert made == []
    assert not lazy.made
    assert lazy.region == "here"
    assert lazy.region == "here"
    assert made == ["made"]
    assert lazy.made


def test_given_a_lazy_boto3_client_then_it_is_the_service_with_the_budget() -> None:
    budget = CallBudget(connect_timeout=0.25, read_timeout=0.75, max_attempts=2)
    lazy = client("sqs", budget, lazy=True)
    assert isinstance(lazy, LazyClient)
    assert not lazy.made
    assert lazy.meta.service_model.service_name == "sqs"
    assert lazy.meta.region_name == "eu-west-1"
    config = lazy.meta.config
    assert (config.connect_timeout, config.read_timeout) == (0.25, 0.75)
    assert config.retries == {"mode": "standard", "total_max_attempts": 2}
    assert callable(lazy.send_message)
    assert lazy.made
