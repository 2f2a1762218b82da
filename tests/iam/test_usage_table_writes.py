"""The usage-table writes of invoicing, payments and rating narrowed to their partitions and attributes (D429),
under the generated roles with the tier's condition keys (D405): each role's own request - made by its adapter - is
allowed, and a request its old unconditioned grant allowed is refused: an `account_id` given to an invoice or a
profile (the `accounts` index's key, which the monthly close, the early checks and the revenue report scan), a
profile replaced, an invoice replaced or deleted by rating, a write outside the role's partitions. Each refusal fails
on the old template (`DID NOT RAISE ClientError`). That every request the code makes stays allowed is shown by the
roles' flows (test_invoicing_roles.py, test_payment_status_role.py, test_rating_role.py, test_sweeper_role.py).
The sweeper's room listings, swept-room marks, dropped states and thresholds likewise (D429 amended by fiam)."""

from __future__ import annotations

from typing import Any

import boto3
import botocore.exceptions
import pytest

from kilo_billing.periods_store import DynamoLedgerStore
from kilo_invoice.adapters import DynamoRunMarkers
from kilo_rate_usage import items
from kilo_rate_usage.adapters import DynamoUsageRepository
from kilo_rate_usage.model import RoomListing, SweptRoom
from tests.conftest import Stack
from tests.iam.conftest import Roles
from tests.infra.test_generated_iam import USAGE_TABLE

USAGE = "kilo-billing-usage-test"
EVENTS = "kilo-billing-events-test"


def _s(value: str) -> dict[str, str]:
    return {"S": value}


def _key(pk: str, sk: str) -> dict[str, Any]:
    return {"pk": _s(pk), "sk": _s(sk)}


# an `account_id` given to an account's invoice: the invoice would be listed by the `accounts` index
INDEXED_INVOICE: dict[str, Any] = {
    "Key": _key("ACCOUNT#acct_1", "INVOICE#2026-11"),
    "UpdateExpression": "SET account_id = :a",
    "ExpressionAttributeValues": {":a": _s("acct_1")},
}
# a profile replaced: its plan, email and status gone or rewritten
PROFILE_PUT: dict[str, Any] = {
    "Item": {
        **_key("ACCOUNT#acct_1", "PROFILE"),
        "account_id": _s("acct_1"),
        "tier": _s("enterprise"),
        "email": _s("mallory@example.com"),
    }
}
# an invoice-shaped item written into a room's partition
ROOM_PUT: dict[str, Any] = {"Item": {**_key("ROOM#RM_x", "STATE"), "status": _s("paid"), "total": _s("0.00")}}


def _refused(call: Any, **request: Any) -> str:
    with pytest.raises(botocore.exceptions.ClientError) as refused:
        call(TableName=USAGE, **request)
    return str(refused.value.response["Error"]["Code"])


@pytest.mark.parametrize("function", ["InvoiceCloseFunction", "PaymentStatusFunction", "InvoiceCryptoSettledFunction"])
def test_given_a_ledger_role_then_it_writes_the_ledger_s_items_only(stack: Stack, roles: Roles, function: str) -> None:
    with roles.acting_as(function) as enforcement:
        dynamodb = boto3.client("dynamodb")
        DynamoLedgerStore(dynamodb, USAGE).save_billing("acct_1", customer_id="cus_1", card_on_file=True)
        refusals = [
            _refused(dynamodb.update_item, **INDEXED_INVOICE),
            _refused(dynamodb.put_item, **PROFILE_PUT),
            _refused(dynamodb.put_item, **ROOM_PUT),
        ]
    assert refusals == ["AccessDeniedException"] * 3
    assert enforcement.denied == [
        ("dynamodb:UpdateItem", USAGE_TABLE),
        ("dynamodb:PutItem", USAGE_TABLE),
        ("dynamodb:PutItem", USAGE_TABLE),
    ]
    assert ("dynamodb:UpdateItem", USAGE_TABLE) in enforcement.allowed  # the BILLING item's update


def test_given_the_invoice_start_role_then_it_puts_only_its_run_marker(stack: Stack, roles: Roles) -> None:
    with roles.acting_as("InvoiceStartFunction") as enforcement:
        dynamodb = boto3.client("dynamodb")
        DynamoRunMarkers(dynamodb, USAGE).mark_fanned_out("2026-11", 3, 1_796_000_000_000)
        invoice = {"Item": {**_key("ACCOUNT#acct_1", "INVOICE#2026-11"), "status": _s("void")}}
        refusals = [_refused(dynamodb.put_item, **invoice), _refused(dynamodb.put_item, **PROFILE_PUT)]
    assert refusals == ["AccessDeniedException"] * 2
    assert enforcement.denied == [("dynamodb:PutItem", USAGE_TABLE)] * 2
    assert ("dynamodb:PutItem", USAGE_TABLE) in enforcement.allowed  # the marker


def test_given_the_rating_role_then_it_writes_rooms_aggregates_and_marks_but_no_invoice_nor_profile(
    stack: Stack, roles: Roles
) -> None:
    """Rating's own writes in an account's partition are the aggregate's counters (`c#...`, an invoiced period's
    `late#...`) and thresholds: allowed; a profile's `account_id` or status, an invoice replaced or deleted: refused."""
    with roles.acting_as("RateUsageFunction") as enforcement:
        dynamodb = boto3.client("dynamodb")
        repository = DynamoUsageRepository(dynamodb, USAGE, EVENTS)
        repository.mark_joinless_rooms(["RM_x"], 1_796_000_000_000, 1_796_086_400)
        late = items.aggregate_add(("acct_1", "2026-11"), {(1_793_491_200, "audio"): 60}, True)
        dynamodb.update_item(TableName=USAGE, **late)
        repository.add_thresholds("acct_1", "2026-11", ["budget#50"])
        status = {
            "Key": _key("ACCOUNT#acct_1", "PROFILE"),
            "UpdateExpression": "SET #s = :s",
            "ExpressionAttributeNames": {"#s": "status"},
            "ExpressionAttributeValues": {":s": _s("active")},
        }
        invoice = {"Item": {**_key("ACCOUNT#acct_1", "INVOICE#2026-11"), "total": _s("0.00")}}
        refusals = [
            _refused(dynamodb.update_item, **INDEXED_INVOICE),
            _refused(dynamodb.update_item, **status),
            _refused(dynamodb.put_item, **invoice),
            _refused(dynamodb.delete_item, Key=_key("ACCOUNT#acct_1", "INVOICE#2026-11")),
        ]
    assert refusals == ["AccessDeniedException"] * 4
    assert enforcement.denied == [
        ("dynamodb:UpdateItem", USAGE_TABLE),
        ("dynamodb:UpdateItem", USAGE_TABLE),
        ("dynamodb:PutItem", USAGE_TABLE),
        ("dynamodb:DeleteItem", USAGE_TABLE),
    ]
    stored = stack.clients["dynamodb"].get_item(TableName=USAGE, Key=_key("ACCOUNT#acct_1", "PERIOD#2026-11"))["Item"]
    assert (stored["c#1793491200#audio"], stored["late#audio"]) == ({"N": "60"}, {"N": "60"})
    assert stored["thresholds"] == {"SS": ["budget#50"]}


def test_given_the_sweeper_role_then_it_writes_its_listings_marks_and_thresholds_but_no_profile(
    stack: Stack, roles: Roles
) -> None:
    """fiam (D429 amended): the sweeper's room listing, swept-room mark, dropped state and thresholds grants named
    attributes only - a put of `pk, sk, version` (the dropped state's) on a profile replaced it. Its adapter's own
    writes are allowed; each grant's attributes outside its partition refused (each fails on the old template)."""
    with roles.acting_as("SweeperFunction") as enforcement:
        dynamodb = boto3.client("dynamodb")
        repository = DynamoUsageRepository(dynamodb, USAGE, EVENTS)
        repository.record_listings({"RM_x": RoomListing(1_796_000_000_000, frozenset({"PA_x"}))}, 1_796_086_400)
        repository.mark_swept_rooms(["RM_x"], 1_796_000_000_000, 1_796_086_400)
        repository.mark_dropped_room("RM_x", SweptRoom(1_796_000_000_000, 4), 1_796_086_400)
        repository.add_thresholds("acct_1", "2026-11", ["budget#50"])
        profile = _key("ACCOUNT#acct_1", "PROFILE")
        thresholds = {
            "Key": _key("ROOM#RM_x", "STATE"),
            "UpdateExpression": "ADD thresholds :t",
            "ExpressionAttributeValues": {":t": {"SS": ["budget#50"]}},
        }
        refusals = [
            _refused(dynamodb.put_item, Item={**profile, "version": {"N": "1"}}),  # the dropped state's grant
            _refused(dynamodb.put_item, Item={**profile, "answered_at_ms": {"N": "1"}}),  # the listing's
            _refused(dynamodb.put_item, Item={**profile, "closed_at_ms": {"N": "1"}}),  # the swept mark's
            _refused(dynamodb.update_item, **thresholds),  # the thresholds' grant, on a room's state
        ]
    assert refusals == ["AccessDeniedException"] * 4
    assert enforcement.denied == [("dynamodb:PutItem", USAGE_TABLE)] * 3 + [("dynamodb:UpdateItem", USAGE_TABLE)]
    table = stack.clients["dynamodb"]
    stored = [table.get_item(TableName=USAGE, Key=key).get("Item", {}) for key in (
        _key("ROOM#RM_x", "LISTED"), _key("SWEPT_ROOMS", "ROOM#RM_x"), _key("ACCOUNT#acct_1", "PERIOD#2026-11")
    )]  # fmt: skip
    assert [
        item.get(name) for item, name in zip(stored, ("participants", "dropped_version", "thresholds"), strict=True)
    ] == [
        {"SS": ["PA_x"]},
        {"N": "4"},
        {"SS": ["budget#50"]},
    ]


def test_given_the_account_api_role_then_it_writes_its_account_s_items_numbers_codes_and_rooms_only(
    stack: Stack, roles: Roles
) -> None:
    """giam (D429 amended): the account API's usage-table PutItem/UpdateItem had no condition. Its adapters' own
    writes - a profile saved (`save`), the pending phone code put, tried and forgotten, a number's codes of a day
    counted and given back, the BILLING item's details digest (`save_billing`) - are allowed; a put into a room's
    partition, a room's state given `status`, an invoice given `account_id` and a swept-room mark refused (each
    fails on the old template)."""
    from dataclasses import replace  # noqa: PLC0415
    from datetime import UTC, date, datetime, timedelta  # noqa: PLC0415
    from decimal import Decimal  # noqa: PLC0415

    from kilo_account_api.adapters import DynamoPhoneChallenges  # noqa: PLC0415
    from kilo_account_api.model import PhoneChallenge  # noqa: PLC0415
    from kilo_billing.account_store import DynamoAccountDirectory  # noqa: PLC0415
    from kilo_billing.accounts import AccountProfile  # noqa: PLC0415
    from kilo_billing.rating import TierChange  # noqa: PLC0415

    at = datetime(2026, 11, 1, tzinfo=UTC)
    DynamoAccountDirectory(stack.clients["dynamodb"], USAGE).register(
        AccountProfile("acct_1", (TierChange(at, "team"),))
    )
    with roles.acting_as("AccountApiFunction") as enforcement:
        dynamodb = boto3.client("dynamodb")
        accounts = DynamoAccountDirectory(dynamodb, USAGE)
        (profile,) = accounts.registered(["acct_1"]).values()
        accounts.save(replace(profile, budget_usd=Decimal("40.00")))
        challenges = DynamoPhoneChallenges(dynamodb, USAGE, timedelta(days=1))
        challenge = PhoneChallenge("acct_1", "+14155550100", "salt", "hash", at + timedelta(minutes=10), 3, (at,))
        challenges.replace(challenge, None)
        assert challenges.take_number_code("+14155550100", date(2026, 11, 1), 5)
        challenges.give_back_number_code("+14155550100", date(2026, 11, 1))
        challenges.spend_try(challenge)
        challenges.forget_phone("acct_1")
        DynamoLedgerStore(dynamodb, USAGE).save_billing("acct_1", customer_details="0" * 32)
        allowed = len(enforcement.allowed)
        state_status = {
            "Key": _key("ROOM#RM_x", "STATE"),
            "UpdateExpression": "SET #s = :s",
            "ExpressionAttributeNames": {"#s": "status"},
            "ExpressionAttributeValues": {":s": _s("paid")},
        }
        refusals = [
            _refused(dynamodb.put_item, **ROOM_PUT),
            _refused(dynamodb.update_item, **state_status),
            _refused(dynamodb.update_item, **INDEXED_INVOICE),
            _refused(dynamodb.put_item, Item={**_key("SWEPT_ROOMS", "ROOM#RM_x"), "closed_at_ms": {"N": "1"}}),
            # an invoice's attributes put in the account's partition (over the profile)
            _refused(dynamodb.put_item, Item={**_key("ACCOUNT#acct_1", "PROFILE"), "total": _s("0.00")}),
        ]
    assert refusals == ["AccessDeniedException"] * 5
    assert enforcement.denied == [
        ("dynamodb:PutItem", USAGE_TABLE),
        ("dynamodb:UpdateItem", USAGE_TABLE),
        ("dynamodb:UpdateItem", USAGE_TABLE),
        ("dynamodb:PutItem", USAGE_TABLE),
        ("dynamodb:PutItem", USAGE_TABLE),
    ]
    assert allowed > 0
    stored = stack.clients["dynamodb"].get_item(TableName=USAGE, Key=_key("ACCOUNT#acct_1", "PHONECODE"))["Item"]
    assert (stored["tries_left"], "phone" in stored) == ({"N": "0"}, False)
