"""The alerts' claim leases against the template: a pending claim is taken over only after its lease, so the lease
must outlast the alerts function's timeout (a live holder is never overtaken) and end before the alerts queue hands a
record back (a record redelivered after a crash finds the crashed claim stale, instead of a pending claim that would
only fail it again until the redrive gives up)."""

from __future__ import annotations

from kilo_alerts.adapters import ENFORCEMENT_LEASE_MS
from kilo_alerts.settings import AlertSettings
from kilo_dev.template import Template


def test_given_the_alerts_queue_then_every_claim_lease_lies_between_the_timeout_and_the_visibility_timeout() -> None:
    template = Template(parameters={"Stage": "test"})
    timeout_s = template.resources["AlertsFunction"]["Properties"]["Timeout"]
    visibility_s = template.resources["AlertsQueue"]["Properties"]["VisibilityTimeout"]
    field = AlertSettings.model_fields["claim_lease_minutes"]
    bounds = {type(rule).__name__: rule for rule in field.metadata}
    shortest_ms, longest_ms = bounds["Ge"].ge * 60_000, bounds["Le"].le * 60_000  # any lease the settings accept
    assert (timeout_s, visibility_s) == (60, 360)
    for lease_ms in (shortest_ms, longest_ms, (field.default or 0) * 60_000, ENFORCEMENT_LEASE_MS):
        assert timeout_s * 1000 < lease_ms < visibility_s * 1000, lease_ms


def test_given_the_alerts_queue_then_the_function_knows_its_last_receive_before_the_dead_letter_queue() -> None:
    template = Template(parameters={"Stage": "test"})
    redrive = template.resources["AlertsQueue"]["Properties"]["RedrivePolicy"]
    assert redrive["maxReceiveCount"] == 5
    assert AlertSettings.model_fields["alerts_queue_max_receives"].default == redrive["maxReceiveCount"]
