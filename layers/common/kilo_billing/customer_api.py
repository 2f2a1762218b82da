"""The edge of the customer-facing HTTP API (``AccountApi``: the account API's routes and the crypto routes), shared by
both functions' handlers: the one error shape and code vocabulary, JSON answers, the caller check, the common
exception handlers, and secured routes as documented. Status codes live here and in the handlers, never in logic.

Every error answer is one flat JSON object::

    {"code": "<ErrorCode>", "message": "<what is wrong / what to do>", "field": "<what to fix>" | null,
     "fields": [...]            # only for request validation naming several fields
     "request_id": "..."}       # only on 503 (a 5xx says nothing else, D34)

Flat with ``message`` at the top because API Gateway's own answers on the same HTTP API are ``{"message": "..."}``
(the JWT authorizer's 401 ``Unauthorized``, an unmatched route's 404 ``Not Found``, throttling's 429, an integration
failure's 500/503) and an HTTP API cannot reshape them (gateway responses are a REST API feature): a client reads
``message`` from every answer and ``code`` when the function answered. ``field`` names body fields bare
(``budget_usd``), path and query parameters with their location (``path.invoice``, ``query.cursor``).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from enum import StrEnum
from typing import TYPE_CHECKING, Any, Final, cast

from pydantic import BaseModel, ConfigDict

from kilo_billing import jsontext
from kilo_billing.auth import Caller, ForbiddenError, Role, UnauthenticatedError, caller_from_event
from kilo_billing.aws import StorageUnavailableError
from kilo_billing.observability import correlate

if TYPE_CHECKING:
    from aws_lambda_powertools import Logger
    from aws_lambda_powertools.event_handler import APIGatewayHttpResolver, Response
    from aws_lambda_powertools.event_handler.openapi.exceptions import (
        RequestUnsupportedContentType,
        RequestValidationError,
    )


class ErrorCode(StrEnum):
    """The closed vocabulary; each code has one status (``STATUS``). Details are in ``message`` and ``field``."""

    INVALID_REQUEST = "invalid_request"  # fix the input (``field`` names it)
    UNAUTHORIZED = "unauthorized"  # no valid token: sign in again
    FORBIDDEN = "forbidden"  # the token may not do this for this account
    NOT_FOUND = "not_found"  # no such account, invoice, bill, member or route (for this account)
    CONFLICT = "conflict"  # contradicts the stored state (already so, taken, no open quote)
    UNPROCESSABLE = "unprocessable"  # well-formed, but what it points at cannot be accepted (a transaction)
    PRECONDITION_FAILED = "precondition_failed"  # an If-Match naming a version no longer stored: read it again (D441)
    UNSUPPORTED_MEDIA_TYPE = "unsupported_media_type"  # send the body as application/json
    UNAVAILABLE = "unavailable"  # a dependency is down or refused for now: retry after ``Retry-After`` seconds


STATUS: Final[Mapping[ErrorCode, int]] = {
    ErrorCode.INVALID_REQUEST: 400,
    ErrorCode.UNAUTHORIZED: 401,
    ErrorCode.FORBIDDEN: 403,
    ErrorCode.NOT_FOUND: 404,
    ErrorCode.CONFLICT: 409,
    ErrorCode.UNPROCESSABLE: 422,
    ErrorCode.PRECONDITION_FAILED: 412,
    ErrorCode.UNSUPPORTED_MEDIA_TYPE: 415,
    ErrorCode.UNAVAILABLE: 503,
}
RETRY_AFTER_SECONDS: Final = 5


class ErrorBody(BaseModel):
    """The error answer (documented in the OpenAPI document as the body of every 4xx/5xx)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    code: ErrorCode
    message: str
    field: str | None = None
    fields: list[str] | None = None
    request_id: str | None = None


_DESCRIPTIONS: Final = {
    400: "Invalid input (`code` invalid_request; `field` names it)",
    401: "No valid token (`code` unauthorized; the gateway's own 401 carries only `message`)",
    403: "The token may not do this for this account (`code` forbidden)",
    404: "Unknown account, invoice, bill or member (`code` not_found)",
    409: "Conflicts with the stored state (`code` conflict)",
    422: "Well-formed, but cannot be accepted (`code` unprocessable)",
    503: "A dependency is unavailable; retry after Retry-After (`code` unavailable)",
}
UNSUPPORTED_DESCRIPTION: Final = (
    "The body is not JSON (`code` unsupported_media_type): send it as application/json (form and multipart bodies are "
    "refused)"
)


def openapi_responses(*statuses: int) -> dict[int, Any]:
    """Powertools ``responses=`` for the given statuses (all when none are named), each with ``ErrorBody``."""
    content = {"application/json": {"model": ErrorBody}}
    return {status: {"description": _DESCRIPTIONS[status], "content": content} for status in statuses or _DESCRIPTIONS}


SECURED: Final[list[dict[str, list[str]]]] = [{"jwt": []}]  # the API's JWT authorizer (the documents' "jwt" scheme)
Route = Callable[..., Any]


def secured_route(
    app: APIGatewayHttpResolver,
    method: str,
    path: str,
    summary: str,
    errors: tuple[int, ...],
    answer: tuple[int, type[BaseModel]] | None = None,
    **documented: Any,
) -> Callable[[Route], Route]:
    """A route behind the JWT authorizer, documented with the error shape for ``errors`` (and ``answer``'s model under
    its status, for routes that answer a ``Response`` themselves); ``documented``: more of Powertools' arguments."""
    responses: dict[int, Any] = openapi_responses(*errors)
    if answer is not None:
        status, model = answer
        responses[status] = {"description": summary, "content": {"application/json": {"model": model}}}
    route = app.route(path, method=method, summary=summary, security=SECURED, responses=responses, **documented)
    return cast(Callable[[Route], Route], route)


def json_response(status: int, payload: object, headers: Mapping[str, str] | None = None) -> Response[str]:
    from aws_lambda_powertools.event_handler import Response  # noqa: PLC0415 - the handlers have it loaded already

    return Response(
        status_code=status,
        headers={"content-type": "application/json", **(headers or {})},
        body=json.dumps(payload, separators=(",", ":")),
    )


def error_response(
    code: ErrorCode,
    message: str,
    *,
    field: str | None = None,
    fields: list[str] | None = None,
    request_id: str | None = None,
    retry_after: int | None = None,
) -> Response[str]:
    body: dict[str, Any] = {"code": code.value, "message": message, "field": field}
    if fields is not None:
        body["fields"] = fields
    if request_id is not None:
        body["request_id"] = request_id
    if code is ErrorCode.UNAVAILABLE and retry_after is None:
        retry_after = RETRY_AFTER_SECONDS
    headers = {"Retry-After": str(retry_after)} if retry_after is not None else None
    return json_response(STATUS[code], body, headers)


def validation_error(exc: RequestValidationError) -> Response[str]:
    """Powertools' validation of path, query and body: 400 naming each field (``budget_usd``, ``path.account_id``);
    a body Powertools could not parse as JSON is named ``body``."""
    problems = []
    fields = []
    for error in exc.errors():
        if error.get("type") == "json_invalid":
            fields.append("body")
            problems.append("body is not valid JSON")
            continue
        loc = error.get("loc", ())
        location = [str(part) for part in loc if part != "body" or len(loc) == 1]
        name = ".".join(location) or "body"
        fields.append(name)
        problems.append(f"{name}: {error.get('msg', 'invalid')}")
    return error_response(
        ErrorCode.INVALID_REQUEST, "; ".join(problems), field=fields[0] if fields else None, fields=fields
    )


def unavailable(
    app: APIGatewayHttpResolver, log: Logger, exc: Exception, message: str = "try again shortly"
) -> Response[str]:
    """503 with the request id only (the detail goes to the log, D34)."""
    request_id = getattr(app.lambda_context, "aws_request_id", "") if app.lambda_context else ""
    log.warning("dependency unavailable", extra={"error": type(exc).__name__, "detail": str(exc)[:300]})
    return error_response(ErrorCode.UNAVAILABLE, message, request_id=request_id)


JSON_MEDIA_TYPE: Final = "application/json"


def json_media_type(content_type: str) -> bool:
    """``application/json`` or a ``+json`` suffix type (``application/merge-patch+json``), in any letter case and
    with any parameters (``; charset=utf-8``): the bodies the customer API reads as JSON."""
    media = content_type.split(";", 1)[0].strip().lower()
    return media == JSON_MEDIA_TYPE or (media.startswith("application/") and media.endswith("+json"))


def read_json_body(text: str) -> Any:
    """Powertools' ``json_body_deserializer`` for the customer API: the layer's bounded loader
    (``kilo_billing.jsontext``), whose refusal ``install`` answers 400 naming ``body``."""
    return jsontext.loads(text, "the request body")


def resolver() -> APIGatewayHttpResolver:
    """The customer API's resolver (both functions' handlers): Powertools' validation, bodies read by
    ``read_json_body``, and the content type matched as HTTP says (case-insensitively; ``+json`` types are JSON) -
    Powertools matches ``application/json`` by a case-sensitive prefix. A body of any other type is refused
    (``RequestUnsupportedContentType``, answered 415 by ``install``), form and multipart bodies too: Powertools would
    parse those into fields and validation would then answer a misleading 400 (D159)."""
    from aws_lambda_powertools.event_handler import APIGatewayHttpResolver  # noqa: PLC0415
    from aws_lambda_powertools.event_handler.middlewares.openapi_validation import (  # noqa: PLC0415
        OpenAPIRequestValidationMiddleware,
    )
    from aws_lambda_powertools.event_handler.openapi.exceptions import RequestUnsupportedContentType  # noqa: PLC0415
    from aws_lambda_powertools.utilities.typing import LambdaContext  # noqa: PLC0415

    class JsonBodiesOnly(OpenAPIRequestValidationMiddleware):
        """Powertools' request validation, reading a route's body only when it is JSON (no content type: JSON). An
        empty body is no body, whatever its content type says (``curl -d ''``, jQuery's ``$.post(url)`` send a form
        type with it): D159's 415 is for a body that is not JSON."""

        def _get_body(self, app: Any) -> dict[str, Any]:
            if not app.current_event.decoded_body:
                return None  # type: ignore[return-value] # what Powertools' own reading gives for no body
            content_type = app.current_event.headers.get("content-type", "").strip()
            if content_type and not json_media_type(content_type):
                raise RequestUnsupportedContentType(
                    "Unsupported content type", errors=[{"type": "unsupported_content_type", "loc": ("body",)}]
                )
            return super()._get_body(app)

    class CustomerApiResolver(APIGatewayHttpResolver):
        def resolve(self, event: Mapping[str, Any], context: LambdaContext) -> dict[str, Any]:
            headers = event.get("headers") or {}
            content_type = headers.get("content-type")
            if isinstance(content_type, str) and json_media_type(content_type):
                event = {**event, "headers": {**headers, "content-type": JSON_MEDIA_TYPE}}
            return super().resolve(event, context)

    app = CustomerApiResolver(enable_validation=True, json_body_deserializer=read_json_body)
    app._request_validation_middleware = JsonBodiesOnly()  # type: ignore[no-untyped-call] # replaces Powertools' own
    return app


def install(app: APIGatewayHttpResolver, log: Logger) -> None:
    """The answers every customer route shares: 401/403 from ``kilo_billing.auth``, 503 when AWS fails, 404 for an
    unknown route, 400 from Powertools' request validation and for a body that is not JSON one may read (malformed,
    nested more than ``jsontext.MAX_DEPTH`` deep, a number past the digit limit, not UTF-8: D32), 415 for a body
    that is not JSON at all."""
    from aws_lambda_powertools.event_handler.openapi.exceptions import (  # noqa: PLC0415
        RequestUnsupportedContentType,
        RequestValidationError,
    )

    def unauthenticated(exc: UnauthenticatedError) -> Response[str]:
        return error_response(ErrorCode.UNAUTHORIZED, str(exc))

    def forbidden(exc: ForbiddenError) -> Response[str]:
        return error_response(ErrorCode.FORBIDDEN, str(exc))

    def storage(exc: StorageUnavailableError) -> Response[str]:
        return unavailable(app, log, exc)

    def no_route(_: Exception) -> Response[str]:
        return error_response(ErrorCode.NOT_FOUND, "no such route")

    def unreadable(exc: jsontext.JsonTextError) -> Response[str]:
        return error_response(ErrorCode.INVALID_REQUEST, str(exc), field="body")  # "body is not ...", "body nests ..."

    def undecodable(exc: UnicodeDecodeError) -> Response[str]:
        """A base64 body (API Gateway's encoding of a non-text body) whose bytes are not UTF-8: Powertools decodes it
        before any parser sees it. Any other ``UnicodeDecodeError`` is not the request's fault: raised on."""
        if not _body_not_utf8(app.current_event.raw_event):
            raise exc
        return error_response(ErrorCode.INVALID_REQUEST, "body is not UTF-8 text", field="body")

    def unsupported(exc: RequestUnsupportedContentType) -> Response[str]:
        media = app.current_event.headers.get("content-type", "")
        return error_response(
            ErrorCode.UNSUPPORTED_MEDIA_TYPE,
            f"body's content type {media!r} is not JSON: send {JSON_MEDIA_TYPE}",
            field="body",
        )

    app.exception_handler(UnauthenticatedError)(unauthenticated)
    app.exception_handler(ForbiddenError)(forbidden)
    app.exception_handler(StorageUnavailableError)(storage)
    app.exception_handler(RequestValidationError)(validation_error)
    app.exception_handler(jsontext.JsonTextError)(unreadable)
    app.exception_handler(UnicodeDecodeError)(undecodable)
    app.exception_handler(RequestUnsupportedContentType)(unsupported)
    app.not_found(no_route)


def _body_not_utf8(event: Mapping[str, Any]) -> bool:
    import base64  # noqa: PLC0415
    import binascii  # noqa: PLC0415

    body = event.get("body")
    if not event.get("isBase64Encoded") or not isinstance(body, str):
        return False
    try:
        base64.b64decode(body.encode()).decode()
    except UnicodeDecodeError:
        return True
    except binascii.Error:
        return False
    return False


def authorize(app: APIGatewayHttpResolver, service: str, account_id: str, role: Role = Role.MEMBER) -> Caller:
    """The verified caller may act for ``account_id`` with ``role`` (401 without claims, 403 otherwise); the account
    becomes a correlation key of the invocation's logs."""
    caller = caller_from_event(app.current_event.raw_event)
    caller.require(account_id, role)
    correlate(service, account_id=account_id)
    return caller


def with_unsupported_media_type(document: dict[str, Any]) -> dict[str, Any]:
    """Document the 415 (``ErrorBody``) on every operation that takes a body - the one answer the customer API gives
    a body of a content type other than JSON (``resolver``), whichever function serves the route."""
    content = {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}}
    for operations in document.get("paths", {}).values():
        for operation in operations.values():
            if "requestBody" in operation:
                operation.setdefault("responses", {})["415"] = {
                    "description": UNSUPPORTED_DESCRIPTION,
                    "content": content,
                }
    return document


POWERTOOLS_VALIDATION_SCHEMAS: Final = ("HTTPValidationError", "ResponseValidationError", "ValidationError")


def without_default_validation_errors(document: dict[str, Any]) -> dict[str, Any]:
    """Powertools documents a 422 ``HTTPValidationError`` on every validated route; ours answer request validation with
    the 400 ``ErrorBody`` (``validation_error``), which every route documents. Drop those 422s (a route's own 422,
    an ``ErrorBody``, stays) and their schemas, so the document says what the API answers."""
    default = {"$ref": "#/components/schemas/HTTPValidationError"}
    for operations in document.get("paths", {}).values():
        for operation in operations.values():
            responses = operation.get("responses", {})
            if responses.get("422", {}).get("content", {}).get("application/json", {}).get("schema") == default:
                del responses["422"]
    schemas = document.get("components", {}).get("schemas", {})
    for name in POWERTOOLS_VALIDATION_SCHEMAS:  # the two that refer to ValidationError first
        others = {key: value for key, value in schemas.items() if key != name}
        if f"#/components/schemas/{name}" not in json.dumps([document.get("paths", {}), others]):
            schemas.pop(name, None)
    return document
