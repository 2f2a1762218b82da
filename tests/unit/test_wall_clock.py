"""The ``wall_clock`` mark (tests/conftest.py): a test runs as if the calendar read the mark's instant, ticking
on. The guards of the rating-stream tests rely on it (D450): were the mark to change nothing, they would pass while the
calendar is still near their data and prove nothing."""

from __future__ import annotations

from datetime import UTC, date, datetime

import pytest

from tests.conftest import YEARS_AHEAD


@pytest.mark.wall_clock(YEARS_AHEAD)
def test_given_a_wall_clock_mark_then_the_test_reads_the_marks_day() -> None:
    assert datetime.now(UTC).date() == date(2036, 2, 29)
