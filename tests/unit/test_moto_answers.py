"""The local moto server's fast answers (D443): written straight from botocore's shape, they must say what moto's own
serializer says. Expected values are worked by hand from the AWS shapes, never by moto."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import botocore.session
import pytest

from kilo_dev.moto_server import NotPlainError, checked, fast_answer, shaped

_MODELS = botocore.session.get_session()


def operation(service: str, name: str) -> Any:
    return _MODELS.get_service_model(service).operation_model(name)


def test_given_a_delete_items_result_then_keys_outside_its_shape_and_none_are_left_out() -> None:
    # moto's DeleteItem result carries a "ConsumedCapacityUnits" the DeleteItemOutput shape does not have
    result = {"ConsumedCapacityUnits": 0.5, "Attributes": {"pk": {"S": "a"}}, "ItemCollectionMetrics": None}
    assert shaped(result, operation("dynamodb", "DeleteItem").output_shape) == {"Attributes": {"pk": {"S": "a"}}}


def test_given_binary_attributes_then_they_are_base64_as_on_the_wire() -> None:
    result = {
        "Item": {"b": {"B": b"\x00\xffkilo"}, "bs": {"BS": [b"a", b"bc"]}, "m": {"M": {"l": {"L": [{"B": b"z"}]}}}}
    }
    assert shaped(result, operation("dynamodb", "GetItem").output_shape) == {
        "Item": {"b": {"B": "AP9raWxv"}, "bs": {"BS": ["YQ==", "YmM="]}, "m": {"M": {"l": {"L": [{"B": "eg=="}]}}}}
    }


def test_given_a_stream_records_creation_time_then_it_is_epoch_seconds_with_the_milliseconds_kept() -> None:
    created = datetime(2026, 11, 30, 12, 0, 1, 234_567, tzinfo=UTC)  # 1,796,040,001.234 s since 1970
    result = {"Records": [{"eventID": "1", "dynamodb": {"ApproximateCreationDateTime": created}}]}
    whole = {"Records": [{"eventID": "2", "dynamodb": {"ApproximateCreationDateTime": created.replace(microsecond=0)}}]}
    shape = operation("dynamodbstreams", "GetRecords").output_shape
    assert shaped(result, shape)["Records"][0]["dynamodb"]["ApproximateCreationDateTime"] == 1_796_040_001.234
    assert shaped(whole, shape)["Records"][0]["dynamodb"]["ApproximateCreationDateTime"] == 1_796_040_001


@pytest.mark.parametrize("result", [{"item": {}}, {"consumed_capacity": {}}, {"Item": {"pk": "an object, not a map"}}])
def test_given_a_result_moto_would_read_by_another_spelling_or_an_object_then_moto_answers(result: Any) -> None:
    with pytest.raises(NotPlainError):
        shaped(result, operation("dynamodb", "GetItem").output_shape)


def test_given_an_error_or_an_operation_not_listed_then_there_is_no_fast_answer() -> None:
    assert fast_answer(ValueError("x"), "dynamodb", operation("dynamodb", "GetItem")) is None
    assert fast_answer({"TableNames": []}, "dynamodb", operation("dynamodb", "ListTables")) is None
    assert fast_answer({}, "sqs", operation("sqs", "ReceiveMessage")) is None


def test_given_a_listed_operation_then_the_answer_is_its_json_with_the_services_content_type() -> None:
    status, headers, body = fast_answer({"Count": 0, "Items": [], "ScannedCount": 0}, "dynamodb",
                                        operation("dynamodb", "Query"))  # fmt: skip
    assert (status, headers) == (200, {"Content-Type": "application/x-amz-json-1.0"})
    assert json.loads(body) == {"Count": 0, "Items": [], "ScannedCount": 0}


def test_given_the_verify_mode_then_a_difference_is_a_500_naming_both_answers() -> None:
    slow = (200, {"Content-Type": "application/x-amz-json-1.0"}, '{"Item": {"b": {"B": "YQ=="}}}')
    same = (200, {"Content-Type": "application/x-amz-json-1.0"}, '{"Item":{"b":{"B":"YQ=="}}}')
    other = (200, {"Content-Type": "application/x-amz-json-1.0"}, '{"Item": {"b": {"B": "a"}}}')
    assert checked(slow, same) is slow
    status, _, body = checked(slow, other)
    assert status == 500
    assert json.loads(body)["__type"] == "SerializerMismatch"
    assert '"B": "a"' in json.loads(body)["message"]
