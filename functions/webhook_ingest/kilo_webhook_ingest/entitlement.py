"""The entitlement check's request (``POST /v1/entitlements/check``): ``{"account_id": "<id>"}``. The answer is the
decision of ``kilo_billing.entitlements`` as ``Entitlement.as_json`` writes it (the account API's check answers the
same JSON)."""

from __future__ import annotations

from kilo_billing.accounts import InvalidAccountIdError, check_account_id
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
