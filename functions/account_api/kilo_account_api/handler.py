"""Lambda handler of the account API: a Powertools ``APIGatewayHttpResolver`` with validation (pydantic models in
``schemas``; the OpenAPI document is generated from them and served at ``/openapi.json``).

API Gateway's JWT authorizer verifies the token (signature, issuer, audience, expiry) on every route but
``GET /v1/pricing`` and ``GET /openapi.json``; each route here reads the caller from the verified claims
(``kilo_billing.auth.caller_from_event``) and checks it may act for the path's account before anything is read:
members read, admins and owners manage, operators read any account and reach ``/v1/operator/...``. Another account's
id is refused with 403 whether or not that account exists (the check needs no read, so nothing leaks).

Status codes live here (and in the layer's ``kilo_billing.customer_api``, whose one error shape and code vocabulary the
crypto routes on the same API share): domain errors of ``model`` and ``kilo_billing.auth`` map to
400/401/403/404/409/503; a 4xx names the problem (and the field), a 5xx says nothing but the request id (D34).
"""

from __future__ import annotations

import functools
import hashlib
import json
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path as Path_
from typing import Annotated, Any, Final, TypeVar

from aws_lambda_powertools.event_handler import Response
from aws_lambda_powertools.event_handler.openapi.models import HTTPBearer
from aws_lambda_powertools.event_handler.openapi.params import Path, Query
from aws_lambda_powertools.utilities.typing import LambdaContext
from pydantic import AnyUrl, BaseModel

from kilo_account_api import logic, phone, schemas
from kilo_account_api.dependencies import AccountApiDependencies, dependencies
from kilo_account_api.model import (
    ConflictError,
    InvalidRequestError,
    Member,
    NotFoundError,
    SubscriptionChangedError,
    UnavailableError,
    UnprocessableError,
)
from kilo_account_api.recommendations import RecommendationPolicy, recommend
from kilo_billing import customer_api
from kilo_billing.accounts import ACCOUNT_ID_PATTERN, AnswerExistsError, ProfileChangedError, StoredAnswer
from kilo_billing.auth import Caller, Role, caller_from_event, user_from_event
from kilo_billing.customer_api import (
    STATUS,
    ErrorCode,
    error_response,
    json_response,
    without_default_validation_errors,
)
from kilo_billing.entitlements import EntitlementPolicy
from kilo_billing.observability import Metric, count_at_once, logger, tracer

SERVICE: Final = "account-api"
JSON_HEADERS: Final = {"content-type": "application/json"}

app = customer_api.resolver()
log = logger(SERVICE)
customer_api.install(app, log)  # 400 validation, 401, 403, 404 route, 503 storage: the customer API's one error shape

ERRORS: Final = (400, 401, 403, 404, 409, 503)  # documented with the customer API's error shape

IDEMPOTENCY_KEY: Final = "header.idempotency-key"  # the field a refused Idempotency-Key is named as (D377)
IDEMPOTENCY_KEY_MAX: Final = 255
IF_MATCH: Final = "header.if-match"  # the field a stale If-Match is named as (D441)
SUBSCRIPTION_PATH: Final = "/v1/accounts/{account_id}/subscription"  # the tier change's, as the document names it

BodyIn = TypeVar("BodyIn", bound=BaseModel)

AccountId = Annotated[
    str, Path(pattern=f"^{ACCOUNT_ID_PATTERN}$", description="The billing account (the token's kilo_account)")
]


def _account_route(
    method: str, suffix: str, summary: str, errors: tuple[int, ...] = ERRORS, **documented: Any
) -> Callable[[customer_api.Route], customer_api.Route]:
    """A route under ``/v1/accounts/<account_id>``, behind the JWT authorizer (every route but pricing and the
    document itself); its handler checks the caller's role for the path's account first. ``errors``: the answers
    documented with the error shape (a route answering more than ``ERRORS`` names them); ``documented``: more of
    Powertools' arguments (a ``description``)."""
    path = f"/v1/accounts/<account_id>{suffix}"
    return customer_api.secured_route(app, method, path, summary, errors, **documented)


def _now() -> datetime:
    return datetime.fromtimestamp(time.time(), tz=UTC)


def _invocation_end(now: datetime) -> datetime:
    """The latest instant this invocation's writes may land: ``now`` plus the time left before its timeout."""
    return now + timedelta(milliseconds=app.lambda_context.get_remaining_time_in_millis())


def _deps() -> AccountApiDependencies:
    return dependencies()


def _card_pages() -> logic.CardPages:
    deps = _deps()
    home, origins = deps.settings.dashboard_url, deps.settings.dashboard_origins
    return logic.CardPages(deps.accounts, deps.ledger, deps.payments, home, origins)


def _caller() -> Caller:
    return caller_from_event(app.current_event.raw_event)


def _authorize(account_id: str, role: Role = Role.MEMBER) -> Caller:
    """The caller may act for ``account_id`` with ``role`` (401 without verified claims, 403 otherwise)."""
    return customer_api.authorize(app, SERVICE, account_id, role)


def _authorize_stored(account_id: str, role: Role) -> Role:
    """``_authorize``, then the caller's role as the members table holds it now (at least ``role``, else 403): for
    what would outlast the token - membership changes, an export, the irreversible erasure (D202), and every
    admin write: budget and hard limit, alert contacts and their phone code, tier, Stripe's pages (D208)."""
    caller = _authorize(account_id, role)
    return logic.current_role(_deps().members, caller, account_id, role)


def _absent_or_object(body: BodyIn | None) -> BodyIn | None:
    """An optional body is absent or its JSON object (the document says so: ``optional_bodies``); a JSON ``null``,
    which Powertools' validation reads as no body, is refused here (D169)."""
    if body is None and (app.current_event.decoded_body or "").strip():
        raise InvalidRequestError("body", "send no body or a JSON object (an empty one: {})")
    return body


def _text(url: AnyUrl | None) -> str | None:
    """A body's URL as the logic takes it (``None``: not given)."""
    return None if url is None else str(url)


def optional_bodies(document: dict[str, Any]) -> dict[str, Any]:
    """An optional body's schema is its model (``requestBody.required`` false: it may be left out), not "the model
    or null": the routes refuse a JSON ``null`` (``_absent_or_object``)."""
    for operations in document.get("paths", {}).values():
        for operation in operations.values():
            body = operation.get("requestBody")
            if body is None or body.get("required"):
                continue
            media = body.get("content", {}).get("application/json", {})
            options = [o for o in media.get("schema", {}).get("anyOf", []) if o != {"type": "null"}]
            if len(options) == 1 and len(media["schema"]["anyOf"]) == 2:
                media["schema"] = options[0]
                body["description"] = "Optional: send no body, or this JSON object (`{}` when it has no fields)"
    return document


def _header(operation: dict[str, Any], name: str, required: bool, description: str, **schema: Any) -> None:
    """Document a request header an operation reads from the event itself (not a Powertools parameter)."""
    parameter = {"name": name, "in": "header", "required": required, "description": description}
    operation.setdefault("parameters", []).append(parameter | {"schema": {"type": "string", **schema}})


def with_idempotency_key(document: dict[str, Any]) -> dict[str, Any]:
    """The tier change's required ``Idempotency-Key`` header (D377 amended (sm), D436), as ``_idempotency_key``
    checks it: read from the event, not a Powertools parameter (whose validation would run before the route's role
    check), so written in here."""
    _header(
        document["paths"][SUBSCRIPTION_PATH]["post"],
        "Idempotency-Key",
        True,
        (
            f"Required: 1 to {IDEMPOTENCY_KEY_MAX} printable ASCII characters (space to `~`) but the comma, a "
            "new one per intended change (e.g. a UUID) and the same one on that change's retry. The first 200 "
            "answer is stored for 24 hours and replayed for the same key and body (a retry changes nothing twice, "
            "even after another change was made meanwhile); the same key with another body is 422 (`code` "
            f"unprocessable, `field` {IDEMPOTENCY_KEY}); without it, or an empty, longer or non-printable key, "
            f"400 (`code` invalid_request, `field` {IDEMPOTENCY_KEY}), nothing changed. Refusals are not stored."
        ),
        minLength=1,
        maxLength=IDEMPOTENCY_KEY_MAX,
        pattern="^[ -+\\--~]+$",
    )
    return document


USAGE_PATH: Final = "/v1/accounts/{account_id}/usage"  # the GET whose ETag the dashboard's tier page sends (D441)
ETAG_HEADER: Final = {
    "description": "The subscription's version (D441): send it as `If-Match` with `POST .../subscription`",
    "schema": {"type": "string"},
}


def with_if_match(document: dict[str, Any]) -> dict[str, Any]:
    """The tier change's optional ``If-Match`` header, its 412 and the ``ETag`` of its answer and of ``GET .../usage``
    (D441), read from the event like the ``Idempotency-Key`` (``with_idempotency_key``), so written in here."""
    operation = document["paths"][SUBSCRIPTION_PATH]["post"]
    _header(
        operation,
        "If-Match",
        False,
        (
            "Optional: the `ETag` of the subscription the request was decided on (`GET .../subscription`, "
            "`GET .../usage`, or this route's previous answer); `*` or a list of tags is taken too (RFC "
            "9110), a weak `W/` tag never matches. When it does not name the subscription's version now "
            "(another tier request, a cancel, a scheduled change that took effect), 412 (`code` "
            "precondition_failed, `field` "
            f"{IF_MATCH}) with the subscription now in `current` and as `ETag`; nothing changed and nothing "
            "stored. A replay of an answered `Idempotency-Key` is answered as stored whatever it names. Without "
            "it the request is decided on the subscription as it is (as before)."
        ),
    )
    operation["responses"]["200"]["headers"] = {
        "ETag": ETAG_HEADER | {"description": f"{ETAG_HEADER['description']}; absent on a replayed answer"}
    }
    document["paths"][USAGE_PATH]["get"]["responses"]["200"]["headers"] = {
        "ETag": ETAG_HEADER,
        "Cache-Control": {
            "description": "`no-store`: the `ETag` names the subscription shown, not the usage figures (D441)",
            "schema": {"type": "string"},
        },
    }
    current = {"$ref": "#/components/schemas/SubscriptionStateOut"}  # as GET .../subscription answers it (D447)
    operation["responses"]["412"] = {
        "description": (
            "The subscription changed since the `If-Match` version was read (`code` precondition_failed): read it "
            "again and decide on what it is now"
        ),
        "headers": {"ETag": ETAG_HEADER},
        "content": {
            "application/json": {
                "schema": {  # ErrorBody's fields (which forbids others) and the subscription now
                    "type": "object",
                    "required": ["code", "message", "field", "current"],
                    "properties": {
                        "code": {"type": "string", "enum": [ErrorCode.PRECONDITION_FAILED.value]},
                        "message": {"type": "string"},
                        "field": {"type": "string", "enum": [IF_MATCH]},
                        "current": current,
                    },
                    "additionalProperties": False,
                }
            }
        },
    }
    return document


READ_HEADERS: Final = {
    "ETag": ETAG_HEADER,
    "Cache-Control": {
        "description": "`private, no-cache`: a cache may keep the answer but asks again (with `If-None-Match`) first",
        "schema": {"type": "string"},
    },
}


def with_if_none_match(document: dict[str, Any]) -> dict[str, Any]:
    """``GET .../subscription``'s optional ``If-None-Match``, its 304 and its headers (D447), read from the event like
    the tier request's ``If-Match`` (``with_if_match``), so written in here."""
    operation = document["paths"][SUBSCRIPTION_PATH]["get"]
    _header(
        operation,
        "If-None-Match",
        False,
        "Optional: the `ETag` of the subscription last read; when it names the version now (weak comparison, RFC "
        "9110: `W/` ignored; `*` or a list of tags is taken too), 304 with no body",
    )
    operation["responses"]["200"]["headers"] = READ_HEADERS
    operation["responses"]["304"] = {"description": "The subscription is the version named", "headers": READ_HEADERS}
    return document


# --- errors (the shared ones: customer_api.install) ----------------------------------------------------------------


@app.exception_handler(NotFoundError)  # type: ignore[untyped-decorator]
def _not_found_error(exc: NotFoundError) -> Response[str]:
    return error_response(ErrorCode.NOT_FOUND, str(exc))


@app.exception_handler(InvalidRequestError)  # type: ignore[untyped-decorator]
def _invalid(exc: InvalidRequestError) -> Response[str]:
    return error_response(ErrorCode.INVALID_REQUEST, f"{exc.field}: {exc}", field=exc.field)


@app.exception_handler(UnprocessableError)  # type: ignore[untyped-decorator]
def _unprocessable(exc: UnprocessableError) -> Response[str]:
    return error_response(ErrorCode.UNPROCESSABLE, f"{exc.field}: {exc}", field=exc.field)


@app.exception_handler(ConflictError)  # type: ignore[untyped-decorator]
def _conflict(exc: ConflictError) -> Response[str]:
    return error_response(ErrorCode.CONFLICT, str(exc), field=exc.field)


@app.exception_handler(SubscriptionChangedError)  # type: ignore[untyped-decorator]
def _subscription_changed(exc: SubscriptionChangedError) -> Response[str]:
    """A stale ``If-Match`` (D441): 412 naming the subscription now (its tier, scheduled change and version, also as
    the ``ETag`` header); nothing was written. Counted (``TierRequestStale``) for operations to see how often."""
    count_at_once(SERVICE, Metric.TIER_REQUEST_STALE)
    body = {
        "code": ErrorCode.PRECONDITION_FAILED.value,
        "message": str(exc),
        "field": IF_MATCH,
        "current": schemas.SubscriptionStateOut.of(exc.current).model_dump(mode="json"),
    }
    return json_response(STATUS[ErrorCode.PRECONDITION_FAILED], body, {"ETag": exc.current.tag})


@app.exception_handler(ProfileChangedError)  # type: ignore[untyped-decorator]
def _changed_meanwhile(exc: ProfileChangedError) -> Response[str]:
    """Another writer kept changing the profile while this request was applied to it (each attempt re-read it)."""
    return error_response(ErrorCode.CONFLICT, str(exc))


@app.exception_handler(UnavailableError)  # type: ignore[untyped-decorator]
def _unavailable(exc: UnavailableError) -> Response[str]:
    return customer_api.unavailable(app, log, exc)


# --- public -----------------------------------------------------------------------------------------------------------


@app.get("/v1/pricing", summary="The price book and tier comparison (public)", tags=["pricing"])
def pricing() -> schemas.PricingOut:
    deps = _deps()
    return schemas.PricingOut.of(logic.book_for(deps.catalog, _now()))


@app.get("/openapi.json", include_in_schema=False)
def openapi() -> Response[str]:
    return Response(status_code=200, headers=dict(JSON_HEADERS), body=openapi_document())


CRYPTO_ROUTES: Final = Path_(__file__).with_name("crypto_openapi.json")


@functools.cache
def openapi_document() -> str:
    """The customer API's document: this function's routes, generated from ``schemas``, and the crypto routes the
    crypto function serves on the same API, generated from its models into ``crypto_openapi.json``
    (``python -m kilo_dev.openapi``; a test fails when that file is stale)."""
    generated = app.get_openapi_json_schema(
        title="Kilo Billing account API",
        version="1.0.0",
        description=(
            "Customer-facing billing API. Send `Authorization: Bearer <JWT>`; the token's claims name the account "
            "(`kilo_account`) and role (`kilo_role`: owner | admin | member); operators carry `kilo_operator`. "
            "Every error answer is `{code, message, field}` (`ErrorBody`); API Gateway's own answers (its "
            "authorizer's 401, an unknown route's 404) carry `message` alone."
        ),
        security_schemes={"jwt": HTTPBearer(bearerFormat="JWT")},
    )
    document = with_if_none_match(with_if_match(with_idempotency_key(optional_bodies(json.loads(generated)))))
    crypto = json.loads(CRYPTO_ROUTES.read_text(encoding="utf-8"))
    document["paths"].update(crypto["paths"])
    schemas_found = document["components"]["schemas"]
    for name, schema in crypto["components"]["schemas"].items():
        if schemas_found.setdefault(name, schema) != schema:
            raise RuntimeError(f"schema {name} differs between the account API and the crypto routes")
    return json.dumps(customer_api.with_unsupported_media_type(without_default_validation_errors(document)))


# --- usage ------------------------------------------------------------------------------------------------------------


@_account_route(
    "GET",
    "/usage",
    "Month to date per meter, allowance used, daily series",
    answer=(200, schemas.UsageOut),
    description=(
        "Its `ETag` header is the subscription's version this answer shows (`tier`, `scheduled_change`; D441): send "
        "it as `If-Match` with `POST .../subscription` to have the tier request refused (412) when that changed."
    ),
)
def usage(account_id: AccountId) -> Response[str]:
    _authorize(account_id)
    deps = _deps()
    report = logic.usage_report(deps.accounts, deps.month, deps.sessions, deps.catalog, account_id, _now())
    # no-store: the ETag is the subscription's, not this body's (its figures move without it, RFC 9110 8.8.1; D441)
    headers = {"ETag": report.subscription_tag, "Cache-Control": "no-store"}
    return json_response(200, schemas.UsageOut.of(report).model_dump(mode="json"), headers)


@_account_route("GET", "/meetings", "Per-meeting breakdown of a period, newest first, paginated")
def meetings(
    account_id: AccountId,
    period: Annotated[str | None, Query(pattern=r"^[0-9]{4}-[0-9]{2}$", description="YYYY-MM; default: now")] = None,
    cursor: Annotated[str | None, Query(max_length=512, description="next_cursor of the previous page")] = None,
    limit: Annotated[int, Query(ge=1, le=logic.MAX_PAGE)] = 20,
) -> schemas.MeetingsOut:
    _authorize(account_id)
    deps = _deps()
    now = _now()
    page = logic.meetings_page(deps.accounts, deps.sessions, account_id, period, cursor, limit, now)
    return schemas.MeetingsOut.of(account_id, logic.period_of(period, now).key, page)


@_account_route("GET", "/forecast", "Bill at the period end (weekday-aware) and budget status")
def forecast(account_id: AccountId) -> schemas.ForecastOut:
    _authorize(account_id)
    deps = _deps()
    found = logic.forecast(deps.accounts, deps.month, deps.catalog, account_id, _now(), deps.settings.weekday_weights)
    return schemas.ForecastOut.of(found)


@_account_route("GET", "/recommendations", "Cheaper tier and usage levers, with their savings")
def recommendations(account_id: AccountId) -> schemas.RecommendationsOut:
    _authorize(account_id)
    deps = _deps()
    now = _now()
    mtd = logic.current_month(deps.accounts, deps.month, deps.catalog, account_id, now)
    policy = RecommendationPolicy(deps.settings.audience_min_participants, deps.settings.simulcast_data_saving)
    found = recommend(
        mtd, deps.sessions.sessions(account_id, mtd.period), logic.book_for(deps.catalog, now), now, policy
    )
    return schemas.RecommendationsOut(
        account_id=account_id, period=mtd.period, recommendations=[schemas.RecommendationOut.of(r) for r in found]
    )


# --- budget and alerts ------------------------------------------------------------------------------------------------


@_account_route("GET", "/budget", "The account's budget and hard limit")
def get_budget(account_id: AccountId) -> schemas.BudgetOut:
    _authorize(account_id)
    return schemas.BudgetOut.of(logic.profile_of(_deps().accounts, account_id))


@_account_route("PUT", "/budget", "Replace the budget (admins and owners)")
def put_budget(account_id: AccountId, body: schemas.BudgetIn) -> schemas.BudgetOut:
    _authorize_stored(account_id, Role.ADMIN)
    request = logic.BudgetRequest(body.budget_usd, tuple(body.alert_percentages), body.hard_limit_usd)
    deps = _deps()
    bill = logic.BillSoFar(deps.month, deps.catalog, _now())  # a new hard limit must be above it (D368)
    return schemas.BudgetOut.of(logic.set_budget(deps.accounts, account_id, request, bill))


@_account_route("GET", "/alert-preferences", "Who hears about alerts, on which channels")
def get_alert_preferences(account_id: AccountId) -> schemas.AlertPreferencesOut:
    _authorize(account_id)
    return schemas.AlertPreferencesOut.of(logic.profile_of(_deps().accounts, account_id))


@_account_route("PUT", "/alert-preferences", "Set contacts and channels (admins and owners)")
def put_alert_preferences(account_id: AccountId, body: schemas.AlertPreferencesIn) -> schemas.AlertPreferencesSavedOut:
    _authorize_stored(account_id, Role.ADMIN)
    channels = {kind: tuple(str(channel) for channel in chosen) for kind, chosen in body.channels.items()}
    request = logic.AlertPreferencesRequest(body.name, body.email, body.phone, channels)
    deps = _deps()
    saved = logic.set_alert_preferences(deps.accounts, account_id, request, deps.phone_codes.policy.regions)
    # a new (unverified) number gets its code now; the save stands whatever the SMS does (D160)
    code = phone.code_for_saved_number(saved, deps.phone_codes, _now())
    return schemas.AlertPreferencesSavedOut.saved(saved, code)


@_account_route("POST", "/alert-preferences/phone-code", "Send a new code to the SMS number (admins and owners)")
def send_phone_code(account_id: AccountId, body: schemas.PhoneCodeRequestIn | None = None) -> schemas.PhoneCodeOut:
    _authorize_stored(account_id, Role.ADMIN)
    _absent_or_object(body)
    deps = _deps()
    profile = logic.profile_of(deps.accounts, account_id)
    sent = phone.send_code(profile, deps.phone_codes, _now())
    return schemas.PhoneCodeOut(phone=sent.phone, code_expires_at=sent.code_expires_at, tries=sent.tries_left)


@_account_route("POST", "/alert-preferences/phone-code/confirm", "Confirm the SMS number with its code (admins)")
def confirm_phone_code(account_id: AccountId, body: schemas.PhoneCodeIn) -> schemas.AlertPreferencesOut:
    _authorize_stored(account_id, Role.ADMIN)
    deps = _deps()
    profile = logic.profile_of(deps.accounts, account_id)
    return schemas.AlertPreferencesOut.of(
        phone.confirm_code(deps.accounts, profile, deps.phone_codes, body.code, _now())
    )


@_account_route("POST", "/entitlements/check", "May the account start a call now")
def entitlement_check(account_id: AccountId, body: schemas.EntitlementIn | None = None) -> schemas.EntitlementOut:
    _authorize(account_id)
    _absent_or_object(body)
    found = logic.check_entitlement(_deps().entitlements, account_id, _now(), EntitlementPolicy())
    return schemas.EntitlementOut.of(found)


# --- invoices and subscription -------------------------------------------------------------------------------------


@_account_route("GET", "/invoices", "The account's invoices, newest first")
def list_invoices(account_id: AccountId) -> schemas.InvoicesOut:
    _authorize(account_id)
    deps = _deps()
    logic.profile_of(deps.accounts, account_id)
    found = logic.invoices(deps.ledger, account_id)
    return schemas.InvoicesOut(account_id=account_id, invoices=[schemas.InvoiceSummaryOut.of(i) for i in found])


@_account_route("GET", "/invoices/<number>", "One invoice (receipt): lines, status, links")
def get_invoice(
    account_id: AccountId, number: Annotated[str, Path(pattern=r"^KB-[A-Za-z0-9_.:@+=-]+-[0-9]{5,}$")]
) -> schemas.InvoiceOut:
    _authorize(account_id)
    deps = _deps()
    logic.profile_of(deps.accounts, account_id)
    return schemas.InvoiceOut.of(logic.invoice(deps.ledger, account_id, number))


@_account_route(
    "GET",
    "/subscription",
    "The tier in effect, the next scheduled change and the subscription's version",
    answer=(200, schemas.SubscriptionStateOut),
    description=(
        "Its `ETag` header (and `etag`) is the subscription's version (D441): send it as `If-Match` with `POST "
        ".../subscription` to have the tier request refused (412) when the subscription changed meanwhile, or as "
        "`If-None-Match` here to be answered 304 while it has not (D447)."
    ),
)
def get_subscription(account_id: AccountId) -> Response[str]:
    _authorize(account_id)
    state = logic.subscription(_deps().accounts, account_id, _now())
    headers = {"ETag": state.tag, "Cache-Control": "private, no-cache"}
    if_none_match = app.current_event.headers.get("if-none-match")  # case-insensitive
    if if_none_match is not None and logic.none_match_fails(if_none_match, state.tag):
        return Response(status_code=304, headers=headers, body="")
    return json_response(200, schemas.SubscriptionStateOut.of(state).model_dump(mode="json"), headers)


@_account_route(
    "POST",
    "/subscription",
    "Change tier: upgrade now, downgrade at period end",
    (*ERRORS, 422),
    answer=(200, schemas.SubscriptionOut),
)
def change_subscription(account_id: AccountId, body: schemas.SubscriptionIn) -> Response[str]:
    """With its required ``Idempotency-Key`` header (D436; the dashboard sends one per click, D377): the first
    answer (200) is stored with the tier change in one write and replayed exactly for the same key and body for
    24 h, the same key with another body is 422; a refusal (4xx) is not stored. Without the header: 400, nothing
    decided (a retry decided on the stored state could drop a change made since, D373 amended (api4)). With an
    ``If-Match`` (optional; the dashboard sends its page's ``ETag``, D441): decided only when it names the
    subscription's version now, else 412 and nothing written; a replay is answered as stored whatever it names. A
    decided answer carries the subscription's new ``ETag``; a replayed one none (its version may have moved on)."""
    _authorize_stored(account_id, Role.ADMIN)
    now = _now()
    deps = _deps()
    key = _idempotency_key()
    if_match = app.current_event.headers.get("if-match")  # case-insensitive
    tag: dict[str, str] = {}
    digest = hashlib.sha256(body.model_dump_json().encode()).hexdigest()
    stored = deps.accounts.answer(account_id, key, now)
    if stored is None:

        def answered(outcome: logic.TierChangeOutcome) -> StoredAnswer:
            out = _subscription_out(account_id, outcome, now)
            return StoredAnswer(account_id, key, digest, 200, out.model_dump_json(), now)

        try:
            outcome = logic.change_tier(
                deps.accounts, deps.catalog, account_id, body.tier, now, deps.month, answered, if_match
            )
            stored = answered(outcome)
            tag["ETag"] = logic.subscription_tag(outcome.profile, now)
        except AnswerExistsError:  # the same key answered meanwhile (a concurrent retry): that answer is the one
            stored = deps.accounts.answer(account_id, key, now)
            if stored is None:
                # no answer yet: named by the key so a client keeps it for the retry (the dashboard does, D436)
                raise ConflictError(
                    "the request with this Idempotency-Key is in progress; retry", IDEMPOTENCY_KEY
                ) from None
    if stored.digest != digest:
        raise UnprocessableError(
            IDEMPOTENCY_KEY, "this key was used with another request body; send a new key for a new request"
        )
    # only 200s are stored: replayed as they were
    return json_response(200, schemas.SubscriptionOut.model_validate_json(stored.body).model_dump(mode="json"), tag)


def _idempotency_key() -> str:
    """The request's ``Idempotency-Key`` header; 400 without one (D436), and when empty, longer than 255
    characters or not printable ASCII."""
    key = app.current_event.headers.get("idempotency-key")  # case-insensitive
    if key is None:
        count_at_once(SERVICE, Metric.TIER_REQUEST_KEY_MISSING)  # the keyless callers seen (D436)
        raise InvalidRequestError(
            IDEMPOTENCY_KEY,
            "required: send an Idempotency-Key header, a new key (e.g. a UUID) per tier change and the same key on "
            "its retry",
        )
    if not 0 < len(key) <= IDEMPOTENCY_KEY_MAX or not all(" " <= c <= "~" for c in key):
        raise InvalidRequestError(
            IDEMPOTENCY_KEY, f"an Idempotency-Key is 1 to {IDEMPOTENCY_KEY_MAX} printable ASCII characters"
        )
    if "," in key:  # API Gateway (payload 2.0) joins repeated headers with commas: two keys sent (D436)
        raise InvalidRequestError(IDEMPOTENCY_KEY, "send one Idempotency-Key header, without a comma")
    return key


def _subscription_out(account_id: str, outcome: logic.TierChangeOutcome, now: datetime) -> schemas.SubscriptionOut:
    return schemas.SubscriptionOut(
        account_id=account_id,
        current_tier=outcome.current_tier,
        requested_tier=outcome.tier,
        effective_at=outcome.effective_at,
        change=(
            "pending_change_cancelled"
            if outcome.cancelled
            else "upgrade_now"
            if outcome.effective_at <= now
            else "downgrade_at_period_end"
        ),
    )


@_account_route("POST", "/payment-methods/checkout", "A Stripe Checkout page to save a card")
def checkout(account_id: AccountId, body: schemas.CheckoutIn | None = None) -> schemas.UrlOut:
    _authorize_stored(account_id, Role.ADMIN)
    body = _absent_or_object(body) or schemas.CheckoutIn()
    url = logic.checkout_url(_card_pages(), account_id, _text(body.success_url), _text(body.cancel_url))
    return schemas.UrlOut(url=url)


@_account_route("POST", "/billing-portal", "A Stripe Billing Portal page (cards, receipts)")
def billing_portal(account_id: AccountId, body: schemas.PortalIn | None = None) -> schemas.UrlOut:
    _authorize_stored(account_id, Role.ADMIN)
    body = _absent_or_object(body) or schemas.PortalIn()
    return schemas.UrlOut(url=logic.portal_url(_card_pages(), account_id, _text(body.return_url)))


# --- members --------------------------------------------------------------------------------------------------------


@_account_route("GET", "/members", "The account's members and open invitations, with their roles")
def list_members(account_id: AccountId) -> schemas.MembersOut:
    _authorize(account_id)
    deps = _deps()
    found = logic.members(deps.accounts, deps.members, account_id, _now())
    return schemas.MembersOut(account_id=account_id, members=[schemas.MemberOut.of(m) for m in found])


@_account_route("POST", "/members", "Invite a member: nothing is granted until they accept (admins; owners anyone)")
def add_member(account_id: AccountId, body: schemas.MemberIn) -> Response[str]:
    role = _authorize_stored(account_id, Role.ADMIN)
    deps = _deps()
    member = Member(account_id, body.user, body.email, Role[body.role.upper()], _now())
    lasts = timedelta(days=deps.settings.invitation_days)
    invited = logic.invite_member(deps.accounts, deps.catalog, deps.members, role, member, lasts)
    return json_response(201, schemas.MemberOut.of(invited).model_dump(mode="json"))


@_account_route("DELETE", "/members/<user>", "Remove a member or withdraw an invitation (admins and owners)")
def remove_member(
    account_id: AccountId,
    user: Annotated[str, Path(pattern=schemas.USER_PATTERN, description="The user id; not '.' or '..'")],
) -> Response[str]:
    role = _authorize_stored(account_id, Role.ADMIN)
    try:
        schemas.user_id(user)
    except ValueError as exc:
        raise InvalidRequestError("path.user", str(exc)) from exc
    deps = _deps()
    logic.remove_member(deps.accounts, deps.members, role, account_id, user)
    return Response(status_code=204, headers={}, body="")


# --- the signed-in user's invitations (any token: a user invited to their first account has no account claims) ----


def _invitation_route(method: str, suffix: str, summary: str) -> Callable[[customer_api.Route], customer_api.Route]:
    return customer_api.secured_route(app, method, f"/v1/invitations{suffix}", summary, ERRORS, tags=["invitations"])


@_invitation_route("GET", "", "The signed-in user's open invitations to accounts")
def list_invitations() -> schemas.InvitationsOut:
    user = user_from_event(app.current_event.raw_event)
    found = logic.invitations(_deps().members, user, _now())
    return schemas.InvitationsOut(user=user, invitations=[schemas.InvitationOut.of(m) for m in found])


@_invitation_route("POST", "/<account_id>/accept", "Accept an invitation: a member from now (at the next sign-in)")
def accept_invitation(account_id: AccountId, body: schemas.InvitationAnswerIn | None = None) -> schemas.MemberOut:
    user = user_from_event(app.current_event.raw_event)
    _absent_or_object(body)
    deps = _deps()
    now = _now()
    return schemas.MemberOut.of(
        logic.accept_invitation(deps.accounts, deps.catalog, deps.members, user, account_id, now, _invocation_end(now))
    )


@_invitation_route("POST", "/<account_id>/decline", "Decline an invitation")
def decline_invitation(account_id: AccountId, body: schemas.InvitationAnswerIn | None = None) -> Response[str]:
    user = user_from_event(app.current_event.raw_event)
    _absent_or_object(body)
    logic.decline_invitation(_deps().members, user, account_id)
    return Response(status_code=204, headers={}, body="")


# --- privacy --------------------------------------------------------------------------------------------------------


# The export's pages are in start order, not write order (D372 amended (ex2) #5), said to the API's clients (D437)
EXPORT_ORDER: Final = (
    "Sessions come in start order: `next_cursor` is a start time, and each page holds the sessions begun from it on. "
    "The guarantee is over start times, not write times: a session written after the export's cursor passed its "
    "start (a late webhook, a redelivered event, the sessions' index still catching up) is on no page of this "
    "export; it is on the next export. An export read page by page over a while can therefore miss sessions that "
    "arrive meanwhile; export again for a copy that includes them."
)


@_account_route(
    "GET",
    "/export",
    "All personal data and usage of the account as JSON, sessions paged (owners)",
    description=EXPORT_ORDER,
)
def export(
    account_id: AccountId,
    cursor: Annotated[
        str | None, Query(max_length=512, description="next_cursor of the previous page: its sessions alone")
    ] = None,
    limit: Annotated[
        int | None,
        Query(
            ge=1,
            le=logic.EXPORT_PAGE,
            description="sessions a page (more only to finish a millisecond; fewer past the page's bytes); "
            "without it and a cursor, every session in one answer when they fit, else 400",
        ),
    ] = None,
) -> Response[str]:
    """Without ``cursor`` and ``limit``: everything, every session included, when the sessions fit one answer
    (``logic.EXPORT_PAGE_BYTES``), else 400 naming how to page. With ``limit`` (paging is opt-in): the first page
    holds the profile, members, usage by period, invoices, the phone code's item and the first sessions; follow
    ``next_cursor`` (``null`` on the last page) with ``?cursor=`` for the rest of the sessions (D372)."""
    _authorize_stored(account_id, Role.OWNER)
    deps = _deps()
    now = _now()
    if cursor is not None:
        page = logic.export_sessions(
            deps.accounts,
            deps.sessions,
            account_id,
            cursor,
            logic.EXPORT_PAGE if limit is None else limit,
            size=schemas.session_bytes,
        )
        return json_response(200, schemas.export_page_json(account_id, now, page))
    data = logic.export(
        deps.accounts,
        deps.members,
        deps.sessions,
        deps.ledger,
        account_id,
        now,
        deps.phone_codes.challenges,
        limit,
        size=schemas.session_bytes,
    )
    return json_response(200, schemas.export_json(data))


@_account_route("POST", "/erase", "Pseudonymise personal data; invoices and amounts kept (owners)")
def erase(account_id: AccountId, body: schemas.ErasureIn | None = None) -> schemas.ErasureOut:
    _authorize_stored(account_id, Role.OWNER)
    _absent_or_object(body)
    deps = _deps()
    erased = logic.erase(
        deps.accounts,
        deps.members,
        deps.sessions,
        account_id,
        _now(),
        deps.phone_codes.challenges,
        deps.ledger,
        deps.alert_records,
    )
    return schemas.ErasureOut.of(erased)


# --- operator -------------------------------------------------------------------------------------------------------


@customer_api.secured_route(app, "GET", "/v1/operator/accounts", "Every registered account (operators)", ERRORS,
                            tags=["operator"])  # fmt: skip
def operator_accounts() -> schemas.OperatorAccountsOut:
    _caller().require_operator()
    deps = _deps()
    now = _now()
    found = logic.operator_accounts(deps.accounts, deps.signals.accounts(), now)
    return schemas.OperatorAccountsOut(accounts=[schemas.OperatorAccountOut.of(p, now) for p in found])


# Crypto routes (quotes, transaction submission, wallet links, history) are served by the crypto function on this same
# HTTP API and authorizer, under /v1/accounts/{account_id}/crypto/... (template.yaml, AccountApi; docs/decisions.md).


@tracer(SERVICE).capture_lambda_handler(capture_response=False)
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return app.resolve(event, context)
