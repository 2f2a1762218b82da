"""The Solana stand-in through the real ``solana`` client: paging and commitment as the RPC documents them
(newest first; ``before`` / ``until`` exclusive; ``finalized`` lagging ``confirmed``), the encodings, block hashes and
statuses; and the stand-in as a process, stopped by its PID."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, TypeVar

import pytest
from solana.rpc.async_api import AsyncClient
from solana.rpc.commitment import Confirmed, Finalized
from solana.rpc.core import RPCException
from solders.keypair import Keypair
from solders.rpc.errors import MinContextSlotNotReachedMessage
from solders.signature import Signature
from solders.transaction_status import TransactionConfirmationStatus, TransactionDetails, UiTransaction

from kilo_crypto_watch.ports import SolanaNodeBehindError
from kilo_crypto_watch.solana_rpc import SolanaRpcClient
from kilo_dev.solana_standin import SolanaStandin
from tests.crypto_solana_chain import SOL, SolanaTestChain

T = TypeVar("T")
LAG = 3


@pytest.fixture
def chain() -> Iterator[SolanaTestChain]:
    with SolanaStandin(finality_lag=LAG) as standin:
        yield SolanaTestChain(standin)


def ask(url: str, call: Callable[[AsyncClient], Awaitable[T]]) -> T:
    async def go() -> T:
        async with AsyncClient(url) as client:
            return await call(client)

    return asyncio.run(go())


def test_given_payments_then_signatures_page_newest_first_with_before_until_and_limit(chain: SolanaTestChain) -> None:
    paid = [chain.pay_sol(SOL // 100 + n) for n in range(5)]  # oldest first
    merchant = chain.merchant.pubkey()

    def page(**kwargs: Any) -> list[str]:
        answer = ask(
            chain.standin.url, lambda c: c.get_signatures_for_address(merchant, commitment=Confirmed, **kwargs)
        )
        return [str(item.signature) for item in answer.value]

    newest = paid[::-1]
    assert page(limit=2) == newest[:2]
    assert page(limit=2, before=Signature.from_string(newest[1])) == newest[2:4]
    assert page(until=Signature.from_string(paid[0]))[-1] == newest[3]  # ``until`` itself is left out
    assert page(before=Signature.from_string(newest[3]), until=Signature.from_string(paid[0])) == []


def test_given_a_min_context_slot_above_its_slot_then_signatures_are_refused_with_32016_as_agave_does(
    chain: SolanaTestChain,
) -> None:
    paid = chain.pay_sol(SOL // 100)
    merchant = chain.merchant.pubkey()
    slot = chain.standin.slot  # the confirmed slot: the payment's own (each transaction lands in its own slot)

    def listed(min_slot: int) -> list[str]:
        answer = ask(
            chain.standin.url,
            lambda c: c.get_signatures_for_address(merchant, limit=1, commitment=Confirmed, min_context_slot=min_slot),
        )
        return [str(item.signature) for item in answer.value]

    assert listed(slot) == [paid]  # reached: answered as usual (the newest, limit 1)
    with pytest.raises(RPCException) as refused:
        listed(slot + 1)  # one slot past the server's: Agave's RpcCustomError::MinContextSlotNotReached
    (error,) = refused.value.args
    assert isinstance(error, MinContextSlotNotReachedMessage)
    assert (error.message, error.data.context_slot) == ("Minimum context slot has not been reached", slot)

    async def through_port() -> None:
        async with SolanaRpcClient(chain.standin.url) as rpc:
            await rpc.signatures(str(merchant), min_slot=slot + 1)

    with pytest.raises(SolanaNodeBehindError):  # the adapter's mapping, what the watcher stops on
        asyncio.run(through_port())


def test_given_finality_lag_then_finalized_queries_see_a_transaction_only_after_lag_slots(
    chain: SolanaTestChain,
) -> None:
    signature = chain.pay_sol(SOL // 10)
    slot = chain.standin.slot
    sig = Signature.from_string(signature)
    merchant = chain.merchant.pubkey()

    def finalized_view() -> tuple[bool, list[str]]:
        tx = ask(chain.standin.url, lambda c: c.get_transaction(sig, commitment=Finalized))
        listed = ask(chain.standin.url, lambda c: c.get_signatures_for_address(merchant, commitment=Finalized))
        return tx.value is not None, [str(item.signature) for item in listed.value]

    assert ask(chain.standin.url, lambda c: c.get_slot(Finalized)).value == slot - LAG
    seen, listed = finalized_view()
    assert not seen
    assert signature not in listed
    status = ask(chain.standin.url, lambda c: c.get_signature_statuses([sig])).value[0]
    assert status is not None
    assert (status.slot, status.confirmation_status) == (slot, TransactionConfirmationStatus.Confirmed)

    chain.standin.advance(LAG)

    seen, listed = finalized_view()
    assert seen
    assert signature in listed
    status = ask(chain.standin.url, lambda c: c.get_signature_statuses([sig])).value[0]
    assert status is not None
    assert status.confirmation_status == TransactionConfirmationStatus.Finalized
    unknown = Keypair().sign_message(b"never sent")
    assert ask(chain.standin.url, lambda c: c.get_signature_statuses([unknown])).value == [None]


def test_given_a_transaction_then_json_encoding_and_the_block_answer_in_mainnet_shape(chain: SolanaTestChain) -> None:
    signature = chain.pay_sol(SOL // 10, memo="hello")
    sig = Signature.from_string(signature)
    landed = chain.standin.transaction(signature)
    assert landed is not None

    answer = ask(chain.standin.url, lambda c: c.get_transaction(sig, commitment=Confirmed)).value
    assert answer is not None
    assert answer.slot == landed.slot
    transaction = answer.transaction.transaction
    assert isinstance(transaction, UiTransaction)
    assert str(transaction.signatures[0]) == signature
    meta = answer.transaction.meta
    assert meta is not None
    merchant = list(landed.transaction.message.account_keys).index(chain.merchant.pubkey())
    assert meta.post_balances[merchant] - meta.pre_balances[merchant] == SOL // 10
    assert meta.err is None
    assert "Program log: hello" in (meta.log_messages or [])  # the Memo program's log, from LiteSVM's execution

    block = ask(
        chain.standin.url,
        lambda c: c.get_block(
            landed.slot, transaction_details=TransactionDetails.None_, rewards=False, commitment=Confirmed
        ),
    ).value
    assert block is not None
    assert str(block.blockhash) == chain.standin.blockhash(landed.slot)
    with pytest.raises(RPCException, match="not available"):
        ask(chain.standin.url, lambda c: c.get_block(chain.standin.slot + 10, commitment=Confirmed))
    with pytest.raises(RPCException, match="encoding"):
        ask(chain.standin.url, lambda c: c.get_transaction(sig, encoding="jsonParsed", commitment=Confirmed))


def test_given_a_forgotten_transaction_then_its_slot_is_skipped_as_agave_answers_a_dead_forks_slot(
    chain: SolanaTestChain,
) -> None:
    kept, dropped, after = (chain.pay_sol(SOL // 100 + n) for n in range(3))  # slots S - 1, S, S + 1
    slot = chain.standin.transaction(dropped).slot  # type: ignore[union-attr]
    chain.standin.forget(dropped)
    chain.standin.finalize()  # finalized = S + 1

    with pytest.raises(
        RPCException, match=f"Slot {slot} was skipped, or missing due to ledger jump to recent snapshot"
    ):
        ask(chain.standin.url, lambda c: c.get_block(slot, commitment=Finalized))
    assert ask(chain.standin.url, lambda c: c.get_blocks(slot - 1, slot + 1)).value == [slot - 1, slot + 1]
    block = ask(
        chain.standin.url,
        lambda c: c.get_block(slot + 1, transaction_details=TransactionDetails.None_, commitment=Finalized),
    ).value
    assert (block.parent_slot, str(block.previous_blockhash)) == (slot - 1, chain.standin.blockhash(slot - 1))
    assert ask(chain.standin.url, lambda c: c.get_blocks(slot + 2, slot + 5)).value == []  # above the finalized slot
    assert [chain.standin.transaction(s).slot for s in (kept, after)] == [slot - 1, slot + 1]  # type: ignore[union-attr]


def test_given_the_standin_started_as_a_process_then_it_answers_and_stops_by_its_pid() -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "kilo_dev.solana_standin", "--finality-lag", "2"],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ},
    )
    try:
        assert process.stdout is not None
        port = int(process.stdout.readline())
        url = f"http://127.0.0.1:{port}"
        confirmed = ask(url, lambda c: c.get_slot(Confirmed)).value
        assert ask(url, lambda c: c.get_slot(Finalized)).value == confirmed - 2
    finally:
        os.kill(process.pid, signal.SIGTERM)
        assert process.wait(timeout=10) == 0
