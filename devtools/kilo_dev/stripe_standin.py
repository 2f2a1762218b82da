"""A Stripe stand-in server for the demo and end-to-end tests: ``kilo_dev.stripe_emulator`` behind HTTP.

Binds 127.0.0.1 on a free port; whoever starts it stops it (``stop()``, or the PID when run as
``python -m kilo_dev.stripe_standin --webhook-url URL --webhook-secret whsec_...``, which prints ``<port>``). Serves
exactly the endpoints the Stripe adapter uses, refuses parameters the SDK's typed params do not allow, answers in the
shapes of Stripe's published fixtures, and POSTs each event to ``webhook_url`` signed with the Stripe SDK's scheme
(``stripe.WebhookSignature.generate_signature_header``: ``t=<ts>,v1=HMAC-SHA256(secret, "<ts>." + body)``), in order,
from one sender thread. Point a ``StripeClient`` at it with ``base_addresses={"api": standin.url}``.
"""

from __future__ import annotations

import argparse
import json
import queue
import threading
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

import stripe

from kilo_dev import processes
from kilo_dev.stripe_emulator import StripeEmulator


class StripeStandin:
    def __init__(self, webhook_url: str | None = None, webhook_secret: str = "whsec_standin") -> None:  # noqa: S107 - a test secret
        self.webhook_url = webhook_url
        self.webhook_secret = webhook_secret
        self.delivered: list[tuple[str, int]] = []  # (event id, HTTP status or 0 when unreachable)
        self._outbox: queue.Queue[dict[str, Any] | None] = queue.Queue()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self.emulator = StripeEmulator(on_event=self._outbox.put, base_url=self.url)
        self._threads = [
            threading.Thread(target=processes.serving(self._server), name="stripe-standin", daemon=True),
            threading.Thread(target=self._send_events, name="stripe-standin-webhooks", daemon=True),
        ]

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> StripeStandin:
        for thread in self._threads:
            thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._outbox.put(None)
        for thread in self._threads:
            thread.join(timeout=5)

    def __enter__(self) -> StripeStandin:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def pending(self) -> int:
        """Webhooks emitted and not yet delivered (or found unreachable): the local stack is not idle meanwhile."""
        return self._outbox.unfinished_tasks

    def wait_for_deliveries(self, timeout: float = 60.0) -> None:
        """Block until every event emitted so far was sent (or found unreachable); ``TimeoutError`` naming how many
        are left after ``timeout`` (a stopped stand-in sends nothing more: it would wait for good)."""
        outbox = self._outbox
        with outbox.all_tasks_done:
            if not outbox.all_tasks_done.wait_for(lambda: outbox.unfinished_tasks == 0, timeout):
                raise TimeoutError(f"the Stripe stand-in still had {outbox.unfinished_tasks} webhooks to deliver to "
                                   f"{self.webhook_url} after {timeout:.0f} s")  # fmt: skip

    def _send_events(self) -> None:
        while True:
            event = self._outbox.get()
            try:
                if event is None:
                    return
                if self.webhook_url is not None:
                    self.delivered.append((event["id"], self._post(event)))
            finally:
                self._outbox.task_done()

    def _post(self, event: dict[str, Any]) -> int:
        payload = json.dumps(event)
        header = stripe.WebhookSignature.generate_signature_header(payload, self.webhook_secret)
        assert self.webhook_url is not None
        request = urllib.request.Request(  # noqa: S310 - a configured local URL
            self.webhook_url,
            data=payload.encode("utf-8"),
            headers={"Content-Type": "application/json", "Stripe-Signature": header},
            method="POST",
        )
        try:
            with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
                return int(response.status)
        except urllib.error.HTTPError as error:
            return int(error.code)
        except OSError:
            return 0

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        standin = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self._answer("get")

            def do_POST(self) -> None:
                self._answer("post")

            def do_DELETE(self) -> None:
                self._answer("delete")

            def _answer(self, method: str) -> None:
                parts = urlsplit(self.path)
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length).decode("utf-8") if length else ""
                encoded = body if method == "post" else parts.query
                response = standin.emulator.handle(method, parts.path, encoded, dict(self.headers.items()))
                data = json.dumps(response.body).encode("utf-8")
                self.send_response(response.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.send_header("Request-Id", "req_standin")
                for name, value in response.headers.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:
                return None

        return Handler


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--webhook-url")
    parser.add_argument("--webhook-secret", default="whsec_standin")
    args = parser.parse_args()
    standin = StripeStandin(args.webhook_url, args.webhook_secret).start()
    print(urlsplit(standin.url).port, flush=True)
    processes.serve_until_signalled(standin.stop)


if __name__ == "__main__":
    main()
