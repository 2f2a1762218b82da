"""A canned AWS endpoint on 127.0.0.1 for the cold-start benchmark: every SDK call a handler makes on its first request
goes over real HTTP (SigV4 signing, parameter validation, response parsing all run in the measured process) and gets
a small, well-formed success answer, so the measured CPU is the handler's own and not a server's.

Answers by protocol: JSON (``X-Amz-Target``: DynamoDB, Secrets Manager, EventBridge, SQS), rest-json (SES v2) and
query (SNS). DynamoDB reads answer from a small set of items keyed by ``pk``/``sk`` (what the bench seeds: e.g. the
usage API's registered account), writes succeed (an ``UpdateItem`` asking for its new values gets what it wrote);
secrets answer from a name -> string map. Unknown operations get ``{}``. The server counts the calls per operation.
Started and stopped (by its thread) by whoever starts it.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
from collections import Counter
from collections.abc import Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs

KEY_NAMES = ("pk", "sk")


def _key(item: Mapping[str, Any]) -> str:
    return json.dumps({name: item[name] for name in KEY_NAMES if name in item}, sort_keys=True)


class CannedAws:
    """The answers (no server): ``answer(path, target, body)`` -> (status, content type, body); calls counted."""

    def __init__(self, secrets: Mapping[str, str] | None = None, items: list[dict[str, Any]] | None = None) -> None:
        self.secrets = dict(secrets or {})
        self.items = {_key(item): item for item in items or []}
        self.calls: Counter[str] = Counter()
        self._lock = threading.Lock()

    def botocore_hook(self, request: Any, **_: Any) -> Any:
        """A botocore ``before-send`` handler answering in-process: everything before the socket (serialising,
        validation, SigV4) and after it (parsing) still runs."""
        from botocore.awsrequest import AWSResponse  # noqa: PLC0415

        target = request.headers.get("X-Amz-Target")
        path = request.url.split("://", 1)[-1].partition("/")[2]
        body = request.body if isinstance(request.body, bytes) else (request.body or "").encode()
        status, content_type, answer = self.answer(
            "/" + path, target.decode() if isinstance(target, bytes) else target, body
        )
        return AWSResponse(request.url, status, {"content-type": content_type}, _Raw(answer))

    def _count(self, operation: str) -> None:
        with self._lock:
            self.calls[operation] += 1

    def answer(self, path: str, target: str | None, body: bytes) -> tuple[int, str, bytes]:
        if target:
            service, _, operation = target.partition(".")
            self._count(f"{service}.{operation}")
            request = json.loads(body or b"{}")
            content_type = (
                "application/x-amz-json-1.0" if service.startswith("DynamoDB") else "application/x-amz-json-1.1"
            )
            return 200, content_type, json.dumps(self._json(operation, request)).encode()
        if path.startswith("/v2/email/"):
            self._count("sesv2.SendEmail")
            return 200, "application/json", b'{"MessageId":"bench-message"}'
        form = {name: values[0] for name, values in parse_qs(body.decode()).items()}
        action = form.get("Action", "Unknown")
        self._count(f"query.{action}")
        xml = (
            f'<{action}Response xmlns="http://sns.amazonaws.com/doc/2010-03-31/"><{action}Result>'
            f"<MessageId>bench-message</MessageId></{action}Result>"
            f"<ResponseMetadata><RequestId>bench-request</RequestId></ResponseMetadata></{action}Response>"
        )
        return 200, "text/xml", xml.encode()

    def _json(self, operation: str, request: dict[str, Any]) -> dict[str, Any]:
        if operation == "GetSecretValue":
            name = request.get("SecretId", "")
            return {"ARN": f"arn:aws:secretsmanager:us-east-1:123456789012:secret:{name}", "Name": name,
                    "SecretString": self.secrets.get(name, "{}"), "VersionId": "bench-version"}  # fmt: skip
        if operation == "GetItem":
            item = self.items.get(_key(request.get("Key", {})))
            return {"Item": item} if item else {}
        if operation == "BatchGetItem":
            responses = {
                table: [self.items[_key(key)] for key in spec.get("Keys", []) if _key(key) in self.items]
                for table, spec in request.get("RequestItems", {}).items()
            }
            return {"Responses": responses, "UnprocessedKeys": {}}
        if operation == "UpdateItem":
            return _updated(request)
        if operation in ("Query", "Scan"):
            return {"Items": [], "Count": 0, "ScannedCount": 0}
        if operation == "TransactGetItems":
            return {"Responses": [{} for _ in request.get("TransactItems", [])]}
        if operation == "BatchWriteItem":
            return {"UnprocessedItems": {}}
        if operation == "PutEvents":
            entries = request.get("Entries", [])
            return {"FailedEntryCount": 0, "Entries": [{"EventId": f"bench-{i}"} for i in range(len(entries))]}
        if operation == "SendMessage":
            digest = hashlib.md5(request.get("MessageBody", "").encode(), usedforsecurity=False).hexdigest()
            return {"MessageId": "bench-message", "MD5OfMessageBody": digest}
        if operation == "SendMessageBatch":
            return {
                "Successful": [
                    {"Id": entry["Id"], "MessageId": f"bench-{entry['Id']}",
                     "MD5OfMessageBody": hashlib.md5(entry["MessageBody"].encode(), usedforsecurity=False).hexdigest()}
                    for entry in request.get("Entries", [])
                ],
                "Failed": [],
            }  # fmt: skip
        return {}


_ASSIGNMENT = re.compile(r"(#?\w+)\s*=\s*(:\w+)")
_ADDITION = re.compile(r"(#?\w+)\s+(:\w+)")


def _updated(request: Mapping[str, Any]) -> dict[str, Any]:
    """An UpdateItem on an item that did not exist: with ``ReturnValues`` UPDATED_NEW or ALL_NEW, the attributes its
    ``SET a = :v`` and ``ADD n :one`` clauses wrote (an ADD onto nothing is its operand)."""
    if request.get("ReturnValues") not in ("UPDATED_NEW", "ALL_NEW"):
        return {}
    names, values = request.get("ExpressionAttributeNames", {}), request.get("ExpressionAttributeValues", {})
    expression = str(request.get("UpdateExpression", ""))
    clauses = re.split(r"\b(SET|ADD|REMOVE|DELETE)\b", expression)
    written: dict[str, Any] = {}
    for keyword, clause in zip(clauses[1::2], clauses[2::2], strict=True):
        pattern = {"SET": _ASSIGNMENT, "ADD": _ADDITION}.get(keyword)
        for name, value in pattern.findall(clause) if pattern else ():
            if value in values:
                written[names.get(name, name)] = values[value]
    return {"Attributes": written}


class _Raw:
    def __init__(self, content: bytes) -> None:
        self._content = content

    def stream(self, **_: Any) -> Any:
        yield self._content


class AwsStub(CannedAws):
    """``CannedAws`` served over HTTP on 127.0.0.1 (a free port), for whole processes (``AWS_ENDPOINT_URL``)."""

    def __init__(self, secrets: Mapping[str, str] | None = None, items: list[dict[str, Any]] | None = None) -> None:
        super().__init__(secrets, items)
        stub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                return None

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length") or 0))
                status, content_type, answer = stub.answer(self.path, self.headers.get("x-amz-target"), body)
                self.send_response(status)
                self.send_header("content-type", content_type)
                self.send_header("x-amzn-requestid", "bench-request")
                self.send_header("content-length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            do_PUT = do_POST  # noqa: N815
            do_GET = do_POST  # noqa: N815

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def __enter__(self) -> AwsStub:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()
