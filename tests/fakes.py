"""In-memory fakes of the ports, for logic tests. Each is held to the same contract suite as its real adapter."""

from __future__ import annotations

import threading
from collections.abc import Iterable

from kilo_billing.accounts import AccountExistsError, AccountProfile, UnknownAccountError
from kilo_billing.events import KEY, SORT_KEY, Item, ItemTooLargeError, check_item_size
from kilo_webhook_ingest.model import UnstorableEventError, UsageClient
from kilo_webhook_ingest.ports import PutResult, StorageUnavailableError

DYNAMODB_ITEM_LIMIT = 409_600  # "400 KB": what DynamoDB itself refuses above


class InMemoryEventStore:
    """``EventStore`` in memory; held to tests/contract/test_event_store_contract.py with the DynamoDB adapter."""

    def __init__(self) -> None:
        self.items: dict[tuple[str, str], Item] = {}
        self.writes = 0
        self.failing = False
        self._lock = threading.Lock()

    def put_new(self, item: Item) -> PutResult:
        with self._lock:
            self.writes += 1
            if self.failing:
                raise StorageUnavailableError("injected failure")
            try:
                check_item_size(item, DYNAMODB_ITEM_LIMIT)
            except ItemTooLargeError as exc:
                raise UnstorableEventError("event_not_storable", "the event store refuses this event") from exc
            key = (str(item[KEY]["S"]), str(item[SORT_KEY]["S"]))
            if key in self.items:
                return PutResult(stored=False, existing=self.items[key])
            self.items[key] = item
            return PutResult(stored=True)


class StaticSecretSource:
    """``SecretSource`` with fixed secrets (the Secrets Manager adapter is tested on moto in the integration suites)."""

    def __init__(
        self,
        livekit: dict[str, str] | None = None,
        usage: dict[str, UsageClient] | None = None,
        stripe: list[str] | None = None,
    ) -> None:
        self._livekit = livekit or {}
        self._usage = usage or {}
        self._stripe = stripe or []

    def livekit_keys(self) -> dict[str, str]:
        return self._livekit

    def usage_client(self, client_id: str) -> UsageClient | None:
        return self._usage.get(client_id)

    def stripe_webhook_secrets(self) -> list[str]:
        return self._stripe


class InMemoryUsageRepository:
    """The rating repository port in memory: same transaction semantics (all-or-nothing, version conditions)."""

    def __init__(self) -> None:

        self.events: dict[str, dict[str, object]] = {}  # room sid -> event id -> LiveKitEventRecord
        self.usage_rated: set[tuple[str, str]] = set()
        self.usage_known: set[tuple[str, str]] = set()
        self.sessions: dict[tuple[str, str], object] = {}
        self.counters: dict[tuple[str, str], dict[tuple[int, str], int]] = {}
        self.late: dict[tuple[str, str], dict[str, int]] = {}
        self.invoiced: set[tuple[str, str]] = set()
        self.thresholds: dict[tuple[str, str], set[str]] = {}
        self.profile_overrides: dict[str, AccountProfile] = {}
        self.writes = 0
        self.fail_commit_after: int | None = None  # simulate a crash after this many transactions
        self._transactions = 0

    # the events table side (what ingest writes)
    def store_event(self, event: object) -> None:
        from kilo_billing.events import LiveKitEventRecord, UsageEventRecord  # noqa: PLC0415

        if isinstance(event, LiveKitEventRecord):
            self.events.setdefault(event.room_sid, {}).setdefault(event.event_id, event)
        elif isinstance(event, UsageEventRecord):
            self.usage_known.add(event.key)

    def room_events(self, room_sid: str) -> list[object]:
        return list(self.events.get(room_sid, {}).values())

    def stored_sessions(self, room_sid: str) -> dict[str, object]:
        return {sid: stored for (room, sid), stored in self.sessions.items() if room == room_sid}

    def profiles(self, accounts: object) -> dict[str, object]:
        from kilo_rate_usage.model import AccountProfile  # noqa: PLC0415

        return {a: self.profile_overrides.get(a) or AccountProfile.default(a) for a in set(accounts)}  # type: ignore[call-overload]

    def aggregates(self, keys: object) -> dict[tuple[str, str], object]:
        from kilo_rate_usage.model import Aggregate  # noqa: PLC0415

        result = {}
        for key in set(keys):  # type: ignore[call-overload]
            result[key] = Aggregate(
                key[0],
                key[1],
                dict(self.counters.get(key, {})),
                dict(self.late.get(key, {})),
                set(self.thresholds.get(key, set())),
                key in self.invoiced,
            )
        return result

    def unrated_usage(self, records: list[object]) -> list[object]:
        unique = {record.key: record for record in records}  # type: ignore[attr-defined]
        return [record for key, record in unique.items() if key not in self.usage_rated]

    def commit(self, unit: object, now_ms: int) -> int:
        from kilo_rate_usage.repository import ConflictError, by_aggregate  # noqa: PLC0415

        self._transactions += 1
        if self.fail_commit_after is not None and self._transactions > self.fail_commit_after:
            raise RuntimeError("simulated crash before this transaction")
        for change in unit.sessions:  # type: ignore[attr-defined]
            key = (change.new.session.room_sid, change.new.session.participant_sid)
            current = self.sessions.get(key)
            if (current.version if current is not None else None) != change.old_version:  # type: ignore[attr-defined]
                raise ConflictError("session version")
        for usage in unit.usage:  # type: ignore[attr-defined]
            if usage.record.key in self.usage_rated:
                raise ConflictError("usage already rated")
        for change in unit.sessions:  # type: ignore[attr-defined]
            self.sessions[(change.new.session.room_sid, change.new.session.participant_sid)] = change.new
        for usage in unit.usage:  # type: ignore[attr-defined]
            self.usage_rated.add(usage.record.key)
        grouped = by_aggregate(unit.deltas())  # type: ignore[attr-defined]
        for key, counters in grouped.items():
            target = self.counters.setdefault(key, {})
            for counter, quantity in counters.items():
                target[counter] = target.get(counter, 0) + quantity
                if key in self.invoiced:
                    late = self.late.setdefault(key, {})
                    late[counter[1]] = late.get(counter[1], 0) + quantity
        written = len(unit.sessions) + len(unit.usage) + len(grouped)  # type: ignore[attr-defined]
        self.writes += written
        return written

    def add_thresholds(self, account: str, period: str, markers: list[str]) -> None:
        from kilo_rate_usage.repository import ConflictError  # noqa: PLC0415

        existing = self.thresholds.setdefault((account, period), set())
        if existing & set(markers):
            raise ConflictError("threshold already recorded")
        existing.update(markers)
        self.writes += 1

    def open_sessions(self, account: str | None = None) -> list[object]:
        return [
            stored
            for stored in self.sessions.values()
            if stored.session.is_open and (account is None or stored.session.account == account)  # type: ignore[attr-defined]
        ]

    def totals(self, account: str, period: str) -> dict[str, int]:
        result: dict[str, int] = {}
        for (_, meter), quantity in self.counters.get((account, period), {}).items():
            result[meter] = result.get(meter, 0) + quantity
        return {meter: quantity for meter, quantity in result.items() if quantity}


class RecordingPublisher:
    def __init__(self) -> None:
        self.published: list[tuple[str, dict[str, object]]] = []

    def publish(self, detail_type: str, detail: dict[str, object]) -> None:
        self.published.append((detail_type, detail))


class InMemoryAccountDirectory:
    """``kilo_billing.accounts.AccountDirectory`` in memory; held to tests/contract/test_account_directory.py."""

    def __init__(self, *profiles: AccountProfile) -> None:
        self.profiles: dict[str, AccountProfile] = {profile.account_id: profile for profile in profiles}
        self.reads = 0

    def registered(self, account_ids: Iterable[str]) -> dict[str, AccountProfile]:
        self.reads += 1
        return {a: self.profiles[a] for a in set(account_ids) if a in self.profiles}

    def register(self, profile: AccountProfile) -> None:
        if profile.account_id in self.profiles:
            raise AccountExistsError(profile.account_id)
        self.profiles[profile.account_id] = profile

    def save(self, profile: AccountProfile) -> None:
        if profile.account_id not in self.profiles:
            raise UnknownAccountError(profile.account_id)
        self.profiles[profile.account_id] = profile
