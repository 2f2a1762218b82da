"""Lambda entry of the customer's crypto routes (API Gateway HTTP API, payload 2.0, behind the JWT authorizer):
decorators, parse, cached dependencies, one logic call, the outcome or error mapped to a status. Members read; admins
and owners manage (quotes, submitted transactions, wallets). Errors have the customer API's one shape
(``kilo_billing.customer_api``: ``{"code", "message", "field"}``), shared with the account API's routes.

Routes (under the account API's ``/v1/accounts/<account_id>``):
- ``POST .../crypto/bills/<invoice>/quotes`` ``{"chain", "asset"}`` -> 201 the quote;
- ``POST .../crypto/bills/<invoice>/transactions`` ``{"chain", "tx_id"}`` -> 202 ``{"invoice_id", "payments"}``,
  the payments recorded SEEN (409 when the transaction is not tied to the bill, D112; 503 ``unavailable`` with
  ``Retry-After`` when the chain's node does not answer - the message names the chain only, never the RPC URL);
- ``POST .../crypto/wallets/nonce`` -> 201 ``{"nonce", "issued_at", "expires_at", "domain", "uri"}`` (what the
  signed message must name);
- ``POST .../crypto/wallets`` ``{"chain", "message", "signature"}`` -> 201 the linked wallet;
- ``GET .../crypto/history`` -> 200 bills, quotes, payments.

``<invoice>`` is the invoice's key, its id with each ``/`` written ``~`` (``acct-1~2026-11``;
``kilo_billing.invoice_keys``): API Gateway decodes ``%2F`` before matching routes, so an id with its slash cannot be
a path parameter. A malformed key is a 400 naming ``path.invoice``; answers name the real invoice id.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from decimal import Decimal
from typing import Annotated, Any, Final

from aws_lambda_powertools.event_handler import Response
from aws_lambda_powertools.event_handler.openapi.params import Path
from aws_lambda_powertools.utilities.typing import LambdaContext
from pydantic import BaseModel

from kilo_billing import customer_api, observability
from kilo_billing.auth import Role
from kilo_billing.customer_api import ErrorCode, error_response, json_response, unavailable
from kilo_billing.invoice_keys import EXAMPLE, MalformedInvoiceKeyError, invoice_id_from_key
from kilo_billing.member_roles import require_stored_role
from kilo_billing.money import decimal_str, optional_money_str
from kilo_billing.observability import Metric
from kilo_crypto_watch import api_schemas as schemas
from kilo_crypto_watch import dependencies, history, logic
from kilo_crypto_watch.model import Payment
from kilo_crypto_watch.ports import RateRefusedError
from kilo_crypto_watch.quotes import QuoteRefusedError
from kilo_crypto_watch.settlement import (
    AlreadyClaimedError,
    BillNotFoundError,
    ClaimRefusedError,
    NoQuoteError,
    UnstorableError,
    asset_amount,
    counted_usd,
)
from kilo_crypto_watch.wallets import SignInError, WalletTakenError

SERVICE: Final = "crypto-api"
PREFIX: Final = "/v1/accounts/<account_id>/crypto"
INVOICE_FIELD: Final = "path.invoice"
app = customer_api.resolver()
logger = observability.logger(SERVICE)
metrics = observability.metrics(SERVICE)
customer_api.install(app, logger)


@app.exception_handler(BillNotFoundError)  # type: ignore[untyped-decorator]
def _no_bill(exc: BillNotFoundError) -> Response[str]:
    return error_response(ErrorCode.NOT_FOUND, str(exc), field=INVOICE_FIELD)


@app.exception_handler(logic.InvalidRequestError)  # type: ignore[untyped-decorator]
def _invalid(exc: logic.InvalidRequestError) -> Response[str]:
    return error_response(ErrorCode.INVALID_REQUEST, str(exc), field=exc.field)


@app.exception_handler(MalformedInvoiceKeyError)  # type: ignore[untyped-decorator]
def _malformed_key(exc: MalformedInvoiceKeyError) -> Response[str]:
    return error_response(ErrorCode.INVALID_REQUEST, str(exc), field=INVOICE_FIELD)


@app.exception_handler(SignInError)  # type: ignore[untyped-decorator]
def _sign_in(exc: SignInError) -> Response[str]:
    if isinstance(exc, WalletTakenError):
        return error_response(ErrorCode.CONFLICT, str(exc), field="message")
    return error_response(ErrorCode.INVALID_REQUEST, f"sign-in refused: {exc}", field="message")


@app.exception_handler([QuoteRefusedError, NoQuoteError, AlreadyClaimedError, ClaimRefusedError, UnstorableError])  # type: ignore[untyped-decorator]
def _conflict(exc: Exception) -> Response[str]:
    return error_response(ErrorCode.CONFLICT, str(exc))


@app.exception_handler(logic.TransactionRefusedError)  # type: ignore[untyped-decorator]
def _transaction(exc: logic.TransactionRefusedError) -> Response[str]:
    return error_response(ErrorCode.UNPROCESSABLE, str(exc), field="tx_id")


@app.exception_handler(RateRefusedError)  # type: ignore[untyped-decorator]
def _rate(exc: RateRefusedError) -> Response[str]:
    logger.warning("quote refused: no rate", extra={"reason": str(exc)[:300]})
    return error_response(ErrorCode.UNAVAILABLE, str(exc), retry_after=60)


@app.exception_handler(logic.NodeUnavailableError)  # type: ignore[untyped-decorator]
def _node_down(exc: logic.NodeUnavailableError) -> Response[str]:
    cause = exc.__cause__
    # the cause's text may carry the node's URL (and a provider's key in it): neither the answer nor the log gets it
    logger.warning("fast path: chain node unavailable", extra={"chain": exc.chain, "error": type(cause).__name__})
    return error_response(ErrorCode.UNAVAILABLE, str(exc))


@app.exception_handler(dependencies.ChainsUnavailableError)  # type: ignore[untyped-decorator]
def _no_chains(exc: dependencies.ChainsUnavailableError) -> Response[str]:
    return unavailable(app, logger, exc)  # the secret's name stays in the log


@app.exception_handler(dependencies.FastPathUnavailableError)  # type: ignore[untyped-decorator]
def _no_fast_path(exc: dependencies.FastPathUnavailableError) -> Response[str]:
    return error_response(ErrorCode.UNAVAILABLE, f"{exc}; the watcher will still find the payment")


AccountId = Annotated[str, Path(description="The billing account (the token's kilo_account)")]
InvoiceKey = Annotated[
    str,
    Path(
        description="The invoice id with each `/` written `~` (`<account>~<YYYY-MM>[~<part>]`): API Gateway decodes "
        "`%2F` before it matches routes",
        examples=[EXAMPLE],
    ),
]


def _route(
    method: str, suffix: str, summary: str, answer: tuple[int, type[BaseModel]], errors: tuple[int, ...] = ()
) -> Callable[[customer_api.Route], customer_api.Route]:
    return customer_api.secured_route(
        app, method, f"{PREFIX}{suffix}", summary, (400, 401, 403, *errors), answer, tags=["crypto"]
    )


def _member(account_id: str) -> None:
    """The token's caller may read ``account_id`` (401 without verified claims, 403 otherwise)."""
    customer_api.authorize(app, SERVICE, account_id, Role.MEMBER)


def _admin(account_id: str) -> None:
    """The token's caller is an admin of ``account_id`` and still is as the members table holds it now (403
    otherwise): every route here that writes outlasts the token - a quote, a payment, a linked wallet (D208)."""
    caller = customer_api.authorize(app, SERVICE, account_id, Role.ADMIN)
    require_stored_role(dependencies.roles().stored_role(account_id, caller.user), account_id, Role.ADMIN)


def _bill(account_id: str, invoice: str) -> str:
    """An admin of ``account_id`` acts on the bill ``invoice`` keys: its invoice id (400 for a malformed key)."""
    _admin(account_id)
    return invoice_id_from_key(invoice)


def _payment(payment: Payment, shown: Mapping[str, Decimal]) -> dict[str, Any]:
    usd = shown.get(payment.payment_id, payment.usd)
    return {
        "payment_id": payment.payment_id,
        "status": payment.status.value,
        "asset": payment.transfer.asset,
        "amount": decimal_str(asset_amount(payment.transfer.atomic_amount, payment.transfer.asset)),
        "amount_usd": optional_money_str(usd),
        "late": payment.late,
        "manual_review": payment.review,
    }


def _now() -> datetime:
    return datetime.now(UTC)


@_route("POST", "/bills/<invoice>/quotes", "A quote for a bill: the rate locked, the amount to pay",
        (201, schemas.CryptoQuoteOut), (404, 409, 503))  # fmt: skip
def post_quote(account_id: AccountId, invoice: InvoiceKey, body: schemas.QuoteIn) -> Response[str]:
    invoice_id = _bill(account_id, invoice)
    quote = logic.create_quote(dependencies.api(), account_id, invoice_id, body.chain, body.asset, _now())
    return json_response(201, history.quote_view(quote, quote.status))


@_route("POST", "/bills/<invoice>/transactions", "Submit the paying transaction (recorded SEEN at once)",
        (202, schemas.TransactionOut), (404, 409, 422, 503))  # fmt: skip
def post_transaction(account_id: AccountId, invoice: InvoiceKey, body: schemas.TransactionIn) -> Response[str]:
    invoice_id = _bill(account_id, invoice)
    ports = dependencies.api()
    try:
        payments = logic.submit_transaction(ports, account_id, invoice_id, body.chain, body.tx_id)
    finally:  # stray dust of the transaction kept unattributed without an alert, refused claim or not (D364)
        observability.count(SERVICE, Metric.CRYPTO_UNATTRIBUTED_UNALERTED, ports.settlement.take_unalerted())
    shown = counted_usd(payments)  # the transaction's counted credits add up to what they count for (D217)
    return json_response(202, {"invoice_id": invoice_id, "payments": [_payment(p, shown) for p in payments]})


@_route("POST", "/wallets/nonce", "A single-use nonce and what the wallet's sign-in message must name",
        (201, schemas.NonceOut))  # fmt: skip
def post_nonce(account_id: AccountId) -> Response[str]:
    _admin(account_id)
    ports = dependencies.api()
    now = _now()
    nonce, expires = logic.wallet_nonce(ports, account_id, now)
    # the sign-in message must name this domain and URI: the wallet page builds it from this answer, with our clock's
    # issue time (a browser's clock may be off by more than the skew the check allows)
    body = {
        "nonce": nonce,
        "issued_at": now.isoformat(),
        "expires_at": expires.isoformat(),
        "domain": ports.signin.domain,
        "uri": ports.signin.uri,
    }
    return json_response(201, body)


@_route("POST", "/wallets", "Link a wallet by its signed SIWE / SIWS message", (201, schemas.WalletOut), (409,))
def post_wallet(account_id: AccountId, body: schemas.WalletIn) -> Response[str]:
    _admin(account_id)
    linked = logic.wallet_verify(dependencies.api(), account_id, body.chain, body.message, body.signature, _now())
    return json_response(201, {"chain": linked.chain, "address": linked.address, "method": linked.method})


@_route("GET", "/history", "The account's crypto bills, quotes and payments", (200, schemas.CryptoHistoryOut))
def get_history(account_id: AccountId) -> Response[str]:
    _member(account_id)
    return json_response(200, logic.history(dependencies.api(), account_id, _now()))


@metrics.log_metrics
@logger.inject_lambda_context(clear_state=True)
@observability.tracer(SERVICE).capture_lambda_handler(capture_response=False)
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return dict(app.resolve(event, context))
