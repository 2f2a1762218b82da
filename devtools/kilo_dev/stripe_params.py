"""Stripe requests checked against the Stripe SDK's own typed params (``stripe.params.*`` TypedDicts).

Shared by the Stripe adapter's contract tests (a recording ``http_client``) and the Stripe stand-in server: both see a
request as Stripe's servers do (method, path, form-encoded parameters) and refuse any parameter the SDK's TypedDict for
that endpoint does not declare, a missing required one, or a value of the wrong type (``"abc"`` for an ``int``, an
undeclared ``Literal``). ``ROUTES`` names exactly the endpoints the adapter uses; a unit test holds each entry to the
SDK's service method (same HTTP method, path template and params class).
"""

from __future__ import annotations

import functools
import re
import types
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Literal, Union, get_args, get_origin, get_type_hints
from urllib.parse import parse_qsl

import stripe.params as stripe_params
import stripe.params.billing_portal as portal_params
import stripe.params.checkout as checkout_params
from stripe._request_options import RequestOptions
from typing_extensions import is_typeddict

_INT = re.compile(r"-?\d+")
_DECIMAL = re.compile(r"-?\d+(\.\d+)?")
_FLOAT = re.compile(r"-?\d+(\.\d+)?([eE][-+]?\d+)?")
_OPTION_KEYS = frozenset(RequestOptions.__annotations__)


@dataclass(frozen=True, slots=True)
class Route:
    method: str  # "get" | "post"
    template: str  # "/v1/invoices/{invoice}/finalize"
    params: type[Any]  # the SDK's TypedDict for the endpoint's parameters
    operation: str  # a name for logs and the stand-in's dispatch: "invoices.finalize"

    @property
    def pattern(self) -> re.Pattern[str]:
        return _compile(self.template)


@functools.cache
def _compile(template: str) -> re.Pattern[str]:
    return re.compile("^" + re.sub(r"\{(\w+)\}", r"(?P<\1>[^/]+)", template) + "$")


ROUTES: tuple[Route, ...] = (
    Route("post", "/v1/customers", stripe_params.CustomerCreateParams, "customers.create"),
    Route("get", "/v1/customers/search", stripe_params.CustomerSearchParams, "customers.search"),
    Route("get", "/v1/customers/{customer}", stripe_params.CustomerRetrieveParams, "customers.retrieve"),
    Route("post", "/v1/customers/{customer}", stripe_params.CustomerUpdateParams, "customers.update"),
    Route(
        "post",
        "/v1/payment_methods/{payment_method}/attach",
        stripe_params.PaymentMethodAttachParams,
        "payment_methods.attach",
    ),
    Route("get", "/v1/payment_methods", stripe_params.PaymentMethodListParams, "payment_methods.list"),
    Route("get", "/v1/invoices", stripe_params.InvoiceListParams, "invoices.list"),
    Route("get", "/v1/invoices/search", stripe_params.InvoiceSearchParams, "invoices.search"),
    Route("post", "/v1/coupons", stripe_params.CouponCreateParams, "coupons.create"),
    Route("get", "/v1/coupons/{coupon}", stripe_params.CouponRetrieveParams, "coupons.retrieve"),
    Route("delete", "/v1/coupons/{coupon}", stripe_params.CouponDeleteParams, "coupons.delete"),
    Route("post", "/v1/invoices", stripe_params.InvoiceCreateParams, "invoices.create"),
    Route("get", "/v1/invoices/{invoice}", stripe_params.InvoiceRetrieveParams, "invoices.retrieve"),
    Route("post", "/v1/invoices/{invoice}/add_lines", stripe_params.InvoiceAddLinesParams, "invoices.add_lines"),
    Route("post", "/v1/invoices/{invoice}/finalize", stripe_params.InvoiceFinalizeInvoiceParams, "invoices.finalize"),
    Route("post", "/v1/invoices/{invoice}/void", stripe_params.InvoiceVoidInvoiceParams, "invoices.void"),
    Route("delete", "/v1/invoices/{invoice}", stripe_params.InvoiceDeleteParams, "invoices.delete"),
    Route("get", "/v1/invoice_payments", stripe_params.InvoicePaymentListParams, "invoice_payments.list"),
    Route("post", "/v1/credit_notes", stripe_params.CreditNoteCreateParams, "credit_notes.create"),
    Route("get", "/v1/credit_notes", stripe_params.CreditNoteListParams, "credit_notes.list"),
    Route("get", "/v1/credit_notes/preview", stripe_params.CreditNotePreviewParams, "credit_notes.preview"),
    Route("get", "/v1/invoices/{invoice}/lines", stripe_params.InvoiceLineItemListParams, "invoices.line_items.list"),
    Route("post", "/v1/refunds", stripe_params.RefundCreateParams, "refunds.create"),
    Route("get", "/v1/refunds", stripe_params.RefundListParams, "refunds.list"),
    Route("get", "/v1/charges", stripe_params.ChargeListParams, "charges.list"),
    Route("get", "/v1/disputes", stripe_params.DisputeListParams, "disputes.list"),
    Route("post", "/v1/checkout/sessions", checkout_params.SessionCreateParams, "checkout.sessions.create"),
    Route("post", "/v1/billing_portal/sessions", portal_params.SessionCreateParams, "billing_portal.sessions.create"),
)


class UnknownEndpointError(LookupError):
    """A request to an endpoint outside ``ROUTES`` (the adapter is not meant to call it)."""


def route_for(method: str, path: str) -> tuple[Route, dict[str, str]]:
    """The route serving ``method path`` and its path ids; literal segments win over ``{id}`` ("/search")."""
    candidates = [route for route in ROUTES if route.method == method.lower() and route.pattern.match(path)]
    if not candidates:
        raise UnknownEndpointError(f"{method.upper()} {path} is not an endpoint the Stripe adapter uses")
    route = min(candidates, key=lambda r: r.template.count("{"))
    match = route.pattern.match(path)
    assert match is not None
    return route, match.groupdict()


def decode_form(encoded: str) -> dict[str, Any]:
    """``a[b][0][c]=x&expand[0]=y`` (the SDK's encoding) -> nested dicts and lists of strings."""
    root: dict[str, Any] = {}
    for key, value in parse_qsl(encoded, keep_blank_values=True, strict_parsing=False):
        parts = re.findall(r"[^\[\]]+|\[\]", key)
        if not parts:
            continue
        node = root
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ValueError(f"parameter {key!r} mixes a value and an object")
        node[parts[-1]] = value
    decoded: dict[str, Any] = _listify(root)
    return decoded


def _listify(node: Any) -> Any:
    if not isinstance(node, dict):
        return node
    converted = {key: _listify(value) for key, value in node.items()}
    if converted and all(key.isdigit() for key in converted):
        indexes = sorted(int(key) for key in converted)
        if indexes == list(range(len(indexes))):
            return [converted[str(index)] for index in indexes]
    return converted


def check(params_type: type[Any], params: Mapping[str, Any]) -> list[str]:
    """Problems with ``params`` (decoded form values) against the SDK's TypedDict: unknown/missing keys, bad values."""
    return _typed_dict_problems(params_type, params, "", top_level=True)


def check_request(method: str, path: str, encoded: str) -> tuple[Route, dict[str, str], dict[str, Any], list[str]]:
    """Route, path ids, decoded params and problems of one request (``encoded``: the query string or form body)."""
    route, ids = route_for(method, path)
    params = decode_form(encoded)
    return route, ids, params, check(route.params, params)


_HINTS: dict[type[Any], tuple[dict[str, Any], frozenset[str]]] = {}


def _hints(params_type: type[Any]) -> tuple[dict[str, Any], frozenset[str]]:
    if params_type in _HINTS:
        return _HINTS[params_type]
    # RequestOptions (the SDK's per-call options, never sent as parameters) names StripeContext only for type checkers.
    hints = get_type_hints(params_type, localns={"StripeContext": Any, "Mapping": Mapping})
    required = frozenset(getattr(params_type, "__required_keys__", frozenset()))
    _HINTS[params_type] = (hints, required)
    return hints, required


def _typed_dict_problems(params_type: type[Any], value: Any, where: str, *, top_level: bool = False) -> list[str]:
    if not isinstance(value, dict):
        return [f"{where or 'params'}: expected an object ({params_type.__name__}), got {value!r}"]
    hints, required = _hints(params_type)
    if top_level:
        hints = {key: hint for key, hint in hints.items() if key not in _OPTION_KEYS}
        required = required - _OPTION_KEYS
    problems: list[str] = []
    for key in value:
        if key not in hints:
            problems.append(f"{_join(where, key)}: unknown parameter (not in {params_type.__name__})")
    for key in sorted(required - set(value)):
        problems.append(f"{_join(where, key)}: missing required parameter ({params_type.__name__})")
    for key, item in value.items():
        if key in hints:
            problems.extend(_value_problems(hints[key], item, _join(where, key)))
    return problems


def _join(where: str, key: str) -> str:
    return f"{where}[{key}]" if where else key


def _value_problems(hint: Any, value: Any, where: str) -> list[str]:
    origin = get_origin(hint)
    if hint is Any:
        return []
    if origin is Union or origin is types.UnionType:
        arms = get_args(hint)
        if any(not _value_problems(arm, value, where) for arm in arms):
            return []
        return [f"{where}: {value!r} matches none of {hint}"]
    if origin is Literal:
        allowed = [_form(arg) for arg in get_args(hint)]
        return [] if value in allowed else [f"{where}: {value!r} is not one of {allowed}"]
    if is_typeddict(hint):
        return _typed_dict_problems(hint, value, where)
    if origin is list:
        if not isinstance(value, list):
            return [f"{where}: expected a list, got {value!r}"]
        (item_hint,) = get_args(hint) or (Any,)
        return [
            problem
            for index, item in enumerate(value)
            for problem in _value_problems(item_hint, item, f"{where}[{index}]")
        ]
    if origin is dict or (isinstance(origin, type) and origin.__name__ == "UntypedStripeObject"):
        if not isinstance(value, dict) or not all(isinstance(item, str) for item in value.values()):
            return [f"{where}: expected an object of strings, got {value!r}"]
        return []
    return _scalar_problems(hint, value, where)


def _scalar_problems(hint: Any, value: Any, where: str) -> list[str]:
    checks: dict[Any, re.Pattern[str] | None] = {str: None, int: _INT, Decimal: _DECIMAL, float: _FLOAT}
    if hint is bool:
        return [] if value in ("true", "false") else [f"{where}: {value!r} is not a boolean"]
    if hint in checks:
        if not isinstance(value, str):
            return [f"{where}: expected a {hint.__name__}, got {value!r}"]
        pattern = checks[hint]
        if pattern is not None and not pattern.fullmatch(value):
            return [f"{where}: {value!r} is not a {hint.__name__}"]
        return []
    return [f"{where}: cannot check a value against {hint!r}"]


def _form(arg: object) -> str:
    """How the SDK form-encodes a Literal's value."""
    if isinstance(arg, bool):
        return str(arg).lower()
    return str(arg)
