"""The edge between DynamoDB stream records (as Lambda delivers them, or as the replay reads them back) and stored
events: only INSERTs are new events (MODIFY = a usage mark, REMOVE = TTL expiry); a record that cannot be decoded, or
usage of a meter rating does not know, is poison - kept whole with its reason, never retried."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from kilo_billing.events import ContractError, decode_item
from kilo_billing.livekit_events import LiveKitEventRecord
from kilo_billing.meters import Meter
from kilo_billing.usage_events import UsageEventRecord

RATED_METERS = frozenset({Meter.MESSAGES.value, Meter.DATA_TRANSFER.value})


@dataclass(frozen=True, slots=True)
class Poison:
    """A record of the batch that can never be rated (undecodable, or usage of a meter rating does not rate): its index
    in the batch and why. The handler sends the record whole to the poison queue with the reason: never retried."""

    index: int
    reason: str


@dataclass(frozen=True, slots=True)
class DecodedBatch:
    rated: list[tuple[int, LiveKitEventRecord | UsageEventRecord]]  # (index in the batch, event) of what rating rates
    poison: list[Poison]

    @property
    def livekit(self) -> list[LiveKitEventRecord]:
        return [event for _, event in self.rated if isinstance(event, LiveKitEventRecord)]

    @property
    def usage(self) -> list[UsageEventRecord]:
        return [event for _, event in self.rated if isinstance(event, UsageEventRecord)]

    def indexes_of(self, rooms: set[str], usage_keys: set[tuple[str, str]]) -> list[int]:
        """Indexes of the records of these rooms and usage events (refused by DynamoDB: for the poison queue)."""
        return [
            index
            for index, event in self.rated
            if (event.room_sid in rooms if isinstance(event, LiveKitEventRecord) else event.key in usage_keys)
        ]


def decode_records(records: Sequence[Mapping[str, Any]]) -> DecodedBatch:
    rated: list[tuple[int, LiveKitEventRecord | UsageEventRecord]] = []
    poison: list[Poison] = []
    for index, record in enumerate(records):
        if record.get("eventName") != "INSERT":
            continue
        try:
            decoded = decode_item(record["dynamodb"]["NewImage"])
        except (ContractError, KeyError, TypeError, ValueError) as exc:
            poison.append(Poison(index, f"{type(exc).__name__}: {exc}"))
            continue
        if isinstance(decoded, UsageEventRecord) and decoded.meter not in RATED_METERS:
            poison.append(Poison(index, f"usage meter {decoded.meter!r} cannot be rated"))
        elif isinstance(decoded, LiveKitEventRecord | UsageEventRecord):
            rated.append((index, decoded))
        # Stripe events are invoicing's: the template's filter keeps them away, and they are not rating's to rate
    return DecodedBatch(rated, poison)
