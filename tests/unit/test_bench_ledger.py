"""The invoicing benchmark's per-account ledger stands in for ``kilo_billing.invoicing.LedgerStore``: it must offer
every method of the port, with the port's parameters, so the close it times runs the same calls as production (a
method the port gained, e.g. ``save_dispute_flag``, or a parameter such as ``seq_read``, would otherwise fail only when
a benchmark first reaches it)."""

from __future__ import annotations

import inspect

from bench.invoicing import PartitionedLedger
from kilo_billing.invoicing import LedgerStore


def _methods(kind: type) -> dict[str, list[str]]:
    return {
        name: list(inspect.signature(member).parameters)
        for name, member in vars(kind).items()
        if inspect.isfunction(member) and not name.startswith("_")
    }


def test_the_benchmark_ledger_offers_every_method_of_the_port_with_its_parameters() -> None:
    port = _methods(LedgerStore)
    bench = _methods(PartitionedLedger)
    assert port, "the port lists its methods"
    missing = {name: params for name, params in port.items() if bench.get(name) != params}
    assert missing == {}


def test_an_update_through_the_benchmark_ledger_returns_the_stored_invoice() -> None:
    from datetime import UTC, datetime  # noqa: PLC0415

    from kilo_billing.accounts import AccountProfile  # noqa: PLC0415
    from kilo_billing.catalog import default_catalog  # noqa: PLC0415
    from kilo_billing.invoicing import InvoiceStatus, compose_close  # noqa: PLC0415
    from kilo_billing.periods import Period  # noqa: PLC0415
    from kilo_billing.rating import TierChange  # noqa: PLC0415

    march = Period(2026, 3)
    store = PartitionedLedger()
    store.part("acme").profiles["acme"] = AccountProfile(
        "acme", (TierChange(datetime(2026, 3, 1, tzinfo=UTC), "team"),)
    )
    draft = compose_close(store.ledger("acme"), march, default_catalog(), march.end)
    assert draft is not None
    store.create_invoice(draft)
    opened = store.update_invoice(draft.invoice.moved(InvoiceStatus.OPEN, march.end), InvoiceStatus.DRAFT)
    assert (opened.status, opened.revision) == (InvoiceStatus.OPEN, 1)
