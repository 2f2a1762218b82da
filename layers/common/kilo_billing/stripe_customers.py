"""The one way an account's Stripe customer is created and its contact details set, for both functions that may do it
first: the account API (a Checkout page to save a card) and the invoice functions (the first card invoice). Stripe's
search index lags its writes, so both can miss the other's new customer and create one within the same minute; they
use the same idempotency key, and Stripe refuses a key reused with other parameters. Built here once, the requests
are the same, so the second is the first's replay (docs/decisions.md D144). The details update's key is new per
update: it sets fields, so sending it again is harmless, while a key derived from what it sends could only name
some of the states it is sent from and would replay or refuse a later change (D172). Imported only by the Stripe
adapters."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Final, Protocol, TypeVar, cast

if TYPE_CHECKING:
    import stripe
    from stripe.params import CustomerCreateParams, CustomerUpdateParams

_T = TypeVar("_T")

META_ACCOUNT: Final = "kilo_account_id"  # the customer's metadata key naming our account (searched by both)


def idempotency_key(*parts: str) -> str:
    """An idempotency key from our id and the step; long ids are hashed (Stripe keys are at most 255 characters)."""
    key = "kilo:" + ":".join(parts)
    return key if len(key) <= 200 else "kilo:" + hashlib.sha256(key.encode()).hexdigest()


def customer_create(account_id: str) -> tuple[CustomerCreateParams, str]:
    """The customer-create request's parameters and idempotency key: the account in the metadata, nothing else (the
    contact details follow as ``customer_details``, which both functions send the same way too)."""
    return {"metadata": {META_ACCOUNT: account_id}}, idempotency_key(account_id, "customer")


def customer_details(
    email: str | None,
    name: str | None,
    current_email: str | None,
    current_name: str | None,
) -> CustomerUpdateParams | None:
    """The update that gives the customer the account's email and name (``None``: leave that one as it is): the
    fields that differ, ``None`` when the customer already has them. Its idempotency key is new per update
    (``details_key``, D172): setting fields is idempotent, and the same fields are sent from different states
    (a@ -> b@ -> a@, an edit in the Billing Portal), so a key per details wanted, or per state and details, would be
    reused with other parameters (Stripe: 400) or replay an earlier update instead of applying this one."""
    details: CustomerUpdateParams = {}
    if email is not None and email != current_email:
        details["email"] = email
    if name is not None and name != current_name:
        details["name"] = name
    return details or None


def details_key(customer_id: str) -> str:
    """The details update's idempotency key: one per update sent (the SDK's network retries of it reuse it), never
    derived from the details - see ``customer_details`` (D172); ``kilo:`` like every key of ours, to find it in
    Stripe's request log."""
    return idempotency_key(customer_id, "customer-details", uuid.uuid4().hex)


def quoted(value: str) -> str:
    """``value`` as a string literal of Stripe's search query language (quotes and backslashes escaped)."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


class StripeCall(Protocol):
    """How an adapter runs one SDK call: its own mapping of Stripe's errors to its port's errors."""

    def __call__(self, operation: Callable[[], _T]) -> _T: ...


def find_or_create(
    client: stripe.StripeClient, account_id: str, email: str | None, name: str | None, call: StripeCall
) -> str:
    """The account's Stripe customer id: found by the account id in its metadata, else created (``customer_create``);
    then given the account's email and name where they differ (``customer_details``) - on a customer just created
    and on one found alike (D172: the account's profile is where invoices and receipts go; one update per change
    of the details, none when the customer has them already). ``call`` runs each request."""
    found = call(
        lambda: client.v1.customers.search(
            {"query": f"metadata[{quoted(META_ACCOUNT)}]:{quoted(account_id)}", "limit": 1}
        )
    )
    customer = found.data[0] if found.data else None
    if customer is None:  # the same request from both functions: a create within Stripe's search lag is a replay
        params, key = customer_create(account_id)
        customer = call(lambda: client.v1.customers.create(params, {"idempotency_key": key}))
    _give_details(client, customer, email, name, call)
    return str(customer.id)


def bring_details(
    client: stripe.StripeClient, customer_id: str, email: str | None, name: str | None, call: StripeCall
) -> None:
    """Give a known customer the account's email and name where they differ (``customer_details``): one retrieve,
    and the update when needed (D172: called only when the details last given differ from the profile's). A deleted
    customer is left alone (what uses it fails on its own)."""
    customer = call(lambda: client.v1.customers.retrieve(customer_id))
    if getattr(customer, "deleted", False):
        return
    _give_details(client, customer, email, name, call)


def _give_details(
    client: stripe.StripeClient, customer: stripe.Customer, email: str | None, name: str | None, call: StripeCall
) -> None:
    """The update that gives ``customer`` the account's email and name where they differ (``customer_details``),
    under a key of its own (``details_key``); no request when it has them already."""
    details = customer_details(email, name, customer.email, customer.name)
    if details is not None:
        customer_id, key = customer.id, details_key(customer.id)
        call(lambda: client.v1.customers.update(customer_id, details, {"idempotency_key": key}))


ERASED_FIELDS: Final = ("email", "name", "phone", "description", "address", "shipping")  # what identifies a person


def forget_details(client: stripe.StripeClient, customer_id: str, call: StripeCall) -> None:
    """An erased account's customer (D80, D189): every contact field it still holds - email, name, phone,
    description, address, shipping - is unset (Stripe unsets a field given as an empty string), under a key of its
    own per update (``details_key``: the fields sent depend on what it holds). One retrieve; no update when it holds
    none of them; a deleted customer is left alone. The metadata (our account id, a pseudonym) stays: invoices,
    refunds and card events still find the account by it."""
    customer = call(lambda: client.v1.customers.retrieve(customer_id))
    if getattr(customer, "deleted", False):
        return
    held = [field for field in ERASED_FIELDS if _holds(getattr(customer, field, None))]
    if not held:
        return
    cleared = cast("CustomerUpdateParams", dict.fromkeys(held, ""))
    key = details_key(customer_id)
    call(lambda: client.v1.customers.update(customer_id, cleared, {"idempotency_key": key}))


def _holds(value: object) -> bool:
    """A field holds something: a non-empty value, or an object (address, shipping) with one somewhere inside."""
    if hasattr(value, "to_dict"):
        value = value.to_dict()
    if isinstance(value, dict):
        return any(_holds(inner) for inner in value.values())
    return bool(value)
