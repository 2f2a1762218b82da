"""``function_settings`` (D413 amended (hops), review hops2 1): a function's settings for an invoice command read
every field from the environment but the few the command names as never used (``NOT_READ``), so a field added later
is read - and refused when bad - by default, and a name in ``NOT_READ`` that is no field (a typo) is refused, not
silently ignored (before: an opt-in list of fields read, where a misspelled entry left its setting at its default)."""

from __future__ import annotations

import pytest
from pydantic import Field

from kilo_billing.settings import FunctionSettings
from kilo_billing_cli.clients import function_settings
from kilo_invoice.settings import InvoiceSettings


class _LaterSettings(FunctionSettings):
    """A function's settings with a field no command's list names: as a field added after the lists were written."""

    later_limit: int = Field(default=1, gt=0)


def test_given_a_field_no_list_names_then_it_is_read_from_the_environment_and_a_bad_value_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("LATER_LIMIT", "7")
    assert function_settings(_LaterSettings).later_limit == 7  # read, not its default 1
    monkeypatch.setenv("LATER_LIMIT", "0")
    with pytest.raises(ValueError, match="LATER_LIMIT: Input should be greater than 0"):
        function_settings(_LaterSettings)


def test_given_a_field_named_not_read_then_its_variable_is_not_read(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LATER_LIMIT", "0")
    assert function_settings(_LaterSettings, ("later_limit",)).later_limit == 1


def test_given_a_name_in_not_read_that_is_no_field_then_it_is_refused_naming_it() -> None:
    """``stripe_max_network_retry`` for ``stripe_max_network_retries``: a programming error, not the operator's
    (not a ``ValueError``, main's exit 2)."""
    with pytest.raises(TypeError, match="InvoiceSettings has no field stripe_max_network_retry"):
        function_settings(InvoiceSettings, ("stripe_max_network_retry",), usage_table_name="u")
