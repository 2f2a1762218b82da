"""In-memory fakes of the ports, for logic tests. Each is held to the same contract suite as its real adapter."""

from __future__ import annotations

import threading

from kilo_billing.events import KEY, SORT_KEY, Item
from kilo_webhook_ingest.store import PutResult, StoreUnavailableError


class InMemoryEventStore:
    def __init__(self) -> None:
        self.items: dict[tuple[str, str], Item] = {}
        self.writes = 0
        self.failing = False
        self._lock = threading.Lock()

    def put_new(self, item: Item) -> PutResult:
        with self._lock:
            self.writes += 1
            if self.failing:
                raise StoreUnavailableError("injected failure")
            key = (str(item[KEY]["S"]), str(item[SORT_KEY]["S"]))
            if key in self.items:
                return PutResult(stored=False, existing=self.items[key])
            self.items[key] = item
            return PutResult(stored=True)
