"""Story: a call stored with all its minutes in the segment of its start (D3's rule before D282, or rated before a
backdated upgrade was recorded) is rebuilt after the upgrade is known; its minutes move to the segment they happened
in. Allowances are prorated by time, so the move can raise the bill: a short Team segment includes few minutes
(D320; D282's "only ever in the customer's favour" was false).

Hand-worked, 2026-01 price book (video $0.0006 x 1.2 = $0.00072 a minute):
- Personal -> Team at Nov 30 23:00Z. November has 30 x 24 = 720 hours: Team holds 1/720 of it, Personal 719/720.
  Team includes ceil(50,000 / 720) = ceil(69.44) = 70 video minutes; Personal ceil(5,000 x 719 / 720) =
  ceil(4,993.06) = 4,994.
- The call: 50 participants connected Nov 30 22:00 - Dec 1 00:00 (7,200 s each: 120 minutes), a camera on for the
  whole call, so 120 video minutes each, 6,000 in all: 3,600 s of each connection before the upgrade, 3,600 after.
- Stored by the start-segment rule: 6,000 video minutes in Personal, 1,006 over x $0.00072 = $0.72432 -> $0.72.
- Shared out (D282): each connection 60 + 60, so Personal 3,000 (inside 4,994: $0.00) and Team 3,000, 2,930 over x
  $0.00072 = $2.1096 -> $2.11. The rebuild raises November's usage by $2.11 - $0.72 = +$1.39: the policy's figure
  (rated by the tier in effect); on an invoiced November it is an adjustment line on the next invoice (D5).
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from decimal import Decimal

from kilo_billing.accounts import AccountProfile
from kilo_billing.catalog import default_catalog
from kilo_billing.meters import Meter
from kilo_billing.periods import Period
from kilo_billing.rating import TierChange
from kilo_dev import livekit_events as lk
from kilo_rate_usage.aggregates import rate_aggregate
from kilo_rate_usage.logic import rate_batch
from kilo_rate_usage.model import AttributionRule, RatingConfig
from tests.fakes import InMemoryUsageRepository, RecordingPublisher

CONFIG = RatingConfig(AttributionRule(), default_catalog().for_period)
ACCOUNT = "acct_late_upgrade"
NOV_1 = 1_793_491_200  # 2026-11-01T00:00Z: the Personal segment's start
UPGRADE = NOV_1 + 29 * 86_400 + 23 * 3_600  # 2026-11-30T23:00Z: the Team segment's start
START, END = UPGRADE - 3_600, UPGRADE + 3_600  # Nov 30 22:00 - Dec 1 00:00
NOW_MS = (END + 600) * 1000
PERSONAL = AccountProfile(ACCOUNT, (TierChange(datetime(2026, 1, 1, tzinfo=UTC), "personal"),))
UPGRADED = replace(PERSONAL, changes=(*PERSONAL.changes, TierChange(datetime.fromtimestamp(UPGRADE, UTC), "team")))


def _room() -> tuple[lk.Room, list[lk.Participant]]:
    room = lk.Room("RM_allhands", "all-hands", account_id=ACCOUNT, created_at=START)
    return room, [lk.Participant(f"PA_{i:02d}", f"person{i:02d}", START * 1000) for i in range(50)]


def _bodies() -> list[bytes]:
    room, people = _room()
    bodies = [lk.room_started(room, START)]
    bodies += [lk.participant_joined(room, person) for person in people]
    bodies.append(lk.track_published(room, people[0], "TR_cam", START, video=True))
    bodies.append(lk.track_unpublished(room, people[0], "TR_cam", END, video=True))
    bodies += [lk.participant_left(room, person, END) for person in people]
    return [*bodies, lk.room_finished(room, END + 5)]


def _rate(repo: InMemoryUsageRepository, bodies: list[bytes]) -> None:
    records = [lk.to_record(body) for body in bodies]
    for record in records:
        repo.store_event(record)
    rate_batch(records, [], repo, RecordingPublisher(), CONFIG, NOW_MS)


def _november(repo: InMemoryUsageRepository) -> tuple[dict[tuple[str, Meter], tuple[int, int, Decimal]], Decimal]:
    aggregate = repo.aggregates([(ACCOUNT, "2026-11")])[(ACCOUNT, "2026-11")]
    rated = rate_aggregate(aggregate, UPGRADED, CONFIG.book_for(Period(2026, 11)))
    lines = {(line.tier, line.meter): (line.used, line.included, line.amount) for line in rated.usage_lines}
    return {key: value for key, value in lines.items() if key[1] is Meter.VIDEO}, rated.usage_total


def test_given_a_call_stored_in_its_start_segment_when_rebuilt_after_a_late_upgrade_then_the_bill_goes_up() -> None:
    repo = InMemoryUsageRepository()
    repo.accounts.register(PERSONAL)
    _rate(repo, _bodies())  # rated while the account was known as Personal only: D3's start-segment figures
    assert repo.counters[(ACCOUNT, "2026-11")] == {(NOV_1, "video"): 6_000}
    lines, before = _november(repo)
    assert lines == {
        ("personal", Meter.VIDEO): (6_000, 4_994, Decimal("0.72")),  # 1,006 over
        ("team", Meter.VIDEO): (0, 70, Decimal("0.00")),
    }
    assert before == Decimal("0.72")

    repo.accounts.profiles[ACCOUNT] = UPGRADED  # the upgrade recorded (backdated, D120), then a late event
    room, people = _room()
    _rate(repo, [lk.track_published(room, people[1], "TR_mic", START + 1, video=False)])  # the room is rebuilt

    assert repo.counters[(ACCOUNT, "2026-11")] == {(NOV_1, "video"): 3_000, (UPGRADE, "video"): 3_000}
    lines, after = _november(repo)
    assert lines == {
        ("personal", Meter.VIDEO): (3_000, 4_994, Decimal("0.00")),
        ("team", Meter.VIDEO): (3_000, 70, Decimal("2.11")),  # 2,930 over
    }
    assert after - before == Decimal("1.39")  # the customer pays more, not less
