"""In-memory implementations of the account API's ports (and the layer's month-to-date source), held to the same
contract suite as the DynamoDB adapters (tests/contract/test_account_api_stores.py)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from datetime import datetime

from kilo_account_api.model import ConflictError, Member, MemberStatus, NotFoundError, SessionRecord, SessionsPage
from kilo_billing.accounts import AccountProfile
from kilo_billing.auth import Role
from kilo_billing.month_to_date import OpenSessionFigures
from kilo_billing.usage_signals import Counters
from tests.fakes import InMemoryAccountDirectory


@dataclass
class InMemoryMonthToDate:
    directory: InMemoryAccountDirectory
    counters_by: dict[tuple[str, str], Counters] = field(default_factory=dict)
    open: list[OpenSessionFigures] = field(default_factory=list)

    def profile(self, account_id: str) -> AccountProfile | None:
        return self.directory.profiles.get(account_id)

    def counters(self, account_id: str, period: str) -> Counters:
        return dict(self.counters_by.get((account_id, period), {}))

    def open_sessions(self, account_id: str) -> list[OpenSessionFigures]:
        return [figures for figures in self.open if figures.account == account_id]


# a month to date with nothing rated and no open session: a tier change's limits checked on the fees alone
NO_USAGE = InMemoryMonthToDate(InMemoryAccountDirectory())


def _start(session: SessionRecord) -> tuple[int, str, str]:
    return session.start_ms, session.room_sid, session.participant_sid


@dataclass
class InMemorySessionHistory:
    by_account: dict[str, list[SessionRecord]] = field(default_factory=dict)

    def add(self, account_id: str, *sessions: SessionRecord) -> None:
        self.by_account.setdefault(account_id, []).extend(sessions)

    def sessions(self, account_id: str, period: str) -> list[SessionRecord]:
        return [s for s in self.by_account.get(account_id, []) if s.parts_in(period) or s.is_open]

    def all_sessions(self, account_id: str) -> Iterator[SessionRecord]:
        return iter(list(self.by_account.get(account_id, [])))

    def sessions_from(self, account_id: str, since_ms: int, limit: int) -> SessionsPage:
        """The DynamoDB adapter's rule: the first ``limit`` begun from ``since_ms``, and the rest of the last one's
        millisecond."""
        listed = sorted((s for s in self.by_account.get(account_id, []) if s.start_ms >= since_ms), key=_start)
        page = listed[:limit]
        page += [s for s in listed[limit:] if page and s.start_ms == page[-1].start_ms]
        left = listed[len(page) :]
        return SessionsPage(tuple(page), left[0].start_ms if left else None)

    def pseudonymise(self, account_id: str, pseudonym: Callable[[str], str], began_before: datetime) -> int:
        changed = 0
        kept = []
        before_ms = int(began_before.timestamp() * 1000)
        for session in self.by_account.get(account_id, []):
            new = pseudonym(session.identity) if session.start_ms < before_ms else session.identity
            changed += new != session.identity
            kept.append(replace(session, identity=new))
        self.by_account[account_id] = kept
        return changed


@dataclass
class InMemoryMembers:
    stored: dict[tuple[str, str], Member] = field(default_factory=dict)

    def members(self, account_id: str) -> list[Member]:
        return [m for (account, _), m in sorted(self.stored.items()) if account == account_id]

    def member(self, account_id: str, user: str) -> Member | None:
        return self.stored.get((account_id, user))

    def add(self, member: Member) -> None:
        key = (member.account_id, member.user)
        found = self.stored.get(key)
        if found is not None and (found.active or found.invited_at(member.added_at)):
            raise ConflictError(f"{member.user!r} is already a member or invited")
        self.stored[key] = member

    def accept(self, account_id: str, user: str, now: datetime) -> Member:
        found = self.stored.get((account_id, user))
        if found is None or not found.invited_at(now):
            raise NotFoundError(f"{user!r} has no open invitation")
        accepted = replace(found, status=MemberStatus.ACTIVE, added_at=now, expires_at=None)
        self.stored[(account_id, user)] = accepted
        return accepted

    def decline(self, account_id: str, user: str) -> None:
        found = self.stored.get((account_id, user))
        if found is None or found.active:
            raise NotFoundError(f"{user!r} has no invitation")
        del self.stored[(account_id, user)]

    def remove(self, account_id: str, user: str, keeping_owner: str | None = None) -> None:
        if (account_id, user) not in self.stored:
            raise NotFoundError(f"{user!r} is not a member")
        if keeping_owner is not None:
            kept = self.stored.get((account_id, keeping_owner))
            if kept is None or kept.role is not Role.OWNER or not kept.active:
                raise ConflictError(f"{user!r} was not removed: the account's owners changed meanwhile; retry")
        del self.stored[(account_id, user)]

    def withdraw(self, account_id: str, user: str) -> None:
        found = self.stored.get((account_id, user))
        if found is None:
            raise NotFoundError(f"{user!r} is not invited")
        if found.active:
            raise ConflictError(f"{user!r} accepted the invitation meanwhile; retry")
        del self.stored[(account_id, user)]

    def accounts_of(self, user: str) -> list[Member]:
        return [m for (_, member_user), m in sorted(self.stored.items()) if member_user == user]

    def pseudonymise(self, account_id: str, pseudonym: Callable[[str], str]) -> int:
        changed = 0
        for key, member in list(self.stored.items()):
            if key[0] == account_id and pseudonym(member.email) != member.email:
                self.stored[key] = replace(member, email=pseudonym(member.email))
                changed += 1
        return changed


@dataclass
class RecordingPaymentPages:
    calls: list[tuple[str, ...]] = field(default_factory=list)

    def customer(self, account_id: str, email: str | None, name: str | None) -> str:
        self.calls.append(("customer", account_id))
        return f"cus_{account_id}"

    def bring_details(self, customer_id: str, email: str | None, name: str | None) -> None:
        self.calls.append(("bring_details", customer_id, email or "", name or ""))

    def setup_url(self, customer_id: str, account_id: str, success_url: str, cancel_url: str) -> str:
        self.calls.append(("setup", customer_id, account_id))
        return f"https://checkout.test/{customer_id}"

    def portal_url(self, customer_id: str, return_url: str) -> str:
        self.calls.append(("portal", customer_id))
        return f"https://portal.test/{customer_id}"
