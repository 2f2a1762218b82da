"""The demo's ground truth of an invoice (``kilo_dev.ground_truth.expected_invoice``), checked against invoices worked
out by hand from the 2026-01 price book (Team $29.00 a month, 50,000 video minutes included, video overage
$0.00072 a minute; Personal $0.00; Enterprise $99.00), so the demo's invoice check compares the product with
something that is itself right.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

from kilo_dev.ground_truth import effective_history, expected_bill, expected_invoice, price_sheet
from kilo_dev.simulator import TIERS, Truth

MARCH = int(datetime(2026, 3, 1, tzinfo=UTC).timestamp())
APRIL = int(datetime(2026, 4, 1, tzinfo=UTC).timestamp())
MID_MARCH = int(datetime(2026, 3, 20, 9, 30, tzinfo=UTC).timestamp())
SHEET = price_sheet(datetime(2026, 3, 1, tzinfo=UTC))
NEXT = price_sheet(datetime(2026, 4, 1, tzinfo=UTC))
D = Decimal


def _truth() -> Truth:
    truth = Truth()
    truth.add("acct-a", "2026-03", "video", 60_000, (MARCH + 9 * 86_400) * 1000)  # March 10th
    return truth


def test_given_a_team_month_then_usage_in_arrears_the_month_fee_and_the_next_in_advance() -> None:
    # video 60,000 - 50,000 included = 10,000 x 0.00072 = 7.20; audio, messages, GB: $0.00 lines; March's fee 29.00
    # (nothing billed in advance: the first invoice); April's fee in advance 29.00 -> 65.20
    found = expected_invoice(_truth(), "acct-a", "2026-03", [(MARCH, "team")], SHEET, NEXT)
    assert found.lines == {
        ("usage", "team", "video"): D("7.20"),
        ("usage", "team", "audio"): D("0.00"),
        ("usage", "team", "messages"): D("0.00"),
        ("usage", "team", "data_transfer"): D("0.00"),
        ("fee_first_month", "", ""): D("29.00"),
        ("fee", "team", ""): D("29.00"),
    }
    assert (found.total, found.status) == (D("65.20"), "paid")
    declined = expected_invoice(_truth(), "acct-a", "2026-03", [(MARCH, "team")], SHEET, NEXT, card_pays=False)
    assert declined.status == "payment_failed"
    assert expected_invoice(_truth(), "acct-a", "2026-03", [(MARCH, "team")], SHEET, NEXT, method="crypto").status == (
        "open"
    )


def test_given_a_downgrade_requested_mid_month_then_the_month_stays_team_and_the_next_fee_is_personal() -> None:
    history = effective_history([(MARCH, "team", "team"), (MID_MARCH, "team", "personal")], TIERS)
    assert history == [(MARCH, "team"), (APRIL, "personal")]
    found = expected_invoice(_truth(), "acct-a", "2026-03", history, SHEET, NEXT)
    assert found.lines[("fee", "personal", "")] == D("0.00")
    assert found.total == D("36.20")  # 7.20 + 29.00 + 0.00


def test_given_an_upgrade_mid_month_then_fees_by_segment_and_usage_per_segment() -> None:
    # Personal -> Enterprise at 2026-03-20 09:30 (an upgrade: at once). Enterprise part: 11 d 14 h 30 min of 31 d =
    # 1,002,600 / 2,678,400 s x 99.00 = 37.0584... -> 37.06; Personal part $0.00. The video (March 10th) is in the
    # Personal segment: Personal's allowance prorated, the rest billed there.
    history = effective_history([(MARCH, "personal", "personal"), (MID_MARCH, "personal", "enterprise")], TIERS)
    assert history == [(MARCH, "personal"), (MID_MARCH, "enterprise")]
    found = expected_invoice(_truth(), "acct-a", "2026-03", history, SHEET, NEXT)
    assert found.lines[("fee_first_month", "", "")] == D("37.06")
    assert found.lines[("fee", "enterprise", "")] == D("99.00")
    assert {key[1] for key in found.lines if key[0] == "usage"} == {"personal", "enterprise"}
    assert found.lines[("usage", "enterprise", "video")] == D("0.00")


def test_given_late_usage_excluded_then_the_invoice_is_as_the_close_saw_it() -> None:
    truth = _truth()
    truth.add("acct-a", "2026-03", "video", 5_000, (APRIL - 3600) * 1000)  # its end arrived after the close
    late = truth.usage[-1:]
    with_late = expected_invoice(truth, "acct-a", "2026-03", [(MARCH, "team")], SHEET, NEXT)
    without = expected_invoice(truth, "acct-a", "2026-03", [(MARCH, "team")], SHEET, NEXT, exclude=late)
    assert without.total == D("65.20")
    assert with_late.lines[("usage", "team", "video")] - without.lines[("usage", "team", "video")] == D("3.60")


def test_given_a_call_across_an_upgrade_then_its_minutes_are_shared_out_by_video_and_audio_seconds() -> None:
    # D282, the story of tests/scenarios/test_tier_change_mid_call.py restated for the ground truth:
    # Personal -> Team at Nov 16 00:00 (each segment 1/2 of November: Personal 2,500 video / 5,000 audio included,
    # Team 25,000 / 50,000, fees $0 and $14.50). Earlier under Personal: 2,400 video and 4,800 audio minutes. The call:
    # Nov 15 12:00:00 - Nov 16 12:00:30, camera Nov 15 20:00 - Nov 16 08:00: 720 video and 721 audio minutes; video
    # 14,400 s before / 28,800 s after -> 240 / 480; audio 28,800 s / 14,430 s -> 480.33 / 240.67 -> 480 / 241.
    # Personal: video 2,640 (140 over x 0.00072 = 0.1008 -> 0.10), audio 5,280 (280 over x 0.00036 = 0.1008 -> 0.10)
    nov_1, nov_16 = (
        int(datetime(2026, 11, 1, tzinfo=UTC).timestamp()),
        int(datetime(2026, 11, 16, tzinfo=UTC).timestamp()),
    )
    join_ms, leave_ms = (nov_16 - 43_200) * 1000, (nov_16 + 43_230) * 1000
    camera = (((nov_16 - 14_400) * 1000, (nov_16 + 28_800) * 1000),)
    truth = Truth()
    truth.add("acct-u", "2026-11", "video", 2_400, (nov_1 + 86_400) * 1000)
    truth.add("acct-u", "2026-11", "audio", 4_800, (nov_1 + 86_400) * 1000)
    truth.add("acct-u", "2026-11", "video", 720, join_ms, leave_ms, camera)
    truth.add("acct-u", "2026-11", "audio", 721, join_ms, leave_ms, camera)
    history = [(int(datetime(2026, 1, 1, tzinfo=UTC).timestamp()), "personal"), (nov_16, "team")]
    sheet, december = price_sheet(datetime(2026, 11, 1, tzinfo=UTC)), price_sheet(datetime(2026, 12, 1, tzinfo=UTC))
    found = expected_invoice(truth, "acct-u", "2026-11", history, sheet, december)
    assert found.lines == {
        ("usage", "personal", "video"): D("0.10"),  # the old rule: 3,120 used, 620 over -> 0.45
        ("usage", "personal", "audio"): D("0.10"),  # the old rule: 5,521 used, 521 over -> 0.19
        ("usage", "personal", "messages"): D("0.00"),
        ("usage", "personal", "data_transfer"): D("0.00"),
        ("usage", "team", "video"): D("0.00"),
        ("usage", "team", "audio"): D("0.00"),
        ("usage", "team", "messages"): D("0.00"),
        ("usage", "team", "data_transfer"): D("0.00"),
        ("fee_first_month", "", ""): D("14.50"),
        ("fee", "team", ""): D("29.00"),
    }
    used = {key[1:]: quantity for key, quantity in found.used.items() if key[2] in ("video", "audio")}
    assert used == {
        ("personal", "video"): 2_640,
        ("personal", "audio"): 5_280,
        ("team", "video"): 480,
        ("team", "audio"): 241,
    }
    bill = expected_bill(truth, "acct-u", "2026-11", history, sheet)
    assert (bill.overage, bill.fee, bill.total) == (D("0.20"), D("14.50"), D("14.70"))
