"""Build API Gateway HTTP API payload v2.0 events exactly as API Gateway does (for tests and the local gateway).

What API Gateway does to a request: header names lower-cased, repeated headers joined with commas, cookies moved to
``cookies``; a body that is not text (by content type) or not valid UTF-8 is base64-encoded with
``isBase64Encoded: true``; ``requestContext`` carries the route, method, path, source IP and a request id.
"""

from __future__ import annotations

import base64
import time
import uuid
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

_TEXT_TYPES = ("text/", "application/json", "application/webhook+json", "application/xml", "application/x-www-form")


def _is_text(content_type: str) -> bool:
    lowered = content_type.lower()
    return any(lowered.startswith(prefix) for prefix in _TEXT_TYPES) or lowered.endswith("+json")


def http_api_event(
    method: str,
    path: str,
    body: bytes | None,
    headers: Iterable[tuple[str, str]] | dict[str, str] = (),
    *,
    route_key: str | None = None,
    query: str = "",
    force_base64: bool = False,
    source_ip: str = "127.0.0.1",
    api_id: str = "localapi",
    stage: str = "$default",
) -> dict[str, Any]:
    pairs = list(headers.items()) if isinstance(headers, dict) else list(headers)
    merged: dict[str, str] = {}
    cookies: list[str] = []
    for name, value in pairs:
        key = name.lower()
        if key == "cookie":
            cookies.extend(part.strip() for part in value.split(";") if part.strip())
            continue
        merged[key] = f"{merged[key]},{value}" if key in merged else value
    if body is not None:
        merged.setdefault("content-length", str(len(body)))
    now = time.time()
    event: dict[str, Any] = {
        "version": "2.0",
        "routeKey": route_key or f"{method.upper()} {path}",
        "rawPath": path,
        "rawQueryString": query,
        "headers": merged,
        "requestContext": {
            "accountId": "123456789012",
            "apiId": api_id,
            "domainName": f"{api_id}.execute-api.us-east-1.amazonaws.com",
            "domainPrefix": api_id,
            "http": {
                "method": method.upper(),
                "path": path,
                "protocol": "HTTP/1.1",
                "sourceIp": source_ip,
                "userAgent": merged.get("user-agent", ""),
            },
            "requestId": uuid.uuid4().hex[:16] + "=",
            "routeKey": route_key or f"{method.upper()} {path}",
            "stage": stage,
            "time": datetime.fromtimestamp(now, tz=UTC).strftime("%d/%b/%Y:%H:%M:%S +0000"),
            "timeEpoch": int(now * 1000),
        },
        "isBase64Encoded": False,
    }
    if cookies:
        event["cookies"] = cookies
    if query:
        event["queryStringParameters"] = dict(part.split("=", 1) for part in query.split("&") if "=" in part)
    if body is not None and body != b"":
        text: str | None = None
        if not force_base64 and _is_text(merged.get("content-type", "")):
            try:
                text = body.decode("utf-8")
            except UnicodeDecodeError:
                text = None
        if text is None:
            event["body"] = base64.b64encode(body).decode("ascii")
            event["isBase64Encoded"] = True
        else:
            event["body"] = text
    return event
