"""Where SMS may go: the regions of ``SMS_REGIONS`` (ISO 3166 codes, default the US, Canada, the UK, Ireland,
Australia and New Zealand), judged by the region libphonenumber gives the number (``region_code_for_number``), not
by its calling code - +1 is the US and Canada but also about 20 Caribbean and Pacific countries sharing the North
American Numbering Plan (Jamaica +1 876, the Dominican Republic +1 809 ...), classic SMS-pumping destinations.

A toll-fraud guard (D-api2-1, D-api3-1): the account API refuses to save a new number outside them and texts no
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


@dataclass(frozen=True, slots=True)
class SmsRegionRefusal:
    """Why a number is not texted: its region (``None``: none) is not one of ``regions``."""

    region: str | None
    regions: frozenset[str]

    def reason(self, subject: str) -> str:
        """``subject`` (the number, or words for it where the number may not be written) and why, naming the
        setting and its regions."""
        found = f"region {self.region}" if self.region else "no region in libphonenumber's table"
        allowed = ", ".join(sorted(self.regions))
        return f"{subject} has {found}; SMS goes only to the regions of {SMS_REGIONS_SETTING} ({allowed})"


def sms_region_refusal(number: str, regions: frozenset[str]) -> SmsRegionRefusal | None:
    """``None`` when ``number``'s region is one of ``regions``, else the refusal."""
    region = region_of(number)
    return None if region in regions else SmsRegionRefusal(region, regions)
