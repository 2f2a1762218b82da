"""Who is calling a customer-facing route: read from the claims of a JWT that API Gateway's JWT authorizer verified.

Claims (the issuer puts them in: Cognito's pre-token-generation trigger in AWS, the local issuer in the local stack):
- ``sub``: the user;
- ``kilo_account``: the billing account the token acts for (one account per token; a user of several accounts signs
  in to one at a time);
- ``kilo_role``: the user's role in that account: ``owner`` | ``admin`` | ``member`` (members read; admins and
  owners also manage billing: budgets, tier, payment methods, crypto payments, privacy);
- ``kilo_operator``: ``"true"`` for the operator routes (API Gateway passes claims as strings).

This module only reads claims; signature, issuer, audience and expiry are checked by the authorizer (and by the local
stack's emulation of it). Pure: no AWS, no HTTP.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import IntEnum
from typing import Any, Final

ACCOUNT_CLAIM: Final = "kilo_account"
ROLE_CLAIM: Final = "kilo_role"
OPERATOR_CLAIM: Final = "kilo_operator"


class Role(IntEnum):
    """Ordered: a higher role may do everything a lower one may."""

    MEMBER = 1
    ADMIN = 2
    OWNER = 3


class UnauthenticatedError(Exception):
    """No verified claims, or claims that do not name a caller (401)."""


class ForbiddenError(Exception):
    """A verified caller asked for something its token does not allow (403)."""


@dataclass(frozen=True, slots=True)
class Caller:
    user: str
    account_id: str | None
    role: Role | None
    operator: bool = False

    def require(self, account_id: str, role: Role = Role.MEMBER) -> None:
        """Refuse unless this caller acts for ``account_id`` with at least ``role`` (operators may read any account)."""
        if self.operator and role is Role.MEMBER:
            return
        if self.account_id != account_id or self.role is None or self.role < role:
            raise ForbiddenError(f"not allowed to {'read' if role is Role.MEMBER else 'manage'} account {account_id!r}")

    def require_operator(self) -> None:
        if not self.operator:
            raise ForbiddenError("operator route")


def user_from_claims(claims: Mapping[str, Any] | None) -> str:
    """The verified user (``sub``) alone, whatever account the token acts for or none: for routes about the user
    (their invitations), not about an account."""
    if not claims or not isinstance(claims.get("sub"), str) or not claims["sub"]:
        raise UnauthenticatedError("missing or invalid token")
    return str(claims["sub"])


def caller_from_claims(claims: Mapping[str, Any] | None) -> Caller:
    user = user_from_claims(claims)
    found: Mapping[str, Any] = claims or {}
    account = found.get(ACCOUNT_CLAIM)
    role_name = found.get(ROLE_CLAIM)
    role = Role[role_name.upper()] if isinstance(role_name, str) and role_name.upper() in Role.__members__ else None
    operator = str(found.get(OPERATOR_CLAIM, "")).lower() == "true"
    if not operator and (not isinstance(account, str) or not account or role is None):
        raise UnauthenticatedError("token names no account and role")
    return Caller(user=user, account_id=account if isinstance(account, str) else None, role=role, operator=operator)


def _claims(event: Mapping[str, Any]) -> Mapping[str, Any] | None:
    claims = (((event.get("requestContext") or {}).get("authorizer") or {}).get("jwt") or {}).get("claims")
    return claims if isinstance(claims, Mapping) else None


def caller_from_event(event: Mapping[str, Any]) -> Caller:
    """From an API Gateway HTTP API (payload 2.0) event after its JWT authorizer."""
    return caller_from_claims(_claims(event))


def user_from_event(event: Mapping[str, Any]) -> str:
    """The verified user of an API Gateway HTTP API (payload 2.0) event after its JWT authorizer."""
    return user_from_claims(_claims(event))
