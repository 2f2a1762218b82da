"""The exchange spot-price source against a local HTTP server (127.0.0.1, a free port, stopped by this test) answering
in Coinbase's ``/v2/prices/<A>-USD/spot`` shape."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import ClassVar

import pytest

from kilo_crypto_watch.adapters import ExchangeSpotPrice
from kilo_crypto_watch.ports import PriceUnavailableError


class Spot(BaseHTTPRequestHandler):
    answers: ClassVar[dict[str, tuple[int, object]]] = {}
    paths: ClassVar[list[str]] = []

    def do_GET(self) -> None:
        Spot.paths.append(self.path)
        status, body = Spot.answers.get(self.path, (404, {"errors": [{"id": "not_found"}]}))
        raw = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)

    def log_message(self, format: str, *args: object) -> None:
        return


@pytest.fixture
def server() -> Iterator[str]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Spot)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    Spot.answers = {}
    Spot.paths = []
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(5)


def test_given_a_spot_answer_then_the_reading_is_exact_and_timed_by_the_date_header(server: str) -> None:
    Spot.answers["/v2/prices/ETH-USD/spot"] = (200, {"data": {"base": "ETH", "currency": "USD", "amount": "3012.34"}})
    before = datetime.now(UTC).replace(microsecond=0)
    reading = ExchangeSpotPrice(f"{server}/v2/prices/{{asset}}-USD/spot", heartbeat_seconds=90).read("ETH")
    assert (reading.source, reading.asset, reading.price, reading.heartbeat_seconds) == (
        "exchange:coinbase",
        "ETH",
        Decimal("3012.34"),
        90,
    )
    assert before <= reading.updated_at <= datetime.now(UTC)
    assert Spot.paths == ["/v2/prices/ETH-USD/spot"]


@pytest.mark.parametrize(
    ("answer", "message"),
    [
        ((500, {"errors": [{"id": "internal"}]}), "did not answer for SOL"),
        ((200, {"data": {"base": "BTC", "currency": "USD", "amount": "1"}}), "answered BTC-USD, not SOL-USD"),
        ((200, {"data": {"base": "SOL", "currency": "USD", "amount": "0"}}), "unusable price 0"),
        ((200, {"data": {"base": "SOL", "currency": "USD"}}), "no amount"),
        ((200, ["not", "an", "object"]), "without a data object"),
    ],
)
def test_given_a_bad_answer_then_price_unavailable_naming_it(
    server: str, answer: tuple[int, object], message: str
) -> None:
    Spot.answers["/v2/prices/SOL-USD/spot"] = answer
    with pytest.raises(PriceUnavailableError, match=message):
        ExchangeSpotPrice(f"{server}/v2/prices/{{asset}}-USD/spot").read("SOL")


def test_given_nothing_listening_then_price_unavailable() -> None:
    with pytest.raises(PriceUnavailableError, match="did not answer"):
        ExchangeSpotPrice("http://127.0.0.1:9/{asset}", timeout=0.5).read("ETH")


def test_given_a_file_url_then_refused_at_configuration() -> None:
    with pytest.raises(ValueError, match="must be http"):
        ExchangeSpotPrice("file:///etc/passwd")
