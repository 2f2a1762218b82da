"""The CLI's AWS clients: every command's calls read with one budget, from the functions' variables as they read them
(``kilo_billing.settings``: ``AWS_READ_TIMEOUT_SECONDS``, ``AWS_CONNECT_TIMEOUT_SECONDS``, ``AWS_MAX_ATTEMPTS``), the
read timeout ``READ_TIMEOUT_SECONDS`` unless set (D413, amended (ops3)). A value they refuse is a ``ValueError``
naming the variable (main: exit 2), before any client is made."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from collections.abc import Collection

    from pydantic import ValidationError

    from kilo_billing.aws import CallBudget
    from kilo_billing.settings import FunctionSettings

    Settings = TypeVar("Settings", bound=FunctionSettings)
else:
    Settings = TypeVar("Settings")

# each AWS call's read timeout unless ``AWS_READ_TIMEOUT_SECONDS`` sets it: an operator's command has no Lambda
# deadline; a stream page is up to 1,000 records (1 MB), which moto serves in ~2.2 s - past the layer's 2 s default
# (D413); the local stack sets 60 s (MOTO_CALL_BUDGET)
READ_TIMEOUT_SECONDS = 10.0


def call_budget() -> CallBudget:
    """Each AWS call's budget: the functions' variables, the read timeout ``READ_TIMEOUT_SECONDS`` unless set; a value
    they refuse is a ``ValueError`` naming the variable."""
    from pydantic import Field, ValidationError  # noqa: PLC0415

    from kilo_billing.settings import FunctionSettings  # noqa: PLC0415

    class CliSettings(FunctionSettings):
        aws_read_timeout_seconds: float = Field(default=READ_TIMEOUT_SECONDS, gt=0)

    # only the budget's variables are read: its secret reuse passed in (a command reading no secret does not fail on
    # a bad SECRET_MAX_AGE_SECONDS; one that does reads it through its function's settings, D413 amended (gops))
    unread = FunctionSettings.model_fields["secret_max_age_seconds"].default
    try:
        return CliSettings(secret_max_age_seconds=unread).call_budget
    except ValidationError as exc:
        raise ValueError(f"the AWS call budget: {_refused(exc)}") from None


def _refused(exc: ValidationError) -> str:
    """Each refused value of a settings class on one line: its variable and why."""
    return "; ".join(f"{str(error['loc'][0]).upper()}: {' '.join(error['msg'].split())}" for error in exc.errors())


def client(service: str, **kwargs: Any) -> Any:
    """A boto3 client (``kilo_billing.aws.client``) bounded by ``call_budget()``."""
    from kilo_billing.aws import client as bounded  # noqa: PLC0415  # boto3: only when a command needs AWS

    return bounded(service, call_budget(), **kwargs)


def function_settings(settings: type[Settings], not_read: Collection[str] = (), **values: Any) -> Settings:
    """A function's settings for a command that runs that function's logic (``invoice run``, ``refund``,
    ``void-draft``): its AWS call budget is the CLI's, not the function's own default. Every field is validated
    (D413 amended (hops)): ``values`` (its options), the budget's three variables, and every other field from the
    environment - a field added later is read by default - except the fields named in ``not_read`` (those the command
    never uses: a bad ``JOB_RESERVE_SECONDS`` does not refuse it), which keep their defaults, their variables not read.
    A name in ``not_read`` that is no field of ``settings`` (a typo) is a ``TypeError``, not silently ignored."""
    from pydantic import ValidationError  # noqa: PLC0415

    unknown = sorted(set(not_read) - set(settings.model_fields))
    if unknown:  # the command's code is wrong, not the operator's input (not a ValueError: main's exit 2)
        raise TypeError(f"{settings.__name__} has no field {', '.join(unknown)} (a command's not_read)")
    budget = call_budget()
    given = values | {
        "aws_connect_timeout_seconds": budget.connect_timeout,
        "aws_read_timeout_seconds": budget.read_timeout,
        "aws_max_attempts": budget.max_attempts,
    }
    unread = {
        name: settings.model_fields[name].get_default(call_default_factory=True)
        for name in not_read
        if name not in given
    }
    try:
        return settings(**given, **unread)
    except ValidationError as exc:  # one line naming the variable (main: exit 2), not pydantic's own text
        raise ValueError(f"the {settings.__name__}: {_refused(exc)}") from None
