"""Adapters of invoicing's ports on AWS: the close job queue (SQS), the run markers (usage table), the stored Stripe
events (events table, written by ingest). The ledger is ``kilo_billing.periods_store.DynamoLedgerStore``, the bus
``kilo_billing.publisher.EventBridgePublisher``, the card processor ``kilo_invoice.stripe_adapter``. Botocore errors
come out as ``kilo_billing.aws``'s domain errors (its ``call``), never read here."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any, Final

from kilo_billing.aws import StorageUnavailableError, call, put_if
from kilo_billing.events import decode_item
from kilo_billing.items import from_item, to_item
from kilo_billing.stripe_events import StripeEventRecord

SQS_BATCH: Final = 10  # SendMessageBatch takes at most 10 entries
RUN_PREFIX: Final = "CLOSE_RUN#"  # usage table: one item per period whose close was fanned out (no account_id)


def close_job(account_id: str, period: str, kind: str = "close") -> str:
    """A job's message body (the worker reads it back with ``parse_job``): a close, or an early-invoice check
    (``kind="early"``, progressive billing)."""
    values = {"account_id": account_id, "period": period} | ({"kind": kind} if kind != "close" else {})
    return json.dumps(values, separators=(",", ":"))


def parse_job(body: str) -> tuple[str, str, str]:
    """(account id, period, kind) of a job; ``kind`` is ``close`` unless the job says ``early``."""
    values = json.loads(body)
    account, period, kind = values["account_id"], values["period"], values.get("kind", "close")
    if not isinstance(account, str) or not isinstance(period, str) or kind not in ("close", "early"):
        raise ValueError("a job names account_id and period as strings, and kind close or early")
    return account, period, kind


class SqsCloseJobQueue:
    """``CloseJobQueue`` on SQS: batches of 10; a batch with a failed entry raises (the starter is rerun; jobs are
    idempotent, so the entries that did go are harmless twice)."""

    def __init__(self, client: Any, queue_url: str) -> None:
        self._client = client
        self._url = queue_url

    def send(self, jobs: Sequence[tuple[str, str]], kind: str = "close") -> None:
        for start in range(0, len(jobs), SQS_BATCH):
            entries = [
                {"Id": str(index), "MessageBody": close_job(account, period, kind)}
                for index, (account, period) in enumerate(jobs[start : start + SQS_BATCH])
            ]
            answer = call(self._client.send_message_batch, QueueUrl=self._url, Entries=entries)
            failed = answer.get("Failed") or []
            if failed:
                raise StorageUnavailableError(f"{len(failed)} close jobs not queued: {failed[0].get('Code')}")


class DynamoRunMarkers:
    """``RunMarkers`` in the usage table: ``CLOSE_RUN#<period>`` / ``RUN`` (written once, after the fan-out)."""

    def __init__(self, client: Any, table: str) -> None:
        self._client = client
        self._table = table

    def _key(self, period: str) -> dict[str, Any]:
        return to_item({"pk": RUN_PREFIX + period, "sk": "RUN"})

    def fanned_out(self, period: str) -> bool:
        found = call(self._client.get_item, TableName=self._table, Key=self._key(period), ConsistentRead=True)
        return "Item" in found

    def mark_fanned_out(self, period: str, accounts: int, at_ms: int) -> None:
        item = {**from_item(self._key(period)), "accounts": accounts, "at_ms": at_ms}
        put_if(self._client, self._table, to_item(item))  # not written: another run marked it first, the same fan-out


class DynamoStripeEvents:
    """``StripeEvents``: the verified Stripe event ingest stored (``kilo_billing.events``), by its key."""

    def __init__(self, client: Any, table: str) -> None:
        self._client = client
        self._table = table

    def get(self, pk: str, sk: str) -> StripeEventRecord | None:
        found = call(
            self._client.get_item, TableName=self._table, Key=to_item({"pk": pk, "sk": sk}), ConsistentRead=True
        )
        if "Item" not in found:
            return None
        record = decode_item(found["Item"])
        if not isinstance(record, StripeEventRecord):
            raise ValueError(f"{pk}/{sk} is a {record.SOURCE} event, not a Stripe event")
        return record
