"""Rating at any room size (issue "Rating at any room size"): cost per event against the room's size.

The workload is ``bench.room_size`` (join + microphone, a camera for half, 10 % reconnects, everyone leaves, the room
finishes). Measured two ways:
- in-process against the in-memory repository (``tests.fakes``), the whole room as one-event batches and as batches
  of 100, plus one-event batches at the 50 % / 75 % marks (CPU per event, items read and written per event);
- through the real handler (``kilo_rate_usage.handler``) against moto's DynamoDB (mock_aws, tables from the
  template), a sample of one-event batches at the 50 % / 75 % marks (moto itself is slow: CPU there is mostly moto).
"""

from __future__ import annotations

import platform
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from bench import write_section
from bench.room_size import room_bodies

ROOT = Path(__file__).resolve().parents[1]
NOW_MS = 1_794_800_000_000
BEFORE = {  # recorded on this machine before the rework (.old_room_figures.py): CPU ms/event at 50 % / 75 %, writes
    2: (0.42, 0.37, 2.3),
    20: (1.01, 1.68, 17.3),
    200: (22.8, 45.5, 200),
    1000: (446, 936, 1000),
}
AFTER_COVERAGE = {2: (0.36, 0.46, 2.3), 20: (0.79, 1.17, 17.3), 200: (4.8, 6.5, 200), 1000: (21.0, 35.9, 1000)}


class CountingRepository:
    """The in-memory repository, counting the items each read returns or asks for (what DynamoDB would charge)."""

    def __init__(self, repo: Any) -> None:
        self.repo = repo
        self.items_read = 0
        self.rebuilds = 0  # batches that rebuilt a room from its events (no state yet, or not foldable)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.repo, name)

    def _count(self, found: Any) -> Any:
        self.items_read += len(found) if isinstance(found, list | dict) else (0 if found is None else 1)
        return found

    def room_state(self, room_sid: str) -> Any:
        return self._count(self.repo.room_state(room_sid))

    def sessions_of(self, room_sid: str, sids: Iterable[str]) -> Any:
        return self._count(self.repo.sessions_of(room_sid, sids))

    def room_events(self, room_sid: str) -> Any:
        self.rebuilds += 1
        return self._count(self.repo.room_events(room_sid))

    def stored_sessions(self, room_sid: str) -> Any:
        return self._count(self.repo.stored_sessions(room_sid))

    def aggregates(self, keys: Any) -> Any:
        return self._count(self.repo.aggregates(keys))

    def profiles(self, accounts: Any) -> Any:
        return self._count(self.repo.profiles(accounts))


def _fake_rater() -> tuple[CountingRepository, Callable[[list[Any]], int]]:
    from kilo_billing.catalog import default_catalog  # noqa: PLC0415
    from kilo_rate_usage.logic import rate_batch  # noqa: PLC0415
    from kilo_rate_usage.model import AttributionRule, RatingConfig  # noqa: PLC0415
    from tests.fakes import InMemoryUsageRepository, RecordingPublisher  # noqa: PLC0415

    config = RatingConfig(AttributionRule(), default_catalog().for_period)
    repo, publisher = CountingRepository(InMemoryUsageRepository()), RecordingPublisher()

    def rate(batch: list[Any]) -> int:
        for record in batch:
            repo.store_event(record)  # ingest stored it before the stream delivered it
        return rate_batch(batch, [], repo, publisher, config, NOW_MS).writes  # type: ignore[arg-type]

    return repo, rate


def in_process(n: int, sample: int) -> dict[str, float]:
    from kilo_dev import livekit_events as lk  # noqa: PLC0415

    records = [lk.to_record(body) for body in room_bodies(n)]
    result: dict[str, float] = {"events": len(records)}
    for size in (1, 100):
        repo, rate = _fake_rater()
        start = time.process_time()
        writes = sum(rate(records[i : i + size]) for i in range(0, len(records), size))
        result[f"total_s_{size}"] = time.process_time() - start
        result[f"writes_{size}"] = writes / len(records)
        result[f"reads_{size}"] = repo.items_read / len(records)
        result[f"rebuilds_{size}"] = repo.rebuilds
        if size == 1:
            result["state_kb"] = _state_kb(repo.repo, records[0].room_sid)
    for fraction in (0.5, 0.75):
        repo, rate = _fake_rater()
        k = int(len(records) * fraction)
        rate(records[:k])
        repo.items_read = 0
        cpu, writes = 0.0, 0
        taken = records[k : k + sample]
        for record in taken:
            start = time.process_time()
            writes += rate([record])
            cpu += time.process_time() - start
        key = int(fraction * 100)
        result[f"cpu_ms_{key}"] = cpu * 1000 / len(taken)
        result[f"writes_at_{key}"] = writes / len(taken)
        result[f"reads_at_{key}"] = repo.items_read / len(taken)
    return result


def _state_kb(repo: Any, room_sid: str) -> float:
    """The largest the room's state item got is not tracked; its size at the 75 % mark is measured in the moto run.
    Here: the stored state's compressed size at the end of the room."""
    from kilo_rate_usage import items  # noqa: PLC0415

    state = repo.states.get(room_sid)
    return len(items.state_to_item(state, 1)["state_zlib"]["B"]) / 1000 if state is not None else 0.0


def through_moto(n: int, sample: int) -> dict[str, float]:
    """One-event batches through the real handler against moto (mock_aws, the template's tables), at the 50 % / 75 %
    marks."""
    import os  # noqa: PLC0415

    import boto3  # noqa: PLC0415
    from moto import mock_aws  # noqa: PLC0415

    from kilo_dev import livekit_events as lk  # noqa: PLC0415
    from kilo_dev.template import Template, provision  # noqa: PLC0415

    os.environ.update({"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION":
                       "us-east-1", "AWS_REGION": "us-east-1", "POWERTOOLS_METRICS_NAMESPACE": "KiloBilling",
                       "POWERTOOLS_LOG_LEVEL": "WARNING"})  # fmt: skip
    records = [lk.to_record(body) for body in room_bodies(n)]
    result: dict[str, float] = {}
    for fraction in (0.5, 0.75):
        with mock_aws():
            template = Template(parameters={"Stage": "bench"})
            clients = {name: boto3.client(name) for name in ("dynamodb", "dynamodbstreams", "events", "sqs")}
            provision(template, clients)
            os.environ.update(template.function_environment("RateUsageFunction"))
            from kilo_rate_usage import dependencies, settings  # noqa: PLC0415
            from kilo_rate_usage.handler import lambda_handler  # noqa: PLC0415

            settings.settings.cache_clear()
            dependencies.rating.cache_clear()
            events_table = template.physical_name("EventsTable")
            stream: list[dict[str, Any]] = []
            for record in records:
                item = record.to_item(2_000_000_000)
                clients["dynamodb"].put_item(TableName=events_table, Item=item)
                stream.append({"eventName": "INSERT", "dynamodb": {"Keys": {}, "NewImage": item}})
            k = int(len(records) * fraction)
            context = _Context()
            for start in range(0, k, 500):
                lambda_handler({"Records": stream[start : min(k, start + 500)]}, context)
            client = dependencies.rating().repo._client
            counts = _DynamoCounter()
            client.meta.events.register("after-call.dynamodb", counts.after)
            client.meta.events.register("provide-client-params.dynamodb", counts.before)
            cpu = 0.0
            taken = stream[k : k + sample]
            for record in taken:
                started = time.process_time()
                lambda_handler({"Records": [record]}, context)
                cpu += time.process_time() - started
            key = int(fraction * 100)
            result[f"cpu_ms_{key}"] = cpu * 1000 / len(taken)
            result[f"reads_at_{key}"] = counts.read / len(taken)
            result[f"writes_at_{key}"] = counts.written / len(taken)
            state = (
                clients["dynamodb"]
                .get_item(
                    TableName=template.physical_name("UsageTable"),
                    Key={"pk": {"S": f"ROOM#{records[0].room_sid}"}, "sk": {"S": "STATE"}},
                )
                .get("Item", {})
            )
            result[f"state_kb_{key}"] = len(state.get("state_zlib", {}).get("B", b"")) / 1000
    return result


class _DynamoCounter:
    """DynamoDB items read (returned by GetItem, BatchGetItem, Query) and written (transaction items, puts, updates)."""

    def __init__(self) -> None:
        self.read = 0
        self.written = 0

    def after(self, parsed: dict[str, Any], model: Any, **_: Any) -> None:
        if model.name == "GetItem":
            self.read += 1 if parsed.get("Item") else 0
        elif model.name == "BatchGetItem":
            self.read += sum(len(found) for found in parsed.get("Responses", {}).values())
        elif model.name == "Query":
            self.read += len(parsed.get("Items", []))

    def before(self, params: dict[str, Any], model: Any, **_: Any) -> None:
        if model.name == "TransactWriteItems":
            self.written += len(params.get("TransactItems", []))
        elif model.name in ("PutItem", "UpdateItem"):
            self.written += 1


class _Context:
    function_name = "kilo-billing-bench"
    memory_limit_in_mb = 1024
    invoked_function_arn = "arn:aws:lambda:us-east-1:123456789012:function:kilo-billing-bench"
    aws_request_id = "bench"


def run(quick: bool = False) -> dict[int, dict[str, float]]:
    sys.path.insert(0, str(ROOT))
    sizes = (2, 20, 200) if quick else (2, 20, 200, 1000, 5000)
    results: dict[int, dict[str, float]] = {}
    for n in sizes:
        results[n] = in_process(n, sample=20)
        print(n, "in-process", {k: round(v, 3) for k, v in results[n].items()}, flush=True)
    moto: dict[int, dict[str, float]] = {}
    for n in sizes:
        moto[n] = through_moto(n, sample=5 if n >= 1000 else 10)
        print(n, "moto", {k: round(v, 3) for k, v in moto[n].items()}, flush=True)
    _write_doc(results, moto)
    return results


def _write_doc(results: dict[int, dict[str, float]], moto: dict[int, dict[str, float]]) -> None:
    where = f"{time.strftime('%Y-%m-%d')}, {platform.machine()}, Python {platform.python_version()}"
    rows = []
    for n, r in results.items():
        old = BEFORE.get(n)
        mid = AFTER_COVERAGE.get(n)
        was = f"{old[0]} / {old[1]} ms, {old[2]:g} writes" if old else "—"
        cov = f"{mid[0]} / {mid[1]} ms, {mid[2]:g} writes" if mid else "—"
        rows.append(
            f"| {n:,} ({r['events']:,.0f}) | {was} | {cov} | {r['cpu_ms_50']:.2f} / {r['cpu_ms_75']:.2f} ms, "
            f"{r['writes_at_75']:.2f} writes, {r['reads_at_75']:.2f} items read | {r['total_s_1']:.2f} s "
            f"({r['writes_1']:.2f} w, {r['reads_1']:.2f} r per event, {r['rebuilds_1']:.0f} rebuilds) | "
            f"{r['total_s_100']:.2f} s "
            f"({r['writes_100']:.2f} w, {r['reads_100']:.2f} r per event) |"
        )
    moto_rows = [
        f"| {n:,} | {m['cpu_ms_50']:.1f} / {m['cpu_ms_75']:.1f} ms | {m['reads_at_50']:.1f} / {m['reads_at_75']:.1f} "
        f"| {m['writes_at_50']:.1f} / {m['writes_at_75']:.1f} | {m['state_kb_50']:.1f} / {m['state_kb_75']:.1f} KB |"
        for n, m in moto.items()
    ]
    section = f"""## Rating at any room size (issue 10) — {where}

Workload `bench/room_size.py` (join + microphone, a camera for half, 10 % reconnects, everyone leaves, the room
finishes), rated in-process against the in-memory repository. *Before*: the code before the rework (re-sorting the
room's video intervals per session, every open session rewritten per event, the whole room re-read per batch);
*Coverage only*: after item 1 alone (intervals merged once per rebuild). *Now*: the room state (D42..3).
CPU per one-event batch at the 50 % / 75 % marks of the room's history (`time.process_time`), writes and items read
per event at 75 %; then the whole room as one-event batches and as batches of 100 (total CPU, writes and items read
per event).

| participants (events) | before: CPU 50 % / 75 %, writes | coverage only | now, at the marks | whole room, 1-event \
batches | whole room, batches of 100 |
|---|---|---|---|---|---|
{chr(10).join(rows)}

Through the real handler against moto (`mock_aws`, one-event batches at the 50 % / 75 % marks; the handler's CPU
includes moto's own work, serialising the state and botocore): CPU per event, DynamoDB items read and written per
event, and the room state item's compressed size.

| participants | CPU 50 % / 75 % | items read | items written | state item |
|---|---|---|---|---|
{chr(10).join(moto_rows)}"""
    write_section("rooms", section)
