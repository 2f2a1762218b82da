"""DynamoDB item mapping shared by every adapter: plain Python values <-> attribute values, through boto3's own
``TypeSerializer``/``TypeDeserializer`` (no hand-written codecs). Numbers come back as ``Decimal``; floats are refused
(money and quantities are Decimal or int)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

Item = dict[str, dict[str, Any]]


def to_item(values: Mapping[str, Any]) -> Item:
    """Serialize a mapping of Python values; ``None`` values and empty strings are left out (absent = default)."""
    from boto3.dynamodb.types import TypeSerializer  # noqa: PLC0415

    serializer = TypeSerializer()
    present = {name: value for name, value in values.items() if value is not None and value != ""}
    return {name: dict(serializer.serialize(value)) for name, value in present.items()}


def from_item(item: Mapping[str, Any]) -> dict[str, Any]:
    """Deserialize an item (from boto3, or a stream image whose binary values are base64 text)."""
    import base64  # noqa: PLC0415

    from boto3.dynamodb.types import TypeDeserializer  # noqa: PLC0415

    deserializer = TypeDeserializer()
    result: dict[str, Any] = {}
    for name, value in item.items():
        if "B" in value and isinstance(value["B"], str):  # a Lambda stream event carries binary base64-encoded
            result[name] = base64.b64decode(value["B"])
            continue
        decoded = deserializer.deserialize(value)
        result[name] = bytes(decoded) if type(decoded).__name__ == "Binary" else decoded
    return result


def lambda_shape(value: Any) -> Any:
    """A DynamoDB stream record (from GetRecords) as Lambda's JSON event carries it: binary values base64 text,
    timestamps epoch seconds, sets as sorted lists."""
    import base64  # noqa: PLC0415
    from datetime import datetime  # noqa: PLC0415

    if isinstance(value, bytes | bytearray):
        return base64.b64encode(bytes(value)).decode("ascii")
    if isinstance(value, datetime):
        return int(value.timestamp())
    if isinstance(value, dict):
        return {key: lambda_shape(item) for key, item in value.items()}
    if isinstance(value, list):
        return [lambda_shape(item) for item in value]
    if isinstance(value, set):
        return [lambda_shape(item) for item in sorted(value)]
    return value
