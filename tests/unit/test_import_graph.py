"""The LiveKit and usage handlers must stay light at cold start: none of the heavy SDKs may be imported."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

HEAVY = ("web3", "eth_account", "stripe", "solana", "solders", "aiohttp")

PROBE = """
import json, sys
import {module}
loaded = sorted({{name.split('.')[0] for name in sys.modules}})
print(json.dumps(loaded))
"""


def loaded_after_import(module: str) -> set[str]:
    result = subprocess.run(
        [sys.executable, "-c", PROBE.format(module=module)], capture_output=True, text=True, check=True
    )
    return set(json.loads(result.stdout))


@pytest.mark.parametrize("module", ["kilo_webhook_ingest.livekit_handler", "kilo_webhook_ingest.usage_handler"])
def test_given_the_webhook_handlers_when_imported_then_no_heavy_sdk_is_loaded(module: str) -> None:
    loaded = loaded_after_import(module)
    assert "kilo_webhook_ingest" in loaded  # the probe really imported the handler
    assert loaded.isdisjoint(HEAVY), sorted(loaded & set(HEAVY))


def test_given_the_livekit_handler_when_imported_then_pydantic_is_not_loaded_either() -> None:
    # pydantic (and pydantic-settings) cost ~0.1-0.2 s; the LiveKit path validates with protobuf only
    assert "pydantic" not in loaded_after_import("kilo_webhook_ingest.livekit_handler")


def test_given_the_probe_then_it_would_see_stripe_when_it_is_imported() -> None:
    assert "stripe" in loaded_after_import("kilo_webhook_ingest.stripe_handler")
