"""Invoice keys: an invoice id's slash-free path form (``/`` written ``~``), and back; malformed keys refused."""

from __future__ import annotations

import pytest

from kilo_billing.invoice_keys import MalformedInvoiceKeyError, invoice_id_from_key, invoice_key
from kilo_billing.invoicing import invoice_id
from kilo_billing.periods import Period


@pytest.mark.parametrize(
    ("invoice", "key"),
    [
        ("acct-1/2026-11", "acct-1~2026-11"),
        ("acct-1/2026-11/early-2", "acct-1~2026-11~early-2"),
        ("A.b_c:d@e+f=g-h/2026-01", "A.b_c:d@e+f=g-h~2026-01"),  # every character the account grammar allows
    ],
)
def test_given_an_invoice_id_then_its_key_has_no_slash_and_maps_back(invoice: str, key: str) -> None:
    assert invoice_key(invoice) == key
    assert invoice_id_from_key(key) == invoice


def test_given_the_ledgers_own_ids_then_their_keys_map_back() -> None:
    period = Period.parse("2026-11")
    for made in (invoice_id("acct_a", period), invoice_id("acct_a", period, "early-1")):
        assert invoice_id_from_key(invoice_key(made)) == made


@pytest.mark.parametrize(
    "key",
    ["acct-1/2026-11", "acct-1%2F2026-11", "acct-1~2026-13", "acct-1~26-11", "-acct~2026-11", "acct-1~2026-11~", ""],
)
def test_given_a_malformed_key_then_it_is_refused_naming_the_form(key: str) -> None:
    with pytest.raises(MalformedInvoiceKeyError, match=r"<account>~<YYYY-MM>\[~<part>\]"):
        invoice_id_from_key(key)
