"""In-memory fakes of the alerts ports (the ledger's DynamoDB adapter runs the same contract suite)."""

from __future__ import annotations

from dataclasses import replace

from kilo_alerts.model import Delivery, Outcome
from kilo_alerts.ports import SendFailedError, SendRefusedError


def _key(delivery: Delivery) -> tuple[str, str, str, str, str]:
    return (delivery.account_id, delivery.period, delivery.kind, delivery.key, delivery.channel.value)


class InMemoryLedger:
    def __init__(self) -> None:
        self.items: dict[tuple[str, str, str, str, str], tuple[Delivery, bool, int]] = {}  # delivery, pending, claimed

    def claim(self, delivery: Delivery, lease_ms: int) -> int | None:
        found = self.items.get(_key(delivery))
        if found is not None:
            stored, pending, claimed_at = found
            stale = pending and claimed_at < delivery.at_ms - lease_ms
            if not (stored.outcome is Outcome.RETRY and not pending) and not stale:
                return None
        attempts = (found[0].attempts + 1) if found is not None else 1
        self.items[_key(delivery)] = (replace(delivery, attempts=attempts, outcome=Outcome.RETRY), True, delivery.at_ms)
        return attempts

    def record(self, delivery: Delivery) -> None:
        self.items[_key(delivery)] = (delivery, False, delivery.at_ms)

    def release(self, delivery: Delivery) -> None:
        self.items[_key(delivery)] = (replace(delivery, outcome=Outcome.RETRY), False, delivery.at_ms)

    def deliveries(self, account_id: str, period: str | None = None) -> list[Delivery]:
        return sorted(
            (d for d, _, _ in self.items.values() if d.account_id == account_id and period in (None, d.period)),
            key=lambda d: (d.period, d.kind, d.key, d.channel.value),
        )


class ScriptedMailer:
    """Sends into ``sent``; ``failures`` are raised first, one per call."""

    def __init__(self, *failures: Exception) -> None:
        self.failures = list(failures)
        self.sent: list[tuple[str, str, str, str]] = []

    def send(self, to: str, subject: str, html: str, text: str) -> str:
        if self.failures:
            raise self.failures.pop(0)
        self.sent.append((to, subject, html, text))
        return f"mail-{len(self.sent)}"


class ScriptedTexter:
    def __init__(self, *failures: Exception, opted_out: frozenset[str] = frozenset()) -> None:
        self.failures = list(failures)
        self.opted = opted_out
        self.sent: list[tuple[str, str]] = []

    def opted_out(self, phone: str) -> bool:
        return phone in self.opted

    def send(self, phone: str, text: str) -> str:
        if self.failures:
            raise self.failures.pop(0)
        self.sent.append((phone, text))
        return f"sms-{len(self.sent)}"


__all__ = ["InMemoryLedger", "ScriptedMailer", "ScriptedTexter", "SendFailedError", "SendRefusedError"]
