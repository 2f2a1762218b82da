"""The event bus a command publishes to, asked for before the command writes anything (D362).

EventBridge's ``PutEvents`` to a bus that does not exist has been reported to answer success - ``FailedEntryCount``
0 and an ``EventId`` (aws/aws-cli#9186, aws/aws-sdk#186) - so a typo in ``--event-bus`` loses every event without an
error; only moto answers ``ResourceNotFoundException``. A command that writes and then publishes (``crypto assign``,
``crypto resolve``, ``rating replay --apply``, ``invoice run``) asks for the bus once (``DescribeEventBus``) first.
"""

from __future__ import annotations

from typing import Any


class EventBusNotFoundError(Exception):
    """The bus named does not exist, or its name is not one EventBridge takes: nothing was written."""


def check_event_bus(events: Any, name: str) -> None:
    """Raise ``EventBusNotFoundError`` (the AWS code as its message) when EventBridge has no bus ``name`` (a name or an
    ARN). Other failures pass as ``kilo_billing.aws``'s errors: access denied (the credentials lack
    ``events:DescribeEventBus``) and unavailable are main's storage lines."""
    from kilo_billing.aws import InvalidRequestError, ResourceGoneError, call  # noqa: PLC0415

    try:
        call(events.describe_event_bus, Name=name)
    except (ResourceGoneError, InvalidRequestError) as exc:  # ResourceNotFoundException, ValidationException
        raise EventBusNotFoundError(str(exc)) from exc
