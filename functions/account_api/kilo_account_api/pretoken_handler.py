"""Lambda handler of Cognito's pre-token-generation trigger: puts the claims the account API reads
(``kilo_account``, ``kilo_role``, ``kilo_operator``; ``kilo_billing.auth``) into the tokens Cognito issues, from the
members table (``members_by_user`` index) and the user's groups (``sign_in.token_claims``).

Both trigger versions: version 1 (every Cognito feature plan; the ID token, which the dashboard sends) answers in
``claimsOverrideDetails``; versions 2 and 3 also put the claims into the access token. A failure raises: Cognito then
refuses the sign-in (fail closed - a token without the right account must never be issued)."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from kilo_account_api import sign_in
from kilo_account_api.dependencies import sign_in_dependencies
from kilo_billing import observability

SERVICE = "account-sign-in"
logger = observability.logger(SERVICE)
REQUESTED_ACCOUNT_ATTRIBUTE = "custom:kilo_account"


class MalformedTriggerEventError(ValueError):
    """Not a Cognito pre-token-generation event (no user ``sub``)."""


def _response(event: dict[str, Any], claims: dict[str, str]) -> dict[str, Any]:
    if str(event.get("version", "1")) == "1":
        return {"claimsOverrideDetails": {"claimsToAddOrOverride": claims}}
    return {
        "claimsAndScopeOverrideDetails": {
            "idTokenGeneration": {"claimsToAddOrOverride": claims},
            "accessTokenGeneration": {"claimsToAddOrOverride": claims},
        }
    }


@logger.inject_lambda_context(clear_state=True)
@observability.tracer(SERVICE).capture_lambda_handler(capture_response=False)
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    request = event.get("request") or {}
    attributes = request.get("userAttributes") or {}
    user = attributes.get("sub")
    if not isinstance(user, str) or not user:
        raise MalformedTriggerEventError("a pre-token-generation event names its user in request.userAttributes.sub")
    groups = (request.get("groupConfiguration") or {}).get("groupsToOverride") or []
    deps = sign_in_dependencies()
    claims = sign_in.token_claims(
        deps.members.accounts_of(user),
        attributes.get(REQUESTED_ACCOUNT_ATTRIBUTE),
        [group for group in groups if isinstance(group, str)],
        deps.operator_group,
    )
    observability.correlate(SERVICE, account_id=claims.get("kilo_account"))
    logger.info("sign-in claims", extra={"role": claims.get("kilo_role"), "operator": "kilo_operator" in claims})
    return event | {"response": (event.get("response") or {}) | _response(event, claims)}
