"""A deterministic month of LiveKit and app traffic for the local stack, with its ground truth.

``simulate`` plans every call (room) of every account up front from one seeded ``random.Random``, then delivers the
calls' webhooks - LiveKit's exact JSON, from ``kilo_dev.livekit_events`` - merged across rooms in simulated-time order,
keeps the RoomService stand-in's room table current, moves the simulated clock (``Sink.advance``) and sends the app's
usage reports (messages, data transfer) in batches. What the traffic really used is returned as ``Truth``, worked out
here with plain arithmetic from the plan (never with the product's measuring code), so the product can be checked
against it.

What the traffic holds (billing-policy.md, livekit.md):
- calls of 2-6 participants, 1-90 minutes, people joining and leaving at different times (``joinedAtMs`` with
  millisecond jitter, ``participant_left`` at whole seconds); microphones (audio); cameras turned on and off mid-call
  (each "on" is a new published track); screen shares (video) with their audio sometimes; an agent now and then;
- full reconnects: ``participant_left`` of sid A and ``participant_joined`` of a new sid B for the same identity - when
  B joined before A's left was queued, the left is delivered after the joined;
- lost ``participant_left`` events, only for the last one to leave a room, whose ``room_finished`` then carries that
  same second (its video tracks are unpublished explicitly before, so the video truth is unambiguous);
- given ``lost_join_clear_of``, one participant whose ``participant_joined`` AND ``participant_left`` are both lost
  (his track events kept; D375: the product cannot tell his kind and does not bill him, so neither does the truth);
- exactly one connection across the start of ``end_s``'s month (a call from before midnight to after it);
- given ``upgrade_at_s``, one call of each upgrading account whose host is connected across its upgrade, camera on
  before it and off a while after, and a screen share after it (so both segments get video and audio seconds);
- per call, one ``messages`` and one ``data_transfer`` report stamped with the call's end; a few are sent twice
  (retries; the truth counts them once).

Truth per connection: connected seconds = left - joinedAtMs / 1000; video seconds = its overlap with the union of the
room's video-track intervals; split at month boundaries, each part: minutes = ceil(seconds / 60), video = min(minutes,
ceil(video seconds / 60)), audio = the rest. Each part is kept with its end and its video spans, so the ground truth
can share its minutes out to the tier segments it overlaps. Event ids come from the builders (one counter per
process), sids from the seed.
"""

from __future__ import annotations

import functools
import math
import random
import string
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from fractions import Fraction
from typing import Any, Protocol

from kilo_dev import livekit_events as lk
from kilo_dev.livekit_events import Participant, Room

DAY = 86_400
TIERS = ("personal", "team", "enterprise")
METERS = ("video", "audio", "messages", "data_transfer_bytes")
_TOPICS = ("standup", "sync", "design", "support", "one-on-one", "review", "demo", "planning", "interview", "retro")
_ALPHABET = string.ascii_letters + string.digits


@dataclass(frozen=True)
class AccountSpec:
    """One simulated billing account and how it uses calls."""

    account_id: str
    tier: str  # "personal" | "team" | "enterprise"
    activity: float = 1.0  # multiplies rooms_per_account_per_day
    max_participants: int = 6  # 2..6 per call
    video_share: float = 0.6  # share of calls in which cameras are used
    screen_share: float = 0.2  # share of calls with a screen share
    users: int = 8  # identities the account's calls draw from
    agent_share: float = 0.0  # share of calls an AGENT participant joins
    messaging: float = 1.0  # multiplies the chat messages the app reports per call minute
    upgrade_to: str | None = None  # a tier the account upgrades to in the middle of the month (the demo says when)
    downgrade_to: str | None = None  # a lower tier the account requests (it takes effect at the next month's start)


@dataclass(frozen=True)
class Connection:
    """Ground truth of one participant connection (a LiveKit session: room sid + participant sid)."""

    account_id: str
    room_sid: str
    room_name: str
    participant_sid: str
    identity: str
    joined_ms: int
    left_s: int
    left_delivered: bool = True  # False: its participant_left was lost (never sent)
    replaces: str = ""  # a full reconnect: the sid of the connection this one replaced
    join_delivered: bool = True  # False: its participant_joined was lost (D375, D438: see ``_account_truth``)
    swept: bool = False  # his join lost, connected when a sweep ran: the sweeper's stand-in join expected (D438)


@dataclass(frozen=True)
class UsageAt:
    """One piece of what an account used, with the instant that places it in a tier segment: a connection's part in
    a period (at = where the part starts: the join, or the period's start for the part after a month end; minutes) or
    an app report (at = its timestamp; messages or bytes)."""

    account_id: str
    period: str
    at_ms: int
    meter: str  # one of METERS
    quantity: int
    # a connection's part: where it ends (ms) and the room's video spans inside it - the ground truth shares its
    # minutes out to the tier segments it overlaps (D282); None for an app report
    end_ms: int | None = None
    video_ms: tuple[tuple[int, int], ...] = ()


@dataclass
class Truth:
    """What each account really used, per period (UTC month "YYYY-MM")."""

    minutes: dict[tuple[str, str], dict[str, int]] = field(default_factory=dict)
    usage: list[UsageAt] = field(default_factory=list)  # the same, piece by piece
    connections: list[Connection] = field(default_factory=list)
    room_finished_s: dict[str, int] = field(default_factory=dict)  # room sid -> room_finished createdAt
    minutes_of: dict[str, int] = field(default_factory=dict)  # participant sid -> his video + audio minutes counted
    duplicated_usage_keys: list[str] = field(default_factory=list)  # reports sent twice
    webhooks: int = 0  # webhooks delivered
    usage_events: int = 0  # usage events sent, retries included

    def add(
        self,
        account: str,
        period: str,
        meter: str,
        quantity: int,
        at_ms: int,
        end_ms: int | None = None,
        video_ms: tuple[tuple[int, int], ...] = (),
    ) -> None:
        row = self.minutes.setdefault((account, period), dict.fromkeys(METERS, 0))
        row[meter] += quantity
        self.usage.append(UsageAt(account, period, at_ms, meter, quantity, end_ms, video_ms))

    def as_json(self) -> dict[str, Any]:
        """``{"accounts": {account: {period: {video, audio, messages, data_transfer_bytes, data_transfer_gb}}}}``."""
        accounts: dict[str, dict[str, dict[str, Any]]] = {}
        for (account, period), row in sorted(self.minutes.items()):
            steps = -(-row["data_transfer_bytes"] // 10**7)  # 0.01 GB steps, rounded up
            gb = f"{steps // 100}.{steps % 100:02d}"
            accounts.setdefault(account, {})[period] = dict(row) | {"data_transfer_gb": gb}
        return {
            "accounts": accounts,
            "connections": len(self.connections),
            "rooms": len(self.room_finished_s),
            "lost_participant_left": sum(1 for c in self.connections if not c.left_delivered),
            "lost_participant_joined": sum(1 for c in self.connections if not c.join_delivered),
            "reconnects": sum(1 for c in self.connections if c.replaces),
            "duplicated_usage_reports": len(self.duplicated_usage_keys),
            "webhooks": self.webhooks,
            "usage_events": self.usage_events,
        }


class Sink(Protocol):
    """How the simulator delivers; the runtime provides HTTP implementations."""

    def webhook(self, body: bytes) -> None: ...  # a LiveKit webhook body (the sink signs and POSTs it)

    def usage(self, events: list[dict[str, Any]]) -> None: ...  # app usage events (the sink signs and POSTs them)

    def advance(self, now_s: int) -> None: ...  # simulated time moved to now_s


class RoomTable(Protocol):
    """What the simulator keeps current in ``kilo_dev.fake_livekit.FakeLiveKit``: room name -> [(sid, identity)],
    and participant sid -> more of his ``ParticipantInfo`` (kind by name, ``joined_at``, ``joined_at_ms``) for
    whoever is connected now, so ListParticipants answers as LiveKit would (D438)."""

    rooms: dict[str, list[tuple[str, str]]]
    infos: dict[str, dict[str, Any]]


def default_accounts(n: int) -> list[AccountSpec]:
    """``n`` accounts cycling personal, team, enterprise, with ids like ``acct-team-03`` and varied activity.

    Two accounts upgrade in the middle of the month: the first personal account to team (it chats past the Personal
    allowance before it upgrades, so its bill shows overage on a prorated allowance) and the second team account to
    enterprise; the first enterprise account requests a downgrade to team (effective at the next month's start).
    """
    counts = dict.fromkeys(TIERS, 0)
    specs = []
    for index in range(n):
        tier = TIERS[index % 3]
        counts[tier] += 1
        spread = 0.8 + 0.4 * ((index * 7) % 5) / 4  # 0.8 .. 1.2, deterministic
        if tier == "personal":
            # the first personal account chats a lot: past its 100,000 included messages, so the bill shows overage
            first = counts[tier] == 1
            spec = AccountSpec(f"acct-{tier}-{counts[tier]:02d}", tier, 0.4 * spread, 4, 0.5, 0.1, 5, 0.0,
                               400.0 if first else 1.0, "team" if first else None)  # fmt: skip
        elif tier == "team":
            upgrade = "enterprise" if counts[tier] == 2 else None
            spec = AccountSpec(f"acct-{tier}-{counts[tier]:02d}", tier, 0.8 * spread, 6, 0.65, 0.25, 12, 0.15,
                               upgrade_to=upgrade)  # fmt: skip
        else:  # the first enterprise account asks to go down to team (from the next month on)
            spec = AccountSpec(f"acct-{tier}-{counts[tier]:02d}", tier, 1.2 * spread, 6, 0.75, 0.3, 30, 0.25,
                               downgrade_to="team" if counts[tier] == 1 else None)  # fmt: skip
        specs.append(spec)
    return specs


# --- the plan ---------------------------------------------------------------------------------------------------------


@dataclass
class _Conn:
    participant: Participant
    left_s: int
    left_delivered: bool = True
    replaces: str = ""
    join_delivered: bool = True


@dataclass
class _Track:
    sid: str
    conn: _Conn
    video: bool
    source: str
    start_s: int
    end_s: int  # when it really ended (<= its publisher's leave)
    unpublish_sent: bool  # False: it ended with its publisher's leave and no track_unpublished was sent


@dataclass
class _Call:
    account: AccountSpec
    room: Room
    conns: list[_Conn]
    tracks: list[_Track]
    finished_s: int
    usage: list[dict[str, Any]] = field(default_factory=list)


@dataclass(frozen=True)
class _Mix:
    reconnect_rate: float
    lost_left_rate: float
    usage_retry_rate: float


class _Ids:
    """LiveKit-looking sids (``RM_``/``PA_``/``TR_`` + 12 characters) from the seed, never repeated."""

    def __init__(self, rng: random.Random) -> None:
        self._rng = rng
        self._seen: set[str] = set()

    def new(self, prefix: str) -> str:
        while True:
            sid = prefix + "".join(self._rng.choice(_ALPHABET) for _ in range(12))
            if sid not in self._seen:
                self._seen.add(sid)
                return sid


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def _poisson(rng: random.Random, lam: float) -> int:
    limit, k, product = math.exp(-lam), 0, rng.random()
    while product > limit:
        k += 1
        product *= rng.random()
    return k


def _iso(seconds: int) -> str:
    return datetime.fromtimestamp(seconds, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _month_start(seconds: int) -> int:
    """The first instant (epoch s) of the UTC month holding ``seconds``."""
    day = datetime.fromtimestamp(seconds, tz=UTC)
    return int(datetime(day.year, day.month, 1, tzinfo=UTC).timestamp())


def _month_start_after(seconds: int) -> int:
    """The first instant (epoch s) of the UTC month after the one holding ``seconds``."""
    day = datetime.fromtimestamp(seconds, tz=UTC)
    year, month = (day.year + 1, 1) if day.month == 12 else (day.year, day.month + 1)
    return int(datetime(year, month, 1, tzinfo=UTC).timestamp())


def _participant_count(rng: random.Random, spec: AccountSpec) -> int:
    sizes = [size for size in (2, 3, 4, 5, 6) if size <= max(2, spec.max_participants)]
    weights = (40, 25, 15, 12, 8)[: len(sizes)]
    return rng.choices(sizes, weights)[0]


def _new_conn(ids: _Ids, identity: str, joined_ms: int, left_s: int, kind: str | None = None) -> _Conn:
    return _Conn(Participant(ids.new("PA_"), identity, joined_ms, kind), left_s)


def _people(rng: random.Random, ids: _Ids, spec: AccountSpec, first_ms: int, duration_s: int) -> list[_Conn]:
    """Who joins when and leaves when; exactly one last leaver, strictly after everyone else."""
    count = _participant_count(rng, spec)
    agent = count > 2 and rng.random() < spec.agent_share
    humans = rng.sample(range(max(spec.users, count)), count - int(agent))
    duration_ms = duration_s * 1000
    last_left_s = _ceil_div(first_ms + duration_ms, 1000)
    last = rng.randrange(count)
    conns = []
    for index in range(count):
        identity = f"{spec.account_id}-user{humans[index]:02d}" if index < len(humans) else "kilo-agent"
        kind = None if index < len(humans) else "AGENT"
        joined_ms = first_ms if index == 0 else first_ms + int(rng.uniform(0, 0.3) * duration_ms) + rng.randint(1, 999)
        if index == last:
            left_s = last_left_s
        else:
            share = rng.uniform(0.35, 0.7) if rng.random() < 0.15 else rng.uniform(0.7, 1.0)
            left_s = _ceil_div(first_ms + int(share * duration_ms), 1000)
            left_s = max(min(left_s, last_left_s - 1), _ceil_div(joined_ms, 1000) + 10)
        conns.append(_new_conn(ids, identity, joined_ms, left_s, kind))
    return conns


def _reconnect(rng: random.Random, ids: _Ids, conns: list[_Conn]) -> None:
    """A full reconnect of one long enough connection: left of sid A, joined of a new sid B (same identity)."""
    candidates = [c for c in conns if not c.participant.kind and c.left_s - c.participant.joined_at_ms // 1000 >= 120]
    if not candidates:
        return
    old = rng.choice(candidates)
    at_s = rng.randint(_ceil_div(old.participant.joined_at_ms, 1000) + 40, old.left_s - 40)
    # 60 %: the new connection is up before the old one's left is queued (the left arrives after the joined);
    # otherwise the connection dropped and is back a few seconds later
    overlap = rng.random() < 0.6
    joined_ms = at_s * 1000 - rng.randint(0, 1500) if overlap else at_s * 1000 + rng.randint(1000, 8000)
    new = _new_conn(ids, old.participant.identity, joined_ms, old.left_s)
    new.replaces = old.participant.sid
    old.left_s = at_s
    conns.append(new)


def _camera(rng: random.Random, ids: _Ids, conn: _Conn) -> list[_Track]:
    """Camera on and off: every "on" publishes a new track; the last may run until the publisher leaves."""
    tracks = []
    at = _ceil_div(conn.participant.joined_at_ms, 1000) + rng.randint(1, 30)
    while at < conn.left_s - 5:
        on = conn.left_s - at if rng.random() < 0.5 else rng.randint(20, max(21, conn.left_s - at))
        end = min(conn.left_s, at + on)
        sent = end < conn.left_s or rng.random() < 0.5
        tracks.append(_Track(ids.new("TR_"), conn, True, "CAMERA", at, end, sent))
        at = end + rng.randint(10, 300)
    return tracks


def _tracks(rng: random.Random, ids: _Ids, spec: AccountSpec, conns: list[_Conn]) -> list[_Track]:
    tracks: list[_Track] = []
    video_call = rng.random() < spec.video_share
    for conn in conns:
        start = _ceil_div(conn.participant.joined_at_ms, 1000) + rng.randint(0, 2)
        if start < conn.left_s:
            tracks.append(_Track(ids.new("TR_"), conn, False, "MICROPHONE", start, conn.left_s, rng.random() < 0.5))
        if video_call and not conn.participant.kind and rng.random() < 0.7:
            tracks.extend(_camera(rng, ids, conn))
    sharers = [c for c in conns if not c.participant.kind and c.left_s - c.participant.joined_at_ms // 1000 >= 60]
    if sharers and rng.random() < spec.screen_share:
        conn = rng.choice(sharers)
        start = rng.randint(_ceil_div(conn.participant.joined_at_ms, 1000) + 5, conn.left_s - 30)
        end = min(conn.left_s, start + rng.randint(30, 1200))
        sent = end < conn.left_s or rng.random() < 0.5
        tracks.append(_Track(ids.new("TR_"), conn, True, "SCREEN_SHARE", start, end, sent))
        if rng.random() < 0.3:
            tracks.append(_Track(ids.new("TR_"), conn, False, "SCREEN_SHARE_AUDIO", start, end, sent))
    return tracks


def _lose_last_left(rng: random.Random, conns: list[_Conn], tracks: list[_Track]) -> _Conn:
    """The last leaver's participant_left is lost; its video tracks were unpublished explicitly a little before."""
    last = max(conns, key=lambda c: c.left_s)
    last.left_delivered = False
    kept = []
    for track in tracks:
        if track.conn is last and track.video:
            track.end_s = min(track.end_s, last.left_s - rng.randint(1, 5))
            track.unpublish_sent = True
            if track.end_s <= track.start_s:
                continue
        kept.append(track)
    tracks[:] = kept
    return last


def _lose_a_join(calls: Sequence[_Call], clear_of: tuple[int, int]) -> list[_Conn]:
    """Two participants' ``participant_joined`` are lost, their track events kept (D375), each in a room of his own:
    the first fitting participant (in the calls' order) has his ``participant_left`` lost too - known to the product
    only by his tracks, which are unpublished explicitly (no leave ends them); the next fitting one, in another room,
    has his ``participant_left`` delivered (it carries ``joinedAt`` and the kind: D438). Fitting: not his room's
    last leaver, no agent, no part of a reconnect, publishes a track, in a room of three or more whose other events
    all arrive, and connected clear of every sweep (``clear_of`` = (stride, offset): the sweeper runs at the first
    clock setting at or after each instant ``offset + k x stride``, within a ``tick_s`` of it - no instant from 300 s
    before his join to 600 s after his leave), so RoomService never lists him to a sweep and no sweep finds his room
    gone while rating may still hold him join-less. Fewer (or none) when fewer fit."""
    stride, offset = clear_of
    lost: list[_Conn] = []
    for call in calls:
        if len(call.conns) < 3 or any(not c.left_delivered or c.replaces for c in call.conns):
            continue
        last = max(call.conns, key=lambda c: c.left_s)
        identities = [c.participant.identity for c in call.conns]
        for conn in call.conns:
            p = conn.participant
            join_s, until = p.joined_at_ms // 1000, conn.left_s + 600
            sweep = until - (until - offset) % stride  # the last sweep instant at or before ``until``
            mine = [t for t in call.tracks if t.conn is conn]
            if conn is last or p.kind or identities.count(p.identity) > 1 or not mine or sweep >= join_s - 300:
                continue
            conn.join_delivered = False
            if not lost:  # the first: his leave lost too
                conn.left_delivered = False
                for track in mine:
                    track.unpublish_sent = True
            lost.append(conn)
            break
        if len(lost) == 2:
            break
    return lost


def _usage(rng: random.Random, call: _Call) -> None:
    """The app's reports for the call, stamped with its end."""
    minutes = sum(c.left_s - c.participant.joined_at_ms / 1000 for c in call.conns) / 60
    stamp, account, sid = _iso(call.finished_s), call.account.account_id, call.room.sid
    messages = int(minutes * rng.uniform(0.2, 4.0) * call.account.messaging)
    if messages:
        call.usage.append({"idempotency_key": f"{sid}-messages", "account_id": account, "meter": "messages",
                           "quantity": messages, "timestamp": stamp})  # fmt: skip
    call.usage.append({"idempotency_key": f"{sid}-data", "account_id": account, "meter": "data_transfer",
                       "quantity": rng.randint(1_000_000, 500_000_000), "timestamp": stamp})  # fmt: skip


def _plan_call(
    rng: random.Random, ids: _Ids, spec: AccountSpec, name: str, first_ms: int, duration_s: int, limit_s: int, mix: _Mix
) -> _Call:
    """One call whose room_finished is at most ``limit_s``."""
    room = Room(ids.new("RM_"), name, spec.account_id, first_ms // 1000)
    conns = _people(rng, ids, spec, first_ms, duration_s)
    if rng.random() < mix.reconnect_rate:
        _reconnect(rng, ids, conns)
    tracks = _tracks(rng, ids, spec, conns)
    last_left = max(c.left_s for c in conns)
    if rng.random() < mix.lost_left_rate:
        finished = _lose_last_left(rng, conns, tracks).left_s
    else:
        finished = min(limit_s, last_left + rng.randint(0, 20))  # LiveKit's departure timeout
    call = _Call(spec, room, conns, tracks, finished)
    _usage(rng, call)
    return call


def _boundary_call(
    rng: random.Random, ids: _Ids, spec: AccountSpec, boundary: int, start_s: int, end_s: int, topic: str = "all-hands"
) -> _Call | None:
    """The one connection across the month boundary (or an account's upgrade), with company before it and after it."""
    before = min(rng.randint(600, 1800), boundary - start_s - 5)
    after = min(rng.randint(300, 1500), end_s - boundary - 25)
    if before < 60 or after < 60:
        return None  # the window leaves no room for a call across midnight
    room = Room(ids.new("RM_"), f"{spec.account_id}-{topic}", spec.account_id, boundary - before)
    host = _new_conn(
        ids, f"{spec.account_id}-user00", (boundary - before) * 1000 + rng.randint(0, 999), boundary + after
    )
    conns, tracks = [host], []
    host_join_s = _ceil_div(host.participant.joined_at_ms, 1000)
    tracks.append(_Track(ids.new("TR_"), host, False, "MICROPHONE", host_join_s, host.left_s, False))
    camera_off = boundary + max(1, after // 2)
    tracks.append(_Track(ids.new("TR_"), host, True, "CAMERA", host_join_s + rng.randint(5, 40), camera_off, True))
    if before >= 240:  # someone who leaves before midnight
        early_ms = host.participant.joined_at_ms + rng.randint(20_000, 60_000)
        early = _new_conn(ids, f"{spec.account_id}-user01", early_ms, boundary - rng.randint(60, 120))
        conns.append(early)
        tracks.append(_Track(ids.new("TR_"), early, False, "MICROPHONE", early_ms // 1000 + 1, early.left_s, True))
    if after >= 240:  # someone who joins after midnight and shares a screen
        late_ms = (boundary + rng.randint(30, 90)) * 1000 + rng.randint(0, 999)
        late = _new_conn(ids, f"{spec.account_id}-user02", late_ms, host.left_s - rng.randint(20, 60))
        conns.append(late)
        share = late_ms // 1000 + 5
        tracks.append(_Track(ids.new("TR_"), late, True, "SCREEN_SHARE", share, late.left_s - 10, True))
    call = _Call(spec, room, conns, tracks, host.left_s + rng.randint(0, 20))
    _usage(rng, call)
    return call


def _start_in(rng: random.Random, lo: int, hi: int) -> int:
    """A start second in [lo, hi], favouring 08:00-20:00 UTC (thinning, a few tries)."""
    at = rng.randint(lo, hi)
    for _ in range(8):
        if 8 <= (at % DAY) // 3600 < 20 or rng.random() < 0.3:
            break
        at = rng.randint(lo, hi)
    return at


def _room_name(spec: AccountSpec, topic: str, start: int, end: int, busy: dict[str, list[tuple[int, int]]]) -> str:
    """Room names are reused across calls (new sid each time), never by two rooms at once."""
    base = f"{spec.account_id}-{topic}"
    name, suffix = base, 1
    while any(start <= b and a <= end for a, b in busy.get(name, [])):
        suffix += 1
        name = f"{base}-{suffix}"
    busy.setdefault(name, []).append((start, end))
    return name


def _plan(
    rng: random.Random,
    ids: _Ids,
    accounts: Sequence[AccountSpec],
    start_s: int,
    end_s: int,
    rate: float,
    mix: _Mix,
    upgrade_at_s: int | None = None,
) -> list[_Call]:
    calls: list[_Call] = []
    boundary = _month_start(end_s)  # the start of end_s's month: one call runs across it
    busy: dict[str, list[tuple[int, int]]] = {}
    if start_s < boundary < end_s and accounts:
        special = _boundary_call(rng, ids, rng.choice(list(accounts)), boundary, start_s, end_s)
        if special is not None:
            busy[special.room.name] = [(special.room.created_at, special.finished_s)]
            calls.append(special)
    if upgrade_at_s is not None and start_s < upgrade_at_s < end_s:
        for spec in accounts:  # each upgrading account is in a call across its upgrade (D282)
            if spec.upgrade_to and _month_start(upgrade_at_s) == _month_start(upgrade_at_s + 1800):
                across = _boundary_call(rng, ids, spec, upgrade_at_s, start_s, end_s, "town-hall")
                if across is not None:
                    busy[across.room.name] = [(across.room.created_at, across.finished_s)]
                    calls.append(across)
    day = start_s - start_s % DAY
    while day < end_s:
        lo, hi = max(day, start_s), min(day + DAY, end_s)  # a day never crosses a month boundary
        for spec in accounts:
            for _ in range(_poisson(rng, rate * spec.activity * (hi - lo) / DAY)):
                duration = min(5400, max(60, int(rng.lognormvariate(math.log(18 * 60), 0.7))))
                duration = min(duration, hi - lo - 60)
                if duration < 60:
                    continue
                first_s = _start_in(rng, lo, hi - duration - 25)
                first_ms = first_s * 1000 + rng.randint(0, 999)
                name = _room_name(spec, rng.choice(_TOPICS), first_s, first_s + duration + 22, busy)
                calls.append(_plan_call(rng, ids, spec, name, first_ms, duration, hi - 1, mix))
        day += DAY
    calls.sort(key=lambda c: (c.room.created_at, c.room.sid))
    return calls


# --- the truth (plain arithmetic, independent of the product) --------------------------------------------------------


def _period(ms: int) -> str:
    day = datetime.fromtimestamp(ms // 1000, tz=UTC)
    return f"{day.year:04d}-{day.month:02d}"


def _union(spans: list[tuple[int, int]]) -> list[tuple[int, int]]:
    merged: list[tuple[int, int]] = []
    for a, b in sorted(spans):
        if merged and a <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], b))
        else:
            merged.append((a, b))
    return merged


def connection_parts(joined_ms: int, left_s: int, video_ms: list[tuple[int, int]]) -> list[tuple[str, int, int, int]]:
    """(period, part start ms, video minutes, audio minutes) of one connection, split at month boundaries, each part
    rounded."""
    parts = []
    a, end = joined_ms, left_s * 1000
    while a < end:
        b = min(end, _month_start_after(a // 1000) * 1000)
        connected = Fraction(b - a, 1000)
        video = Fraction(sum(max(0, min(b, y) - max(a, x)) for x, y in video_ms), 1000)
        total = math.ceil(connected / 60)
        video_minutes = min(total, math.ceil(video / 60))
        parts.append((_period(a), a, video_minutes, total - video_minutes))
        a = b
    return parts


def connection_minutes(joined_ms: int, left_s: int, video_ms: list[tuple[int, int]]) -> list[tuple[str, int, int]]:
    """(period, video minutes, audio minutes) of one connection, split at month boundaries, each part rounded."""
    return [(period, video, audio) for period, _, video, audio in connection_parts(joined_ms, left_s, video_ms)]


def _account_truth(truth: Truth, call: _Call) -> None:
    account = call.account.account_id
    video_ms = _union([(t.start_s * 1000, t.end_s * 1000) for t in call.tracks if t.video])
    for conn in call.conns:
        p = conn.participant
        truth.connections.append(
            Connection(account, call.room.sid, call.room.name, p.sid, p.identity, p.joined_at_ms, conn.left_s,
                       conn.left_delivered, conn.replaces, conn.join_delivered)
        )  # fmt: skip
        if not conn.join_delivered and not conn.left_delivered:
            # D375: a participant whose participant_joined and participant_left were both lost is known to the
            # product only by his track events; once the room finished it stores a session of kind UNKNOWN, NOT
            # billed (his kind cannot be told), and counts it (SessionsJoinLost). He left before any sweep ran
            # (``_lose_a_join``), so RoomService never listed him to the sweeper: this rule holds whether or not the
            # sweeper bills a listed join-less participant by his real kind. His tracks still count as the room's
            # video coverage for the others (``video_ms`` above). One whose participant_left arrives (D438) is
            # counted below as if nothing were lost: the leave carries his join time and kind (D375).
            continue
        parts = connection_parts(p.joined_at_ms, conn.left_s, video_ms)
        ends = [start_ms for _, start_ms, _, _ in parts[1:]] + [conn.left_s * 1000]
        for (period, start_ms, video, audio), end_ms in zip(parts, ends, strict=True):
            inside = tuple((max(a, start_ms), min(b, end_ms)) for a, b in video_ms if a < end_ms and b > start_ms)
            truth.add(account, period, "video", video, start_ms, end_ms, inside)
            truth.add(account, period, "audio", audio, start_ms, end_ms, inside)
        truth.minutes_of[p.sid] = sum(video + audio for _, _, video, audio in parts)
    for report in call.usage:  # each report once, however often it is sent, at its timestamp (the call's end)
        meter = "messages" if report["meter"] == "messages" else "data_transfer_bytes"
        truth.add(account, _period(call.finished_s * 1000), meter, report["quantity"], call.finished_s * 1000)
    truth.room_finished_s[call.room.sid] = call.finished_s


# --- delivery ---------------------------------------------------------------------------------------------------------

# order of a room's events within one second
_ROOM_STARTED, _JOINED, _PUBLISHED, _UNPUBLISHED, _LEFT, _ROOM_FINISHED = range(6)


@dataclass
class _Item:
    at: int
    room_index: int
    order: int
    seq: int
    build: Callable[[], bytes] | None  # None: the event is lost (not delivered)
    state: tuple[str, str, str, str]  # (op, room name, participant sid, identity), op "" = no change
    usage: list[dict[str, Any]] = field(default_factory=list)
    listed: dict[str, Any] = field(default_factory=dict)  # a join: more of what ListParticipants says of him


def _items(call: _Call, room_index: int) -> list[_Item]:
    room, name = call.room, call.room.name
    items: list[_Item] = []

    def add(at: int, order: int, build: Callable[[], bytes] | None, state: tuple[str, str, str, str]) -> None:
        items.append(_Item(at, room_index, order, len(items), build, state))

    add(
        room.created_at,
        _ROOM_STARTED,
        functools.partial(lk.room_started, room, room.created_at),
        ("start", name, "", ""),
    )
    for conn in call.conns:
        p = conn.participant
        joined = functools.partial(lk.participant_joined, room, p) if conn.join_delivered else None
        add(p.joined_at_ms // 1000, _JOINED, joined, ("join", name, p.sid, p.identity))
        # RoomService lists him from his join, lost webhook or not: his kind and join time (D438)
        items[-1].listed = p.listed()
        left = functools.partial(lk.participant_left, room, p, conn.left_s) if conn.left_delivered else None
        add(conn.left_s, _LEFT, left, ("leave", name, p.sid, p.identity))
    for track in call.tracks:
        p = track.conn.participant
        add(track.start_s, _PUBLISHED, functools.partial(lk.track_published, room, p, track.sid, track.start_s,
            video=track.video, source=track.source), ("", name, "", ""))  # fmt: skip
        if track.unpublish_sent:
            add(track.end_s, _UNPUBLISHED, functools.partial(lk.track_unpublished, room, p, track.sid, track.end_s,
                video=track.video, source=track.source), ("", name, "", ""))  # fmt: skip
    add(call.finished_s, _ROOM_FINISHED, functools.partial(lk.room_finished, room, call.finished_s),
        ("finish", name, "", ""))  # fmt: skip
    items[-1].usage = list(call.usage)
    return items


class _Delivery:
    """Delivers in simulated-time order, moves the clock, keeps the room table current, batches usage."""

    def __init__(self, sink: Sink, livekit: RoomTable | None, rng: random.Random, mix: _Mix, truth: Truth,
                 progress: Callable[[str], None] | None, tick_s: int, batch_size: int, max_usage_delay_s: int,
                 rooms: int) -> None:  # fmt: skip
        self.sink, self.livekit, self.rng, self.mix, self.truth = sink, livekit, rng, mix, truth
        self.progress, self.tick_s, self.batch_size, self.max_delay = progress, tick_s, batch_size, max_usage_delay_s
        self.rooms, self.finished = rooms, 0
        self.clock: int | None = None
        self.pending: list[tuple[int, dict[str, Any]]] = []  # (timestamp s, event)
        self.retries: list[dict[str, Any]] = []
        self.delivered = 0

    def _advance(self, now: int) -> None:
        if self.pending and (_period(now * 1000) != _period(self.pending[0][0] * 1000)
                             or now - self.pending[0][0] >= self.max_delay):  # fmt: skip
            self.flush()  # usage of a month is in before the clock leaves that month
        self.sink.advance(now)
        self.clock = now

    def move_to(self, now: int) -> None:
        if self.clock is None:
            self._advance(now)
            return
        if now <= self.clock:
            return
        tick = self.clock - self.clock % self.tick_s + self.tick_s
        while tick < now:
            self._advance(tick)
            tick += self.tick_s
        self._advance(now)

    def _state(self, item: _Item) -> None:
        op, room, sid, identity = item.state
        if self.livekit is None or not op:
            return
        table = self.livekit.rooms
        if op == "start":
            table[room] = []
        elif op == "join":
            table[room] = [*table.get(room, []), (sid, identity)]
            self.livekit.infos[sid] = dict(item.listed)
        elif op == "leave":
            table[room] = [entry for entry in table.get(room, []) if entry[0] != sid]
            self.livekit.infos.pop(sid, None)
        elif op == "finish":
            for gone, _ in table.pop(room, []):
                self.livekit.infos.pop(gone, None)

    def deliver(self, item: _Item) -> None:
        self.move_to(item.at)
        self._state(item)
        if item.build is not None:
            self.sink.webhook(item.build())
            self.truth.webhooks += 1
            self.delivered += 1
            if self.progress is not None and self.delivered % 250 == 0:
                self.progress(f"{_iso(item.at)}: {self.truth.webhooks:,} webhooks, {self.truth.usage_events:,} usage "
                              f"events, {self.finished}/{self.rooms} calls done")  # fmt: skip
        if item.state[0] == "finish":
            self.finished += 1
        for event in item.usage:
            self.pending.append((item.at, event))
        if len(self.pending) >= self.batch_size:
            self.flush()

    def _send(self, events: list[dict[str, Any]]) -> None:
        self.sink.usage(events)
        self.truth.usage_events += len(events)

    def flush(self) -> None:
        """Send what is pending, with earlier batches' retries in front; pick this batch's retries."""
        if not self.pending and not self.retries:
            return
        batch = self.retries + [event for _, event in self.pending]
        self.truth.duplicated_usage_keys.extend(event["idempotency_key"] for event in self.retries)
        self.retries = [event for _, event in self.pending if self.rng.random() < self.mix.usage_retry_rate]
        self.pending = []
        self._send(batch)

    def finish(self, first_report: dict[str, Any] | None) -> None:
        self.flush()
        if not self.truth.duplicated_usage_keys and not self.retries and first_report is not None:
            self.retries = [first_report]  # at least one retry in every run that reports anything
        if self.retries:
            self.truth.duplicated_usage_keys.extend(event["idempotency_key"] for event in self.retries)
            self._send(self.retries)
            self.retries = []


def simulate(
    seed: int,
    accounts: list[AccountSpec],
    start_s: int,
    end_s: int,
    sink: Sink,
    livekit: RoomTable | None = None,
    *,
    rooms_per_account_per_day: float = 1.0,
    progress: Callable[[str], None] | None = None,
    reconnect_rate: float = 0.1,
    lost_left_rate: float = 0.05,
    usage_retry_rate: float = 0.03,
    tick_s: int = 300,
    usage_batch_size: int = 50,
    max_usage_delay_s: int = 900,
    truth: Truth | None = None,
    upgrade_at_s: int | None = None,
    lost_join_clear_of: tuple[int, int] | None = None,
) -> Truth:
    """Simulate ``accounts`` from ``start_s`` to ``end_s`` (epoch s), deliver it to ``sink``; return the truth.

    ``rooms_per_account_per_day`` is the intensity (calls a day of an account with activity 1.0). ``livekit`` (a
    ``FakeLiveKit``) has its room table kept equal to who is connected as simulated time moves. ``advance`` is called at
    every event second and at least every ``tick_s`` simulated seconds, never backwards; usage is flushed every
    ``usage_batch_size`` events, when the oldest pending report is ``max_usage_delay_s`` old, before the clock enters a
    new month, and at the end. ``truth``: add to this one (calls the caller scripts itself) instead of a new one.
    ``upgrade_at_s``: when the accounts with ``upgrade_to`` upgrade - each is then in one call whose host is
    connected across that instant (a connection the product shares out to both tier segments).
    ``lost_join_clear_of``: (stride, offset) of the sweeper's runs - two participants, connected clear of them, have
    their ``participant_joined`` lost: one his ``participant_left`` too (D375), the other not (``_lose_a_join``).
    """
    if end_s <= start_s:
        raise ValueError(f"end_s ({end_s}) must be after start_s ({start_s})")
    rng = random.Random(seed)  # noqa: S311 - a reproducible simulation, not security
    mix = _Mix(reconnect_rate, lost_left_rate, usage_retry_rate)
    ids = _Ids(random.Random(rng.getrandbits(64)))  # noqa: S311
    calls = _plan(rng, ids, accounts, start_s, end_s, rooms_per_account_per_day, mix, upgrade_at_s)
    if lost_join_clear_of is not None:
        _lose_a_join(calls, lost_join_clear_of)
    truth = truth if truth is not None else Truth()
    for call in calls:
        _account_truth(truth, call)
    items = [item for index, call in enumerate(calls) for item in _items(call, index)]
    items.sort(key=lambda item: (item.at, item.room_index, item.order, item.seq))
    delivery = _Delivery(sink, livekit, random.Random(rng.getrandbits(64)), mix, truth, progress, tick_s,  # noqa: S311
                         usage_batch_size, max_usage_delay_s, len(calls))  # fmt: skip
    delivery.move_to(start_s)
    for item in items:
        delivery.deliver(item)
    first_report = next((report for call in calls for report in call.usage), None)
    delivery.finish(first_report)
    delivery.move_to(end_s)
    if progress is not None:
        progress(f"done: {len(calls)} calls, {truth.webhooks:,} webhooks, {truth.usage_events:,} usage events "
                 f"({len(truth.duplicated_usage_keys)} resent)")  # fmt: skip
    return truth


# --- the hard-limit scene -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class HardLimitCall:
    """The demo's call during which an account's hard budget is reached: who was in it, where, and the enforcement
    LiveKit's RoomService should see - every participant audio-only, then every participant removed."""

    account_id: str
    room: str
    identities: tuple[str, ...]
    messages: int

    def expected_enforcement(self) -> list[tuple[str, str, str]]:
        """``[(RoomService method, room, identity)]`` in order: all updates before all removals."""
        return [("UpdateParticipant", self.room, identity) for identity in self.identities] + [
            ("RemoveParticipant", self.room, identity) for identity in self.identities
        ]


def hard_limit_call(
    truth: Truth,
    sink: Sink,
    livekit: RoomTable | None,
    account_id: str,
    start_s: int,
    messages: int,
    enforced: Callable[[], None],
) -> HardLimitCall:
    """A two-person call of ``account_id`` from ``start_s``; a minute in, the app reports ``messages`` chat messages
    (the report that takes the bill past the hard limit); ``enforced`` waits until LiveKit has removed them; both
    leave two minutes after the start and the room finishes. Its truth (audio minutes, messages) is added to
    ``truth`` with the same plain arithmetic as every other call."""
    room = Room(f"RM_limit{start_s}", f"{account_id}-all-day", account_id, start_s)
    people = [Participant(f"PA_limit{start_s}a", f"{account_id}-user00", start_s * 1000 + 250),
              Participant(f"PA_limit{start_s}b", f"{account_id}-user01", start_s * 1000 + 4_750)]  # fmt: skip
    left_s, report_s = start_s + 120, start_s + 60

    def send(body: bytes) -> None:
        sink.webhook(body)
        truth.webhooks += 1

    sink.advance(start_s)
    if livekit is not None:
        livekit.rooms[room.name] = []
    send(lk.room_started(room, start_s))
    for person in people:
        sink.advance(_ceil_div(person.joined_at_ms, 1000))
        if livekit is not None:
            livekit.rooms[room.name].append((person.sid, person.identity))
            livekit.infos[person.sid] = person.listed()
        send(lk.participant_joined(room, person))
    sink.advance(report_s)
    sink.usage([{"idempotency_key": f"{room.sid}-messages", "account_id": account_id, "meter": "messages",
                 "quantity": messages, "timestamp": _iso(report_s)}])  # fmt: skip
    truth.usage_events += 1
    truth.add(account_id, _period(report_s * 1000), "messages", messages, report_s * 1000)
    enforced()
    sink.advance(left_s)
    for person in people:
        send(lk.participant_left(room, person, left_s))
        minutes = _ceil_div(left_s * 1000 - person.joined_at_ms, 1000 * 60)  # ceil(seconds / 60): no video
        truth.add(account_id, _period(person.joined_at_ms), "audio", minutes, person.joined_at_ms)
        truth.connections.append(Connection(account_id, room.sid, room.name, person.sid, person.identity,
                                            person.joined_at_ms, left_s))  # fmt: skip
    if livekit is not None:
        livekit.rooms.pop(room.name, None)
        for person in people:
            livekit.infos.pop(person.sid, None)
    send(lk.room_finished(room, left_s + 10))
    truth.room_finished_s[room.sid] = left_s + 10
    return HardLimitCall(account_id, room.name, tuple(person.identity for person in people), messages)
