"""The usage API's models: a usage client (its secrets and the accounts it may bill) and a batch's outcome.

Apart from ``model.py`` so that the LiveKit and Stripe routes, which never see usage, do not create these classes at
their cold start. The client and an item's outcome are NamedTuples (~0.1 ms to create, a frozen dataclass ~0.5 ms:
D162); the batch's outcome stays a dataclass (its ``count`` would shadow the tuple's method).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, NamedTuple

UsageStatus = Literal["accepted", "duplicate", "conflict", "not_stored"]
ALL_ACCOUNTS: tuple[str, ...] = ("*",)


class UsageClient(NamedTuple):
    """A usage client's signing secrets (several during rotation) and the accounts it may bill (``*`` = every
    registered account)."""

    secrets: tuple[str, ...]
    accounts: tuple[str, ...] = ALL_ACCOUNTS

    @property
    def all_accounts(self) -> bool:
        return self.accounts == ALL_ACCOUNTS

    def may_bill(self, account_id: str) -> bool:
        return self.all_accounts or account_id in self.accounts


class UsageItemOutcome(NamedTuple):
    """What became of one event of the batch; its index in the request is its index in ``UsageOutcome.items``."""

    idempotency_key: str
    status: UsageStatus


@dataclass(frozen=True, slots=True)
class UsageOutcome:
    items: tuple[UsageItemOutcome, ...]

    def count(self, status: UsageStatus) -> int:
        return sum(1 for item in self.items if item.status == status)

    @property
    def complete(self) -> bool:
        return self.count("not_stored") == 0


class UsageNotStoredError(Exception):
    """Part of a valid batch could not be stored (store failure or too little time left): ``outcome`` says which
    items were stored; resending the whole batch is safe (stored items come back as duplicates)."""

    def __init__(self, outcome: UsageOutcome, cause: BaseException | None = None) -> None:
        super().__init__(f"{outcome.count('not_stored')} of {len(outcome.items)} usage events not stored")
        self.outcome = outcome
        self.cause = cause
