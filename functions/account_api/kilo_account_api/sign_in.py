"""Which claims a user's token carries: the account it acts for and the role there, from the members table, and the
operator claim from the user's groups. Pure: the Cognito pre-token-generation trigger (``pretoken_handler``) reads
the memberships and the event, and calls ``token_claims``.

One account per token (``kilo_billing.auth``): a user who belongs to several accounts signs in to the one named by
the user attribute ``custom:kilo_account`` when it is one of theirs, otherwise to the membership they have had longest
(ties: the smallest account id, so the choice is the same at every sign-in). Not the highest role: an owner of
another account can add anyone, even as owner, and must not thereby move that user's sign-in to their account (where
a card saved or a wallet linked would land). A user with no membership gets no account claims: the routes then answer
401 unless the user is an operator. An invitation (``MemberStatus.INVITED``) is no membership: it gives no claims
until the user accepts it (D200).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from kilo_account_api.model import Member
from kilo_billing.auth import ACCOUNT_CLAIM, OPERATOR_CLAIM, ROLE_CLAIM


def chosen_membership(memberships: Sequence[Member], requested: str | None) -> Member | None:
    memberships = [member for member in memberships if member.active]
    if requested:
        for member in memberships:
            if member.account_id == requested:
                return member
    ranked = sorted(memberships, key=lambda member: (member.added_at, member.account_id))
    return ranked[0] if ranked else None


def token_claims(
    memberships: Sequence[Member], requested: str | None, groups: Iterable[str], operator_group: str
) -> dict[str, str]:
    """The claims to add to (or override in) the token; API Gateway passes claims to the routes as strings."""
    claims: dict[str, str] = {}
    member = chosen_membership(memberships, requested)
    if member is not None:
        claims[ACCOUNT_CLAIM] = member.account_id
        claims[ROLE_CLAIM] = member.role.name.lower()
    if operator_group and operator_group in set(groups):
        claims[OPERATOR_CLAIM] = "true"
    return claims
