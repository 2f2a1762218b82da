"""Lambda entry of the customer's crypto routes (API Gateway HTTP API, payload 2.0, behind the JWT authorizer):
decorators, parse, cached dependencies, one logic call, the outcome or error mapped to a status. Members read; admins
and owners manage (quotes, submitted transactions, wallets). Errors have the customer API's one shape
(``kilo_billing.http_errors``: ``{"code", "message", "field"}``), shared with the account API's routes.

Routes (under the account API's ``/v1/accounts/<account_id>``):
- ``POST .../crypto/bills/<invoice>/quotes`` ``{"chain", "asset"}`` -> 201 the quote;
- ``POST .../crypto/bills/<invoice>/transactions`` ``{"chain", "tx_id"}`` -> 202 ``{"invoice_id", "payments"}``,
  the payments recorded SEEN;
- ``POST .../crypto/wallets/nonce`` -> 201 ``{"nonce", "issued_at", "expires_at", "domain", "uri"}`` (what the
  signed message must name);
- ``POST .../crypto/wallets`` ``{"chain", "message", "signature"}`` -> 201 the linked wallet;
- ``GET .../crypto/history`` -> 200 bills, quotes, payments.

``<invoice>`` is the invoice's key, its id with each ``/`` written ``~`` (``acct-1~2026-11``;
``kilo_billing.invoice_keys``): API Gateway decodes ``%2F`` before matching routes, so an id with its slash cannot be
a path parameter. A malformed key is a 400 naming ``path.invoice``; answers name the real invoice id.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Final

from aws_lambda_powertools.event_handler import APIGatewayHttpResolver, Response
from aws_lambda_powertools.utilities.typing import LambdaContext

from kilo_billing import http_errors, observability
from kilo_billing.auth import Role
from kilo_billing.http_errors import ErrorCode, error_response, json_response
from kilo_billing.invoice_keys import MalformedInvoiceKeyError, invoice_id_from_key
from kilo_billing.money import decimal_str, money_str
from kilo_crypto_watch import dependencies, history, logic
from kilo_crypto_watch.model import Payment
from kilo_crypto_watch.ports import RateRefusedError
from kilo_crypto_watch.quotes import QuoteRefusedError
from kilo_crypto_watch.settlement import AlreadyClaimedError, BillNotFoundError, NoQuoteError, asset_amount
from kilo_crypto_watch.wallets import SignInError, WalletTakenError

SERVICE: Final = "crypto-api"
PREFIX: Final = "/v1/accounts/<account_id>/crypto"
INVOICE_FIELD: Final = "path.invoice"
app = APIGatewayHttpResolver()
logger = observability.logger(SERVICE)
metrics = observability.metrics(SERVICE)
http_errors.install(app, logger)


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


@app.exception_handler([QuoteRefusedError, NoQuoteError, AlreadyClaimedError])  # type: ignore[untyped-decorator]
def _conflict(exc: Exception) -> Response[str]:
    return error_response(ErrorCode.CONFLICT, str(exc))


@app.exception_handler(logic.TransactionRefusedError)  # type: ignore[untyped-decorator]
def _transaction(exc: logic.TransactionRefusedError) -> Response[str]:
    return error_response(ErrorCode.UNPROCESSABLE, str(exc), field="tx_id")


@app.exception_handler(RateRefusedError)  # type: ignore[untyped-decorator]
def _rate(exc: RateRefusedError) -> Response[str]:
    logger.warning("quote refused: no rate", extra={"reason": str(exc)[:300]})
    return error_response(ErrorCode.UNAVAILABLE, str(exc), retry_after=60)


@app.exception_handler(dependencies.FastPathUnavailableError)  # type: ignore[untyped-decorator]
def _no_fast_path(exc: dependencies.FastPathUnavailableError) -> Response[str]:
    return error_response(ErrorCode.UNAVAILABLE, f"{exc}; the watcher will still find the payment")


def _caller(account_id: str, role: Role) -> None:
    http_errors.authorize(app, SERVICE, account_id, role)


def _body() -> dict[str, Any]:
    try:
        body = app.current_event.json_body if app.current_event.body else {}
    except (ValueError, TypeError) as exc:
        raise logic.InvalidRequestError("body must be a JSON object", field="body") from exc
    if not isinstance(body, dict):
        raise logic.InvalidRequestError("body must be a JSON object", field="body")
    return body


def _text(body: dict[str, Any], name: str) -> str:
    value = body.get(name)
    if not isinstance(value, str) or not value:
        raise logic.InvalidRequestError(f"{name} is required (a string)", field=name)
    return value


def _payment(payment: Payment) -> dict[str, Any]:
    return {
        "payment_id": payment.payment_id,
        "status": payment.status.value,
        "asset": payment.transfer.asset,
        "amount": decimal_str(asset_amount(payment.transfer.atomic_amount, payment.transfer.asset)),
        "amount_usd": money_str(payment.usd) if payment.usd is not None else None,
        "late": payment.late,
        "manual_review": payment.review,
    }


def _now() -> datetime:
    return datetime.now(UTC)


@app.post(f"{PREFIX}/bills/<invoice>/quotes")
def post_quote(account_id: str, invoice: str) -> Response[str]:
    _caller(account_id, Role.ADMIN)
    invoice_id = invoice_id_from_key(invoice)
    body = _body()
    quote = logic.create_quote(
        dependencies.api(), account_id, invoice_id, _text(body, "chain"), _text(body, "asset"), _now()
    )
    return json_response(201, history.quote_view(quote, quote.status))


@app.post(f"{PREFIX}/bills/<invoice>/transactions")
def post_transaction(account_id: str, invoice: str) -> Response[str]:
    _caller(account_id, Role.ADMIN)
    invoice_id = invoice_id_from_key(invoice)
    body = _body()
    payments = logic.submit_transaction(
        dependencies.api(), account_id, invoice_id, _text(body, "chain"), _text(body, "tx_id")
    )
    return json_response(202, {"invoice_id": invoice_id, "payments": [_payment(p) for p in payments]})


@app.post(f"{PREFIX}/wallets/nonce")
def post_nonce(account_id: str) -> Response[str]:
    _caller(account_id, Role.ADMIN)
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


@app.post(f"{PREFIX}/wallets")
def post_wallet(account_id: str) -> Response[str]:
    _caller(account_id, Role.ADMIN)
    body = _body()
    linked = logic.wallet_verify(
        dependencies.api(), account_id, _text(body, "chain"), _text(body, "message"), _text(body, "signature"), _now()
    )
    return json_response(201, {"chain": linked.chain, "address": linked.address, "method": linked.method})


@app.get(f"{PREFIX}/history")
def get_history(account_id: str) -> Response[str]:
    _caller(account_id, Role.MEMBER)
    return json_response(200, logic.history(dependencies.api(), account_id, _now()))


@metrics.log_metrics
@logger.inject_lambda_context(clear_state=True)
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return dict(app.resolve(event, context))
