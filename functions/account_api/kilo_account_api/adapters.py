"""DynamoDB adapters of the account API's ports (``ports``): members, and rating's sessions read by attribute name.
Every call goes through ``kilo_billing.aws`` (``call``/``paged_items``), the one place ``ClientError`` becomes a
domain error."""

from __future__ import annotations

import re
import time as time_
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any, Final

from kilo_account_api import items
from kilo_account_api.model import (
    ConflictError,
    ErasureIncompleteError,
    InvalidRequestError,
    Member,
    MemberStatus,
    NotFoundError,
    PhoneChallenge,
    SessionRecord,
    SessionsPage,
)
from kilo_billing import room_state_items as room_state
from kilo_billing.accounts import PSEUDONYM_PATTERN, is_pseudonym, pseudonym, pseudonymised_in
from kilo_billing.auth import Role
from kilo_billing.aws import (
    ConditionFailedError,
    batch_get,
    call,
    delete_if,
    give_back_counted,
    paged_items,
    put_if,
    take_counted,
)
from kilo_billing.aws import InvalidRequestError as AwsInvalidRequestError
from kilo_billing.items import from_item, to_item
from kilo_billing.member_roles import member_item
from kilo_billing.periods import Period
from kilo_billing.usage_signals_items import stored_for

ACCOUNT_SESSIONS_INDEX: Final = "account_sessions"
MEMBERS_BY_USER_INDEX: Final = "members_by_user"


# the alerts function's delivery records (kilo_alerts.items, read by name, never imported): ``ACCOUNT#<id>`` /
# ``DELIVERY#...``, the contact in ``recipient``, a provider's message in ``detail``
ALERT_DELIVERY_PREFIX: Final = "DELIVERY#"
# its records keyed by a participant (D214): enforcement actions ``ENFORCEMENT#<scope>#<action>#<room>#<who>``
# (a removal or audio-only of a session whose join is known: ``...#<who>#<joined ms>``)
# (the account's own steps: room and who ``-``) and abuse flags ``OPERATOR#abuse_concurrent_sessions#
# concurrent_sessions:<who>:<YYYY-MM-DD>``; ``who`` is a pseudonym, or an identity in records written before
ALERT_ENFORCEMENT_PREFIX: Final = "ENFORCEMENT#"
ALERT_CONCURRENT_PREFIX: Final = "OPERATOR#abuse_concurrent_sessions#concurrent_sessions:"
_OWN_STEP: Final = "#-#-"
# the pseudonym ends the key, or - a removal's or an audio-only's key only, the actions claimed per session - comes
# before its session's join (``#<ms>``: 13 digits, the epoch's ms from 2001 to 2286; D71 amended (e4b), D361 amended
# (ao)): another action's key ending ``#<pseudonym-shaped>#<digits>``, or any key ending so with a join of another
# length, names an identity (D239, D214 amended (e4c))
_PSEUDONYM_AT_END: Final = re.compile(rf"#{PSEUDONYM_PATTERN}\Z")
_PSEUDONYM_BEFORE_JOIN: Final = re.compile(rf"#{PSEUDONYM_PATTERN}(#\d{{13}})?\Z")
_PER_SESSION: Final = ("remove", "audio_only")
_PSEUDONYM_IN_FLAG: Final = re.compile(rf"{PSEUDONYM_PATTERN}:\d{{4}}-\d{{2}}-\d{{2}}\Z")


def names_identity(sort_key: str) -> bool:
    """Whether an alerts-table record's key names a participant's identity (not its pseudonym), read from the key
    alone: an enforcement action not ending in a pseudonym (nor the account's own step; a removal's or an
    audio-only's key, and only theirs, may add its session's join after it), an abuse flag of one identity whose
    identity part is not one."""
    if sort_key.startswith(ALERT_ENFORCEMENT_PREFIX):
        action = sort_key.split("#", 3)[2:3]  # ENFORCEMENT#<scope>#<action>#<room>#<who>[#<join>]
        at_end = _PSEUDONYM_BEFORE_JOIN if action and action[0] in _PER_SESSION else _PSEUDONYM_AT_END
        return not (sort_key.endswith(_OWN_STEP) or at_end.search(sort_key))
    if sort_key.startswith(ALERT_CONCURRENT_PREFIX):
        return not _PSEUDONYM_IN_FLAG.fullmatch(sort_key.removeprefix(ALERT_CONCURRENT_PREFIX))
    return False


class DynamoAlertRecords:
    """``AlertRecords`` on the alerts table: one Query of the account's delivery records (only the key, ``recipient``
    and ``detail``: the role's grant allows no other attribute) and one conditional UpdateItem per record still naming
    its contact, on the condition that it still names that one (a record the alerts function wrote meanwhile names
    its pseudonym only)."""

    def __init__(self, client: Any, table: str) -> None:
        self._client = client
        self._table = table

    def _records(
        self, account_id: str, prefix: str, attributes: Mapping[str, str] | None = None
    ) -> Iterator[dict[str, Any]]:
        """The account's records whose sort key starts with ``prefix`` (strongly consistent): their keys and the
        ``attributes`` (placeholder -> name; the role's grant allows ``recipient`` and ``detail``)."""
        names = {"ExpressionAttributeNames": dict(attributes)} if attributes else {}
        return paged_items(
            self._client.query,
            TableName=self._table,
            KeyConditionExpression="pk = :pk AND begins_with(sk, :prefix)",
            Select="SPECIFIC_ATTRIBUTES",
            ProjectionExpression=", ".join(("pk", "sk", *(attributes or {}))),
            ExpressionAttributeValues=to_item({":pk": f"ACCOUNT#{account_id}", ":prefix": prefix}),
            ConsistentRead=True,
            **names,
        )

    def pseudonymise(self, account_id: str) -> int:
        changed = 0
        for item in self._records(account_id, ALERT_DELIVERY_PREFIX, {"#r": "recipient", "#d": "detail"}):
            values = from_item(item)
            contact = str(values.get("recipient", ""))
            if not contact or is_pseudonym(contact):
                continue
            detail = pseudonymised_in(account_id, str(values.get("detail", "")), contact)
            try:
                call(
                    self._client.update_item,
                    TableName=self._table,
                    Key={"pk": item["pk"], "sk": item["sk"]},
                    UpdateExpression="SET #r = :ref, #d = :detail",
                    ConditionExpression="#r = :contact",
                    ExpressionAttributeNames={"#r": "recipient", "#d": "detail"},
                    ExpressionAttributeValues=to_item(
                        {":ref": pseudonym(account_id, contact), ":detail": detail, ":contact": contact}
                    ),
                )
            except ConditionFailedError:
                continue  # written again meanwhile (by the alerts function: its pseudonym only)
            changed += 1
        return changed

    def forget_identities(self, account_id: str) -> int:
        """One Query per prefix (keys only: the grant's attributes), one DeleteItem per record whose key names an
        identity (``names_identity``). The alerts function writes none any more, so none comes back after it."""
        deleted = 0
        for prefix in (ALERT_ENFORCEMENT_PREFIX, ALERT_CONCURRENT_PREFIX):
            for item in self._records(account_id, prefix):
                if names_identity(str(from_item(item)["sk"])):
                    call(self._client.delete_item, TableName=self._table, Key={"pk": item["pk"], "sk": item["sk"]})
                    deleted += 1
        return deleted


class DynamoMembers:
    def __init__(self, client: Any, table: str) -> None:
        self._client = client
        self._table = table

    def members(self, account_id: str) -> list[Member]:
        found = paged_items(
            self._client.query,
            TableName=self._table,
            KeyConditionExpression="#pk = :pk AND begins_with(#sk, :member)",
            ExpressionAttributeNames={"#pk": "pk", "#sk": "sk"},
            ExpressionAttributeValues=to_item({":pk": items.account_pk(account_id), ":member": items.MEMBER_PREFIX}),
            ConsistentRead=True,
        )
        return [items.member_from_item(item) for item in found]

    def member(self, account_id: str, user: str) -> Member | None:
        found = member_item(self._client, self._table, account_id, user)
        return items.member_from_item(found) if found is not None else None

    def add(self, member: Member) -> None:
        # absent, or an invitation that has ended by the time of this one: replaced
        stored = put_if(
            self._client,
            self._table,
            items.member_to_item(member),
            "attribute_not_exists(pk) OR (#status = :invited AND #ends <= :now)",
            ExpressionAttributeNames={"#status": items.MEMBER_STATUS, "#ends": items.INVITATION_END},
            ExpressionAttributeValues=to_item(
                {":invited": MemberStatus.INVITED.value, ":now": int(member.added_at.timestamp())}
            ),
        )
        if not stored:
            raise ConflictError(f"{member.user!r} is already a member of account {member.account_id!r} or invited")

    def accept(self, account_id: str, user: str, now: datetime) -> Member:
        try:
            answer = call(
                self._client.update_item,
                TableName=self._table,
                Key=items.member_key(account_id, user),
                UpdateExpression="SET #status = :active, #added = :now_iso REMOVE #ends",
                ConditionExpression="#status = :invited AND #ends > :now",
                ExpressionAttributeNames={
                    "#status": items.MEMBER_STATUS,
                    "#ends": items.INVITATION_END,
                    "#added": "added_at",
                },
                ExpressionAttributeValues=to_item(
                    {
                        ":active": MemberStatus.ACTIVE.value,
                        ":invited": MemberStatus.INVITED.value,
                        ":now": int(now.timestamp()),
                        ":now_iso": now.isoformat(),
                    }
                ),
                ReturnValues="ALL_NEW",
            )
        except ConditionFailedError as exc:
            raise NotFoundError(f"{user!r} has no open invitation to account {account_id!r}") from exc
        return items.member_from_item(answer["Attributes"])

    def decline(self, account_id: str, user: str) -> None:
        if not self._delete_invitation(account_id, user):
            raise NotFoundError(f"{user!r} has no invitation to account {account_id!r}")

    def withdraw(self, account_id: str, user: str) -> None:
        if self._delete_invitation(account_id, user):
            return
        if self.member(account_id, user) is None:
            raise NotFoundError(f"{user!r} is not invited to account {account_id!r}")
        raise ConflictError(f"{user!r} accepted the invitation meanwhile; retry (a member's removal)")

    def _delete_invitation(self, account_id: str, user: str) -> bool:
        """Delete the user's item only while it is an invitation: False when it is not one (a membership, or
        nothing)."""
        return delete_if(
            self._client,
            self._table,
            items.member_key(account_id, user),
            "#status = :invited",
            ExpressionAttributeNames={"#status": items.MEMBER_STATUS},
            ExpressionAttributeValues=to_item({":invited": MemberStatus.INVITED.value}),
        )

    def remove(self, account_id: str, user: str, keeping_owner: str | None = None) -> None:
        if keeping_owner is None:
            if not delete_if(self._client, self._table, items.member_key(account_id, user)):
                raise NotFoundError(f"{user!r} is not a member of account {account_id!r}")
            return
        # the delete and the check that another owner remains commit together or not at all (serializable: of two
        # owners removing each other, the second transaction finds its kept owner gone)
        # an owner who is still one, and a member (an invitation to be owner is no owner; a membership written
        # before invitations carries no status)
        owner = to_item({":owner": Role.OWNER.name.lower(), ":active": MemberStatus.ACTIVE.value})
        try:
            call(
                self._client.transact_write_items,
                TransactItems=[
                    {
                        "Delete": {
                            "TableName": self._table,
                            "Key": items.member_key(account_id, user),
                            "ConditionExpression": "attribute_exists(pk)",
                        }
                    },
                    {
                        "ConditionCheck": {
                            "TableName": self._table,
                            "Key": items.member_key(account_id, keeping_owner),
                            "ConditionExpression": "#role = :owner AND "
                            "(attribute_not_exists(#status) OR #status = :active)",
                            "ExpressionAttributeNames": {"#role": "role", "#status": items.MEMBER_STATUS},
                            "ExpressionAttributeValues": owner,
                        }
                    },
                ],
            )
        except ConditionFailedError as exc:  # the target went, or the kept owner is no longer one
            raise ConflictError(f"{user!r} was not removed: the account's owners changed meanwhile; retry") from exc

    def accounts_of(self, user: str) -> list[Member]:
        found = paged_items(
            self._client.query,
            TableName=self._table,
            IndexName=MEMBERS_BY_USER_INDEX,
            KeyConditionExpression="#user = :user",
            ExpressionAttributeNames={"#user": "user"},
            ExpressionAttributeValues=to_item({":user": user}),
        )
        return [items.member_from_item(item) for item in found]

    def pseudonymise(self, account_id: str, pseudonym: Callable[[str], str]) -> int:
        changed = 0
        for member in self.members(account_id):
            new = pseudonym(member.email)
            if new == member.email:
                continue
            call(
                self._client.update_item,
                TableName=self._table,
                Key=items.member_key(account_id, member.user),
                UpdateExpression="SET #e = :e",
                ConditionExpression="attribute_exists(pk)",
                ExpressionAttributeNames={"#e": "email"},
                ExpressionAttributeValues=to_item({":e": new}),
            )
            changed += 1
        return changed


def _is_pseudonym(identity: str, pseudonym: Callable[[str], str]) -> bool:
    return pseudonym(identity) == identity


@dataclass(frozen=True, slots=True)
class ErasurePacing:
    """How the erasure waits for the eventually consistent sessions index (D201): ``pauses`` between its passes
    (seconds; 4.5 s at most, well inside the route's 29 s), ``settle``, how long after its first pass a clean pass
    must list (DynamoDB propagates a write to a GSI "within a fraction of a second" under normal conditions), and
    ``sleep``, how it waits (tests record the pauses instead)."""

    pauses: tuple[float, ...] = (0.5, 0.5, 1.0, 2.5)
    settle: float = 0.5
    sleep: Callable[[float], None] = time_.sleep


ERASURE_PACING: Final = ErasurePacing()


class DynamoSessionHistory:
    """Rating's sessions of an account: the keys from the ``account_sessions`` index (``account``, ``start_ms``;
    it projects only ``identity`` and ``end_ms``), then the items by BatchGetItem. A period reads the sessions begun
    from ``lookback`` before it to its end, keeping those with minutes in it or still open."""

    def __init__(
        self,
        client: Any,
        table: str,
        lookback: timedelta,
        erasure: ErasurePacing = ERASURE_PACING,
    ) -> None:
        self._client = client
        self._table = table
        self._lookback = lookback
        self._erasure = erasure

    def _listed(self, account_id: str, since_ms: int | None, until_ms: int | None) -> Iterator[dict[str, Any]]:
        """The index's entries of the account's sessions begun from ``since_ms`` (or any time) to ``until_ms``
        inclusive (or any time): keys, ``identity`` and ``end_ms`` as the index holds them (eventually consistent)."""
        condition = "#a = :a"
        values: dict[str, Any] = {":a": account_id}
        if since_ms is not None and until_ms is not None:
            condition += " AND #s BETWEEN :since AND :until"
            values.update({":since": since_ms, ":until": until_ms})
        elif until_ms is not None:
            condition += " AND #s <= :until"
            values[":until"] = until_ms
        names = {"#a": "account"} | ({"#s": "start_ms"} if until_ms is not None else {})
        yield from paged_items(
            self._client.query,
            TableName=self._table,
            IndexName=ACCOUNT_SESSIONS_INDEX,
            KeyConditionExpression=condition,
            ExpressionAttributeNames=names,
            ExpressionAttributeValues=to_item(values),
        )

    def _keys(self, account_id: str, since_ms: int | None, until_ms: int | None) -> Iterator[dict[str, Any]]:
        for item in self._listed(account_id, since_ms, until_ms):
            yield {"pk": item["pk"], "sk": item["sk"]}

    def _values(self, keys: list[dict[str, Any]], consistent: bool = False) -> Iterator[dict[str, Any]]:
        read: dict[str, Any] = {"ConsistentRead": True} if consistent else {}
        yield from (from_item(item) for item in batch_get(self._client, self._table, keys, **read))

    def _load(self, account_id: str, keys: list[dict[str, Any]]) -> Iterator[SessionRecord]:
        """The sessions the keys name that are stored for ``account_id``: the index may still list a session rating
        has moved to another account (``stored_for``, D206)."""
        return (items.session_from_values(values) for values in self._values(keys) if stored_for(values, account_id))

    def sessions(self, account_id: str, period: str) -> list[SessionRecord]:
        bounds = Period.parse(period)
        since = int((bounds.start - self._lookback).timestamp() * 1000)
        until = int(bounds.end.timestamp() * 1000) - 1
        keys = list(self._keys(account_id, since, until))
        return [s for s in self._load(account_id, keys) if s.parts_in(period) or (s.is_open and s.start_ms <= until)]

    def all_sessions(self, account_id: str) -> Iterator[SessionRecord]:
        return self._load(account_id, list(self._keys(account_id, None, None)))

    def sessions_from(self, account_id: str, since_ms: int, limit: int) -> SessionsPage:
        """One Query of the index (``Limit`` one past ``limit``; more only to finish the last millisecond) and
        BatchGetItem of those listed: bounded reads however many sessions the account has (D372). A session the
        index lists for an account it was moved from is left out (``stored_for``), so a page may hold fewer."""
        request: dict[str, Any] = {
            "TableName": self._table,
            "IndexName": ACCOUNT_SESSIONS_INDEX,
            "KeyConditionExpression": "#a = :a AND #s >= :since",
            "ExpressionAttributeNames": {"#a": "account", "#s": "start_ms"},
            "ExpressionAttributeValues": to_item({":a": account_id, ":since": since_ms}),
            "Limit": limit + 1,
        }
        keys: list[dict[str, Any]] = []
        last: int | None = None
        while True:
            page = call(self._client.query, **request)
            for item in page.get("Items", []):
                start = int(from_item(item)["start_ms"])
                if len(keys) >= limit and start != last:
                    return SessionsPage(self._in_start_order(account_id, keys), start)
                keys.append({"pk": item["pk"], "sk": item["sk"]})
                last = start
            if "LastEvaluatedKey" not in page:
                return SessionsPage(self._in_start_order(account_id, keys), None)
            request["ExclusiveStartKey"] = page["LastEvaluatedKey"]

    def _in_start_order(self, account_id: str, keys: list[dict[str, Any]]) -> tuple[SessionRecord, ...]:
        found = self._load(account_id, keys)  # BatchGetItem answers in any order
        return tuple(sorted(found, key=lambda s: (s.start_ms, s.room_sid, s.participant_sid)))

    def pseudonymise(self, account_id: str, pseudonym: Callable[[str], str], began_before: datetime) -> int:
        """The ``identity`` attribute changes, and the identity inside rating's ``registers`` of a retired participant
        (rating keeps a stored pseudonym when it writes the session again, D80), on every session begun before
        ``began_before`` (the erasure mark, saved before this runs; rating's own bound).

        The ``account_sessions`` index is eventually consistent (a GSI has no strongly consistent read): a session
        written just before the mark may be missing from it for a moment, or listed with the identity it had. So the
        erasure goes in passes (D201): each lists the index, reads the sessions it shows under an identity that
        is not a pseudonym strongly consistently (BatchGetItem ``ConsistentRead``) and rewrites those whose stored
        identity is not one, conditioned on that identity (a concurrent writer's version is re-read next pass, never
        overwritten). It is done at a pass that finds every listed session under a pseudonym - the index shows this
        erasure's own writes - and that lists at least ``ErasurePacing.settle`` seconds after the first pass (a session
        written before the mark has reached the index by then); otherwise it waits (``ErasurePacing.pauses``) and lists
        again. Not done after the last pause: ``ErasureIncompleteError`` (what was written stands; a retry goes on).
        ``pseudonym`` maps a pseudonym to itself (``kilo_billing.accounts.pseudonym``)."""
        before_ms = int(began_before.timestamp() * 1000)
        changed = 0
        waited = 0.0
        rooms: set[str] = set()
        for pause in (*self._erasure.pauses, None):
            listed = list(self._listed(account_id, None, before_ms - 1))
            rooms.update(str(from_item(item)["pk"]) for item in listed)
            left = [
                {"pk": item["pk"], "sk": item["sk"]}
                for item in listed
                if not _is_pseudonym(str(from_item(item).get("identity", "")), pseudonym)
            ]
            if not left and waited >= self._erasure.settle:
                self._drop_running_states(rooms)
                return changed
            for stored in self._values(left, consistent=True):
                changed += self._pseudonymised(stored, account_id, pseudonym)
            if pause is None:
                break
            self._erasure.sleep(pause)
            waited += pause
        self._drop_running_states(rooms)  # those found so far; the retry finds them dropped
        raise ErasureIncompleteError(
            f"account {account_id!r}: the sessions index still lists identities after the erasure's passes; retry"
        )

    def _drop_running_states(self, room_keys: Iterable[str], attempts: int = 3) -> int:
        """Fence rating's state writes off each room (``ROOM#<sid>``) and drop what of its state names participants
        (D220, D274): the header's version moves by one, on the condition that it is the version read - a
        running state loses its blob (and a chunked write's pending mark: that write's remaining chunks, each
        conditioned on its mark, are refused, D224), a version-only header (finished, too large to keep, dropped)
        keeps its cut-off, generation and event count (D196), and a room with no header gets a version-only one
        at 1. Every state write of rating is conditioned on the version it read (none: no header), so a write
        prepared before the erasure is refused whatever its transaction writes besides - the erasure-mark check
        goes only with sessions carrying an identity (D80) - and its retry reads the mark. Then the participant
        items of the generation the header named and of those a rebuild's crash orphaned go - rating's rule, from
        the layer (D250, D271). Nothing reads a dropped state again: the room's next event rebuilds it from
        the stored events, with the pseudonym of each participant whose session began before the erasure mark. A
        header rating rewrites meanwhile is read and fenced again (``attempts``); still moving after that:
        ``ErasureIncompleteError`` (the retry goes on). Returns the running states dropped."""
        rooms = sorted(set(room_keys))
        dropped = 0
        for _ in range(attempts):
            keys = [to_item({"pk": room, "sk": room_state.STATE_SORT_KEY}) for room in rooms]
            headers = {str(header["pk"]): header for header in self._values(keys, consistent=True)}
            moving = []
            for room in rooms:
                header = headers.get(room, {"pk": room})
                if self._drop_state(header):
                    dropped += 1 if header.get(room_state.STATE_BLOB) is not None else 0
                else:
                    moving.append(room)
            if not moving:
                return dropped
            rooms = moving
        raise ErasureIncompleteError("a room's running state kept changing during the erasure; retry")

    def _drop_state(self, header: Mapping[str, Any]) -> bool:
        """Move the room's header to the next version, as read (``header`` without a version: there was none),
        without its state blob and pending mark, then delete its dead participant items: False when the header
        moved since it was read."""
        version = int(header.get(room_state.STATE_VERSION) or 0)
        condition = "#v = :v" if version else "attribute_not_exists(#v)"
        try:
            call(
                self._client.update_item,
                TableName=self._table,
                Key=to_item({"pk": header["pk"], "sk": room_state.STATE_SORT_KEY}),
                UpdateExpression="SET #v = :next REMOVE #z, #p",
                ConditionExpression=condition,
                ExpressionAttributeNames={
                    "#v": room_state.STATE_VERSION,
                    "#z": room_state.STATE_BLOB,
                    "#p": room_state.STATE_PENDING,
                },
                ExpressionAttributeValues=to_item({":next": version + 1} | ({":v": version} if version else {})),
            )
        except ConditionFailedError:
            return False
        self._delete_generations(header, version + 1)
        return True

    def _delete_generations(self, header: Mapping[str, Any], version: int) -> None:
        """Delete the room's participant items (every generation, read strongly consistently) of the generation
        ``header`` names and of those no header can name any more, the header being at ``version`` - a rebuild's
        crash orphaned them (D250; ``room_state.doomed_generations``, rating's rule). A generation numbered past
        ``version`` is a rebuild under way after the drop: kept."""
        named = str(header.get(room_state.STATE_GENERATION) or "")
        doomed = room_state.doomed_generations(version, named, named)
        participants = paged_items(
            self._client.query,
            TableName=self._table,
            KeyConditionExpression="pk = :pk AND begins_with(sk, :prefix)",
            ExpressionAttributeValues=to_item({":pk": header["pk"], ":prefix": room_state.PARTICIPANT_PREFIX}),
            ProjectionExpression="pk, sk",
            ConsistentRead=True,
        )
        for item in list(participants):
            if doomed(room_state.generation_of(str(from_item(item)["sk"]))):
                call(self._client.delete_item, TableName=self._table, Key={"pk": item["pk"], "sk": item["sk"]})

    def _pseudonymised(self, stored: dict[str, Any], account_id: str, pseudonym: Callable[[str], str]) -> int:
        """Rewrite one session read strongly consistently with its identity's pseudonym: 1 if written, 0 if it holds
        one already, changed since it was read (the next pass reads it again), or is stored for another account - a
        stale index entry of a session rating has moved (D206): the read and the rewrite's condition both check
        the stored ``account``, so one account's erasure never writes another's session."""
        if not stored_for(stored, account_id):
            return 0
        session = items.session_from_values(stored)
        new = pseudonym(session.identity)
        if new == session.identity:
            return 0
        key = to_item(
            {"pk": room_state.room_key(session.room_sid), "sk": items.SESSION_PREFIX + session.participant_sid}
        )
        sets, values = ["#i = :i"], {":i": new, ":was": session.identity, ":account": account_id}
        registers = stored.get(items.REGISTERS)
        if isinstance(registers, str) and registers:
            sets.append("#r = :r")
            values[":r"] = items.registers_with_identity(registers, session.identity, new)
        try:
            call(
                self._client.update_item,
                TableName=self._table,
                Key=key,
                UpdateExpression="SET " + ", ".join(sets),
                ConditionExpression="#i = :was AND #a = :account",
                ExpressionAttributeNames={"#i": "identity", "#a": "account"}
                | ({"#r": items.REGISTERS} if len(sets) > 1 else {}),
                ExpressionAttributeValues=to_item(values),
            )
        except ConditionFailedError:
            return 0
        return 1


class DynamoPhoneChallenges:
    """``PhoneChallenges`` in the usage table (``ACCOUNT#<id>`` / ``PHONECODE``): conditional puts and updates on the
    challenge's salt; the item expires (TTL) once the code and the rate window have both passed."""

    def __init__(self, client: Any, table: str, window: timedelta) -> None:
        self._client = client
        self._table = table
        self._window = window

    def current(self, account_id: str) -> PhoneChallenge | None:
        found = call(
            self._client.get_item, TableName=self._table, Key=items.phone_code_key(account_id), ConsistentRead=True
        )
        item = found.get("Item")
        return items.phone_challenge_from_item(account_id, item) if item else None

    def replace(self, challenge: PhoneChallenge, previous: PhoneChallenge | None) -> None:
        expires_at = max((challenge.code_expires_at, *(at + self._window for at in challenge.sent_at)))
        item = items.phone_challenge_to_item(challenge, expires_at)
        if previous is None:
            stored = put_if(self._client, self._table, item)
        else:
            stored = put_if(
                self._client,
                self._table,
                item,
                "#salt = :salt",
                ExpressionAttributeNames={"#salt": "salt"},
                ExpressionAttributeValues=to_item({":salt": previous.salt}),
            )
        if not stored:
            raise ConflictError("a code was sent to the account's number meanwhile; use the newest one")

    def take_number_code(self, phone: str, day: date, limit: int) -> bool:
        expires_at = datetime.combine(day + timedelta(days=2), time(), UTC)  # TTL: the day after, to be safe
        key = items.number_codes_key(phone, day)
        return take_counted(self._client, self._table, key, "codes", limit, int(expires_at.timestamp()))

    def give_back_number_code(self, phone: str, day: date) -> None:
        give_back_counted(self._client, self._table, items.number_codes_key(phone, day), "codes")

    def forget_phone(self, account_id: str) -> None:
        try:
            call(
                self._client.update_item,
                TableName=self._table,
                Key=items.phone_code_key(account_id),
                UpdateExpression="REMOVE #phone, #hash SET #tries = :none",
                ConditionExpression="attribute_exists(pk)",
                ExpressionAttributeNames={"#phone": "phone", "#hash": "code_hash", "#tries": "tries_left"},
                ExpressionAttributeValues=to_item({":none": 0}),
            )
        except ConditionFailedError:
            return  # no code was ever sent (or its item expired): nothing to forget

    def spend_try(self, challenge: PhoneChallenge) -> None:
        try:
            call(
                self._client.update_item,
                TableName=self._table,
                Key=items.phone_code_key(challenge.account_id),
                UpdateExpression="SET #tries = :left",
                ConditionExpression="#salt = :salt AND #tries = :tries",
                ExpressionAttributeNames={"#salt": "salt", "#tries": "tries_left"},
                ExpressionAttributeValues=to_item(
                    {":salt": challenge.salt, ":tries": challenge.tries_left, ":left": challenge.tries_left - 1}
                ),
            )
        except ConditionFailedError as exc:
            raise ConflictError("the code was tried or replaced meanwhile; try again") from exc


class SnsCodeSender:
    """``CodeSender``: a transactional SMS straight to the number through SNS (the alerts function's way)."""

    def __init__(self, client: Any) -> None:
        self._client = client

    def opted_out(self, phone: str) -> bool:
        try:
            answer = call(self._client.check_if_phone_number_is_opted_out, phoneNumber=phone)
        except AwsInvalidRequestError as exc:
            raise InvalidRequestError("phone", f"SMS cannot be sent to {phone!r} ({exc})") from exc
        return bool(answer.get("isOptedOut"))

    def send(self, phone: str, text: str) -> None:
        attributes = {"AWS.SNS.SMS.SMSType": {"DataType": "String", "StringValue": "Transactional"}}
        try:
            call(self._client.publish, PhoneNumber=phone, Message=text, MessageAttributes=attributes)
        except AwsInvalidRequestError as exc:  # SNS refuses the number for good (StorageUnavailableError: 503)
            raise InvalidRequestError("phone", f"SMS cannot be sent to {phone!r} ({exc})") from exc
