"""The Solana watcher under its generated role (SolanaWatchFunctionRole): the RPC URL read from the RPC secret, a SOL
payment of a quote's reference seen on the LiteSVM stand-in (the bill PROCESSING), then finalized (the bill PAID with
its $100.00) - moto enforcing IAM. Seed and figures as in test_crypto_solana_handler.py: a $100.00 bill, SOL locked
at $200.00, 0.5 SOL paid. The negative control takes ``events:PutEvents`` away: the run is refused on it."""

from __future__ import annotations

from decimal import Decimal

import pytest

from kilo_crypto_watch.adapters import DynamoCryptoStore
from kilo_crypto_watch.model import BillStatus
from kilo_crypto_watch.solana_handler import SolanaWatchFailedError
from tests.crypto_solana_chain import SolanaTestChain
from tests.iam.conftest import Roles
from tests.infra.test_generated_iam import BILLING_BUS, CRYPTO_TABLE
from tests.integration.test_crypto_solana_handler import bill_of, chain, deployed, open_bill, run_handler, standin

__all__ = ["chain", "deployed", "standin"]
FUNCTION = "SolanaWatchFunction"


def test_given_the_solana_watcher_under_its_generated_role_then_a_payment_is_seen_and_the_bill_paid(
    deployed: DynamoCryptoStore, chain: SolanaTestChain, roles: Roles
) -> None:
    reference = open_bill(deployed, chain, "100.00", "SOL", "200.00", 500_000_000)
    chain.pay_sol(500_000_000, reference=reference, memo="KB-0001")
    with roles.acting_as(FUNCTION) as enforcement:
        first = run_handler()
    assert enforcement.denied == []
    (report,) = first["runs"]  # type: ignore[misc]
    assert report["transfers_seen"] == 1
    assert bill_of(deployed).status is BillStatus.PROCESSING
    chain.standin.finalize()
    with roles.acting_as(FUNCTION) as finalized:
        run_handler()
    assert finalized.denied == []
    paid = bill_of(deployed)
    assert (paid.status, paid.settled_usd) == (BillStatus.PAID, Decimal("100.00"))
    allowed = enforcement.allowed | finalized.allowed
    assert {("dynamodb:Query", f"{CRYPTO_TABLE}/index/watch"), ("events:PutEvents", BILLING_BUS)} <= allowed
    assert "secretsmanager:GetSecretValue" in {action for action, _ in allowed}


def test_given_put_events_taken_from_the_solana_watcher_s_role_then_the_run_is_refused_on_it(
    deployed: DynamoCryptoStore, chain: SolanaTestChain, roles: Roles
) -> None:
    reference = open_bill(deployed, chain, "100.00", "SOL", "200.00", 500_000_000)
    chain.pay_sol(500_000_000, reference=reference, memo="KB-0001")
    chain.standin.finalize()
    with (
        roles.acting_as(FUNCTION, without={("events:PutEvents", BILLING_BUS)}) as enforcement,
        # the run fails (the chain's failure, after any other chain ran: D285): the next minute's run
        pytest.raises(SolanaWatchFailedError, match=r"\['solana'\]"),  # retries it,
    ):
        run_handler()
    assert set(enforcement.denied) == {("events:PutEvents", BILLING_BUS)}
