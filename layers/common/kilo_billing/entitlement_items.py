"""The spend item ``ACCOUNT#<id>`` / ``ENTITLEMENT`` in the usage table (beside the profile): its item mapping
(``SpendState`` <-> DynamoDB item, one attribute per meter's reading). The DynamoDB adapter is
``kilo_billing.entitlement_store``; the ports, ``kilo_billing.entitlements``."""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal
from typing import Any, Final

from kilo_billing.entitlements import Reading, SpendState
from kilo_billing.items import from_item

SPEND_ATTRIBUTE: Final = "spend"
ALLOWANCE_PREFIX: Final = "allowance_"
BILL_METERS: Final = frozenset({"budget", "hard_limit"})  # threshold meters whose ``used`` is the month's bill


def attribute_for(meter: str) -> str:
    return SPEND_ATTRIBUTE if meter in BILL_METERS else ALLOWANCE_PREFIX + meter


def _reading(value: Mapping[str, Any]) -> Reading:
    return Reading(str(value["period"]), Decimal(value["used"]), Decimal(value["limit"]), str(value["as_of"]))


def state_from_item(account_id: str, item: Mapping[str, Any] | None) -> SpendState | None:
    if item is None:
        return None
    values = from_item(item)
    spend = values.get(SPEND_ATTRIBUTE)
    return SpendState(
        account_id,
        _reading(spend) if spend else None,
        {
            name.removeprefix(ALLOWANCE_PREFIX): _reading(value)
            for name, value in values.items()
            if name.startswith(ALLOWANCE_PREFIX)
        },
    )
