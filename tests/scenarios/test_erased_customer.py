"""An erased account's processor customer loses the contact details it holds (D80, D189): the close after the
erasure unsets them, once - also when the account's invoices are $0.00 from then on, and when the customer is only
found (created by a Checkout page before) at the close that issues a card invoice. The account API's erasure is
played as it writes (tests/integration covers it): the profile's email and name emptied, ``erased_at`` set, the
billing item's digest replaced by that of empty details."""

from __future__ import annotations

from dataclasses import replace

from kilo_billing.invoicing import ERASED_DETAILS, customer_details_digest
from kilo_invoice.ports import Customer
from tests.scenarios.test_invoicing import APR, MAR, MAY, World, at, seg


def _erase(world: World, account: str) -> None:
    """What ``POST .../erase`` writes that invoicing reads (kilo_account_api.logic.erase)."""
    world.store.profiles[account] = replace(world.store.profiles[account], email="", name="", erased_at=at(5, 4))
    if world.store.billing.get(account) and world.store.billing[account].customer_details is not None:
        world.store.save_billing(account, customer_details=customer_details_digest("", ""))


def test_given_an_erased_account_then_the_next_close_unsets_the_customers_details_once() -> None:
    world = World()
    world.signup("acme", (at(1), "team"))
    world.store.profiles["acme"] = replace(world.store.profiles["acme"], email="a@acme.example", name="Acme")
    world.close("acme", MAR)  # 29.00 + 29.00, a card invoice: the customer made with the profile's details
    customer = world.gateway.customers["acme"]
    assert world.gateway.details[customer] == ("a@acme.example", "Acme")
    _erase(world, "acme")
    world.close("acme", APR)
    assert world.gateway.details[customer] == (None, None)
    assert world.gateway.calls.count("forget_details") == 1
    assert "bring_details" not in world.gateway.calls  # nothing of the erased details is sent
    assert world.store.billing["acme"].customer_details == ERASED_DETAILS
    world.close("acme", MAY)  # done: no request per close for it
    assert world.gateway.calls.count("forget_details") == 1
    assert "bring_details" not in world.gateway.calls
    assert world.gateway.customers["acme"] == customer  # the customer stays: invoices and refunds need it


def test_given_an_erased_personal_account_with_nothing_to_bill_then_the_close_still_unsets_the_details() -> None:
    world = World()
    world.signup("solo", (at(1), "personal"))
    world.store.profiles["solo"] = replace(world.store.profiles["solo"], email="s@solo.example", name="Solo")
    world.store.rate("solo", "2026-03", seg(at(1)), "video", 15_000)  # 10,000 over x 0.00072 = 7.20, by card
    assert str(world.close("solo", MAR).total) == "7.20"
    customer = world.gateway.customers["solo"]
    _erase(world, "solo")
    assert str(world.close("solo", APR).total) == "0.00"  # no usage: nothing sent to the processor
    assert world.gateway.details[customer] == (None, None)
    assert world.gateway.calls.count("forget_details") == 1


def test_given_a_customer_found_only_at_the_close_after_the_erasure_then_it_is_unset_after_the_issue() -> None:
    """A card saved through Checkout made the customer with the details (the ledger never stored its id); the account
    is erased; the close's issue finds the customer by the account id and then unsets what it holds."""
    world = World()
    world.signup("acme", (at(1), "team"))
    found = world.gateway.ensure_customer(Customer("acme", "a@acme.example", "Acme"))
    world.store.profiles["acme"] = replace(world.store.profiles["acme"], email="a@acme.example", name="Acme")
    _erase(world, "acme")
    world.close("acme", MAR)
    assert world.store.billing["acme"].customer_id == found
    assert world.gateway.details[found] == (None, None)
    assert world.store.billing["acme"].customer_details == ERASED_DETAILS


def test_given_an_account_not_erased_then_its_customer_keeps_its_details() -> None:
    world = World()
    world.signup("acme", (at(1), "team"))
    world.store.profiles["acme"] = replace(world.store.profiles["acme"], email="a@acme.example", name="Acme")
    world.close("acme", MAR)
    world.store.profiles["acme"] = replace(world.store.profiles["acme"], email="", name="")  # emptied, not erased
    world.close("acme", APR)
    assert "forget_details" not in world.gateway.calls
