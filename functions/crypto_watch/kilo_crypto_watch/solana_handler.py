"""Scheduled handler (every minute): one watcher run per configured Solana chain (``solana_rpc.watch``: references,
the merchant's sweep, finality), reporting to settlement. Idempotent: the cursor's conditional write makes an
overlapping run stop (``CursorConflictError``, logged, not a failure), and settlement records each credit once.

With no Solana chain configured it returns at once, reading nothing (the secret included). A failure on any
chain (its RPC, or anything else) fails the invocation after the other chains ran: the asynchronous invocation's
on-failure destination keeps it and an alarm watches it; the next minute resumes from the cursor. A run whose
listing server stayed behind the head (``RunReport.behind``) is no failure: it is logged and counted
(``SolanaListingBehind``, alarmed after 10 minutes of it in a row, D91 amended (s1b)). The watcher is given the
invocation's remaining time: with less than 30 s left it ends its batch on its last whole slot, records it and moves
the cursor (``RunReport.out_of_time``, logged), rather than be killed with nothing kept (D91 amended (s3)).
"""

from __future__ import annotations

import asyncio
from dataclasses import asdict
from datetime import timedelta
from functools import partial
from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from kilo_billing import observability
from kilo_billing.observability import Metric, count, record_per_chain
from kilo_crypto_watch import dependencies
from kilo_crypto_watch.model import ChainConfig
from kilo_crypto_watch.ports import CursorConflictError, SolanaRpcError
from kilo_crypto_watch.settings import settings
from kilo_crypto_watch.solana_rpc import SolanaTransactionInspector, watch

SERVICE = "crypto-solana"
logger = observability.logger(SERVICE)
metrics = observability.metrics(SERVICE)


class SolanaWatchFailedError(Exception):
    """At least one Solana chain's run failed (its RPC did not answer): the invocation fails and is kept."""


@metrics.log_metrics
@logger.inject_lambda_context(clear_state=True)
@observability.tracer(SERVICE).capture_lambda_handler(capture_response=False)
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    # which chains are Solana is configuration alone; the RPC secret is read only when there is one to watch
    if not any(chain.kind == "solana" for chain in settings().chains().values()):
        return {"runs": []}
    chains = [chain for chain in dependencies.chains().values() if chain.kind == "solana"]
    runs: list[dict[str, Any]] = []
    failed: list[str] = []
    expiring_window = timedelta(minutes=settings().quote_expiring_minutes)
    for chain in chains:
        settlement = dependencies.settlement()
        try:
            report = asyncio.run(
                watch(chain, dependencies.cursors(), settlement, settlement, time_left=partial(_seconds_left, context))
            )
            expiring = settlement.announce_expiring(chain.key, expiring_window)
            # what a crash between a bill's save and its event left out, and the drops final on this chain (D449)
            final = {} if report.final_through is None else {chain.key: report.final_through}
            announced = settlement.announce_due(final)
        except CursorConflictError:
            logger.info("another run moved the cursor first; this run stops", extra={"chain": chain.key})
            continue
        except SolanaRpcError as exc:
            logger.warning("solana run failed", extra={"chain": chain.key, "error": str(exc)})
            count(SERVICE, Metric.CRYPTO_WATCH_FAILED)
            failed.append(chain.key)
            continue
        except Exception:  # any other failure is this chain's alone: the other chains still run (D285)
            logger.exception("solana run failed", extra={"chain": chain.key})
            count(SERVICE, Metric.CRYPTO_WATCH_FAILED)
            failed.append(chain.key)
            continue
        if report.stuck:  # left pending, the others settled: each named for an operator (D285)
            logger.error("payments stuck at finality", extra={"chain": chain.key, "stuck": list(report.stuck)})
            count(SERVICE, Metric.CRYPTO_PAYMENTS_STUCK, len(report.stuck))
        if report.out_of_time:  # its transaction loop stopped on its time budget: read slots kept (D91 amended (s3))
            logger.warning(
                "solana run out of time; stopped on its last whole slot, the next run resumes",
                extra={"chain": chain.key, "to_block": report.to_block},
            )
        if report.behind:  # its listing server stayed behind the head: nothing read, the cursor stayed (D91)
            logger.warning(
                "solana listing server behind the head; the next run lists again",
                extra={"chain": chain.key},
            )
            count(SERVICE, Metric.SOLANA_LISTING_BEHIND)
        record_per_chain(SERVICE, Metric.CRYPTO_WATCH_BEHIND, chain.key, report.lag)  # D414 amended (ops2)
        count(SERVICE, Metric.CRYPTO_TRANSFERS_SEEN, report.transfers_seen)
        count(SERVICE, Metric.CRYPTO_PAYMENTS_FINALIZED, report.finalized)
        count(SERVICE, Metric.CRYPTO_PAYMENTS_ORPHANED, report.orphaned)
        count(SERVICE, Metric.CRYPTO_RPC_CALLS, report.rpc_calls)
        extra = {"quotes_expiring_announced": expiring, "bills_announced": announced}
        logger.info("solana run", extra=asdict(report) | extra)
        runs.append(asdict(report) | extra)
    # dust kept unattributed without an alert, by any chain's run, failed ones included (D364)
    count(SERVICE, Metric.CRYPTO_UNATTRIBUTED_UNALERTED, dependencies.settlement().take_unalerted())
    if failed:
        raise SolanaWatchFailedError(f"solana rpc failed for chains {failed}; the next run resumes from the cursor")
    return {"runs": runs}


def _seconds_left(context: LambdaContext) -> float:
    """Seconds the invocation has left: the watcher's time budget (D91, amended (s3))."""
    return context.get_remaining_time_in_millis() / 1000


def inspector(chain: ChainConfig) -> SolanaTransactionInspector:
    """The fast path's TransactionInspector for a Solana chain (dependencies.inspector imports this on demand)."""
    return SolanaTransactionInspector(chain, references=dependencies.settlement())
