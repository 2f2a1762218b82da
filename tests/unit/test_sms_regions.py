"""The SMS region allow-list (D212, D221): a number is saved for alerts, and texted a code, only when
libphonenumber gives it one of the regions of ``SMS_REGIONS`` - not its calling code: +1 is also Jamaica and ~20 other
countries (toll fraud: every SMS is paid by us, premium ranges abroad most of all). The layer's check
(``kilo_billing.sms_regions``) and the account API's logic with in-memory fakes; through the handler on moto in
tests/integration/test_account_api_phone.py."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, date, datetime

import pytest
from pydantic import ValidationError

from kilo_account_api import logic, phone
from kilo_account_api.model import InvalidRequestError, PhoneChallenge
from kilo_account_api.settings import AccountApiSettings
from kilo_billing import sms_regions
from kilo_billing.accounts import AccountProfile
from kilo_billing.rating import TierChange
from tests.fakes import InMemoryAccountDirectory

NOW = datetime(2026, 11, 15, 12, tzinfo=UTC)
US, CANADA, UK, IE = "+14155550100", "+16135550100", "+447400123456", "+353850123456"  # UK and IE: mobiles
UK_LANDLINE, IE_LANDLINE = "+442071838750", "+35318881234"  # London +44 20, Dublin +353 1
FRANCE, JAMAICA, UNASSIGNED = "+33612345678", "+18765550100", "+99912345678"
# the regions this file allows, written out: the US, Canada, the UK, Ireland
ALLOWED = frozenset({"US", "CA", "GB", "IE"})
JAMAICA_REFUSED = (
    "+18765550100 has region JM; SMS goes only to the regions of SMS_REGIONS (CA, GB, IE, US): "
    "use a number in one of them"
)


def profile(**extra: object) -> AccountProfile:
    return AccountProfile("acct", (TierChange(datetime(2026, 1, 1, tzinfo=UTC), "team"),), **extra)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("number", "region"),
    [
        (US, "US"),  # San Francisco (415)
        (CANADA, "CA"),  # Ottawa (613): +1 as well
        (JAMAICA, "JM"),  # +1 876: the North American Numbering Plan, yet not the US
        ("+18095550100", "DO"),  # the Dominican Republic, +1 809
        (UK, "GB"),  # a mobile, +44 74
        (UK_LANDLINE, "GB"),  # London, +44 20
        (IE, "IE"),  # a mobile, +353 85
        (IE_LANDLINE, "IE"),  # Dublin, +353 1
        (FRANCE, "FR"),
        ("+80012345678", None),  # international freephone: a number of no country (libphonenumber's "001")
        (UNASSIGNED, None),  # +999: no assigned calling code
        ("+15555550100", None),  # +1 555: no region holds the range
        ("0155 5501", None),  # not E.164 (stored before validation): not parsed
    ],
)
def test_given_e164_numbers_then_their_regions_are_libphonenumbers(number: str, region: str | None) -> None:
    assert sms_regions.region_of(number) == region


def test_given_a_number_outside_the_regions_then_it_is_refused_naming_its_region_and_the_setting() -> None:
    for allowed in (US, CANADA, UK, IE):
        phone.check_sms_region(allowed, ALLOWED)
        assert sms_regions.sms_region_refusal(allowed, ALLOWED) is None
    with pytest.raises(InvalidRequestError) as refused:
        phone.check_sms_region(JAMAICA, ALLOWED)  # +1, like the US and Canada: refused all the same
    assert (refused.value.field, str(refused.value)) == ("phone", JAMAICA_REFUSED)
    with pytest.raises(InvalidRequestError) as unassigned:
        phone.check_sms_region(UNASSIGNED, ALLOWED)
    assert str(unassigned.value) == (
        "+99912345678 has no region in libphonenumber's table; SMS goes only to the regions of SMS_REGIONS "
        "(CA, GB, IE, US): use a number in one of them"
    )
    # the layer's refusal names the number only as its caller words it (alerts' records keep no number)
    refusal = sms_regions.sms_region_refusal(FRANCE, ALLOWED)
    assert refusal == sms_regions.SmsRegionRefusal("FR", ALLOWED)
    assert refusal.reason("the number") == (
        "the number has region FR; SMS goes only to the regions of SMS_REGIONS (CA, GB, IE, US)"
    )


@pytest.mark.parametrize(
    ("number", "region", "number_type"),
    [
        ("+447012345678", "GB", "PERSONAL_NUMBER"),  # +44 70: a "follow-me" number, charged like premium rate
        ("+449098790000", "GB", "PREMIUM_RATE"),  # +44 909
        ("+19005550100", "US", "PREMIUM_RATE"),  # +1 900
        ("+447640123456", "GB", "PAGER"),  # +44 76
        ("+18005550100", "US", "TOLL_FREE"),  # +1 800
        (UK_LANDLINE, "GB", "FIXED_LINE"),
        (IE_LANDLINE, "IE", "FIXED_LINE"),
    ],
)
def test_given_a_number_of_an_allowed_region_that_is_not_a_mobile_then_it_is_refused_naming_its_type(
    number: str, region: str, number_type: str
) -> None:
    refusal = sms_regions.sms_region_refusal(number, ALLOWED)
    assert refusal == sms_regions.SmsRegionRefusal(region, ALLOWED, number_type)
    wanted = (
        f"{number} has region {region} and type {number_type}; SMS goes only to mobile numbers "
        "(libphonenumber's MOBILE, FIXED_LINE_OR_MOBILE): use a mobile number"
    )
    with pytest.raises(InvalidRequestError) as refused:
        phone.check_sms_region(number, ALLOWED)
    assert (refused.value.field, str(refused.value)) == ("phone", wanted)
    # the alerts' words for it (no number in the record)
    assert refusal.reason("the number") == (
        f"the number has region {region} and type {number_type}; SMS goes only to mobile numbers "
        "(libphonenumber's MOBILE, FIXED_LINE_OR_MOBILE)"
    )
    # saved: refused, nothing stored; texted a code: refused before any port is touched
    directory = InMemoryAccountDirectory(profile(email="old@a.example", phone=US, phone_verified=True))
    before = directory.profiles["acct"]
    with pytest.raises(InvalidRequestError, match=number_type):
        logic.set_alert_preferences(directory, "acct", request(number, "new@a.example"), ALLOWED)
    assert directory.profiles["acct"] == before
    sender = RecordingSender()
    policy = phone.PhoneVerificationPolicy(regions=ALLOWED)
    with pytest.raises(InvalidRequestError, match=number_type):
        phone.send_code(profile(phone=number), phone.PhoneCodes(UntouchedChallenges(), sender, no_key, policy), NOW)
    assert sender.sent == []


def test_given_mobile_numbers_of_allowed_regions_then_their_types_pass() -> None:
    # MOBILE (GB, IE, JM with Jamaica allowed) and FIXED_LINE_OR_MOBILE (the US and Canada do not tell them apart)
    for number, number_type in [(UK, "MOBILE"), (IE, "MOBILE"), (JAMAICA, "MOBILE"), (US, "FIXED_LINE_OR_MOBILE"),
                                (CANADA, "FIXED_LINE_OR_MOBILE")]:  # fmt: skip
        assert sms_regions.number_type_of(number) == number_type
        assert sms_regions.sms_region_refusal(number, ALLOWED | {"JM"}) is None
    assert sms_regions.number_type_of("0155 5501") == "UNKNOWN"


def request(number: str, email: str = "ops@a.example") -> logic.AlertPreferencesRequest:
    return logic.AlertPreferencesRequest("", email, number, {})


def test_given_a_new_number_outside_the_list_when_saved_then_it_is_refused_and_nothing_is_saved() -> None:
    directory = InMemoryAccountDirectory(profile(email="old@a.example", phone=US, phone_verified=True))
    before = directory.profiles["acct"]
    with pytest.raises(InvalidRequestError) as refused:
        logic.set_alert_preferences(directory, "acct", request(JAMAICA, "new@a.example"), ALLOWED)
    assert (refused.value.field, str(refused.value)) == ("phone", JAMAICA_REFUSED)
    assert directory.profiles["acct"] == before  # the email of the same save is not saved either
    saved = logic.set_alert_preferences(directory, "acct", request(UK, "new@a.example"), ALLOWED)
    assert (saved.phone, saved.phone_verified, saved.email) == (UK, False, "new@a.example")
    # a list that allows Jamaica: saved
    allows_jamaica = logic.set_alert_preferences(directory, "acct", request(JAMAICA), ALLOWED | {"JM"})
    assert allows_jamaica.phone == JAMAICA


def test_given_the_stored_number_outside_the_list_sent_back_unchanged_then_the_save_stands() -> None:
    # saved before the list (or before its country was taken off it): the form sends it back as read
    directory = InMemoryAccountDirectory(profile(email="old@a.example", phone=JAMAICA))
    saved = logic.set_alert_preferences(directory, "acct", request(JAMAICA, "new@a.example"), ALLOWED)
    assert (saved.phone, saved.email) == (JAMAICA, "new@a.example")
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
    policy = phone.PhoneVerificationPolicy(regions=ALLOWED)
    sender = RecordingSender()
    with pytest.raises(InvalidRequestError) as refused:
        phone.send_code(profile(phone=JAMAICA), phone.PhoneCodes(UntouchedChallenges(), sender, no_key, policy), NOW)
    assert (refused.value.field, str(refused.value)) == ("phone", JAMAICA_REFUSED)
    # after the save of the number sent back unchanged: the save's outcome says why no code went
    codes = phone.PhoneCodes(UntouchedChallenges(), sender, no_key, policy)
    after_save = phone.code_for_saved_number(profile(phone=JAMAICA), codes, NOW)
    assert after_save == phone.SavedNumberCode("not_sent", JAMAICA_REFUSED)
    assert sender.sent == []


def test_given_the_settings_then_the_default_regions_are_the_layers_and_a_list_is_read_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("USAGE_TABLE_NAME", "usage")
    monkeypatch.setenv("MEMBERS_TABLE_NAME", "members")
    monkeypatch.delenv("SMS_REGIONS", raising=False)
    # the default, written out: the US, Canada, the UK, Ireland, Australia, New Zealand
    default = frozenset({"US", "CA", "GB", "IE", "AU", "NZ"})
    assert AccountApiSettings().sms_region_set == default == sms_regions.DEFAULT_SMS_REGIONS
    assert phone.PhoneVerificationPolicy().regions == default
    monkeypatch.setenv("SMS_REGIONS", "us, ca,FR")
    assert AccountApiSettings().sms_region_set == frozenset({"US", "CA", "FR"})
    for wrong in ("US,,CA", "US,USA", "1,44", "US,UK", ""):
        monkeypatch.setenv("SMS_REGIONS", wrong)
        with pytest.raises(ValidationError, match="sms_regions"):
            AccountApiSettings()
    monkeypatch.setenv("SMS_REGIONS", "US,UK")
    with pytest.raises(ValidationError, match=r"UK \(the ISO code is GB\)"):
        AccountApiSettings()
