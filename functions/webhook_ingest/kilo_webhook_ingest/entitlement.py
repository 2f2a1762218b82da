"""The entitlement check's request and answer (``POST /v1/entitlements/check``): ``{"account_id": "<id>"}`` in,
the decision of ``kilo_billing.entitlements`` out, money and quantities as strings."""

from __future__ import annotations

from typing import Any

from kilo_billing.accounts import InvalidAccountIdError, check_account_id
from kilo_billing.entitlements import Entitlement
from kilo_billing.money import decimal_str, money_str
from kilo_webhook_ingest import jsontext
from kilo_webhook_ingest.model import InvalidEventError


def _problem(field: str, message: str) -> InvalidEventError:
    return InvalidEventError(
        "invalid_request", f"{field}: {message}", [{"index": None, "field": field, "message": message}]
    )


def parse_check(body: bytes) -> str:
    data = jsontext.loads(body, "an entitlement check")
    if not isinstance(data, dict):
        raise _problem("(body)", 'must be a JSON object {"account_id": "..."}')
    unknown = sorted(set(data) - {"account_id"})
    if unknown:
        raise _problem(str(unknown[0])[:128], "unknown field")
    account_id = data.get("account_id")
    if not isinstance(account_id, str):
        raise _problem("account_id", "is required (a string)")
    try:
        return check_account_id(account_id)
    except InvalidAccountIdError as exc:
        raise _problem("account_id", str(exc)) from None


def _money(value: Any) -> str | None:
    return None if value is None else money_str(value)


def answer(entitlement: Entitlement) -> dict[str, Any]:
    return {
        "account_id": entitlement.account_id,
        "allowed": entitlement.allowed,
        "reason": entitlement.reason,
        "message": entitlement.message,
        "max_token_ttl_seconds": entitlement.max_token_ttl_seconds,
        "budget": {
            "period": entitlement.period,
            "spent_usd": money_str(entitlement.spent_usd),
            "as_of": entitlement.as_of,
            "budget_usd": _money(entitlement.budget_usd),
            "hard_limit_usd": _money(entitlement.hard_limit_usd),
            "remaining_usd": _money(entitlement.remaining_budget_usd),
        },
        "remaining_allowance": {meter: decimal_str(value) for meter, value in entitlement.remaining_allowance.items()},
    }
