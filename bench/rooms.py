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
import resource
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench import write_section
from bench.room_size import room_bodies

ROOT = Path(__file__).resolve().parents[1]
NOW_MS = 1_794_800_000_000
BEFORE = {  # recorded on this machine before the rework: CPU ms/event at 50 % / 75 %, writes
    2: (0.42, 0.37, 2.3),
    20: (1.01, 1.68, 17.3),
    200: (22.8, 45.5, 200),
    1000: (446, 936, 1000),
}
BEFORE_SPLIT = {  # the one-item state (commit 9b0e38c, 2026-11-30): codec CPU ms/event 50 % / 75 %, whole room (s), KB
    2: (0.43, 0.42, 0.01, 0.2),
    20: (0.35, 0.71, 0.04, 0.8),
    200: (1.29, 1.70, 0.93, 4.3),
    1000: (7.45, 10.07, 26.85, 17.5),
    5000: (49.56, 65.99, None, 78.0),
}
BEFORE_SPLIT_MOTO = {  # the one-item state through moto: CPU ms/event 50 % / 75 %, state item KB at 75 %
    (2, 1): (16.8, 20.3, 0.2),
    (2, 100): (4.4, 7.1, 0.2),
    (20, 1): (12.6, 25.2, 0.6),
    (20, 100): (2.0, 4.3, 0.2),
    (200, 1): (23.8, 14.6, 4.7),
    (200, 100): (1.2, 3.7, 0.7),
    (1000, 1): (16.9, 19.1, 23.0),
    (1000, 100): (1.2, 4.9, 20.6),
    (5000, 1): (169.4, 223.1, 107.8),
    (5000, 100): (1.6, 3.5, 108.2),
}
BEFORE_LOADING = {  # before a batch loaded only the participants it moves past the horizon (commit 4890adf, the
    # previous run of this benchmark): items read per event, codec, at 75 % and over the whole room in 1-event batches
    2: (5.2, 4.0),
    20: (7.5, 4.3),
    200: (7.7, 4.7),
    1000: (6.2, 6.3),
    5000: (6.2, 14.8),
}
BEFORE_LOADING_MOTO = {  # the same, through moto: items read per event at 50 % / 75 % (n = 5,000 was not run)
    (2, 1): (3.86, 4.25),
    (2, 100): (0.86, 1.50),
    (20, 1): (2.40, 6.40),
    (20, 100): (0.70, 2.04),
    (200, 1): (3.50, 3.80),
    (200, 100): (0.58, 1.99),
    (1000, 1): (4.40, 4.00),
    (1000, 100): (0.64, 1.97),
}


def _fake_rater(codec: bool) -> tuple[Any, Callable[[list[Any]], int]]:
    from kilo_billing.catalog import default_catalog  # noqa: PLC0415
    from kilo_rate_usage.logic import rate_batch  # noqa: PLC0415
    from kilo_rate_usage.model import AttributionRule, RatingConfig  # noqa: PLC0415
    from tests.fakes import CountingRepository, InMemoryUsageRepository, RecordingPublisher  # noqa: PLC0415

    config = RatingConfig(AttributionRule(), default_catalog().for_period)
    fake = InMemoryUsageRepository()
    fake.state_codec = codec  # False: the logic alone; True: the state item's JSON + zlib, as the adapter pays it
    repo, publisher = CountingRepository(fake), RecordingPublisher()

    def rate(batch: list[Any]) -> int:
        for record in batch:
            repo.store_event(record)  # ingest stored it before the stream delivered it
        return rate_batch(batch, [], repo, publisher, config, NOW_MS).writes  # type: ignore[arg-type]

    return repo, rate


def in_process(n: int, sample: int, codec: bool = False, whole: bool = True) -> dict[str, float]:
    from kilo_dev import livekit_events as lk  # noqa: PLC0415

    records = [lk.to_record(body) for body in room_bodies(n)]
    result: dict[str, float] = {"events": len(records)}
    for size in (1, 100, 500) if whole else (500,):
        repo, rate = _fake_rater(codec)
        total = worst = 0.0
        writes = 0
        for i in range(0, len(records), size):
            start = time.process_time()
            writes += rate(records[i : i + size])
            spent = time.process_time() - start
            total, worst = total + spent, max(worst, spent)
        result[f"total_s_{size}"] = total
        result[f"worst_ms_{size}"] = worst * 1000
        result[f"writes_{size}"] = writes / len(records)
        result[f"reads_{size}"] = repo.items_read / len(records)
        result[f"rebuilds_{size}"] = repo.rebuilds
    for fraction in (0.5, 0.75):
        repo, rate = _fake_rater(codec)
        k = int(len(records) * fraction)
        for i in range(0, k, 500):
            rate(records[i : min(k, i + 500)])
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
        if fraction == 0.5:
            result["state_kb"] = _state_kb(repo.repo, records[0].room_sid)
    result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return result


def _state_kb(repo: Any, room_sid: str) -> float:
    """The stored header item's compressed size (at the 50 % mark: nearly everyone is in the room)."""
    from kilo_rate_usage import items  # noqa: PLC0415

    state = repo.states.get(room_sid)
    return len(items.state_to_item(state, 1, "g")["state_zlib"]["B"]) / 1000 if state is not None else 0.0


def through_moto(n: int, sample: int, size: int = 1) -> dict[str, float]:
    """Batches of ``size`` through the real handler against moto (mock_aws, the template's tables), ``sample`` of them
    at the 50 % / 75 % marks. The events are stored as the stream delivers them (ingest keeps ahead by one batch).
    moto's TransactWriteItems copies the whole table per item it writes: the local stack's bound
    (``kilo_dev.moto_server``, the named items only) is applied, else the figures would be moto's."""
    import os  # noqa: PLC0415

    import boto3  # noqa: PLC0415
    from moto import mock_aws  # noqa: PLC0415

    from kilo_dev import livekit_events as lk  # noqa: PLC0415
    from kilo_dev import moto_server  # noqa: PLC0415
    from kilo_dev.template import Template, provision  # noqa: PLC0415

    moto_server._transactions_in_place()
    os.environ.update({"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION":
                       "us-east-1", "AWS_REGION": "us-east-1", "POWERTOOLS_METRICS_NAMESPACE": "KiloBilling",
                       "POWERTOOLS_LOG_LEVEL": "WARNING"})  # fmt: skip
    records = [lk.to_record(body) for body in room_bodies(n)]
    result: dict[str, float] = {}
    for fraction in (0.5, 0.75):
        with mock_aws():
            template = Template(parameters={"Stage": "bench"})
            clients = {name: boto3.client(name) for name in ("dynamodb", "dynamodbstreams", "events", "sqs", "sns")}
            provision(template, clients)
            os.environ.update(template.function_environment("RateUsageFunction"))
            from kilo_rate_usage import dependencies, settings  # noqa: PLC0415
            from kilo_rate_usage.handler import lambda_handler  # noqa: PLC0415

            settings.settings.cache_clear()
            dependencies.rating.cache_clear()
            events_table = template.physical_name("EventsTable")
            items = [record.to_item(2_000_000_000) for record in records]
            stream = [{"eventName": "INSERT", "dynamodb": {"Keys": {}, "NewImage": item}} for item in items]

            def store(first: int, last: int, items: list[Any] = items, table: str = events_table) -> None:
                for at in range(first, min(last, len(items)), 25):
                    writes = [{"PutRequest": {"Item": item}} for item in items[at : min(last, at + 25)]]
                    clients["dynamodb"].batch_write_item(RequestItems={table: writes})  # noqa: B023

            k = int(len(records) * fraction)
            context = _Context()
            for start in range(0, k, 500):
                store(start, min(k, start + 500))
                lambda_handler({"Records": stream[start : min(k, start + 500)]}, context)
            client = dependencies.rating().repo._client
            counts = _DynamoCounter()
            client.meta.events.register("after-call.dynamodb", counts.after)
            client.meta.events.register("provide-client-params.dynamodb", counts.before)
            cpu = worst = 0.0
            taken = 0
            for start in range(k, min(len(stream), k + sample * size), size):
                store(start, start + size)
                started = time.process_time()
                lambda_handler({"Records": stream[start : start + size]}, context)
                spent = time.process_time() - started
                cpu, worst, taken = cpu + spent, max(worst, spent), taken + len(stream[start : start + size])
            key = int(fraction * 100)
            result[f"cpu_ms_{key}"] = cpu * 1000 / taken
            result[f"worst_ms_{key}"] = worst * 1000
            result[f"reads_at_{key}"] = counts.read / taken
            result[f"writes_at_{key}"] = counts.written / taken
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
        if model.name == "TransactWriteItems":  # condition checks are not writes
            self.written += sum(1 for item in params.get("TransactItems", []) if "ConditionCheck" not in item)
        elif model.name == "BatchWriteItem":
            self.written += sum(len(requests) for requests in params.get("RequestItems", {}).values())
        elif model.name in ("PutItem", "UpdateItem", "DeleteItem"):
            self.written += 1


class _Context:
    function_name = "kilo-billing-bench"
    memory_limit_in_mb = 1024
    invoked_function_arn = "arn:aws:lambda:us-east-1:123456789012:function:kilo-billing-bench"
    aws_request_id = "bench"


def run(quick: bool = False) -> dict[int, dict[str, float]]:
    sys.path.insert(0, str(ROOT))
    sizes = (2, 20, 200) if quick else (2, 20, 200, 1000, 5000)
    logic: dict[int, dict[str, float]] = {}
    codec: dict[int, dict[str, float]] = {}
    for n in sizes:
        sample = 100 if n >= 200 else 20
        logic[n] = in_process(n, sample)
        print(n, "logic", {k: round(v, 3) for k, v in logic[n].items()}, flush=True)
        codec[n] = in_process(n, sample, codec=True)
        print(n, "codec", {k: round(v, 3) for k, v in codec[n].items()}, flush=True)
    moto: dict[tuple[int, int], dict[str, float]] = {}
    for n in sizes:
        for size in (1, 100):
            moto[(n, size)] = through_moto(n, sample=(5 if n >= 1000 else 10) if size == 1 else 2, size=size)
            print(n, size, "moto", {k: round(v, 3) for k, v in moto[(n, size)].items()}, flush=True)
    _write_doc(logic, codec, moto)
    return logic


def _write_doc(
    logic: dict[int, dict[str, float]],
    codec: dict[int, dict[str, float]],
    moto: dict[tuple[int, int], dict[str, float]],
) -> None:
    where = f"{time.strftime('%Y-%m-%d')}, {platform.machine()}, Python {platform.python_version()}"
    rows = []
    for n, r in logic.items():
        c = codec[n]
        old = BEFORE.get(n)
        was = f"{old[0]} / {old[1]} ms, {old[2]:g} w" if old else "—"
        split = BEFORE_SPLIT.get(n)
        was_split = (
            f"{split[0]} / {split[1]} ms, {f'{split[2]} s' if split[2] is not None else 'not run'}, {split[3]} KB"
            if split
            else "—"
        )
        reads_before = BEFORE_LOADING.get(n)
        was_reads = f"{reads_before[1]} ({reads_before[0]} at 75 %)" if reads_before else "—"
        rows.append(
            f"| {n:,} ({r['events']:,.0f}) | {was} | {was_split} | {was_reads} | {c['reads_1']:.1f} "
            f"({c['reads_at_75']:.1f} at 75 %) | {r['cpu_ms_50']:.2f} / {r['cpu_ms_75']:.2f} ms, "
            f"{r['writes_at_75']:.2f} w, {r['reads_at_75']:.1f} r | {c['cpu_ms_50']:.2f} / {c['cpu_ms_75']:.2f} ms, "
            f"{c['writes_at_75']:.2f} w, {c['reads_at_75']:.1f} r | "
            f"{r['total_s_1']:.2f} s / {c['total_s_1']:.2f} s ({c['writes_1']:.2f} w, {c['reads_1']:.1f} r per event, "
            f"{c['rebuilds_1']:.0f} rebuild) | {c['total_s_100']:.2f} s ({c['writes_100']:.2f} w, "
            f"{c['reads_100']:.2f} r) | {c['worst_ms_500']:.0f} ms | {c['state_kb']:.1f} KB | "
            f"{c['peak_rss_mb']:.0f} MB |"
        )
    moto_rows = []
    for (n, size), m in moto.items():
        old_moto = BEFORE_SPLIT_MOTO.get((n, size))
        was_moto = f"{old_moto[0]} / {old_moto[1]} ms, {old_moto[2]} KB" if old_moto else "—"
        reads_moto = BEFORE_LOADING_MOTO.get((n, size))
        was_reads = f"{reads_moto[0]:.2f} / {reads_moto[1]:.2f}" if reads_moto else "—"
        moto_rows.append(
            f"| {n:,} | {size} | {was_moto} | {m['cpu_ms_50']:.1f} / {m['cpu_ms_75']:.1f} ms | "
            f"{m['worst_ms_75']:.0f} ms | {was_reads} | {m['reads_at_50']:.2f} / {m['reads_at_75']:.2f} | "
            f"{m['writes_at_50']:.2f} / {m['writes_at_75']:.2f} | {m['state_kb_50']:.1f} / {m['state_kb_75']:.1f} KB |"
        )
    section = f"""## Rating at any room size (issue 10) — {where}

Workload `bench/room_size.py` (join + microphone, a camera for half, 10 % reconnects, everyone leaves, the room
finishes). *Before*: the code before the rework (measured on this machine by a script kept outside the repository).
*Before the split*: an earlier run (commit 9b0e38c: the whole room state in one item, JSON + zlib). *Before
loading less*: the previous run (commit 4890adf), when a batch loaded every participant the 5 s window's events
name. Now the state is a small header item plus one item per live participant (D42, D69), and a batch loads the
participants it names or moves past the horizon. Items read per event with the codec, over the whole room in
one-event batches (at the 75 % mark in brackets). *Logic*:
in-process against the in-memory repository keeping the state's objects; *codec*: the same, with the header and
participant items through the adapter's item codec (what the DynamoDB adapter pays). CPU per one-event batch at the
50 % / 75 % marks (`time.process_time` of this process: other work on the machine does not count, though it still
slows caches), 100-event samples from n = 200 on, 20 below; writes and items read per event at 75 %; the whole room
as one-event batches (logic / codec) and as batches of 100 (codec); the worst batch of 500 (the template's
BatchSize) over the whole room with the codec; the header item at the 50 % mark; the bench process's peak RSS after
that size (cumulative: an upper bound).

| participants (events) | before: CPU 50 / 75 %, writes | before the split: codec 50 / 75 %, whole room, state item \
| before loading less: items read per event | items read per event | logic at the marks | codec at the marks \
| whole room, 1-event batches | whole room, batches of 100 | worst batch of 500 | header item | peak RSS |
|---|---|---|---|---|---|---|---|---|---|---|---|
{chr(10).join(rows)}

Through the real handler against moto (`mock_aws`, the template's tables, events stored as the stream delivers them;
moto's whole-table copy per transaction item replaced by the local stack's bound, `kilo_dev.moto_server`): batches of
1 (5 or 10 sampled) and of 100 (2 sampled) right after the 50 % / 75 % marks. CPU includes moto's own work and
botocore; items read and written per event (condition checks not counted as writes); the header item's compressed
size.

| participants | batch | before the split: CPU 50 / 75 %, state item | CPU per event 50 / 75 % | worst batch at 75 % \
| before loading less: items read per event | items read per event | items written per event | header item |
|---|---|---|---|---|---|---|---|---|
{chr(10).join(moto_rows)}
"""
    write_section("rooms", section)
