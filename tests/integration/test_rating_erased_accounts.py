"""An erased account's participants stay pseudonyms when rating writes their sessions again (docs/decisions.md D80).

End to end on moto: LiveKit webhooks signed with LiveKit's SDK go through the ingest handler, the events table's
stream through the rating handler; the owner erases the account through the account API's route; then a call still
open at the erasure closes (the in-order path writes the session) and a late webhook older than the room state's
horizon makes rating rebuild the room from its raw events - which still carry every identity until their TTL. No
session item, and no participant's registers kept on it, may carry an identity again.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from typing import Any

import pytest

from kilo_dev import livekit_events as lk
from kilo_rate_usage.adapters import DynamoUsageRepository
from kilo_rate_usage.model import StoredSession
from kilo_rate_usage.rooms import registers_from_text
from tests.account_api_support import api_environment, call, claims, store_members
from tests.conftest import LambdaContext, Stack
from tests.integration.test_account_api import register
from tests.integration.test_rating_stream import Lambda, deliver_webhook

T0 = 1_794_787_200  # 2026-11-16T00:00:00Z
ACCOUNT = "acct_forget"
ROOM = "RM_forget01"
IDENTITIES = {"PA_alice01": "alice", "PA_bob0001": "bob", "PA_carol01": "carol"}


@pytest.fixture
def account_api(stack: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    yield from api_environment(stack, monkeypatch)


def expected_pseudonym(identity: str) -> str:
    """D80's formula, written out here: "erased-" and the first 16 hex digits of sha256(account NUL identity)."""
    return "erased-" + hashlib.sha256(ACCOUNT.encode() + b"\x00" + identity.encode()).hexdigest()[:16]


def sessions(stack: Stack) -> dict[str, StoredSession]:
    names = (stack.template.physical_name(name) for name in ("UsageTable", "EventsTable"))
    return DynamoUsageRepository(stack.clients["dynamodb"], *names).stored_sessions(ROOM)


def run_stream(runner: Lambda, context: LambdaContext) -> None:
    records = runner.poll()
    assert records
    runner.run(records, context)


def alice_and_carol() -> tuple[lk.Room, lk.Participant, lk.Participant]:
    """The erased account's room and two of its participants, named as the erasure must no longer name them."""
    room = lk.Room(ROOM, "forget-me", account_id=ACCOUNT, created_at=T0)
    alice = lk.Participant("PA_alice01", "alice.smith", (T0 + 10) * 1000)
    return room, alice, lk.Participant("PA_carol01", "carol.jones", (T0 + 30) * 1000)


def rated_one_by_one(runner: Lambda, context: LambdaContext, *bodies: bytes) -> None:
    """Each webhook stored by ingest, then rated in a stream batch of its own."""
    for body in bodies:
        deliver_webhook(body, context)
        run_stream(runner, context)


def test_an_erased_accounts_sessions_written_again_from_raw_events_keep_their_pseudonyms(
    stack: Stack, account_api: Any, lambda_context: LambdaContext
) -> None:
    register(stack, ACCOUNT)
    store_members(stack, ACCOUNT, {"user-1": "owner"})  # the eraser (D202)
    room = lk.Room(ROOM, "forget-me", account_id=ACCOUNT, created_at=T0)
    alice = lk.Participant("PA_alice01", "alice", (T0 + 10) * 1000)
    bob = lk.Participant("PA_bob0001", "bob", (T0 + 20) * 1000)
    carol = lk.Participant("PA_carol01", "carol", (T0 + 30) * 1000)
    runner = Lambda(stack)
    for body in (
        lk.room_started(room, T0),
        lk.participant_joined(room, alice),
        lk.participant_joined(room, bob),
        lk.participant_joined(room, carol),
        lk.track_published(room, alice, "TR_cam_a", T0 + 60, video=True),
        lk.participant_left(room, bob, T0 + 600),
        lk.participant_left(room, alice, T0 + 1200),
    ):
        deliver_webhook(body, lambda_context)
        run_stream(runner, lambda_context)  # one event per batch: bob and alice retire, registers on their items
    before = sessions(stack)
    assert {sid: stored.session.identity for sid, stored in before.items()} == IDENTITIES
    assert registers_from_text(before["PA_bob0001"].registers).identity == "bob"  # retired: registers on its item

    erased = call("POST", f"/v1/accounts/{ACCOUNT}/erase", claims(ACCOUNT, "owner"))
    assert erased.status == 200, erased.body
    assert erased.body["sessions_pseudonymised"] == 3
    pseudonyms = {sid: expected_pseudonym(identity) for sid, identity in IDENTITIES.items()}
    assert {sid: stored.session.identity for sid, stored in sessions(stack).items()} == pseudonyms

    # carol's call, open at the erasure, ends: the in-order path closes her session
    deliver_webhook(lk.participant_left(room, carol, T0 + 1500), lambda_context)
    run_stream(runner, lambda_context)
    closed = sessions(stack)["PA_carol01"]
    assert (closed.session.end_ms, closed.session.identity) == ((T0 + 1500) * 1000, pseudonyms["PA_carol01"])

    # alice's camera went off at 900 s - a webhook LiveKit delivers late, far behind the state's horizon: rebuilt
    deliver_webhook(lk.track_unpublished(room, alice, "TR_cam_a", T0 + 900, video=True), lambda_context)
    run_stream(runner, lambda_context)
    after = sessions(stack)
    # the camera 60..900 s: bob (20..600 s) 540 s, alice (10..1200 s) and carol (30..1500 s) 840 s each - carol had
    # 1,140 s before the late webhook (the camera ended with alice's leave): only the rebuild gives 840
    assert {sid: stored.session.video_seconds for sid, stored in after.items()} == {
        "PA_alice01": 840,
        "PA_bob0001": 540,
        "PA_carol01": 840,
    }
    assert {sid: stored.session.identity for sid, stored in after.items()} == pseudonyms
    kept = {sid: registers_from_text(stored.registers).identity for sid, stored in after.items() if stored.registers}
    assert kept == {sid: pseudonyms[sid] for sid in kept}
    assert kept.keys() >= {"PA_alice01", "PA_bob0001"}  # retired: their registers are on their session items
    exported = call("GET", f"/v1/accounts/{ACCOUNT}/export", claims(ACCOUNT, "owner"))
    assert sorted({s["identity"] for s in exported.body["sessions"]}) == sorted(pseudonyms.values())


def test_events_queued_at_the_erasure_are_rated_with_pseudonyms_and_a_later_call_keeps_its_identities(
    stack: Stack, account_api: Any, lambda_context: LambdaContext
) -> None:
    """The erasure marks the profile (``erased_at``): a session that began before the mark is written with its
    participant's pseudonym even when rating sees it for the first time after the erasure (its events were still
    queued on the stream); a participant of a call that begins after the erasure is new data, kept as it came."""
    import time  # noqa: PLC0415

    register(stack, ACCOUNT)
    store_members(stack, ACCOUNT, {"user-1": "owner"})  # the eraser (D202)
    room = lk.Room(ROOM, "forget-me", account_id=ACCOUNT, created_at=T0)
    alice = lk.Participant("PA_alice01", "alice", (T0 + 10) * 1000)
    bob = lk.Participant("PA_bob0001", "bob", (T0 + 20) * 1000)
    runner = Lambda(stack)
    for body in (
        lk.room_started(room, T0),
        lk.participant_joined(room, alice),
        lk.participant_joined(room, bob),
        lk.participant_left(room, bob, T0 + 600),
    ):
        deliver_webhook(body, lambda_context)  # stored by ingest; the stream is not read yet (a backlog)

    erased = call("POST", f"/v1/accounts/{ACCOUNT}/erase", claims(ACCOUNT, "owner"))
    assert erased.status == 200, erased.body
    assert erased.body["sessions_pseudonymised"] == 0  # nothing rated yet
    run_stream(runner, lambda_context)
    rated = sessions(stack)
    assert {sid: stored.session.identity for sid, stored in rated.items()} == {
        "PA_alice01": expected_pseudonym("alice"),
        "PA_bob0001": expected_pseudonym("bob"),
    }
    assert rated["PA_bob0001"].session.end_ms == (T0 + 600) * 1000  # rated as usual, only the identity differs

    later = int(time.time()) + 2  # after the erasure's mark (the account API's clock is the real one)
    other = lk.Room("RM_forget02", "after", account_id=ACCOUNT, created_at=later)
    dave = lk.Participant("PA_dave0001", "dave", later * 1000)
    for body in (lk.room_started(other, later), lk.participant_joined(other, dave)):
        deliver_webhook(body, lambda_context)
    run_stream(runner, lambda_context)
    names = (stack.template.physical_name(name) for name in ("UsageTable", "EventsTable"))
    new_call = DynamoUsageRepository(stack.clients["dynamodb"], *names).stored_sessions("RM_forget02")
    assert {sid: stored.session.identity for sid, stored in new_call.items()} == {"PA_dave0001": "dave"}


def test_a_batch_that_read_the_profile_before_the_erasure_and_commits_after_its_scan_writes_no_identity(
    stack: Stack, account_api: Any, lambda_context: LambdaContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The window D80 left open: rating reads the batch's profiles (no erasure mark yet), the owner erases the account
    (the mark, then the scan of the stored sessions - which finds none of this batch's), and only then rating commits
    its first-time sessions. The commit is conditioned on the erasure mark it read, so it fails as a conflict; the
    stream retries the batch, which reads the mark and writes pseudonyms. A session already stored, rewritten by the
    same kind of batch, is covered alike."""
    from kilo_rate_usage import dependencies  # noqa: PLC0415
    from kilo_rate_usage.handler import lambda_handler  # noqa: PLC0415
    from kilo_rate_usage.ports import ConflictError  # noqa: PLC0415

    register(stack, ACCOUNT)
    store_members(stack, ACCOUNT, {"user-1": "owner"})  # the eraser (D202)
    room = lk.Room(ROOM, "forget-me", account_id=ACCOUNT, created_at=T0)
    alice = lk.Participant("PA_alice01", "alice", (T0 + 10) * 1000)
    bob = lk.Participant("PA_bob0001", "bob", (T0 + 20) * 1000)
    runner = Lambda(stack)
    deliver_webhook(lk.room_started(room, T0), lambda_context)
    deliver_webhook(lk.participant_joined(room, alice), lambda_context)
    run_stream(runner, lambda_context)  # alice's session is stored, open, with her identity
    assert sessions(stack)["PA_alice01"].session.identity == "alice"
    deliver_webhook(lk.participant_joined(room, bob), lambda_context)  # bob: a first-time session
    deliver_webhook(lk.participant_left(room, alice, T0 + 600), lambda_context)  # alice's: rewritten (closed)
    records = runner.poll()

    repo = dependencies.rating().repo
    commit = repo.commit
    erasures: list[int] = []

    def erase_then_commit(unit: Any, now_ms: int) -> int:
        if not erasures:  # after rating read the profiles, before its first commit: the erasure runs whole
            erased = call("POST", f"/v1/accounts/{ACCOUNT}/erase", claims(ACCOUNT, "owner"))
            assert erased.status == 200, erased.body
            erasures.append(erased.body["sessions_pseudonymised"])
        return commit(unit, now_ms)

    monkeypatch.setattr(repo, "commit", erase_then_commit)
    with pytest.raises(ConflictError):
        lambda_handler({"Records": records}, lambda_context)  # the stream retries the batch
    assert erasures == [1]  # alice's stored session, pseudonymised by the erasure's scan; bob's not stored yet
    assert lambda_handler({"Records": records}, lambda_context) == {"batchItemFailures": []}  # the retry

    rated = sessions(stack)
    assert {sid: stored.session.identity for sid, stored in rated.items()} == {
        "PA_alice01": expected_pseudonym("alice"),
        "PA_bob0001": expected_pseudonym("bob"),
    }
    assert rated["PA_alice01"].session.end_ms == (T0 + 600) * 1000  # the batch's close is rated, as usual
    kept = [registers_from_text(stored.registers).identity for stored in rated.values() if stored.registers]
    assert all(identity.startswith("erased-") for identity in kept)


def raw_identities(stack: Stack, identities: set[str]) -> dict[str, set[str]]:
    """Items of the usage table (pk|sk) that hold any of ``identities`` anywhere - a room state's blob decompressed,
    registers as stored."""
    found: dict[str, set[str]] = {}
    for item in stack.table_items("UsageTable"):
        text = repr(item) + _blob(item)
        named = {identity for identity in identities if identity in text}
        if named:
            found[f"{item['pk']['S']}|{item['sk']['S']}"] = named
    return found


def test_a_running_rooms_state_names_no_erased_participant_after_the_erasure_nor_after_its_next_events(
    stack: Stack, account_api: Any, lambda_context: LambdaContext
) -> None:
    """D220: alice and carol are in a call when the account is erased. Their running room's state named them
    (the window's events, their participant items); the erasure drops it, and the events rated after - carol's leave,
    then a late webhook that rebuilds the room from the raw events - write it again with their pseudonyms."""
    register(stack, ACCOUNT)
    store_members(stack, ACCOUNT, {"user-1": "owner"})
    names = {"alice.smith", "carol.jones"}
    room, alice, carol = alice_and_carol()
    runner = Lambda(stack)
    rated_one_by_one(
        runner,
        lambda_context,
        lk.room_started(room, T0),
        lk.participant_joined(room, alice),
        lk.participant_joined(room, carol),
        lk.track_published(room, alice, "TR_cam_a", T0 + 60, video=True),
    )
    state = {key for key, named in raw_identities(stack, names).items() if "|SESSION#" not in key}
    assert f"ROOM#{ROOM}|STATE" in state  # the running state names them (its window's events)
    assert any("|PART#" in key for key in state)  # and their participant items

    erased = call("POST", f"/v1/accounts/{ACCOUNT}/erase", claims(ACCOUNT, "owner"))
    assert erased.status == 200, erased.body
    assert raw_identities(stack, names) == {}  # before: the room's header and participant items named them

    deliver_webhook(lk.participant_left(room, carol, T0 + 600), lambda_context)  # rebuilds the dropped state
    run_stream(runner, lambda_context)
    assert raw_identities(stack, names) == {}
    # alice's camera went off at 300 s, delivered late behind the state's horizon: rebuilt from the raw events
    deliver_webhook(lk.track_unpublished(room, alice, "TR_cam_a", T0 + 300, video=True), lambda_context)
    run_stream(runner, lambda_context)
    assert raw_identities(stack, names) == {}
    header = next(
        i for i in stack.table_items("UsageTable") if i["pk"]["S"] == f"ROOM#{ROOM}" and i["sk"]["S"] == "STATE"
    )
    assert "state_zlib" in header  # alice is still in the call: the room has a running state again
    found = sessions(stack)
    assert {sid: stored.session.identity for sid, stored in found.items()} == {
        "PA_alice01": expected_pseudonym("alice.smith"),
        "PA_carol01": expected_pseudonym("carol.jones"),
    }
    # carol 30..600 s, the camera 60..300 s: 240 s of video (hand-worked)
    assert (found["PA_carol01"].session.end_ms, found["PA_carol01"].session.video_seconds) == ((T0 + 600) * 1000, 240)


def call_in_progress(stack: Stack, context: LambdaContext) -> tuple[Lambda, lk.Room, lk.Participant]:
    """Alice and carol in a call of the account's room, rated: its running state names them."""
    register(stack, ACCOUNT)
    store_members(stack, ACCOUNT, {"user-1": "owner"})
    room, alice, carol = alice_and_carol()
    runner = Lambda(stack)
    rated_one_by_one(
        runner,
        context,
        lk.room_started(room, T0),
        lk.participant_joined(room, alice),
        lk.participant_joined(room, carol),
    )
    return runner, room, carol


def test_a_chunked_write_under_way_at_the_erasure_writes_no_identity_after_it(
    stack: Stack, account_api: Any, lambda_context: LambdaContext
) -> None:
    """D224: rating's chunked write of the room's participant items has put its pending mark on the header and
    has chunks left when the account is erased. The erasure's drop removes the mark with the state, so the write's
    next chunk (conditioned on its mark) is refused; before, the mark stayed and the chunk wrote alice's raw registers
    back after the erasure had deleted them."""
    from botocore.exceptions import ClientError  # noqa: PLC0415

    names = {"alice.smith", "carol.jones"}
    runner, room, carol = call_in_progress(stack, lambda_context)
    usage = stack.template.physical_name("UsageTable")
    client = stack.clients["dynamodb"]
    key = {"pk": {"S": f"ROOM#{ROOM}"}, "sk": {"S": "STATE"}}
    client.update_item(  # the chunked write's first step: its mark on the header
        TableName=usage, Key=key, UpdateExpression="SET #p = :m", ExpressionAttributeNames={"#p": "pending"},
        ExpressionAttributeValues={":m": {"S": "chunk-mark"}},
    )  # fmt: skip
    chunk = [item for item in stack.table_items("UsageTable") if item["sk"]["S"].startswith("PART#")]
    assert any("alice.smith" in repr(item) for item in chunk)  # what the write's next chunk puts again

    erased = call("POST", f"/v1/accounts/{ACCOUNT}/erase", claims(ACCOUNT, "owner"))
    assert erased.status == 200, erased.body
    assert raw_identities(stack, names) == {}

    check = {
        "ConditionCheck": {
            "TableName": usage, "Key": key, "ConditionExpression": "#p = :m",
            "ExpressionAttributeNames": {"#p": "pending"}, "ExpressionAttributeValues": {":m": {"S": "chunk-mark"}},
        }
    }  # fmt: skip
    with pytest.raises(ClientError, match="TransactionCanceled"):  # before: it landed
        client.transact_write_items(TransactItems=[*({"Put": {"TableName": usage, "Item": i}} for i in chunk), check])
    assert raw_identities(stack, names) == {}
    deliver_webhook(lk.participant_left(room, carol, T0 + 600), lambda_context)  # rating rebuilds the room
    run_stream(runner, lambda_context)
    assert raw_identities(stack, names) == {}
    assert sessions(stack)["PA_carol01"].session.end_ms == (T0 + 600) * 1000


def test_a_state_too_large_to_keep_has_its_participant_items_deleted_by_the_erasure(
    stack: Stack, account_api: Any, lambda_context: LambdaContext
) -> None:
    """D224: a room whose state is too large to keep has a version-only header (no state blob) still naming the
    generation of its live participants' items (D199), which name them. The erasure deletes those items too (before:
    it dropped only headers holding a state blob, and the items kept alice's and carol's identities)."""
    names = {"alice.smith", "carol.jones"}
    call_in_progress(stack, lambda_context)
    usage = stack.template.physical_name("UsageTable")
    key = {"pk": {"S": f"ROOM#{ROOM}"}, "sk": {"S": "STATE"}}
    stack.clients["dynamodb"].update_item(  # what rating writes for a state too large to keep (D42, D199)
        TableName=usage, Key=key, UpdateExpression="SET version = version + :one REMOVE state_zlib",
        ExpressionAttributeValues={":one": {"N": "1"}},
    )  # fmt: skip
    assert any("|PART#" in found for found in raw_identities(stack, names))

    erased = call("POST", f"/v1/accounts/{ACCOUNT}/erase", claims(ACCOUNT, "owner"))
    assert erased.status == 200, erased.body
    assert raw_identities(stack, names) == {}


def test_a_participant_with_no_session_yet_is_named_by_no_running_state_after_the_erasure(
    stack: Stack, account_api: Any, lambda_context: LambdaContext
) -> None:
    """D220's limit: bob published a microphone before the erasure, but his ``participant_joined`` (the only event
    that gives his start here: the track's carries no ``joinedAt``) is late. The state holds him without a session;
    after the erasure, neither the rebuild of the dropped state (alice's camera), nor bob's next event folded in
    order, nor the rebuild his late join causes writes his identity again; his session, once it exists, has his
    pseudonym."""
    register(stack, ACCOUNT)
    store_members(stack, ACCOUNT, {"user-1": "owner"})
    names = {"alice.smith", "bob.brown"}
    room = lk.Room(ROOM, "forget-me", account_id=ACCOUNT, created_at=T0)
    alice = lk.Participant("PA_alice01", "alice.smith", (T0 + 10) * 1000)
    bob = lk.Participant("PA_bob0001", "bob.brown", (T0 + 20) * 1000)
    runner = Lambda(stack)
    rated_one_by_one(
        runner,
        lambda_context,
        lk.room_started(room, T0),
        lk.participant_joined(room, alice),
        lk.track_published(room, bob, "TR_mic_b", T0 + 40, video=False),
    )
    assert set(sessions(stack)) == {"PA_alice01"}  # bob: no start known, no session
    assert any("bob.brown" in named for named in raw_identities(stack, names).values())  # the state names him

    erased = call("POST", f"/v1/accounts/{ACCOUNT}/erase", claims(ACCOUNT, "owner"))
    assert erased.status == 200, erased.body
    assert raw_identities(stack, names) == {}

    for body in (
        lk.track_published(room, alice, "TR_cam_a", T0 + 600, video=True),  # rebuilds the dropped state
        lk.track_unpublished(room, bob, "TR_mic_b", T0 + 700, video=False),  # folded in order
        lk.participant_joined(room, bob),  # late, far behind the state's horizon: rebuilt
    ):
        rated_one_by_one(runner, lambda_context, body)
        assert raw_identities(stack, names) == {}
    assert {sid: stored.session.identity for sid, stored in sessions(stack).items()} == {
        "PA_alice01": expected_pseudonym("alice.smith"),
        "PA_bob0001": expected_pseudonym("bob.brown"),
    }


@pytest.mark.parametrize("running", [True, False], ids=["running-state", "version-only-header"])
def test_a_generation_a_crashed_rebuild_orphaned_naming_the_participants_is_deleted_by_the_erasure(
    stack: Stack, account_api: Any, lambda_context: LambdaContext, running: bool
) -> None:
    """D250's orphans at the erasure: the header at version v names generation G; a rebuild that crashed after its
    header landed left its old generation (``<v>.<hex>``), one that crashed before its header left its new one
    (``<v+1>.<hex>``), both naming alice. After the erasure no item names anyone: the drop moves the header to v+1
    (a running state and a version-only one alike, D274: a rebuild that read v can no longer land), and every
    generation no header can name any more goes with G (before: only G, and the orphans kept alice's identity). A
    generation numbered past the header's - a rebuild under way after the drop - is kept."""
    names = {"alice.smith", "carol.jones"}
    call_in_progress(stack, lambda_context)
    usage = stack.template.physical_name("UsageTable")
    client = stack.clients["dynamodb"]
    key = {"pk": {"S": f"ROOM#{ROOM}"}, "sk": {"S": "STATE"}}
    if not running:  # what rating writes for a state too large to keep (D42, D199)
        client.update_item(
            TableName=usage, Key=key, UpdateExpression="SET version = version + :one REMOVE state_zlib",
            ExpressionAttributeValues={":one": {"N": "1"}},
        )  # fmt: skip
    header = client.get_item(TableName=usage, Key=key, ConsistentRead=True)["Item"]
    version, named = int(header["version"]["N"]), header["generation"]["S"]
    alice = next(item for item in stack.table_items("UsageTable") if item["sk"]["S"] == f"PART#{named}#PA_alice01")
    dropped_at = version + 1  # the header's version after the erasure's drop
    orphans = [f"{version}.0123456789ab", f"{dropped_at}.ba9876543210"]
    for generation in orphans:
        client.put_item(TableName=usage, Item=alice | {"sk": {"S": f"PART#{generation}#PA_alice01"}})
    later = f"PART#{dropped_at + 1}.00000000cafe#PA_later01"  # a rebuild's under way: no identity of theirs
    client.put_item(TableName=usage, Item={"pk": key["pk"], "sk": {"S": later}, "registers": {"S": "{}"}})
    assert {f"ROOM#{ROOM}|PART#{generation}#PA_alice01" for generation in orphans} <= set(raw_identities(stack, names))

    erased = call("POST", f"/v1/accounts/{ACCOUNT}/erase", claims(ACCOUNT, "owner"))
    assert erased.status == 200, erased.body
    assert raw_identities(stack, names) == {}
    left = sorted(item["sk"]["S"] for item in stack.table_items("UsageTable") if item["sk"]["S"].startswith("PART#"))
    assert left == [later]


@pytest.mark.parametrize("read", ["version-only", "none"])
def test_given_a_rebuild_read_no_state_blob_when_the_erasure_runs_before_its_commit_then_no_item_names_them(
    stack: Stack, account_api: Any, lambda_context: LambdaContext, monkeypatch: pytest.MonkeyPatch, read: str
) -> None:
    """D274: alice and carol are in a call whose header is version-only (a state too large to keep, D42) - or
    that has no header (its sessions' transaction landed, its state's did not) - when the stream delivers carol's
    join again (a retry after the batch's commit). Rating rebuilds the room: it reads the header (version v, or
    none), the events, the sessions (unchanged: none is written) and the profile (no erasure mark yet); then the
    owner erases the account and the erasure runs whole; then rating commits. Its transaction writes no session
    carrying an identity, so it carries no erasure-mark check (D80): only the header's version guards it. Before,
    the erasure left a version-only header at v (and no header absent), the rebuild's header put (conditioned on
    v, or on no header) landed, and its state and new generation's items named alice and carol after the erasure.
    Now the erasure moves the version (to 1 where there was none): the commit is a conflict, and the stream's retry
    writes their pseudonyms."""
    from kilo_rate_usage import dependencies  # noqa: PLC0415
    from kilo_rate_usage.handler import lambda_handler  # noqa: PLC0415
    from kilo_rate_usage.ports import ConflictError  # noqa: PLC0415

    names = {"alice.smith", "carol.jones"}
    register(stack, ACCOUNT)
    store_members(stack, ACCOUNT, {"user-1": "owner"})
    room, alice, carol = alice_and_carol()
    runner = Lambda(stack)
    records: list[dict[str, Any]] = []
    for body in (lk.room_started(room, T0), lk.participant_joined(room, alice), lk.participant_joined(room, carol)):
        deliver_webhook(body, lambda_context)
        records = runner.poll()
        runner.run(records, lambda_context)  # the last: carol's join
    usage = stack.template.physical_name("UsageTable")
    key = {"pk": {"S": f"ROOM#{ROOM}"}, "sk": {"S": "STATE"}}
    client = stack.clients["dynamodb"]
    if read == "version-only":  # what rating writes for a state too large to keep (D42, D199)
        client.update_item(
            TableName=usage, Key=key, UpdateExpression="SET version = version + :one REMOVE state_zlib",
            ExpressionAttributeValues={":one": {"N": "1"}},
        )  # fmt: skip
    else:  # the sessions stored, the state not: a commit whose state's transaction did not follow its sessions'
        for item in stack.table_items("UsageTable"):
            if item["pk"] == key["pk"] and not item["sk"]["S"].startswith("SESSION#"):
                client.delete_item(TableName=usage, Key={"pk": item["pk"], "sk": item["sk"]})

    repo = dependencies.rating().repo
    commit = repo.commit
    erasures: list[int] = []
    units: list[Any] = []

    def erase_then_commit(unit: Any, now_ms: int) -> int:
        if not erasures:  # the rebuild has read everything; the erasure runs whole before its commit
            erased = call("POST", f"/v1/accounts/{ACCOUNT}/erase", claims(ACCOUNT, "owner"))
            assert erased.status == 200, erased.body
            erasures.append(erased.body["sessions_pseudonymised"])
            assert raw_identities(stack, names) == {}  # the erasure itself leaves nothing naming them
            units.append(unit)
        return commit(unit, now_ms)

    monkeypatch.setattr(repo, "commit", erase_then_commit)
    conflict = False
    try:
        lambda_handler({"Records": records}, lambda_context)  # carol's join again
    except ConflictError:
        conflict = True  # the stream retries the batch
    assert raw_identities(stack, names) == {}  # before: the header and the new generation's items named them
    assert erasures == [2]  # alice's and carol's sessions
    assert not units[0].sessions  # the suspicion's shape: the rebuild writes no session, hence no mark check
    assert [change.new_generation for change in units[0].states] == [True]  # a rebuild's state
    assert conflict
    assert lambda_handler({"Records": records}, lambda_context) == {"batchItemFailures": []}  # the retry
    assert raw_identities(stack, names) == {}
    assert {sid: stored.session.identity for sid, stored in sessions(stack).items()} == {
        "PA_alice01": expected_pseudonym("alice.smith"),
        "PA_carol01": expected_pseudonym("carol.jones"),
    }
    header = client.get_item(TableName=usage, Key=key, ConsistentRead=True)["Item"]
    assert "state_zlib" in header  # the retry's rebuild wrote the running state again, naming them by pseudonym


@pytest.mark.parametrize(
    ("published", "where", "rebuilt_first"),
    [(T0 + 25, "STATE", False), (T0 + 20, "PART#", False), (T0 + 38, "STATE", True)],
    ids=["the-headers-window-of-a-rebuild", "a-participant-item-of-a-rebuild", "the-headers-window-folded-in-order"],
)
def test_given_a_late_event_of_a_participant_with_no_session_when_rating_writes_it_after_the_erasure_then_the_state_names_him_by_his_pseudonym(
    stack: Stack,
    account_api: Any,
    lambda_context: LambdaContext,
    published: int,
    where: str,
    rebuilt_first: bool,
) -> None:
    """D275: alice and carol are in a call (joined at 10 s and 30 s) when the account is erased; then bob's
    microphone, published at ``published`` - before the erasure - reaches rating late, with no ``participant_joined``
    of his (no session). His event rebuilds the dropped state: at 25 s it is within the last 5 s of the room's events
    (the horizon is 30 - 5 = 25 s), so the state keeps it in the header's window; at 20 s it is older and folded into
    his participant item. Or alice's camera (40 s) rebuilds the state first and his event (38 s, horizon 35 s) is
    folded in order into the window. Every place names him by his pseudonym (before: the window's event kept
    "bob.brown", as only participants folded before the horizon were given their provisional account); his next
    event, folded in order, moves the window's event into his item, still a pseudonym; his late join gives his
    session the same one."""
    names = {"alice.smith", "bob.brown", "carol.jones"}
    runner, room, _ = call_in_progress(stack, lambda_context)
    erased = call("POST", f"/v1/accounts/{ACCOUNT}/erase", claims(ACCOUNT, "owner"))
    assert erased.status == 200, erased.body
    assert raw_identities(stack, names) == {}

    if rebuilt_first:
        alice = lk.Participant("PA_alice01", "alice.smith", (T0 + 10) * 1000)
        deliver_webhook(lk.track_published(room, alice, "TR_cam_a", T0 + 40, video=True), lambda_context)
        run_stream(runner, lambda_context)  # rebuilds the dropped state
    bob = lk.Participant("PA_bob0001", "bob.brown", (T0 + 15) * 1000)
    deliver_webhook(lk.track_published(room, bob, "TR_mic_b", published, video=False), lambda_context)
    run_stream(runner, lambda_context)  # rebuilds the dropped state, or is folded in order into the rebuilt one
    assert raw_identities(stack, names) == {}
    assert set(sessions(stack)) == {"PA_alice01", "PA_carol01"}  # bob: no start known, no session
    state = [
        item for item in stack.table_items("UsageTable")
        if item["pk"]["S"] == f"ROOM#{ROOM}" and item["sk"]["S"].startswith(where)
    ]  # fmt: skip
    assert any(expected_pseudonym("bob.brown") in (repr(item) + _blob(item)) for item in state)  # where he is kept

    for body in (
        lk.track_unpublished(room, bob, "TR_mic_b", T0 + 700, video=False),  # in order: the window moves on
        lk.participant_joined(room, bob),  # late, far behind the state's horizon: rebuilt
    ):
        rated_one_by_one(runner, lambda_context, body)
        assert raw_identities(stack, names) == {}
    assert {sid: stored.session.identity for sid, stored in sessions(stack).items()} == {
        "PA_alice01": expected_pseudonym("alice.smith"),
        "PA_bob0001": expected_pseudonym("bob.brown"),
        "PA_carol01": expected_pseudonym("carol.jones"),
    }


def _blob(item: dict[str, Any]) -> str:
    """A room header's state blob, decompressed ("" for any other item)."""
    import zlib  # noqa: PLC0415

    return zlib.decompress(item["state_zlib"]["B"]).decode() if "state_zlib" in item else ""


def test_given_sessions_stored_before_the_account_registered_when_it_is_erased_then_no_item_names_them(
    stack: Stack, account_api: Any, lambda_context: LambdaContext
) -> None:
    """D276, D292: the room names the account before anybody registered it, so its minutes are the bucket's;
    the sessions are stored under the id the room named, so once the account is registered its erasure lists them
    like its own - their identities, and the running state's, go."""
    names = {"alice.smith", "carol.jones"}
    room, alice, carol = alice_and_carol()
    runner = Lambda(stack)
    rated_one_by_one(
        runner,
        lambda_context,
        lk.room_started(room, T0),
        lk.participant_joined(room, alice),
        lk.participant_joined(room, carol),
        lk.participant_left(room, alice, T0 + 610),
    )
    named = raw_identities(stack, names)
    assert {key for key in named if "|SESSION#" in key} == {f"ROOM#{ROOM}|SESSION#PA_alice01",
                                                            f"ROOM#{ROOM}|SESSION#PA_carol01"}  # fmt: skip
    assert f"ROOM#{ROOM}|STATE" in named  # carol is still in the call: the running state names them

    register(stack, ACCOUNT)  # the operator registers it, then its owner asks for erasure
    store_members(stack, ACCOUNT, {"user-1": "owner"})
    erased = call("POST", f"/v1/accounts/{ACCOUNT}/erase", claims(ACCOUNT, "owner"))
    assert erased.status == 200, erased.body
    assert erased.body["sessions_pseudonymised"] == 2
    assert raw_identities(stack, names) == {}  # before: both sessions (the bucket's) and the state named them

    deliver_webhook(lk.participant_left(room, carol, T0 + 900), lambda_context)  # rated after the erasure
    run_stream(runner, lambda_context)
    assert raw_identities(stack, names) == {}
    assert {sid: stored.session.identity for sid, stored in sessions(stack).items()} == {
        "PA_alice01": expected_pseudonym("alice.smith"),
        "PA_carol01": expected_pseudonym("carol.jones"),
    }
