"""The key of an alert email address's mark on the alerts table (D400, D409): written by the alerts' bounce handler,
read by the alerts function, cleared by the operator's CLI (``kilo-billing alerts clear-mark``) - one rule for all
three (D423). No I/O; the address is never stored, only its pseudonym (D203)."""

from __future__ import annotations

from typing import Final

MARK_PREFIX: Final = "EMAILMARK#"


def mark_ref(account_id: str, address: str) -> str:
    """The pseudonym of the whole address casefolded, so SES's spelling of it (its report) and the account's (the
    profile) find the same mark. The local part is casefolded too: RFC 5321 lets a mailbox tell case apart there, but
    the providers our accounts use do not, and a mark missed by case is a known-bad address mailed every month, while
    a mark shared by two mailboxes differing only in case (one account, one address at a time) would have to be a
    mailbox nobody we bill has."""
    from kilo_billing.accounts import pseudonym  # noqa: PLC0415  # the bounce handler's cold start: only when marking

    return pseudonym(account_id, address.strip().casefold())


def mark_key(account_id: str, ref: str) -> dict[str, str]:
    """The mark's key (plain strings; ``kilo_billing.items.to_item`` types it): ``ACCOUNT#<id>`` /
    ``EMAILMARK#<ref>``, ``ref`` being ``mark_ref`` of the address."""
    return {"pk": f"ACCOUNT#{account_id}", "sk": f"{MARK_PREFIX}{ref}"}
