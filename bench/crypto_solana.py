"""Solana watcher benchmark: JSON-RPC calls per run against the number of active Solana Pay references and of new
signatures, on the LiteSVM stand-in through the real ``solana`` client (``SolanaRpcClient``), with the in-memory ports
the watcher's tests use. The stand-in counts the requests it serves (an independent count); the run's own
``rpc_calls`` must equal it.

Per case (R active references, N new payments: half paying a reference of the active set, half without one, caught
by the merchant's sweep): a first run after the payments (new signatures), a second run with nothing new (steady
state), then a run after finality (the N payments finalized). Expected from the watcher's design (solana.py):
``1 (getLatestBlockhash) + R + 2 sweeps (+1 per further page of 1,000) + N getTransaction + 1 getBlock per slot with
a credit + ceil(pending / 256) getSignatureStatuses``.
"""

from __future__ import annotations

import asyncio
import math
import platform
import sys
import time
from dataclasses import dataclass

from bench import write_section


@dataclass(frozen=True)
class Case:
    references: int
    payments: int
    new_run: int
    steady_run: int
    final_run: int
    expected_new: int
    expected_steady: int
    expected_final: int
    seconds_new: float


def _case(references: int, payments: int) -> Case:
    from solders.keypair import Keypair  # noqa: PLC0415

    from kilo_crypto_watch.model import RunReport  # noqa: PLC0415
    from kilo_crypto_watch.solana import SolanaWatcher  # noqa: PLC0415
    from kilo_crypto_watch.solana_rpc import SolanaRpcClient  # noqa: PLC0415
    from kilo_dev.solana_standin import SolanaStandin  # noqa: PLC0415
    from tests.crypto_fakes import MemoryCursorStore, MemoryPaymentSink, StaticReferences  # noqa: PLC0415
    from tests.crypto_solana_chain import SOL, USDC, SolanaTestChain  # noqa: PLC0415

    with SolanaStandin(finality_lag=32) as standin:
        chain = SolanaTestChain(standin)
        start = standin.slot
        keys = [Keypair().pubkey() for _ in range(references)]
        cursors, sink, active = MemoryCursorStore(), MemoryPaymentSink(), StaticReferences([str(k) for k in keys])

        def run() -> tuple[RunReport, float]:
            async def go() -> RunReport:
                async with SolanaRpcClient(standin.url) as rpc:
                    return await SolanaWatcher(chain.config(start), rpc, cursors, sink, active).run()

            standin.reset_calls()
            began = time.perf_counter()
            report = asyncio.run(go())
            elapsed = time.perf_counter() - began
            if report.rpc_calls != standin.rpc_calls():
                raise AssertionError(f"watcher counted {report.rpc_calls}, the stand-in served {standin.rpc_calls()}")
            return report, elapsed

        run()  # the first run after deployment: nothing yet
        for n in range(payments):
            reference = keys[n // 2] if n % 2 == 0 and n // 2 < len(keys) else None
            if n % 4 < 2:
                chain.pay_sol(SOL // 1000 + n, reference=reference)
            else:
                chain.pay_usdc(USDC + n, reference=reference)
        new, seconds = run()
        steady, _ = run()
        standin.finalize()
        final, _ = run()
        if len(sink.transfers) != payments:
            raise AssertionError(f"{len(sink.transfers)} transfers recorded for {payments} payments")
        pages = 1 + 2  # head + the wallet and token-account sweeps (each under 1,000 signatures here)
        statuses = math.ceil(payments / 256)
        return Case(
            references=references,
            payments=payments,
            new_run=new.rpc_calls,
            steady_run=steady.rpc_calls,
            final_run=final.rpc_calls,
            expected_new=pages + references + 2 * payments + statuses,  # getTransaction + getBlock (one slot each)
            expected_steady=pages + references + statuses,
            expected_final=pages + references + statuses,
            seconds_new=seconds,
        )


def run(quick: bool = False) -> str:
    sizes = [0, 10] if quick else [0, 10, 100]
    cases = [_case(references, payments) for references in sizes for payments in sizes]
    rows = "\n".join(
        f"| {c.references} | {c.payments} | {c.new_run} ({c.expected_new}) | {c.steady_run} ({c.expected_steady}) "
        f"| {c.final_run} ({c.expected_final}) | {c.seconds_new * 1000:.0f} ms |"
        for c in cases
    )
    section = f"""## Crypto: the Solana watcher's RPC calls per run (issue 13)

`bench/crypto_solana.py` (`./dev bench --only crypto-solana`), Python {platform.python_version()}
({sys.platform}): the watcher over the real `solana` client against the LiteSVM stand-in (`kilo_dev.solana_standin`),
which counts the requests it serves; each run's own count equals it. R active Solana Pay references; N new payments
(SOL and USDC alternating, half paying one of the references, half without one, caught by the merchant's sweep).
Measured calls, with the design's expectation in brackets.

| references R | new payments N | run with N new | next run, nothing new | run at finality | time, run with N new |
|---|---|---|---|---|---|
{rows}

Reading the figures:
- **Calls grow only with active references and new signatures**: nothing new costs `1 + R + 2` (the head, one
  `getSignaturesForAddress` per reference, the sweeps of the merchant's wallet and its USDC token account) plus one
  `getSignatureStatuses` per 256 payments awaiting finality; each new credit adds one `getTransaction` and one
  `getBlock` per slot holding credits (here every payment has its own slot, so `2 N`). Payments already seen are
  never fetched again: the run only reads signatures above the cursor's slot.
- A payment found both through its reference and through the sweep is fetched once (signatures are merged first).
- Downtime: signatures above the cursor are paged 1,000 at a time and processed oldest first, at most 500
  transactions per run (the cursor stops on a whole slot; the next run resumes): calls per run stay bounded.
"""
    write_section("crypto-solana", section)
    return section
