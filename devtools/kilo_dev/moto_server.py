"""The local stack's moto server: ``python -m kilo_dev.moto_server -H 127.0.0.1 -p PORT`` (moto 5.2's own server, with
three bounds on what it keeps, two speed-ups and a fix; the causes and the measurements are in docs/decisions.md, D38,
D443 and D448).

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

Two costs per request, paid on the local stack's critical path (the demo waits for each answer):

4. **The package listing.** The dispatcher lists moto's package folder on every request (~0.5 ms); here once.
5. **The response serializer.** moto writes every answer by walking botocore's shape of it, looking each member up
   under several spellings: ~0.8 ms per DynamoDB item (a 20-item Query 17 ms). Here the data-plane answers the local
   stack makes by the thousand (``FAST_JSON_OPERATIONS``) are written straight from their shape with ``json.dumps``
   (``shaped``: the same members, base64 blobs, epoch timestamps); any other answer, an error, or a result that is
   not plain data keeps moto's serializer. ``KILO_MOTO_SERIALIZER=verify`` answers with moto's serializer and a 500
   wherever the two differ (the e2e test runs every operation so).

And one fix, also made in-process for the tests (tests/conftest.py, D448):

6. **Stream records written at once.** moto numbers a stream record (``len(items)`` + the shard's start) before it
   builds it and appends it after; two writes served at once (the usage route writes a batch's events in parallel)
   read the same length and their records share a number. A reader's next iterator starts at the last number + 1,
   which moto reads as a place in the list: the second record of the pair, again, on every page until another record
   lands. Here a record takes the number of the place it lands at (``NumberedRecords``).

It also ends itself when the process that started it is gone (killed before it could stop the server).
"""

from __future__ import annotations

import base64
import calendar
import copy
import json
import os
import sys
import threading
import time
import weakref
from collections import OrderedDict
from collections.abc import Iterator
from datetime import datetime
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


_APPENDING = threading.Lock()  # one for every shard: a record's number and its place are taken together


class NumberedRecords(list[Any]):
    """A stream shard's records (``StreamShard.items``): ``append`` gives a record the sequence number of the place it
    lands at (the shard's first number + its index), whatever number moto gave it while it built it."""

    def __init__(self, start: int) -> None:
        super().__init__()
        self.start = start

    def append(self, record: Any) -> None:
        with _APPENDING:
            record.record["dynamodb"]["SequenceNumber"] = str(self.start + len(self))
            super().append(record)


def number_stream_records_where_they_land() -> None:
    """Each stream shard made from now on keeps its records in ``NumberedRecords`` (D448): this server, and the tests'
    in-process moto (tests/conftest.py's ``aws``)."""
    from moto.dynamodb.models.table import StreamShard  # noqa: PLC0415

    original_init = StreamShard.__init__

    def __init__(self: Any, account_id: str, table: Any) -> None:  # noqa: N807
        original_init(self, account_id, table)
        self.items = NumberedRecords(self.starting_sequence_number)

    StreamShard.__init__ = __init__  # type: ignore[method-assign]


def _modules_listed_once() -> None:
    """moto's dispatcher lists its package folder (``os.listdir`` and an ``isdir`` per entry) on every request, under
    its lock; the list never changes while the server runs."""
    from moto import backends  # noqa: PLC0415

    listed = frozenset(backends.list_of_moto_modules())
    backends.list_of_moto_modules = lambda: listed


# the data-plane answers the local stack makes by the thousand; everything else keeps moto's own serializer
FAST_JSON_OPERATIONS = {
    "dynamodb": frozenset({"GetItem", "Query", "Scan", "BatchGetItem", "PutItem", "UpdateItem", "DeleteItem",
                           "TransactGetItems", "TransactWriteItems", "BatchWriteItem"}),
    "dynamodbstreams": frozenset({"GetRecords", "GetShardIterator", "DescribeStream"}),
}  # fmt: skip
SERIALIZER_ENV = "KILO_MOTO_SERIALIZER"  # "verify": answer with moto's serializer, and a 500 where the two differ


class NotPlainError(Exception):
    """A result that is not plain data of its shape (an object, a key moto's serializer would have to look up under
    another spelling): moto's own serializer answers it."""


def shaped(value: Any, shape: Any) -> Any:
    """``value`` (a moto result: dicts, lists, bytes, datetimes) as moto's JSON serializer writes it for botocore's
    ``shape``: members outside the shape and ``None`` left out, blobs in base64, timestamps in epoch seconds with the
    milliseconds kept."""
    kind = shape.type_name
    if kind == "structure":
        if not isinstance(value, dict):
            raise NotPlainError(shape.name)
        members = shape.members
        if any(key not in members and ("_" in key or key[:1].islower()) for key in value):
            raise NotPlainError(shape.name)
        return {key: shaped(item, members[key]) for key, item in value.items() if key in members and item is not None}
    if kind == "list":
        return [shaped(item, shape.member) for item in value]
    if kind == "map":
        return {key: shaped(item, shape.value) for key, item in value.items() if item is not None}
    if kind == "blob":
        return base64.b64encode(value.encode() if isinstance(value, str) else value).decode()
    if kind == "timestamp":
        if not isinstance(value, datetime):
            raise NotPlainError(shape.name)
        stamp = calendar.timegm(value.timetuple())
        return stamp + (value.microsecond // 1000) / 1000.0 if value.microsecond else stamp
    return value


Answer = tuple[int, dict[str, Any], Any]  # status, headers, body (moto's own body: str or bytes)


def fast_answer(result: Any, service: str, operation: Any) -> Answer | None:
    """The answer for a plain result of a data-plane operation, written straight from its shape (json.dumps), or
    ``None``: moto's serializer answers (walking the shape with alias lookups costs ~0.8 ms per item: a Query of 20
    items took 17 ms, 6 ms this way)."""
    if isinstance(result, Exception) or str(operation.name) not in FAST_JSON_OPERATIONS.get(service, ()):
        return None
    try:
        body = json.dumps(shaped(result, operation.output_shape))
    except NotPlainError:
        return None
    content_type = f"application/x-amz-json-{operation.service_model.metadata['jsonVersion']}"
    return 200, {"Content-Type": content_type}, body


def checked(slow: Answer, fast: Answer) -> Answer:
    """``slow`` (moto's own answer) where the fast one says the same, else a 500 naming both."""
    if slow[:2] == fast[:2] and json.loads(slow[2]) == json.loads(fast[2]):
        return slow
    message = f"the fast serializer differs from moto's: moto {slow!r}, fast {fast!r}"
    return (
        500,
        {"Content-Type": slow[1].get("Content-Type", "application/json")},
        json.dumps({"__type": "SerializerMismatch", "message": message}),
    )


def _fast_json() -> None:
    from moto.core.responses import ActionResult  # noqa: PLC0415

    original = ActionResult.execute_result
    verify = os.environ.get(SERIALIZER_ENV) == "verify"

    def execute_result(self: Any, context: Any) -> Any:
        fast = fast_answer(self.result, str(context.service_model.service_name), context.operation_model)
        if fast is None:
            return original(self, context)
        return checked(original(self, context), fast) if verify else fast

    ActionResult.execute_result = execute_result  # type: ignore[method-assign]


def bound_moto() -> None:
    """Apply the three bounds, the two speed-ups and the fix to moto in this process (before any backend is used)."""
    _track_weakly()
    _transactions_in_place()
    _expiring_iterators()
    number_stream_records_where_they_land()
    _modules_listed_once()
    _fast_json()


def main(argv: list[str] | None = None) -> None:
    exit_with_parent()
    bound_moto()
    from moto.server import main as moto_main  # noqa: PLC0415

    moto_main(argv if argv is not None else sys.argv[1:])


if __name__ == "__main__":
    main()
