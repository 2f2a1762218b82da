"""What the account API's logic needs from outside (Protocols) besides the layer's own ports - the account directory
(``kilo_billing.accounts``), month to date (``kilo_billing.month_to_date``), the ledger (``kilo_billing.invoicing``)
and entitlements (``kilo_billing.entitlements``). Implemented by ``adapters`` (DynamoDB) and ``stripe_adapter``."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import date, datetime
from typing import Protocol

from kilo_account_api.model import Member, PhoneChallenge, SessionRecord, SessionsPage


class SessionHistory(Protocol):
    """Rating's stored sessions of an account, read by attribute name (never by importing rating)."""

    def sessions(self, account_id: str, period: str) -> list[SessionRecord]:
        """Sessions with billable minutes in ``period``, and those still open that began before its end."""
        ...

    def all_sessions(self, account_id: str) -> Iterator[SessionRecord]:
        """Every stored session of the account, at once (the export reads them by pages: ``sessions_from``)."""
        ...

    def sessions_from(self, account_id: str, since_ms: int, limit: int) -> SessionsPage:
        """The account's sessions begun at ``since_ms`` or later, in start order: the first ``limit`` listed and the
        others begun in the same millisecond as the last of them (a page never splits one, so ``next_start_ms``, the
        start of the first left out, is an exact position: D372)."""
        ...

    def pseudonymise(self, account_id: str, pseudonym: Callable[[str], str], began_before: datetime) -> int:
        """Replace the participant identity of every session begun before ``began_before`` (the erasure mark) by
        ``pseudonym(identity)`` (which maps a pseudonym to itself); returns the sessions changed. Complete or
        ``ErasureIncompleteError``: it never returns while a session it could not see still holds an identity it
        should have seen (the DynamoDB adapter's passes over an eventually consistent index)."""
        ...


class AlertRecords(Protocol):
    """The alerts function's records of an account in the alerts table, read by attribute name (never by importing
    the alerts function)."""

    def pseudonymise(self, account_id: str) -> int:
        """Records that still name the address or number they went to (written before the alerts function kept its
        pseudonym only, D203): the contact replaced by ``kilo_billing.accounts.pseudonym`` in the
        recipient and in the provider's message kept with it; returns the records changed."""
        ...

    def forget_identities(self, account_id: str) -> int:
        """Delete the records that still name a participant's identity in their key (written before the alerts
        function kept its pseudonym only, D214): enforcement actions (``ENFORCEMENT#...``) and abuse flags of
        one identity in many calls (``OPERATOR#abuse_concurrent_sessions#...``); returns the records deleted."""
        ...


class MemberStore(Protocol):
    def members(self, account_id: str) -> list[Member]: ...

    def member(self, account_id: str, user: str) -> Member | None:
        """The user's membership or invitation as stored now (a strongly consistent read), ``None`` without one."""
        ...

    def add(self, member: Member) -> None:
        """Store a membership or an invitation (``member.status``); ``ConflictError`` when the user is already a
        member or holds an invitation still open at ``member.added_at`` (an expired one is replaced)."""
        ...

    def accept(self, account_id: str, user: str, now: datetime) -> Member:
        """The user's invitation, if still open at ``now``, becomes a membership from ``now`` (one conditional write);
        ``NotFoundError`` when there is no open invitation (none, expired, or already accepted)."""
        ...

    def decline(self, account_id: str, user: str) -> None:
        """The user's invitation (open or expired) is deleted; ``NotFoundError`` when the user holds none (a
        membership is left alone)."""
        ...

    def remove(self, account_id: str, user: str, keeping_owner: str | None = None) -> None:
        """``NotFoundError`` when the user is neither a member nor invited. ``keeping_owner``: remove only if that user
        is still an active owner of the account when the removal happens (one atomic step), else ``ConflictError`` -
        two owners removing each other at once must not leave the account with none."""
        ...

    def withdraw(self, account_id: str, user: str) -> None:
        """Delete the user's invitation (open or expired) only while it is still one (one conditional write):
        ``ConflictError`` when it has been accepted meanwhile (a membership is removed with the removal's rules,
        never by a withdrawal), ``NotFoundError`` when it is gone."""
        ...

    def accounts_of(self, user: str) -> list[Member]:
        """Every membership and invitation of ``user`` (the token's ``sub``), in any account (sign-in picks one of
        the memberships, ``sign_in``; the user's open invitations are listed to them)."""
        ...

    def pseudonymise(self, account_id: str, pseudonym: Callable[[str], str]) -> int:
        """Replace each member's email by ``pseudonym(email)``; returns the members changed."""
        ...


class PaymentPages(Protocol):
    """Stripe's hosted pages for an account's payment methods (Checkout in setup mode, the Billing Portal)."""

    def customer(self, account_id: str, email: str | None, name: str | None) -> str:
        """The processor's customer of the account (found by the account id in its metadata, else created), given
        the account's email and name where they differ."""
        ...

    def bring_details(self, customer_id: str, email: str | None, name: str | None) -> None:
        """Give a known customer the account's email and name where they differ (``None``: leave that one)."""
        ...

    def setup_url(self, customer_id: str, account_id: str, success_url: str, cancel_url: str) -> str: ...

    def portal_url(self, customer_id: str, return_url: str) -> str: ...


class PhoneChallenges(Protocol):
    """The account's one pending phone code (``PhoneChallenge``), written only over the one read."""

    def current(self, account_id: str) -> PhoneChallenge | None: ...

    def replace(self, challenge: PhoneChallenge, previous: PhoneChallenge | None) -> None:
        """Store ``challenge`` if the stored one is still ``previous`` (same salt; ``None``: none stored), else
        ``ConflictError`` (another request sent a code meanwhile). Kept until the rate window has passed."""
        ...

    def take_number_code(self, phone: str, day: date, limit: int) -> bool:
        """Count one code to ``phone`` on ``day`` (UTC) if fewer than ``limit`` were counted (all accounts together);
        ``False`` when the number had its codes for the day."""
        ...

    def give_back_number_code(self, phone: str, day: date) -> None:
        """Uncount one code taken by ``take_number_code`` (it was not sent)."""
        ...

    def forget_phone(self, account_id: str) -> None:
        """Erasure: the stored challenge (if any) keeps no number and no code hash (no code pending); its send times
        stay for the rate limit."""
        ...

    def spend_try(self, challenge: PhoneChallenge) -> None:
        """One guess: ``tries_left`` down by one if the stored challenge is still this one with these tries left,
        else ``ConflictError`` (a concurrent guess or a new code)."""
        ...


class CodeSender(Protocol):
    """SMS to a number (SNS): the verification code. ``InvalidRequestError`` when the number is refused for good."""

    def opted_out(self, phone: str) -> bool:
        """The number replied STOP (SNS's opted-out list): it is not texted."""
        ...

    def send(self, phone: str, text: str) -> None: ...
