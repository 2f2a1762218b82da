"""Lambda entry of the customer's crypto routes (API Gateway HTTP API, payload 2.0, behind the JWT authorizer):
decorators, parse, cached dependencies, one logic call, the outcome or error mapped to a status. Members read; admins
and owners manage (quotes, submitted transactions, wallets).

Routes (under the account API's ``/v1/accounts/<account_id>``):
- ``POST .../crypto/bills/<invoice_id>/quotes`` ``{"chain", "asset"}`` -> 201 the quote;
- ``POST .../crypto/bills/<invoice_id>/transactions`` ``{"chain", "tx_id"}`` -> 202 the payments recorded SEEN;
- ``POST .../crypto/wallets/nonce`` -> 201 ``{"nonce", "expires_at", "domain", "uri"}`` (what the signed message
  must name);
- ``POST .../crypto/wallets`` ``{"chain", "message", "signature"}`` -> 201 the linked wallet;
- ``GET .../crypto/history`` -> 200 bills, quotes, payments.

An invoice id holds a slash (``<account>/<period>``): clients percent-encode it (``%2F``), and the route's parameter
is matched on the raw path, so it is decoded here.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any, Final
from urllib.parse import unquote

from aws_lambda_powertools.event_handler import APIGatewayHttpResolver, Response
from aws_lambda_powertools.utilities.typing import LambdaContext

from kilo_billing import observability
from kilo_billing.auth import ForbiddenError, Role, UnauthenticatedError, caller_from_event
from kilo_billing.aws import StorageUnavailableError
from kilo_billing.money import decimal_str, money_str
from kilo_crypto_watch import dependencies, history, logic
from kilo_crypto_watch.model import Payment
from kilo_crypto_watch.ports import RateRefusedError
from kilo_crypto_watch.quotes import QuoteRefusedError
from kilo_crypto_watch.settlement import AlreadyClaimedError, BillNotFoundError, NoQuoteError, asset_amount
from kilo_crypto_watch.wallets import SignInError, WalletTakenError

SERVICE: Final = "crypto-api"
PREFIX: Final = "/v1/accounts/<account_id>/crypto"
app = APIGatewayHttpResolver()
logger = observability.logger(SERVICE)
metrics = observability.metrics(SERVICE)


def _json(status: int, payload: object, headers: dict[str, str] | None = None) -> Response[str]:
    return Response(
        status_code=status,
        headers={"content-type": "application/json", **(headers or {})},
        body=json.dumps(payload, separators=(",", ":")),
    )


def _error(status: int, code: str, message: str) -> Response[str]:
    return _json(status, {"error": {"code": code, "message": message}})


@app.exception_handler(UnauthenticatedError)  # type: ignore[untyped-decorator]
def _unauthenticated(exc: UnauthenticatedError) -> Response[str]:
    return _error(401, "unauthenticated", str(exc))


@app.exception_handler(ForbiddenError)  # type: ignore[untyped-decorator]
def _forbidden(exc: ForbiddenError) -> Response[str]:
    return _error(403, "forbidden", str(exc))


@app.exception_handler(BillNotFoundError)  # type: ignore[untyped-decorator]
def _no_bill(exc: BillNotFoundError) -> Response[str]:
    return _error(404, "bill_not_found", str(exc))


@app.exception_handler(logic.InvalidRequestError)  # type: ignore[untyped-decorator]
def _invalid(exc: logic.InvalidRequestError) -> Response[str]:
    return _error(400, "invalid_request", str(exc))


@app.exception_handler(SignInError)  # type: ignore[untyped-decorator]
def _sign_in(exc: SignInError) -> Response[str]:
    if isinstance(exc, WalletTakenError):
        return _error(409, "wallet_linked_elsewhere", str(exc))
    return _error(400, "sign_in_refused", str(exc))


@app.exception_handler(QuoteRefusedError)  # type: ignore[untyped-decorator]
@app.exception_handler(NoQuoteError)  # type: ignore[untyped-decorator]
@app.exception_handler(AlreadyClaimedError)  # type: ignore[untyped-decorator]
def _conflict(exc: Exception) -> Response[str]:
    return _error(409, "conflict", str(exc))


@app.exception_handler(logic.TransactionRefusedError)  # type: ignore[untyped-decorator]
def _transaction(exc: logic.TransactionRefusedError) -> Response[str]:
    return _error(422, "transaction_refused", str(exc))


@app.exception_handler(RateRefusedError)  # type: ignore[untyped-decorator]
def _rate(exc: RateRefusedError) -> Response[str]:
    logger.warning("quote refused: no rate", extra={"reason": str(exc)[:300]})
    return _json(503, {"error": {"code": "rate_unavailable", "message": str(exc)}}, {"Retry-After": "60"})


@app.exception_handler(dependencies.FastPathUnavailableError)  # type: ignore[untyped-decorator]
def _no_fast_path(exc: dependencies.FastPathUnavailableError) -> Response[str]:
    return _error(503, "fast_path_unavailable", f"{exc}; the watcher will still find the payment")


@app.exception_handler(StorageUnavailableError)  # type: ignore[untyped-decorator]
def _storage(exc: StorageUnavailableError) -> Response[str]:
    logger.exception("storage unavailable")
    return _json(503, {"error": {"code": "unavailable", "message": "try again shortly"}}, {"Retry-After": "5"})


@app.not_found
def _not_found(_: Exception) -> Response[str]:
    return _error(404, "not_found", "no such route")


def _caller(account_id: str, role: Role) -> None:
    caller_from_event(app.current_event.raw_event).require(account_id, role)
    observability.correlate(SERVICE, account_id=account_id)


def _body() -> dict[str, Any]:
    try:
        body = app.current_event.json_body if app.current_event.body else {}
    except (ValueError, TypeError) as exc:
        raise logic.InvalidRequestError("body must be a JSON object") from exc
    if not isinstance(body, dict):
        raise logic.InvalidRequestError("body must be a JSON object")
    return body


def _text(body: dict[str, Any], name: str) -> str:
    value = body.get(name)
    if not isinstance(value, str) or not value:
        raise logic.InvalidRequestError(f"{name} is required (a string)")
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


@app.post(f"{PREFIX}/bills/<invoice_id>/quotes")
def post_quote(account_id: str, invoice_id: str) -> Response[str]:
    _caller(account_id, Role.ADMIN)
    body = _body()
    quote = logic.create_quote(
        dependencies.api(), account_id, unquote(invoice_id), _text(body, "chain"), _text(body, "asset"), _now()
    )
    return _json(201, history.quote_view(quote, quote.status))


@app.post(f"{PREFIX}/bills/<invoice_id>/transactions")
def post_transaction(account_id: str, invoice_id: str) -> Response[str]:
    _caller(account_id, Role.ADMIN)
    body = _body()
    payments = logic.submit_transaction(
        dependencies.api(), account_id, unquote(invoice_id), _text(body, "chain"), _text(body, "tx_id")
    )
    return _json(202, {"payments": [_payment(p) for p in payments]})


@app.post(f"{PREFIX}/wallets/nonce")
def post_nonce(account_id: str) -> Response[str]:
    _caller(account_id, Role.ADMIN)
    ports = dependencies.api()
    nonce, expires = logic.wallet_nonce(ports, account_id, _now())
    # the sign-in message must name this domain and URI: the wallet page builds it from this answer
    body = {"nonce": nonce, "expires_at": expires.isoformat(), "domain": ports.signin.domain, "uri": ports.signin.uri}
    return _json(201, body)


@app.post(f"{PREFIX}/wallets")
def post_wallet(account_id: str) -> Response[str]:
    _caller(account_id, Role.ADMIN)
    body = _body()
    linked = logic.wallet_verify(
        dependencies.api(), account_id, _text(body, "chain"), _text(body, "message"), _text(body, "signature"), _now()
    )
    return _json(201, {"chain": linked.chain, "address": linked.address, "method": linked.method})


@app.get(f"{PREFIX}/history")
def get_history(account_id: str) -> Response[str]:
    _caller(account_id, Role.MEMBER)
    return _json(200, logic.history(dependencies.api(), account_id, _now()))


@metrics.log_metrics
@logger.inject_lambda_context(clear_state=True)
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return dict(app.resolve(event, context))
