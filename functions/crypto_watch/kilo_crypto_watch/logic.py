"""The crypto routes' and the bills consumer's logic: pure over ports, no status codes, no event shapes.

- ``open_bill``: an issued crypto invoice becomes an OPEN bill (idempotent on the invoice id).
- ``create_quote``: a quote for one of the caller's bills, on a configured chain, at a freshly checked rate.
- ``submit_transaction``: the fast path - the chain's ``TransactionInspector`` reads the customer's transaction and
  settlement records its credits to the merchant as SEEN for that bill at once (the watcher confirms finality later).
- ``wallet_nonce`` / ``wallet_verify``: sign-in nonce and SIWE/SIWS verification linking a wallet to the account.
- ``history``: the account's bills, quotes and payments.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any, Final, cast

from kilo_billing.contracts import InvoiceIssuedV1
from kilo_crypto_watch.history import account_history
from kilo_crypto_watch.model import Asset, Bill, ChainConfig, ObservedTransfer, Payment, PaymentStatus, Quote
from kilo_crypto_watch.ports import (
    ContractSignatureVerifier,
    CryptoStore,
    Rates,
    SettlementStore,
    TransactionInspector,
)
from kilo_crypto_watch.quotes import QuotePolicy, check_quote_room, make_quote, quotable_usd, reusable_quote
from kilo_crypto_watch.settlement import BillNotFoundError, Settlement
from kilo_crypto_watch.wallets import LinkedWallet, SignInPolicy, issue_nonce, verify_and_link

ASSETS: Final = ("ETH", "USDC", "SOL")


class InvalidRequestError(ValueError):
    """The request names something malformed or unsupported; ``field`` names what to fix (the message says how)."""

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


class UnknownChainError(InvalidRequestError):
    pass


class TransactionRefusedError(Exception):
    """The submitted transaction pays nothing to us, failed on chain, or was not found (the message says which)."""


class NodeUnavailableError(Exception):
    """The chain's node did not answer the fast path's lookup: retry later; the watcher still finds the payment. The
    message names the chain only (the node's URL, which may carry a provider's key, stays in the cause)."""

    def __init__(self, chain: str) -> None:
        super().__init__(
            f"the {chain} node did not answer: retry shortly (the watcher will still find the payment on its own)"
        )
        self.chain = chain


@dataclass(frozen=True, slots=True)
class ApiPorts:
    store: CryptoStore
    settlement: Settlement
    rates: Rates
    chains: Mapping[str, ChainConfig]
    inspector: Callable[[ChainConfig], TransactionInspector]
    quote_policy: QuotePolicy
    signin: SignInPolicy
    contracts: ContractSignatureVerifier | None = None
    new_id: Callable[[], str] = lambda: uuid.uuid4().hex
    new_reference: Callable[[], str] | None = None


def open_bill(store: SettlementStore, event: InvoiceIssuedV1) -> Bill | None:
    """The OPEN bill of an issued crypto invoice; None for a card invoice, a $0.00 one, or a redelivery."""
    if event.method != "crypto":
        return None
    total = Decimal(event.total)
    if total <= 0:
        return None  # invoicing records $0.00 invoices paid at once
    bill = Bill(
        invoice_id=event.invoice_id,
        account_id=event.account_id,
        number=event.number,
        period=event.period,
        total_usd=total,
        issued_at=datetime.fromisoformat(event.occurred_at),
    )
    return bill if store.create_bill(bill) else None


def _chain(ports: ApiPorts, chain_key: str) -> ChainConfig:
    chain = ports.chains.get(chain_key)
    if chain is None:
        raise UnknownChainError(f"chain must be one of {sorted(ports.chains)}, not {chain_key!r}", field="chain")
    return chain


def _bill(ports: ApiPorts, account_id: str, invoice_id: str) -> Bill:
    bill = ports.store.bill(invoice_id)
    if bill is None or bill.account_id != account_id:  # another account's bill is not found either
        raise BillNotFoundError(f"no crypto bill {invoice_id!r} for this account")
    return bill


def create_quote(ports: ApiPorts, account_id: str, invoice_id: str, chain_key: str, asset: str, now: datetime) -> Quote:
    chain = _chain(ports, chain_key)
    if asset not in ASSETS:
        raise InvalidRequestError(f"asset must be one of {list(ASSETS)}, not {asset!r}", field="asset")
    bill = _bill(ports, account_id, invoice_id)
    checked = cast(Asset, asset)
    if checked not in (chain.native, "USDC"):
        raise InvalidRequestError(
            f"asset {asset} is not accepted on {chain.key} (accepted: {chain.native}, USDC)", field="asset"
        )
    quotable_usd(bill)  # a paid or covered bill is refused before a rate is locked (its sources may be down)
    quotes = ports.store.quotes(bill.invoice_id)
    reused = reusable_quote(bill, quotes, chain.key, checked, now, ports.quote_policy)
    if reused is not None:
        return reused
    check_quote_room(bill, quotes, now, ports.quote_policy)
    rate = ports.rates.lock(checked, now)
    reference = None
    if chain.kind == "solana":
        if ports.new_reference is None:
            from kilo_crypto_watch.quotes import new_reference  # noqa: PLC0415

            reference = new_reference()
        else:
            reference = ports.new_reference()
    quote = make_quote(bill, chain, checked, rate, now, ports.new_id(), reference, ports.quote_policy)
    ports.store.add_quote(quote)
    return quote


def submit_transaction(
    ports: ApiPorts, account_id: str, invoice_id: str, chain_key: str, tx_id: str
) -> Sequence[Payment]:
    chain = _chain(ports, chain_key)
    if not tx_id or len(tx_id) > 200 or not tx_id.isascii():
        raise InvalidRequestError("tx_id must be a transaction hash (EVM) or signature (Solana)", field="tx_id")
    bill = _bill(ports, account_id, invoice_id)
    from kilo_crypto_watch.ports import (  # noqa: PLC0415
        ChainUnavailableError,
        MalformedTransactionIdError,
        TransactionNotFoundError,
    )

    try:
        transfers = ports.inspector(chain).transfers(tx_id)
    except ChainUnavailableError as exc:
        raise NodeUnavailableError(chain.key) from exc
    except MalformedTransactionIdError as exc:
        raise InvalidRequestError(f"tx_id is not a {chain.key} transaction id: {exc}", field="tx_id") from exc
    except TransactionNotFoundError as exc:
        raise TransactionRefusedError(f"transaction {tx_id} is not known on {chain.key} (yet): retry shortly") from exc
    if not transfers:
        raise TransactionRefusedError(f"transaction {tx_id} pays nothing to our {chain.key} address")
    strays = [transfer for transfer in transfers if transfer.stray]
    if strays:  # paid into an account of ours that is not the payment address: no payment, but our money - kept
        ports.settlement.record_batch(strays)  # UNATTRIBUTED, the operator alerted; the claim is refused below
    kept = _kept_beside_net(ports, transfers)
    for transfer in transfers:  # every credit checked first: a refused one leaves the others unrecorded too
        if transfer.payment_id not in kept:
            ports.settlement.check_claim(transfer, bill.invoice_id)
    counted = ports.settlement.nets(transfers)  # a net credit stored before the split counts these (D91, sp3)
    with ports.settlement.seen_together():  # one "payment seen" for the transaction's credits (D216)
        payments = [
            kept.get(transfer.payment_id)
            or ports.settlement.record(
                transfer, claimed_for=bill.invoice_id, counted_in=counted.get(transfer.payment_id)
            )
            for transfer in transfers
        ]
    if all(payment.status is PaymentStatus.FAILED for payment in payments):
        raise TransactionRefusedError(f"transaction {tx_id} failed on {chain.key}: nothing was paid")
    return payments


def _kept_beside_net(ports: ApiPorts, transfers: Sequence[ObservedTransfer]) -> dict[str, Payment]:
    """The stored credits of ``transfers`` counted in an UNATTRIBUTED net credit that is one of ``transfers`` too (a
    transaction stored as one net credit before the split, D91 amended (sp3)): their amount is that payment's, so
    the claim leaves them as they are and claims the net one (D91, amended (sp6)). Counted in a net credit that pays
    a bill, or one of another transaction, they are checked - and refused - as before."""
    ids = {transfer.payment_id for transfer in transfers}
    kept: dict[str, Payment] = {}
    for transfer in transfers:
        stored = ports.store.payment(transfer.payment_id)
        if stored is None or stored.counted_in is None or stored.counted_in not in ids:
            continue
        if stored.status is PaymentStatus.ORPHANED:
            continue
        net = ports.store.payment(stored.counted_in)
        if net is not None and not net.attributed and net.counted_in is None:
            kept[transfer.payment_id] = stored
    return kept


def wallet_nonce(ports: ApiPorts, account_id: str, now: datetime) -> tuple[str, datetime]:
    return issue_nonce(ports.store, account_id, now, ports.signin)


def wallet_verify(
    ports: ApiPorts, account_id: str, chain_key: str, message: str, signature: str, now: datetime
) -> LinkedWallet:
    chain = _chain(ports, chain_key)
    if not message or not signature:
        raise InvalidRequestError("message and signature are required", field="message" if not message else "signature")
    return verify_and_link(ports.store, account_id, chain, message, signature, now, ports.signin, ports.contracts)


def history(ports: ApiPorts, account_id: str, now: datetime) -> dict[str, Any]:
    bills, quotes, payments = ports.store.account_history(account_id)
    return account_history(bills, quotes, payments, ports.chains, now)
