"""``kilo_billing.aws.livekit_credentials``: the LiveKit key reader the alerts and rating functions share, on moto's
Secrets Manager."""

from __future__ import annotations

import json

import boto3
import pytest

from kilo_billing.aws import livekit_credentials


def test_reads_every_key_sorted_and_none_without_a_secret(aws: None) -> None:
    boto3.client("secretsmanager").create_secret(
        Name="livekit-keys", SecretString=json.dumps({"key-b": "secret-b", "key-a": "secret-a"})
    )

    assert livekit_credentials("livekit-keys", 300)() == [("key-a", "secret-a"), ("key-b", "secret-b")]
    assert livekit_credentials("", 300)() == []


def test_a_secret_that_is_not_an_object_is_refused_by_name(aws: None) -> None:
    boto3.client("secretsmanager").create_secret(Name="bad-keys", SecretString=json.dumps(["key", "secret"]))

    with pytest.raises(ValueError, match="secret bad-keys must be a JSON object"):
        livekit_credentials("bad-keys", 300)()
