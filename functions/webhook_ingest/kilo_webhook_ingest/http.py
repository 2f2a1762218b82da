"""API Gateway HTTP API (payload v2.0) in and out: the raw bytes a client sent, and JSON responses."""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

JSON_HEADERS = {"content-type": "application/json"}


class RequestRejectedError(Exception):
    """A request answered with a 4xx/5xx: ``status``, a stable ``code`` and a message naming the problem."""

    def __init__(self, status: int, code: str, message: str, details: object | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.details = details


@dataclass(frozen=True, slots=True)
class RawRequest:
    body: bytes
    headers: Mapping[str, str]  # lower-cased names

    def header(self, name: str) -> str | None:
        return self.headers.get(name.lower())


def raw_request(event: Mapping[str, Any], max_body_bytes: int) -> RawRequest:
    """The exact bytes the client sent (base64-decoded when API Gateway encoded them) and lower-cased headers."""
    headers = {str(k).lower(): str(v) for k, v in (event.get("headers") or {}).items()}
    body = event.get("body")
    if body is None:
        data = b""
    elif event.get("isBase64Encoded"):
        # base64 inflates by 4/3: refuse before decoding a huge payload
        if len(body) > (max_body_bytes * 4) // 3 + 4:
            raise too_large(max_body_bytes)
        try:
            data = base64.b64decode(body, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise RequestRejectedError(400, "bad_encoding", "body is marked base64 but is not valid base64") from exc
    else:
        data = str(body).encode("utf-8")
    if len(data) > max_body_bytes:
        raise too_large(max_body_bytes)
    return RawRequest(body=data, headers=headers)


def too_large(limit: int) -> RequestRejectedError:
    return RequestRejectedError(413, "body_too_large", f"body exceeds {limit} bytes")


def json_response(status: int, payload: object) -> dict[str, Any]:
    return {"statusCode": status, "headers": JSON_HEADERS, "body": json.dumps(payload, separators=(",", ":"))}


def error_payload(error: RequestRejectedError) -> dict[str, Any]:
    body: dict[str, Any] = {"error": {"code": error.code, "message": error.message}}
    if error.details is not None:
        body["error"]["details"] = error.details
    return body


def error_response(error: RequestRejectedError) -> dict[str, Any]:
    return json_response(error.status, error_payload(error))
