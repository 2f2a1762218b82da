"""The SMS country allow-list (D-api2-1): a number is saved for alerts, and texted a code, only when its country calling
code is one of ``SMS_COUNTRY_CODES`` (toll fraud: every SMS is paid by us, premium ranges abroad most of all). The
logic with in-memory fakes; through the handler on moto in tests/integration/test_account_api_phone.py."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, date, datetime

import pytest
from pydantic import ValidationError

from kilo_account_api import logic, phone
from kilo_account_api.model import InvalidRequestError, PhoneChallenge
from kilo_account_api.settings import AccountApiSettings
from kilo_billing.accounts import AccountProfile
from kilo_billing.rating import TierChange
from tests.fakes import InMemoryAccountDirectory

NOW = datetime(2026, 11, 15, 12, tzinfo=UTC)
US, UK, IE = "+14155550100", "+447700900123", "+35318881234"
FRANCE, JAMAICA, UNASSIGNED = "+33612345678", "+18765550100", "+99912345678"
# the countries this file allows, written out: the US and Canada (+1), the UK (+44), Ireland (+353)
ALLOWED = frozenset({1, 44, 353})
FRANCE_REFUSED = (
    "+33612345678 has country code +33; SMS goes only to the countries of SMS_COUNTRY_CODES (+1, +44, +353): "
    "use a number in one of them"
)


def profile(**extra: object) -> AccountProfile:
    return AccountProfile("acct", (TierChange(datetime(2026, 1, 1, tzinfo=UTC), "team"),), **extra)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("number", "code"),
    [
        (US, 1),
        (JAMAICA, 1),  # the North American Numbering Plan: Jamaica shares +1 (a known limit, D-api2-1)
        (UK, 44),
        (IE, 353),  # three digits: +3 and +35 are no codes
        (FRANCE, 33),
        ("+8613800138000", 86),
        ("+80012345678", 800),  # international freephone: a code of no country
        (UNASSIGNED, None),
    ],
)
def test_given_e164_numbers_then_their_calling_codes_are_libphonenumbers(number: str, code: int | None) -> None:
    assert phone.calling_code(number) == code


def test_given_a_number_outside_the_list_then_it_is_refused_naming_its_country_code_and_the_setting() -> None:
    for allowed in (US, UK, IE, JAMAICA):
        phone.check_sms_country(allowed, ALLOWED)
    with pytest.raises(InvalidRequestError) as refused:
        phone.check_sms_country(FRANCE, ALLOWED)
    assert (refused.value.field, str(refused.value)) == ("phone", FRANCE_REFUSED)
    with pytest.raises(InvalidRequestError) as unassigned:
        phone.check_sms_country(UNASSIGNED, ALLOWED)
    assert str(unassigned.value) == (
        "+99912345678 has no assigned country code; SMS goes only to the countries of SMS_COUNTRY_CODES "
        "(+1, +44, +353): use a number in one of them"
    )


def request(number: str, email: str = "ops@a.example") -> logic.AlertPreferencesRequest:
    return logic.AlertPreferencesRequest("", email, number, {})


def test_given_a_new_number_outside_the_list_when_saved_then_it_is_refused_and_nothing_is_saved() -> None:
    directory = InMemoryAccountDirectory(profile(email="old@a.example", phone=US, phone_verified=True))
    before = directory.profiles["acct"]
    with pytest.raises(InvalidRequestError) as refused:
        logic.set_alert_preferences(directory, "acct", request(FRANCE, "new@a.example"), ALLOWED)
    assert (refused.value.field, str(refused.value)) == ("phone", FRANCE_REFUSED)
    assert directory.profiles["acct"] == before  # the email of the same save is not saved either
    saved = logic.set_alert_preferences(directory, "acct", request(UK, "new@a.example"), ALLOWED)
    assert (saved.phone, saved.phone_verified, saved.email) == (UK, False, "new@a.example")
    # the same list in a setting that allows France: saved
    allows_france = logic.set_alert_preferences(directory, "acct", request(FRANCE), ALLOWED | {33})
    assert allows_france.phone == FRANCE


def test_given_the_stored_number_outside_the_list_sent_back_unchanged_then_the_save_stands() -> None:
    # saved before the list (or before its country was taken off it): the form sends it back as read
    directory = InMemoryAccountDirectory(profile(email="old@a.example", phone=FRANCE))
    saved = logic.set_alert_preferences(directory, "acct", request(FRANCE, "new@a.example"), ALLOWED)
    assert (saved.phone, saved.email) == (FRANCE, "new@a.example")
    cleared = logic.set_alert_preferences(directory, "acct", request(""), ALLOWED)
    assert cleared.phone == ""


@dataclass
class UntouchedChallenges:
    """A phone-code store with no code pending that must not be written (a refused number stores and counts
    nothing)."""

    def current(self, account_id: str) -> PhoneChallenge | None:
        return None

    def replace(self, challenge: PhoneChallenge, previous: PhoneChallenge | None) -> None:
        raise AssertionError("stored a code")

    def take_number_code(self, phone: str, day: date, limit: int) -> bool:
        raise AssertionError("counted a code")

    def give_back_number_code(self, phone: str, day: date) -> None:
        raise AssertionError("gave a code back")

    def forget_phone(self, account_id: str) -> None:
        raise AssertionError("forgot")

    def spend_try(self, challenge: PhoneChallenge) -> None:
        raise AssertionError("spent a try")


@dataclass
class RecordingSender:
    sent: list[tuple[str, str]] = field(default_factory=list)

    def opted_out(self, phone: str) -> bool:
        return False

    def send(self, phone: str, text: str) -> None:
        self.sent.append((phone, text))


def no_key() -> bytes:
    raise AssertionError("read the key")


def test_given_a_stored_number_outside_the_list_then_no_code_is_sent_and_nothing_is_stored_or_counted() -> None:
    policy = phone.PhoneVerificationPolicy(countries=ALLOWED)
    sender = RecordingSender()
    with pytest.raises(InvalidRequestError) as refused:
        phone.send_code(profile(phone=FRANCE), UntouchedChallenges(), sender, no_key, NOW, policy)
    assert (refused.value.field, str(refused.value)) == ("phone", FRANCE_REFUSED)
    # after the save of the number sent back unchanged: the save's outcome says why no code went
    after_save = phone.code_for_saved_number(profile(phone=FRANCE), UntouchedChallenges(), sender, no_key, NOW, policy)
    assert after_save == phone.SavedNumberCode("not_sent", FRANCE_REFUSED)
    assert sender.sent == []


def test_given_the_settings_then_the_default_list_is_the_policys_and_a_list_is_read_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("USAGE_TABLE_NAME", "usage")
    monkeypatch.setenv("MEMBERS_TABLE_NAME", "members")
    monkeypatch.delenv("SMS_COUNTRY_CODES", raising=False)
    # the default, written out: US and Canada, UK, Ireland, Australia, New Zealand
    assert AccountApiSettings().sms_countries == frozenset({1, 44, 353, 61, 64}) == phone.DEFAULT_SMS_COUNTRIES
    assert phone.PhoneVerificationPolicy().countries == frozenset({1, 44, 353, 61, 64})
    monkeypatch.setenv("SMS_COUNTRY_CODES", "+1, 33,49")
    assert AccountApiSettings().sms_countries == frozenset({1, 33, 49})
    for wrong in ("1,044", "1,,44", "1,4444", "uk"):
        monkeypatch.setenv("SMS_COUNTRY_CODES", wrong)
        with pytest.raises(ValidationError, match="sms_country_codes"):
            AccountApiSettings()
