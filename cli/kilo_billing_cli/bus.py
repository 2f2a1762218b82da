"""The event bus a command publishes to, asked for before the command writes anything (D362).

EventBridge's ``PutEvents`` to a bus that does not exist has been reported to answer success - ``FailedEntryCount``
0 and an ``EventId`` (aws/aws-cli#9186, aws/aws-sdk#186) - so a typo in ``--event-bus`` loses every event without an
error; only moto answers ``ResourceNotFoundException``. A command that writes and then publishes (``crypto assign``,
``crypto resolve``, ``rating replay --apply``, ``invoice run``) asks for the bus once (``DescribeEventBus``) first.
``DescribeEventBus`` describes "an event bus in your account" (AWS's API reference; by name or ARN): a bus in another
account, given by ARN - which ``PutEvents`` can send to under that bus's resource policy - is refused by the check
(not found or access denied, exit 2; which one AWS answers is not documented): D362's limit.
"""

from __future__ import annotations

from typing import Any

# the AWS codes of access denied (``aws.map_error`` keeps the code alone, not AWS's message naming the action)
_DENIED = frozenset({"AccessDeniedException", "AccessDenied"})


class EventBusNotFoundError(Exception):
    """The bus named does not exist, or its name is not one EventBridge takes: nothing was written."""


class EventBusAccessDeniedError(Exception):
    """The credentials may not ask for the bus (``events:DescribeEventBus``): nothing was written."""


def check_event_bus(events: Any, name: str) -> None:
    """Raise ``EventBusNotFoundError`` (the AWS code as its message) when EventBridge has no bus ``name`` (a name or an
    ARN), ``EventBusAccessDeniedError`` (the code) when the credentials lack ``events:DescribeEventBus`` - main's line
    names that permission. Other failures (throttled, unavailable) pass as ``kilo_billing.aws``'s errors: main's
    storage line, exit 4."""
    from kilo_billing.aws import InvalidRequestError, ResourceGoneError, StorageUnavailableError, call  # noqa: PLC0415

    try:
        call(events.describe_event_bus, Name=name)
    except (ResourceGoneError, InvalidRequestError) as exc:  # ResourceNotFoundException, ValidationException
        raise EventBusNotFoundError(str(exc)) from exc
    except StorageUnavailableError as exc:
        code = str(exc).partition(":")[0].strip()
        if code in _DENIED:
            raise EventBusAccessDeniedError(code) from exc
        raise
