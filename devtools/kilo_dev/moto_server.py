"""The local stack's moto server: ``python -m kilo_dev.moto_server -H 127.0.0.1 -p PORT`` (moto 5.2's own server, with
three bounds on what it keeps; the cause and the measurements are in docs/decisions.md).

moto's server never lets go of three things, so its memory grows with every request (7 GB after ~2,300 demo requests):

1. **Every model object ever created.** ``BaseModel.__new__`` appends each instance to its class's
   ``instances_tracked`` list (for the ``/moto-api/`` dashboard) and nothing removes it. DynamoDB makes model objects on
   every write and every read, and ``TransactWriteItems`` deep-copies the whole table - every item and every stream
   record - once per item it writes, before it starts (its rollback), so the list keeps a table per written item:
   memory grows with transaction items x table size. Here the list holds weak references: the dashboard still shows
   what is alive.
2. **Whole-table copies for rollback.** Those copies also cost CPU in proportion to the table, per item, and on a
   cancellation moto swaps a copy in as the table: stream iterators issued before then keep reading the old table's
   shard, which no longer receives records. Here the transaction snapshots only the items it names (at most 100) and
   the length of the stream, and a cancellation puts those back in place: same objects, and no stream record of the
   cancelled writes (as in DynamoDB).
3. **Every shard iterator.** Each ``GetRecords`` issues a new iterator that stays in a dict forever. Here iterators
   expire after 15 minutes, as in DynamoDB Streams, and at most 1,000 are kept (the local stack uses each one once).

It also ends itself when the process that started it is gone (killed before it could stop the server).
"""

from __future__ import annotations

import copy
import sys
import threading
import time
import weakref
from collections import OrderedDict
from collections.abc import Iterator
from typing import Any

from kilo_dev.processes import exit_with_parent

ITERATOR_LIFETIME_S = 15 * 60  # DynamoDB Streams: a shard iterator expires 15 minutes after it is issued
MAX_ITERATORS = 1_000


class WeakInstances:
    """``instances_tracked`` that does not keep its instances alive: ``append`` and iteration, as moto uses it."""

    def __init__(self) -> None:
        self._refs: list[weakref.ref[Any]] = []
        self._lock = threading.Lock()

    def append(self, instance: Any) -> None:
        try:
            ref = weakref.ref(instance)
        except TypeError:  # a model with __slots__ and no __weakref__: not shown on the dashboard
            return
        with self._lock:
            self._refs.append(ref)
            if len(self._refs) >= 1024 and len(self._refs).bit_count() == 1:  # now and then: drop the dead
                self._refs = [r for r in self._refs if r() is not None]

    def __iter__(self) -> Iterator[Any]:
        with self._lock:
            refs = list(self._refs)
        return (instance for instance in (ref() for ref in refs) if instance is not None)

    def __len__(self) -> int:
        return sum(1 for _ in self)


class ExpiringIterators(dict[str, Any]):
    """The streams backend's ``shard_iterators``: entries expire after 15 minutes; at most ``MAX_ITERATORS`` kept."""

    def __init__(self) -> None:
        super().__init__()
        self._issued: OrderedDict[str, float] = OrderedDict()

    def __setitem__(self, key: str, value: Any) -> None:
        now = time.monotonic()
        while self._issued and (
            len(self._issued) >= MAX_ITERATORS or now - next(iter(self._issued.values())) > ITERATOR_LIFETIME_S
        ):
            oldest, _ = self._issued.popitem(last=False)
            super().pop(oldest, None)
        self._issued[key] = now
        super().__setitem__(key, value)


_SHALLOW = threading.local()  # set while a transaction runs: "copying" a table returns the table itself


def _track_weakly() -> None:
    from moto.core.common_models import BaseModel  # noqa: PLC0415

    def __new__(cls: type[Any], *args: Any, **kwargs: Any) -> Any:  # noqa: N807 - replaces BaseModel.__new__
        instance = object.__new__(cls)
        tracked = cls.__dict__.get("instances_tracked")
        if not isinstance(tracked, WeakInstances):
            tracked = WeakInstances()
            cls.instances_tracked = tracked
        tracked.append(instance)
        return instance

    BaseModel.__new__ = __new__  # type: ignore[method-assign]


def _touched(backend: Any, transact_items: list[dict[str, Any]]) -> dict[str, tuple[Any, list[Any]]]:
    """Per table the transaction names: (table, [(hash key, range key)])."""
    touched: dict[str, tuple[Any, list[Any]]] = {}
    for entry in transact_items:
        try:
            op_type, op = next(iter(entry.items()))
            table = backend.tables[op["TableName"]]
            key = op["Item"] if op_type == "Put" else op["Key"]
            keys = backend.get_keys_value(table, key)
        except Exception:  # noqa: S112 - a malformed entry: moto rejects it before it writes anything
            continue
        touched.setdefault(op["TableName"], (table, []))[1].append(keys)
    return touched


def _snapshot(touched: dict[str, tuple[Any, list[Any]]]) -> list[tuple[Any, list[tuple[Any, Any, Any]], int]]:
    snapshots = []
    for table, keys in touched.values():
        items = [(h, r, copy.deepcopy(table.get_item(h, r))) for h, r in keys]
        stream = len(table.stream_shard.items) if table.stream_shard is not None else 0
        snapshots.append((table, items, stream))
    return snapshots


def _restore(snapshots: list[tuple[Any, list[tuple[Any, Any, Any]], int]]) -> None:
    for table, items, stream in snapshots:
        for hash_key, range_key, before in items:
            if range_key is not None:
                partition = table.items[hash_key]
                if before is None:
                    partition.pop(range_key, None)
                else:
                    partition[range_key] = before
            elif before is None:
                table.items.pop(hash_key, None)
            else:
                table.items[hash_key] = before
        if table.stream_shard is not None:
            del table.stream_shard.items[stream:]  # a cancelled transaction leaves no stream record


class _CopyForTransactions:
    """``copy`` as moto's DynamoDB backend module sees it: while a transaction runs, "copying" a table returns the table
    itself (moto's whole-table backup is replaced by the snapshot of the named items); everything else is copied."""

    def __init__(self, table_type: type[Any]) -> None:
        self._table_type = table_type

    def deepcopy(self, value: Any, memo: dict[int, Any] | None = None) -> Any:
        if getattr(_SHALLOW, "active", False) and isinstance(value, self._table_type):
            return value
        return copy.deepcopy(value, memo)

    def __getattr__(self, name: str) -> Any:
        return getattr(copy, name)


def _transactions_in_place() -> None:
    import moto.dynamodb.models as dynamodb_models  # noqa: PLC0415
    from moto.dynamodb.models.table import Table  # noqa: PLC0415

    original = dynamodb_models.DynamoDBBackend.transact_write_items

    def transact_write_items(self: Any, transact_items: list[dict[str, Any]]) -> Any:
        snapshots = _snapshot(_touched(self, transact_items))
        _SHALLOW.active = True
        try:
            return original(self, transact_items)
        except BaseException:
            _restore(snapshots)
            raise
        finally:
            _SHALLOW.active = False

    dynamodb_models.copy = _CopyForTransactions(Table)  # type: ignore[attr-defined,assignment]
    dynamodb_models.DynamoDBBackend.transact_write_items = transact_write_items  # type: ignore[method-assign]


def _expiring_iterators() -> None:
    from moto.dynamodbstreams.models import DynamoDBStreamsBackend  # noqa: PLC0415

    original_init = DynamoDBStreamsBackend.__init__

    def __init__(self: Any, region_name: str, account_id: str) -> None:  # noqa: N807
        original_init(self, region_name, account_id)
        self.shard_iterators = ExpiringIterators()

    DynamoDBStreamsBackend.__init__ = __init__  # type: ignore[method-assign]


def bound_moto() -> None:
    """Apply the three bounds to moto in this process (before any backend is used)."""
    _track_weakly()
    _transactions_in_place()
    _expiring_iterators()


def main(argv: list[str] | None = None) -> None:
    exit_with_parent()
    bound_moto()
    from moto.server import main as moto_main  # noqa: PLC0415

    moto_main(argv if argv is not None else sys.argv[1:])


if __name__ == "__main__":
    main()
