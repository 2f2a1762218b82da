"""anvil's log (its output, read for the port it listens on) keeps its start-up and does not grow with the calls made
to the node: a long test session or demo would otherwise fill the disk with one line (or several) per call."""

from __future__ import annotations

from pathlib import Path

import pytest

from kilo_dev.anvil import DEV_ACCOUNTS, Anvil, AnvilError

pytestmark = pytest.mark.e2e
CALLS = 500


def test_given_many_calls_then_anvils_log_keeps_its_start_up_and_grows_no_more(tmp_path: Path) -> None:
    log = tmp_path / "anvil.log"
    with Anvil(log_path=log) as node:
        started = log.read_bytes()
        for _ in range(CALLS):
            node.call("eth_blockNumber")
        snapshot = node.call("evm_snapshot")
        for _ in range(20):
            node.call("eth_sendTransaction", {"from": DEV_ACCOUNTS[0], "to": DEV_ACCOUNTS[1], "value": "0x1"})
        node.mine(50)
        assert node.call("evm_revert", snapshot) is True
        node.mine(5)
        node.call("anvil_reorg", 2, [])
        with pytest.raises(AnvilError):
            node.call("no_such_method")
        assert node.head() == 5
        after = log.read_bytes()
    assert f"Listening on 127.0.0.1:{node.port}".encode() in started  # what `start` reads the port from
    assert b"Available Accounts" in started  # the start-up banner, as anvil prints it
    # Each of those calls logged its method's name at least (eth_blockNumber: 16 bytes a line, 8,000 for the 500):
    # bounded here means not a byte more.
    assert len(after) == len(started), after[len(started) :][:500]
