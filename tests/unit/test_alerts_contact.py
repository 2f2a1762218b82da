"""Alert contact details on the account profile: validated whole before saving, kept across tier changes."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from kilo_billing.accounts import (
    AccountProfile,
    InvalidContactError,
    UnknownAccountError,
    change_tier,
    check_email,
    check_phone,
    set_alert_contact,
)
from kilo_billing.rating import TierChange
from tests.fakes import InMemoryAccountDirectory

SIGNUP = datetime(2026, 1, 1, tzinfo=UTC)


@pytest.mark.parametrize("phone", ["+14155550100", "+442071838750", "+8613800138000", "+3312345"])
def test_given_e164_numbers_then_they_are_accepted(phone: str) -> None:
    assert check_phone(phone) == phone


@pytest.mark.parametrize(
    "phone", ["14155550100", "+0123456789", "+1 415 555 0100", "+1415555010012345", "+123", "", "+1415555O100"]
)
def test_given_numbers_that_are_not_e164_then_they_are_refused(phone: str) -> None:
    with pytest.raises(InvalidContactError, match=r"E\.164"):
        check_phone(phone)


@pytest.mark.parametrize("address", ["a@b", "a b@example.com", "a@-x.com", "<a@example.com>", "a@example.com,b@x.io"])
def test_given_bad_addresses_then_they_are_refused(address: str) -> None:
    with pytest.raises(InvalidContactError):
        check_email(address)


def test_given_contact_and_preferences_then_saved_and_a_tier_change_keeps_them() -> None:
    directory = InMemoryAccountDirectory(AccountProfile("acct_1", (TierChange(SIGNUP, "personal"),)))
    set_alert_contact(
        directory, "acct_1", name="Ada", email="ada@example.com", phone="+14155550100",
        preferences={"budget_threshold": ("sms", "email"), "allowance_threshold": ()},
    )  # fmt: skip
    change_tier(directory, "acct_1", TierChange(datetime(2026, 2, 1, tzinfo=UTC), "team"))
    found = directory.registered(["acct_1"])["acct_1"]
    assert (found.name, found.email, found.phone) == ("Ada", "ada@example.com", "+14155550100")
    assert found.channels_chosen("budget_threshold") == ("email", "sms")
    assert found.channels_chosen("allowance_threshold") == ()
    assert found.channels_chosen("invoice_issued") is None
    assert [c.tier for c in found.changes] == ["personal", "team"]


def test_given_one_bad_detail_then_nothing_is_saved() -> None:
    directory = InMemoryAccountDirectory(AccountProfile("acct_1", (TierChange(SIGNUP, "personal"),)))
    with pytest.raises(InvalidContactError, match=r"E\.164"):
        set_alert_contact(directory, "acct_1", email="ada@example.com", phone="555-0100")
    with pytest.raises(InvalidContactError, match="unknown channel"):
        set_alert_contact(directory, "acct_1", email="ada@example.com", preferences={"budget_threshold": ("fax",)})
    assert directory.registered(["acct_1"])["acct_1"].email == ""
    with pytest.raises(UnknownAccountError):
        set_alert_contact(directory, "acct_nobody", email="ada@example.com")
