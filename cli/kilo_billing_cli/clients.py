"""The CLI's AWS clients: every command's calls read with one budget, from the functions' variables as they read them
(``kilo_billing.settings``: ``AWS_READ_TIMEOUT_SECONDS``, ``AWS_CONNECT_TIMEOUT_SECONDS``, ``AWS_MAX_ATTEMPTS``), the
read timeout ``READ_TIMEOUT_SECONDS`` unless set (D413, amended (ops3)). A value they refuse is a ``ValueError``
naming the variable (main: exit 2), before any client is made."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
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

    try:
        return CliSettings().call_budget
    except ValidationError as exc:
        refused = "; ".join(f"{str(error['loc'][0]).upper()}: {error['msg']}" for error in exc.errors())
        raise ValueError(f"the AWS call budget: {refused}") from None


def client(service: str, **kwargs: Any) -> Any:
    """A boto3 client (``kilo_billing.aws.client``) bounded by ``call_budget()``."""
    from kilo_billing.aws import client as bounded  # noqa: PLC0415  # boto3: only when a command needs AWS

    return bounded(service, call_budget(), **kwargs)


def function_settings(settings: type[Settings], **values: Any) -> Settings:
    """A function's settings for a command that runs that function's logic (``invoice run``, ``refund``,
    ``void-draft``): its AWS call budget is the CLI's, not the function's own default."""
    budget = call_budget()
    return settings(
        **values,
        aws_connect_timeout_seconds=budget.connect_timeout,
        aws_read_timeout_seconds=budget.read_timeout,
        aws_max_attempts=budget.max_attempts,
    )
