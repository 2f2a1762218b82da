"""Where SMS may go: mobile numbers of the regions of ``SMS_REGIONS`` (ISO 3166 codes, default the US, Canada, the
UK, Ireland, Australia and New Zealand), judged by the region libphonenumber gives the number
(``region_code_for_number``), not by its calling code - +1 is the US and Canada but also about 20 Caribbean and
Pacific countries sharing the North American Numbering Plan (Jamaica +1 876, the Dominican Republic +1 809 ...),
classic SMS-pumping destinations - and by the type it gives the number (``number_type``): only ``MOBILE`` or
``FIXED_LINE_OR_MOBILE`` (the US's and Canada's ranges, which do not tell the two apart). An allowed region's
premium-rate (+44 909 ..., +1 900 ...), personal-number (+44 70 ...), pager (+44 76 ...), toll-free or fixed-line
number is refused as well: premium and personal ranges are where SMS pumping pays, and the others take no SMS.

A toll-fraud guard (D212, D221): the account API refuses to save a new number outside them and texts no
code to one; the alerts function texts no alert to one (the alert goes by email instead, D170). Both read the same
setting (``kilo_billing.settings.SmsSettings``).

libphonenumber (``phonenumberslite``) is not shipped by the layer: this module borrows it (``kilo_dev.package``'s
``LAYER_BORROWED``), so a function importing this module ships it itself (the account API and alerts do), and it
is imported inside ``region_of`` only - on the first number checked, never at a cold start.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

SMS_REGIONS_SETTING: Final = "SMS_REGIONS"
# The regions whose numbers are texted unless SMS_REGIONS says otherwise: the markets of an English-only product
# priced in USD. The settings' default (kilo_billing.settings.DEFAULT_SMS_REGIONS_TEXT: importing this module there
# would load it for every function's settings) and the template's SmsRegions parameter are this list (tests hold
# them equal).
DEFAULT_SMS_REGIONS: Final[frozenset[str]] = frozenset({"US", "CA", "GB", "IE", "AU", "NZ"})
_REGION = re.compile(r"[A-Z]{2}")
# libphonenumber's types of a number SMS goes to (``PhoneNumberType``'s names); any other is refused
# (D221 amended)
SMS_NUMBER_TYPES: Final[tuple[str, ...]] = ("MOBILE", "FIXED_LINE_OR_MOBILE")


def region_of(number: str) -> str | None:
    """The region (ISO 3166 alpha-2) libphonenumber gives an E.164 ``number`` - from its table of the ranges each
    region holds, so +1 876 ... is ``JM`` and +1 415 ... ``US`` - or ``None`` when it gives none: a number in no
    region's ranges (not parseable, an unassigned code, an unassigned range) or one of no country (+800 ...)."""
    import phonenumbers  # noqa: PLC0415  # on the first number checked only (cold start: D25)

    try:
        region = phonenumbers.region_code_for_number(phonenumbers.parse(number))
    except phonenumbers.NumberParseException:
        return None
    return region if region and _REGION.fullmatch(region) else None  # "001": a non-geographic number


def number_type_of(number: str) -> str:
    """The type libphonenumber gives an E.164 ``number`` (``PhoneNumberType``'s name: ``MOBILE``, ``PREMIUM_RATE``,
    ``PERSONAL_NUMBER``, ``PAGER``, ...), ``UNKNOWN`` for one it cannot parse or place."""
    import phonenumbers  # noqa: PLC0415  # on the first number checked only (cold start: D25)

    try:
        found = phonenumbers.number_type(phonenumbers.parse(number))
    except phonenumbers.NumberParseException:
        return "UNKNOWN"
    return str(phonenumbers.PhoneNumberType.to_string(found) or "UNKNOWN")


@dataclass(frozen=True, slots=True)
class SmsRegionRefusal:
    """Why a number is not texted: its region (``None``: none) is not one of ``regions``, or - ``number_type`` set -
    its region is, but its type is not one of ``SMS_NUMBER_TYPES`` (premium rate, a personal number, ...)."""

    region: str | None
    regions: frozenset[str]
    number_type: str = ""

    def reason(self, subject: str) -> str:
        """``subject`` (the number, or words for it where the number may not be written) and why, naming the
        setting and its regions, or the number's type and the types SMS goes to."""
        if self.number_type:
            mobile = ", ".join(SMS_NUMBER_TYPES)
            return (
                f"{subject} has region {self.region} and type {self.number_type}; "
                f"SMS goes only to mobile numbers (libphonenumber's {mobile})"
            )
        found = f"region {self.region}" if self.region else "no region in libphonenumber's table"
        allowed = ", ".join(sorted(self.regions))
        return f"{subject} has {found}; SMS goes only to the regions of {SMS_REGIONS_SETTING} ({allowed})"

    @property
    def advice(self) -> str:
        """What the person giving a number should do instead."""
        return "use a mobile number" if self.number_type else "use a number in one of them"


def sms_region_refusal(number: str, regions: frozenset[str]) -> SmsRegionRefusal | None:
    """``None`` when ``number``'s region is one of ``regions`` and its type one of ``SMS_NUMBER_TYPES``, else the
    refusal (the region judged first). The one check of a number saved, texted a code and texted an alert."""
    region = region_of(number)
    if region not in regions:
        return SmsRegionRefusal(region, regions)
    found = number_type_of(number)
    return None if found in SMS_NUMBER_TYPES else SmsRegionRefusal(region, regions, found)
